"""Comparing two scores where values closer than a stated tolerance tie.

Pairwise accuracy, 2-way identification and the ceiling's comparisons count a tie as half a win. The same loss
computed in batches of other lengths, or with one BLAS thread instead of two, differs by ~1e-7 nats in float32, so
an exact `==` almost never sees a tie that is one; rounding both values first does not help either, since two
values 1e-7 apart that straddle a rounding boundary still differ after rounding. A tie is `|a - b| <= tol`.
"""

from __future__ import annotations

import numpy as np

#: two scores (nats, or log-likelihood units) closer than this tie: ~100x the float32 noise of a mean loss of a
#: few nats, far below any difference that means something (a loss difference of 1e-5 nats per token)
TIE_TOLERANCE = 1e-5


def wins(better: np.ndarray, worse: np.ndarray, lower_is_better: bool = True, tol: float = TIE_TOLERANCE
         ) -> np.ndarray:
    """Elementwise score of `better` against `worse` (broadcast): 1 where it beats it by more than `tol`, 0.5 where
    `|better - worse| <= tol`, else 0. With `lower_is_better` (losses) beating means lower, else higher
    (log-likelihoods). Comparisons with NaN give 0; the caller masks them."""
    if tol < 0:
        raise ValueError(f"tol must be >= 0, got {tol}.")
    a, b = np.asarray(better, dtype=np.float64), np.asarray(worse, dtype=np.float64)
    diff = (b - a) if lower_is_better else (a - b)
    return (diff > tol) + 0.5 * (np.abs(diff) <= tol)


def ties(a: np.ndarray, b: np.ndarray, tol: float = TIE_TOLERANCE) -> np.ndarray:
    """Elementwise `|a - b| <= tol` (broadcast), bool."""
    return np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)) <= tol
