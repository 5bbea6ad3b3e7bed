"""Exceptions raised by brainllm, and the two checks of allowed values every config uses. Each message says what was
expected, what was found and what to do."""

from __future__ import annotations

from typing import Any


class BrainLLMError(Exception):
    """Base class of every error brainllm raises on purpose."""


class DatasetError(BrainLLMError, ValueError):
    """A prepared dataset (or data about to become one) is malformed."""


class BackboneNotFoundError(BrainLLMError, FileNotFoundError):
    """A backbone name or path has no local files (nothing is ever downloaded)."""


class BackboneError(BrainLLMError, RuntimeError):
    """A backbone exists locally but cannot be loaded as asked (e.g. an unsupported dtype on this CPU)."""


class ConfigError(BrainLLMError, ValueError):
    """An experiment configuration or a `--set key=value` override is invalid."""


def check_choice(key: str, value: Any, allowed: tuple | list) -> None:
    """Raise a `ConfigError` naming `key`, `value` and `allowed` unless `value` is one of `allowed`."""
    if value not in allowed:
        raise ConfigError(f"{key} must be one of {list(allowed)}, got {value!r}.")


def check_at_least(key: str, value: Any, low: float) -> None:
    """Raise a `ConfigError` naming `key`, `value` and the bound unless `value` is a number >= `low`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < low:
        raise ConfigError(f"{key} must be a number >= {low}, got {value!r}.")
