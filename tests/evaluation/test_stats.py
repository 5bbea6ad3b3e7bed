"""Statistics: hand-computed small cases, the permutation test's calibration, stimulus-level bootstrap."""

import numpy as np
import pytest

from brainllm.evaluation import stats as S


# --------------------------------------------------------------------------------------- tests and effect sizes

def test_sign_flip_exact_enumeration_hand_computed():
    # diff (1, 2, 3), one cluster each: 2^3 = 8 sign patterns, |sum| >= 6 only for +++ and --- -> p = 2/8
    assert S.sign_flip_test(np.array([1.0, 2.0, 3.0])) == pytest.approx(0.25)
    # clusters a = {1, 2}, b = {3}: sums (3, 3), 4 patterns, |sum| = 6 for ++ and -- -> p = 2/4
    assert S.sign_flip_test(np.array([1.0, 2.0, 3.0]), ["a", "a", "b"]) == pytest.approx(0.5)
    assert S.sign_flip_test(np.zeros(5)) == 1.0
    assert S.sign_flip_test(np.array([np.nan, np.nan])) == 1.0


def test_sign_flip_is_calibrated_under_the_null_and_detects_a_planted_effect():
    """200 null data sets (20 stimuli x 3 samples, stimulus effects shared by their samples): the fraction of
    p < 0.05 is near 0.05; the same test ignoring stimuli is anti-conservative; a planted effect gives small p."""
    rng = np.random.default_rng(0)
    clusters = np.repeat(np.arange(20), 3).astype(str)
    p_stim, p_samples = [], []
    for _ in range(200):
        diff = np.repeat(rng.normal(0, 1, 20), 3) + rng.normal(0, 0.3, 60)
        p = S.sign_flip_test(diff, clusters, n_resamples=999, seed=int(rng.integers(1 << 30)))
        p_stim.append(p)
        p_samples.append(S.sign_flip_test(diff, None, n_resamples=999, seed=1))
    p_stim = np.array(p_stim)
    assert 0.015 <= np.mean(p_stim < 0.05) <= 0.10
    assert 0.35 <= np.mean(p_stim < 0.5) <= 0.65  # roughly uniform, not just in the tail
    assert np.mean(np.array(p_samples) < 0.05) > 0.15  # treating samples as independent over-rejects
    planted = np.repeat(rng.normal(0, 1, 20), 3) + rng.normal(0, 0.3, 60) + 1.0
    assert S.sign_flip_test(planted, clusters, n_resamples=999) < 0.01


def test_wilcoxon_and_effect_sizes_hand_computed():
    # six positive differences: exact two-sided p = 2 / 2^6
    assert S.wilcoxon_p(np.arange(1.0, 7.0)) == pytest.approx(2 / 64)
    assert S.wilcoxon_p(np.zeros(4)) == 1.0
    # d = (1, 2, 3): mean 2, sd 1 -> d_z = 2
    assert S.cohens_dz(np.array([1.0, 2.0, 3.0])) == pytest.approx(2.0)
    # d = (1, -2, 3, 4): ranks of |d| 1, 2, 3, 4; positive 1 + 3 + 4 = 8, negative 2 -> (8 - 2) / 10 = 0.6
    assert S.rank_biserial(np.array([1.0, -2.0, 3.0, 4.0])) == pytest.approx(0.6)
    assert np.isnan(S.rank_biserial(np.zeros(3)))


def test_holm_hand_computed():
    # sorted 0.01 * 3 = 0.03; 0.03 * 2 = 0.06; 0.04 * 1 = 0.04 -> max(0.06, 0.04) = 0.06
    assert S.holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])


def test_compare_reports_difference_and_tests():
    rng = np.random.default_rng(1)
    clusters = np.repeat(np.arange(15), 2).astype(str)
    control = rng.normal(0, 1, 30)
    out = S.compare(control + 0.5, control, clusters, S.StimulusBootstrap(clusters, 500, 0), 2000, 0)
    assert out["diff"] == pytest.approx(0.5)
    assert out["ci_low"] == pytest.approx(0.5) and out["ci_high"] == pytest.approx(0.5)  # constant difference
    assert out["p_signflip_stimuli"] < 0.001 and out["p_wilcoxon_samples"] < 0.001
    assert out["rank_biserial"] == 1.0 and out["n"] == 30


# -------------------------------------------------------------------------------------------------- bootstrap

def test_bootstrap_resamples_whole_stimuli_by_construction():
    # stimulus a = three samples of 0, stimulus b = one sample of 1; drawing 2 stimuli with replacement gives
    # {a, a} -> 0, {b, b} -> 1, {a, b} -> (0 + 0 + 0 + 1) / 4 = 0.25; nothing else is possible
    boot = S.StimulusBootstrap(["a", "a", "a", "b"], n_boot=500, seed=0)
    values = set(np.round(boot.distribution(np.array([0.0, 0.0, 0.0, 1.0])), 10))
    assert values == {0.0, 0.25, 1.0}


def test_clustered_data_give_wider_cis_than_sample_resampling():
    rng = np.random.default_rng(2)
    clusters = np.repeat(np.arange(20), 10).astype(str)
    values = np.repeat(rng.normal(0, 1, 20), 10) + rng.normal(0, 0.1, 200)
    low_s, high_s = S.StimulusBootstrap(clusters, 2000, 0).ci(values)
    low_i, high_i = S.StimulusBootstrap(np.arange(200).astype(str), 2000, 0).ci(values)
    assert (high_s - low_s) > 2.5 * (high_i - low_i)
    assert low_s < values.mean() < high_s


def test_summarize_skips_nan():
    out = S.summarize(np.array([1.0, np.nan, 3.0]), S.StimulusBootstrap(["a", "b", "c"], 100, 0))
    assert out["mean"] == 2.0 and out["n"] == 2


# ----------------------------------------------------------------------------------- pairwise / identification

def test_pairwise_accuracy_hand_computed():
    true = np.array([1.0, 2.0, 3.0])
    control = np.array([[2.0, 0.5], [2.0, 3.0], [1.0, 4.0]])
    # row 0: 1 < 2 (1), 1 < 0.5 (0) -> 0.5; row 1: tie (0.5), 2 < 3 (1) -> 0.75; row 2: 0, 1 -> 0.5
    assert S.pairwise_accuracy(true, control) == pytest.approx([0.5, 0.75, 0.5])
    exclude = np.array([[False, True], [False, False], [True, True]])
    out = S.pairwise_accuracy(true, control, exclude)
    assert out[:2] == pytest.approx([1.0, 0.75]) and np.isnan(out[2])  # row 2 has no valid control left
    assert S.pairwise_accuracy(true, np.array([2.0, 2.0, 2.0])) == pytest.approx([1.0, 0.5, 0.0])


def test_identification_hand_computed():
    loss = np.array([[1.0, 2.0, 3.0], [2.0, 1.0, 0.5], [3.0, 3.0, 3.0]])
    out = S.identification(loss)
    f = out["frames_given_text"]
    # row 0: 1 beats 2 and 3 -> two_way 1, top1 1, rank 1; row 1: 1 beats 2, loses to 0.5 -> 0.5, 0, rank 2
    # row 2: ties with both -> two_way 0.5, top1 1/3, rank 1 + 0.5 * 2 = 2
    assert f["two_way"] == pytest.approx([1.0, 0.5, 0.5])
    assert f["top1"] == pytest.approx([1.0, 0.0, 1 / 3])
    assert f["rank"] == pytest.approx([1.0, 2.0, 2.0])
    # text_given_frames: centre rows on their means (2, 3.5/3, 3): row0 (-1, 0, 1), row1 (0.833, -0.167, -0.667),
    # row2 (0, 0, 0). Column 0: -1 vs 0.833, 0 -> best; column 1: -0.167 vs 0, 0 -> best;
    # column 2: 0 vs 1 (beats), -0.667 (loses) -> 0.5, rank 2
    t = out["text_given_frames"]
    assert t["two_way"] == pytest.approx([1.0, 1.0, 0.5])
    assert t["rank"] == pytest.approx([1.0, 1.0, 2.0])
    # with a per-text baseline instead of the row mean: column 2 compares 3-3 = 0 with 3-1 = 2 and 0.5-2 = -1.5
    t2 = S.identification(loss, baseline=np.array([1.0, 2.0, 3.0]))["text_given_frames"]
    assert t2["two_way"][2] == pytest.approx(0.5)
    assert S.identification_chance(4) == {"two_way": 0.5, "top1": 0.25, "rank": 2.5}
    with pytest.raises(ValueError):
        S.identification(np.ones((2, 3)))


# ---------------------------------------------------------------------------------------------- contamination

def test_longest_run_and_ngram_overlap():
    pred, ref = "a b c d e f g x".split(), "y a b c d e f g".split()
    assert S.longest_common_run(pred, ref) == (7, 0)
    # prediction 4-grams: abcd bcde cdef defg efgx -> 4 of 5 in the reference
    assert S.ngram_overlap(pred, ref, 4) == pytest.approx(0.8)
    assert np.isnan(S.ngram_overlap(["a"], ref, 2))
    out = S.contamination([pred, "q r s".split()], [ref, "q r z".split()], ["s1", "s2"], min_run=6)
    assert out["fraction_flagged"] == 0.5 and out["max_longest_run"] == 7
    assert out["flagged"] == [{"id": "s1", "run_length": 7, "run": "a b c d e f g"}]
    assert out["mean_longest_run"] == pytest.approx((7 + 2) / 2)
