"""2-way identification from a score matrix, reported across stimuli and within a stimulus separately.

Within one Pereira passage the sentences share a topic, so pairs from the same stimulus are the hard case and
the one a length/position nuisance explains best; pairs whose frames are the same (the two samples of one
sentence share its image) cannot be told apart by frames and are left out.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .ties import TIE_TOLERANCE, wins


def two_way(matrix: np.ndarray, stimuli: Sequence[str], frame_keys: Sequence[object], symmetric: bool = False,
            tol: float = TIE_TOLERANCE) -> dict[str, float]:
    """2-way identification of texts for fixed frames.

    Args:
        matrix: `(n, n)` score of text i for frames j at [i, j] (higher = more likely; e.g. a log-likelihood).
        stimuli: `(n,)` stimulus of each sample.
        frame_keys: `(n,)` something equal for samples that share their frames (e.g. their frame rows).
        symmetric: the 2-vs-2 test (Mitchell et al. 2008) instead: a pair wins when the right assignment scores
            above the swapped one, `m[i, i] + m[j, j] > m[i, j] + m[j, i]` (with minus squared distances as scores,
            the terms that depend on one side only cancel).
        tol: scores closer than this tie (`ties.wins`).
    Returns:
        `across`: over ordered pairs (i, j) from different stimuli, the fraction where text j scores above text i
        for frames j (scores within `tol` tie and count half); `within`: the same over pairs from one stimulus
        (NaN when there are none). Chance 0.5.
    """
    m = np.asarray(matrix, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1] or len(stimuli) != len(m) or len(frame_keys) != len(m):
        raise ValueError(f"two_way needs an (n, n) matrix with n stimuli and frame keys; got {m.shape}, "
                         f"{len(stimuli)}, {len(frame_keys)}.")
    stim = np.asarray(stimuli)
    keys = np.asarray([str(k) for k in frame_keys])
    own = m.diagonal()[None, :]
    if symmetric:
        m, own = m + m.T, own + own.T
    won = wins(own, m, lower_is_better=False, tol=tol)  # [i, j]: text j beats text i for frames j (a tie: half)
    usable = keys[:, None] != keys[None, :]
    same = stim[:, None] == stim[None, :]
    across, within = usable & ~same, usable & same
    return {"across": float(won[across].mean()) if across.any() else float("nan"),
            "within": float(won[within].mean()) if within.any() else float("nan")}
