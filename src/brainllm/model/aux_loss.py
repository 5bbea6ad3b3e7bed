"""Auxiliary losses that reward what separates a sample's own frames from other samples' (beyond the paper).

The generation loss alone is mostly lowered by a soft prompt that every sample shares (docs/calibration.md); these
losses act only on what differs between samples. Both compare a sample with in-batch samples of *other* stimuli
(`Batch.group`), are computed inside `BrainLLM.forward` (so distributed training synchronises their gradients) and
are added to the generation loss with `training.aux_weight`:

* `margin`: the teacher-forced loss of the continuation with the sample's own frames must be at least `margin`
  nats below the loss with the frames of another in-batch sample (its *partner*: the next sample in the batch
  from another stimulus with the same brain-slot layout): `mean relu(margin + own - shuffled)`. This is the
  pairwise-accuracy criterion made differentiable; it costs a second forward/backward of the partnered samples.
* `infonce`: in-batch contrastive (symmetric InfoNCE) between each sample's mean brain vector and its warm-up
  target (`BrainLLM.warmup_targets`, e.g. the mean embedding of the perceived text), both centred over the batch
  so the shared part cancels; cosine similarity over `temperature`. Costs one embedding lookup, no LM forward.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..config import AUX_LOSSES
from ..errors import ConfigError, check_choice
from .collate import BRAIN, Batch


@dataclass(frozen=True)
class AuxLoss:
    """Which auxiliary loss (`AUX_LOSSES`), and its margin (nats, `margin`) or temperature (`infonce`)."""

    kind: str
    margin: float = 0.1
    temperature: float = 0.1

    def __post_init__(self):
        check_choice("training.aux_loss", self.kind, AUX_LOSSES)
        if self.temperature <= 0 or self.margin < 0:
            raise ConfigError(f"aux_temperature must be > 0 and aux_margin >= 0, got {self.temperature}, "
                              f"{self.margin}.")


def partners(batch: Batch) -> torch.Tensor:
    """`(B,)` long: for each sample, the first later sample in the batch (cyclically) from another stimulus whose
    brain slots sit at the same positions, or -1 if there is none."""
    slots = batch.kind == BRAIN
    b = len(batch)
    same_layout = (slots.unsqueeze(1) == slots.unsqueeze(0)).all(-1)      # (B, B)
    other = batch.group.unsqueeze(1) != batch.group.unsqueeze(0)
    ok = same_layout & other
    order = (torch.arange(b, device=ok.device).unsqueeze(0) - torch.arange(b, device=ok.device).unsqueeze(1)) % b
    rank = torch.where(ok, order, b)                                        # distance ahead; b = not allowed
    best = rank.argmin(1)
    return torch.where(rank.gather(1, best.unsqueeze(1)).squeeze(1) < b, best, -1)


def margin_loss(own: torch.Tensor, shuffled: torch.Tensor, margin: float) -> torch.Tensor:
    """`mean relu(margin + own - shuffled)` over samples; own, shuffled `(R,)` per-sample losses (nats)."""
    return F.relu(margin + own - shuffled).mean()


def info_nce(brain: torch.Tensor, target: torch.Tensor, group: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric InfoNCE between `brain` `(B, H)` and `target` `(B, H)`, both centred over the batch; pairs of
    different samples of the same stimulus (`group` `(B,)`) are left out of the negatives. 0 for a batch with
    fewer than two stimuli."""
    if int(group.unique().numel()) < 2:
        return brain.sum() * 0.0
    a = F.normalize(brain - brain.mean(0), dim=-1)
    t = F.normalize(target - target.mean(0), dim=-1)
    logits = a @ t.T / temperature
    same = group.unsqueeze(1) == group.unsqueeze(0)
    logits = logits.masked_fill(same & ~torch.eye(len(group), dtype=torch.bool, device=logits.device), float("-inf"))
    labels = torch.arange(len(group), device=logits.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


def mean_brain_vectors(batch: Batch, brain: torch.Tensor) -> torch.Tensor:
    """`(B, H)`: the mean of each sample's brain vectors (`brain` `(B, L, H)`, as `BrainLLM.brain_vectors`)."""
    slots = (batch.kind == BRAIN).unsqueeze(-1).to(brain.dtype)
    return (brain * slots).sum(1) / slots.sum(1).clamp(min=1)
