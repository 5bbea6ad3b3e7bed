"""brainllm: reconstruct perceived language from fMRI with a brain adapter in front of a frozen causal LLM.

Implements BrainLLM (Ye et al., "Generative language reconstruction from brain recordings",
Communications Biology 2025) with leak-free splits, honest controls and offline backbones.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
