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

This module holds the entry points (`evaluate_story`, `write_story_evaluation`) and names the public pieces of the
modules that do each job: `story_windows` (timed words and windows), `story_scoring` (window scoring and its
settings), `story_stats` (z, p, identification matrices), `story_results` (the result types and their JSON).
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from ..io import write_json
from ..progress import progress
from .rundata import EvaluationError
from .story_results import (FORMAT, NULL, NULL_KINDS, VERSION, ConditionResult, Identification, StoryEvaluation,
                            check_null_kind, format_score)
from .story_scoring import (DESCRIPTIONS, STORY_METRICS, StoryEvalConfig, WindowedReference, describe_metric,
                            metric_variants, score_windows)
from .story_stats import condition_result, empirical_p, identification, percentile_ranks, safe_z
from .story_windows import TimedWords, segment, windows

__all__ = ["DESCRIPTIONS", "FORMAT", "NULL", "NULL_KINDS", "STORY_METRICS", "VERSION", "ConditionResult",
           "Identification", "StoryEvalConfig", "StoryEvaluation", "TimedWords", "describe_metric", "empirical_p",
           "evaluate_story", "format_score", "identification", "metric_variants", "percentile_ranks", "safe_z",
           "score_windows", "segment", "windows", "write_story_evaluation"]

log = logging.getLogger(__name__)


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
    null_kind = check_null_kind(null_kind)
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
    windowed = WindowedReference(ref, bounds, config, scorer)
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
        results[cname] = condition_result(cname, scores, null_windows, ident)

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
