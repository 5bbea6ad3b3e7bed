"""Full-story reconstruction with a trained BrainLLM (Ye et al. 2025, section "end2end").

Decoding walks the held-out run TR by TR. A word-rate model (ridge from the TR's following frames to the number of
words heard in it, fitted on the run's training stories only) says how many words TR t holds; their times are
spread evenly inside the TR. For each of those words the backbone sees `[BOS?] <brain> adapter(frames of TR t)
</brain>` and the hypothesis's last words (KV cache reused while the TR lasts), proposes words (nucleus, relative
floor, repetition filter), and a beam keeps the hypotheses with the highest brain-conditioned log-probability
(summed over their last `score_words` words, as the authors did). A `BrainPrefix` can read the frames of any TR of
any run (`tr_order`), which is how the controls of `experiments.fullstory` feed other frames; `BrainPrior` makes
the same decoder the language prior of another beam decoder (the Tang baseline with `--prior`).

The story experiment (conditions, nulls, scoring and pooling of decoded stories) is `brainllm.experiments.fullstory`;
nothing here imports a scoring module.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from ..data.dataset import BrainTextDataset, Run
from ..errors import BrainLLMError
from ..model import BrainLLM
from ..model.injection import PrefixInjection
from ..runs import LoadedRun
from .beam import Beam, DecodedStory, candidate_pool, empty_beam, extension_counts, grow, select_pool
from .wordlm import ContextFilter, ProposalConfig, WordLM
from .wordrate import WordRateConfig, WordRateModel, binned_word_counts, word_times

log = logging.getLogger(__name__)


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
