"""Finite-impulse-response (FIR) delays of a time series, never crossing a run (story) boundary.

Tang et al. (and the Huth-lab `make_delayed`) delay the concatenation of all training stories, so the first rows of
a story receive features of the previous story. Here `runs` makes every delay restart with zeros at each run start
(and, for negative delays, stop with zeros at each run end).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..errors import DatasetError

__all__ = ["check_runs", "make_delayed", "runs_from_lengths"]

Run = tuple[int, int]


def runs_from_lengths(lengths: Sequence[int]) -> list[Run]:
    """`[start, stop)` row ranges of consecutive runs with the given lengths (in rows/TRs)."""
    stops = np.cumsum([int(n) for n in lengths])
    starts = np.concatenate([[0], stops[:-1]]) if len(stops) else np.zeros(0, dtype=int)
    return [(int(a), int(b)) for a, b in zip(starts, stops, strict=True)]


def check_runs(runs: Sequence[Sequence[int]] | None, n_rows: int) -> list[Run]:
    """Validate `[start, stop)` runs that tile rows 0..n_rows-1 in order; None means one run of all rows.

    Returns:
        the runs as a list of (start, stop) int tuples.
    """
    if runs is None:
        return [(0, int(n_rows))]
    out: list[Run] = []
    expected = 0
    for k, run in enumerate(runs):
        if len(run) != 2:
            raise DatasetError(f"runs[{k}] = {run!r}; each run must be a (start, stop) pair of row indices.")
        start, stop = int(run[0]), int(run[1])
        if start != expected or stop <= start:
            raise DatasetError(
                f"runs must tile rows 0..{n_rows} in order as [start, stop) ranges with stop > start; runs[{k}] = "
                f"({start}, {stop}) but the next run should start at {expected}. Build them with runs_from_lengths."
            )
        out.append((start, stop))
        expected = stop
    if expected != n_rows:
        raise DatasetError(
            f"runs cover rows 0..{expected} but the data has {n_rows} rows; the runs must cover every row exactly "
            "once (use runs_from_lengths on the per-run lengths)."
        )
    return out


def make_delayed(
    x: np.ndarray,
    delays: Sequence[int],
    runs: Sequence[Sequence[int]] | None = None,
) -> np.ndarray:
    """Stack delayed copies of `x`, zero-padded, one column block per delay.

    Column block k holds `x` shifted by `delays[k]` TRs: for d > 0 (past), row t gets `x[t − d]`; for d < 0
    (future), row t gets `x[t + |d|]`; rows whose source lies outside their run are 0.

    Args:
        x: (T, F) time series (rows = TRs); a (T,) array is treated as (T, 1).
        delays: integers in TRs, e.g. (1, 2, 3, 4) for the encoding model, (-4, -3, -2, -1) for the word rate.
        runs: `[start, stop)` row ranges tiling all T rows (one per story); None = one run.
    Returns:
        (T, F · len(delays)) array of x's dtype; block k = columns [k·F, (k+1)·F).
    """
    x = np.asarray(x)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise DatasetError(f"make_delayed expects a (T, F) array, got shape {x.shape}.")
    delays = [int(d) for d in delays]
    if not delays:
        raise DatasetError("make_delayed: delays is empty; give at least one delay in TRs, e.g. (1, 2, 3, 4).")
    n_rows, n_feat = x.shape
    out = np.zeros((n_rows, n_feat * len(delays)), dtype=x.dtype)
    for start, stop in check_runs(runs, n_rows):
        for k, d in enumerate(delays):
            cols = slice(k * n_feat, (k + 1) * n_feat)
            if abs(d) >= stop - start:
                continue  # the shift moves every row out of this run
            if d >= 0:
                out[start + d : stop, cols] = x[start : stop - d]
            else:
                out[start : stop + d, cols] = x[start - d : stop]
    return out
