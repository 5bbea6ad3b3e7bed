"""Lanczos kernel, resampling matrix and downsampling (Tang et al. 2023 `interpdata.lanczosinterp2D`)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from brainllm.voxelwise.lanczos import lanczos_downsample, lanczos_kernel, lanczos_matrix
from brainllm.errors import DatasetError

PI2 = math.pi**2


def test_kernel_hand_values() -> None:
    x = np.array([0.0, 0.5, -0.5, 1.0, 1.5, 3.0, 3.5, -4.0])
    got = lanczos_kernel(x)
    # 3 sin(pi x) sin(pi x / 3) / (pi^2 x^2):
    #   x=0.5: 3 * 1 * 1/2 / (pi^2/4) = 6/pi^2;  x=1.5: 3 * (-1) * 1 / (2.25 pi^2) = -4/(3 pi^2)
    expected = np.array([1.0, 6 / PI2, 6 / PI2, 0.0, -4 / (3 * PI2), 0.0, 0.0, 0.0])
    np.testing.assert_allclose(got, expected, atol=1e-15)


def test_kernel_other_window() -> None:
    # window 2 at x = 0.5: 2 * 1 * sin(pi/4) / (pi^2/4) = 4 sqrt(2) / pi^2; zero beyond 2
    np.testing.assert_allclose(lanczos_kernel(np.array([0.5, 2.5]), window=2), [4 * math.sqrt(2) / PI2, 0.0])


def test_matrix_hand_values() -> None:
    words = np.array([0.0, 1.0, 2.5])
    trs = np.array([0.0, 2.0, 4.0])  # TR 2 s -> default cutoff 0.5 Hz
    got = lanczos_matrix(words, trs)
    s2 = math.sqrt(2) / 2

    def k(sin_a: float, sin_b: float, x: float) -> float:  # 3 sin(pi x) sin(pi x / 3) / (pi^2 x^2)
        return 3 * sin_a * sin_b / (PI2 * x * x)

    # x = 0.5 * (t - w)
    expected = np.array(
        [
            # t=0: x = 0, -0.5, -1.25 (sin(-1.25 pi) = +s2, sin(-1.25 pi / 3) = -sin(75 deg))
            [1.0, 6 / PI2, k(s2, -math.sin(math.radians(75)), -1.25)],
            # t=2: x = 1, 0.5, -0.25 (sin(-pi/4) = -s2, sin(-pi/12) = -sin(15 deg))
            [0.0, 6 / PI2, k(-s2, -math.sin(math.radians(15)), -0.25)],
            # t=4: x = 2, 1.5, 0.75 (sin(2 pi) = 0; sin(0.75 pi) = s2, sin(pi/4) = s2)
            [0.0, -4 / (3 * PI2), k(s2, s2, 0.75)],
        ]
    )
    np.testing.assert_allclose(got, expected, atol=1e-12)
    assert got.shape == (3, 3)


def test_matrix_default_cutoff_and_not_normalised() -> None:
    words = np.array([0.3, 1.1, 2.0, 5.5])
    trs = np.arange(0.0, 10.0, 2.0)
    np.testing.assert_array_equal(lanczos_matrix(words, trs), lanczos_matrix(words, trs, cutoff_hz=0.5))
    assert not np.allclose(lanczos_matrix(words, trs), lanczos_matrix(words, trs, cutoff_hz=1.0))
    # not normalised: a TR close to two words gets a weight sum above 1
    assert lanczos_matrix(words, trs)[0].sum() > 1.2


def test_matrix_without_words() -> None:
    assert lanczos_matrix(np.zeros(0), np.arange(5.0) * 2).shape == (5, 0)
    assert lanczos_downsample(np.zeros((0, 3)), np.zeros(0), np.arange(5.0) * 2).shape == (5, 3)


def test_downsample_constant_word_rate() -> None:
    # 4 words/s = 8 words per 2-s TR; interior TRs get 8 * (sum of kernel samples at x-spacing 1/8) = 7.976...
    words = np.arange(0.0, 200.0, 0.25)
    trs = np.arange(0.0, 200.0, 2.0)
    out = lanczos_downsample(np.ones((words.size, 2)), words, trs)
    interior = out[5:-5]
    np.testing.assert_allclose(interior, interior[0, 0], rtol=1e-10)  # constant away from the edges
    assert abs(interior[0, 0] - 8.0) < 0.05  # the kernel integrates to ~1 (0.997)
    assert out[0, 0] < 0.6 * interior[0, 0]  # the first TR only sees words after it
    np.testing.assert_allclose(lanczos_downsample(np.ones(words.size), words, trs), out[:, 0])


def test_errors() -> None:
    with pytest.raises(DatasetError, match="at least 2 new times"):
        lanczos_matrix(np.zeros(3), np.zeros(1))
    with pytest.raises(DatasetError, match="NaN"):
        lanczos_matrix(np.array([0.0, np.nan]), np.arange(3.0))
    with pytest.raises(DatasetError, match="one row per time"):
        lanczos_downsample(np.ones((3, 2)), np.zeros(4), np.arange(3.0))
