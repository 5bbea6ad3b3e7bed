"""The Tang beam-search decoder end to end on a planted problem with a tiny LM."""

from __future__ import annotations

import numpy as np
import pytest

from brainllm import backbones
from brainllm.baselines.tang.decoder import FeatureHistory, TangDecoderConfig, affected_trs, decode
from brainllm.baselines.tang.encoding import EncodingModel
from brainllm.voxelwise.lanczos import lanczos_downsample, lanczos_matrix
from brainllm.decoding.beam import extension_counts, null_sequences, select_pool
from brainllm.decoding.wordlm import WordLM

TR = 2.0


@pytest.fixture(scope="module")
def lm(tiny_gpt2_path) -> WordLM:
    model, tokenizer = backbones.load(str(tiny_gpt2_path))
    return WordLM(model, tokenizer, feature_layer=2, context_words=4)


def _run(lm: WordLM, n_words: int, rng: np.random.Generator):
    """Words the LM itself likes (greedy-ish samples), with times at ~1.5 words/s."""
    words = null_sequences(lm, n_words, 1, seed=int(rng.integers(1 << 30)))[0]
    times = 6.0 + np.cumsum(rng.uniform(0.5, 0.8, n_words))
    tr_times = np.arange(0, times[-1] + 12, TR) + TR / 2
    return words, times, tr_times


def test_extension_counts_follow_tang():
    # ranks 1..4 of 4 hypotheses with 5 extensions -> ceil(5 * r / 4) = 2, 3, 4, 5
    assert extension_counts(np.array([-4.0, -1.0, -3.0, -2.0]), 5).tolist() == [2, 5, 3, 4]


def test_select_pool_keeps_each_owners_best_then_the_global_best():
    scores = np.array([5.0, 4.0, 3.0, 9.0, 1.0])
    owners = np.array([0, 0, 0, 1, 1])
    chosen = select_pool(scores, owners, np.array([2, 1]), width=2)
    assert chosen.tolist() == [3, 0]


def test_affected_trs_cover_the_lanczos_support_plus_delays():
    words = np.array([1.0, 9.0])
    trs = np.arange(10) * 2.0 + 1.0
    lz = lanczos_matrix(words, trs)
    lo, hi = affected_trs(lz, 1, 1, (1, 2, 3, 4), 10)
    support = np.flatnonzero(lz[:, 1])
    assert (lo, hi) == (support.min() + 1, min(10, support.max() + 1 + 4))


@pytest.mark.slow
def test_decoder_beats_its_null_on_a_planted_encoding_model(lm):
    rng = np.random.default_rng(0)
    runs = [_run(lm, 40, rng) for _ in range(4)]
    w_true = rng.standard_normal((lm.hidden_size * 4, 60)) / np.sqrt(lm.hidden_size)

    def respond(words, times, tr_times, noise):
        feats = lanczos_downsample(lm.word_features(words), times, tr_times)
        z = (feats - feats.mean(0)) / (feats.std(0) + 1e-6)
        from brainllm.voxelwise.delays import make_delayed
        y = make_delayed(z, [1, 2, 3, 4]) @ w_true
        return (y + noise * rng.standard_normal(y.shape)).astype(np.float32), feats

    data = [respond(w, t, tr, 0.3) for w, t, tr in runs]
    model = EncodingModel(delays=(1, 2, 3, 4), n_boots=3, chunk_len=5, n_voxels=60).fit(
        [f for _, f in data[:3]], [y for y, _ in data[:3]],
        word_features=np.concatenate([lm.word_features(w) for w, _, _ in runs[:3]]))
    words, times, tr_times = runs[3]
    decoded = decode(lm, model, data[3][0], tr_times, times, TangDecoderConfig(width=4, extensions=3),
                     progress=False)
    assert len(decoded.words) == len(words)
    hits = np.mean([a == b for a, b in zip(decoded.words, words)])
    nulls = null_sequences(lm, len(words), 5, seed=1)
    null_hits = [np.mean([a == b for a, b in zip(n, words)]) for n in nulls]
    assert hits > max(null_hits), (hits, null_hits)


def test_feature_history_follows_parents_like_copying_every_history():
    rng = np.random.default_rng(3)
    history, copied = FeatureHistory(5), np.zeros((1, 0, 5), dtype=np.float32)
    for step in range(12):
        width = len(copied)
        new_width = int(rng.integers(1, 5))
        parents = rng.integers(0, width, new_width)
        feats = rng.standard_normal((new_width, 5)).astype(np.float32)
        history.append(parents, feats)
        copied = np.concatenate([copied[parents], feats[:, None]], axis=1)  # the old, quadratic bookkeeping
        for start in (0, step // 2, step, step + 1):
            rows = np.arange(new_width)[::-1]
            np.testing.assert_array_equal(history.window(start, rows), copied[rows, start:])
