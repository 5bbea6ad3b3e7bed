"""Sentence decoding pieces that every sentence decoder shares: search settings, beam/greedy search over the
shared prefix (`prefix_beam`) or HF `generate`, length-sorted batches, and teacher-forced losses (mean CE per
continuation token + EOS, nats) under any input layout. `generation` (the conditions and the prediction files) and
`bayes` (the Bayesian decoder) build on them.
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
import torch

from ..config import GenerationConfig
from ..model import BrainLLM, Batch, Collator, EncodedSample, TextEncoder
from ..progress import progress
from ..runs import LoadedRun
from .prefix_beam import SearchSettings, beam_search, greedy_search

log = logging.getLogger(__name__)


def search_settings(cfg: GenerationConfig, encoder: TextEncoder) -> SearchSettings:
    """The deterministic search of `cfg` (beam, or greedy: `num_beams` 1)."""
    return SearchSettings(max_new_tokens=cfg.max_new_tokens, min_new_tokens=cfg.min_new_tokens,
                          eos_id=encoder.eos_id, pad_id=encoder.pad_id,
                          num_beams=cfg.num_beams if cfg.method == "beam" else 1,
                          repetition_penalty=cfg.repetition_penalty)


def decoding_kwargs(cfg: GenerationConfig, encoder: TextEncoder) -> dict:
    """Arguments for HF `generate` from our settings (only new tokens come back with inputs_embeds)."""
    kwargs = search_settings(cfg, encoder).hf_generate_kwargs()
    if cfg.method == "sample":
        kwargs.update(do_sample=True, temperature=cfg.temperature, top_p=cfg.top_p)
    return kwargs


def generate_ids(model: BrainLLM, batch: Batch, cfg: GenerationConfig, encoder: TextEncoder) -> list[list[int]]:
    """New token ids of each sample of a left-padded batch (EOS included where one was generated; HF's output may
    carry pad ids after it): beam or greedy search over the shared prefix (`prefix_beam`), or HF `generate` for
    `decoder: hf` and for sampling. (`GenerationConfig` checks `method` and `decoder` when it is built.)"""
    settings = search_settings(cfg, encoder)
    if cfg.method == "sample" or cfg.decoder == "hf":
        return model.generate(batch, **decoding_kwargs(cfg, encoder))
    embeds, context = model.generation_inputs(batch)
    search = beam_search if settings.num_beams > 1 else greedy_search
    return search(model.backbone, embeds, batch.attention_mask, settings, context)


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[np.ndarray]:
    """Indices `(<= batch_size,)` of consecutive batches, longest sequences first (ties in input order), so that a
    batch pads little; the union is every index once."""
    order = np.argsort(-np.asarray(lengths, dtype=np.int64), kind="stable")
    return [order[s:s + batch_size] for s in range(0, len(order), batch_size)]


def input_layout(run: LoadedRun, condition: str) -> str:
    if condition == "no_brain":
        return "no_brain"
    return run.config.model.condition  # brain or no_text (`ModelConfig` checks it)


@torch.inference_mode()
def teacher_forced_losses(run: LoadedRun, samples: Sequence[EncodedSample], layout: str, batch_size: int,
                          brain_offsets: np.ndarray | None = None,
                          brain_slots: Sequence[np.ndarray] | None = None) -> np.ndarray:
    """Mean CE per continuation token (+ EOS) of each sample, `(n,)` float, nats. Diagnostics (the
    `diagnostics.ceiling` oracles): `brain_offsets` `(n, H)` is added to each sample's adapter outputs;
    `brain_slots`, one `(T_i * k, H)` array per sample (T_i = its number of frames, k = the adapter's
    `tokens_per_frame`), replaces them (`BrainLLM.overriding_brain`)."""
    collate = Collator(run.dataset.frames, run.encoder, layout, tokens_per_frame=run.model.adapter.tokens_per_frame)
    device = run.model.boundary.device
    out = np.zeros(len(samples))
    batches = length_sorted_batches([collate.length(s) for s in samples], batch_size)
    for rows in progress(batches, "teacher-forced losses", unit="batch"):
        batch = collate([samples[i] for i in rows]).to(device)
        offset = (None if brain_offsets is None
                  else torch.as_tensor(brain_offsets[rows], dtype=torch.float32, device=device))
        slots = None
        if brain_slots is not None:
            slots = torch.zeros(*run.model.slot_mask(batch).shape, run.model.hidden_size, device=device)
            for j, i in enumerate(rows):
                slots[j, : len(brain_slots[i])] = torch.as_tensor(brain_slots[i], dtype=torch.float32, device=device)
        with run.model.overriding_brain(offset, slots):
            out[rows] = run.model(batch)["sample_loss"].float().cpu().numpy()
    return out


@torch.inference_mode()
def decode_ids(model: BrainLLM, collate: Collator, samples: Sequence[EncodedSample], cfg: GenerationConfig,
               encoder: TextEncoder, desc: str = "generate") -> list[list[int]]:
    """New token ids of each sample (`generate_ids`), in the samples' order; decoded in batches of
    `cfg.batch_size` samples of similar length (`collate` builds left-padded generation batches)."""
    device = model.boundary.device
    out: list[list[int]] = [[] for _ in samples]
    batches = length_sorted_batches([collate.length(s) for s in samples], cfg.batch_size)
    for i, rows in enumerate(progress(batches, desc)):
        if cfg.method == "sample":
            torch.manual_seed(cfg.seed * 100003 + i)
        for j, seq in zip(rows, generate_ids(model, collate([samples[j] for j in rows]).to(device), cfg, encoder)):
            out[j] = seq
    return out
