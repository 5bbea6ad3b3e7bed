"""The full-story experiment: decode a held-out story under each condition, score every decode against a null,
and pool stories (`brainllm decode-story`); also the scoring of any decoded story (the Tang baseline's too) on the
same held-out story, windows and null.

Controls, from the same model and the same word times (`decoding.fullstory` decodes each): `permuted` (each TR gets
the frames of another TR of the story, N seeds: tests time-locked information, but keeps what the whole story
shares, e.g. its topics), `other_story` (each TR gets the frames of the same relative position in another held-out
story: tests story-specific information) and `no_brain` (the bare backbone). Null: brain-free LM sequences at the
same word times (Tang's null), which every condition is z-scored against. Optionally also the *decoder null*
(`decoder_nulls`): the same trained decoder, same word times, fed the frames of other stories at random offsets. A
trained adapter is a soft prompt that teaches the backbone the corpus's style, so it beats the bare-LM null even with
no signal in the frames; against the decoder null only information about this story counts.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..data.dataset import BrainTextDataset, Run
from ..decoding.beam import DecodedStory, null_sequences
from ..decoding.fullstory import (StoryDecoderConfig, decode_brainllm, fit_frame_wordrate, heldout_run,
                                  predicted_times, run_word_lm, story_prefix)
from ..decoding.wordlm import WordLM
from ..errors import BrainLLMError
from ..evaluation.pooled import PooledStoryEvaluation, load_story_evaluation, pool_story_evaluations, write_pooled
from ..evaluation.stats import contamination
from ..evaluation.story import (StoryEvalConfig, StoryEvaluation, TimedWords, evaluate_story, segment,
                               write_story_evaluation)
from ..io import write_json
from ..runs import LoadedRun

log = logging.getLogger(__name__)

CONDITIONS = ("brain", "permuted", "other_story", "no_brain")
SUMMARY_FILE = "story_summary.json"
PRIOR_SUMMARY_FILE = "story_summary_brainprior.json"  # `tang decode --prior`, beside the plain decode's summary
DECODER_NULL_DIR = "decoder_null"  # inside each story folder: the same decodes scored against the decoder null
DECODER_NULL_SUMMARY = "story_summary_decoder_null.json"


def reference_of(run: Run) -> TimedWords:
    """The perceived words of a run with their times."""
    return TimedWords(list(run.words), np.asarray(run.word_times, dtype=float))


def unrelated_runs(dataset: BrainTextDataset, run: Run, train_stories: Sequence[str]) -> list[Run]:
    """Runs of other stories whose frames stand in for `run`'s in the `other_story` control and the decoder null:
    the other held-out stories (the adapter never trained on them), or, with none, the training stories; sorted."""
    others = [r for r in dataset.runs if r.stimulus != run.stimulus]
    held = [r for r in others if r.stimulus not in set(train_stories)]
    pool = sorted(held or others, key=lambda r: (r.stimulus, r.name))
    if not pool:
        raise BrainLLMError(f"Frames of another story are needed (other_story, decoder null); the dataset has only "
                            f"{run.stimulus}.")
    return pool


def other_story_run(dataset: BrainTextDataset, run: Run, train_stories: Sequence[str]) -> Run:
    """The run whose frames the `other_story` control feeds: the next held-out story after `run`'s in sorted
    order (cyclic), or, with no other held-out story, the next training story."""
    pool = unrelated_runs(dataset, run, train_stories)
    after = [r for r in pool if r.stimulus > run.stimulus]
    return (after or pool)[0]


def stretched_order(n_trs: int, source_trs: int, offset: int = 0) -> np.ndarray:
    """`(n_trs,)` source TR for each TR: the same relative position in a run of `source_trs` TRs, shifted
    circularly by `offset` TRs."""
    return (np.arange(n_trs) * source_trs // n_trs + offset) % source_trs


def decoder_null_sources(pool: Sequence[Run], n: int, seed: int = 0) -> list[tuple[Run, int]]:
    """(source run, circular offset) of each of `n` decoder nulls: the runs of `pool` in turn, each at a random
    offset, so nulls from the same run still differ."""
    rng = np.random.default_rng(seed)
    return [(pool[k % len(pool)], int(rng.integers(pool[k % len(pool)].n_trs))) for k in range(n)]


def _derangement(n: int, seed: int) -> np.ndarray:
    """A permutation of range(n) with no fixed point (n >= 2)."""
    if n < 2:
        raise BrainLLMError(f"A story of {n} TR cannot be permuted.")
    rng = np.random.default_rng(seed)
    while True:  # rejection sampling: a uniform derangement, about e tries on average
        perm = rng.permutation(n)
        if not np.any(perm == np.arange(n)):
            return perm


def window_contamination(ev_bounds: np.ndarray, pred: TimedWords, ref: TimedWords, min_run: int = 6) -> dict:
    """Verbatim overlap of each 20-s prediction window with the same reference window (LLM memorisation of a
    public story shows up as long shared runs)."""
    p, r = segment(pred, ev_bounds), segment(ref, ev_bounds)
    return contamination(p, r, [f"{a:.0f}-{b:.0f}s" for a, b in ev_bounds], min_run=min_run)


def evaluate_decoded(decoded: dict[str, DecodedStory], run: Run, lm: WordLM, out: str | os.PathLike,
                     model_name: str, n_nulls: int = 10, config: StoryEvalConfig = StoryEvalConfig(),
                     seed: int = 0, progress: bool = True, extra: dict | None = None,
                     null_words: Sequence[Sequence[str]] | None = None, null_kind: str = "lm",
                     null_info: dict | None = None):
    """Score `decoded[model_name]` against the run's transcript, its null and the other entries as controls;
    write `decoded.json`, `nulls.json` and `story_evaluation.json` into `out`. Returns the StoryEvaluation.

    The nulls are `n_nulls` brain-free LM sequences sampled here, unless `null_words` gives them (one word list per
    null, at the prediction's word times) together with their `null_kind` (see `evaluation.story.NULL_KINDS`);
    `null_info` is written into `nulls.json` beside them (e.g. where decoder nulls took their frames)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ref = reference_of(run)
    times = decoded[model_name].times
    if null_words is None:
        log.info("Sampling %d null sequences of %d words (brain-free LM, beam %d)", n_nulls, len(times), 10)
        null_words = null_sequences(lm, len(times), n_nulls, seed=seed)
    nulls = [TimedWords(list(words), times) for words in null_words]
    as_timed = {k: TimedWords(d.words, d.times) for k, d in decoded.items()}
    ev = evaluate_story(as_timed[model_name], ref, nulls,
                        controls={k: v for k, v in as_timed.items() if k != model_name}, config=config,
                        name=model_name, null_kind=null_kind)
    write_json(out / "decoded.json", {"run": run.name, "story": run.stimulus, **(extra or {}),
                                      "decoded": {k: d.to_json() for k, d in decoded.items()}})
    write_json(out / "nulls.json", {"kind": null_kind, "times": [round(float(t), 4) for t in times],
                                    "words": [n.words for n in nulls], **(null_info or {})})
    write_story_evaluation(ev, out / "story_evaluation.json")
    bounds = np.asarray(ev.bounds)
    write_json(out / "contamination.json",
               {k: window_contamination(bounds, v, ref) for k, v in as_timed.items()})
    return ev


def decode_story(loaded: LoadedRun, story: str, out: str | os.PathLike,
                 config: StoryDecoderConfig = StoryDecoderConfig(), permutations: int = 1, n_nulls: int = 10,
                 conditions: Sequence[str] = CONDITIONS, allow_training_story: bool = False, progress: bool = True,
                 decoder_nulls: int = 0):
    """`brainllm decode-story`: decode a held-out story under each condition, evaluate, write into `out`.

    With `decoder_nulls` N >= 2, also decode N decoder nulls (the same decoder on the frames of other stories,
    `decoder_null_sources`) and score the same decodes against them into `out/decoder_null`.
    Returns the evaluation against the bare-LM null."""
    if decoder_nulls == 1 or decoder_nulls < 0:
        raise BrainLLMError(f"decoder_nulls must be 0 (off) or at least 2 (z needs a spread); got {decoder_nulls}.")
    dataset = loaded.dataset
    run, train_stories = heldout_run(loaded, story, allow_training_story)
    bad = [c for c in conditions if c not in CONDITIONS]
    if bad:
        raise BrainLLMError(f"Unknown condition(s) {bad}; choose from {CONDITIONS}.")
    wordrate = fit_frame_wordrate(dataset, train_stories)
    frames = np.asarray(dataset.frames[run.rows[0]:run.rows[1]], dtype=np.float32)
    times = predicted_times(wordrate, frames, run)
    log.info("Word-rate model: %d words predicted for %s (%d heard)", len(times), story, len(run.words))
    lm = run_word_lm(loaded, config.context_words)
    tr_times = np.asarray(run.tr_times)
    decoded: dict[str, DecodedStory] = {}
    if "brain" in conditions:
        prefix = story_prefix(loaded, run)
        decoded["brain"] = decode_brainllm(lm, times, tr_times, prefix, config, progress, "brain")
    if "permuted" in conditions:
        for p in range(permutations):
            prefix = story_prefix(loaded, run, tr_order=_derangement(run.n_trs, seed=p))
            name = "permuted" if permutations == 1 else f"permuted_{p}"
            decoded[name] = decode_brainllm(lm, times, tr_times, prefix, config, progress, name)
    if "other_story" in conditions:
        other = other_story_run(dataset, run, train_stories)
        prefix = story_prefix(loaded, other, tr_order=stretched_order(run.n_trs, other.n_trs))
        decoded["other_story"] = decode_brainllm(lm, times, tr_times, prefix, config, progress, "other_story")
        log.info("other_story control: frames of %s", other.stimulus)
    if "no_brain" in conditions:
        with loaded.model.bare_backbone():  # StdLLM: the pretrained backbone alone, also for a LoRA run
            decoded["no_brain"] = decode_brainllm(lm, times, tr_times, None, config, progress, "no_brain")
    model_name = "brain" if "brain" in decoded else next(iter(decoded))
    extra = {"run_dir": str(loaded.path), "other_story": other.stimulus if "other_story" in conditions else None,
             "word_rate": {"predicted_words": len(times), "heard_words": len(run.words)},
             "simulated": dataset.simulated}
    with loaded.model.bare_backbone():  # the brain-free null is the pretrained LM's
        ev = evaluate_decoded(decoded, run, lm, out, model_name, n_nulls, progress=progress, extra=extra)
    if decoder_nulls:
        sources = decoder_null_sources(unrelated_runs(dataset, run, train_stories), decoder_nulls)
        null_words = [decode_brainllm(lm, times, tr_times,
                                      story_prefix(loaded, src, stretched_order(run.n_trs, src.n_trs, offset)),
                                      config, progress, f"decoder null {k}").words
                      for k, (src, offset) in enumerate(sources)]
        info = {"sources": [{"story": src.stimulus, "offset_trs": offset} for src, offset in sources]}
        evaluate_decoded(decoded, run, lm, Path(out) / DECODER_NULL_DIR, model_name, progress=progress,
                         extra=extra, null_words=null_words, null_kind="decoder", null_info=info)
    return ev


def decode_stories(decode_one: Callable[[str, Path], StoryEvaluation], stories: Sequence[str],
                   out: str | os.PathLike, folder_prefix: str, summary_file: str = SUMMARY_FILE
                   ) -> tuple[dict[str, StoryEvaluation], PooledStoryEvaluation | None]:
    """Decode each story into `out/<folder_prefix><story>` with `decode_one(story, folder)`; with more than one
    story, also pool them (`evaluation.pooled`) into `out/<summary_file>` (decoders that share `out` must use
    different names, or the second pooled summary replaces the first). Returns (story -> evaluation, the pooled
    evaluation or None)."""
    if not stories:
        raise BrainLLMError("No story to decode.")
    if len(set(stories)) != len(stories):
        raise BrainLLMError(f"A story is given twice in {list(stories)}; each story is decoded once.")
    out = Path(out)
    evaluations = {s: decode_one(s, out / f"{folder_prefix}{s}") for s in stories}
    return evaluations, _pool_several(evaluations, out / summary_file)


def _pool_several(evaluations: dict[str, StoryEvaluation], path: Path) -> PooledStoryEvaluation | None:
    """Pool the stories into `path` when there are several (None for one story)."""
    if len(evaluations) < 2:
        return None
    pooled = pool_story_evaluations(evaluations)
    write_pooled(pooled, path)
    return pooled


def decoder_null_results(out: str | os.PathLike, stories: Sequence[str], folder_prefix: str = "story_"
                         ) -> tuple[dict[str, StoryEvaluation], PooledStoryEvaluation | None]:
    """The decodes of `decode_stories` scored against their decoder nulls (`out/<prefix><story>/decoder_null`),
    pooled into `out/story_summary_decoder_null.json` when there are several stories."""
    out = Path(out)
    evaluations = dict(load_story_evaluation(out / f"{folder_prefix}{s}" / DECODER_NULL_DIR) for s in stories)
    return evaluations, _pool_several(evaluations, out / DECODER_NULL_SUMMARY)
