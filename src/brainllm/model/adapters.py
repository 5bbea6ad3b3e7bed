"""Brain adapters: map fMRI frames `(B, T, D)` with a `(B, T)` validity mask to `(B, T, H)` LLM input embeddings.

One config dataclass (in `brainllm.adapter_options`, so that a config checks its adapter options when it is
loaded) + one small module per adapter, behind a registry (the peft pattern). Variable T per sample
is handled by masking (frames are right-padded in a batch); padded positions of the output are zero.

Beyond the paper (the `brain` recipe, `training.recipe`), every adapter takes two shared options:

* `tokens_per_frame` k: each frame becomes k soft tokens instead of one (the output is `(B, T * k, H)`, frame t's
  tokens at positions t*k .. t*k + k - 1), so a small backbone has room to read the content;
* `centre`: the output is a learned *shared* vector per token slot plus a *brain part* whose mean over samples is
  removed (the batch mean in training, a running mean of it at evaluation, as batch normalisation does), so the
  brain part cannot carry the soft prompt (the corpus style that every sample shares) and the shared vector carries
  nothing sample-specific;
* `readout_tokens` R: each frame gets R more slots after its k learnt ones, holding the input embeddings of the
  tokens a closed-form decoder reads from it (`model.token_readout`), so the output is `(B, T * (k + R), H)`.

All adapters can standardise their input with per-feature mean/std buffers fitted on the training frames only
(`fit_input_scaler`); they are saved with the adapter weights. The paper fed raw PCA scores (magnitudes 1e2-1e3
in the released files); standardising keeps the N(0, 0.01^2) initialisation meaningful on any dataset.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Callable

import numpy as np
import torch
from torch import nn

from ..adapter_options import (ACTIVATION_NAMES, ADAPTER_OPTIONS, AdapterConfig, FlattenMLPConfig, LinearConfig,
                               MLPConfig, PerFrameMLPConfig, RNNConfig, adapter_config)
from ..errors import ConfigError
from .token_readout import TokenReadout

__all__ = ["ACTIVATIONS", "ADAPTERS", "AdapterConfig", "BrainAdapter", "FlattenMLPConfig", "LinearConfig",
           "MLPConfig", "PerFrameMLPConfig", "RNNConfig", "adapter_config", "build_adapter", "register"]

ADAPTERS: dict[str, tuple[type, type]] = {}
ACTIVATIONS: dict[str, Callable[[], nn.Module]] = dict(zip(ACTIVATION_NAMES, (nn.ReLU, nn.ReLU6, nn.Tanh,
                                                                              nn.Sigmoid, nn.GELU)))


def register(name: str, config_cls: type[AdapterConfig]):
    """Class decorator: register an adapter module under `name` with its option dataclass, which must be the one
    `adapter_options.ADAPTER_OPTIONS` names (a new adapter's options are added there, so configs check them)."""
    if ADAPTER_OPTIONS.setdefault(name, config_cls) is not config_cls:
        raise ConfigError(f"adapter '{name}' is registered with options {config_cls.__name__}, but "
                          f"adapter_options.ADAPTER_OPTIONS gives {ADAPTER_OPTIONS[name].__name__}.")

    def wrap(cls):
        ADAPTERS[name] = (config_cls, cls)
        cls.name = name
        return cls
    return wrap


def _init_linear(module: nn.Module, std: float) -> None:
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, std)


def _mlp(d_in: int, d_out: int, cfg: MLPConfig) -> nn.Sequential:
    layers: list[nn.Module] = []
    width = d_in
    for i in range(cfg.layers):
        layers += [nn.Linear(width, cfg.hidden, bias=(i == 0)), ACTIVATIONS[cfg.activation](), nn.Dropout(cfg.dropout)]
        width = cfg.hidden
    layers.append(nn.Linear(width, d_out, bias=False))
    return nn.Sequential(*layers)


class BrainAdapter(nn.Module):
    """Base class. Subclasses implement `_map(x, mask) -> (B, T, H)` on standardised frames."""

    name = "base"

    def __init__(self, config: AdapterConfig, feature_dim: int, hidden_size: int):
        super().__init__()
        self.config, self.feature_dim, self.hidden_size = config, feature_dim, hidden_size
        self.register_buffer("input_mean", torch.zeros(feature_dim))
        self.register_buffer("input_std", torch.ones(feature_dim))
        if config.centre:
            # (k * H,): the shared soft prompt, and the running mean removed from the brain part at evaluation
            self.shared = nn.Parameter(torch.zeros(self.out_dim))
            self.register_buffer("brain_mean", torch.zeros(self.out_dim))
        self.readout = (TokenReadout(feature_dim, hidden_size, config.readout_tokens, config.readout_vocab)
                        if config.readout_tokens else None)

    @property
    def tokens_per_frame(self) -> int:
        """Slots per frame: the k learnt ones (`config.tokens_per_frame`) and the R readout ones."""
        return self.config.tokens_per_frame + self.config.readout_tokens

    @property
    def out_dim(self) -> int:
        """Outputs per frame of `_map` (the learnt slots): `config.tokens_per_frame * hidden_size`."""
        return self.config.tokens_per_frame * self.hidden_size

    def linear_path(self) -> nn.Linear | None:
        """The adapter's linear map from standardised frames to its `(k * H)` outputs, if it has one (`linear`, or
        `mlp` with `skip`): where `model.ridge_init` writes a closed-form solution."""
        return None

    def fit_input_scaler(self, frames: np.ndarray) -> None:
        """Set the standardisation from training frames `(n, D)` (never validation or test frames)."""
        frames = np.asarray(frames, dtype=np.float64)
        std = frames.std(0)
        self.input_mean.copy_(torch.as_tensor(frames.mean(0), dtype=torch.float32))
        self.input_std.copy_(torch.as_tensor(np.where(std > 1e-8, std, 1.0), dtype=torch.float32))

    def forward(self, frames: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """frames `(B, T, D)` float, mask `(B, T)` bool (True = real frame) -> `(B, T * k, H)` (k =
        `tokens_per_frame`: frame t's learnt slots, then its readout slots), zero where masked."""
        if frames.ndim != 3 or frames.shape[-1] != self.feature_dim:
            raise ValueError(f"expected frames of shape (B, T, {self.feature_dim}), got {tuple(frames.shape)}")
        x = (frames - self.input_mean) / self.input_std
        x = x * mask.unsqueeze(-1)
        out = self._map(x, mask)  # (B, T, k * H)
        if self.config.centre:
            out = self.shared + self._centred(out, mask)
        b, t = mask.shape
        out = out.reshape(b, t, self.config.tokens_per_frame, self.hidden_size)
        if self.readout is not None:
            out = torch.cat([out, self.readout(x)], dim=2)
        out = out * mask[:, :, None, None]
        return out.reshape(b, t * self.tokens_per_frame, self.hidden_size)

    def _centred(self, out: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """`out` `(B, T, k * H)` minus the mean over the real frames: the batch's own in training (and the running
        mean moves towards it), the running mean at evaluation."""
        if not self.training:
            return out - self.brain_mean
        m = mask.unsqueeze(-1).to(out.dtype)
        mean = (out * m).sum((0, 1)) / m.sum().clamp(min=1)
        with torch.no_grad():
            self.brain_mean.lerp_(mean.detach(), self.config.centre_momentum)
        return out - mean

    def _map(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def describe(self) -> dict:
        return {"name": self.name, **asdict(self.config)}


@register("linear", LinearConfig)
class LinearAdapter(BrainAdapter):
    def __init__(self, config: LinearConfig, feature_dim: int, hidden_size: int):
        super().__init__(config, feature_dim, hidden_size)
        self.proj = nn.Linear(feature_dim, self.out_dim)
        _init_linear(self, config.init_std)

    def linear_path(self) -> nn.Linear:
        return self.proj

    def _map(self, x, mask):
        return self.proj(x)


@register("mlp", MLPConfig)
class MLPAdapter(BrainAdapter):
    def __init__(self, config: MLPConfig, feature_dim: int, hidden_size: int):
        super().__init__(config, feature_dim, hidden_size)
        self.net = _mlp(feature_dim, self.out_dim, config)
        self.skip = nn.Linear(feature_dim, self.out_dim) if config.skip else None
        _init_linear(self, config.init_std)
        self.position = (nn.Parameter(torch.empty(config.max_frames, feature_dim).uniform_(-1, 1))
                         if config.position_embedding else None)

    def linear_path(self) -> nn.Linear | None:
        return self.skip

    def _map(self, x, mask):
        if self.position is not None:
            if x.shape[1] > self.position.shape[0]:
                raise ValueError(f"{x.shape[1]} frames exceed max_frames={self.position.shape[0]} of the position table")
            x = x + self.position[: x.shape[1]]
        return self.net(x) if self.skip is None else self.net(x) + self.skip(x)


@register("rnn", RNNConfig)
class RNNAdapter(BrainAdapter):
    def __init__(self, config: RNNConfig, feature_dim: int, hidden_size: int):
        super().__init__(config, feature_dim, hidden_size)
        cls = nn.RNN if config.cell == "rnn" else nn.GRU
        self.rnn = cls(feature_dim, config.hidden, batch_first=True)
        self.proj = nn.Linear(config.hidden, self.out_dim)
        _init_linear(self, config.init_std)

    def _map(self, x, mask):
        # frames are right-padded, so a causal recurrence never lets padding reach a real frame's output
        out, _ = self.rnn(x)
        return self.proj(out)


def _check_max_frames(x: torch.Tensor, max_frames: int, name: str) -> None:
    if x.shape[1] > max_frames:
        raise ValueError(f"{name} adapter takes at most max_frames={max_frames} frames, got {x.shape[1]}")


@register("flatten_mlp", FlattenMLPConfig)
class FlattenMLPAdapter(BrainAdapter):
    def __init__(self, config: FlattenMLPConfig, feature_dim: int, hidden_size: int):
        super().__init__(config, feature_dim, hidden_size)
        self.net = _mlp(config.max_frames * feature_dim, config.max_frames * self.out_dim, config)
        _init_linear(self, config.init_std)

    def _map(self, x, mask):
        b, t, d = x.shape
        _check_max_frames(x, self.config.max_frames, self.name)
        padded = torch.nn.functional.pad(x, (0, 0, 0, self.config.max_frames - t))
        out = self.net(padded.reshape(b, -1)).reshape(b, self.config.max_frames, self.out_dim)
        return out[:, :t]


@register("per_frame_mlp", PerFrameMLPConfig)
class PerFrameMLPAdapter(BrainAdapter):
    def __init__(self, config: PerFrameMLPConfig, feature_dim: int, hidden_size: int):
        super().__init__(config, feature_dim, hidden_size)
        self.nets = nn.ModuleList(_mlp(feature_dim, self.out_dim, config) for _ in range(config.max_frames))
        _init_linear(self, config.init_std)

    def _map(self, x, mask):
        _check_max_frames(x, self.config.max_frames, self.name)
        return torch.stack([self.nets[t](x[:, t]) for t in range(x.shape[1])], dim=1)


def build_adapter(spec: dict | AdapterConfig | str, feature_dim: int, hidden_size: int) -> BrainAdapter:
    """Build a registered adapter for D = `feature_dim` input features and H = `hidden_size` outputs."""
    name, config = adapter_config(spec)
    return ADAPTERS[name][1](config, feature_dim, hidden_size)
