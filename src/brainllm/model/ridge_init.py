"""A closed-form start for the adapter (beyond the paper; `training.init: ridge` in the `brain` recipe).

The paper warms the adapter up by gradient descent on the MSE between its outputs and the mean input embedding of
the prompt; the brain-specific part of that map is learnt slowly if at all (docs/calibration.md). The same
regression has a closed form: ridge from each standardised frame to its sample's warm-up target
(`BrainLLM.warmup_targets`: the mean input embedding of the warm-up text, or, for `inject_layer`, its layer-L state
minus the centre), the penalty chosen by cross-validation over whole *training* stimuli (`ridge.cv_ridge`, scored
by `ridge.centred_correlation`, so the shared mean of the targets does not count as decoding). Validation and test
samples are never seen.

The solution is written into the adapter's linear path (`BrainAdapter.linear_path`: a `linear` adapter's
projection, an `mlp` adapter's `skip` path; every one of its `tokens_per_frame` slots gets the same map), so the
adapter's first evaluation forward *is* the ridge prediction. An `mlp` adapter's own network has its last layer
zeroed, so it starts silent and learns a residual on top of the linear map. A `centre` adapter gets the mean
prediction as its shared vector and as its running mean.

Ridge shrinks: the predicted deviations from the mean target are much smaller than the true ones when the frames
carry little information. `scale` multiplies the brain part (the deviation from the mean prediction), e.g. to give
it the spread of the true targets (`scale="spread"`).

`fit_token_readout` fits the adapter's token readout slots (`model.token_readout`) the same way: ridge from each
standardised frame to the idf-weighted bag of its sample's warm-up text over the most frequent training tokens.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError
from ..ridge import centred_correlation, cv_ridge
from .brainllm import BrainLLM
from .collate import Collator, EncodedSample


@dataclass
class RidgeInit:
    """What `ridge_initialise` fitted: the penalty (Tang's units, λ = α²), its cross-validated centred
    correlation, the number of (frame, sample) rows, and the factor the brain part was scaled by."""

    alpha: float
    cv_correlation: float
    rows: int
    scale: float

    def to_json(self) -> dict:
        return asdict(self)


@torch.no_grad()
def sample_targets(model: BrainLLM, collate: Collator, samples: Sequence[EncodedSample], batch_size: int = 16
                   ) -> np.ndarray:
    """`(n, H)` float64: each sample's warm-up target (`BrainLLM.warmup_targets`)."""
    device = model.boundary.device
    out = [model.warmup_targets(collate(samples[s:s + batch_size]).to(device)).cpu().numpy()
           for s in range(0, len(samples), batch_size)]
    return np.concatenate(out).astype(np.float64)


def ridge_problem(model: BrainLLM, frames: np.ndarray, samples: Sequence[EncodedSample], targets: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The regression the adapter's linear path solves: one row per (sample, frame). Returns (x `(rows, D)` the
    frames standardised with the adapter's own input scaler, y `(rows, H)` the sample's target, the stimulus of
    each row for the cross-validation folds)."""
    adapter = model.adapter
    index = [(i, r) for i, s in enumerate(samples) for r in s.frame_rows]
    mean = adapter.input_mean.cpu().double().numpy()
    std = adapter.input_std.cpu().double().numpy()
    x = (np.asarray(frames[[r for _, r in index]], dtype=np.float64) - mean) / std
    y = targets[[i for i, _ in index]]
    return x, y, [samples[i].stimulus for i, _ in index]


def ridge_initialise(model: BrainLLM, collate: Collator, samples: Sequence[EncodedSample],
                     scale: float | str = 1.0, seed: int = 0, batch_size: int = 16) -> RidgeInit:
    """Fit the ridge map on `samples` (training samples only) and start the adapter from it (module docstring).

    `scale`: a factor for the brain part, or `"spread"` to give the predictions' deviations from their mean the
    mean norm of the targets' deviations from theirs."""
    adapter = model.adapter
    path = adapter.linear_path()
    if path is None:
        raise ConfigError(f"training.init: ridge needs an adapter with a linear path: name 'linear', or 'mlp' with "
                          f"skip: true (the '{adapter.name}' adapter has none); set model.adapter accordingly.")
    x, y, groups = ridge_problem(model, collate.frames, samples, sample_targets(model, collate, samples, batch_size))

    def score(pred: np.ndarray, truth: np.ndarray, held: np.ndarray) -> float:
        return centred_correlation(pred, truth, y[~held].mean(0))

    coef, icpt, alpha, cv = cv_ridge(x, y, groups, score, seed)  # coef (D, H), icpt (H,)
    x_mean = x.mean(0)
    mean_pred = x_mean @ coef + icpt  # (H,) the mean prediction over the rows
    if scale == "spread":
        spread_pred = np.linalg.norm((x - x_mean) @ coef, axis=1).mean()
        factor = float(np.linalg.norm(y - y.mean(0), axis=1).mean() / max(spread_pred, 1e-12))
    elif isinstance(scale, (int, float)) and scale > 0:
        factor = float(scale)
    else:
        raise ConfigError(f"training.ridge_scale must be a positive number or 'spread', got {scale!r}.")
    # prediction = mean_pred + factor * (x - x_mean) @ coef = x @ W.T + b
    k = adapter.config.tokens_per_frame  # the learnt slots (readout slots have their own decoder)
    weight = np.tile(factor * coef.T, (k, 1))                      # (k * H, D)
    bias = np.tile(mean_pred - factor * x_mean @ coef, k)          # (k * H,)
    _write(path, weight, bias)
    if adapter.config.centre:
        adapter.shared.data.copy_(torch.as_tensor(np.tile(mean_pred, k), dtype=torch.float32))
        adapter.brain_mean.copy_(torch.as_tensor(np.tile(mean_pred, k), dtype=torch.float32))
    net = getattr(adapter, "net", None)
    if net is not None:  # the mlp's own network starts silent: its first forward is the ridge prediction
        last = [m for m in net.modules() if isinstance(m, nn.Linear)][-1]
        nn.init.zeros_(last.weight)
        if last.bias is not None:
            nn.init.zeros_(last.bias)
    return RidgeInit(alpha=alpha, cv_correlation=round(cv, 4), rows=len(x), scale=round(factor, 4))


def _write(linear: nn.Linear, weight: np.ndarray, bias: np.ndarray) -> None:
    with torch.no_grad():
        linear.weight.copy_(torch.as_tensor(weight, dtype=linear.weight.dtype))
        linear.bias.copy_(torch.as_tensor(bias, dtype=linear.bias.dtype))


@dataclass
class ReadoutFit:
    """What `fit_token_readout` fitted: penalty (Tang's units), cross-validated centred correlation of the bags,
    candidate tokens, (frame, sample) rows."""

    alpha: float
    cv_correlation: float
    candidates: int
    rows: int

    def to_json(self) -> dict:
        return asdict(self)


def text_bags(collate: Collator, samples: Sequence[EncodedSample], vocab: int
              ) -> tuple[np.ndarray, np.ndarray]:
    """(candidate token ids `(C,)`, C <= `vocab`: the tokens in most of the samples' warm-up texts; bags `(n, C)`:
    the idf weight of each candidate present in a sample's warm-up text, 0 elsewhere). idf = log((1 + n) / (1 + df))
    with df the number of samples whose text holds the token."""
    texts = [set(collate.warmup_text(s)) - {collate.encoder.pad_id, collate.encoder.eos_id} for s in samples]
    counts = Counter(t for text in texts for t in text)
    candidates = np.array(sorted(counts, key=lambda t: (-counts[t], t))[:vocab], dtype=np.int64)
    column = {int(t): j for j, t in enumerate(candidates)}
    idf = np.log((1 + len(samples)) / (1 + np.array([counts[int(t)] for t in candidates], dtype=np.float64)))
    bags = np.zeros((len(samples), len(candidates)))
    for i, text in enumerate(texts):
        cols = [column[t] for t in text if t in column]
        bags[i, cols] = idf[cols]
    return candidates, bags


def fit_token_readout(model: BrainLLM, collate: Collator, samples: Sequence[EncodedSample], seed: int = 0
                      ) -> ReadoutFit:
    """Fit the adapter's token readout on `samples` (training samples only; module docstring). A frame's score for
    a candidate is the predicted deviation of its bag from the training samples' mean bag."""
    readout = model.adapter.readout
    if readout is None:
        raise ConfigError("fit_token_readout needs an adapter with model.adapter.readout_tokens > 0.")
    candidates, bags = text_bags(collate, samples, readout.weight.shape[1])
    if len(candidates) < readout.tokens:
        raise ConfigError(f"the training texts hold {len(candidates)} distinct tokens, fewer than readout_tokens "
                          f"{readout.tokens}.")
    x, y, groups = ridge_problem(model, collate.frames, samples, bags)

    def score(pred: np.ndarray, truth: np.ndarray, held: np.ndarray) -> float:
        return centred_correlation(pred, truth, y[~held].mean(0))

    coef, _, alpha, cv = cv_ridge(x, y, groups, score, seed)  # coef (D, C)
    emb = model.backbone.get_input_embeddings().weight.detach()
    ids = torch.as_tensor(candidates)
    readout.set(torch.as_tensor(coef, dtype=torch.float32), torch.as_tensor(-x.mean(0) @ coef, dtype=torch.float32),
                ids, emb[ids.to(emb.device)].float())
    return ReadoutFit(alpha=alpha, cv_correlation=round(cv, 4), candidates=len(candidates), rows=len(x))
