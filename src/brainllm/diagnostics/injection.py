"""Hidden-state injection, a diagnostic for `diagnostics.ceiling`: deliver known information to the frozen LM as
the *hidden state after layer L* at the brain positions, instead of as input embeddings.

An input embedding that is the mean of several tokens is off the manifold a frozen LM was trained on, so the LM
may read it badly however much it knows; a deeper layer's state averaged over a few words of text is a
representation the later layers do read. These functions give the target (`continuation_states`: the bare LM's
layer-L state, averaged over the continuation tokens, when it reads prompt + continuation), a ridge decoder of it
from the frames trained on the training samples only (`ceiling.ridge_decoded_states`), a retrieval of it
(`retrieval_weights`, `retrieved_states`: the training samples' states weighted by how well the run's encoding model says their texts
predict the frames), and the injection itself (`injected_losses`: teacher-forced losses with the brain positions'
layer-L output replaced, one vector per sample).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ..decoding.decoder_identification import cross_log_likelihoods
from ..decoding.encoding_model import SentenceScorer
from ..decoding.generation import input_layout
from ..model import Collator, EncodedSample
from ..model.collate import BRAIN
from ..model.injection import mean_continuation_states, replaced_positions
from ..runs import LoadedRun


def continuation_states(run: LoadedRun, samples: Sequence[EncodedSample], layers: Sequence[int]
                        ) -> dict[int, np.ndarray]:
    """layer -> `(n, H)` float32: the bare LM's hidden state after that many blocks, averaged over the continuation
    tokens, when it reads `[BOS] prompt continuation` (the text the listener heard, as the LM represents it).
    One forward pass per sample serves every layer."""
    if not layers:
        return {}
    model = run.model
    bos = [run.encoder.bos_id] if run.encoder.bos_id is not None else []
    with model.bare_backbone():
        return mean_continuation_states(model._decoder(), {layer: model.decoder_layer(layer) for layer in layers},
                                        bos, [(s.prompt_ids, s.continuation_ids) for s in samples],
                                        model.boundary.device)


def to_training_spread(pred: np.ndarray, train_states: np.ndarray) -> np.ndarray:
    """`pred` `(n, H)` rescaled about the training states' mean so that its mean distance from it is theirs
    (`train_states` `(n_train, H)`): a ridge prediction or a weighted mean of states is shrunk towards the mean,
    and the frozen LM reads a state's norm too."""
    centre = train_states.mean(0)
    spread = np.linalg.norm(train_states - centre, axis=1).mean()
    offset = pred - centre
    return (centre + offset * spread / max(float(np.linalg.norm(offset, axis=1).mean()), 1e-12)).astype(np.float32)


def retrieval_weights(run: LoadedRun, scorer: SentenceScorer, train: Sequence[EncodedSample],
                      samples: Sequence[EncodedSample], sharpness: float = 3.0) -> tuple[np.ndarray, float]:
    """How much each training sample's text explains each sample's frames: `(n, n_train)` softmax(sharpness · z)
    over b, z = log p(the sample's frames | training text b) (`cross_log_likelihoods`, nuisance position of the
    sample's frames) standardised over b. `scorer` must not have been fitted on `samples` (`encoding_model.scorer_splits`
    says which splits a run's was). Returns (weights, mean effective number of training
    samples weighted, 1 / Σ w²). The weights do not depend on the layer whose states they average."""
    scores = cross_log_likelihoods(run, scorer, train, samples).T  # (n, n_train)
    spread = scores.std(1, keepdims=True)
    z = (scores - scores.max(1, keepdims=True)) / np.where(spread > 0, spread, 1.0)
    weights = np.exp(sharpness * z)
    weights /= weights.sum(1, keepdims=True)
    return weights, float(np.mean(1 / (weights ** 2).sum(1)))


def retrieved_states(weights: np.ndarray, train_states: np.ndarray) -> np.ndarray:
    """The encoding model's guess of each sample's state `(n, H)`: the training samples' states `train_states`
    `(n_train, H)` averaged with `retrieval_weights` `(n, n_train)`, rescaled to the training states' spread
    (`to_training_spread`). A posterior mean over real states stays on the manifold the LM reads, where a ridge
    prediction of the state from the frames is a faint average (DESIGN.md)."""
    return to_training_spread(weights @ train_states, train_states)


@torch.inference_mode()
def injected_losses(run: LoadedRun, samples: Sequence[EncodedSample], layer: int, vectors: np.ndarray,
                    batch_size: int = 16) -> np.ndarray:
    """`(n,)` mean CE per continuation token of each sample, its brain positions' state after `layer` blocks
    replaced by `vectors[i]` `(n, H)` (every slot of a sample gets the same vector; the adapter still runs below)."""
    collate = Collator(run.dataset.frames, run.encoder, input_layout(run, "brain"),
                       tokens_per_frame=run.model.adapter.tokens_per_frame)
    device = run.model.boundary.device
    losses = []
    for start in range(0, len(samples), batch_size):
        batch = collate(samples[start:start + batch_size]).to(device)
        values = torch.as_tensor(vectors[start:start + batch_size], dtype=torch.float32, device=device)
        values = values.unsqueeze(1).expand(-1, batch.kind.shape[1], -1)
        with replaced_positions(run.model.decoder_layer(layer), batch.kind == BRAIN, values):
            losses.append(run.model(batch)["sample_loss"].float().cpu().numpy())
    return np.concatenate(losses) if losses else np.zeros(0)
