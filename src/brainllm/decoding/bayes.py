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
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from ..config import GenerationConfig
from ..errors import BrainLLMError
from ..io import atomic_path, file_sha1, read_json, write_json
from ..model import Collator, EncodedSample
from ..model.precision import cast_parameters, inference_dtype
from ..model.text_features import (NUISANCE_NAMES, full_text, mean_states, mean_states_after_prefix,
                                   nuisance_features, passage_contexts, stimulus_positions)
from ..progress import progress
from ..identification import two_way
from ..ridge import shared_decompositions, stimulus_folds
from ..runs import LoadedRun, RunPaths
from ..voxelwise.sentence_encoding import SentenceEncodingConfig, SentenceEncodingModel
from .prefix_sample import SampleSettings, draw_uniforms, sample_from_prefix
from .sentences import decode_ids, decoding_kwargs, length_sorted_batches, teacher_forced_losses

log = logging.getLogger(__name__)


@dataclass
class EncodingChoice:
    """The encoding model's text features and frame space, chosen by CV over training stimuli."""

    layer: int | None          # backbone layer of the mean state; None = nuisance features only
    max_dims: int | None       # first frame dimensions used (PCA components in order); None = all
    noise_shrinkage: float
    cv_identification: float  # mean out-of-fold 2-way identification across stimuli (candidate texts for frames)
    nuisance_weight: float = 1.0  # the length/position band's scale (1 in decoder files written before it existed)
    context_sentences: int = 0    # previous sentences of the passage each text is read after (0: alone, as before)

    def model_config(self, seed: int = 0) -> SentenceEncodingConfig:
        """The encoding model's hyper-parameters for this choice (the design's last columns are the nuisance)."""
        return SentenceEncodingConfig(noise_shrinkage=self.noise_shrinkage, seed=seed,
                                      nuisance_columns=len(NUISANCE_NAMES) if self.layer is not None else 0,
                                      nuisance_weight=self.nuisance_weight)


@dataclass
class SentenceScorer:
    """Features of candidate texts and the encoding model's log-likelihood of a sample's frames."""

    run: LoadedRun
    model: SentenceEncodingModel
    choice: EncodingChoice

    def contexts(self, samples: Sequence[EncodedSample]) -> list[str] | None:
        """Per sample, the passage text its candidates are read after (`choice.context_sentences` previous
        sentences), or None when texts are read alone."""
        return choice_contexts(self.run, samples, self.choice)

    def features(self, texts: Sequence[str], positions: Sequence[int], contexts: Sequence[str] | None = None
                 ) -> np.ndarray:
        """`(n, F)`: mean state after `choice.layer` (if any; each text read after its context, if given) and the
        nuisance features of each text."""
        return text_design(self.run, texts, positions, self.choice.layer, contexts)

    def frames(self, samples: Sequence[EncodedSample]) -> np.ndarray:
        return sample_frames(self.run, samples, self.choice.max_dims)

    def log_likelihood(self, texts: Sequence[str], positions: Sequence[int], frames: np.ndarray,
                       contexts: Sequence[str] | None = None) -> np.ndarray:
        """`(n,)` log p(frames_i | text_i) (up to a constant per frames)."""
        return self.model.log_likelihood(self.features(texts, positions, contexts), frames)


def sample_frames(run: LoadedRun, samples: Sequence[EncodedSample], max_dims: int | None = None) -> np.ndarray:
    """`(n, D')` mean frame of each sample (the frames it is given: permuted ones for a control)."""
    frames = run.dataset.frames
    out = np.stack([np.asarray(frames[list(s.frame_rows)], dtype=np.float64).mean(0) for s in samples])
    return out if max_dims is None else out[:, :max_dims]


def text_design(run: LoadedRun, texts: Sequence[str], positions: Sequence[int], layer: int | None,
                contexts: Sequence[str] | None = None) -> np.ndarray:
    """`(n, H + 2)` or `(n, 2)`: the bare backbone's mean state after `layer` (each text read after its context, if
    given), then the nuisance features."""
    states = {} if layer is None else bare_states(run, texts, [layer], contexts)
    return _design(states, layer, nuisance_features(texts, positions))


def choice_contexts(run: LoadedRun, samples: Sequence[EncodedSample], choice: EncodingChoice) -> list[str] | None:
    """Per sample, the passage text an encoding model of `choice` reads its texts after, or None (texts alone)."""
    if not choice.context_sentences or choice.layer is None:
        return None
    return sample_contexts(run, samples, choice.context_sentences)


def sample_contexts(run: LoadedRun, samples: Sequence[EncodedSample], n_sentences: int) -> list[str]:
    """The `n_sentences` sentences before each sample's own in its passage (`passage_contexts`): what the reader
    had read, whichever frames a control is given."""
    return passage_contexts(run.dataset, [run.dataset.by_id(s.id) for s in samples], n_sentences)


def bare_states(run: LoadedRun, texts: Sequence[str], layers: Sequence[int], contexts: Sequence[str] | None = None
                ) -> dict[int, np.ndarray]:
    """`{layer: (n, H)}` the pretrained LM's mean state of each text after each layer (`{}` for no layer), each
    text read after its context if `contexts` are given (`mean_states`)."""
    if not layers:
        return {}
    return mean_states(run.model.backbone, run.encoder, texts, layers, bare=run.model.bare_backbone(),
                       contexts=contexts)


def _design(states: dict[int, np.ndarray], layer: int | None, nuisance: np.ndarray) -> np.ndarray:
    """The encoding model's design: the state after `layer` (none for `None`) beside the nuisance features."""
    return nuisance if layer is None else np.hstack([states[layer].astype(np.float64), nuisance])


def _regroup(flat: np.ndarray, groups: Sequence[Sequence[object]]) -> list[np.ndarray]:
    """`flat` values (one per item of every group, in order) back into one array per group."""
    bounds = np.cumsum([0] + [len(g) for g in groups])
    return [flat[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def reference_texts(run: LoadedRun, samples: Sequence[EncodedSample]) -> list[str]:
    return [full_text(run.dataset.by_id(s.id).prompt, run.dataset.by_id(s.id).continuation) for s in samples]


def positions_of(run: LoadedRun, samples: Sequence[EncodedSample]) -> np.ndarray:
    """Position of each sample's *own* frames in its stimulus (for a control too: the nuisance a reader knows)."""
    return stimulus_positions(run.dataset, [run.dataset.by_id(s.id) for s in samples])


# ---------------------------------------------------------------------------------------------- fitting
def training_samples(run: LoadedRun, with_valid: bool = False) -> list[EncodedSample]:
    """The run's training samples (and with `with_valid` its validation samples: the refit after every choice is
    made) with the frames a fit may learn from: their own, or for a noise-trained control frames permuted across
    all of them, so its encoding model never sees a true pair either."""
    from ..training import training_frames  # the trainer owns the training-frame assignment

    ids = list(run.split.train) + (list(run.split.valid) if with_valid else [])
    return training_frames(run.config, run.encoder.encode_all(run.dataset, ids))


def fit_encoding_model(run: LoadedRun, samples: Sequence[EncodedSample], choice: EncodingChoice, seed: int = 0
                       ) -> SentenceEncodingModel:
    """The encoding model of `choice` fitted on `samples` (their reference texts, read after their passage context
    if the choice says so, positions and frames)."""
    design = text_design(run, reference_texts(run, samples), positions_of(run, samples), choice.layer,
                         choice_contexts(run, samples, choice))
    return SentenceEncodingModel(choice.model_config(seed)).fit(design, sample_frames(run, samples, choice.max_dims),
                                                                 [s.stimulus for s in samples])


def choose_encoding_model(run: LoadedRun, samples: Sequence[EncodedSample], layers: Sequence[int],
                          dims: Sequence[int | None], shrinkages: Sequence[float],
                          nuisance_weights: Sequence[float] = (1.0,), n_folds: int = 5, seed: int = 0,
                          context_sentences: Sequence[int] = (0,), store: Path | None = None
                          ) -> tuple[SentenceEncodingModel, EncodingChoice, list[dict]]:
    """Pick the layer, frame dimensions, shrinkage, nuisance band weight and passage context (layers only: a
    nuisance-only design has one band and no text states) with the best out-of-fold identification (`two_way`,
    across stimuli) over folds of whole training stimuli, then refit on all of `samples`. With `store` (a JSON
    file), each finished cell is kept there under what it depends on (`cv_settings`) and read back instead of
    evaluated again, so a killed tuning resumes at its first unfinished cell. Returns (model, choice, one row per
    configuration tried)."""
    texts, positions = reference_texts(run, samples), positions_of(run, samples)
    stim = [s.stimulus for s in samples]
    keys = [s.frame_rows for s in samples]
    folds = stimulus_folds(stim, n_folds, seed)
    text_layers = [x for x in layers if x is not None]
    states: dict[int, dict[int, np.ndarray]] = {}  # per context, computed when a cell first needs it

    def design(trial: EncodingChoice) -> np.ndarray:
        n = trial.context_sentences
        if n not in states:
            states[n] = bare_states(run, texts, text_layers, sample_contexts(run, samples, n) if n else None)
        return _design(states[n], trial.layer, nuisance)

    nuisance = nuisance_features(texts, positions)
    # as many frame dimensions as the frames have, or more, is all of them: one cell, not several of the same
    n_dims = run.dataset.frames.shape[1]
    dims = list(dict.fromkeys(None if d is None or d >= n_dims else d for d in dims))
    trials = [EncodingChoice(layer, max_dims, shrink, float("nan"), weight, context)
              for context in context_sentences for layer in layers if not (layer is None and context)
              for max_dims in dims for shrink in shrinkages
              for weight in (nuisance_weights if layer is not None else (1.0,))]
    frames = {max_dims: sample_frames(run, samples, max_dims) for max_dims in dims}
    settings = cv_settings(run, samples, n_folds, seed)
    stored = read_json(store) if store is not None and store.exists() else {}
    cells: dict = stored.get("cells", {}) if stored.get("settings") == settings else {}
    # evaluated grouped by design (context, layer, band weight), so the cells that differ only in their frame
    # dimensions and shrinkage share the ridge's decompositions; chosen in the grid's order
    todo = sorted((t for t in trials if _cell_key(t) not in cells),
                  key=lambda t: (t.context_sentences, -1 if t.layer is None else t.layer, t.nuisance_weight))
    with shared_decompositions(max_entries=8 * n_folds):  # one design: per outer fold, n_folds + 1 of them
        for trial in progress(todo, "encoding model CV", unit="cell"):
            x, y = design(trial), frames[trial.max_dims]
            scores = []
            for held in folds:
                tr, te = np.flatnonzero(~held), np.flatnonzero(held)
                model = SentenceEncodingModel(trial.model_config(seed)).fit(x[tr], y[tr], [stim[i] for i in tr])
                m = model.log_likelihood_matrix(x[te], y[te])
                scores.append(two_way(m, [stim[i] for i in te], [keys[i] for i in te])["across"])
            cells[_cell_key(trial)] = row = asdict(replace(trial, cv_identification=float(np.mean(scores))))
            log.info("encoding model %s: CV identification %.3f", row, row["cv_identification"])
            if store is not None:
                write_json(store, {"settings": settings, "cells": cells})
    rows = [cells[_cell_key(t)] for t in trials]
    best = max(rows, key=lambda r: r["cv_identification"])  # the first of equals in the grid's order
    choice = EncodingChoice(**best)
    model = SentenceEncodingModel(choice.model_config(seed)).fit(design(choice), frames[choice.max_dims], stim)
    return model, choice, rows


def cv_settings(run: LoadedRun, samples: Sequence[EncodedSample], n_folds: int, seed: int) -> dict:
    """What an encoding-model CV cell depends on besides its own settings: the backbone whose states it reads, the
    samples and the frames each is given (a noise-trained control's are permuted), the folds."""
    pairs = "\n".join(f"{s.id}@{','.join(map(str, s.frame_rows))}" for s in samples)
    return {"backbone": run.config.model.backbone, "samples_sha1": hashlib.sha1(pairs.encode("utf-8")).hexdigest(),
            "n_folds": n_folds, "seed": seed}


def _cell_key(trial: EncodingChoice) -> str:
    """A CV cell's name in the store: its settings, without the score."""
    return json.dumps({k: v for k, v in asdict(trial).items() if k != "cv_identification"}, sort_keys=True)


def save_scorer(run: LoadedRun, scorer: SentenceScorer, name: str = "encoding") -> Path:
    folder = RunPaths(run.path).decoder_dir
    scorer.model.save(folder, name)
    write_json(folder / f"{name}_choice.json", asdict(scorer.choice))
    return folder


def has_scorer(run: LoadedRun, name: str = "encoding") -> bool:
    """Whether `tune-decoder` has fitted the encoding model `name` in the run folder."""
    return (RunPaths(run.path).decoder_dir / f"{name}_choice.json").exists()


def scorer_splits(run: LoadedRun) -> tuple[str, ...]:
    """The splits whose samples the run's encoding models were fitted on: training, and validation too when
    `tune-decoder` refitted them (`decoder.json`'s `refit_with_valid`; files written before it: training only)."""
    path = RunPaths(run.path).decoder_file
    return ("train", "valid") if path.exists() and read_json(path).get("refit_with_valid", False) else ("train",)


def load_scorer(run: LoadedRun, name: str = "encoding") -> SentenceScorer:
    folder = RunPaths(run.path).decoder_dir
    if not has_scorer(run, name):
        raise BrainLLMError(f"{run.path} has no fitted encoding model ({folder}/{name}.*): run `brainllm "
                            f"tune-decoder {run.path}` first, or decode with --set rerank=none.")
    choice = EncodingChoice(**read_json(folder / f"{name}_choice.json"))
    return SentenceScorer(run, SentenceEncodingModel.load(folder, name), choice)


# ---------------------------------------------------------------------------------------------- decoding
@dataclass
class Candidates:
    """Candidate continuations of each sample and their two scores.

    Attributes:
        ids: per sample, the token ids of each candidate (candidate 0 = the run's own search result).
        texts: per sample, the decoded text of each candidate.
        lm: per sample, `(n_c,)` summed log p_LM(candidate + EOS | prompt, frames), nats.
        encoding: per sample, `(n_c,)` log p(frames | prompt + candidate) (up to a constant per sample).
        draws: per sample, `(n_c,)` how many of the nucleus samples came out as each candidate (the search result
            counts only when a sample repeats it): the Monte Carlo weights of `posterior_losses`' normaliser.
    """

    ids: list[list[list[int]]]
    texts: list[list[str]]
    lm: list[np.ndarray]
    encoding: list[np.ndarray] = field(default_factory=list)
    draws: list[np.ndarray] = field(default_factory=list)

    def pick(self, weight: float, n_candidates: int | None = None) -> list[int]:
        """Index of the best candidate of each sample among its first `n_candidates`, by lm + weight·encoding."""
        out = []
        for lm, enc in zip(self.lm, self.encoding):
            k = len(lm) if n_candidates is None else min(n_candidates, len(lm))
            out.append(int(np.argmax(lm[:k] + weight * enc[:k])))
        return out

    def picks(self, weight: float, n_candidates: int | None = None) -> list[str]:
        """The text `pick` chooses for each sample."""
        return [texts[k] for texts, k in zip(self.texts, self.pick(weight, n_candidates))]


def propose(run: LoadedRun, samples: Sequence[EncodedSample], layout: str, cfg: GenerationConfig,
            desc: str = "propose") -> Candidates:
    """Candidate continuations of each sample, without their encoding scores: the search of `cfg` (beam/greedy)
    first, then `cfg.n_candidates − 1` nucleus draws (top_p `cfg.candidate_top_p`, temperature `cfg.temperature`),
    duplicates merged into `draws`, and each one's log p_LM. `cfg.sampler` "prefix" draws from each prefix's KV cache
    with its uniforms seeded by the sample id (`prefix_sample`), keeping log p_LM as it draws; "hf" is the
    reference: HF `generate(num_return_sequences=…)` seeded per batch, then a teacher-forced pass."""
    collate = Collator(run.dataset.frames, run.encoder, layout, for_generation=True,
                       tokens_per_frame=run.model.adapter.tokens_per_frame)
    search = replace(cfg, rerank="none")
    with cast_parameters(run.model.backbone, sampling_dtype(run, cfg)):
        best = decode_ids(run.model, collate, samples, search, run.encoder, desc=f"{desc}/search")
        ids = [[_cut(seq, run.encoder.eos_id)] for seq in best]
        draws = [[0] for _ in ids]
        if cfg.sampler == "hf" or cfg.n_candidates <= 1:
            _sample_hf(run, samples, collate, cfg, ids, draws, desc)
            lm = lm_scores(run, samples, ids, layout, cfg.batch_size)
        else:
            lm = _sample_prefix(run, samples, collate, cfg, ids, draws, desc)
    texts = [[run.encoder.decode(c) for c in cands] for cands in ids]
    return Candidates(ids, texts, lm, draws=[np.array(d) for d in draws])


def _add_draw(ids: list[list[int]], draws: list[int], draw: list[int]) -> bool:
    """Count `draw` among a sample's candidates `ids` (and their `draws`); True when it is new (appended)."""
    if draw in ids:
        draws[ids.index(draw)] += 1
        return False
    ids.append(draw)
    draws.append(1)
    return True


def _sample_prefix(run: LoadedRun, samples: Sequence[EncodedSample], collate: Collator, cfg: GenerationConfig,
                   ids: list[list[list[int]]], draws: list[list[int]], desc: str) -> list[np.ndarray]:
    """`propose`'s draws from each prefix's KV cache, appended to `ids` and `draws` in place (each sample's search
    result first, forced along with the draws for its log p_LM). Returns each sample's log p_LM per candidate."""
    settings = SampleSettings(n=cfg.n_candidates - 1, max_new_tokens=cfg.max_new_tokens,
                              min_new_tokens=cfg.min_new_tokens, eos_id=run.encoder.eos_id,
                              top_p=cfg.candidate_top_p, temperature=cfg.temperature)
    device = run.model.boundary.device
    lm: list[list[float]] = [[] for _ in samples]
    batches = length_sorted_batches([collate.length(s) for s in samples], cfg.batch_size)
    for rows in progress(batches, f"{desc}/sample", unit="batch"):
        batch = collate([samples[j] for j in rows]).to(device)
        embeds, context = run.model.generation_inputs(batch)
        uniforms = [draw_uniforms(cfg.seed, samples[j].id, settings) for j in rows]
        drawn = sample_from_prefix(run.model.backbone, embeds, batch.attention_mask, settings, uniforms, context,
                                   forced=[ids[j][0] for j in rows])
        for j, got in zip(rows, drawn):
            lm[j].append(got.forced_log_prob)
            for draw, log_prob in zip(got.ids, got.log_probs):
                if draw and _add_draw(ids[j], draws[j], draw):
                    lm[j].append(float(log_prob))
    return [np.array(x) for x in lm]


def sampling_dtype(run: LoadedRun, cfg: GenerationConfig) -> torch.dtype:
    """The float type the Bayesian decoder's search and prefix sampler run in and the candidates' encoding states
    are computed in (`cfg.precision` on the run's device, `model.precision`); the reference sampler, and a decoder
    with no draws, stay in the run's own."""
    if cfg.sampler != "prefix" or cfg.n_candidates <= 1:
        return run.model.backbone_dtype
    return inference_dtype(cfg.precision, run.model.boundary.device)


def _sample_hf(run: LoadedRun, samples: Sequence[EncodedSample], collate: Collator, cfg: GenerationConfig,
               ids: list[list[list[int]]], draws: list[list[int]], desc: str) -> None:
    """`propose`'s draws by HF `generate` (the reference sampler), appended to `ids` and `draws` in place."""
    n_sampled = cfg.n_candidates - 1
    if n_sampled <= 0:
        return
    # plain nucleus sampling: no repetition penalty, whatever the search uses
    sampler = replace(cfg, rerank="none", method="sample", top_p=cfg.candidate_top_p, repetition_penalty=1.0)
    kwargs = decoding_kwargs(sampler, run.encoder) | {"num_return_sequences": n_sampled}
    device = run.model.boundary.device
    batches = length_sorted_batches([collate.length(s) for s in samples], cfg.batch_size)
    for b, rows in enumerate(progress(batches, f"{desc}/sample", unit="batch")):
        torch.manual_seed(cfg.seed * 100003 + b)
        seqs = run.model.generate(collate([samples[j] for j in rows]).to(device), **kwargs)
        for k, j in enumerate(rows):
            for seq in seqs[k * n_sampled:(k + 1) * n_sampled]:
                cut = _cut(seq, run.encoder.eos_id)
                if cut:
                    _add_draw(ids[j], draws[j], cut)


def _cut(ids: Sequence[int], eos: int) -> list[int]:
    ids = list(ids)
    return ids[: ids.index(eos)] if eos in ids else ids


def lm_scores(run: LoadedRun, samples: Sequence[EncodedSample], candidates: Sequence[Sequence[Sequence[int]]],
              layout: str, batch_size: int) -> list[np.ndarray]:
    """Summed log p_LM(candidate + EOS | prompt, frames) per candidate of each sample (teacher-forced, nats)."""
    flat = [(i, list(c)) for i, cands in enumerate(candidates) for c in cands]
    pairs = [replace(samples[i], continuation_ids=tuple(c)) for i, c in flat]
    mean_ce = teacher_forced_losses(run, pairs, layout, batch_size)
    return _regroup(-mean_ce * np.array([len(c) + 1 for _, c in flat]), candidates)


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
        return _regroup(ll, texts)
    with cast_parameters(run.model.backbone, dtype):
        states = np.concatenate(mean_states_after_prefix(run.model.backbone, run.encoder, prompts, texts, layer,
                                                         contexts, bare=run.model.bare_backbone()))
    design = _design({layer: states}, layer, nuisance_features(flat_texts, flat_positions))
    return _regroup(scorer.model.log_likelihood(design, flat_frames), texts)


def score_candidates(run: LoadedRun, samples: Sequence[EncodedSample], layout: str, cfg: GenerationConfig,
                     scorer: SentenceScorer, desc: str = "bayes", store: Path | None = None) -> Candidates:
    """Propose candidates for each sample (kept in and read back from `store`, when given: `propose_stored`) and
    score them under the frames each sample is given."""
    cands = (propose(run, samples, layout, cfg, desc) if store is None
             else propose_stored(run, samples, layout, cfg, store, desc))
    cands.encoding = encoding_scores(run, scorer, samples, cands.texts, shared_prefix=cfg.sampler == "prefix",
                                     dtype=sampling_dtype(run, cfg))
    return cands


def bayes_decode(run: LoadedRun, samples: Sequence[EncodedSample], layout: str, cfg: GenerationConfig,
                 lm_losses: np.ndarray | None = None, desc: str = "bayes", scorer: str = "encoding",
                 store: Path | None = None) -> tuple[list[str], np.ndarray | None]:
    """Decoded text of each sample by the Bayesian decoder (`cfg.encoding_weight`, `cfg.n_candidates`); `scorer`
    "nuisance" swaps in the length/position-only encoding model (the nuisance control). Given the adapter-
    conditioned LM's teacher-forced losses of the reference continuations `lm_losses` `(n,)` (mean nats per token
    + EOS), also the loss of each under the decoder's distribution at λ `cfg.distribution_weight`
    (`posterior_losses`); else None. With `store` (a JSON file), candidates are kept there as they are proposed
    and read back instead of proposed again (`propose_stored`)."""
    model = load_scorer(run, scorer)
    cands = score_candidates(run, samples, layout, cfg, model, desc, store)
    texts = cands.picks(cfg.encoding_weight)
    if lm_losses is None:
        return texts, None
    return texts, posterior_losses(lm_losses, *reference_scores(run, model, samples), cands,
                                   cfg.distribution_weight)


def candidate_settings(run: LoadedRun, layout: str, cfg: GenerationConfig) -> dict:
    """What a sample's candidates depend on besides its frames: the trained adapter (its file's SHA-1), the input
    layout, the search and sampling settings and the float type drawn in (`sampling_dtype`: `auto` may resolve
    otherwise on another host). Stored candidates are reused only under the same."""
    keys = ("method", "num_beams", "repetition_penalty", "min_new_tokens", "max_new_tokens", "temperature",
            "seed", "n_candidates", "candidate_top_p", "sampler", "decoder")
    return {"adapter_sha1": file_sha1(RunPaths(run.path).adapter), "layout": layout,
            "dtype": str(sampling_dtype(run, cfg))} | {k: getattr(cfg, k) for k in keys}


def propose_stored(run: LoadedRun, samples: Sequence[EncodedSample], layout: str, cfg: GenerationConfig,
                   path: Path, desc: str = "propose", chunk: int | None = None) -> Candidates:
    """`propose`, keeping the candidates in `path` (JSON, rewritten atomically after every `chunk` samples,
    default 4 batches) under their sample's id and frames: a sample already there under the same
    `candidate_settings` is read back, not proposed again. So a killed `generate` loses at most one chunk, and a
    condition that decodes the same frames (the length/position decoder re-picks the brain condition's
    candidates) proposes nothing."""
    settings = candidate_settings(run, layout, cfg)
    stored = read_json(path) if path.exists() else {}
    entries: dict = stored.get("samples", {}) if stored.get("settings") == settings else {}
    keys = [f"{s.id}@{','.join(map(str, s.frame_rows))}" for s in samples]
    first: dict[str, int] = {}
    for i, key in enumerate(keys):
        first.setdefault(key, i)  # a sample decoded twice with the same frames (two derangements) is proposed once
    todo = [i for key, i in first.items() if key not in entries]
    chunk = chunk or 4 * cfg.batch_size
    for start in range(0, len(todo), chunk):
        part = todo[start:start + chunk]
        got = propose(run, [samples[i] for i in part], layout, cfg, desc)
        for i, ids, lm, draws in zip(part, got.ids, got.lm, got.draws):
            entries[keys[i]] = {"ids": ids, "lm": [float(x) for x in lm], "draws": [int(d) for d in draws]}
        write_json(path, {"settings": settings, "samples": entries})
        log.info("%s: candidates of %d/%d samples stored in %s", desc, start + len(part), len(todo), path)
    ids = [entries[k]["ids"] for k in keys]
    return Candidates(ids, [[run.encoder.decode(c) for c in cands] for cands in ids],
                      [np.array(entries[k]["lm"]) for k in keys], draws=[np.array(entries[k]["draws"]) for k in keys])


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


# ---------------------------------------------------------------------------------------------- identification

def pair_log_likelihoods(run: LoadedRun, scorer: SentenceScorer, samples: Sequence[EncodedSample]) -> np.ndarray:
    """`(n, n)`: [i, j] = log p(frames of sample j | text of sample i) (`cross_log_likelihoods` of the samples with
    themselves)."""
    return cross_log_likelihoods(run, scorer, samples, samples)


def cross_log_likelihoods(run: LoadedRun, scorer: SentenceScorer, texts_of: Sequence[EncodedSample],
                          frames_of: Sequence[EncodedSample]) -> np.ndarray:
    """`(m, n)`: [i, j] = log p(frames of `frames_of[j]` | text of `texts_of[i]`), the nuisance position being
    that of frames j (what the experimenter knows about them); text i is its sample's prompt + reference
    continuation (read after its own passage context when the scorer reads texts in context)."""
    texts = reference_texts(run, texts_of)
    positions = positions_of(run, frames_of)
    m, n = len(texts_of), len(frames_of)
    frames = scorer.frames(frames_of)
    words = nuisance_features(texts, np.zeros(m, dtype=np.int64))[:, 0]
    layer = scorer.choice.layer
    states = bare_states(run, texts, [] if layer is None else [layer], scorer.contexts(texts_of))
    out = np.empty((m, n))
    for j in range(n):  # frames j: every text, with frames j's position
        design = _design(states, layer, np.column_stack([words, np.full(m, float(positions[j]))]))
        out[:, j] = scorer.model.log_likelihood(design, np.repeat(frames[j:j + 1], m, axis=0))
    return out


def decoder_crossscore(run: LoadedRun, split: str = "test", weight: float | None = None) -> Path:
    """Identification material of the Bayesian decoder for every sample of `split`: the encoding model's and the
    length/position model's `(n, n)` log-likelihood matrices ([i, j] = text i for frames j), each sample's number
    of continuation tokens + EOS (to turn the crossloss file's mean losses into summed log-probabilities) and λ
    (`weight`, default the run's `generation.encoding_weight`).
    Writes `predictions/<split>_decoderscore.npz` (read by `evaluation.controls`)."""
    samples = run.encoder.encode_all(run.dataset, run.split.ids(split))
    arrays = {"ids": np.array([s.id for s in samples]), "stimuli": np.array([s.stimulus for s in samples]),
              "frame_keys": np.array([",".join(map(str, s.frame_rows)) for s in samples]),
              "n_tokens": continuation_tokens(samples),
              "weight": np.array(run.config.generation.encoding_weight if weight is None else weight)}
    for name in ("encoding", "nuisance"):
        arrays[name] = pair_log_likelihoods(run, load_scorer(run, name), samples)
    path = RunPaths(run.path).decoderscore(split)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
    return path
