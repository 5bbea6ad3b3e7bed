"""`brainllm tang decode`: decode a held-out story with a fitted Tang decoder and evaluate it like BrainLLM's."""

from __future__ import annotations

import os

import numpy as np

from ...data.dataset import BrainTextDataset
from ...decoding.fullstory import brain_prior, heldout_run, predicted_times
from ...experiments.fullstory import evaluate_decoded
from ...errors import BrainLLMError
from ...runs import LoadedRun
from .decoder import TangDecoderConfig, decode
from .model import TangModel, load_tang, responses_of, story_runs


def shifted_responses(responses: np.ndarray) -> np.ndarray:
    """`(T, V)` responses rotated by half the run: brain data with the run's own statistics and autocorrelation
    that no longer lines up with the words (the Tang counterpart of PerBrainLLM)."""
    return np.roll(responses, responses.shape[0] // 2, axis=0)


def decode_tang_story(model: TangModel | str | os.PathLike, story: str, out: str | os.PathLike,
                      config: TangDecoderConfig = TangDecoderConfig(), n_nulls: int = 10,
                      allow_training_story: bool = False, progress: bool = True, control: bool = True,
                      prior: LoadedRun | None = None, prior_weight: float = 1.0):
    """Word times from the word-rate model, beam search with the encoding model, windowed scores vs the null.

    With `control`, the same decoder also runs on the responses rotated by half the run (`shifted`, same word
    times): whatever it scores above the null is the decoder's own bias (e.g. towards frequent words), not brain
    information. The null alone cannot show this, since its sequences are chosen at random, not by a likelihood.
    `model`: a loaded `TangModel` (decoding several stories loads it once) or the folder `tang fit` wrote.

    `prior` (an extension beyond both papers): a trained BrainLLM run whose brain-conditioned LM proposes the
    candidates and adds `prior_weight` x its log-probability to the likelihood (`fullstory.BrainPrior`). The
    conditions are then `tang+brainllm` and `shifted+brainllm` (responses AND the prior's frames rotated by half
    the run); the nulls are the same as without a prior (same word times and seed), so z-scores compare.
    """
    if not isinstance(model, TangModel):
        model = load_tang(model)
    if story in model.info["train_stories"] and not allow_training_story:
        raise BrainLLMError(f"Story '{story}' trained this decoder's encoding model; decode a held-out story "
                            f"({model.info['heldout_stories'] or 'none was held out: refit with --heldout'}).")
    dataset = BrainTextDataset.load(model.info["dataset"])
    run = story_runs(dataset, [story])[0]
    responses = responses_of(dataset, run, model.info["space"])
    times = predicted_times(model.wordrate, responses, run)
    tr_times = np.asarray(run.tr_times)
    suffix = "" if prior is None else "+brainllm"
    prior_run = None if prior is None else heldout_run(prior, story, allow_training_story)[0]
    if prior_run is not None and prior_run.n_trs != run.n_trs:
        raise BrainLLMError(f"Story '{story}' has {run.n_trs} TRs in the Tang model's dataset but "
                            f"{prior_run.n_trs} in the prior run's; use the same scans.")

    def make_prior(tr_order=None):
        return None if prior is None else brain_prior(prior, prior_run, times, model.lm.context_words, prior_weight,
                                                      tr_order)

    decoded = {f"tang{suffix}": decode(model.lm, model.encoding, responses, tr_times, times, config, progress,
                                       make_prior())}
    if control:
        rotated = shifted_responses(np.arange(run.n_trs)[:, None])[:, 0]  # row t of the rotated run = TR rotated[t]
        decoded[f"shifted{suffix}"] = decode(model.lm, model.encoding, shifted_responses(responses), tr_times, times,
                                             config, progress, make_prior(rotated))
    extra = {"model_dir": None if model.folder is None else str(model.folder),
             "word_rate": {"predicted_words": len(times), "heard_words": len(run.words)},
             "simulated": dataset.simulated,
             "prior": None if prior is None else {"run_dir": str(prior.path), "weight": prior_weight}}
    return evaluate_decoded(decoded, run, model.lm, out, f"tang{suffix}", n_nulls, progress=progress, extra=extra)
