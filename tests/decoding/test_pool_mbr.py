"""MBR against a posterior that includes the training sentences (`decoding.pool_mbr`): the similarity and the
expected gain by hand; the frames' training sentences move the pick to their topic while the output stays a
candidate; a one-hot posterior returns its text, a uniform one the medoid; the look-up decides by the same rule;
`meaning_gain` chooses by BLEU-1 + MiniLM over the length/position decoder."""

import numpy as np
import pytest

from brainllm.config import GenerationConfig
from brainllm.decoding.candidates import Candidates
from brainllm.decoding.mbr import mbr_index, word_f1, words
from brainllm.decoding.pool_mbr import PoolMBR, PoolMBRPicker, lookup_index, top_hypotheses
from brainllm.errors import ConfigError
from brainllm.experiments.decoder_tuning import choose_decoder

#: hand-made unit "meaning" vectors: a bee topic, a going-home topic, a sitting topic
VECTORS = {"the bees make honey": [1, 0, 0], "a man went home": [0, 1, 0], "the man sat down": [0, 0, 1],
           "bees make honey in the hive": [1, 0, 0], "the queen bee lays eggs": [1, 0, 0],
           "she went home late": [0, 1, 0], "the dog sat down": [0, 0.6, 0.8]}
CANDIDATES = ["the bees make honey", "a man went home", "the man sat down"]
POOL = ["bees make honey in the hive", "the queen bee lays eggs", "she went home late", "the dog sat down"]


def fake_vectors(texts):
    return np.array([VECTORS[t] for t in texts], dtype=np.float64).reshape(len(texts), 3)


def candidates(encoding):
    return Candidates([[[i] for i in range(3)]], [list(CANDIDATES)], [np.zeros(3)], [np.asarray(encoding, float)])


def test_mbr_index_against_more_hypotheses_than_choices_by_hand():
    # two choices, three hypotheses (the choices first) of posterior (0.2, 0.2, 0.6):
    # gains 1*0.2 + 0*0.2 + 0.1*0.6 = 0.26 and 0*0.2 + 1*0.2 + 0.5*0.6 = 0.5
    sim = np.array([[1.0, 0.0, 0.1], [0.0, 1.0, 0.5]])
    assert mbr_index(sim, np.log([0.2, 0.2, 0.6])) == 1
    # a tie goes to the likelier choice, not to a likelier hypothesis beyond the choices
    assert mbr_index(np.array([[1.0, 0.0, 0.5], [0.0, 1.0, 0.5]]), np.log([0.1, 0.3, 0.6])) == 1


def test_the_training_sentences_move_the_pick_to_the_frames_topic():
    # the encoding model slightly prefers "a man went home" among the candidates (MAP) but finds the frames far
    # likelier under the two bee sentences of the pool: the pick is the bee candidate, never a pool text
    cands = candidates([-10.0, -9.0, -10.0])
    pool_scores = np.array([[-5.0, -5.0, -12.0, -12.0]])
    assert cands.pick(1.0) == [1]
    for meaning in (0.0, 0.5, 1.0):
        picker = PoolMBRPicker(cands, POOL, pool_scores, top=4, vectors=fake_vectors)
        assert picker.picks(PoolMBR(beta=1.0, top=4, meaning_weight=meaning)) == ["the bees make honey"]
    # the expected similarity by hand, words only (w = 0), β = 1: hypotheses = 3 candidates + 4 pool texts
    logw = np.array([-10.0, -9.0, -10.0, -5.0, -5.0, -12.0, -12.0])
    post = np.exp(logw - logw.max()) / np.exp(logw - logw.max()).sum()
    hyps = CANDIDATES + POOL
    gains = [sum(p * word_f1(words(c), words(h)) for p, h in zip(post, hyps)) for c in CANDIDATES]
    assert int(np.argmax(gains)) == 0 and gains[0] > gains[1] + 0.1
    # only the first candidate considered: it is the pick whatever the evidence
    assert PoolMBRPicker(cands, POOL, pool_scores, 4, fake_vectors).pick(PoolMBR(1.0, 4, 0.5), n_candidates=1) == [0]


def test_one_hot_posterior_returns_its_candidate_and_top_limits_the_hypotheses():
    # the frames overwhelmingly likelier under candidate 2 than under anything else: MBR returns it
    cands = candidates([-100.0, -100.0, 0.0])
    pool_scores = np.array([[-100.0, -100.0, -100.0, -100.0]])
    picker = PoolMBRPicker(cands, POOL, pool_scores, top=4, vectors=fake_vectors)
    assert picker.pick(PoolMBR(beta=1.0, top=4, meaning_weight=0.5)) == [2]
    # with the pool's likeliest sentence "she went home late" alone as evidence (top 1) and the candidates level,
    # meaning alone (w = 1) picks the going-home candidate
    level = candidates([-50.0, -50.0, -50.0])
    scores = np.array([[-9.0, -9.5, 0.0, -8.0]])
    assert PoolMBRPicker(level, POOL, scores, 4, fake_vectors).pick(PoolMBR(1.0, 1, 1.0)) == [1]
    with pytest.raises(ValueError, match="exceeds"):
        PoolMBRPicker(level, POOL, scores, 2, fake_vectors).pick(PoolMBR(1.0, 3, 1.0))
    with pytest.raises(ValueError, match="rows of pool scores"):
        PoolMBRPicker(level, POOL, np.zeros((2, 4)), 2, fake_vectors)
    with pytest.raises(ValueError, match="pool-mbr"):
        level.pick(1.0, rule="pool-mbr")  # Candidates alone has no evidence for it


def test_a_pool_text_that_repeats_a_candidate_is_one_hypothesis():
    pool = ["the bees make honey", "she went home late", "the dog sat down"]
    assert list(top_hypotheses(np.array([0.0, -1.0, -2.0]), 2, exclude=[" the bees make honey "], pool=pool)) == [1, 2]
    assert list(top_hypotheses(np.array([0.0, -1.0, -2.0]), 2)) == [0, 1]


def test_lookup_decides_by_the_same_rule():
    scores = np.array([-5.0, -5.5, -20.0, -6.0])
    # a posterior that is all but one-hot: the likeliest pool text (argmax look-up)
    assert lookup_index(POOL, scores * 100, PoolMBR(1.0, 4, 0.5), fake_vectors) == 0
    # uniform (β 0) over the top 4: the medoid under the blended similarity, by hand
    rule = PoolMBR(0.0, 4, 0.5)
    vec = fake_vectors(POOL)
    sim = 0.5 * vec @ vec.T + 0.5 * np.array([[word_f1(words(a), words(b)) for b in POOL] for a in POOL])
    assert lookup_index(POOL, scores, rule, fake_vectors) == int(np.argmax(sim.sum(1)))


def test_the_rule_is_a_generation_setting():
    cfg = GenerationConfig(pick="pool-mbr", pool_mbr_beta=0.5, pool_mbr_top=20, mbr_meaning_weight=0.7)
    assert PoolMBR.of(cfg) == PoolMBR(0.5, 20, 0.7)
    for bad in ({"mbr_meaning_weight": 1.5}, {"pool_mbr_top": 0}, {"pool_mbr_beta": -1.0}):
        with pytest.raises(ConfigError):
            GenerationConfig(**bad)


def test_meaning_gain_counts_minilm_where_content_gain_counts_bleu_alone():
    def row(pick, bleu, minilm, bleu_n, minilm_n, meaning=None):
        out = {"temperature": 1.0, "pick": pick, "n_candidates": 8, "encoding_weight": 1.0, "guided_beams": 0,
               "valid_bleu1": bleu, "valid_minilm": minilm, "valid_bleu1_nuisance": bleu_n,
               "valid_minilm_nuisance": minilm_n, "valid_bleu1_permuted": 0.1, "valid_minilm_permuted": 0.05}
        return out if meaning is None else out | {"mbr_meaning_weight": meaning}

    # MAP: BLEU-1 gain 0.04, meaning gain 0.04 + 0.00; pool-mbr: BLEU-1 gain 0.02, meaning gain 0.02 + 0.05
    table = [row("map", 0.16, 0.10, 0.12, 0.10), row("pool-mbr", 0.16, 0.15, 0.14, 0.10, 0.7)]
    assert choose_decoder(table, "content_gain", 0.2) == table[0]
    assert choose_decoder(table, "meaning_gain", 0.2) == table[1]
    # each row is compared with its own rule's control: the pool-mbr control's MiniLM rising as much leaves no gain
    table[1]["valid_minilm_nuisance"] = 0.16
    assert choose_decoder(table, "meaning_gain", 0.2) == table[0]
