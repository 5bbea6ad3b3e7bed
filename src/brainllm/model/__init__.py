"""The BrainLLM model: brain adapters, sequence assembly, and the module that joins them to a frozen LLM."""

from .adapters import ADAPTERS, BrainAdapter, build_adapter
from .brainllm import BrainLLM
from .collate import Batch, Collator, EncodedSample, TextEncoder

__all__ = ["ADAPTERS", "BrainAdapter", "build_adapter", "BrainLLM", "Batch", "Collator", "EncodedSample",
           "TextEncoder"]
