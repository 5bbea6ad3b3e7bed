"""The Tang et al. 2023 semantic decoder (Nat. Neurosci.): the encoding model with its noise model (`encoding`),
the encoding-likelihood beam search (`decoder`), fitting and loading the whole baseline (`model`) and decoding a
held-out story (`decode`).

Its numerical core lives below it, shared with BrainLLM's full-story decoder: Lanczos resampling, FIR delays and the
bootstrapped per-target ridge in `brainllm.voxelwise`, the word-rate model, the word LM and the beam pieces in
`brainllm.decoding`.

Written from the specification in `reference/datasets.md` (Part 1), not from the original code. Differences from
the original, on purpose: delays never cross a story boundary, bootstrap splits are seeded, and ties between
penalties go to the largest one.
"""

from .encoding import EncodingConfig, EncodingModel

__all__ = ["EncodingConfig", "EncodingModel"]
