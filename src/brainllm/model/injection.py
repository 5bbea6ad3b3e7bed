"""Writing vectors into a decoder block's output: the hidden state after layer L at chosen positions.

Two users: `BrainLLM` with `inject_layer` (beyond the paper: the adapter writes the brain positions' state after
layer L instead of their input embeddings) and the state oracles of `diagnostics.ceiling`. Both replace, during one
forward pass, the block's output at a `(B, L)` mask by given `(B, L, H)` values; later passes over the same module
(the one-token steps of a KV-cached decode) leave it alone, since the positions they would hit are already in the
cache.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import nn


def hidden_of(output) -> torch.Tensor:
    """The hidden states `(B, L, H)` in a decoder block's output (Llama blocks return the tensor, GPT-2 a tuple)."""
    return output[0] if isinstance(output, tuple) else output


@contextlib.contextmanager
def on_output(module: nn.Module, fn) -> Iterator[None]:
    """Call `fn(output) -> output | None` on every forward output of `module` inside the context."""
    handle = module.register_forward_hook(lambda _module, _inputs, output: fn(output))
    try:
        yield
    finally:
        handle.remove()


def replaced_positions(module: nn.Module, where: torch.Tensor, values: torch.Tensor) -> contextlib.AbstractContextManager:
    """A context in which `module`'s output `(B', L, H)` takes `values` `(B, L, H)` wherever `where` `(B, L)` is
    True. Only passes over exactly L positions are touched; B' may be a multiple of B (`generate` expands each row
    into its beams, consecutively)."""

    def replace(output):
        hidden = hidden_of(output)
        if hidden.shape[1] != where.shape[1]:
            return None  # a cached step over new positions only
        mask, vals = where, values
        if hidden.shape[0] != where.shape[0]:
            repeat = hidden.shape[0] // where.shape[0]
            mask, vals = where.repeat_interleave(repeat, 0), values.repeat_interleave(repeat, 0)
        hidden = torch.where(mask.unsqueeze(-1), vals.to(hidden.dtype), hidden)
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden

    return on_output(module, replace)


@torch.inference_mode()
def mean_continuation_states(decoder: nn.Module, blocks: dict[int, nn.Module], bos: Sequence[int],
                             texts: Sequence[tuple[Sequence[int], Sequence[int]]], device: torch.device
                             ) -> dict[int, np.ndarray]:
    """layer -> `(n, H)` float32: the hidden state after that layer's block (`blocks[layer]`), averaged over the
    continuation tokens, when `decoder` (the LM's decoder stack) reads `bos + prompt + continuation` for each
    `(prompt_ids, continuation_ids)` of `texts`. One forward pass per text serves every layer."""
    captured: dict[int, torch.Tensor] = {}
    out: dict[int, list[np.ndarray]] = {layer: [] for layer in blocks}
    with contextlib.ExitStack() as hooks:
        for layer, block in blocks.items():
            hooks.enter_context(on_output(block, functools.partial(_keep_hidden, captured, layer)))
        for prompt, continuation in texts:
            decoder(input_ids=torch.tensor([list(bos) + list(prompt) + list(continuation)], device=device))
            for layer in blocks:
                out[layer].append(captured[layer][0, -len(continuation):].float().mean(0).cpu().numpy())
    return {layer: np.stack(rows) if rows else np.zeros((0, 0), np.float32) for layer, rows in out.items()}


def _keep_hidden(store: dict, key: int, output) -> None:
    store[key] = hidden_of(output)


@dataclass
class PrefixInjection:
    """States to write into a KV-cached decode whose every row starts with the same prefix of P positions: after
    `module`, the prefix positions where `mask` `(P,)` is True take `states` `(P, H)`."""

    module: nn.Module
    states: torch.Tensor
    mask: torch.Tensor

    def around(self, rows: int, offset: int, length: int) -> contextlib.AbstractContextManager:
        """The context for one forward of `rows` sequences of `length` positions with the prefix at `offset`."""
        p = self.mask.shape[0]
        where = torch.zeros(rows, length, dtype=torch.bool, device=self.states.device)
        where[:, offset:offset + p] = self.mask.to(self.states.device)
        values = torch.zeros(rows, length, self.states.shape[-1], dtype=self.states.dtype, device=self.states.device)
        values[:, offset:offset + p] = self.states
        return replaced_positions(self.module, where, values)
