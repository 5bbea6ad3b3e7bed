"""Experiment configuration: dataclasses with the paper's defaults, loaded from YAML, `--set key=value` overrides.

A config file has the sections `data`, `model`, `training`, `generation` and an `output` folder:

```yaml
data: {path: runs/demo/data, split: by_stimulus}
model: {backbone: smollm2-135m, adapter: {name: mlp}}
training: {epochs: 100, patience: 10}
output: runs/demo/run
```

Overrides use dotted keys with YAML values: `--set training.lr=3e-4 --set model.adapter.hidden=512`.

Each section checks itself when it is built (the peft pattern): an unknown key, a value outside its allowed set or
range, or an unknown adapter option (`model.adapter`, parsed by `adapter_options`) is a `ConfigError` naming the
key, the value and the allowed ones, raised before any dataset or backbone is loaded. The allowed values live here
(`MODEL_CONDITIONS`, `FINETUNE_MODES`, `WARMUP_TARGETS`, `METHODS`, `DECODERS`, ...); the modules that act on them
import them from here.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from .adapter_options import AdapterConfig, adapter_config
from .errors import ConfigError, check_at_least, check_choice

#: data.split: the splitters of `data.splits.make_split`
SPLIT_METHODS = ("by_stimulus", "by_sample", "kfold_by_stimulus", "by_story", "held_out_story", "within_story",
                 "recorded")
#: model.dtype: backbone weight types (`backbones.DTYPES`)
DTYPES = ("float32", "bfloat16", "float16")
#: model.condition: the input layout a run is trained with (frames + text prompt, or frames only)
MODEL_CONDITIONS = ("brain", "no_text")
#: model.finetune: what of the backbone trains
FINETUNE_MODES = ("frozen", "lora", "full")
#: training.warmup_target: the text whose mean embedding the warm-up (or ridge start) regresses onto
WARMUP_TARGETS = ("prompt", "text", "continuation")
#: training.init: how the adapter starts
INITS = ("warmup", "ridge")
#: training.on_nan: what a non-finite loss does
ON_NAN = ("stop", "skip")
#: training.aux_loss (or null): the auxiliary contrastive losses of `model.aux_loss`
AUX_LOSSES = ("margin", "infonce")
#: input conditions a prediction file is written under (`predictions/<split>_<condition>.jsonl`), which are also
#: the collator's input layouts
PREDICTION_CONDITIONS = ("brain", "permuted", "no_brain", "no_text", "nuisance", "retrieval")
#: `brainllm generate --condition`: the conditions decoded from a run (`no_text` runs write `brain` as `no_text`)
GENERATION_CONDITIONS = ("brain", "permuted", "no_brain", "nuisance", "retrieval")
#: generation.method
METHODS = ("beam", "greedy", "sample")
#: generation.decoder: prefix-cache search (`decoding.prefix_beam`) or HF generate
DECODERS = ("prefix", "hf")
#: generation.rerank: the search result (paper), or candidates re-scored by an encoding model (`decoding.bayes`)
RERANKS = ("none", "encoding")
#: generation.sampler: how the Bayesian decoder draws its candidates: from each prefix's KV cache with log p_LM
#: accumulated while drawing (`decoding.prefix_sample`), or HF generate + a teacher-forced pass (the reference)
SAMPLERS = ("prefix", "hf")
#: generation.pick: how the Bayesian decoder picks among its scored candidates (decoding.mbr; pool-mbr: its
#: hypotheses include the likeliest training sentences, decoding.pool_mbr)
PICKS = ("map", "mbr", "pool-mbr")
#: the float type of the Bayesian decoder's inference passes (model.precision): auto = bfloat16 where measured faster
PRECISIONS = ("auto", "float32", "bfloat16")


def _check_optional_at_least(key: str, value: Any, low: float) -> None:
    if value is not None:
        check_at_least(key, value, low)


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

    def __post_init__(self) -> None:
        check_choice("data.split", self.split, SPLIT_METHODS)
        check_at_least("data.valid_fraction", self.valid_fraction, 0)
        check_at_least("data.test_fraction", self.test_fraction, 0)
        _check_optional_at_least("data.max_train_samples", self.max_train_samples, 1)


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

    def __post_init__(self) -> None:
        check_choice("model.dtype", self.dtype, DTYPES)
        check_choice("model.condition", self.condition, MODEL_CONDITIONS)
        check_choice("model.finetune", self.finetune, FINETUNE_MODES)
        _check_optional_at_least("model.inject_layer", self.inject_layer, 1)
        check_at_least("model.max_prompt_tokens", self.max_prompt_tokens, 0)
        check_at_least("model.max_continuation_tokens", self.max_continuation_tokens, 1)
        adapter_config(self.adapter)  # a ConfigError names an unknown adapter, option or value

    @property
    def adapter_options(self) -> tuple[str, AdapterConfig]:
        """`adapter` parsed: (adapter name, its option dataclass)."""
        return adapter_config(self.adapter)


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
    # beyond the paper (docs/calibration.md); `recipe: ridge` sets them (RECIPES), `paper` and `brain` leave them off
    recipe: str = "paper"               # paper; brain (+ the Bayesian decoder); ridge (a preset of the options below)
    init: str = "warmup"                # warmup (paper: MSE by SGD), ridge (closed form, model.ridge_init)
    ridge_scale: float | str = 1.0      # factor on the ridge map's brain part, or "spread"
    aux_loss: str | None = None         # null (paper), margin or infonce (model.aux_loss)
    aux_weight: float = 1.0
    aux_margin: float = 0.1             # nats (margin)
    aux_temperature: float = 0.1        # (infonce)
    permute_frames: bool = False        # noise-trained control: training samples get other training samples'
                                        # frames (a fixed derangement across stimuli); valid/test keep their own

    def __post_init__(self) -> None:
        check_choice("training.warmup_target", self.warmup_target, WARMUP_TARGETS)
        check_choice("training.on_nan", self.on_nan, ON_NAN)
        check_choice("training.recipe", self.recipe, tuple(RECIPES))
        check_choice("training.init", self.init, INITS)
        if self.aux_loss is not None:
            check_choice("training.aux_loss", self.aux_loss, AUX_LOSSES)
        if self.ridge_scale != "spread":
            check_at_least("training.ridge_scale (a factor, or 'spread')", self.ridge_scale, 0)
        check_at_least("training.aux_weight", self.aux_weight, 0)
        for key in ("batch_size", "eval_batch_size"):
            check_at_least(f"training.{key}", getattr(self, key), 1)
        for key in ("warmup_epochs", "epochs", "patience"):
            check_at_least(f"training.{key}", getattr(self, key), 0)
        _check_optional_at_least("training.max_steps_per_epoch", self.max_steps_per_epoch, 1)


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
    sampler: str = "prefix"             # encoding: prefix (the prefix run once per sample, its draws seeded per
                                        # sample, log p_LM kept while drawing) or hf (HF generate + teacher-forced
                                        # log p_LM + each candidate's states from scratch: the reference, slower)
    precision: str = "auto"             # encoding, prefix sampler: the float type of the search, the draws and the
                                        # candidates' encoding states: float32, bfloat16, or auto (bfloat16 on a GPU
                                        # that has it and on a CPU whose bfloat16 matmul measures >= 2.5x float32's,
                                        # model.precision). In bfloat16 a rounding may change a draw with the batch
                                        # it is decoded in; float32 keeps a sample's draws independent of its batch
    encoding_weight: float = 1.0        # encoding: λ on the encoding model's log-likelihood
    pick: str = "map"                   # encoding: the candidate of the highest score (map), or of the highest
                                        # expected word overlap with the others under the posterior the score
                                        # defines (mbr, decoding.mbr), or of the highest expected similarity
                                        # to the candidates and the likeliest training sentences (pool-mbr,
                                        # decoding.pool_mbr; the retrieval baseline then looks up by that rule)
    pool_mbr_beta: float = 0.3          # pool-mbr: β tempering log p(frames | text) in its posterior
    pool_mbr_top: int = 50              # pool-mbr: how many of the likeliest training sentences are hypotheses
    mbr_meaning_weight: float = 0.5     # pool-mbr: the weight of MiniLM cosine (against word F1) in its similarity
    posterior_weight: float | None = None  # encoding: λ of the decoder's distribution in the posterior-loss test
                                        # (held-out likelihood; None: encoding_weight, the picks' λ)
    guided_beams: int = 0               # encoding: 0, or the width of an encoding-guided beam search (each beam
                                        # tries as many next tokens, scored log p_LM + encoding_weight * log
                                        # p(frames | text so far); decoding.guided) whose texts join the candidates
    seeded_sentences: int = 0           # encoding: 0, or how many training sentences, retrieved by the encoding
                                        # model from the frames, BrainLLM continues for more candidates (each cut
                                        # at its first sentence end; decoding.seeded)
    seeded_draws: int = 16              # encoding: nucleus draws of those retrieval-seeded candidates per sample
    nuisance_encoding_weight: float | None = None  # encoding: λ of the length/position decoder's picks (the
                                        # nuisance control; tune-decoder chooses it by that decoder's own validation
                                        # BLEU-1); None: encoding_weight
    nuisance_seeded_sentences: int | None = None  # encoding: the length/position decoder's own retrieval seeds
                                        # (chosen likewise); None: seeded_sentences

    def __post_init__(self) -> None:
        check_choice("generation.method", self.method, METHODS)
        check_choice("generation.decoder", self.decoder, DECODERS)
        check_choice("generation.rerank", self.rerank, RERANKS)
        check_choice("generation.sampler", self.sampler, SAMPLERS)
        check_choice("generation.pick", self.pick, PICKS)
        check_choice("generation.precision", self.precision, PRECISIONS)
        check_at_least("generation.n_candidates", self.n_candidates, 1)
        for key in ("num_beams", "max_new_tokens", "batch_size", "permutations"):
            check_at_least(f"generation.{key}", getattr(self, key), 1)
        check_at_least("generation.min_new_tokens", self.min_new_tokens, 0)
        check_at_least("generation.guided_beams", self.guided_beams, 0)
        check_at_least("generation.seeded_sentences", self.seeded_sentences, 0)
        check_at_least("generation.seeded_draws", self.seeded_draws, 1)
        check_at_least("generation.encoding_weight", self.encoding_weight, 0)
        check_at_least("generation.pool_mbr_beta", self.pool_mbr_beta, 0)
        check_at_least("generation.pool_mbr_top", self.pool_mbr_top, 1)
        if not 0.0 <= self.mbr_meaning_weight <= 1.0:
            raise ConfigError(f"generation.mbr_meaning_weight must lie in [0, 1], got {self.mbr_meaning_weight!r}.")
        _check_optional_at_least("generation.posterior_weight", self.posterior_weight, 0)
        _check_optional_at_least("generation.nuisance_encoding_weight", self.nuisance_encoding_weight, 0)
        _check_optional_at_least("generation.nuisance_seeded_sentences", self.nuisance_seeded_sentences, 0)

    @property
    def distribution_weight(self) -> float:
        """λ of the Bayesian decoder's distribution (`posterior_weight`, else the picks' `encoding_weight`)."""
        return self.encoding_weight if self.posterior_weight is None else self.posterior_weight


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
#: is the dataclass defaults. Beyond the paper: `brain` is the best recipe measured on the real Pereira development
#: data (docs/calibration.md, "Real data"): the paper's training, then the Bayesian decoder (decoding.bayes), which
#: `brainllm train` fits and tunes on training/validation data once training ends; `ridge` is issue 16's preset (a
#: closed-form ridge start and a centred adapter), measured on simulated data only.
RECIPES: dict[str, dict] = {
    "paper": {},
    "brain": {"generation": {"rerank": "encoding"}},
    "ridge": {
        "model": {"adapter": {"name": "mlp", "skip": True, "centre": True}},
        # the auxiliary losses stay off: neither helped at the demo budget (docs/calibration.md)
        "training": {"init": "ridge", "warmup_target": "text"},
    },
}


def recipe_description(training: dict) -> str:
    """One line for reports: which training recipe a run used (its `training` section as a dict), and for the
    `brain` recipe that it goes beyond the paper and with which pieces."""
    name = training.get("recipe", "paper")
    paper = ("warm-up of the adapter by MSE to the mean prompt embedding, then the generation loss alone")
    if name == "paper":
        return f"paper (Ye et al. 2025): {paper}"
    if name == "brain":
        return (f"brain (beyond the paper, docs/calibration.md): the paper's training ({paper}), decoded by the "
                "Bayesian decoder (BrainLLM proposes, an encoding model of the frames re-scores)")
    pieces = [f"init {training.get('init')}", f"warm-up/ridge target {training.get('warmup_target')}"]
    if training.get("aux_loss"):
        pieces.append(f"auxiliary {training['aux_loss']} loss, weight {training.get('aux_weight')}")
    return f"{name} (beyond the paper, docs/calibration.md): " + ", ".join(pieces)


def _with_recipe(raw: dict) -> dict:
    """`raw` with its `training.recipe` preset merged under it. A `model.adapter` that names another adapter than
    the preset's replaces the preset's adapter options altogether (they may not apply to it)."""
    name = (raw.get("training") or {}).get("recipe", "paper")
    check_choice("training.recipe", name, tuple(RECIPES))
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
    """`cls(**values)`, refusing keys that are no field of it (naming each as `where.key=value`)."""
    if not isinstance(values, dict):
        raise ConfigError(f"{where} must be a mapping of keys to values, got {values!r}.")
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        given = ", ".join(f"{where}.{k}={values[k]!r}" for k in unknown)
        raise ConfigError(f"Unknown key(s) {given}; valid keys of {where}: {sorted(names)}.")
    return cls(**values)


def from_dict(raw: dict) -> ExperimentConfig:
    """Build a config from nested dicts, rejecting unknown keys (typos must not pass silently)."""
    raw = _with_recipe(dict(raw or {}))
    unknown = set(raw) - set(SECTIONS) - {"output"}
    if unknown:
        raise ConfigError(f"Unknown section(s) {sorted(unknown)}; valid: {sorted(SECTIONS)} and 'output'.")
    parts = {name: _build(cls, raw.get(name) or {}, name) for name, cls in SECTIONS.items()}
    return ExperimentConfig(**parts, output=str(raw.get("output", "runs/run")))


def generation_config(base: GenerationConfig, overrides: list[str] | None = None, **changes) -> GenerationConfig:
    """`base` with `key=value` overrides (keys of the `generation` section, e.g. `max_new_tokens=16`) and then
    `changes` applied, through the same checks as a config file: an unknown key is a `ConfigError` naming it."""
    values = apply_overrides(asdict(base), overrides or [])
    values.update(changes)
    return _build(GenerationConfig, values, "generation")


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
