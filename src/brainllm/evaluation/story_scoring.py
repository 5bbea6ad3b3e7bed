"""Window scoring of a decoded story: the metrics, their precise variants and the reference cut into windows
(`evaluation.story` describes each metric).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any, Optional, Sequence

import numpy as np

from ..progress import progress
from . import metrics as M
from .rundata import EvaluationError
from .story_windows import TimedWords, segment
from .text import detokenize, tokenize

log = logging.getLogger(__name__)

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


def describe_metric(name: str, variant: str) -> str:
    """One line on what metric `name` measures in its `variant` (for tables and JSON)."""
    return DESCRIPTIONS.get(variant, DESCRIPTIONS.get(name, variant))


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


class WindowedReference:
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
        """(metric -> `(K,)` window scores, the window tokens, their MiniLM vectors when `keep` and computed)."""
        tok = _window_tokens(words, self.bounds, self.config)
        vecs = _token_vectors(_new_scorer(), tok, f"MiniLM {label}") if self.semantic else None
        scores = _score_tokens(tok, self.tokens, self.config, vecs, self.vecs)
        return scores, tok, (vecs if keep else None)


def score_windows(pred: TimedWords, ref: TimedWords, bounds: np.ndarray, config: StoryEvalConfig = StoryEvalConfig(),
                  scorer=None) -> dict[str, np.ndarray]:
    """Window scores of `pred` against `ref`: metric name -> `(K,)` float64, one value per row of `bounds` `(K, 2)`.

    `scorer` is a `semantic.MiniLMScorer` that keeps the reference windows' embeddings (made when needed).
    """
    return WindowedReference(ref, bounds, config, scorer).score(pred)[0]
