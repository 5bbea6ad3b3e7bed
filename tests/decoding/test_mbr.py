"""Minimum-Bayes-risk picks: the declared similarity by hand; a one-hot posterior returns its candidate, a uniform
one the medoid; the Bayesian decoder's candidates pick by either rule."""

import numpy as np
import pytest

from brainllm.decoding.candidates import Candidates
from brainllm.decoding.mbr import mbr_index, similarity_matrix, word_f1, words


def test_word_f1_by_hand():
    # "the cat sat" vs "The cat, the dog": shared {the, cat} = 2 words of 3 + 4 -> 2*2/7
    assert word_f1(words("the cat sat"), words("The cat, the dog")) == pytest.approx(4 / 7)
    assert word_f1(words(""), words("")) == 1.0 and word_f1(words("a"), words("")) == 0.0
    sim = similarity_matrix(["a b", "a c", "d"])
    np.testing.assert_allclose(sim, [[1, 0.5, 0], [0.5, 1, 0], [0, 0, 1]])


TEXTS = ["the dog ran home", "the dog ran", "a dog ran home fast", "cats sleep"]


def test_one_hot_posterior_returns_its_candidate_and_uniform_the_medoid():
    sim = similarity_matrix(TEXTS)
    for k in range(len(TEXTS)):
        log_w = np.full(len(TEXTS), -1e4)
        log_w[k] = 0.0
        assert mbr_index(sim, log_w) == k
    medoid = int(np.argmax(sim.sum(1)))
    assert medoid == 0 and mbr_index(sim, np.zeros(len(TEXTS))) == medoid
    # the MAP candidate is not always the MBR one: a likely outlier loses to the centre of the rest
    log_w = np.log([0.2, 0.2, 0.2, 0.4])
    assert int(np.argmax(log_w)) == 3 and mbr_index(sim, log_w) == 0


def test_candidates_pick_by_map_or_mbr_among_the_first_n():
    cands = Candidates([[[i] for i in range(4)]], [TEXTS], [np.log([0.2, 0.2, 0.2, 0.4])], [np.zeros(4)])
    assert cands.pick(1.0) == [3] and cands.pick(1.0, rule="mbr") == [0]
    assert cands.picks(1.0, 2, "mbr") == ["the dog ran home"]  # among the first two
    # the encoding term moves the posterior: a strong preference for candidate 1 makes it the MBR choice too
    cands.encoding = [np.array([0.0, 50.0, 0.0, 0.0])]
    assert cands.pick(1.0, rule="mbr") == [1]
