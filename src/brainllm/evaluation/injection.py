"""Hidden-state injection, a diagnostic for `evaluation.ceiling`: deliver known information to the frozen LM as
the *hidden state after layer L* at the brain positions, instead of as input embeddings.

An input embedding that is the mean of several tokens is off the manifold a frozen LM was trained on, so the LM
may read it badly however much it knows; a deeper layer's state averaged over a few words of text is a
representation the later layers do read. These functions give the target (`continuation_states`: the bare LM's
layer-L state, averaged over the continuation tokens, when it reads prompt + continuation), a ridge decoder of it
from the frames trained on the training samples only (`ridge_decoded_states`), and the injection itself
(`injected_losses`: teacher-forced losses with the brain positions' layer-L output replaced, one vector per sample).
"""

from __future__ import annotations

import contextlib
import functools
from typing import Iterator, Sequence

import numpy as np
import torch

from ..generation import input_layout
from ..model import Collator, EncodedSample
from ..model.collate import BRAIN
from ..runs import LoadedRun


@contextlib.contextmanager
def _on_output(module: torch.nn.Module, fn) -> Iterator[None]:
    """Call `fn(output) -> output | None` on every forward output of `module` inside the context."""
    handle = module.register_forward_hook(lambda _module, _inputs, output: fn(output))
    try:
        yield
    finally:
        handle.remove()


@torch.inference_mode()
def continuation_states(run: LoadedRun, samples: Sequence[EncodedSample], layers: Sequence[int]
                        ) -> dict[int, np.ndarray]:
    """layer -> `(n, H)` float32: the bare LM's hidden state after that many blocks, averaged over the continuation
    tokens, when it reads `[BOS] prompt continuation` (the text the listener heard, as the LM represents it).
    One forward pass per sample serves every layer."""
    if not layers:
        return {}
    model, device = run.model, run.model.boundary.device
    bos = [run.encoder.bos_id] if run.encoder.bos_id is not None else []
    captured: dict[int, torch.Tensor] = {}
    out: dict[int, list[np.ndarray]] = {layer: [] for layer in layers}
    with model.bare_backbone(), contextlib.ExitStack() as hooks:
        for layer in layers:
            hooks.enter_context(_on_output(model.decoder_layer(layer), functools.partial(captured.__setitem__, layer)))
        for s in samples:
            model._decoder()(input_ids=torch.tensor([bos + list(s.prompt_ids) + list(s.continuation_ids)],
                                                    device=device))
            for layer in layers:
                out[layer].append(captured[layer][0, -len(s.continuation_ids):].float().mean(0).cpu().numpy())
    return {layer: np.stack(rows) for layer, rows in out.items()}


@torch.inference_mode()
def injected_losses(run: LoadedRun, samples: Sequence[EncodedSample], layer: int, vectors: np.ndarray,
                    batch_size: int = 16) -> np.ndarray:
    """`(n,)` mean CE per continuation token of each sample, its brain positions' state after `layer` blocks
    replaced by `vectors[i]` `(n, H)` (every slot of a sample gets the same vector; the adapter still runs below)."""
    collate = Collator(run.dataset.frames, run.encoder, input_layout(run, "brain"))
    device = run.model.boundary.device
    current: dict[str, torch.Tensor] = {}

    def replace(output: torch.Tensor) -> torch.Tensor:
        hidden = output[0] if isinstance(output, tuple) else output
        where = current["brain"].unsqueeze(-1)
        hidden = torch.where(where, current["vectors"].to(hidden.dtype).unsqueeze(1), hidden)
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

    losses = []
    with _on_output(run.model.decoder_layer(layer), replace):
        for start in range(0, len(samples), batch_size):
            batch = collate(samples[start:start + batch_size]).to(device)
            current["brain"] = batch.kind == BRAIN
            current["vectors"] = torch.as_tensor(vectors[start:start + batch_size], dtype=torch.float32,
                                                 device=device)
            losses.append(run.model(batch)["sample_loss"].float().cpu().numpy())
    return np.concatenate(losses) if losses else np.zeros(0)


def centred_correlation(pred: np.ndarray, truth: np.ndarray, centre: np.ndarray) -> float:
    """Mean over rows of the correlation between `pred - centre` and `truth - centre` (rows `(n, H)`)."""
    a, b = pred - centre, truth - centre
    a = a - a.mean(1, keepdims=True)
    b = b - b.mean(1, keepdims=True)
    denom = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return float(np.mean((a * b).sum(1) / np.where(denom > 0, denom, 1.0)))
