"""Numerical core of the Tang et al. 2023 semantic decoder (Nat. Neurosci.): Lanczos resampling, FIR delays,
bootstrapped per-target ridge, the encoding model with its noise model, and the word-rate model.

Written from the specification in `reference/datasets.md` (Part 1), not from the original code. Differences from
the original, on purpose: delays never cross a story boundary, bootstrap splits are seeded, and ties between
penalties go to the largest one.
"""

from .delays import check_runs, make_delayed, runs_from_lengths
from .encoding import EncodingConfig, EncodingModel
from .lanczos import lanczos_downsample, lanczos_kernel, lanczos_matrix
from .ridge import TANG_ALPHAS, BootstrapRidge, chunk_bootstrap_splits, fit_ridge_fixed, variance_explained
from .wordrate import WordRateConfig, WordRateModel, binned_word_counts, lanczos_word_counts, word_times

__all__ = [
    "TANG_ALPHAS",
    "BootstrapRidge",
    "EncodingConfig",
    "EncodingModel",
    "WordRateConfig",
    "WordRateModel",
    "binned_word_counts",
    "check_runs",
    "chunk_bootstrap_splits",
    "fit_ridge_fixed",
    "lanczos_downsample",
    "lanczos_kernel",
    "lanczos_matrix",
    "lanczos_word_counts",
    "make_delayed",
    "runs_from_lengths",
    "variance_explained",
    "word_times",
]
