"""Exceptions raised by brainllm. Each message says what was expected, what was found and what to do."""


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
