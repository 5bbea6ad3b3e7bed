"""`brainllm tang decode`: decode a held-out story with a fitted Tang decoder and evaluate it like BrainLLM's."""

from __future__ import annotations

import os

import numpy as np

from ...data.dataset import BrainTextDataset
from ...errors import BrainLLMError
from ...fullstory import evaluate_decoded, predicted_times
from .decoder import TangDecoderConfig, decode
from .model import TangModel, load_tang, responses_of, story_runs


def shifted_responses(responses: np.ndarray) -> np.ndarray:
    """`(T, V)` responses rotated by half the run: brain data with the run's own statistics and autocorrelation
    that no longer lines up with the words (the Tang counterpart of PerBrainLLM)."""
    return np.roll(responses, responses.shape[0] // 2, axis=0)


def decode_tang_story(model: TangModel | str | os.PathLike, story: str, out: str | os.PathLike,
                      config: TangDecoderConfig = TangDecoderConfig(), n_nulls: int = 10,
                      allow_training_story: bool = False, progress: bool = True, control: bool = True):
    """Word times from the word-rate model, beam search with the encoding model, windowed scores vs the null.

    With `control`, the same decoder also runs on the responses rotated by half the run (`shifted`, same word
    times): whatever it scores above the null is the decoder's own bias (e.g. towards frequent words), not brain
    information. The null alone cannot show this, since its sequences are chosen at random, not by a likelihood.
    `model`: a loaded `TangModel` (decoding several stories loads it once) or the folder `tang fit` wrote.
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
    decoded = {"tang": decode(model.lm, model.encoding, responses, np.asarray(run.tr_times), times, config,
                              progress)}
    if control:
        decoded["shifted"] = decode(model.lm, model.encoding, shifted_responses(responses), np.asarray(run.tr_times),
                                    times, config, progress)
    extra = {"model_dir": None if model.folder is None else str(model.folder), "word_rate": {"predicted_words": len(times),
                                                             "heard_words": len(run.words)},
             "simulated": dataset.simulated}
    return evaluate_decoded(decoded, run, model.lm, out, "tang", n_nulls, progress=progress, extra=extra)
