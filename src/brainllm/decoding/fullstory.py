"""Full-story reconstruction with a trained BrainLLM (Ye et al. 2025, section "end2end"), and the evaluation of
any decoded story (also the Tang et al. 2023 baseline's) on the same held-out story, windows and null.

Decoding walks the held-out run TR by TR. A word-rate model (ridge from the TR's following frames to the number of
words heard in it, fitted on the run's training stories only) says how many words TR t holds; their times are
spread evenly inside the TR. For each of those words the backbone sees `[BOS?] <brain> adapter(frames of TR t)
</brain>` and the hypothesis's last words (KV cache reused while the TR lasts), proposes words (nucleus, relative
floor, repetition filter), and a beam keeps the hypotheses with the highest brain-conditioned log-probability
(summed over their last `score_words` words, as the authors did). Controls, from the same model and the same word
times: `permuted` (each TR gets the frames of another TR of the story, N seeds: tests time-locked information, but
keeps what the whole story shares, e.g. its topics), `other_story` (each TR gets the frames of the same relative
position in another held-out story: tests story-specific information) and `no_brain` (the bare backbone).
Null: brain-free LM sequences at the same word times (Tang's null), which every condition is z-scored against.
Optionally also the *decoder null* (`decoder_nulls`): the same trained decoder, same word times, fed the frames of
other stories at random offsets. A trained adapter is a soft prompt that teaches the backbone the corpus's style, so
it beats the bare-LM null even with no signal in the frames; against the decoder null only information about this
story counts.
"""

from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ..data.dataset import BrainTextDataset, Run
from ..errors import BrainLLMError
from ..evaluation.pooled import PooledStoryEvaluation, load_story_evaluation, pool_story_evaluations, write_pooled
from ..evaluation.stats import contamination
from ..evaluation.story import (StoryEvalConfig, StoryEvaluation, TimedWords, evaluate_story, segment,
                               write_story_evaluation)
from ..io import write_json
from ..model import BrainLLM
from ..model.injection import PrefixInjection
from ..runs import LoadedRun
from .beam import (Beam, DecodedStory, candidate_pool, empty_beam, extension_counts, grow, null_sequences,
                   select_pool)
from .wordlm import ContextFilter, ProposalConfig, WordLM
from .wordrate import WordRateConfig, WordRateModel, binned_word_counts, word_times

log = logging.getLogger(__name__)

CONDITIONS = ("brain", "permuted", "other_story", "no_brain")
SUMMARY_FILE = "story_summary.json"
PRIOR_SUMMARY_FILE = "story_summary_brainprior.json"  # `tang decode --prior`, beside the plain decode's summary
DECODER_NULL_DIR = "decoder_null"  # inside each story folder: the same decodes scored against the decoder null
DECODER_NULL_SUMMARY = "story_summary_decoder_null.json"


@dataclass
class StoryDecoderConfig:
    """BrainLLM full-story settings. The authors: beam 3, 3 extensions, 10 context tokens, top-200 proposals."""

    width: int = 3
    extensions: int = 3
    context_words: int = 10
    score_words: int = 10          # a hypothesis's score sums the log-probs of its last this many words
    nucleus_mass: float = 0.9
    relative_floor: float = 0.01
    max_candidates: int = 200

    def proposal(self) -> ProposalConfig:
        return ProposalConfig(self.nucleus_mass, self.relative_floor, self.max_candidates, True)


def reference_of(run: Run) -> TimedWords:
    """The perceived words of a run with their times."""
    return TimedWords(list(run.words), np.asarray(run.word_times, dtype=float))


def predicted_times(model: WordRateModel, responses: np.ndarray, run: Run) -> np.ndarray:
    """`(W,)` word times (s): the word-rate model's count per TR, spread evenly inside each TR."""
    return word_times(model.predict_counts(responses), np.asarray(run.tr_times, dtype=float), tr_seconds(run.tr_times))


def fit_frame_wordrate(dataset: BrainTextDataset, stories: Sequence[str], config: WordRateConfig = WordRateConfig()
                       ) -> WordRateModel:
    """Word-rate model from the prepared frames (what BrainLLM's adapter sees) on the given (training) stories."""
    runs = [r for r in dataset.runs if r.stimulus in set(stories)]
    if not runs:
        raise BrainLLMError(f"No run of the training stories {list(stories)} in the dataset.")
    responses = [np.asarray(dataset.frames[r.rows[0]:r.rows[1]], dtype=np.float32) for r in runs]
    counts = [binned_word_counts(np.asarray(r.word_times), np.asarray(r.tr_times), tr_seconds(r.tr_times))
              for r in runs]
    return WordRateModel(config).fit(responses, counts)


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


class BrainPrefix:
    """`<brain> adapter(frames) </brain>` embeddings `(T + 2, H)` for TR t of the decoded story: the frames of TR
    `tr_order[t]` of `run` (identity by default; a derangement for `permuted`, another run for `other_story`).
    For a model that injects deeper (`inject_layer`), the brain slots are zeros and the adapter outputs come as a
    `PrefixInjection` of the slots' state after that layer."""

    def __init__(self, model: BrainLLM, frames: np.ndarray, run: Run, hrf_delay: int, frames_per_sample: int,
                 tr_order: np.ndarray | None = None):
        self.model = model
        self.frames = frames
        self.run = run
        self.hrf_delay = hrf_delay
        self.t = frames_per_sample
        self.order = tr_order if tr_order is not None else np.arange(run.n_trs)

    @torch.inference_mode()
    def __call__(self, tr: int) -> tuple[torch.Tensor, PrefixInjection | None]:
        """(prefix embeddings `(T + 2, H)` in the backbone's dtype, the injection or None) for TR `tr`."""
        src = int(self.order[tr])
        rows = [min(self.run.rows[0] + src + self.hrf_delay + j, self.run.rows[1] - 1) for j in range(self.t)]
        frames = torch.as_tensor(np.asarray(self.frames[rows], dtype=np.float32)).unsqueeze(0)  # (1, T, D)
        device = self.model.boundary.device
        brain = self.model.adapter(frames.to(device), torch.ones(1, self.t, dtype=torch.bool, device=device))[0]
        return self.model.brain_prefix(brain)


def trs_of_words(times: np.ndarray, tr_times: np.ndarray) -> np.ndarray:
    """`(W,)` the TR (row of the run) each word time falls in; `tr_times` are TR centres."""
    return np.clip(np.searchsorted(np.asarray(tr_times) + tr_seconds(tr_times) / 2, times, side="right"), 0,
                   len(tr_times) - 1)


class TRConditioning:
    """Puts a beam behind the brain prefix of the TR each word falls in: at the first word of a new TR, every
    hypothesis restarts from its last `lm.context_words` words behind `prefix(tr)` (the cache is reused within a
    TR)."""

    def __init__(self, prefix: BrainPrefix, times: np.ndarray, tr_times: np.ndarray):
        self.prefix = prefix
        self.tr_of_word = trs_of_words(times, tr_times)
        self.current_tr = -1

    def update(self, lm: WordLM, beam: Beam, i: int) -> None:
        """Before proposing word i: restart `beam.state` if word i starts a new TR."""
        tr = int(self.tr_of_word[i])
        if tr != self.current_tr:
            self.current_tr = tr
            contexts = [list(map(int, w[-lm.context_words:])) for w in beam.words]
            beam.state = lm.start(contexts, *self.prefix(tr))


class BrainPrior:
    """BrainLLM as the language prior of another beam decoder (the Tang decoder with `prior=`): an extension
    beyond both papers, LLM prior from BrainLLM and likelihood from the encoding model.

    It mirrors the decoder's beam with its own brain-conditioned LM state (restarted with the frames of each new
    TR, as `decode_brainllm` does), proposes the candidate words with their brain-conditioned log-probabilities,
    and follows the decoder's choices (`advance`). The decoder adds `weight` x the hypothesis's summed prior
    log-probability to its likelihood (weight 1 = Bayes' rule: log p(words) + log p(responses | words)).
    """

    def __init__(self, lm: WordLM, prefix: BrainPrefix, times: np.ndarray, tr_times: np.ndarray,
                 weight: float = 1.0):
        self.lm = lm
        self.conditioning = TRConditioning(prefix, times, tr_times)
        self.weight = weight
        self.beam = empty_beam(lm)

    def candidates(self, i: int, proposal: ProposalConfig, context_filter: ContextFilter
                   ) -> tuple[np.ndarray, list[tuple[int, float]]]:
        """The pool `(owners, [(word, brain-conditioned log p)])` for word i of the mirrored beam."""
        self.conditioning.update(self.lm, self.beam, i)
        return candidate_pool(self.lm, self.beam, proposal, context_filter)

    def advance(self, parents: np.ndarray, words: list[int], logps: list[float]) -> None:
        """Follow the decoder: its new hypotheses are `parents[r] + words[r]`."""
        self.beam = grow(self.lm, self.beam, parents, words, logps)

    @property
    def logprob(self) -> np.ndarray:
        """`(B,)` summed prior log-probability of each current hypothesis."""
        return self.beam.lm_logprob


def decode_brainllm(lm: WordLM, times: np.ndarray, tr_times: np.ndarray, prefix: BrainPrefix | None,
                    config: StoryDecoderConfig = StoryDecoderConfig(), progress: bool = True, desc: str = "decode"
                    ) -> DecodedStory:
    """Decode the words at `times` (s); `prefix` None = the bare LM (StdLLM)."""
    conditioning = None if prefix is None else TRConditioning(prefix, times, tr_times)
    filt = ContextFilter()
    proposal = config.proposal()
    beam = empty_beam(lm)
    for i in tqdm(range(len(times)), desc=desc, unit="word", disable=not progress):
        if conditioning is not None:  # new TR: new brain input for every hypothesis
            conditioning.update(lm, beam, i)
        owners, flat = candidate_pool(lm, beam, proposal, filt)
        recent = beam.word_logprobs[:, -(config.score_words - 1):].sum(1) if config.score_words > 1 else 0.0
        scores = np.asarray([lp for _, lp in flat]) + np.broadcast_to(recent, (len(beam),))[owners]
        chosen = select_pool(scores, owners, extension_counts(beam.lm_logprob, config.extensions), config.width)
        beam = grow(lm, beam, owners[chosen], [flat[c][0] for c in chosen], [flat[c][1] for c in chosen])
    words = [lm.vocab.words[w] for w in beam.words[0]] if len(times) else []
    return DecodedStory(words, np.asarray(times, float), {"decoder": "brainllm", **asdict(config),
                                                          "brain": prefix is not None})


def tr_seconds(tr_times: Sequence[float]) -> float:
    """Seconds between TRs of a run (the median spacing; 2 s, the Huth TR, for a one-TR run)."""
    return float(np.median(np.diff(tr_times))) if len(tr_times) > 1 else 2.0


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


def heldout_run(loaded: LoadedRun, story: str, allow_training_story: bool = False) -> tuple[Run, list[str]]:
    """(the run of `story` in the BrainLLM run's dataset, the run's training stories); a story that trained the
    adapter is refused unless `allow_training_story`."""
    dataset = loaded.dataset
    runs = [r for r in dataset.runs if r.stimulus == story]
    if not runs:
        raise BrainLLMError(f"No run of story '{story}' in {loaded.config.data.path}; stories: "
                            f"{sorted({r.stimulus for r in dataset.runs}) or 'none (not a story design)'}.")
    train_stories = sorted({dataset.by_id(i).stimulus for i in loaded.split.train})
    if story in train_stories and not allow_training_story:
        raise BrainLLMError(f"Story '{story}' trained this run's adapter; decode a test story "
                            f"({sorted({dataset.by_id(i).stimulus for i in loaded.split.test})}).")
    return runs[0], train_stories


def story_prefix(loaded: LoadedRun, source: Run, tr_order: np.ndarray | None = None) -> BrainPrefix:
    """The run's adapter on the frames of `source` (a run of its dataset), TR t reading TR `tr_order[t]`."""
    meta = loaded.dataset.meta
    hrf = int(meta.get("hrf_delay", meta.get("simulation", {}).get("hrf_delay", 1)))
    t = int(meta.get("frames_per_sample", meta.get("simulation", {}).get("frames_per_sample", 4)))
    return BrainPrefix(loaded.model, loaded.dataset.frames, source, hrf, t, tr_order)


def run_word_lm(loaded: LoadedRun, context_words: int) -> WordLM:
    """The run's frozen backbone as a word-level LM (the adapter enters through a `BrainPrefix`)."""
    return WordLM(loaded.model.backbone, loaded.encoder.tokenizer, context_words=context_words,
                  device=loaded.model.boundary.device)


def brain_prior(loaded: LoadedRun, run: Run, times: np.ndarray, context_words: int, weight: float = 1.0,
                tr_order: np.ndarray | None = None) -> BrainPrior:
    """A `BrainPrior` from a trained BrainLLM run for `run` (a held-out run of its dataset, see `heldout_run`)
    decoded at word `times`."""
    return BrainPrior(run_word_lm(loaded, context_words), story_prefix(loaded, run, tr_order), times,
                      np.asarray(run.tr_times), weight)


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
