"""Experiment configuration: dataclasses with the paper's defaults, loaded from YAML, `--set key=value` overrides.

A config file has the sections `data`, `model`, `training`, `generation` and an `output` folder:

```yaml
data: {path: runs/demo/data, split: by_stimulus}
model: {backbone: smollm2-135m, adapter: {name: mlp}}
training: {epochs: 100, patience: 10}
output: runs/demo/run
```

Overrides use dotted keys with YAML values: `--set training.lr=3e-4 --set model.adapter.hidden=512`.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError


@dataclass
class DataConfig:
    """Which prepared dataset, and how to split it (the split is decided before anything is fitted)."""

    path: str = ""                      # prepared dataset folder
    split: str = "by_stimulus"          # by_stimulus (leak-free default), kfold_by_stimulus, by_sample (authors', leaky)
    valid_fraction: float = 0.1         # of stimuli; model selection uses this split, never test
    test_fraction: float = 0.2
    split_seed: int = 0
    n_folds: int = 5                    # kfold_by_stimulus only
    fold: int = 0                       # kfold_by_stimulus only
    max_train_samples: int | None = None  # learning curves: keep this many training samples (seeded)
    split_options: dict = field(default_factory=dict)  # extra splitter options, e.g. {test_stories: [a]} or {gap_trs: 5}


@dataclass
class ModelConfig:
    """Backbone, adapter and input layout."""

    backbone: str = "smollm2-135m"      # registered name, mapped name, HF folder or .gguf file
    dtype: str = "float32"              # backbone weights: float32, or bfloat16 (GPU / native-bf16 CPU); adapter stays float32
    adapter: dict = field(default_factory=lambda: {"name": "mlp"})  # name + that adapter's options
    condition: str = "brain"            # "brain": frames + text prompt; "no_text": frames only (the paper's without_text)
    finetune: str = "frozen"            # frozen (paper), lora, full
    lora: dict = field(default_factory=lambda: {"r": 8, "lora_alpha": 16, "lora_dropout": 0.05})
    max_prompt_tokens: int = 32         # the paper's prev_mask_len; we keep the LAST tokens
    max_continuation_tokens: int = 32   # the paper's max_generate_len
    standardize_frames: bool = True     # z-score adapter inputs with training-frame statistics
    inject_layer: int | None = None     # beyond the paper: write the adapter outputs as the state after this layer


@dataclass
class TrainingConfig:
    """The two-stage schedule of the paper: warm-up (MSE to mean prompt embedding), then generation loss."""

    warmup_epochs: int = 10
    warmup_lr: float = 1e-3
    warmup_target: str = "prompt"       # mean embedding of: prompt (paper), text (prompt + continuation), continuation
    lr: float = 1e-4
    weight_decay: float = 0.0
    batch_size: int = 8
    eval_batch_size: int = 16
    grad_clip: float = 10.0
    epochs: int = 100
    patience: int = 10                  # early stopping on validation loss (epochs without improvement)
    min_delta: float = 0.0              # an improvement must exceed this
    seed: int = 2021
    on_nan: str = "stop"                # "stop" (raise, naming the batch) or "skip" (drop that batch, warn)
    max_steps_per_epoch: int | None = None  # cap for quick runs
    cpu: bool = False                   # force CPU even when a GPU is present
    # beyond the paper (docs/calibration.md); `recipe: brain` sets them (RECIPES), `paper` leaves them off
    recipe: str = "paper"               # paper, or brain: a preset of the options below and the adapter's
    init: str = "warmup"                # warmup (paper: MSE by SGD), ridge (closed form, model.ridge_init)
    ridge_scale: float | str = 1.0      # factor on the ridge map's brain part, or "spread"
    aux_loss: str | None = None         # null (paper), margin or infonce (model.aux_loss)
    aux_weight: float = 1.0
    aux_margin: float = 0.1             # nats (margin)
    aux_temperature: float = 0.1        # (infonce)
    permute_frames: bool = False        # noise-trained control: training samples get other training samples'
                                        # frames (a fixed derangement across stimuli); valid/test keep their own


@dataclass
class GenerationConfig:
    """Decoding settings (paper: beam 5, repetition penalty 2.0, 4-32 new tokens)."""

    method: str = "beam"                # beam, greedy, sample
    num_beams: int = 5
    repetition_penalty: float = 2.0
    min_new_tokens: int = 4
    max_new_tokens: int = 32
    temperature: float = 1.0            # sample only
    top_p: float = 1.0                  # sample only
    batch_size: int = 32                # samples per batch (decoding and losses; sorted by length, so padding is small)
    decoder: str = "prefix"             # beam/greedy: prefix (the prefix's KV cache shared by its beams, finished
                                        # samples leave the batch; decoding.prefix_beam) or hf (HF generate, the
                                        # reference: same tokens, slower)
    permutations: int = 10              # PerBrainLLM repeats, each a different derangement
    seed: int = 0
    # beyond the paper: the Bayesian decoder (decoding.bayes; `brainllm tune-decoder RUN` fits and chooses it)
    rerank: str = "none"                # none (paper: the search result), or encoding: candidates re-scored by
                                        # log p_LM + encoding_weight * log p(frames | text)
    n_candidates: int = 16              # encoding: the search result + n_candidates - 1 nucleus samples
    candidate_top_p: float = 0.9        # encoding: nucleus of the sampled candidates
    encoding_weight: float = 1.0        # encoding: λ on the encoding model's log-likelihood


@dataclass
class ExperimentConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    generation: GenerationConfig = field(default_factory=GenerationConfig)
    output: str = "runs/run"

    def to_dict(self) -> dict:
        return asdict(self)


class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads `3e-4` (no dot) as a string; every config value like that is meant as a number."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
    list("-+0123456789."),
)


def parse_yaml(text: str):
    """Parse YAML text with numbers such as `3e-4` read as floats."""
    return yaml.load(text, Loader=_Loader)


#: Named presets of config keys, merged *under* what a config file or override sets (the user's keys win). `paper`
#: is the dataclass defaults. `brain` (beyond the paper) is what docs/calibration.md measured to make the adapter
#: carry brain-specific information within a laptop budget.
RECIPES: dict[str, dict] = {
    "paper": {},
    "brain": {
        "model": {"adapter": {"name": "mlp", "skip": True, "centre": True}},
        # the auxiliary losses stay off: neither helped at the demo budget (docs/calibration.md)
        "training": {"init": "ridge", "warmup_target": "text"},
    },
}


def recipe_description(training: dict) -> str:
    """One line for reports: which training recipe a run used (its `training` section as a dict), and for the
    `brain` recipe that it goes beyond the paper and with which pieces."""
    name = training.get("recipe", "paper")
    if name == "paper":
        return ("paper (Ye et al. 2025): warm-up of the adapter by MSE to the mean prompt embedding, then the "
                "generation loss alone")
    pieces = [f"init {training.get('init')}", f"warm-up/ridge target {training.get('warmup_target')}"]
    if training.get("aux_loss"):
        pieces.append(f"auxiliary {training['aux_loss']} loss, weight {training.get('aux_weight')}")
    return f"{name} (beyond the paper, docs/calibration.md): " + ", ".join(pieces)


def _with_recipe(raw: dict) -> dict:
    """`raw` with its `training.recipe` preset merged under it. A `model.adapter` that names another adapter than
    the preset's replaces the preset's adapter options altogether (they may not apply to it)."""
    name = (raw.get("training") or {}).get("recipe", "paper")
    if name not in RECIPES:
        raise ConfigError(f"training.recipe must be one of {sorted(RECIPES)}, got '{name}'.")
    merged = {section: dict(values) for section, values in RECIPES[name].items()}
    for section, values in raw.items():
        if section not in merged or not isinstance(values, dict):
            merged[section] = values
            continue
        user_adapter = values.get("adapter") if section == "model" else None
        preset_adapter = merged[section].get("adapter")
        merged[section] = {**merged[section], **values}
        if isinstance(user_adapter, dict) and isinstance(preset_adapter, dict) and \
                user_adapter.get("name", preset_adapter.get("name")) == preset_adapter.get("name"):
            merged[section]["adapter"] = {**preset_adapter, **user_adapter}
    return merged


SECTIONS = {"data": DataConfig, "model": ModelConfig, "training": TrainingConfig, "generation": GenerationConfig}


def _build(cls, values: dict, where: str):
    names = {f.name for f in fields(cls)}
    unknown = set(values) - names
    if unknown:
        raise ConfigError(f"Unknown key(s) {sorted(unknown)} in {where}; valid keys: {sorted(names)}.")
    return cls(**values)


def from_dict(raw: dict) -> ExperimentConfig:
    """Build a config from nested dicts, rejecting unknown keys (typos must not pass silently)."""
    raw = _with_recipe(dict(raw or {}))
    unknown = set(raw) - set(SECTIONS) - {"output"}
    if unknown:
        raise ConfigError(f"Unknown section(s) {sorted(unknown)}; valid: {sorted(SECTIONS)} and 'output'.")
    parts = {name: _build(cls, raw.get(name) or {}, name) for name, cls in SECTIONS.items()}
    _check_training(parts["training"])
    return ExperimentConfig(**parts, output=str(raw.get("output", "runs/run")))


def _check_training(t: TrainingConfig) -> None:
    if t.init not in ("warmup", "ridge"):
        raise ConfigError(f"training.init must be 'warmup' or 'ridge', got '{t.init}'.")
    if t.aux_weight < 0:
        raise ConfigError(f"training.aux_weight must be >= 0, got {t.aux_weight}.")


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply `key.sub=value` strings (values parsed as YAML) to a nested dict, in place; returns it."""
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"Override '{item}' must look like key=value, e.g. training.lr=3e-4.")
        key, value = item.split("=", 1)
        node = raw
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"Override '{item}': '{part}' is not a section.")
        node[parts[-1]] = parse_yaml(value)
    return raw


def load(path: str | os.PathLike | None, overrides: list[str] | None = None) -> ExperimentConfig:
    """Load a YAML config (or the defaults when `path` is None) and apply overrides."""
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.exists():
            raise ConfigError(f"Config file {path} does not exist; see configs/ for examples.")
        raw = parse_yaml(path.read_text()) or {}
        if not isinstance(raw, dict):
            raise ConfigError(f"{path} must hold a YAML mapping with sections {sorted(SECTIONS)}.")
    cfg = from_dict(apply_overrides(raw, overrides or []))
    if not cfg.data.path:
        raise ConfigError("data.path is empty: set it in the config or with --set data.path=DATASET_DIR.")
    return cfg


def replace_section(cfg: ExperimentConfig, section: str, **changes) -> ExperimentConfig:
    """A copy of `cfg` with some fields of one section changed."""
    return dataclasses.replace(cfg, **{section: dataclasses.replace(getattr(cfg, section), **changes)})
