"""Statistics of BrainLLM against its controls.

Conventions:

* Samples from one stimulus (a passage, a story) are not independent, so confidence intervals come from a
  **bootstrap over stimuli** (`StimulusBootstrap`: draw stimuli with replacement, keep all their samples, take the
  sample-weighted mean; percentile interval, 95 % by default), and the paired permutation test flips signs per
  stimulus (`sign_flip_test`). The paired Wilcoxon signed-rank test (`wilcoxon_p`, the paper's test, here
  two-sided) treats samples as independent and is reported for comparison, labelled `p_wilcoxon_samples`.
* Differences are always BrainLLM minus control; for a lower-is-better metric (WER, loss) an improvement is
  negative.
* Effect sizes: paired Cohen's d_z = mean(d) / sd(d) (ddof 1), and the matched-pairs rank-biserial correlation
  r = (sum of ranks of positive d - sum of ranks of negative d) / sum of all ranks (|d| ranked, zeros dropped).
* Pairwise accuracy (the paper's): per sample, 1 if the loss with the true frames is lower than with a control's
  frames, 0.5 on a tie, averaged over permutations; chance 0.5.
* Identification accuracy (beyond the paper), from the cross-loss matrix L[i, j] = loss of text i given frames j:
  `frames_given_text`, per row i, where does L[i, i] rank among L[i, :] (same text, so raw losses compare);
  `text_given_frames`, per column j, where does text j rank among all texts under frames j, after removing each
  text's difficulty: row-mean centring L[i, j] - mean_k L[i, k] (or, when given, minus the text's no-brain loss).
  Per sample: `two_way` = fraction of the other N-1 candidates beaten (ties 0.5; chance 0.5), `top1` = 1 when the
  true one is strictly best (1/(1+t) when tied with t others; chance 1/N), `rank` (1 = best; chance (N+1)/2).
* Contamination: longest run of words a prediction shares verbatim with its reference (runs of 6+ words are
  flagged) and the fraction of the prediction's n-grams found in the reference.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import numpy as np
from scipy import stats as sps

from ..ties import TIE_TOLERANCE, ties, wins


class StimulusBootstrap:
    """Percentile bootstrap CIs of sample-weighted means, resampling stimuli (clusters) with replacement.

    Args:
        clusters: `(N,)` the stimulus of each sample. Pass one distinct label per sample for an i.i.d. bootstrap.
        n_boot: number of bootstrap draws B (the same draws serve every metric, so CIs are comparable).
        seed: random seed.
    """

    def __init__(self, clusters: Sequence[str], n_boot: int = 2000, seed: int = 0):
        self.labels, self.codes = np.unique(np.asarray(clusters, dtype=str), return_inverse=True)
        k = len(self.labels)
        rng = np.random.default_rng(seed)
        self.weights = rng.multinomial(k, np.full(k, 1.0 / k), size=n_boot).astype(np.float64)  # (B, K)

    @property
    def n_clusters(self) -> int:
        return len(self.labels)

    def distribution(self, values: np.ndarray) -> np.ndarray:
        """`(B',)` bootstrap means of `values` `(N,)` (NaN values left out; draws with no sample dropped)."""
        values = np.asarray(values, dtype=np.float64)
        ok = np.isfinite(values)
        k = self.n_clusters
        sums = np.bincount(self.codes[ok], weights=values[ok], minlength=k)
        counts = np.bincount(self.codes[ok], minlength=k).astype(np.float64)
        num, den = self.weights @ sums, self.weights @ counts
        keep = den > 0
        return num[keep] / den[keep]

    def ci(self, values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
        """(low, high) percentile interval of the mean of `values`; (NaN, NaN) when no finite value."""
        dist = self.distribution(values)
        if dist.size == 0:
            return float("nan"), float("nan")
        alpha = (1.0 - level) / 2.0
        low, high = np.quantile(dist, [alpha, 1.0 - alpha])
        return float(low), float(high)


def sign_flip_test(diff: np.ndarray, clusters: Optional[Sequence[str]] = None, n_resamples: int = 10000,
                   seed: int = 0) -> float:
    """Two-sided paired permutation (sign-flip) test of mean(diff) = 0, flipping whole clusters.

    Under the null each stimulus's summed difference is symmetric about 0, so its sign is exchangeable. The
    statistic is |sum of differences|. All 2^K sign patterns are enumerated when 2^K <= n_resamples (exact p),
    otherwise n_resamples random patterns give p = (1 + #{|T*| >= |T|}) / (1 + n_resamples).
    NaN differences are left out; no data or all-zero differences give p = 1.
    """
    diff = np.asarray(diff, dtype=np.float64)
    ok = np.isfinite(diff)
    if clusters is None:
        codes = np.arange(len(diff))
    else:
        codes = np.unique(np.asarray(clusters, dtype=str), return_inverse=True)[1]
    sums = np.bincount(codes[ok], weights=diff[ok], minlength=int(codes.max(initial=-1)) + 1)
    sums = sums[np.bincount(codes[ok], minlength=len(sums)) > 0]
    k = len(sums)
    if k == 0 or not np.any(sums):
        return 1.0
    observed = abs(sums.sum())
    tol = 1e-12 * max(1.0, float(np.abs(sums).sum()))
    if k <= 30 and 2 ** k <= n_resamples:
        patterns = ((np.arange(2 ** k)[:, None] >> np.arange(k)) & 1) * 2.0 - 1.0  # (2^K, K)
        null = np.abs(patterns @ sums)
        return float(np.mean(null >= observed - tol))
    rng = np.random.default_rng(seed)
    exceed = 0
    for start in range(0, n_resamples, 2000):
        size = min(2000, n_resamples - start)
        signs = rng.integers(0, 2, size=(size, k)) * 2.0 - 1.0
        exceed += int(np.sum(np.abs(signs @ sums) >= observed - tol))
    return (1.0 + exceed) / (1.0 + n_resamples)


def wilcoxon_p(diff: np.ndarray) -> float:
    """Two-sided Wilcoxon signed-rank p of paired differences (zeros dropped, samples treated as independent).

    Exact null distribution for up to 50 differences without tied magnitudes, otherwise the normal approximation
    with tie correction (scipy's own fallback, a Monte Carlo permutation test, is too slow for per-metric use).
    """
    d = np.asarray(diff, dtype=np.float64)
    d = d[np.isfinite(d) & (d != 0)]
    if d.size == 0:
        return 1.0
    exact = d.size <= 50 and np.unique(np.abs(d)).size == d.size
    return float(sps.wilcoxon(d, zero_method="wilcox", alternative="two-sided",
                              method="exact" if exact else "asymptotic").pvalue)


def cohens_dz(diff: np.ndarray) -> float:
    """Paired Cohen's d_z = mean / sd (ddof 1) of the finite differences; NaN when undefined."""
    d = np.asarray(diff, dtype=np.float64)
    d = d[np.isfinite(d)]
    if d.size < 2:
        return float("nan")
    sd = d.std(ddof=1)
    if sd == 0:
        return 0.0 if d.mean() == 0 else float("nan")
    return float(d.mean() / sd)


def rank_biserial(diff: np.ndarray) -> float:
    """Matched-pairs rank-biserial correlation in [-1, 1] (zeros dropped); NaN without non-zero differences."""
    d = np.asarray(diff, dtype=np.float64)
    d = d[np.isfinite(d) & (d != 0)]
    if d.size == 0:
        return float("nan")
    ranks = sps.rankdata(np.abs(d))
    return float((ranks[d > 0].sum() - ranks[d < 0].sum()) / ranks.sum())


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (family-wise error control), in the input order."""
    p = np.asarray(pvalues, dtype=np.float64)
    order = np.argsort(p)
    adjusted = np.empty_like(p)
    running = 0.0
    for rank, idx in enumerate(order):
        running = max(running, min(1.0, (len(p) - rank) * p[idx]))
        adjusted[idx] = running
    return adjusted.tolist()


def summarize(values: np.ndarray, boot: StimulusBootstrap, level: float = 0.95) -> dict[str, Any]:
    """{'mean', 'ci_low', 'ci_high', 'n'} of per-sample values (NaN left out)."""
    v = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(v)
    low, high = boot.ci(v, level)
    return {"mean": float(v[ok].mean()) if ok.any() else float("nan"), "ci_low": low, "ci_high": high,
            "n": int(ok.sum())}


def compare(model: np.ndarray, control: np.ndarray, clusters: Sequence[str], boot: StimulusBootstrap,
            n_permutations: int = 10000, seed: int = 0) -> dict[str, Any]:
    """BrainLLM vs a control on paired per-sample values `(N,)`: difference (model - control), its stimulus
    bootstrap CI, the stimulus sign-flip p, the sample-level Wilcoxon p and both effect sizes."""
    diff = np.asarray(model, dtype=np.float64) - np.asarray(control, dtype=np.float64)
    ok = np.isfinite(diff)
    low, high = boot.ci(diff)
    return {"diff": float(diff[ok].mean()) if ok.any() else float("nan"), "ci_low": low, "ci_high": high,
            "p_signflip_stimuli": sign_flip_test(diff, clusters, n_permutations, seed),
            "p_wilcoxon_samples": wilcoxon_p(diff), "cohens_dz": cohens_dz(diff),
            "rank_biserial": rank_biserial(diff), "n": int(ok.sum())}


# -------------------------------------------------------------------------------------- pairwise / identification

def pairwise_accuracy(loss_true: np.ndarray, loss_control: np.ndarray,
                      exclude: Optional[np.ndarray] = None, tol: float = TIE_TOLERANCE) -> np.ndarray:
    """Per-sample pairwise accuracy `(N,)`: mean over the control's P columns of [true < control] + 0.5 [tie],
    two losses within `tol` nats tying (`ties.wins`).

    `loss_true` is `(N,)`, `loss_control` `(N,)` or `(N, P)`; `exclude` `(N, P)` marks pairs to leave out (a
    permutation that gave a sample its own frames). NaN where no valid pair is left.
    """
    true = np.asarray(loss_true, dtype=np.float64).reshape(-1, 1)
    ctrl = np.asarray(loss_control, dtype=np.float64)
    ctrl = ctrl.reshape(len(true), -1)
    won = wins(true, ctrl, tol=tol)
    valid = np.isfinite(true) & np.isfinite(ctrl)
    if exclude is not None:
        valid &= ~np.asarray(exclude, dtype=bool).reshape(ctrl.shape)
    counts = valid.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, (won * valid).sum(axis=1) / counts, np.nan)


def _rank_true(scores: np.ndarray, tol: float = TIE_TOLERANCE) -> dict[str, np.ndarray]:
    """Per row of `(N, N)` scores (lower = better) with the true candidate on the diagonal: two_way, top1, rank;
    scores within `tol` of the true one tie with it."""
    n = scores.shape[0]
    true = np.diag(scores)[:, None]
    off = ~np.eye(n, dtype=bool)
    tied = ties(scores, true, tol) & off
    lower = ((scores < true) & off & ~tied).sum(axis=1)
    n_tied = tied.sum(axis=1)
    higher = ((scores > true) & off & ~tied).sum(axis=1)
    return {"two_way": (higher + 0.5 * n_tied) / max(n - 1, 1),
            "top1": np.where(lower == 0, 1.0 / (1.0 + n_tied), 0.0),
            "rank": 1.0 + lower + 0.5 * n_tied}


def identification(loss: np.ndarray, baseline: Optional[np.ndarray] = None, tol: float = TIE_TOLERANCE
                   ) -> dict[str, dict[str, np.ndarray]]:
    """Per-sample identification scores from the cross-loss matrix `(N, N)` (see the module docstring); losses
    within `tol` nats tie (`ties`).

    Returns {'frames_given_text': {...}, 'text_given_frames': {...}}, each with `(N,)` arrays `two_way`, `top1`,
    `rank`. `baseline` `(N,)` (e.g. each text's no-brain loss) replaces row-mean centring for text_given_frames.
    """
    loss = np.asarray(loss, dtype=np.float64)
    if loss.ndim != 2 or loss.shape[0] != loss.shape[1] or loss.shape[0] < 2:
        raise ValueError(f"cross-loss must be a square matrix with N >= 2, got shape {loss.shape}.")
    frames = _rank_true(loss, tol)
    centre = np.asarray(baseline, dtype=np.float64)[:, None] if baseline is not None else loss.mean(axis=1,
                                                                                                     keepdims=True)
    text = _rank_true((loss - centre).T, tol)  # row j of the transpose = column j: all texts under frames j
    return {"frames_given_text": frames, "text_given_frames": text}


def identification_chance(n: int) -> dict[str, float]:
    """Chance levels with N candidates: two_way 0.5, top1 1/N, rank (N+1)/2."""
    return {"two_way": 0.5, "top1": 1.0 / n, "rank": (n + 1) / 2.0}


# ------------------------------------------------------------------------------------------------ contamination

def longest_common_run(a: Sequence[str], b: Sequence[str]) -> tuple[int, int]:
    """(length, start in `a`) of the longest run of consecutive tokens of `a` that also occurs in `b`."""
    best, best_end = 0, 0
    prev = [0] * (len(b) + 1)
    for i, token in enumerate(a, 1):
        cur = [0] * (len(b) + 1)
        for j, other in enumerate(b, 1):
            if token == other:
                cur[j] = prev[j - 1] + 1
                if cur[j] > best:
                    best, best_end = cur[j], i
        prev = cur
    return best, best_end - best


def ngram_overlap(pred: Sequence[str], ref: Sequence[str], n: int) -> float:
    """Fraction of the prediction's n-grams (with multiplicity) that occur in the reference; NaN if it has none."""
    grams = [tuple(pred[i:i + n]) for i in range(len(pred) - n + 1)]
    if not grams:
        return float("nan")
    ref_set = {tuple(ref[i:i + n]) for i in range(len(ref) - n + 1)}
    return sum(g in ref_set for g in grams) / len(grams)


def contamination(pred_words: Sequence[Sequence[str]], ref_words: Sequence[Sequence[str]], ids: Sequence[str],
                  min_run: int = 6, orders: Sequence[int] = (1, 2, 4)) -> dict[str, Any]:
    """Verbatim overlap of predictions with their references (word tokens, punctuation dropped).

    Returns mean longest common run, fraction of samples with a run >= `min_run` words, mean n-gram overlap per
    order, and the flagged samples (id, run length, the run).
    """
    runs, flagged = [], []
    for sid, p, r in zip(ids, pred_words, ref_words):
        length, start = longest_common_run(p, r)
        runs.append(length)
        if length >= min_run:
            flagged.append({"id": sid, "run_length": length, "run": " ".join(p[start:start + length])})
    overlap = {}
    for n in orders:
        vals = np.array([ngram_overlap(p, r, n) for p, r in zip(pred_words, ref_words)], dtype=np.float64)
        overlap[str(n)] = float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan")
    runs_arr = np.asarray(runs, dtype=np.float64)
    return {"min_run": min_run, "mean_longest_run": float(runs_arr.mean()) if runs else float("nan"),
            "max_longest_run": int(runs_arr.max()) if runs else 0,
            "fraction_flagged": float(np.mean(runs_arr >= min_run)) if runs else float("nan"),
            "ngram_overlap": overlap, "flagged": sorted(flagged, key=lambda f: -f["run_length"])}


def finite_or_none(x: float) -> Optional[float]:
    """JSON-safe float: NaN and infinities become None."""
    return float(x) if x is not None and math.isfinite(float(x)) else None
