"""Every metric against values computed by hand (the arithmetic is in the comments)."""

import math

import numpy as np
import pytest

from brainllm.evaluation import metrics as M
from brainllm.evaluation import wordnet
from brainllm.evaluation.text import tokenize

LEX = M.MetricConfig(semantic=False)


def toks(text):
    return tokenize(text)


# ---------------------------------------------------------------------------------------------------------- BLEU

def test_bleu_per_sample_hand_computed():
    pred, ref = toks("the cat sat on the mat"), toks("the cat is on the mat")
    # 1-grams: the x2, cat, on, mat match (clipped) -> p1 = 5/6
    # 2-grams: "the cat", "on the", "the mat" of 5 -> p2 = 3/5
    # 3-grams: "on the mat" of 4 -> p3 = 1/4;  4-grams: none of 3 -> p4 = 0
    # |pred| = |ref| = 6 -> BP = exp(1 - 6/6) = 1
    assert M.bleu_per_sample(pred, ref, 1) == pytest.approx(5 / 6)
    assert M.bleu_per_sample(pred, ref, 2) == pytest.approx(math.sqrt(5 / 6 * 3 / 5))  # = sqrt(0.5) = 0.7071
    assert M.bleu_per_sample(pred, ref, 3) == pytest.approx(0.5)  # (5/6 * 3/5 * 1/4)^(1/3) = 0.125^(1/3)
    assert M.bleu_per_sample(pred, ref, 4) == 0.0  # no smoothing: p4 = 0 -> 0


def test_bleu_brevity_penalty_and_clipping():
    # short prediction: p1 = 2/2, p2 = 1/1, BP = exp(1 - 6/2) = exp(-2) = 0.1353
    assert M.bleu_per_sample(toks("the cat"), toks("the cat sat on the mat"), 1) == pytest.approx(math.exp(-2))
    assert M.bleu_per_sample(toks("the cat"), toks("the cat sat on the mat"), 2) == pytest.approx(math.exp(-2))
    # a 2-token prediction has no 3-gram -> BLEU-3 = 0
    assert M.bleu_per_sample(toks("the cat"), toks("the cat sat on the mat"), 3) == 0.0
    # clipping: "the" x4 against one "the" -> p1 = 1/4; |pred| 4 > |ref| 2 -> BP = 1
    assert M.bleu_per_sample(toks("the the the the"), toks("the cat"), 1) == pytest.approx(0.25)
    # long prediction: p1 = 2/5, BP = 1
    assert M.bleu_per_sample(toks("a b c d e"), toks("a b"), 1) == pytest.approx(0.4)


def test_bleu_corpus_sacrebleu_hand_computed():
    preds = ["the cat sat on the mat", "the cat"]
    refs = ["the cat is on the mat", "the cat sat on the mat"]
    out = M.corpus_scores(preds, refs, LEX)
    # corpus 1-grams: matches 5 + 2 = 7 of 8; c = 8, r = 12 -> BP = exp(1 - 12/8) = exp(-0.5) = 0.60653
    assert out["bleu1_corpus_sacrebleu"] == pytest.approx(7 / 8 * math.exp(-0.5), abs=1e-6)  # 0.53072
    # 2-grams: matches 3 + 1 = 4 of 5 + 1 = 6 -> BLEU-2 = BP * sqrt(7/8 * 4/6) = 0.46324
    assert out["bleu2_corpus_sacrebleu"] == pytest.approx(math.exp(-0.5) * math.sqrt(7 / 8 * 4 / 6), abs=1e-6)
    # corpus WER: sample 1 has 1 substitution (is -> sat), sample 2 has 4 deletions; references 6 + 6 words
    # -> (1 + 4) / 12
    assert out["wer_corpus_jiwer"] == pytest.approx(5 / 12)


# --------------------------------------------------------------------------------------------------------- ROUGE

def test_rouge_recall_and_f1_hand_computed():
    s = M.rouge_scores(toks("the cat sat"), toks("the cat is on the mat"))
    # ROUGE-1: overlap "the", "cat" = 2; R = 2/6, P = 2/3, F1 = 2PR/(P+R) = (4/9)/(1) = 4/9
    assert s["rouge1_recall"] == pytest.approx(1 / 3)
    assert s["rouge1_f1"] == pytest.approx(4 / 9)
    # ROUGE-2: "the cat" of 5 reference bigrams; R = 1/5, P = 1/2, F1 = 2*0.1/0.7 = 2/7
    assert s["rouge2_recall"] == pytest.approx(0.2)
    assert s["rouge2_f1"] == pytest.approx(2 / 7)
    # ROUGE-L: LCS "the cat" = 2 -> same as ROUGE-1 here
    assert s["rougeL_recall"] == pytest.approx(1 / 3) and s["rougeL_f1"] == pytest.approx(4 / 9)


def test_rouge_l_uses_order_and_rouge_n_counts_multiplicity():
    s = M.rouge_scores(toks("mat the on cat the"), toks("the cat on the mat"))
    # every reference word is matched as a multiset -> R1 = 5/5; LCS e.g. "the cat the" = 3 -> RL = 3/5
    assert s["rouge1_recall"] == pytest.approx(1.0)
    assert s["rougeL_recall"] == pytest.approx(0.6)
    # multiplicity (rouge-score): ref "the the cat", pred "the cat" -> min(1,2) + 1 = 2 of 3 (the paper's set-based
    # `rouge` 1.0.1 would give |{the, cat}| / |{the, cat}| = 1)
    assert M.rouge_scores(toks("the cat"), toks("the the cat"))["rouge1_recall"] == pytest.approx(2 / 3)


# ----------------------------------------------------------------------------------------------------------- WER

def test_wer_hand_computed_lower_is_better():
    # the=the, cat=cat, is->sat (S), on=on, the deleted (D), mat=mat -> (1 + 1) / 6
    assert M.wer_per_sample(toks("the cat sat on mat"), toks("the cat is on the mat")) == pytest.approx(2 / 6)
    # two insertions over a 2-word reference -> 2/2 = 1.0
    assert M.wer_per_sample(toks("a x b y"), toks("a b")) == pytest.approx(1.0)
    assert M.wer_per_sample([], toks("a b c")) == 1.0  # all deleted
    assert math.isnan(M.wer_per_sample(toks("a"), []))  # no reference: undefined, left out
    assert not M.higher_is_better("wer_per_sample") and not M.higher_is_better("wer_corpus_jiwer")


# -------------------------------------------------------------------------------------------------------- METEOR

def test_meteor_exact_and_argument_order():
    # ref "a cat sat on my mat" (6), hyp "on my mat a cat" (5): 5 exact matches, P = 1, R = 5/6
    # fmean = P R / (0.9 P + 0.1 R) = (5/6) / (0.9 + 0.08333) = 0.847458
    # aligned (hyp, ref) = (0,3)(1,4)(2,5)(3,0)(4,1) -> 2 chunks; frag = 2/5; penalty = 0.5 * 0.4^3 = 0.032
    # METEOR = (1 - 0.032) * 0.847458 = 0.820339 (swapping the arguments would give 0.949020)
    hyp, ref = toks("on my mat a cat"), toks("a cat sat on my mat")
    expected = (1 - 0.5 * 0.4 ** 3) * (5 / 6) / (0.9 + 0.1 * 5 / 6)
    assert M.meteor(hyp, ref, synonyms=False) == pytest.approx(expected)
    swapped = (1 - 0.5 * 0.4 ** 3) * (5 / 6) / (0.9 * 5 / 6 + 0.1)
    assert M.meteor(ref, hyp, synonyms=False) == pytest.approx(swapped)


def test_meteor_stem_matching_without_wordnet():
    # exact: the, running; Porter stems: dogs -> dog matches dog; was/were do not -> 3 of 4 both ways
    # fmean = 0.75; chunks (0,0)(1,1) | (3,3) = 2; frag = 2/3; penalty = 0.5 * (2/3)^3 = 0.148148
    # METEOR = 0.851852 * 0.75 = 0.638889
    score = M.meteor(toks("the dog was running"), toks("the dogs were running"), synonyms=False)
    assert score == pytest.approx((1 - 0.5 * (2 / 3) ** 3) * 0.75)
    # no synonyms: "large" does not match "big": 2 of 3, 2 chunks of 2 matches -> frag 1 -> (1 - 0.5) * 2/3
    assert M.meteor(toks("the large cat"), toks("the big cat"), synonyms=False) == pytest.approx(1 / 3)


def test_meteor_variant_name_says_when_wordnet_is_missing(monkeypatch):
    monkeypatch.setattr(wordnet, "load", lambda: None)
    assert M.meteor_variant(LEX) == "meteor_nltk_exact_stem"
    scores = M.score_texts(["the dogs"], ["the dog"], LEX)
    assert "meteor_nltk_exact_stem" in scores and "meteor_nltk_wordnet" not in scores
    assert M.meteor_variant(M.MetricConfig(meteor_synonyms=False)) == "meteor_nltk_exact_stem"


def test_meteor_with_wordnet_synonyms():
    if wordnet.load() is None:
        pytest.skip("WordNet is not installed (apt-get install wordnet-base wordnet-sense-index); "
                    "the exact+stem variant is tested above")
    assert M.meteor_variant(LEX) == "meteor_nltk_wordnet"
    # WordNet: "quick" has "fast" among its synonyms -> 3 of 3 matches, 1 chunk
    # frag = 1/3; penalty = 0.5 * (1/3)^3 = 0.018519 -> METEOR = 0.981481 (without synonyms: 1/3, see above)
    assert M.meteor(toks("the quick fox"), toks("the fast fox")) == pytest.approx(1 - 0.5 / 27)
    # nltk quirk, kept as is: its synonym stage sees the Porter-stemmed leftovers ("larg"), so large/big miss
    assert M.meteor(toks("the large cat"), toks("the big cat")) == pytest.approx(1 / 3)


# -------------------------------------------------------------------------------------- batches, names, edge cases

def test_score_texts_names_every_variant():
    scores = M.score_texts(["the cat sat on the mat"], ["the cat is on the mat"], LEX)
    names = list(scores)
    assert names[:4] == ["bleu1_per_sample", "bleu2_per_sample", "bleu3_per_sample", "bleu4_per_sample"]
    assert {"rouge1_recall", "rouge2_recall", "rougeL_recall", "rouge1_f1", "rouge2_f1", "rougeL_f1",
            "wer_per_sample"} <= set(names)
    assert any(n.startswith("meteor_nltk_") for n in names)
    assert scores["bleu1_per_sample"][0] == pytest.approx(5 / 6)
    for name in names:
        assert M.describe(name).description


def test_truncation_is_off_by_default_and_labelled():
    pred, ref = "the cat sat on the mat and then slept all day", "the cat sat on the mat"
    plain = M.score_texts([pred], [ref], LEX)
    trunc = M.score_texts([pred], [ref], M.MetricConfig(semantic=False, truncate_to_reference=True))
    assert all(name.endswith("_truncref") for name in trunc)
    # untruncated: 6 of 11 unigrams match -> 6/11; truncated to 6 tokens: 6/6 -> 1.0
    assert plain["bleu1_per_sample"][0] == pytest.approx(6 / 11)
    assert trunc["bleu1_per_sample_truncref"][0] == pytest.approx(1.0)
    assert "truncated" in M.describe("bleu1_per_sample_truncref").description
    corpus = M.corpus_scores([pred], [ref], M.MetricConfig(semantic=False, truncate_to_reference=True))
    assert corpus["bleu1_corpus_sacrebleu_truncref"] == pytest.approx(1.0)


def test_special_strings_are_removed_before_scoring():
    a = M.score_texts(["the cat sat<|im_end|><|im_end|>"], ["the cat sat</s>"], LEX)
    assert a["bleu4_per_sample"][0] == 0.0  # 3 tokens: no 4-gram
    assert a["bleu3_per_sample"][0] == pytest.approx(1.0)
    assert a["wer_per_sample"][0] == 0.0


@pytest.mark.parametrize("pred,ref", [("", "the cat"), ("   \n\t", "the cat"), ("...!?", "the cat"),
                                      ("the cat", "...!?"), ("Ünïcödé 日本語 — ok", "ünïcödé ok"),
                                      ("<|im_end|>", "the cat"), ("", ""), ("the cat", "")])
def test_degenerate_texts_score_without_crashing(pred, ref):
    scores = M.score_texts([pred], [ref], LEX)
    for name, values in scores.items():
        assert values.shape == (1,)
        if name.startswith("wer") and not tokenize(ref):
            assert np.isnan(values[0])
        else:
            assert np.isfinite(values[0]), name
    if not tokenize(pred):
        assert scores["bleu1_per_sample"][0] == 0.0 and scores["rouge1_f1"][0] == 0.0
    M.corpus_scores([pred], [ref], LEX)


def test_empty_batch_and_length_mismatch():
    assert all(v.shape == (0,) for v in M.score_texts([], [], LEX).values())
    with pytest.raises(ValueError, match="pair up"):
        M.score_texts(["a"], [], LEX)


def test_missing_metric_package_is_named(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "jiwer" else real(name, *a))
    with pytest.raises(M.MissingMetricPackageError, match="jiwer.*brainllm\\[metrics\\]"):
        M.score_texts(["a"], ["a"], LEX)
