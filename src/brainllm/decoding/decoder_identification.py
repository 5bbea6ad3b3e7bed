"""Identification by the Bayesian decoder's encoding model (beyond the paper): each text scored against every sample's
frames, the material `evaluation.controls` reads for the decoder's identification verdicts.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..io import atomic_path
from ..model import EncodedSample
from ..model.text_features import nuisance_features
from ..runs import LoadedRun, RunPaths
from .bayes import continuation_tokens
from .encoding_model import SentenceScorer, bare_states, encoding_design, load_scorer, positions_of, reference_texts


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
        design = encoding_design(states, layer, np.column_stack([words, np.full(m, float(positions[j]))]))
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
