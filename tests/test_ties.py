"""Ties by tolerance: two losses that differ by float noise tie, even where they straddle a rounding boundary."""

import numpy as np
import pytest

from brainllm.diagnostics.ceiling import _compare
from brainllm.evaluation.stats import identification, pairwise_accuracy
from brainllm.identification import two_way
from brainllm.ties import TIE_TOLERANCE, ties, wins

# 1e-7 apart, on either side of the 5-decimal boundary 3.123455: rounding to 5 decimals gives 3.12345 and 3.12346
LOW, HIGH = 3.12345495, 3.12345505


def test_values_straddling_a_rounding_boundary_tie():
    assert np.round(LOW, 5) != np.round(HIGH, 5)  # what rounding made of them
    assert ties(LOW, HIGH) and wins(LOW, HIGH) == 0.5 and wins(HIGH, LOW) == 0.5
    assert wins(LOW, LOW + 2 * TIE_TOLERANCE) == 1.0 and wins(LOW + 2 * TIE_TOLERANCE, LOW) == 0.0
    assert wins(LOW + 2 * TIE_TOLERANCE, LOW, lower_is_better=False) == 1.0
    with pytest.raises(ValueError):
        wins(1.0, 2.0, tol=-1.0)


def test_pairwise_accuracy_counts_noise_as_a_tie():
    true = np.array([LOW, 1.0, 2.0])
    control = np.array([HIGH, 1.5, 1.5])
    np.testing.assert_allclose(pairwise_accuracy(true, control), [0.5, 1.0, 0.0])


def test_identification_of_an_all_tied_matrix_is_chance():
    rng = np.random.default_rng(0)
    # every entry is LOW or HIGH at random: all pairs are the same loss up to float noise
    matrix = np.where(rng.random((6, 6)) < 0.5, LOW, HIGH)
    for view in identification(matrix).values():
        np.testing.assert_allclose(view["two_way"], 0.5)
        np.testing.assert_allclose(view["rank"], 3.5)
    got = two_way(-matrix, ["a", "a", "b", "b", "c", "c"], range(6))
    assert got == {"across": 0.5, "within": 0.5}


def test_ceiling_comparison_ties_noise_the_rounding_version_did_not():
    matrix = np.full((4, 4), HIGH)
    np.fill_diagonal(matrix, LOW)  # own loss below the others only by noise that straddles 3.123455
    row = _compare(matrix, ["a", "b", "c", "d"], seed=0)
    assert row["identification"] == pytest.approx(0.5)
    assert row["delta"] == pytest.approx(-1e-7, abs=1e-9)
