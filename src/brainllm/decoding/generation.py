"""Batched decoding for a split and an input condition -> RUN/predictions/<split>_<condition>.jsonl.

Conditions (all from the same trained run where they use it):
* `brain` (BrainLLM): true frames + text prompt (for a run trained with `condition: no_text`, frames only);
* `permuted` (PerBrainLLM): each sample gets the frames of a sample from another stimulus, repeated for
  `permutations` different derangements (rows carry `permutation` and `frames_from`);
* `no_brain` (StdLLM): the bare backbone with the text prompt only (no adapter, no boundary vectors, no LoRA).

Each row also holds the teacher-forced loss (mean cross-entropy per continuation token + EOS, in nats) under that
condition, computed with right padding, while decoding uses left-padded `inputs_embeds` and the KV cache: beam and
greedy search run each prefix once and share its cache among the sample's beams (`prefix_beam`, the same tokens as
HF `generate`, which `generation.decoder: hf` uses instead). Batches are formed by sequence length (longest first)
and the outputs put back in the samples' order; the `permuted` condition decodes and scores all its derangements in
one pass. Everything runs under `torch.inference_mode()`. `crossloss` writes the loss of every (text, frames)
pairing of a subset of samples, for identification accuracy.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..config import GENERATION_CONDITIONS, GenerationConfig
from ..errors import check_choice
from ..io import write_json, write_jsonl
from ..model import BrainLLM, Batch, Collator, EncodedSample, TextEncoder
from ..model.collate import permute_frames
from ..progress import progress
from ..runs import LoadedRun, RunPaths
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
    for rows in length_sorted_batches([collate.length(s) for s in samples], batch_size):
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


def decode(run: LoadedRun, samples: Sequence[EncodedSample], layout: str, cfg: GenerationConfig,
           desc: str = "generate") -> list[str]:
    """Generated continuation text of each sample (cut at EOS, special tokens removed), in the samples' order."""
    if cfg.rerank == "encoding" and layout != "no_brain":
        from .bayes import bayes_decode  # the Bayesian decoder builds on this module

        return bayes_decode(run, samples, layout, cfg, desc)
    collate = Collator(run.dataset.frames, run.encoder, layout, for_generation=True,
                       tokens_per_frame=run.model.adapter.tokens_per_frame)
    return [run.encoder.decode(ids) for ids in decode_ids(run.model, collate, samples, cfg, run.encoder, desc)]


def generate_predictions(run: LoadedRun, split: str = "test", condition: str = "brain",
                         cfg: GenerationConfig | None = None) -> Path:
    """Decode and score one split under one condition; writes predictions/<split>_<condition>.jsonl + .json."""
    cfg = cfg or run.config.generation
    check_choice("condition", condition, GENERATION_CONDITIONS)
    ids = run.split.ids(split)  # raises on an unknown split name
    layout = input_layout(run, condition)
    name = "no_text" if (condition == "brain" and layout == "no_text") else condition
    base = run.encoder.encode_all(run.dataset, ids)
    # PerBrainLLM: all derangements in one pass, so batches fill and sort by length across them
    variants = ([(p, s) for p in range(cfg.permutations) for s in permute_frames(base, cfg.seed + p)]
                if condition == "permuted" else [(None, s) for s in base])
    samples = [s for _, s in variants]
    rows, start = [], time.perf_counter()
    bare = run.model.bare_backbone if condition == "no_brain" else contextlib.nullcontext
    with bare():  # StdLLM: the pretrained backbone alone, also for a LoRA run
        losses = teacher_forced_losses(run, samples, layout, cfg.batch_size)
        texts = decode(run, samples, layout, cfg, desc=f"{split}/{name}")
    for (p, s), loss, text in zip(variants, losses, texts):
        original = run.dataset.by_id(s.id)
        row = {"id": s.id, "stimulus": s.stimulus, "prompt": original.prompt, "reference": original.continuation,
               "prediction": text, "loss": float(loss)}
        if p is not None:
            row.update(permutation=p, frames_from=s.frames_from)
        rows.append(row)
    paths = RunPaths(run.path)
    path = paths.predictions(split, name)
    write_jsonl(path, rows)
    header = {"split": split, "condition": name, "n_samples": len(base), "backbone": run.config.model.backbone,
              "decoding": asdict(cfg), "seconds": round(time.perf_counter() - start, 1),
              "loss": "teacher-forced mean cross-entropy per continuation token incl. EOS (nats)"}
    if condition == "permuted":
        header["permutations"] = cfg.permutations
    write_json(paths.predictions_header(split, name), header)
    log.info("%s: %d rows, mean loss %.4f -> %s", name, len(rows), float(np.mean([r["loss"] for r in rows])), path)
    return path


def pick_samples(run: LoadedRun, split: str, max_samples: int, seed: int = 0) -> list[str]:
    """Up to `max_samples` sample ids of the split, sorted: one per stimulus first (so that pairs differ in
    stimulus), then at random (seeded)."""
    ids = run.split.ids(split)
    rng = np.random.default_rng(seed)
    by_stimulus: dict[str, list[str]] = {}
    for i in ids:
        by_stimulus.setdefault(run.dataset.by_id(i).stimulus, []).append(i)
    picked = [str(rng.choice(v)) for v in by_stimulus.values()]
    if len(picked) < max_samples:
        rest = [i for i in ids if i not in set(picked)]
        picked += [str(i) for i in rng.choice(rest, min(len(rest), max_samples - len(picked)), replace=False)]
    return sorted(picked[:max_samples])


@torch.inference_mode()
def cross_losses(run: LoadedRun, split: str = "test", max_samples: int = 48, seed: int = 0,
                 batch_size: int = 16) -> Path:
    """loss[i, j] = teacher-forced loss of sample i's text given sample j's frames, for up to `max_samples`
    samples of the split (one per stimulus first, so pairs differ in stimulus). Writes <split>_crossloss.npz."""
    picked = pick_samples(run, split, max_samples, seed)
    samples = run.encoder.encode_all(run.dataset, picked)
    layout = input_layout(run, "brain")
    pairs = [EncodedSample(t.id, t.stimulus, t.prompt_ids, t.continuation_ids, f.frame_rows, f.id)
             for t in samples for f in samples]
    losses = teacher_forced_losses(run, pairs, layout, batch_size).reshape(len(samples), len(samples))
    path = RunPaths(run.path).crossloss(split)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp.npz")
    np.savez(tmp, ids=np.array(picked), loss=losses)
    os.replace(tmp, path)
    return path
