"""Fitting and choosing the Bayesian decoder's encoding model (beyond the paper): the layer, frame dimensions, noise
shrinkage, length/position band weight and passage context by cross-validated identification over training
stimuli (`choose_encoding_model`, its finished cells kept so a killed tuning resumes), and the refit of a choice
(`fit_encoding_model`). `experiments.decoder_tuning` drives it.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from ..identification import two_way
from ..io import read_json, write_json
from ..model import EncodedSample
from ..model.text_features import nuisance_features
from ..progress import progress
from ..ridge import shared_decompositions, stimulus_folds
from ..runs import LoadedRun, RunPaths
from ..voxelwise.sentence_encoding import SentenceEncodingModel
from .encoding_model import (EncodingChoice, SentenceScorer, bare_states, choice_contexts, encoding_design,
                             positions_of, reference_texts, sample_contexts, sample_frames, text_design)

log = logging.getLogger(__name__)


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


def validation_scorers(run: LoadedRun) -> tuple[SentenceScorer, SentenceScorer]:
    """The tuned decoder's encoding model and its length/position model as validation saw them: the choices in
    `RUN/decoder.json` fitted on training samples only (`tune` refits them on training + validation once chosen), for
    validation-only analyses of a tuned run."""
    decoder, train = read_json(RunPaths(run.path).decoder_file), training_samples(run)

    def fitted(key: str) -> SentenceScorer:
        choice = EncodingChoice(**{k: v for k, v in decoder[key].items() if k != "alpha"})
        return SentenceScorer(run, fit_encoding_model(run, train, choice, run.config.generation.seed), choice)

    return fitted("encoding_model"), fitted("nuisance_model")


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
        return encoding_design(states[n], trial.layer, nuisance)

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
