"""The Bayesian decoder (beyond the paper): BrainLLM proposes, an encoding model of the frames decides.

Tang et al. 2023 decode by asking which candidate words best *predict* the recorded responses; on real Pereira
frames that encoding direction keeps far more of the sentence than any regression of frames onto one vector the
LM must read (DESIGN.md). Applied to sentences, with the trained BrainLLM as the prior:

    score(c) = log p_LM(c | prompt, frames) + λ · log p(frames | prompt + c)

over candidate continuations c: the run's own search result (beam or greedy) plus `n_candidates − 1` samples from
BrainLLM (nucleus sampling). `log p_LM` is the summed token log-probability of c and EOS under the adapter-
conditioned LM (teacher-forced); `log p(frames | text)` is a `voxelwise.sentence_encoding.SentenceEncodingModel`
on the backbone's mean state of the text after one layer plus the nuisance features (length, position; a second
ridge band), fitted on training samples only; the text may be read after the passage's previous sentences (an
option, `context_sentences`). The layer, the number of frame dimensions, the noise shrinkage, the nuisance band's
weight and the context are chosen by cross-validation over training stimuli, and λ and the number of candidates
on the validation split, by `experiments.decoder_tuning.tune`, which stores them in the run folder (`RUN/decoder/`),
so that `brainllm generate RUN` decodes this way. The decoder's distribution (`posterior_losses`) may use its own λ
(`generation.posterior_weight`, the held-out likelihood's choice) beside the picks' `encoding_weight`.

A control decodes with the same frames it is given everywhere: PerBrainLLM's candidates come from the permuted
frames and are scored against the permuted frames.

This module scores the candidates and picks (`bayes_decode`) and gives the decoder's distribution
(`posterior_losses`); the candidates come from `candidates`, the encoding model from `encoding_model` (fitted and
chosen by `encoding_choice`), identification from `decoder_identification`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..config import GenerationConfig
from ..model import EncodedSample
from ..model.precision import cast_parameters
from ..model.text_features import full_text, mean_states_after_prefix
from ..runs import LoadedRun
from .candidates import Candidates, propose, propose_stored, regroup, sampling_dtype
from .encoding_model import SentenceScorer, load_scorer, positions_of, reference_texts
from .guided import guided_proposals
from .pool_mbr import PoolMBR, PoolMBRPicker
from .retrieval import retrieval_pool, retrieval_scores
from .seeded import seeded_proposals


def encoding_scores(run: LoadedRun, scorer: SentenceScorer, samples: Sequence[EncodedSample],
                    texts: Sequence[Sequence[str]], shared_prefix: bool = True,
                    dtype: torch.dtype = torch.float32) -> list[np.ndarray]:
    """log p(frames of sample i | prompt_i + candidate) per candidate, the frames being the ones the sample is
    given (a control's permuted frames). With `shared_prefix` each sample's context + prompt runs through the
    backbone once (its weights in `dtype`) and its candidates continue from that cache
    (`mean_states_after_prefix`); without, every candidate's text runs whole (`mean_states`, the run's own float
    type): the same states up to float rounding."""
    prompts = [run.dataset.by_id(s.id).prompt for s in samples]
    positions = positions_of(run, samples)
    frames = scorer.frames(samples)
    contexts = scorer.contexts(samples)
    layer = scorer.choice.layer
    flat = [(i, full_text(prompts[i], t)) for i, cands in enumerate(texts) for t in cands]
    flat_texts, flat_positions = [t for _, t in flat], [positions[i] for i, _ in flat]
    flat_frames = frames[[i for i, _ in flat]]
    if not shared_prefix or layer is None:
        ll = scorer.log_likelihood(flat_texts, flat_positions, flat_frames,
                                   None if contexts is None else [contexts[i] for i, _ in flat])
        return regroup(ll, texts)
    with cast_parameters(run.model.backbone, dtype):
        states = np.concatenate(mean_states_after_prefix(run.model.backbone, run.encoder, prompts, texts, layer,
                                                         contexts, bare=run.model.bare_backbone()))
    return regroup(scorer.states_log_likelihood(states, flat_texts, flat_positions, flat_frames), texts)


def score_candidates(run: LoadedRun, samples: Sequence[EncodedSample], layout: str, cfg: GenerationConfig,
                     scorer: SentenceScorer, desc: str = "bayes", store: Path | None = None) -> Candidates:
    """Propose candidates for each sample (kept in and read back from `store`, when given: `propose_stored`) and
    score them under the frames each sample is given; with `cfg.guided_beams` > 0, the encoding-guided search's
    texts by `scorer` join them (`with_guided`), and with `cfg.seeded_sentences` > 0 the retrieval-seeded texts
    (`seeded_texts`, retrieved by `scorer` from the run's pool)."""
    cands = (propose(run, samples, layout, cfg, desc) if store is None
             else propose_stored(run, samples, layout, cfg, store, desc))
    cands.encoding = _scored(run, scorer, samples, cands.texts, cfg)
    if cfg.guided_beams:
        cands = with_guided(run, samples, layout, cfg, scorer, cands, desc)
    if cfg.seeded_sentences:
        cands = cands.extended(run.encoder.decode, *seeded_texts(run, samples, layout, cfg, scorer, desc=desc))
    return cands


def with_guided(run: LoadedRun, samples: Sequence[EncodedSample], layout: str, cfg: GenerationConfig,
                scorer: SentenceScorer, cands: Candidates, desc: str = "bayes") -> Candidates:
    """Scored `cands` and, after them, the texts of the encoding-guided search by `scorer` (`guided_texts`)."""
    return cands.extended(run.encoder.decode, *guided_texts(run, samples, layout, cfg, scorer, desc))


def guided_texts(run: LoadedRun, samples: Sequence[EncodedSample], layout: str, cfg: GenerationConfig,
                 scorer: SentenceScorer, desc: str = "bayes") -> tuple[list, list[np.ndarray], list[np.ndarray]]:
    """The encoding-guided search's texts by `scorer` (`cfg.guided_beams` beams, λ `cfg.encoding_weight`:
    `guided.guided_proposals`): per sample their token ids, `(n,)` log p_LM and `(n,)` log p(frames | text),
    scored whole as every candidate is (`encoding_scores`)."""
    ids, lm = guided_proposals(run, samples, layout, cfg, scorer, desc)
    return ids, lm, _scored_ids(run, scorer, samples, ids, cfg)


def seeded_texts(run: LoadedRun, samples: Sequence[EncodedSample], layout: str, cfg: GenerationConfig,
                 scorer: SentenceScorer, pool: Sequence[str] | None = None, desc: str = "bayes"
                 ) -> tuple[list, list[np.ndarray], list[np.ndarray]]:
    """The retrieval-seeded texts (`cfg.seeded_sentences` of `pool` retrieved by `scorer`, `cfg.seeded_draws`
    draws: `seeded.seeded_proposals`): per sample their token ids, `(n,)` log p_LM and `(n,)` log p(frames | text),
    scored whole as every candidate is (`encoding_scores`)."""
    ids, lm = seeded_proposals(run, samples, layout, cfg, scorer, pool, f"{desc}/seeded")
    return ids, lm, _scored_ids(run, scorer, samples, ids, cfg)


def _scored_ids(run: LoadedRun, scorer: SentenceScorer, samples: Sequence[EncodedSample],
                ids: Sequence[Sequence[Sequence[int]]], cfg: GenerationConfig) -> list[np.ndarray]:
    """`_scored` of candidates given as token ids."""
    return _scored(run, scorer, samples, [[run.encoder.decode(c) for c in group] for group in ids], cfg)


def _scored(run: LoadedRun, scorer: SentenceScorer, samples: Sequence[EncodedSample],
            texts: Sequence[Sequence[str]], cfg: GenerationConfig) -> list[np.ndarray]:
    """`encoding_scores` of candidate texts as the decoder of `cfg` computes them: from each prompt's shared cache
    with the prefix sampler, in its float type (`sampling_dtype`)."""
    return encoding_scores(run, scorer, samples, texts, shared_prefix=cfg.sampler == "prefix",
                           dtype=sampling_dtype(run, cfg))


def bayes_decode(run: LoadedRun, samples: Sequence[EncodedSample], layout: str, cfg: GenerationConfig,
                 lm_losses: np.ndarray | None = None, desc: str = "bayes", scorer: str = "encoding",
                 store: Path | None = None) -> tuple[list[str], np.ndarray | None]:
    """Decoded text of each sample by the Bayesian decoder (`cfg.encoding_weight`, `cfg.n_candidates`, `cfg.pick`:
    `pool-mbr` also scores the run's training sentences, `retrieval.retrieval_pool`); `scorer`
    "nuisance" swaps in the length/position-only encoding model (the nuisance control). Given the adapter-
    conditioned LM's teacher-forced losses of the reference continuations `lm_losses` `(n,)` (mean nats per token
    + EOS), also the loss of each under the decoder's distribution at λ `cfg.distribution_weight`
    (`posterior_losses`); else None. With `store` (a JSON file), candidates are kept there as they are proposed
    and read back instead of proposed again (`propose_stored`)."""
    model = load_scorer(run, scorer)
    cands = score_candidates(run, samples, layout, cfg, model, desc, store)
    if cfg.pick == "pool-mbr":  # the same scorer and frames score the run's training sentences
        pool = retrieval_pool(run)
        texts = PoolMBRPicker(cands, pool, retrieval_scores(run, model, samples, pool),
                              cfg.pool_mbr_top).picks(PoolMBR.of(cfg))
    else:
        texts = cands.picks(cfg.encoding_weight, rule=cfg.pick)
    if lm_losses is None:
        return texts, None
    return texts, posterior_losses(lm_losses, *reference_scores(run, model, samples), cands,
                                   cfg.distribution_weight)


def reference_scores(run: LoadedRun, scorer: SentenceScorer, samples: Sequence[EncodedSample]
                     ) -> tuple[np.ndarray, np.ndarray]:
    """`(n,)` continuation tokens + EOS of each sample's reference, and `(n,)` log p(frames | prompt + reference)
    under `scorer` (the frames each sample is given)."""
    texts = reference_texts(run, samples)
    return continuation_tokens(samples), scorer.log_likelihood(texts, positions_of(run, samples),
                                                                scorer.frames(samples), scorer.contexts(samples))


def continuation_tokens(samples: Sequence[EncodedSample]) -> np.ndarray:
    """`(n,)` the tokens a teacher-forced loss averages over: each reference continuation's, plus EOS."""
    return np.array([len(s.continuation_ids) + 1 for s in samples])


def posterior_losses(lm_losses: np.ndarray, n_tokens: np.ndarray, reference_ll: np.ndarray, cands: Candidates,
                     weight: float) -> np.ndarray:
    """The teacher-forced loss of each reference continuation c under the Bayesian decoder's own distribution

        p(c | prompt, frames) = p_LM(c | prompt, frames) · exp(λ log p(frames | prompt + c)) / Z(prompt, frames),
        Z = E_{c' ~ p_LM(· | prompt, frames)} exp(λ log p(frames | prompt + c')),

    with Z estimated by the mean over the decoder's nucleus samples of the prior (`Candidates.draws`; a sample
    is drawn from the top-p nucleus, so Z is that of the nucleus-truncated prior). In the paper's units: nats per
    continuation token + EOS, so it compares with the adapter-conditioned LM's loss (the λ = 0 case).

    Args:
        lm_losses: `(n,)` the adapter-conditioned LM's mean loss of each reference continuation.
        n_tokens: `(n,)` its continuation tokens + EOS.
        reference_ll: `(n,)` log p(frames | prompt + reference) under the decoder's encoding model.
        cands: the candidates of the same samples under the same frames, with `encoding` and `draws`.
        weight: λ.
    Returns:
        `(n,)` mean nats per token; NaN for a sample with no sampled candidate.
    """
    out = np.full(len(lm_losses), np.nan)
    for i, (enc, draws) in enumerate(zip(cands.encoding, cands.draws)):
        if draws.sum() == 0:
            continue
        # log Z = log Σ_k draws_k exp(λ enc_k) − log Σ_k draws_k, computed stably
        scaled = weight * enc[draws > 0]
        top = scaled.max()
        log_z = top + np.log(np.sum(draws[draws > 0] * np.exp(scaled - top))) - np.log(draws.sum())
        summed = -lm_losses[i] * n_tokens[i] + weight * reference_ll[i] - log_z
        out[i] = -summed / n_tokens[i]
    return out
