"""BrainLLM: a frozen causal LM, a brain adapter, and two trainable boundary vectors `<brain>` / `</brain>`.

Works with any causal LM that `brainllm.backbones.load` returns (Llama family, GPT-2 family): it needs only
`get_input_embeddings()`, `get_output_embeddings()`, `base_model` (the decoder stack returning the final,
normalised hidden states) and `generate(inputs_embeds=...)`.

Logits are computed only at the positions whose next token is a target (continuation + EOS), which saves the
`(B, L, V)` logits tensor: the LM head is applied to the selected hidden states alone.

Beyond the paper, `inject_layer` L moves the splice deeper: the brain positions then enter the LM as zero input
embeddings, and their hidden state after layer L is replaced by `state_centre + adapter output`, `state_centre`
being the LM's mean layer-L state of the training samples' warm-up texts, e.g. their continuations (set by the
trainer; so an untrained adapter, whose outputs are near zero, injects an average state of the text rather than an
arbitrary vector). A frozen LM
reads a mean of input embeddings badly but a middle layer's state of a few words well (`brainllm ceiling`). Both
layouts are strategies of `model.splice`.
"""

from __future__ import annotations

import contextlib
import logging
from typing import ContextManager, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ..config import FINETUNE_MODES
from ..errors import BrainLLMError, check_choice
from .adapters import BrainAdapter
from .aux_loss import AuxLoss, info_nce, margin_loss, mean_brain_vectors, partners
from .collate import BRAIN, CLOSE, OPEN, TOKEN, Batch
from .injection import BrainOverride, PrefixInjection, decoder_blocks, hidden_of, on_output
from .splice import splice_for

log = logging.getLogger(__name__)



class BrainLLM(nn.Module):
    """The BrainLLM model.

    Args:
        backbone: a Hugging Face causal LM (weights in float32 or bfloat16).
        adapter: a `BrainAdapter` mapping `(B, T, D)` frames to `(B, T, H)`, H = the backbone's hidden size.
        finetune: "frozen" (the paper: only adapter + boundary vectors train), "lora" (adds LoRA via peft) or
            "full" (every backbone weight trains). The backbone stays in eval mode (no dropout) unless fine-tuned.
        lora: options for peft's LoraConfig when finetune == "lora" (r, lora_alpha, lora_dropout, target_modules).
        inject_layer: None (the paper: adapter outputs are input embeddings) or L >= 1 (they are added to
            `state_centre` and written as the brain positions' state after layer L; module docstring).
        bos_id: the token the backbone's texts start with, if any (`text_states` reads `[BOS] text`).
    """

    def __init__(self, backbone: nn.Module, adapter: BrainAdapter, finetune: str = "frozen",
                 lora: dict | None = None, inject_layer: int | None = None, bos_id: int | None = None):
        super().__init__()
        check_choice("model.finetune", finetune, FINETUNE_MODES)
        hidden = backbone.get_input_embeddings().weight.shape[1]
        if adapter.hidden_size != hidden:
            raise ValueError(f"adapter outputs {adapter.hidden_size} dims but the backbone's embeddings have {hidden}")
        self.finetune = finetune
        for p in backbone.parameters():
            p.requires_grad_(finetune == "full")
        if finetune == "lora":
            from peft import LoraConfig, get_peft_model

            backbone = get_peft_model(backbone, LoraConfig(task_type="CAUSAL_LM", **(lora or {"r": 8})))
        self.backbone = backbone
        self.adapter = adapter
        emb_std = float(backbone.get_input_embeddings().weight.detach().float().std())
        # rows: 0 = <brain>, 1 = </brain>; float32 even when the backbone is bfloat16
        self.boundary = nn.Parameter(torch.randn(2, hidden) * emb_std)
        self.splice = splice_for(inject_layer)  # where the adapter outputs enter the LM
        self.bos_id = bos_id
        self.splice.check(self)
        # (H,) the state an adapter output is added to; part of the checkpoint of an injecting run
        self.register_buffer("state_centre", torch.zeros(hidden))
        self._brain_override: BrainOverride | None = None  # diagnostics only: `overriding_brain`
        self.backbone.eval()

    # --------------------------------------------------------------- helpers
    @property
    def inject_layer(self) -> int | None:
        """The layer after which the adapter outputs are written (None: they are input embeddings, the paper's)."""
        return self.splice.layer

    @inject_layer.setter
    def inject_layer(self, layer: int | None) -> None:
        self.splice = splice_for(layer)
        self.splice.check(self)

    @property
    def hidden_size(self) -> int:
        return self.boundary.shape[1]

    @property
    def backbone_dtype(self) -> torch.dtype:
        return self.backbone.get_input_embeddings().weight.dtype

    def train(self, mode: bool = True) -> "BrainLLM":
        super().train(mode)
        if self.finetune == "frozen":
            self.backbone.eval()  # frozen: deterministic, no dropout in the LM (the authors left GPT-2's on)
        return self

    def bare_backbone(self) -> ContextManager:
        """A context in which the backbone is the pretrained LM alone (StdLLM and the brain-free null): LoRA layers
        switched off for a `lora` run, nothing to do for a frozen one. A `full` run changed the weights themselves,
        so its bare LM no longer exists: that raises rather than label the fine-tuned LM as StdLLM."""
        if self.finetune == "frozen":
            return contextlib.nullcontext()
        if self.finetune == "lora":
            return self.backbone.disable_adapter()
        raise BrainLLMError("This run fine-tuned every backbone weight (finetune: full), so the bare pretrained LM "
                            "(StdLLM, the brain-free null) is gone; score it from a frozen run of the same backbone.")

    def _decoder(self) -> nn.Module:
        return decoder_blocks(self.backbone)[0]

    def decoder_layer(self, layer: int) -> nn.Module:
        """The decoder block whose output is the hidden state after `layer` blocks (1 = the first block's output;
        `injection.decoder_blocks`)."""
        blocks = decoder_blocks(self.backbone)[1]
        if not 1 <= layer <= len(blocks):
            raise BrainLLMError(f"layer must be in 1..{len(blocks)} for this backbone, got {layer}.")
        return blocks[layer - 1]

    def trainable_state_dict(self) -> dict[str, torch.Tensor]:
        """What a checkpoint stores: adapter (with its input scaler), boundary vectors, and LoRA weights if any.

        The frozen backbone is never included (full fine-tuning saves it separately).
        """
        state = {f"adapter.{k}": v for k, v in self.adapter.state_dict().items()}
        state["boundary"] = self.boundary.detach()
        state.update(self.splice.checkpoint_state(self))
        if self.finetune == "lora":
            state.update({f"backbone.{k}": v for k, v in self.backbone.state_dict().items() if "lora_" in k})
        return {k: v.detach().contiguous().clone() for k, v in state.items()}

    def load_trainable_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.adapter.load_state_dict({k[len("adapter."):]: v for k, v in state.items() if k.startswith("adapter.")})
        with torch.no_grad():
            self.boundary.copy_(state["boundary"])
            self.splice.load_checkpoint_state(self, state)
        lora = {k[len("backbone."):]: v for k, v in state.items() if k.startswith("backbone.")}
        if lora:
            missing = self.backbone.load_state_dict(lora, strict=False)
            if missing.unexpected_keys:
                raise ValueError(f"checkpoint has LoRA weights this model lacks: {missing.unexpected_keys[:3]}")

    # --------------------------------------------------------------- core
    @contextlib.contextmanager
    def overriding_brain(self, offset: torch.Tensor | None = None, slots: torch.Tensor | None = None
                         ) -> Iterator[None]:
        """Diagnostics only (`diagnostics.ceiling` delivers known information through the adapter's slots): inside
        the context, every forward adds `offset` `(B, H)` to its sample's adapter outputs, and `slots`
        `(B, T_max * k, H)` replaces them (`injection.BrainOverride`)."""
        previous, self._brain_override = self._brain_override, BrainOverride(offset, slots)
        try:
            yield
        finally:
            self._brain_override = previous

    def brain_vectors(self, batch: Batch) -> torch.Tensor | None:
        """`(B, L, H)` float32: the adapter output of each BRAIN position's frame, zero elsewhere (None when the
        batch has no brain position); inside `overriding_brain`, the overridden outputs."""
        if not (batch.kind == BRAIN).any():
            return None
        override = self._brain_override
        if override is not None and override.slots is not None:
            brain = override.adapter_outputs(self.slot_mask(batch))
        else:
            brain = self.adapter(batch.frames, batch.frame_mask)  # (B, T * k, H)
        if override is not None:
            brain = override.shifted(brain)
        index = batch.brain_pos.unsqueeze(-1).expand(-1, -1, brain.shape[-1])
        return torch.where(batch.kind.unsqueeze(-1) == BRAIN, brain.gather(1, index), 0.0)

    def slot_mask(self, batch: Batch) -> torch.Tensor:
        """`(B, T_max * k)` bool: which adapter outputs are real (each real frame gives k = `tokens_per_frame`)."""
        return batch.frame_mask.repeat_interleave(self.adapter.tokens_per_frame, 1)

    def embed(self, batch: Batch) -> torch.Tensor:
        """Input embeddings `(B, L, H)` in the backbone's dtype: tokens, boundary vectors and adapter outputs
        (zeros at the brain positions when this model injects them deeper)."""
        return self._embed(batch, self.brain_vectors(batch))

    def _embed(self, batch: Batch, brain: torch.Tensor | None) -> torch.Tensor:
        """`embed` with the brain vectors `(B, L, H)` (`brain_vectors`) already computed."""
        emb = self.backbone.get_input_embeddings()(batch.token_ids).float()
        kind = batch.kind.unsqueeze(-1)
        out = torch.where(kind == TOKEN, emb, torch.zeros((), device=emb.device))
        spliced = None if brain is None else self.splice.input_brain(brain)
        if spliced is not None:
            out = out + spliced
        out = out + (kind == OPEN) * self.boundary[0] + (kind == CLOSE) * self.boundary[1]
        return out.to(self.backbone_dtype)

    def injection(self, batch: Batch, brain: torch.Tensor | None) -> ContextManager:
        """The context every forward of `batch` through the backbone runs in: nothing for the paper's layout; with
        `inject_layer`, the brain positions' state after that layer becomes `state_centre + brain`."""
        if brain is None:
            return contextlib.nullcontext()
        return self.splice.context(self, batch, brain)

    def brain_prefix(self, brain: torch.Tensor) -> tuple[torch.Tensor, PrefixInjection | None]:
        """`<brain> v_1..v_T </brain>` for a decoder that reuses it across many continuations (`decode-story`):
        (embeddings `(T + 2, H)` in the backbone's dtype, None) for the paper's layout; with `inject_layer`, zeros
        in the brain slots and the `PrefixInjection` of `state_centre + brain` there. `brain`: `(T, H)` adapter
        outputs."""
        return self.splice.prefix(self, brain)

    def _hidden(self, batch: Batch, brain: torch.Tensor | None) -> torch.Tensor:
        """The decoder's final hidden states `(B, L, H)` for a right-padded batch with brain vectors `brain`
        (`brain_vectors`)."""
        with self.injection(batch, brain):
            return self._decoder()(inputs_embeds=self._embed(batch, brain),
                                   attention_mask=batch.attention_mask).last_hidden_state

    def forward(self, batch: Batch, warmup: bool = False, aux: AuxLoss | None = None) -> dict[str, torch.Tensor]:
        """Losses for a right-padded batch.

        Returns `loss_sum` (summed cross-entropy over all target tokens, nats), `n_tokens`, `sample_loss` `(B,)`
        (mean CE per target token of each sample) and `loss` (= loss_sum / n_tokens); with `aux` (beyond the
        paper, `model.aux_loss`) also `aux`, that auxiliary loss (a scalar, 0 when the batch offers no contrast).
        With `warmup=True`: the warm-up MSE, in the same keys (`n_tokens` then counts frame x dimension elements).
        """
        if warmup:
            return self.warmup_loss(batch)
        brain = self.brain_vectors(batch)
        out = self._target_losses(batch, brain)
        if aux is not None:
            out["aux"] = self._aux_loss(batch, brain, out["sample_loss"], aux)
        return out

    def _target_losses(self, batch: Batch, brain: torch.Tensor | None) -> dict[str, torch.Tensor]:
        hidden = self._hidden(batch, brain)
        selected = hidden[batch.target_batch, batch.target_pos]  # (N, H): only where a target follows
        logits = self.backbone.get_output_embeddings()(selected).float()  # (N, V)
        ce = F.cross_entropy(logits, batch.target_ids, reduction="none")
        b = len(batch)
        counts = torch.zeros(b, device=ce.device).index_add_(0, batch.target_batch, torch.ones_like(ce))
        sums = torch.zeros(b, device=ce.device).index_add_(0, batch.target_batch, ce)
        return {"loss": ce.mean(), "loss_sum": ce.sum(), "n_tokens": torch.tensor(ce.numel(), device=ce.device),
                "sample_loss": sums / counts.clamp(min=1)}

    def _aux_loss(self, batch: Batch, brain: torch.Tensor | None, sample_loss: torch.Tensor, aux: AuxLoss
                  ) -> torch.Tensor:
        """The auxiliary loss `aux` of `model.aux_loss` (its docstring) for this batch."""
        zero = sample_loss.sum() * 0.0
        if brain is None:
            return zero
        if aux.kind == "infonce":
            return info_nce(mean_brain_vectors(batch, brain), self.warmup_targets(batch), batch.group,
                            aux.temperature)
        partner = partners(batch)
        rows = torch.nonzero(partner >= 0).squeeze(1)
        if len(rows) == 0:
            return zero
        shuffled = self._target_losses(batch.select(rows), brain[partner[rows]])["sample_loss"]
        return margin_loss(sample_loss[rows], shuffled, aux.margin)

    def warmup_loss(self, batch: Batch) -> dict[str, torch.Tensor]:
        """MSE between each real frame's adapter output and the warm-up target of its sample: the mean input
        embedding of the warm-up text (the paper's; prompt tokens by default), or, for a model that injects at
        layer L, the text's mean layer-L state minus `state_centre` (`text_states`; what the adapter adds to).

        Padding is masked out of both the target mean and the loss (the authors averaged over padding too).
        """
        target = self.warmup_targets(batch)
        out = self.adapter(batch.frames, batch.frame_mask)  # (B, T * k, H)
        mask = self.slot_mask(batch)
        k_all, k_learnt = self.adapter.tokens_per_frame, self.adapter.config.tokens_per_frame
        if k_all != k_learnt:  # token readout slots hold token embeddings, not something to regress
            mask = mask & (torch.arange(mask.shape[1], device=mask.device) % k_all < k_learnt)
        mask = mask.unsqueeze(-1).float()
        total = (((out - target.unsqueeze(1)) ** 2) * mask).sum()
        count = mask.sum() * out.shape[-1]
        return {"loss": total / count, "loss_sum": total, "n_tokens": count}

    @torch.no_grad()
    def warmup_targets(self, batch: Batch) -> torch.Tensor:
        """`(B, H)` float32: what the warm-up (and `ridge_init`) regresses each sample's adapter outputs onto: the
        mean input embedding of its warm-up text, or, injecting at layer L, its mean layer-L state minus
        `state_centre` (`text_states`)."""
        return self.splice.warmup_targets(self, batch)

    @torch.no_grad()
    def text_states(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """`(B, H)` float32: the bare LM's hidden state after `inject_layer` blocks, averaged over the real tokens
        of right-padded texts `ids` `(B, P)` (`mask` `(B, P)` bool), each read as `[BOS] text`."""
        if self.inject_layer is None:
            raise BrainLLMError("text_states needs a model with inject_layer set.")
        if self.bos_id is not None:
            ids = torch.cat([torch.full_like(ids[:, :1], self.bos_id), ids], 1)
            mask = torch.cat([torch.ones_like(mask[:, :1]), mask], 1)
        captured = []
        bare = contextlib.nullcontext() if self.finetune == "full" else self.bare_backbone()
        with bare, on_output(self.decoder_layer(self.inject_layer), captured.append):
            self._decoder()(input_ids=ids, attention_mask=mask.long())
        hidden = hidden_of(captured[0]).float()
        keep = mask.clone()
        if self.bos_id is not None:
            keep[:, 0] = False  # the average is over the text, not BOS
        keep = keep.unsqueeze(-1).float()
        return (hidden * keep).sum(1) / keep.sum(1).clamp(min=1)

    def generation_inputs(self, batch: Batch) -> tuple[torch.Tensor, ContextManager]:
        """What decoding feeds the backbone for a left-padded batch (`Collator(for_generation=True)`): the input
        embeddings `(B, L, H)` in the backbone's dtype, and the context the prefix's forward runs in (the layer-L
        injection of the brain positions, or nothing)."""
        brain = self.brain_vectors(batch)
        return self._embed(batch, brain), self.injection(batch, brain)

    @torch.inference_mode()
    def generate(self, batch: Batch, **generate_kwargs) -> list[list[int]]:
        """Continue each left-padded sequence with HF `generate`; returns the new token ids per sample (EOS and
        after included). `decoding.prefix_beam` runs the same searches faster."""
        embeds, context = self.generation_inputs(batch)
        with context:
            out = self.backbone.generate(inputs_embeds=embeds, attention_mask=batch.attention_mask, **generate_kwargs)
        return out.tolist()
