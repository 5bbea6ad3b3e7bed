"""Tang et al. (2023) beam-search decoder: LM proposals scored by an fMRI encoding model's likelihood.

At predicted word i (time t_i) every hypothesis proposes next words (nucleus mass and relative floor, repetition
filter); each candidate's LM feature is placed at word i, the hypothesis's own features before it and the mean
training word feature ("blank") after it; the word features are Lanczos-downsampled to TRs, normalised, delayed and
mapped to the selected voxels, and scored by the Gaussian noise model on the TRs word i can affect (from the first
word where hypotheses differ, widened by the FIR delays). Hypothesis h keeps its `ceil(E * rank_h / |beam|)` most
likely candidates; the beam becomes the `width` most likely of the pool. The LM enters only through the proposals
and the extension counts, as in Tang's code.

Deviation, for speed: the LM sees between `context_words` and `2 * context_words - 1` preceding words through a
reused KV cache (Tang recomputed the last 8 s of words every step); candidate features come from the same forward
pass that gives the next step's proposals.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from tqdm.auto import tqdm

from ...decoding.beam import DecodedStory, candidate_pool, empty_beam, extension_counts, grow, select_pool
from ...decoding.wordlm import ContextFilter, ProposalConfig, WordLM
from ...errors import BrainLLMError
from ...voxelwise.lanczos import lanczos_matrix
from .encoding import EncodingModel

if TYPE_CHECKING:
    from ...decoding.fullstory import BrainPrior

log = logging.getLogger(__name__)


@dataclass
class TangDecoderConfig:
    """Beam-search settings. Paper (Tang et al. 2023): width 200, 5 extensions, nucleus 0.9, floor 0.1.

    The CPU default width is 20: cost grows linearly with width x candidates (see benchmarks/fullstory.py).
    """

    width: int = 20
    extensions: int = 5
    nucleus_mass: float = 0.9
    relative_floor: float = 0.1
    max_candidates: int = 50

    def proposal(self) -> ProposalConfig:
        return ProposalConfig(self.nucleus_mass, self.relative_floor, self.max_candidates, True)


def affected_trs(lanczos: np.ndarray, first_word: int, word: int, delays: tuple[int, ...], n_trs: int
                 ) -> tuple[int, int]:
    """`[lo, hi)` TRs whose responses word positions `first_word..word` can change: their Lanczos support,
    shifted by the FIR delays, clipped to the run. `lanczos`: `(T, W)`."""
    support = np.flatnonzero(np.any(lanczos[:, first_word:word + 1] != 0, axis=1))
    if len(support) == 0:
        return 0, 0
    lo, hi = int(support.min()), int(support.max()) + 1
    return max(0, lo + min(delays)), min(n_trs, hi + max(delays))


class FeatureHistory:
    """The LM feature of every word of the beam's hypotheses, stored once per word with parent pointers.

    Appending a word costs O(B H); copying every hypothesis's whole history each word (as a `(B, i, H)` array) cost
    O(B i H) per word, quadratic in the story length. `window` rebuilds only the words a likelihood needs.
    """

    def __init__(self, hidden_size: int) -> None:
        self.hidden_size = hidden_size
        self.feats: list[np.ndarray] = []     # per word i: (B_i, H) features of the hypotheses kept after word i
        self.parents: list[np.ndarray] = []   # per word i: (B_i,) row of word i - 1 each hypothesis extends

    def append(self, parents: np.ndarray, feats: np.ndarray) -> None:
        self.parents.append(np.asarray(parents, dtype=np.int64))
        self.feats.append(np.asarray(feats, dtype=np.float32))

    def window(self, start: int, rows: np.ndarray) -> np.ndarray:
        """`(len(rows), n - start, H)` features of words `start..n-1` (n = words so far) of the current
        hypotheses `rows`, found by following the parent pointers back."""
        n = len(self.feats)
        out = np.empty((len(rows), max(0, n - start), self.hidden_size), dtype=np.float32)
        idx = np.asarray(rows, dtype=np.int64)
        for t in range(n - 1, start - 1, -1):
            out[:, t - start] = self.feats[t][idx]
            idx = self.parents[t][idx]
        return out


def _first_difference(words: np.ndarray) -> int:
    """First word position where the hypotheses differ; the current length if they are all identical."""
    if len(words) < 2:
        return words.shape[1]
    same = np.all(words == words[:1], axis=0)
    diff = np.flatnonzero(~same)
    return int(diff[0]) if len(diff) else words.shape[1]


def decode(lm: WordLM, model: EncodingModel, responses: np.ndarray, tr_times: np.ndarray, word_times: np.ndarray,
           config: TangDecoderConfig = TangDecoderConfig(), progress: bool = True, prior: "BrainPrior | None" = None
           ) -> DecodedStory:
    """Decode one run.

    Args:
        lm: the word-level LM (its feature layer and context rule must be those the encoding model was fitted with).
        model: a fitted `EncodingModel`.
        responses: `(T, V)` the run's responses in the voxel space the model was fitted on (all voxels; the
            model's selected voxels are taken here).
        tr_times: `(T,)` seconds of each row; word_times: `(W,)` predicted word times (word-rate model).
        prior: a `fullstory.BrainPrior` (extension): BrainLLM proposes the candidates instead of the bare LM, and
            a candidate's score is its likelihood + prior.weight x its hypothesis's summed BrainLLM log-prob.
    """
    if prior is not None and prior.lm.vocab.words != lm.vocab.words:
        raise BrainLLMError("The BrainLLM prior and the encoding model's LM have different word vocabularies; use "
                            "the same backbone for both.")
    n_trs = len(tr_times)
    if responses.shape[0] != n_trs:
        raise BrainLLMError(f"responses have {responses.shape[0]} rows but there are {n_trs} TR times.")
    observed = torch.as_tensor(model.select(np.asarray(responses, dtype=np.float32)), dtype=torch.float32)
    lanczos = lanczos_matrix(np.asarray(word_times, float), np.asarray(tr_times, float)).astype(np.float32)
    lz = torch.from_numpy(lanczos)  # (T, W)
    delays = tuple(int(d) for d in model.config.delays)
    if model.blank_word_ is None:
        raise BrainLLMError("The encoding model was fitted without word_features, so it has no blank word vector "
                            "for not-yet-decoded words; refit it with word_features (brainllm tang fit does).")
    blank = torch.as_tensor(model.blank_word_, dtype=torch.float32)
    filt = ContextFilter()
    proposal = config.proposal()
    beam = empty_beam(lm)
    history = FeatureHistory(lm.hidden_size)
    n_words = len(word_times)
    for i in tqdm(range(n_words), desc="tang decode", unit="word", disable=not progress):
        owners, flat = (candidate_pool(lm, beam, proposal, filt) if prior is None
                        else prior.candidates(i, proposal, filt))
        cand_state = lm.extend(beam.state, owners.tolist(), [w for w, _ in flat])
        cand_feats = cand_state.features.float().cpu()  # (N, H)
        lo, hi = affected_trs(lanczos, _first_difference(beam.words), i, delays, n_trs)
        scores = _likelihoods(model, history, owners, cand_feats, lz, blank, observed, i, lo, hi, delays)
        if prior is not None:
            scores = scores + prior.weight * (prior.logprob[owners] + np.asarray([lp for _, lp in flat]))
        chosen = select_pool(scores, owners, extension_counts(beam.lm_logprob, config.extensions), config.width)
        history.append(owners[chosen], cand_feats[chosen].numpy())
        words, logps = [flat[c][0] for c in chosen], [flat[c][1] for c in chosen]
        beam = grow(lm, beam, owners[chosen], words, logps, lm.select(cand_state, chosen.tolist()))
        if prior is not None:
            prior.advance(owners[chosen], words, logps)
        beam.extra["likelihood"] = scores[chosen]
    words = [lm.vocab.words[w] for w in beam.words[0]] if n_words else []
    return DecodedStory(words, np.asarray(word_times, float),
                        {"decoder": "tang2023" if prior is None else "tang2023+brainllm_prior", **asdict(config),
                         "prior_weight": None if prior is None else prior.weight, "feature_layer": lm.feature_layer,
                         "context_words": lm.context_words, "max_context_words": lm.max_context_words})


def _likelihoods(model: EncodingModel, history: FeatureHistory, owners: np.ndarray, cand_feats: torch.Tensor,
                 lz: torch.Tensor, blank: torch.Tensor, observed: torch.Tensor, i: int, lo: int, hi: int,
                 delays: tuple[int, ...]) -> np.ndarray:
    """Log-likelihood `(N,)` of each candidate's stimulus on TRs `[lo, hi)`."""
    if hi <= lo:
        return np.zeros(len(owners))
    # TR features are needed from lo - max(delay) to hi - min(delay) so the delayed rows [lo, hi) are complete
    a, b = max(0, lo - max(max(delays), 0)), min(lz.shape[0], hi - min(min(delays), 0))
    rows = lz[a:b]  # (R, W)
    # only the past words inside these TRs' Lanczos support contribute; rebuild just those (not all i words)
    support = torch.nonzero(rows[:, :i].any(0)).flatten()
    start = int(support[0]) if len(support) else i
    past = torch.from_numpy(history.window(start, np.arange(int(owners.max()) + 1)))  # (B, i - start, H)
    base = torch.einsum("rw,bwh->brh", rows[:, start:i], past)  # (B, R, H)
    future = rows[:, i + 1:].sum(1, keepdim=True) * blank  # (R, H)
    x = base[torch.as_tensor(owners)] + future + rows[:, i][None, :, None] * cand_feats[:, None, :]  # (N, R, H)
    trs = np.arange(lo - a, hi - a)
    return np.asarray(model.log_likelihood(x, observed[a:b], trs), dtype=float)
