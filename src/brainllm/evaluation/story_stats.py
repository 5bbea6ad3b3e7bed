"""Statistics of a story evaluation: z against the nulls, empirical p, and the identification matrices with their
percentile ranks (`evaluation.story` describes each).
"""

from __future__ import annotations

import logging
import math
from typing import Optional

import numpy as np

from ..progress import progress
from .rundata import EvaluationError
from .story_results import ConditionResult, Identification

log = logging.getLogger(__name__)

_PAIR_BLOCK = 1 << 24  # floats per similarity block in the identification matrix (64 MB of float32)


def safe_z(value: np.ndarray, mean: np.ndarray, sd: np.ndarray, what: str) -> np.ndarray:
    """(value - mean) / sd elementwise, NaN (with a logged warning naming `what`) where sd is 0 or not finite."""
    value, mean, sd = (np.asarray(a, dtype=np.float64) for a in (value, mean, sd))
    bad = ~(np.isfinite(sd) & (sd > 0))
    if np.any(bad):
        log.warning("%s: the null standard deviation is 0 (or undefined) for %d of %d values; their z is NaN.",
                    what, int(bad.sum()), bad.size)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (value - mean) / np.where(bad, 1.0, sd)
    return np.where(bad, np.nan, z)


def empirical_p(score: float, null_scores: np.ndarray) -> float:
    """One-sided empirical p-value (1 + #{S_n >= score}) / (1 + N) (higher is better); NaN without nulls."""
    null_scores = np.asarray(null_scores, dtype=np.float64)
    if null_scores.size == 0 or not math.isfinite(score):
        return float("nan")
    return float((1 + np.sum(null_scores >= score)) / (1 + null_scores.size))


def percentile_ranks(similarity: np.ndarray) -> np.ndarray:
    """Per row i of a `(K, K)` matrix, the fraction of the other K - 1 columns j with M[i, j] < M[i, i] (ties 0.5).

    Returns `(K,)`; NaN when K < 2. Chance 0.5.
    """
    sim = np.asarray(similarity, dtype=np.float64)
    k = sim.shape[0]
    if k < 2:
        return np.full(k, np.nan)
    diag = np.diag(sim)[:, None]
    below = (sim < diag).sum(axis=1)
    ties = (sim == diag).sum(axis=1) - 1  # the diagonal ties with itself
    return (below + 0.5 * ties) / (k - 1)


def _bleu1_matrix(pred_tok: list[list[str]], ref_tok: list[list[str]]) -> np.ndarray:
    """`(K, K)` BLEU-1 of every prediction window against every reference window, vectorised.

    Clipped matches sum_v min(a_v, b_v) = sum_{t >= 1} sum_v [a_v >= t][b_v >= t], a sum of matrix products.
    """
    vocab = {w: i for i, w in enumerate(sorted({w for t in pred_tok + ref_tok for w in t}))}

    def counts(toks: list[list[str]]) -> np.ndarray:
        c = np.zeros((len(toks), max(1, len(vocab))), dtype=np.float32)
        for row, t in enumerate(toks):
            for w in t:
                c[row, vocab[w]] += 1
        return c

    a, b = counts(pred_tok), counts(ref_tok)
    matches = np.zeros((len(pred_tok), len(ref_tok)), dtype=np.float64)
    for t in range(1, int(min(a.max(initial=0), b.max(initial=0))) + 1):
        matches += (a >= t).astype(np.float32) @ (b >= t).astype(np.float32).T
    lp = np.array([len(t) for t in pred_tok], dtype=np.float64)[:, None]
    lr = np.array([len(t) for t in ref_tok], dtype=np.float64)[None, :]
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        precision = matches / lp
        brevity = np.where(lp > lr, 1.0, np.exp(1.0 - lr / lp))
        out = precision * brevity
    return np.where(lp > 0, out, 0.0)


def _recall_matrix(pred_vecs: list[np.ndarray], ref_vecs: list[np.ndarray]) -> np.ndarray:
    """`(K, K)` BERTScore recall of reference window j by prediction window i, in memory-bounded blocks."""
    out = np.zeros((len(pred_vecs), len(ref_vecs)), dtype=np.float64)
    p_rows = [i for i, v in enumerate(pred_vecs) if len(v)]
    r_cols = [j for j, v in enumerate(ref_vecs) if len(v)]
    if not p_rows or not r_cols:
        return out
    pred_all = np.concatenate([pred_vecs[i] for i in p_rows]).astype(np.float32)  # (sum m_i, H)
    p_start = np.cumsum([0] + [len(pred_vecs[i]) for i in p_rows[:-1]])
    per_block = max(1, _PAIR_BLOCK // len(pred_all))
    blocks, pos = [], 0
    while pos < len(r_cols):
        cols, n = [], 0
        while pos < len(r_cols) and (not cols or n + len(ref_vecs[r_cols[pos]]) <= per_block):
            cols.append(r_cols[pos])
            n += len(ref_vecs[r_cols[pos]])
            pos += 1
        blocks.append(cols)
    for cols in progress(blocks, "identification", "block"):
        ref_block = np.concatenate([ref_vecs[j] for j in cols]).astype(np.float32)  # (n, H)
        best = np.maximum.reduceat(pred_all @ ref_block.T, p_start, axis=0)  # (rows, n): best pred piece per window
        r_start = np.cumsum([0] + [len(ref_vecs[j]) for j in cols[:-1]])
        sums = np.add.reduceat(best, r_start, axis=1)  # (rows, len(cols))
        lens = np.array([len(ref_vecs[j]) for j in cols], dtype=np.float64)
        out[np.ix_(p_rows, cols)] = sums / lens
    return out


def identification(pred_tok: list[list[str]], ref_tok: list[list[str]], metric: str,
                   pred_vecs: Optional[list[np.ndarray]] = None, ref_vecs: Optional[list[np.ndarray]] = None
                   ) -> Identification:
    """Identification from window tokens (`bleu1`) or MiniLM token vectors (`semsim`); see the module docstring."""
    if metric == "semsim":
        if pred_vecs is None or ref_vecs is None:
            raise EvaluationError("semsim identification needs the MiniLM token vectors of both sides.")
        sim = _recall_matrix(pred_vecs, ref_vecs)
    elif metric == "bleu1":
        sim = _bleu1_matrix(pred_tok, ref_tok)
    else:
        raise EvaluationError(f"Identification uses 'semsim' or 'bleu1', not {metric!r}.")
    return Identification(metric, sim, percentile_ranks(sim))


def condition_result(name: str, scores: dict[str, np.ndarray], null_windows: Optional[dict[str, np.ndarray]],
               ident: Optional[Identification]) -> ConditionResult:
    """One condition's window scores `metric -> (K,)` against the nulls' `metric -> (N, K)` (None: no z or p)."""
    wz, mwz, story, sz, p = {}, {}, {}, {}, {}
    for m, s in scores.items():
        story[m] = float(np.mean(s)) if s.size else float("nan")
        if null_windows is None:
            wz[m] = np.full(s.shape, np.nan)
            mwz[m] = sz[m] = p[m] = float("nan")
            continue
        nulls = null_windows[m]  # (N, K)
        wz[m] = safe_z(s, nulls.mean(axis=0), nulls.std(axis=0, ddof=1), f"{name} {m} window z")
        finite = wz[m][np.isfinite(wz[m])]
        mwz[m] = float(finite.mean()) if finite.size else float("nan")
        null_story = nulls.mean(axis=1)  # (N,)
        sz[m] = float(safe_z(np.array(story[m]), null_story.mean(), null_story.std(ddof=1), f"{name} {m} story z"))
        p[m] = empirical_p(story[m], null_story)
    return ConditionResult(name, dict(scores), wz, mwz, story, sz, p, ident)
