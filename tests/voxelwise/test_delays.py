"""FIR delays (`make_delayed`): positive = past, negative = future, zeros at run edges, no cross-run leak."""

from __future__ import annotations

import numpy as np
import pytest

from brainllm.voxelwise.delays import check_runs, make_delayed, runs_from_lengths
from brainllm.errors import DatasetError


def test_two_runs_by_hand() -> None:
    x = np.array([[1, 10], [2, 20], [3, 30], [4, 40], [5, 50], [6, 60], [7, 70]], dtype=float)
    runs = [(0, 4), (4, 7)]
    got = make_delayed(x, (1, 2, -1), runs)
    expected = np.array(
        [
            # d=1       d=2       d=-1
            [0, 0, 0, 0, 2, 20],  # run 1 starts: no past
            [1, 10, 0, 0, 3, 30],
            [2, 20, 1, 10, 4, 40],
            [3, 30, 2, 20, 0, 0],  # run 1 ends: its future is not run 2
            [0, 0, 0, 0, 6, 60],  # run 2 starts: row 4 does not see rows 3 or 2
            [5, 50, 0, 0, 7, 70],
            [6, 60, 5, 50, 0, 0],
        ],
        dtype=float,
    )
    np.testing.assert_array_equal(got, expected)


def test_without_runs_matches_tang_concatenation() -> None:
    x = np.arange(1.0, 8.0)[:, None]
    got = make_delayed(x, (1, 0, -2))
    np.testing.assert_array_equal(got[:, 0], [0, 1, 2, 3, 4, 5, 6])
    np.testing.assert_array_equal(got[:, 1], x[:, 0])
    np.testing.assert_array_equal(got[:, 2], [3, 4, 5, 6, 7, 0, 0])


def test_nothing_crosses_a_boundary() -> None:
    rng = np.random.default_rng(0)
    lengths = [5, 3, 8]
    x = rng.standard_normal((sum(lengths), 4)) + 100.0  # never zero
    runs = runs_from_lengths(lengths)
    assert runs == [(0, 5), (5, 8), (8, 16)]
    delays = (-4, -1, 1, 2, 4)
    out = make_delayed(x, delays, runs)
    for start, stop in runs:
        separate = make_delayed(x[start:stop], delays)
        np.testing.assert_array_equal(out[start:stop], separate)
    # a delay longer than the 3-row run leaves it all zeros
    np.testing.assert_array_equal(out[5:8, 4 * 4 :], 0.0)


def test_run_validation() -> None:
    assert check_runs(None, 4) == [(0, 4)]
    with pytest.raises(DatasetError, match="tile"):
        make_delayed(np.zeros((6, 1)), (1,), [(0, 3), (4, 6)])
    with pytest.raises(DatasetError, match="cover"):
        make_delayed(np.zeros((6, 1)), (1,), [(0, 3), (3, 5)])
    with pytest.raises(DatasetError, match="empty"):
        make_delayed(np.zeros((6, 1)), (), None)
