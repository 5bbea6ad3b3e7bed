"""Tang et al. 2023 word-rate model and word timing helpers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from brainllm.decoding.wordrate import WordRateModel, binned_word_counts, lanczos_word_counts, word_times
from brainllm.errors import DatasetError
from brainllm.voxelwise.delays import make_delayed

PI2 = math.pi**2


def test_word_times_by_hand() -> None:
    # TR 2 s centred at 1, 3, 5 s: 2 words in [0, 2) -> 0.5, 1.5; none in TR 1; one in [4, 6) -> 5.0
    got = word_times(np.array([2, 0, 1]), np.array([1.0, 3.0, 5.0]), tr=2.0)
    np.testing.assert_allclose(got, [0.5, 1.5, 5.0])
    # three words in one TR: c - 1 + (k + 1/2) * 2/3
    np.testing.assert_allclose(word_times(np.array([3]), np.array([10.0]), 2.0), [9 + 1 / 3, 10.0, 11 - 1 / 3])
    assert word_times(np.zeros(4, dtype=int), np.arange(4.0), 2.0).shape == (0,)
    with pytest.raises(DatasetError, match="non-negative integers"):
        word_times(np.array([1, -1]), np.array([1.0, 3.0]), 2.0)


def test_binned_counts_invert_word_times() -> None:
    counts = np.array([2, 0, 1, 4, 3])
    centres = np.arange(5) * 2.0 + 1.0
    np.testing.assert_array_equal(binned_word_counts(word_times(counts, centres, 2.0), centres, 2.0), counts)
    # [c - tr/2, c + tr/2): a word on the boundary belongs to the later TR
    np.testing.assert_array_equal(binned_word_counts(np.array([2.0]), centres, 2.0), [0, 1, 0, 0, 0])


def test_lanczos_word_counts_by_hand() -> None:
    # one word at 3 s, TRs at 0, 2, 4, 6 s (cutoff 0.5 Hz): x = -1.5, -0.5, 0.5, 1.5
    got = lanczos_word_counts(np.array([3.0]), np.array([0.0, 2.0, 4.0, 6.0]))
    np.testing.assert_allclose(got, [-4 / (3 * PI2), 6 / PI2, 6 / PI2, -4 / (3 * PI2)])
    # a word exactly on a TR centre counts 1 there and 0 on the neighbouring centres
    np.testing.assert_allclose(lanczos_word_counts(np.array([4.0]), np.arange(0.0, 10.0, 2.0)), [0, 0, 1, 0, 0],
                               atol=1e-15)


def _planted(seed: int = 0):
    """Counts per TR drive the ROI responses 1-4 TRs later (a haemodynamic lag), plus noise."""
    rng = np.random.default_rng(seed)
    hrf = np.array([0.6, 1.0, 0.7, 0.3])  # response at t + 1 ... t + 4 to the words of TR t
    gains = rng.uniform(0.5, 1.5, 20)
    runs = []
    for n in (220, 200, 240):
        rate = 2.5 + 1.5 * np.sin(np.arange(n) / rng.uniform(3, 8)) + rng.normal(0, 0.5, n)
        counts = rng.poisson(np.clip(rate, 0, None)).astype(float)
        drive = make_delayed(counts, (1, 2, 3, 4)) @ hrf
        responses = drive[:, None] * gains + rng.normal(0, 0.7, (n, 20))
        runs.append((responses.astype(np.float32), counts))
    return runs


def test_word_rate_recovers_planted_counts(tmp_path) -> None:
    runs = _planted()
    model = WordRateModel(n_boots=6, chunk_len=20).fit([r for r, _ in runs[:2]], [c for _, c in runs[:2]])
    responses, counts = runs[2]
    r = model.score(responses, counts)
    assert r > 0.8, r
    assert model.mean_rate_ == pytest.approx(np.concatenate([c for _, c in runs[:2]]).mean())
    pred = model.predict_counts(responses)
    assert pred.dtype == np.int64 and pred.min() >= 0
    np.testing.assert_array_equal(pred, np.rint(np.maximum(0, model.predict(responses))))
    assert np.mean(np.abs(pred - counts)[:-4]) < 1.5  # the last 4 TRs lack their future volumes
    model.save(tmp_path / "wr")
    loaded = WordRateModel.load(tmp_path / "wr")
    np.testing.assert_array_equal(loaded.predict(responses), model.predict(responses))
    assert loaded.config == model.config and loaded.alpha_ == model.alpha_
    with pytest.raises(DatasetError, match="20 voxels"):
        model.predict(responses[:, :5])


def test_word_rate_rejects_bad_input() -> None:
    runs = _planted()
    with pytest.raises(DatasetError, match="TRs"):
        WordRateModel(n_boots=2, chunk_len=20).fit([runs[0][0]], [runs[0][1][:-3]])
    bad = runs[0][0].copy()
    bad[0, 0] = np.inf
    with pytest.raises(DatasetError, match="NaN or Inf"):
        WordRateModel(n_boots=2, chunk_len=20).fit([bad], [runs[0][1]])
