"""Where the adapter's outputs enter the frozen LM (`BrainLLM.splice`): one small strategy per layout, so that
`BrainLLM` holds no branch on it.

* `InputSplice` (the paper): the adapter outputs are the brain positions' input embeddings.
* `LayerSplice` L (beyond the paper, `model.inject_layer`): the brain positions enter as zero input embeddings and
  their hidden state after layer L becomes `state_centre + adapter output` (`injection.replaced_positions`), where
  `state_centre` `(H,)` (a buffer of the model, in its checkpoint) is the LM's mean layer-L state of the training
  texts; the warm-up regresses onto each text's layer-L state minus that centre.

Each method takes the model, since the decoder blocks and the buffers move with it (`.to(device)`).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import ContextManager, Protocol

import torch
from torch import nn

from .collate import BRAIN, Batch
from .injection import PrefixInjection, replaced_positions


class SplicedModel(Protocol):
    """What a splice reads of the model (`BrainLLM`)."""

    boundary: torch.Tensor       # (2, H): <brain>, </brain>
    backbone: nn.Module
    state_centre: torch.Tensor   # (H,)

    @property
    def backbone_dtype(self) -> torch.dtype: ...

    def decoder_layer(self, layer: int) -> nn.Module: ...

    def text_states(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor: ...


@dataclass(frozen=True)
class InputSplice:
    """The paper's layout: adapter outputs are input embeddings."""

    layer: None = None

    def check(self, model: SplicedModel) -> None:
        """Nothing to check: every backbone has input embeddings."""

    def input_brain(self, brain: torch.Tensor) -> torch.Tensor | None:
        """What the brain positions' input embeddings get from the brain vectors `(B, L, H)`: the vectors."""
        return brain

    def context(self, model: SplicedModel, batch: Batch, brain: torch.Tensor) -> ContextManager:
        """The context a forward of `batch` runs in: none."""
        return contextlib.nullcontext()

    def prefix(self, model: SplicedModel, brain: torch.Tensor) -> tuple[torch.Tensor, PrefixInjection | None]:
        """`<brain> v_1..v_T </brain>` embeddings `(T + 2, H)` in the backbone's dtype, and no injection."""
        bounds = model.boundary
        return torch.cat([bounds[:1], brain, bounds[1:]]).to(model.backbone_dtype), None

    def warmup_targets(self, model: SplicedModel, batch: Batch) -> torch.Tensor:
        """`(B, H)` float32: the mean input embedding of each sample's warm-up text."""
        emb = model.backbone.get_input_embeddings()(batch.warmup_ids).float()  # (B, P, H)
        m = batch.warmup_mask.unsqueeze(-1).float()
        return (emb * m).sum(1) / m.sum(1).clamp(min=1)

    def checkpoint_state(self, model: SplicedModel) -> dict[str, torch.Tensor]:
        """What this layout adds to the trainable checkpoint: nothing."""
        return {}

    def load_checkpoint_state(self, model: SplicedModel, state: dict[str, torch.Tensor]) -> None:
        """Nothing to load."""


@dataclass(frozen=True)
class LayerSplice:
    """Beyond the paper: adapter outputs written as the brain positions' state after decoder layer `layer`."""

    layer: int

    def check(self, model: SplicedModel) -> None:
        """An out-of-range layer fails here (`BrainLLM.decoder_layer`)."""
        model.decoder_layer(self.layer)

    def input_brain(self, brain: torch.Tensor) -> torch.Tensor | None:
        """The brain positions enter as zero input embeddings."""
        return None

    def context(self, model: SplicedModel, batch: Batch, brain: torch.Tensor) -> ContextManager:
        """The context a forward of `batch` runs in: the brain positions' state after `layer` becomes
        `state_centre + brain`."""
        return replaced_positions(model.decoder_layer(self.layer), batch.kind == BRAIN, model.state_centre + brain)

    def prefix(self, model: SplicedModel, brain: torch.Tensor) -> tuple[torch.Tensor, PrefixInjection]:
        """Zeros in the brain slots of `<brain> . </brain>` `(T + 2, H)`, and the `PrefixInjection` of
        `state_centre + brain` there."""
        bounds = model.boundary
        slots = torch.zeros(len(brain) + 2, dtype=torch.bool, device=brain.device)
        slots[1:-1] = True
        states = torch.zeros(len(brain) + 2, brain.shape[-1], dtype=brain.dtype, device=brain.device)
        states[1:-1] = model.state_centre + brain
        embeds = torch.cat([bounds[:1], torch.zeros_like(brain), bounds[1:]]).to(model.backbone_dtype)
        return embeds, PrefixInjection(model.decoder_layer(self.layer), states, slots)

    def warmup_targets(self, model: SplicedModel, batch: Batch) -> torch.Tensor:
        """`(B, H)` float32: each warm-up text's mean layer-L state minus `state_centre` (`text_states`)."""
        return model.text_states(batch.warmup_ids, batch.warmup_mask) - model.state_centre

    def checkpoint_state(self, model: SplicedModel) -> dict[str, torch.Tensor]:
        """`state_centre` belongs to the checkpoint."""
        return {"state_centre": model.state_centre}

    def load_checkpoint_state(self, model: SplicedModel, state: dict[str, torch.Tensor]) -> None:
        """Load `state_centre` (under `torch.no_grad`); a ValueError when the checkpoint has none."""
        if "state_centre" not in state:
            raise ValueError("checkpoint has no state_centre, but this model injects at layer "
                             f"{self.layer}: was it trained with model.inject_layer unset?")
        model.state_centre.copy_(state["state_centre"])


def splice_for(inject_layer: int | None) -> InputSplice | LayerSplice:
    """The splice of `model.inject_layer`: `InputSplice` for None, else `LayerSplice(inject_layer)`."""
    return InputSplice() if inject_layer is None else LayerSplice(inject_layer)
