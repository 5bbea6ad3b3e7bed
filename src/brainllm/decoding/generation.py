"""Batched decoding for a split and an input condition -> RUN/predictions/<split>_<condition>.jsonl.

Conditions (all from the same trained run where they use it):
* `brain` (BrainLLM): true frames + text prompt (for a run trained with `condition: no_text`, frames only);
* `permuted` (PerBrainLLM): each sample gets the frames of a sample from another stimulus, repeated for
  `permutations` different derangements (rows carry `permutation` and `frames_from`);
* `no_brain` (StdLLM): the bare backbone with the text prompt only (no adapter, no boundary vectors, no LoRA);
* `nuisance` (the length/position decoder): the Bayesian decoder's candidates picked by length and position alone;
* `retrieval`: no generation, the training continuation under which the encoding model finds the frames likeliest
  (`retrieval`); its rows have no loss (null), since no LM scores the reference.

Each row also holds the teacher-forced loss (mean cross-entropy per continuation token + EOS, in nats) under that
condition (and, with the Bayesian decoder, `posterior_loss`: the same under the decoder's own distribution,
`bayes.posterior_losses`), computed with right padding, while decoding uses left-padded `inputs_embeds` and the KV
cache: beam and greedy search run each prefix once and share its cache among the sample's beams (`prefix_beam`,
the same tokens as HF `generate`, which `generation.decoder: hf` uses instead). Batches are formed by sequence
length (longest first) and the outputs put back in the samples' order; the `permuted` condition decodes and
scores all its derangements in one pass. Everything runs under `torch.inference_mode()`. `crossloss` writes the
loss of every (text, frames) pairing of a subset of samples, for identification accuracy.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..config import GENERATION_CONDITIONS, GenerationConfig
from ..errors import ConfigError, check_choice
from ..io import file_sha1, read_json, write_json, write_jsonl
from ..model import Collator, EncodedSample
from ..model.collate import permute_frames
from ..runs import LoadedRun, RunPaths
from .bayes import bayes_decode
from .candidates import sampling_dtype
from .encoding_model import has_scorer, load_scorer
from .pool_mbr import PoolMBR
from .retrieval import retrieve
from .sentences import (decode_ids, decoding_kwargs, generate_ids, input_layout, length_sorted_batches,
                        search_settings, teacher_forced_losses)

__all__ = ["cross_losses", "decode", "decode_ids", "decode_scored", "decoding_kwargs", "generate_ids",
           "generate_predictions", "input_layout", "length_sorted_batches", "pick_samples", "search_settings",
           "teacher_forced_losses"]

log = logging.getLogger(__name__)


def decode(run: LoadedRun, samples: Sequence[EncodedSample], layout: str, cfg: GenerationConfig,
           desc: str = "generate", scorer: str = "encoding") -> list[str]:
    """Generated continuation text of each sample (cut at EOS, special tokens removed), in the samples' order.
    With `cfg.rerank: encoding` the Bayesian decoder picks it, under the encoding model `scorer` (StdLLM, which
    has no brain input, keeps the plain search)."""
    return decode_scored(run, samples, layout, cfg, None, desc, scorer)[0]


def decode_scored(run: LoadedRun, samples: Sequence[EncodedSample], layout: str, cfg: GenerationConfig,
                  lm_losses: np.ndarray | None, desc: str = "generate", scorer: str = "encoding",
                  store: Path | None = None) -> tuple[list[str], np.ndarray | None]:
    """`decode`'s texts and, where the Bayesian decoder picks them and `lm_losses` (the reference continuations'
    teacher-forced losses) are given, their loss under its distribution (`bayes.posterior_losses`); else None.
    `store`: where the Bayesian decoder keeps its candidates (`candidates.propose_stored`)."""
    if cfg.rerank == "encoding" and layout != "no_brain":
        return bayes_decode(run, samples, layout, cfg, lm_losses, desc, scorer, store)
    collate = Collator(run.dataset.frames, run.encoder, layout, for_generation=True,
                       tokens_per_frame=run.model.adapter.tokens_per_frame)
    return [run.encoder.decode(ids) for ids in decode_ids(run.model, collate, samples, cfg, run.encoder, desc)], None


def generate_predictions(run: LoadedRun, split: str = "test", condition: str = "brain",
                         cfg: GenerationConfig | None = None) -> Path:
    """Decode and score one split under one condition; writes predictions/<split>_<condition>.jsonl + .json."""
    cfg = cfg or run.config.generation
    check_choice("condition", condition, GENERATION_CONDITIONS)
    ids = run.split.ids(split)  # raises on an unknown split name
    if condition == "nuisance" and cfg.rerank != "encoding":
        raise ConfigError("The nuisance control decodes with the Bayesian decoder's length/position model: run "
                          f"`brainllm tune-decoder {run.path}` first (or --set rerank=encoding on a tuned run).")
    if condition == "retrieval" and not has_scorer(run):
        raise ConfigError(f"The retrieval baseline looks texts up with the encoding model: run `brainllm "
                          f"tune-decoder {run.path}` first.")
    if condition == "nuisance":
        cfg = nuisance_decoder(cfg)
    layout = input_layout(run, "brain" if condition in ("nuisance", "retrieval") else condition)
    name = "no_text" if (condition == "brain" and layout == "no_text") else condition
    paths = RunPaths(run.path)
    path, header_path = paths.predictions(split, name), paths.predictions_header(split, name)
    fingerprint = decoding_fingerprint(run, ids, cfg)
    if path.exists() and header_path.exists() and read_json(header_path).get("fingerprint") == fingerprint:
        log.info("%s: kept %s, decoded before from the same weights, decoder, samples and settings (delete it to "
                 "decode again)", name, path)
        return path
    base = run.encoder.encode_all(run.dataset, ids)
    # PerBrainLLM: all derangements in one pass, so batches fill and sort by length across them
    variants = ([(p, s) for p in range(cfg.permutations) for s in permute_frames(base, cfg.seed + p)]
                if condition == "permuted" else [(None, s) for s in base])
    samples = [s for _, s in variants]
    rows, start = [], time.perf_counter()
    bare = run.model.bare_backbone if condition == "no_brain" else contextlib.nullcontext
    if condition == "retrieval":
        losses, posterior = np.full(len(samples), np.nan), None
        texts = retrieve(run, load_scorer(run), samples,
                         rule=PoolMBR.of(cfg) if cfg.rerank == "encoding" and cfg.pick == "pool-mbr" else None)
    else:
        with bare():  # StdLLM: the pretrained backbone alone, also for a LoRA run
            losses = teacher_forced_losses(run, samples, layout, cfg.batch_size)
            texts, posterior = decode_scored(run, samples, layout, cfg, losses, f"{split}/{name}",
                                             "nuisance" if condition == "nuisance" else "encoding",
                                             RunPaths(run.path).candidates(split))
    for k, ((p, s), loss, text) in enumerate(zip(variants, losses, texts)):
        original = run.dataset.by_id(s.id)
        row = {"id": s.id, "stimulus": s.stimulus, "prompt": original.prompt, "reference": original.continuation,
               "prediction": text, "loss": None if np.isnan(loss) else float(loss)}
        if posterior is not None:
            row["posterior_loss"] = None if np.isnan(posterior[k]) else float(posterior[k])
        if p is not None:
            row.update(permutation=p, frames_from=s.frames_from)
        rows.append(row)
    write_jsonl(path, rows)
    header = {"split": split, "condition": name, "n_samples": len(base), "backbone": run.config.model.backbone,
              "decoding": asdict(cfg), "fingerprint": fingerprint, "seconds": round(time.perf_counter() - start, 1),
              "loss": "teacher-forced mean cross-entropy per continuation token incl. EOS (nats)"}
    if condition == "retrieval":
        header["loss"] = "none: no LM scores the reference under a looked-up text"
    if posterior is not None:
        header["posterior_loss"] = ("the same, under the Bayesian decoder's distribution p_LM(c|prompt,frames)"
                                    "·exp(λ log p(frames|prompt+c))/Z, Z by Monte Carlo over its nucleus samples")
    if condition == "permuted":
        header["permutations"] = cfg.permutations
    write_json(header_path, header)  # written last: a predictions file without it is decoded again
    log.info("%s: %d rows, mean loss %.4f -> %s", name, len(rows), float(np.mean(losses)), path)
    return path


def nuisance_decoder(cfg: GenerationConfig) -> GenerationConfig:
    """The length/position decoder's settings: the decoder's, with the control's own λ and retrieval seeds where
    `tune-decoder` chose them (`nuisance_encoding_weight`, `nuisance_seeded_sentences`)."""
    own = {"encoding_weight": cfg.nuisance_encoding_weight, "seeded_sentences": cfg.nuisance_seeded_sentences}
    return replace(cfg, **{k: v for k, v in own.items() if v is not None})


def decoding_fingerprint(run: LoadedRun, ids: Sequence[str], cfg: GenerationConfig) -> dict:
    """What a condition's predictions depend on: the trained weights (the adapter file's SHA-1: a retrained run,
    also a fully fine-tuned one, writes a new one) and the tuned decoder (decoder.json's), the samples, the
    decoding settings and the float type the Bayesian decoder samples in (`precision: auto` is per host).
    `generate_predictions` keeps a condition decoded under the same."""
    paths = RunPaths(run.path)
    return {"adapter_sha1": file_sha1(paths.adapter), "decoder_sha1": file_sha1(paths.decoder_file),
            "samples_sha1": hashlib.sha1("\n".join(ids).encode("utf-8")).hexdigest(), "decoding": asdict(cfg),
            "sampling_dtype": str(sampling_dtype(run, cfg)) if cfg.rerank == "encoding" else None}


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
