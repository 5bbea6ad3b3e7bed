"""The run folder: where training writes and generation/evaluation read; build and load a trained model.

`RunPaths` (from `brainllm.runpaths`, re-exported here) knows the folder's layout and every file name; everything
else asks it.
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
from .runpaths import CheckpointPaths, RunPaths

__all__ = ["CheckpointPaths", "LoadedRun", "RunPaths", "build_model", "load_run", "load_trainable", "read_config",
           "save_trainable", "write_run_file"]

log = logging.getLogger(__name__)


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
    write_json(RunPaths(run_dir).run_file, {
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


def read_config(run_dir: str | os.PathLike) -> ExperimentConfig:
    """The experiment config of a run folder (from brainllm.json; nothing else is loaded), with the generation
    settings of its tuned decoder (decoder.json, `brainllm tune-decoder`) as its defaults when it has one."""
    paths = RunPaths(run_dir)
    if not paths.run_file.exists():
        raise BrainLLMError(f"{run_dir} has no {paths.run_file.name}; is it a finished `brainllm train` run folder?")
    return _with_tuned_decoder(paths, from_dict(read_json(paths.run_file)["config"]))


def _with_tuned_decoder(paths: RunPaths, cfg: ExperimentConfig) -> ExperimentConfig:
    """`cfg` with the tuned decoder's generation settings, if the run has one (how it decodes unless told
    otherwise)."""
    if not paths.decoder_file.exists():
        return cfg
    return replace_section(cfg, "generation", **read_json(paths.decoder_file)["generation"])


def load_run(run_dir: str | os.PathLike, device: str | torch.device = "cpu", dataset_path: str | None = None
             ) -> LoadedRun:
    """Open a run folder: config, dataset (re-checked against split.json), model with the best checkpoint."""
    run_dir = Path(run_dir)
    paths = RunPaths(run_dir)
    for path in (paths.run_file, paths.split, paths.adapter):
        if not path.exists():
            raise BrainLLMError(f"{run_dir} has no {path.name}; is it a finished `brainllm train` run folder?")
    info = read_json(paths.run_file)
    cfg = _with_tuned_decoder(paths, from_dict(info["config"]))
    dataset = BrainTextDataset.load(dataset_path or cfg.data.path)
    if dataset.feature_dim != info["feature_dim"]:
        raise BrainLLMError(f"The dataset has {dataset.feature_dim} features but the run was trained on "
                            f"{info['feature_dim']}.")
    split = Split.from_json(read_json(paths.split))
    check_no_leak(dataset, split)
    model, encoder = build_model(cfg, dataset.feature_dim, device)
    load_trainable(model, paths.adapter)
    if paths.backbone.exists():
        model.backbone.load_state_dict(load_file(str(paths.backbone)), strict=False)
    model.eval()
    return LoadedRun(run_dir, cfg, info, dataset, split, model, encoder)
