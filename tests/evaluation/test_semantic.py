"""Semantic similarity: the greedy matching by hand, and the MiniLM variants on clear cases."""

import numpy as np
import pytest

from brainllm.evaluation import metrics as M
from brainllm.evaluation.semantic import MiniLMScorer, greedy_match_prf


def test_greedy_match_hand_computed():
    # pred tokens e1, e2; ref token e1: sim = [[1], [0]] -> P = (1 + 0)/2 = 0.5, R = 1, F1 = 2*0.5*1/1.5 = 2/3
    p, r, f = greedy_match_prf(np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([[1.0, 0.0]]))
    assert (p, r) == (0.5, 1.0) and f == pytest.approx(2 / 3)
    # pred e1; refs (0.6, 0.8), e2: sim = [0.6, 0] -> P = 0.6, R = (0.6 + 0)/2 = 0.3, F1 = 2*0.18/0.9 = 0.4
    p, r, f = greedy_match_prf(np.array([[1.0, 0.0]]), np.array([[0.6, 0.8], [0.0, 1.0]]))
    assert p == pytest.approx(0.6) and r == pytest.approx(0.3) and f == pytest.approx(0.4)
    assert greedy_match_prf(np.zeros((0, 2)), np.array([[1.0, 0.0]])) == (0.0, 0.0, 0.0)


@pytest.fixture(scope="module")
def scorer():
    return MiniLMScorer()


def test_minilm_variants_on_clear_cases(scorer):
    preds = ["the cat sat on the mat", "the cat sat on the mat", "", "stock markets fell sharply today"]
    refs = ["the cat sat on the mat", "a kitten rested on the rug", "the cat", "the cat sat on the mat"]
    cos = scorer.cosine(preds, refs)
    f1 = scorer.bertscore_f1(preds, refs)
    assert cos[0] == pytest.approx(1.0, abs=1e-5) and f1[0] == pytest.approx(1.0, abs=1e-5)
    assert cos[2] == 0.0 and f1[2] == 0.0  # empty prediction
    assert cos[1] > cos[3] and f1[1] > f1[3]  # paraphrase beats an unrelated sentence
    assert np.all(cos <= 1 + 1e-6) and np.all(f1 <= 1 + 1e-6)


def test_sentence_cosine_matches_the_shared_feature_extractor(scorer):
    from brainllm.data.features import sentence_embeddings

    texts = ["the river ran past old mills", "rain came down on small houses"]
    emb = sentence_embeddings(texts)
    assert scorer.cosine(texts[:1], texts[1:])[0] == pytest.approx(float(emb[0] @ emb[1]), abs=1e-5)


def test_semantic_metrics_in_score_texts(scorer):
    scores = M.score_texts(["The cat sat.<|im_end|>", "...", ""], ["the cat sat.", "the dog", "x"],
                           M.MetricConfig(), scorer)
    assert scores["semsim_minilm_cosine"][0] == pytest.approx(1.0, abs=1e-5)
    assert np.all(np.isfinite(scores["bertscore_minilm_f1"]))
    trunc = M.score_texts(["the cat sat down now"], ["the cat sat"], M.MetricConfig(truncate_to_reference=True),
                          scorer)
    assert trunc["semsim_minilm_cosine_truncref"][0] == pytest.approx(1.0, abs=1e-5)
