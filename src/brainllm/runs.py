"""The run folder: where training writes and generation/evaluation read.

RUN/
  brainllm.json        backbone, adapter config, feature_dim, dataset, full experiment config, package version
  split.json           sample ids per split (decided before anything is fitted)
  adapter.safetensors  the selected checkpoint (best validation loss): adapter + boundary vectors (+ LoRA) only
  metrics.jsonl        one line per epoch
  checkpoint/          the last epoch's state for --resume: trainable.safetensors, optimizer.pt, trainer_state.json
  predictions/         <split>_<condition>.jsonl + .json headers, written by generation
  decoder.json         (optional) the Bayesian decoder chosen by `brainllm tune-decoder`: its generation settings
                       are the run's defaults; decoder/ holds its encoding models
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from . import __version__, backbones
from .config import ExperimentConfig, from_dict, replace_section
from .data.dataset import BrainTextDataset
from .data.splits import Split, check_no_leak
from .errors import BrainLLMError
from .io import atomic_path, read_json, write_json
from .model import BrainLLM, TextEncoder, build_adapter

log = logging.getLogger(__name__)

RUN_FILE = "brainllm.json"
ADAPTER_FILE = "adapter.safetensors"
BACKBONE_FILE = "backbone.safetensors"  # only for finetune == "full"
SPLIT_FILE = "split.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_DIR = "checkpoint"
DECODER_FILE = "decoder.json"  # the tuned Bayesian decoder's generation settings (decoding.bayes.tune)
DECODER_DIR = "decoder"        # its encoding models


def build_model(cfg: ExperimentConfig, feature_dim: int, device: str | torch.device = "cpu"
                ) -> tuple[BrainLLM, TextEncoder]:
    """Load the backbone offline and wrap it with a fresh adapter and boundary vectors."""
    backbone, tokenizer = backbones.load(cfg.model.backbone, dtype=cfg.model.dtype, device=device)
    hidden = backbone.get_input_embeddings().weight.shape[1]
    adapter = build_adapter(cfg.model.adapter, feature_dim, hidden)
    encoder = TextEncoder(tokenizer, cfg.model.max_prompt_tokens, cfg.model.max_continuation_tokens)
    model = BrainLLM(backbone, adapter, finetune=cfg.model.finetune, lora=cfg.model.lora,
                     inject_layer=cfg.model.inject_layer, bos_id=encoder.bos_id).to(device)
    return model, encoder


def save_trainable(model: BrainLLM, path: Path) -> None:
    """Atomically write the trainable weights (never the frozen backbone) as safetensors."""
    state = {k: v.float().cpu() if v.is_floating_point() else v.cpu() for k, v in model.trainable_state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp))


def load_trainable(model: BrainLLM, path: Path) -> None:
    state = load_file(str(path))
    device = model.boundary.device
    model.load_trainable_state_dict({k: v.to(device) for k, v in state.items()})


def write_run_file(run_dir: Path, cfg: ExperimentConfig, feature_dim: int, model: BrainLLM) -> None:
    write_json(run_dir / RUN_FILE, {
        "backbone": cfg.model.backbone, "adapter": model.adapter.describe(), "feature_dim": feature_dim,
        "dataset": str(cfg.data.path), "condition": cfg.model.condition, "finetune": cfg.model.finetune,
        "training": {**cfg.training.__dict__, "max_train_samples": cfg.data.max_train_samples},
        "config": cfg.to_dict(), "package_version": __version__,
    })


@dataclass
class LoadedRun:
    """A trained run, ready for generation: model in eval mode with the selected checkpoint loaded."""

    path: Path
    config: ExperimentConfig
    info: dict
    dataset: BrainTextDataset
    split: Split
    model: BrainLLM
    encoder: TextEncoder


def load_run(run_dir: str | os.PathLike, device: str | torch.device = "cpu", dataset_path: str | None = None
             ) -> LoadedRun:
    """Open a run folder: config, dataset (re-checked against split.json), model with the best checkpoint."""
    run_dir = Path(run_dir)
    for name in (RUN_FILE, SPLIT_FILE, ADAPTER_FILE):
        if not (run_dir / name).exists():
            raise BrainLLMError(f"{run_dir} has no {name}; is it a finished `brainllm train` run folder?")
    info = read_json(run_dir / RUN_FILE)
    cfg = from_dict(info["config"])
    if (run_dir / DECODER_FILE).exists():  # the tuned decoder is how this run decodes unless told otherwise
        cfg = replace_section(cfg, "generation", **read_json(run_dir / DECODER_FILE)["generation"])
    dataset = BrainTextDataset.load(dataset_path or cfg.data.path)
    if dataset.feature_dim != info["feature_dim"]:
        raise BrainLLMError(f"The dataset has {dataset.feature_dim} features but the run was trained on "
                            f"{info['feature_dim']}.")
    split = Split.from_json(read_json(run_dir / SPLIT_FILE))
    check_no_leak(dataset, split)
    model, encoder = build_model(cfg, dataset.feature_dim, device)
    load_trainable(model, run_dir / ADAPTER_FILE)
    if (run_dir / BACKBONE_FILE).exists():
        model.backbone.load_state_dict(load_file(str(run_dir / BACKBONE_FILE)), strict=False)
    model.eval()
    return LoadedRun(run_dir, cfg, info, dataset, split, model, encoder)
