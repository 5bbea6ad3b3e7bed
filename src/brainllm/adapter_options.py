"""The options of every brain adapter, as dataclasses that check themselves (the peft pattern).

This module is in the base layer, so `config.load` parses `model.adapter` into its dataclass at load time, before
any dataset or backbone is loaded; `model.adapters` builds the modules from these dataclasses and registers each
module under the same name (`model.adapters.register`). A typo in an adapter option is a `ConfigError` naming the
key, the value and the allowed ones.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import ClassVar

from .errors import ConfigError, check_choice

#: activation names an adapter MLP takes (`model.adapters.ACTIVATIONS` maps each to its module)
ACTIVATION_NAMES = ("relu", "relu6", "tanh", "sigmoid", "gelu")
#: recurrent cells of the `rnn` adapter
RNN_CELLS = ("rnn", "gru")


@dataclass
class AdapterConfig:
    """Fields every adapter shares.

    `init_std`: std of the normal init of Linear weights (paper: 0.01). `tokens_per_frame`: soft tokens per frame
    (paper: 1). `centre`: shared vector + mean-removed brain part (paper: False). `centre_momentum`: weight of each
    training batch in the running mean of the brain part. `readout_tokens`: token readout slots per frame (paper: 0),
    chosen among the `readout_vocab` most frequent training tokens.
    """

    init_std: float = 0.01
    tokens_per_frame: int = 1
    centre: bool = False
    centre_momentum: float = 0.05
    readout_tokens: int = 0
    readout_vocab: int = 2048
    #: option -> its allowed values (each subclass names its own)
    CHOICES: ClassVar[dict[str, tuple]] = {}

    def __post_init__(self) -> None:
        for key, allowed in self.CHOICES.items():
            check_choice(f"model.adapter.{key}", getattr(self, key), allowed)
        if isinstance(self.tokens_per_frame, bool) or not isinstance(self.tokens_per_frame, int) \
                or self.tokens_per_frame < 1:
            raise ConfigError(f"model.adapter.tokens_per_frame must be >= 1, got {self.tokens_per_frame!r}.")
        if self.readout_tokens < 0 or self.readout_vocab < self.readout_tokens:
            raise ConfigError(f"model.adapter needs 0 <= readout_tokens <= readout_vocab, got readout_tokens "
                              f"{self.readout_tokens} and readout_vocab {self.readout_vocab}.")


@dataclass
class LinearConfig(AdapterConfig):
    """One linear map per frame, D -> H."""


@dataclass
class MLPConfig(AdapterConfig):
    """The paper's default (`mlp`): D -> hidden -> ... -> H with ReLU and dropout after each hidden layer.

    `position_embedding` adds a learned vector per frame position (init U(-1, 1), up to `max_frames`) to the input
    frames, as the paper's `-pos True` (used for Huth/Narratives).
    """

    hidden: int = 1000
    layers: int = 2
    dropout: float = 0.5
    activation: str = "relu"
    position_embedding: bool = False
    max_frames: int = 16
    skip: bool = False  # beyond the paper: add a linear path D -> H (where a closed-form initialisation goes)
    CHOICES: ClassVar[dict[str, tuple]] = {"activation": ACTIVATION_NAMES}


@dataclass
class RNNConfig(AdapterConfig):
    """A recurrent layer over the frames (each output sees the frames up to it), then a linear map to H."""

    hidden: int = 1000
    cell: str = "rnn"  # "rnn" (tanh, the paper's) or "gru"
    CHOICES: ClassVar[dict[str, tuple]] = {"cell": RNN_CELLS}


@dataclass
class FlattenMLPConfig(MLPConfig):
    """The paper's `big_mlp`: all `max_frames` frames flattened (zero-padded) into one MLP -> max_frames x H."""

    max_frames: int = 4


@dataclass
class PerFrameMLPConfig(MLPConfig):
    """The paper's `multi_mlp`: an independent MLP for each frame position (up to `max_frames`)."""

    max_frames: int = 4


#: adapter name -> its option dataclass (`model.adapters.register` adds a module under the same name)
ADAPTER_OPTIONS: dict[str, type[AdapterConfig]] = {
    "linear": LinearConfig, "mlp": MLPConfig, "rnn": RNNConfig, "flatten_mlp": FlattenMLPConfig,
    "per_frame_mlp": PerFrameMLPConfig,
}


def adapter_config(spec: dict | AdapterConfig | str) -> tuple[str, AdapterConfig]:
    """Parse `{"name": "mlp", "hidden": 512, ...}` (or a bare name) into (name, config dataclass); a
    `ConfigError` names an unknown adapter, an unknown option or a value out of range."""
    if isinstance(spec, str):
        spec = {"name": spec}
    if isinstance(spec, AdapterConfig):
        names = [n for n, c in ADAPTER_OPTIONS.items() if type(spec) is c]
        return names[0], spec
    if not isinstance(spec, dict):
        raise ConfigError(f"model.adapter must be a mapping such as {{name: mlp, hidden: 512}}, got {spec!r}.")
    spec = dict(spec)
    name = spec.pop("name", "mlp")
    if name not in ADAPTER_OPTIONS:
        raise ConfigError(f"Unknown adapter model.adapter.name={name!r}; registered adapters: "
                          f"{sorted(ADAPTER_OPTIONS)}.")
    config_cls = ADAPTER_OPTIONS[name]
    allowed = {f.name for f in fields(config_cls)}
    unknown = sorted(set(spec) - allowed)
    if unknown:
        given = ", ".join(f"model.adapter.{k}={spec[k]!r}" for k in unknown)
        raise ConfigError(f"Adapter '{name}' has no option(s) {given}; it takes {sorted(allowed)}.")
    return name, config_cls(**spec)
