"""Windowed full-story evaluation (Tang et al. 2023), for the Tang baseline and BrainLLM's full-story decoder.

A decoded story and its reference are lists of *timed words* (`TimedWords`: reference times are the word midpoints
of the TextGrid, prediction times the decoder's word times). Both are cut into the same windows and scored window by
window; the prediction is compared with *null* sequences (brain-free LM samples at the prediction's word times) and
with named *controls* (e.g. `permuted`, `no_brain`).

Windows (`windows`): width w = 20 s, centres c = start + w/2, start + w/2 + step, ..., end - w/2 (inclusive, step
1 s), each window [c - w/2, c + w/2). A word belongs to a window when start <= time < end (`segment`).

Per-window metrics (`StoryEvalConfig.metrics`, all oriented so that HIGHER is better), on the window's words joined
by spaces and tokenised by `brainllm.evaluation.text.tokenize` (lower-cased; punctuation dropped by default,
since timed words are spoken words):

* `wer_score` (variant `one_minus_wer_jiwer`): 1 - WER, WER = (S + D + I) / |ref| from jiwer's alignment
  (`metrics.word_errors`), Tang's orientation. It is unbounded below (WER can exceed 1). An empty reference window
  counts as WER 1 (score 0), as in Tang's code.
* `bleu1` (variant `bleu1_per_window`): unigram BLEU of the window, clipped unigram precision times the brevity
  penalty BP = 1 if |pred| > |ref| else exp(1 - |ref|/|pred|), no smoothing; an empty prediction scores 0
  (`metrics.bleu_per_sample(..., max_order=1)`).
* `meteor` (variant `meteor_nltk_wordnet`, or `meteor_nltk_exact_stem` when WordNet is absent or not wanted):
  nltk METEOR with the hypothesis and reference in the correct order (`metrics.meteor`; the BrainLLM authors'
  full-story code swapped them), alpha 0.9, beta 3, gamma 0.5; 0 when either side is empty.
* `semsim` (variant `bertscore_minilm_recall`): BERTScore-style RECALL, the mean over the reference window's word
  pieces of the best cosine with any prediction word piece, on all-MiniLM-L6-v2 layer-6 token embeddings
  (`semantic.greedy_match_prf`), no idf weighting, no baseline rescaling, each window truncated to 128 word
  pieces. Tang used bert_score's default roberta-large with idf weights from other stories, which is not available
  offline; numbers are therefore not comparable in absolute value, only in z. 0 when either side is empty.

Statistics, per metric (the window level and the story level are kept distinct; Tang's released code stored the
window scores under both names):

* window level: z_w = (s_w - mean_n s_{n,w}) / sd_n s_{n,w} over the N nulls (sd with ddof = 1), and its mean over
  the windows where it is finite;
* story level: the story score S = mean_w s_w, each null's story score S_n = mean_w s_{n,w},
  z = (S - mean_n S_n) / sd_n S_n (ddof = 1), and the one-sided empirical p = (1 + #{n: S_n >= S}) / (1 + N).
A null standard deviation of 0 gives a NaN z (never inf) and a logged warning.

Identification: a (K, K) matrix M[i, j] = similarity of prediction window i to reference window j, with the `semsim`
metric (the cheap `bleu1` when `semsim` is not computed); per prediction window i, the percentile rank of the true
window, the fraction of the K - 1 other reference windows j with M[i, j] < M[i, i] (ties count 0.5). Chance is 0.5,
a perfect and temporally exact prediction approaches 1. Overlapping neighbours (step 1 s, width 20 s) share most
words, so a few seconds of timing error costs little. Both similarities depend on the word counts of the two windows
(BLEU's brevity penalty; recall over the reference's pieces), so a prediction whose word rate follows the reference
is partly identified by its timing alone (a shuffle control that keeps the word times is above 0.5).
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np

from ..io import write_json
from ..progress import progress
from . import metrics as M
from .rundata import EvaluationError
from .tables import render_text
from .text import detokenize, tokenize

log = logging.getLogger(__name__)

FORMAT = "brainllm.story_evaluation"
VERSION = 1
NULL = "null"
# What the null sequences are. A z-score is only as meaningful as its null: Tang's brain-free LM samples test a
# decoder against the bare language model, which a decoder with a trained soft prompt beats without any brain input;
# the decoder null feeds the same trained decoder brain data unrelated to the story.
NULL_KINDS = {
    "lm": "brain-free LM samples at the prediction's word times (Tang's null)",
    "decoder": "the same trained decoder at the same word times, fed the frames of other stories (brain input "
               "unrelated to this story)",
}
STORY_METRICS = ("wer_score", "bleu1", "meteor", "semsim")
_FIXED_VARIANTS = {"wer_score": "one_minus_wer_jiwer", "bleu1": "bleu1_per_window", "semsim": "bertscore_minilm_recall"}
DESCRIPTIONS = {
    "wer_score": "1 - WER per window (jiwer alignment; higher is better, can be negative; empty reference = WER 1)",
    "bleu1": "unigram BLEU per window (clipped precision x brevity penalty, no smoothing)",
    "meteor_nltk_wordnet": "METEOR per window (nltk; hypothesis/reference in the correct order; exact+stem+WordNet)",
    "meteor_nltk_exact_stem": "METEOR per window (nltk; correct order; exact+stem only, no WordNet synonyms)",
    "semsim": "BERTScore-style recall on all-MiniLM-L6-v2 layer-6 token embeddings, no idf, no rescaling "
              "(Tang: roberta-large with idf)",
}
_PAIR_BLOCK = 1 << 24  # floats per similarity block in the identification matrix (64 MB of float32)


# ------------------------------------------------------------------------------------------------------ data model

@dataclass
class TimedWords:
    """A sequence of words with one time each.

    Attributes:
        words: `W` words (strings; tokenised again when scored).
        times: `(W,)` float64 seconds, finite and non-decreasing (word midpoints for a reference, decoder word times
            for a prediction).
    """

    words: list[str]
    times: np.ndarray

    def __post_init__(self) -> None:
        self.words = [str(w) for w in self.words]
        times = np.asarray(self.times, dtype=np.float64)
        if times.ndim != 1:
            raise EvaluationError(f"TimedWords.times must be one-dimensional (W,), found shape {times.shape}.")
        if len(times) != len(self.words):
            raise EvaluationError(f"TimedWords has {len(self.words)} words but {len(times)} times; give one time "
                                  "(seconds) per word.")
        if not np.all(np.isfinite(times)):
            bad = int(np.flatnonzero(~np.isfinite(times))[0])
            raise EvaluationError(f"TimedWords.times must be finite; word {bad} ({self.words[bad]!r}) has time "
                                  f"{times[bad]}.")
        if len(times) > 1 and np.any(np.diff(times) < 0):
            bad = int(np.flatnonzero(np.diff(times) < 0)[0])
            raise EvaluationError(f"TimedWords.times must be non-decreasing; word {bad + 1} ({self.words[bad + 1]!r}) "
                                  f"at {times[bad + 1]} s comes after {times[bad]} s. Sort the words by time.")
        self.times = times

    def __len__(self) -> int:
        return len(self.words)

    def to_json(self) -> dict[str, Any]:
        """`{"words": [...], "times": [...]}`."""
        return {"words": list(self.words), "times": [float(t) for t in self.times]}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> "TimedWords":
        """Inverse of `to_json` (validated)."""
        if not isinstance(obj, dict) or "words" not in obj or "times" not in obj:
            raise EvaluationError("A TimedWords JSON object needs the keys 'words' and 'times'; found "
                                  f"{sorted(obj) if isinstance(obj, dict) else type(obj).__name__}.")
        return cls(list(obj["words"]), np.asarray(obj["times"], dtype=np.float64))


def windows(start: float, end: float, window: float = 20.0, step: float = 1.0) -> np.ndarray:
    """Tang's windows of a segment: `(K, 2)` float64 [lo, hi) in seconds.

    Centres c = start + window/2 + k*step for k = 0, 1, ... while c <= end - window/2; window [c - w/2, c + w/2).
    Raises `EvaluationError` when the segment is shorter than one window or the sizes are not positive.
    """
    if not (window > 0 and step > 0):
        raise EvaluationError(f"window and step must be positive seconds; found window={window}, step={step}.")
    if not (math.isfinite(start) and math.isfinite(end)):
        raise EvaluationError(f"start and end must be finite seconds; found start={start}, end={end}.")
    length = end - start
    if length < window - 1e-9:
        raise EvaluationError(f"The segment [{start}, {end}) lasts {length:g} s, shorter than one {window:g} s "
                              "window; evaluate a longer segment or pass a smaller window.")
    k = int(math.floor((length - window) / step + 1e-9)) + 1
    centres = start + window / 2.0 + step * np.arange(k, dtype=np.float64)
    return np.stack([centres - window / 2.0, centres + window / 2.0], axis=1)


def segment(words: TimedWords, bounds: np.ndarray) -> list[list[str]]:
    """The words of each window: `bounds` `(K, 2)` -> K lists of the words with lo <= time < hi."""
    bounds = np.asarray(bounds, dtype=np.float64).reshape(-1, 2)
    lo = np.searchsorted(words.times, bounds[:, 0], side="left")
    hi = np.searchsorted(words.times, bounds[:, 1], side="left")
    return [words.words[a:b] for a, b in zip(lo, hi)]


# ------------------------------------------------------------------------------------------------------ config

@dataclass(frozen=True)
class StoryEvalConfig:
    """Settings of the windowed evaluation (defaults are Tang et al. 2023's).

    Attributes:
        window: window width in seconds (default 20).
        step: spacing of window centres in seconds (default 1).
        metrics: metric names, from `wer_score`, `bleu1`, `meteor`, `semsim` (see the module docstring for each
            variant; all higher-is-better).
        lowercase: lower-case words before scoring (default True).
        null_z: score the nulls and report z-scores and p-values (default True; needs at least 2 nulls). When
            False the nulls are ignored and every z and p is NaN.
        keep_punct: punctuation marks count as tokens (default False: timed words are spoken words; the
            continuation metrics keep them).
        meteor_synonyms: use WordNet synonyms in METEOR when WordNet is installed (default True).
        identification: compute the (K, K) identification matrix and percentile ranks for the prediction and each
            control (default True).
    """

    window: float = 20.0
    step: float = 1.0
    metrics: tuple[str, ...] = STORY_METRICS
    lowercase: bool = True
    null_z: bool = True
    keep_punct: bool = False
    meteor_synonyms: bool = True
    identification: bool = True

    def __post_init__(self) -> None:
        object.__setattr__(self, "metrics", tuple(self.metrics))
        unknown = [m for m in self.metrics if m not in STORY_METRICS]
        if unknown or not self.metrics:
            raise EvaluationError(f"Unknown story metrics {unknown or '(none given)'}; choose from {STORY_METRICS}.")
        if not (self.window > 0 and self.step > 0):
            raise EvaluationError(f"window and step must be positive seconds; found {self.window}, {self.step}.")

    @property
    def identification_metric(self) -> str:
        """`semsim` when it is computed, else `bleu1`."""
        return "semsim" if "semsim" in self.metrics else "bleu1"

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["metrics"] = list(self.metrics)
        return out

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> "StoryEvalConfig":
        return cls(**{**obj, "metrics": tuple(obj.get("metrics", STORY_METRICS))})


def metric_variants(config: StoryEvalConfig = StoryEvalConfig()) -> dict[str, str]:
    """Metric name -> precise variant name, e.g. `{"meteor": "meteor_nltk_wordnet", ...}` (WordNet looked up)."""
    out = {}
    for name in config.metrics:
        if name == "meteor":
            out[name] = M.meteor_variant(M.MetricConfig(meteor_synonyms=config.meteor_synonyms))
        else:
            out[name] = _FIXED_VARIANTS[name]
    return out


def _null_kind(kind: str) -> str:
    if kind not in NULL_KINDS:
        raise EvaluationError(f"Unknown null kind {kind!r}; expected one of {sorted(NULL_KINDS)}.")
    return kind


def format_score(x: float | None) -> str:
    """A score for a plain-text table: 3 decimals, `-` for None/NaN/inf."""
    return "-" if x is None or not math.isfinite(x) else f"{x:.3f}"


def _describe(name: str, variant: str) -> str:
    return DESCRIPTIONS.get(variant, DESCRIPTIONS.get(name, variant))


# ------------------------------------------------------------------------------------------------------ scoring

def _window_tokens(words: TimedWords, bounds: np.ndarray, config: StoryEvalConfig) -> list[list[str]]:
    return [tokenize(" ".join(ws), config.lowercase, config.keep_punct) for ws in segment(words, bounds)]


def _token_vectors(scorer, token_lists: Sequence[Sequence[str]], desc: str) -> list[np.ndarray]:
    """MiniLM token vectors `(n_i, 384)` of each window text, computed in batches (one pass per distinct text)."""
    from .semantic import MAX_LENGTH

    texts = [detokenize(t) for t in token_lists]
    distinct = sorted(set(texts), key=len)
    chunk = max(1, scorer.batch_size) * 4
    for lo in progress(range(0, len(distinct), chunk), desc, "batch"):
        scorer.sentence_vectors(distinct[lo:lo + chunk])  # fills the scorer's cache, batched
    vecs = [scorer.token_vectors(t) for t in texts]
    truncated = sum(len(v) >= MAX_LENGTH - 2 for v in vecs)
    if truncated:
        log.warning("%d of %d windows (%s) reached MiniLM's %d word pieces and were truncated for semsim.",
                    truncated, len(vecs), desc, MAX_LENGTH)
    return vecs


def _new_scorer():
    from .semantic import MiniLMScorer

    return MiniLMScorer()


def _score_tokens(pred_tok: list[list[str]], ref_tok: list[list[str]], config: StoryEvalConfig,
                  pred_vecs: Optional[list[np.ndarray]], ref_vecs: Optional[list[np.ndarray]]) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for name in config.metrics:
        if name == "wer_score":
            vals = [1.0 - (M.word_errors(p, r) / len(r) if r else 1.0) for p, r in zip(pred_tok, ref_tok)]
        elif name == "bleu1":
            vals = [M.bleu_per_sample(p, r, 1) for p, r in zip(pred_tok, ref_tok)]
        elif name == "meteor":
            synonyms = metric_variants(config)["meteor"] == "meteor_nltk_wordnet"
            vals = [M.meteor(p, r, synonyms) for p, r in zip(pred_tok, ref_tok)]
        else:  # semsim
            from .semantic import greedy_match_prf

            vals = [greedy_match_prf(pv, rv)[1] for pv, rv in zip(pred_vecs, ref_vecs)]
        out[name] = np.asarray(vals, dtype=np.float64).reshape(len(pred_tok))
    return out


class _Windowed:
    """The reference cut into windows (tokens, and MiniLM vectors when needed), shared by every scored sequence."""

    def __init__(self, ref: TimedWords, bounds: np.ndarray, config: StoryEvalConfig, scorer=None):
        self.bounds = np.asarray(bounds, dtype=np.float64).reshape(-1, 2)
        self.config = config
        self.tokens = _window_tokens(ref, self.bounds, config)
        self.semantic = "semsim" in config.metrics
        self.scorer = (scorer or _new_scorer()) if self.semantic else None
        # The reference's vectors stay in `scorer` (reusable across calls); each scored sequence gets a temporary
        # scorer whose cache is dropped afterwards, which bounds memory (~90 kB per window text).
        self.vecs = _token_vectors(self.scorer, self.tokens, "MiniLM reference") if self.semantic else None

    def score(self, words: TimedWords, label: str = "prediction", keep: bool = False
              ) -> tuple[dict[str, np.ndarray], list[list[str]], Optional[list[np.ndarray]]]:
        tok = _window_tokens(words, self.bounds, self.config)
        vecs = _token_vectors(_new_scorer(), tok, f"MiniLM {label}") if self.semantic else None
        scores = _score_tokens(tok, self.tokens, self.config, vecs, self.vecs)
        return scores, tok, (vecs if keep else None)


def score_windows(pred: TimedWords, ref: TimedWords, bounds: np.ndarray, config: StoryEvalConfig = StoryEvalConfig(),
                  scorer=None) -> dict[str, np.ndarray]:
    """Window scores of `pred` against `ref`: metric name -> `(K,)` float64, one value per row of `bounds` `(K, 2)`.

    `scorer` is a `semantic.MiniLMScorer` that keeps the reference windows' embeddings (made when needed).
    """
    return _Windowed(ref, bounds, config, scorer).score(pred)[0]


# ------------------------------------------------------------------------------------------------------ statistics

def _safe_z(value: np.ndarray, mean: np.ndarray, sd: np.ndarray, what: str) -> np.ndarray:
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


@dataclass
class Identification:
    """Identification of the true window among all reference windows.

    Attributes:
        metric: the similarity used (`semsim` or `bleu1`).
        similarity: `(K, K)`, [i, j] = similarity of prediction window i to reference window j.
        percentile_rank: `(K,)` per prediction window, the percentile rank of its true window (chance 0.5).
    """

    metric: str
    similarity: Optional[np.ndarray]
    percentile_rank: np.ndarray

    @property
    def mean_percentile_rank(self) -> float:
        r = self.percentile_rank[np.isfinite(self.percentile_rank)]
        return float(r.mean()) if r.size else float("nan")

    def to_json(self, matrix: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {"metric": self.metric, "chance": 0.5, "mean_percentile_rank": self.mean_percentile_rank,
                               "percentile_rank": self.percentile_rank.tolist()}
        if matrix and self.similarity is not None:
            out["similarity"] = np.asarray(self.similarity).tolist()
        return out

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> "Identification":
        sim = obj.get("similarity")
        return cls(obj["metric"], None if sim is None else _arr(sim), _arr(obj["percentile_rank"]))


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


@dataclass
class ConditionResult:
    """Scores of one condition (the prediction or a control) against the reference and the nulls.

    Attributes:
        name: condition name ("prediction", "permuted", "no_brain", ...).
        window_scores: metric -> `(K,)` per-window scores s_w.
        window_z: metric -> `(K,)` (s_w - mean_n s_{n,w}) / sd_n s_{n,w} (ddof 1); NaN where sd is 0 or no nulls.
        mean_window_z: metric -> mean of the finite window z (NaN if none).
        story_score: metric -> mean_w s_w.
        story_z: metric -> (story_score - mean_n S_n) / sd_n S_n (ddof 1).
        p_value: metric -> (1 + #{S_n >= story_score}) / (1 + N), one-sided.
        identification: the identification result, or None when not computed.
    """

    name: str
    window_scores: dict[str, np.ndarray]
    window_z: dict[str, np.ndarray]
    mean_window_z: dict[str, float]
    story_score: dict[str, float]
    story_z: dict[str, float]
    p_value: dict[str, float]
    identification: Optional[Identification] = None

    def to_json(self, matrix: bool = False) -> dict[str, Any]:
        return {"name": self.name,
                "story_score": self.story_score, "story_z": self.story_z, "p_value": self.p_value,
                "mean_window_z": self.mean_window_z,
                "window_scores": {m: v.tolist() for m, v in self.window_scores.items()},
                "window_z": {m: v.tolist() for m, v in self.window_z.items()},
                "identification": None if self.identification is None else self.identification.to_json(matrix)}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> "ConditionResult":
        ident = obj.get("identification")
        return cls(obj["name"], {m: _arr(v) for m, v in obj["window_scores"].items()},
                   {m: _arr(v) for m, v in obj["window_z"].items()}, _floats(obj["mean_window_z"]),
                   _floats(obj["story_score"]), _floats(obj["story_z"]), _floats(obj["p_value"]),
                   None if ident is None else Identification.from_json(ident))


def _arr(values: Any) -> np.ndarray:
    return np.array(values, dtype=np.float64)  # None -> NaN


def _floats(d: dict[str, Any]) -> dict[str, float]:
    return {k: float("nan") if v is None else float(v) for k, v in d.items()}


def _condition(name: str, scores: dict[str, np.ndarray], null_windows: Optional[dict[str, np.ndarray]],
               ident: Optional[Identification]) -> ConditionResult:
    wz, mwz, story, sz, p = {}, {}, {}, {}, {}
    for m, s in scores.items():
        story[m] = float(np.mean(s)) if s.size else float("nan")
        if null_windows is None:
            wz[m] = np.full(s.shape, np.nan)
            mwz[m] = sz[m] = p[m] = float("nan")
            continue
        nulls = null_windows[m]  # (N, K)
        wz[m] = _safe_z(s, nulls.mean(axis=0), nulls.std(axis=0, ddof=1), f"{name} {m} window z")
        finite = wz[m][np.isfinite(wz[m])]
        mwz[m] = float(finite.mean()) if finite.size else float("nan")
        null_story = nulls.mean(axis=1)  # (N,)
        sz[m] = float(_safe_z(np.array(story[m]), null_story.mean(), null_story.std(ddof=1), f"{name} {m} story z"))
        p[m] = empirical_p(story[m], null_story)
    return ConditionResult(name, dict(scores), wz, mwz, story, sz, p, ident)


@dataclass
class StoryEvaluation:
    """The windowed evaluation of one decoded story.

    Attributes:
        config: the settings used.
        variants: metric name -> precise variant name (e.g. `meteor` -> `meteor_nltk_wordnet`).
        start, end: the evaluated segment in seconds.
        bounds: `(K, 2)` window bounds [lo, hi) in seconds.
        conditions: condition name -> result; the prediction first, then the controls in the order given.
        null_window_scores: metric -> `(N, K)` window scores of the nulls (`(0, K)` when `null_z` is off).
        n_words: words of the reference inside [start, end).
        null_kind: what the nulls are, a key of `NULL_KINDS`.
    """

    config: StoryEvalConfig
    variants: dict[str, str]
    start: float
    end: float
    bounds: np.ndarray
    conditions: dict[str, ConditionResult]
    null_window_scores: dict[str, np.ndarray] = field(default_factory=dict)
    n_words: int = 0
    null_kind: str = "lm"

    @property
    def metrics(self) -> tuple[str, ...]:
        return self.config.metrics

    @property
    def n_nulls(self) -> int:
        arrays = list(self.null_window_scores.values())
        return int(arrays[0].shape[0]) if arrays else 0

    @property
    def null_story_scores(self) -> dict[str, np.ndarray]:
        """metric -> `(N,)` story scores S_n of the nulls (window means)."""
        return {m: v.mean(axis=1) if v.size else np.zeros(0) for m, v in self.null_window_scores.items()}

    def to_json(self, matrices: bool = False) -> dict[str, Any]:
        """A JSON-safe dict (NaN and inf become null). `matrices=True` adds each (K, K) identification matrix."""
        from .evaluate import json_safe

        obj = {"format": FORMAT, "version": VERSION, "config": self.config.to_json(), "variants": self.variants,
               "descriptions": {m: _describe(m, v) for m, v in self.variants.items()},
               "statistics": {"window_z": "(s_w - mean_n s_nw) / sd_n s_nw, sd ddof=1",
                              "story_z": "(mean_w s_w - mean_n S_n) / sd_n S_n, S_n = mean_w s_nw, sd ddof=1",
                              "p_value": "(1 + #{S_n >= S}) / (1 + N), one-sided, higher is better",
                              "identification": "per prediction window, fraction of other reference windows less "
                                                "similar than the true one (ties 0.5); chance 0.5"},
               "start": self.start, "end": self.end, "n_windows": int(len(self.bounds)), "n_words": self.n_words,
               "n_nulls": self.n_nulls, "null_kind": self.null_kind, "null": NULL_KINDS[self.null_kind],
               "bounds": np.asarray(self.bounds).tolist(),
               "conditions": {k: c.to_json(matrices) for k, c in self.conditions.items()},
               "nulls": {"story_scores": {m: v.tolist() for m, v in self.null_story_scores.items()},
                         "window_scores": {m: v.tolist() for m, v in self.null_window_scores.items()}}}
        return json_safe(obj)

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> "StoryEvaluation":
        """Inverse of `to_json` (NaN restored from null)."""
        if not isinstance(obj, dict) or obj.get("format") != FORMAT:
            found = obj.get("format") if isinstance(obj, dict) else type(obj).__name__
            raise EvaluationError(f"Not a story evaluation: format {found!r}, expected {FORMAT!r}.")
        try:
            k = int(obj["n_windows"])
            nulls = {m: _arr(v).reshape(-1, k) for m, v in obj["nulls"]["window_scores"].items()}
            return cls(StoryEvalConfig.from_json(obj["config"]), dict(obj["variants"]), float(obj["start"]),
                       float(obj["end"]), _arr(obj["bounds"]).reshape(-1, 2),
                       {name: ConditionResult.from_json(c) for name, c in obj["conditions"].items()}, nulls,
                       int(obj.get("n_words", 0)), _null_kind(obj.get("null_kind", "lm")))
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise EvaluationError(f"Incomplete or malformed story evaluation ({type(err).__name__}: {err}); "
                                  "re-run the decode that wrote it.") from err

    def summary_table(self) -> str:
        """Plain-text table: one row per condition (then the nulls' mean), per metric story score, story z and p,
        then the mean identification percentile rank; the variants are listed below."""
        fmt = format_score
        header = ["condition"]
        for m in self.metrics:
            header += [f"{m}", f"{m} z", f"{m} p"]
        header.append("ident")
        rows = []
        for name, c in self.conditions.items():
            row = [name]
            for m in self.metrics:
                row += [fmt(c.story_score[m]), fmt(c.story_z[m]), fmt(c.p_value[m])]
            row.append(fmt(c.identification.mean_percentile_rank) if c.identification else "-")
            rows.append(row)
        if self.n_nulls:
            row = [f"{NULL} (mean of {self.n_nulls})"]
            for m in self.metrics:
                s = self.null_story_scores[m]
                row += [fmt(float(s.mean())), "-", "-"]
            rows.append(row + ["-"])
        out = render_text(header, rows, right_align=True).split("\n")
        out.append("")
        out.append(f"{len(self.bounds)} windows of {self.config.window:g} s every {self.config.step:g} s in "
                   f"[{self.start:g}, {self.end:g}) s; z against {self.n_nulls} nulls (sd ddof=1): "
                   f"{NULL_KINDS[self.null_kind]}; "
                   "p = (1 + #{S_n >= S})/(1 + N); ident = mean percentile rank of the true window "
                   f"({self.config.identification_metric}, chance 0.5).")
        for m, v in self.variants.items():
            out.append(f"{m} = {v}: {_describe(m, v)}")
        return "\n".join(out)


# ------------------------------------------------------------------------------------------------------ entry points

def evaluate_story(pred: TimedWords, ref: TimedWords, nulls: Sequence[TimedWords], start: Optional[float] = None,
                   end: Optional[float] = None, config: StoryEvalConfig = StoryEvalConfig(), scorer=None,
                   controls: Optional[dict[str, TimedWords]] = None, name: str = "prediction",
                   null_kind: str = "lm") -> StoryEvaluation:
    """Windowed evaluation of a decoded story against its reference, nulls and controls.

    Args:
        pred: the decoded words and their times.
        ref: the reference words and their times (word midpoints).
        nulls: N >= 2 null sequences (e.g. brain-free LM samples at the prediction's word times); unused when
            `config.null_z` is False.
        start, end: the evaluated segment in seconds; default the reference's first and last word times rounded
            outward to whole seconds (floor, ceil).
        config: settings (`StoryEvalConfig`).
        scorer: a `semantic.MiniLMScorer` keeping the reference windows' embeddings across calls.
        controls: named control sequences (e.g. `{"permuted": ..., "no_brain": ...}`), scored like `pred`.
        name: the prediction's condition name.
        null_kind: what `nulls` are, a key of `NULL_KINDS` (recorded; pooling refuses to mix kinds).

    Returns: a `StoryEvaluation`.
    """
    null_kind = _null_kind(null_kind)
    controls = dict(controls or {})
    for cname in controls:
        if cname in (name, NULL):
            raise EvaluationError(f"Control name {cname!r} clashes with the prediction's name or {NULL!r}; rename it.")
    if config.null_z and len(nulls) < 2:
        raise EvaluationError(f"z-scores need at least 2 null sequences (sd with ddof=1); found {len(nulls)}. Pass "
                              "more nulls or StoryEvalConfig(null_z=False).")
    if not config.null_z and len(nulls):
        log.info("null_z is off: the %d nulls are not scored.", len(nulls))
    if start is None or end is None:
        if len(ref) == 0:
            raise EvaluationError("The reference has no words; pass start and end explicitly.")
        start = float(math.floor(ref.times[0])) if start is None else float(start)
        end = float(math.ceil(ref.times[-1])) if end is None else float(end)
    bounds = windows(float(start), float(end), config.window, config.step)
    windowed = _Windowed(ref, bounds, config, scorer)
    ident_metric = config.identification_metric

    null_windows: Optional[dict[str, np.ndarray]] = None
    if config.null_z:
        rows = [windowed.score(n, f"null {i}")[0] for i, n in enumerate(progress(nulls, "nulls", "null"))]
        null_windows = {m: np.stack([r[m] for r in rows]) for m in config.metrics}

    results: dict[str, ConditionResult] = {}
    for cname, words in progress([(name, pred)] + list(controls.items()), "conditions", "condition"):
        scores, tok, vecs = windowed.score(words, cname, keep=config.identification)
        ident = None
        if config.identification:
            ident = identification(tok, windowed.tokens, ident_metric, vecs, windowed.vecs)
        results[cname] = _condition(cname, scores, null_windows, ident)

    k = len(bounds)
    n_words = int(np.sum((ref.times >= start) & (ref.times < end)))
    empty_ref = sum(1 for t in windowed.tokens if not t)
    if empty_ref:
        log.warning("%d of %d reference windows are empty (wer_score 0, other metrics 0).", empty_ref, k)
    return StoryEvaluation(config, metric_variants(config), float(start), float(end), bounds, results,
                           null_windows if null_windows is not None
                           else {m: np.zeros((0, k)) for m in config.metrics}, n_words, null_kind)


def write_story_evaluation(ev: StoryEvaluation, path: str | Path, matrices: bool = False) -> None:
    """Write `ev.to_json(matrices)` to `path` atomically (indented JSON)."""
    write_json(path, ev.to_json(matrices))
