"""Lanczos resampling of word-level signals onto the fMRI TR grid (Tang et al. 2023, Huth lab `interpdata`).

Each TR value is a kernel-weighted **sum** of the word values within `window` cycles of the cutoff frequency:
the kernel is not normalised (Tang left the renormalisation commented out), so a TR with many words gets a
larger vector than a TR with few. Times are in seconds; frequencies in Hz.
"""

from __future__ import annotations

import numpy as np

from ..errors import DatasetError

__all__ = ["lanczos_downsample", "lanczos_kernel", "lanczos_matrix"]


def lanczos_kernel(x: np.ndarray, window: int = 3) -> np.ndarray:
    """Lanczos kernel `window·sin(πx)·sin(πx/window) / (π²x²)`, 1 at x = 0 and 0 for |x| > window.

    Args:
        x: any shape, dimensionless (time difference × cutoff frequency).
        window: number of lobes on each side (Tang: 3).
    Returns:
        float64 array of the shape of `x`.
    """
    if window <= 0:
        raise DatasetError(f"lanczos_kernel: window must be a positive integer, got {window}; Tang et al. use 3.")
    x = np.asarray(x, dtype=np.float64)
    out = np.ones_like(x)
    nonzero = x != 0
    xn = x[nonzero]
    out[nonzero] = window * np.sin(np.pi * xn) * np.sin(np.pi * xn / window) / (np.pi**2 * xn**2)
    out[np.abs(x) > window] = 0.0
    return out


def _check_times(times: np.ndarray, name: str) -> np.ndarray:
    times = np.asarray(times, dtype=np.float64)
    if times.ndim != 1:
        raise DatasetError(f"{name} must be a 1-D array of times in seconds, got shape {times.shape}; flatten it.")
    if not np.all(np.isfinite(times)):
        raise DatasetError(f"{name} contains NaN or Inf; every time (s) must be finite. Drop or fix those entries.")
    return times


def lanczos_matrix(
    old_times: np.ndarray,
    new_times: np.ndarray,
    window: int = 3,
    cutoff_hz: float | None = None,
) -> np.ndarray:
    """The (T, W) resampling matrix `L[j, i] = lanczos_kernel(cutoff_hz · (new_times[j] − old_times[i]))`.

    Args:
        old_times: (W,) seconds, e.g. word mid-times. W may be 0.
        new_times: (T,) seconds, e.g. TR centre times.
        window: kernel lobes (Tang: 3, i.e. ±6 s at TR = 2 s).
        cutoff_hz: cutoff frequency in Hz; default `1 / mean(diff(new_times))` (0.5 Hz for TR = 2 s), which needs
            at least two new times.
    Returns:
        (T, W) float64, not normalised (as in Tang et al.).
    """
    old_times = _check_times(old_times, "old_times")
    new_times = _check_times(new_times, "new_times")
    if cutoff_hz is None:
        if new_times.size < 2:
            raise DatasetError(
                f"lanczos_matrix: the default cutoff 1/mean(diff(new_times)) needs at least 2 new times, got "
                f"{new_times.size}; pass cutoff_hz explicitly (e.g. 1/TR)."
            )
        step = float(np.mean(np.diff(new_times)))
        if step <= 0:
            raise DatasetError(
                f"lanczos_matrix: new_times must increase (mean step {step} s); sort them or pass cutoff_hz."
            )
        cutoff_hz = 1.0 / step
    if not np.isfinite(cutoff_hz) or cutoff_hz <= 0:
        raise DatasetError(f"lanczos_matrix: cutoff_hz must be a positive finite frequency in Hz, got {cutoff_hz}.")
    return lanczos_kernel(cutoff_hz * (new_times[:, None] - old_times[None, :]), window=window)


def lanczos_downsample(
    values: np.ndarray,
    old_times: np.ndarray,
    new_times: np.ndarray,
    window: int = 3,
) -> np.ndarray:
    """Resample word-level values onto new times: `lanczos_matrix(old_times, new_times, window) @ values`.

    Args:
        values: (W, F) or (W,) values at `old_times` (e.g. word embeddings or ones for a word rate).
        old_times: (W,) seconds.
        new_times: (T,) seconds.
        window: kernel lobes (Tang: 3).
    Returns:
        (T, F) or (T,) float64: kernel-weighted sums (not averages).
    """
    values = np.asarray(values, dtype=np.float64)
    old_times = np.asarray(old_times)
    if values.ndim not in (1, 2) or values.shape[0] != old_times.shape[0]:
        raise DatasetError(
            f"lanczos_downsample: values must be (W,) or (W, F) with W = len(old_times) = {old_times.shape[0]}, "
            f"got shape {values.shape}; pass one row per time."
        )
    if not np.all(np.isfinite(values)):
        raise DatasetError("lanczos_downsample: values contain NaN or Inf; fix the features before resampling.")
    return lanczos_matrix(old_times, new_times, window=window) @ values
