"""Writing vectors into a decoder block's output: the hidden state after layer L at chosen positions; and
replacing the adapter's outputs by known vectors (`BrainOverride`).

Two users of the block hooks: `BrainLLM` with `inject_layer` (beyond the paper: the adapter writes the brain
positions' state after layer L instead of their input embeddings) and the state oracles of `diagnostics.ceiling`.
Both replace, during one forward pass, the block's output at a `(B, L)` mask by given `(B, L, H)` values; later
passes over the same module (the one-token steps of a KV-cached decode) leave it alone, since the positions they
would hit are already in the cache. `BrainOverride` is the input-level counterpart the other oracles of
`diagnostics.ceiling` use (`BrainLLM.overriding_brain`): the model itself knows nothing of them.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class BrainOverride:
    """Known information delivered through the adapter's slots, for diagnostics (`BrainLLM.overriding_brain`).

    Attributes:
        offset: `(B, H)` added to every adapter output of its sample, or None.
        slots: `(B, T_max * k, H)` (k = the adapter's `tokens_per_frame`) replacing the adapter outputs altogether
            (the frames are then ignored), or None.
    """

    offset: torch.Tensor | None = None
    slots: torch.Tensor | None = None

    def adapter_outputs(self, slot_mask: torch.Tensor) -> torch.Tensor:
        """`slots` as the adapter's outputs `(B, T_max * k, H)` float32, zero where `slot_mask` `(B, T_max * k)` is
        False; a ValueError when its shape does not match the batch's slots."""
        if self.slots.shape[:2] != slot_mask.shape:
            raise ValueError(f"brain_slots {tuple(self.slots.shape)} do not match the batch's brain slots "
                             f"{tuple(slot_mask.shape)}")
        return self.slots.float() * slot_mask.unsqueeze(-1)

    def shifted(self, brain: torch.Tensor) -> torch.Tensor:
        """Adapter outputs `(B, T_max * k, H)` plus `offset` (unchanged without one)."""
        return brain if self.offset is None else brain + self.offset.to(brain.dtype).unsqueeze(1)


def unwrap_peft(model: nn.Module) -> nn.Module:
    """The causal LM itself: the model a peft wrapper (LoRA) holds, or `model` when it is not wrapped."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def decoder_blocks(backbone: nn.Module) -> tuple[nn.Module, nn.ModuleList]:
    """The LM's decoder stack without its output head (a peft wrapper's LoRA layers stay in place) and its blocks:
    block i's output is the hidden state after i + 1 layers (Llama-family backbones keep them in `layers`, GPT-2 in
    `h`)."""
    decoder = unwrap_peft(backbone).base_model
    return decoder, (decoder.layers if hasattr(decoder, "layers") else decoder.h)


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
