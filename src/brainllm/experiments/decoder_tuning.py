"""Choosing the Bayesian decoder of a run (`brainllm tune-decoder`, beyond the paper): the encoding model by
cross-validation over training stimuli, then λ and the number of candidates by validation BLEU-1 (the table also
holds, per λ, the validation loss of the reference continuations under the decoder's own distribution, the
held-out likelihood `decoding.bayes.posterior_losses` gives; it is the same for every number of candidates). The decoder itself
is `decoding.bayes`; this module scores what it decodes, so it sits above decoding and scoring.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, replace

import numpy as np

from ..config import GenerationConfig
from ..decoding.bayes import (SentenceScorer, choose_encoding_model, posterior_losses, reference_scores, save_scorer,
                              score_candidates, training_samples)
from ..decoding.sentences import teacher_forced_losses
from ..evaluation import metrics as M
from ..io import write_json
from ..runs import LoadedRun, RunPaths

log = logging.getLogger(__name__)

#: the layers tried, as fractions of the backbone's depth (SmolLM2-135M's 30 blocks: 4, 8, 10, 12, 16, 24)
DEFAULT_LAYER_FRACTIONS = (0.13, 0.27, 0.33, 0.4, 0.53, 0.8)
#: first frame dimensions tried; on the real development data 200-300 beat all 1000 (docs/calibration.md)
DEFAULT_DIMS: tuple[int | None, ...] = (200, 300, None)
DEFAULT_SHRINKAGES = (0.5,)
DEFAULT_WEIGHTS = (0.0, 0.03, 0.1, 0.3, 1.0, 3.0)
DEFAULT_CANDIDATES = (1, 4, 8, 16)


def bleu1(predictions: Sequence[str], references: Sequence[str]) -> np.ndarray:
    """`(n,)` the evaluation's `bleu1_per_sample` of each prediction (default metric settings)."""
    pred, ref, _, _ = M.prepare_pairs(predictions, references, M.MetricConfig())
    return np.array([M.bleu_per_sample(p, r, 1) for p, r in zip(pred, ref)])


def default_layers(n_blocks: int) -> list[int]:
    """The layers `tune` tries on a backbone of `n_blocks` blocks (`DEFAULT_LAYER_FRACTIONS` of its depth, each at
    least 1, without repeats)."""
    return sorted({max(1, min(n_blocks, round(f * n_blocks))) for f in DEFAULT_LAYER_FRACTIONS})


def tune(run: LoadedRun, cfg: GenerationConfig | None = None, layers: Sequence[int | None] | None = None,
         dims: Sequence[int | None] = DEFAULT_DIMS, shrinkages: Sequence[float] = DEFAULT_SHRINKAGES,
         weights: Sequence[float] = DEFAULT_WEIGHTS, n_candidates: Sequence[int] = DEFAULT_CANDIDATES) -> dict:
    """Fit and choose the Bayesian decoder of a trained run, never reading test samples:
    1. the encoding model (layer, frame dimensions, shrinkage) by CV identification over training stimuli, refitted
       on all training samples (with the frames the run was trained on), plus a nuisance-only model (length and
       position) for the nuisance control;
    2. λ (`encoding_weight`) and the number of candidates by mean BLEU-1 of the picked candidate on the validation
       split (BrainLLM's candidates under the true frames).
    Writes `RUN/decoder/` (the models) and `RUN/decoder.json` (the chosen generation settings, which `load_run`
    applies as the run's defaults, and the tables behind the choice). Returns what decoder.json holds."""
    cfg = replace(cfg or run.config.generation, n_candidates=max(n_candidates), rerank="encoding")
    if layers is None:
        layers = default_layers(run.model.backbone.config.num_hidden_layers)
    train = training_samples(run)
    model, choice, cv_rows = choose_encoding_model(run, train, layers, dims, shrinkages, seed=cfg.seed)
    scorer = SentenceScorer(run, model, choice)
    save_scorer(run, scorer)
    nuisance, nchoice, nuisance_rows = choose_encoding_model(run, train, [None], dims, shrinkages, seed=cfg.seed)
    save_scorer(run, SentenceScorer(run, nuisance, nchoice), "nuisance")

    valid = run.encoder.encode_all(run.dataset, run.split.valid)
    cands = score_candidates(run, valid, "brain", cfg, scorer, desc="valid/tune")
    refs = [run.dataset.by_id(s.id).continuation for s in valid]
    # the decoder's own distribution, normalised over all the candidates' draws: its held-out loss per λ
    references = (teacher_forced_losses(run, valid, "brain", cfg.batch_size), *reference_scores(run, scorer, valid))
    table = []
    for n in n_candidates:
        for w in weights:
            picked = [texts[k] for texts, k in zip(cands.texts, cands.pick(w, n))]
            table.append({"n_candidates": n, "encoding_weight": w, "valid_bleu1": float(bleu1(picked, refs).mean()),
                          "valid_posterior_loss": float(np.nanmean(posterior_losses(*references, cands, w)))})
    best = max(table, key=lambda r: (r["valid_bleu1"], -r["n_candidates"]))
    settings = {"rerank": "encoding", "n_candidates": best["n_candidates"], "encoding_weight": best["encoding_weight"]}
    result = {"generation": settings, "encoding_model": asdict(choice) | {"alpha": model.alpha_},
              "nuisance_model": asdict(nchoice), "cv_table": cv_rows, "nuisance_cv_table": nuisance_rows,
              "valid_table": table,
              "note": "encoding model chosen by CV over training stimuli; weight and candidates on validation"}
    write_json(RunPaths(run.path).decoder_file, result)
    log.info("Bayesian decoder of %s: %s (validation BLEU-1 %.4f)", run.path, settings, best["valid_bleu1"])
    return result
