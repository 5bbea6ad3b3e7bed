"""Windowed full-story evaluation: windows, segmentation, hand-computed window scores, window vs story z,
identification, JSON and the summary table."""

import json
import logging
import math

import numpy as np
import pytest

from brainllm.evaluation import story as ST
from brainllm.evaluation import story_stats
from brainllm.evaluation.rundata import EvaluationError

LEX = ST.StoryEvalConfig(metrics=("wer_score", "bleu1"))
VOCAB = [f"w{i}" for i in range(60)]


def tw(pairs):
    """TimedWords from (time, word) pairs."""
    return ST.TimedWords([w for _, w in pairs], np.array([t for t, _ in pairs], dtype=float))


def two_windows(first: str, second: str) -> ST.TimedWords:
    """Four words at 1-4 s (window [0, 10)) and four at 11-14 s (window [10, 20))."""
    return tw([(1.0 + i, w) for i, w in enumerate(first.split())]
              + [(11.0 + i, w) for i, w in enumerate(second.split())])


def random_words(rng, duration: float, rate: float = 2.0) -> ST.TimedWords:
    n = int(duration * rate)
    return ST.TimedWords(list(rng.choice(VOCAB, n)), np.sort(rng.uniform(0, duration, n)))


# ------------------------------------------------------------------------------------------------ data model

def test_windows_hand_example_and_errors():
    b = ST.windows(0, 30)  # centres 10, 11, ..., 20
    assert b.shape == (11, 2)
    np.testing.assert_allclose(b[:, 0], np.arange(0, 11))
    np.testing.assert_allclose(b[:, 1], np.arange(20, 31))
    np.testing.assert_allclose(ST.windows(5, 25.5), [[5, 25]])  # 20.5 s holds one window (centre 15)
    np.testing.assert_allclose(ST.windows(0, 20, window=10, step=10), [[0, 10], [10, 20]])
    with pytest.raises(EvaluationError, match="shorter than one 20 s window"):
        ST.windows(0, 19.5)
    with pytest.raises(EvaluationError, match="positive"):
        ST.windows(0, 30, step=0)


def test_segment_boundaries():
    words = tw([(0.0, "a"), (9.999, "b"), (10.0, "c"), (19.5, "d"), (20.0, "e")])
    assert ST.segment(words, np.array([[0.0, 10.0], [10.0, 20.0], [20.0, 30.0], [30.0, 40.0]])) == [
        ["a", "b"], ["c", "d"], ["e"], []]  # time == start included, time == end excluded


def test_timed_words_validation_and_json():
    words = tw([(0.5, "Hello"), (1.0, "world")])
    back = ST.TimedWords.from_json(json.loads(json.dumps(words.to_json())))
    assert back.words == ["Hello", "world"] and np.array_equal(back.times, words.times)
    with pytest.raises(EvaluationError, match="2 words but 1 times"):
        ST.TimedWords(["a", "b"], np.array([1.0]))
    with pytest.raises(EvaluationError, match="finite"):
        ST.TimedWords(["a"], np.array([np.nan]))
    with pytest.raises(EvaluationError, match="non-decreasing"):
        ST.TimedWords(["a", "b"], np.array([2.0, 1.0]))
    ST.TimedWords(["a", "b"], np.array([1.0, 1.0]))  # equal times are fine
    with pytest.raises(EvaluationError, match="Unknown story metrics"):
        ST.StoryEvalConfig(metrics=("bleu4",))


# ------------------------------------------------------------------------------------------------ window scores

def test_window_scores_hand_computed():
    bounds = np.array([[0.0, 10.0], [10.0, 20.0], [20.0, 30.0]])
    ref = tw([(1, "The"), (2, "cat"), (3, "sat"), (4, "on"), (5, "the"), (6, "mat"), (12, "a"), (13, "dog")])
    pred = tw([(1, "the"), (2, "cat"), (3, "sat"), (11, "a"), (12, "big"), (13, "dog"), (14, "ran"), (25, "x")])
    s = ST.score_windows(pred, ref, bounds, LEX)
    # window 1: ref "the cat sat on the mat" (6, lower-cased), pred "the cat sat": 3 deletions -> WER 3/6 -> 0.5;
    #   BLEU-1: 3/3 unigrams match, BP = exp(1 - 6/3) = exp(-1) -> 0.3679
    # window 2: ref "a dog", pred "a big dog ran": 2 insertions -> WER 2/2 = 1 -> score 0;
    #   BLEU-1: "a", "dog" match of 4 -> 0.5, |pred| 4 > |ref| 2 -> BP 1 -> 0.5
    # window 3: empty reference -> WER counts 1 -> score 0; BLEU-1: 0 matches -> 0
    np.testing.assert_allclose(s["wer_score"], [0.5, 0.0, 0.0])
    np.testing.assert_allclose(s["bleu1"], [math.exp(-1), 0.5, 0.0])
    # 1 - WER goes negative when the prediction inserts more words than the reference has
    neg = ST.score_windows(tw([(1, w) for w in "x y z".split()]), tw([(1, "a")]), bounds[:1], LEX)
    assert neg["wer_score"][0] == pytest.approx(1 - 3 / 1)


def test_meteor_uses_hypothesis_reference_order():
    from brainllm.evaluation import metrics as M

    cfg = ST.StoryEvalConfig(metrics=("meteor",), meteor_synonyms=False)
    assert ST.metric_variants(cfg) == {"meteor": "meteor_nltk_exact_stem"}
    ref = tw([(1, w) for w in "the cat sat on the mat today".split()])
    pred = tw([(1, w) for w in "the cat sat".split()])
    s = ST.score_windows(pred, ref, np.array([[0.0, 20.0]]), cfg)
    right = M.meteor("the cat sat".split(), "the cat sat on the mat today".split(), synonyms=False)
    swapped = M.meteor("the cat sat on the mat today".split(), "the cat sat".split(), synonyms=False)
    assert s["meteor"][0] == pytest.approx(right) and right != pytest.approx(swapped)


# ------------------------------------------------------------------------------------------------ statistics

def test_window_z_and_story_z_differ_and_match_hand_formulas():
    ref = two_windows("a b c d", "e f g h")
    # bleu1 = 1 - WER = matches/4 per window (same length, substitutions in place)
    nulls = [two_windows("a x x x", "e f g x"),  # (0.25, 0.75), S = 0.5
             two_windows("a b c x", "e f x x"),  # (0.75, 0.50), S = 0.625
             two_windows("a b x x", "e x x x")]  # (0.50, 0.25), S = 0.375
    cfg = ST.StoryEvalConfig(window=10, step=10, metrics=("wer_score", "bleu1"))
    ev = ST.evaluate_story(ref, ref, nulls, start=0, end=20, config=cfg)
    null_w = np.array([[0.25, 0.75], [0.75, 0.5], [0.5, 0.25]])
    for m in cfg.metrics:
        np.testing.assert_allclose(ev.null_window_scores[m], null_w)
        c = ev.conditions["prediction"]
        np.testing.assert_allclose(c.window_scores[m], [1.0, 1.0])
        # window: per-window null mean 0.5 and sd (ddof 1) 0.25 -> z = (1 - 0.5)/0.25 = 2 in both windows
        hand_wz = (1.0 - null_w.mean(0)) / null_w.std(0, ddof=1)
        np.testing.assert_allclose(c.window_z[m], [2.0, 2.0])
        np.testing.assert_allclose(c.window_z[m], hand_wz)
        assert c.mean_window_z[m] == pytest.approx(2.0)
        # story: S_n = (0.5, 0.625, 0.375), mean 0.5, sd 0.125 -> z = (1 - 0.5)/0.125 = 4
        s_n = null_w.mean(1)
        assert c.story_z[m] == pytest.approx((1.0 - s_n.mean()) / s_n.std(ddof=1)) == pytest.approx(4.0)
        assert c.story_z[m] != pytest.approx(c.mean_window_z[m])
        assert c.p_value[m] == pytest.approx(1 / 4)  # (1 + 0)/(1 + 3)
    # a prediction equal to null 2 (S = 0.625): two nulls have S_n >= 0.5 ... p = (1 + #{S_n >= S})/(1 + N)
    ev2 = ST.evaluate_story(nulls[0], ref, nulls, start=0, end=20, config=cfg)
    c = ev2.conditions["prediction"]
    assert c.story_score["bleu1"] == pytest.approx(0.5)
    assert c.p_value["bleu1"] == pytest.approx((1 + 2) / 4)  # S_n >= 0.5: nulls 1 and 2
    assert c.story_z["bleu1"] == pytest.approx(0.0)


def test_zero_null_sd_gives_nan_and_warns(caplog):
    ref = two_windows("a b c d", "e f g h")
    same = two_windows("a x x x", "e x x x")
    cfg = ST.StoryEvalConfig(window=10, step=10, metrics=("bleu1",))
    with caplog.at_level(logging.WARNING, logger="brainllm.evaluation.story"):
        ev = ST.evaluate_story(ref, ref, [same, same], start=0, end=20, config=cfg)
    c = ev.conditions["prediction"]
    assert np.all(np.isnan(c.window_z["bleu1"])) and math.isnan(c.story_z["bleu1"])
    assert math.isnan(c.mean_window_z["bleu1"])
    assert "standard deviation is 0" in caplog.text
    with pytest.raises(EvaluationError, match="at least 2 null"):
        ST.evaluate_story(ref, ref, [same], start=0, end=20, config=cfg)


def test_true_prediction_is_significant_and_a_null_like_one_is_not():
    rng = np.random.default_rng(0)
    ref = random_words(rng, 100.0)
    nulls = [random_words(rng, 100.0) for _ in range(10)]
    null_like = random_words(rng, 100.0)
    ev = ST.evaluate_story(ref, ref, nulls, config=LEX, controls={"random": null_like})
    assert (ev.start, ev.end) == (0.0, 100.0) and len(ev.bounds) == 81
    for m in LEX.metrics:
        good, rand = ev.conditions["prediction"], ev.conditions["random"]
        assert good.story_z[m] > 3 and good.mean_window_z[m] > 3
        assert good.p_value[m] == pytest.approx(1 / 11)  # no null reaches it: the smallest p with 10 nulls
        assert abs(rand.story_z[m]) < 2.5 and abs(rand.mean_window_z[m]) < 1.0
        s_n = ev.null_story_scores[m]
        assert rand.p_value[m] == pytest.approx((1 + np.sum(s_n >= rand.story_score[m])) / 11)


def test_default_segment_rounds_outward():
    ref = tw([(0.4, "a"), (10.0, "b"), (29.6, "c")])
    ev = ST.evaluate_story(ref, ref, [], config=ST.StoryEvalConfig(metrics=("bleu1",), null_z=False))
    assert (ev.start, ev.end) == (0.0, 30.0) and len(ev.bounds) == 11 and ev.n_words == 3
    assert math.isnan(ev.conditions["prediction"].story_z["bleu1"]) and ev.n_nulls == 0


# ------------------------------------------------------------------------------------------------ identification

def test_percentile_ranks_hand_example():
    sim = np.array([[0.9, 0.1, 0.9], [0.5, 0.2, 0.1], [0.3, 0.3, 0.2]])
    # row 0: 0.1 below, 0.9 ties -> (1 + 0.5)/2; row 1: 0.1 below, 0.5 above -> 1/2; row 2: both above -> 0
    np.testing.assert_allclose(ST.percentile_ranks(sim), [0.75, 0.5, 0.0])


def test_identification_perfect_and_shuffled():
    rng = np.random.default_rng(1)
    ref = random_words(rng, 120.0)
    # shuffled words at independent random times: neither content nor word rate tells the windows apart (keeping
    # the reference's times would let the word count per window identify them: BLEU's brevity penalty)
    shuffled = ST.TimedWords(list(rng.permutation(ref.words)), np.sort(rng.uniform(0, 120.0, len(ref))))
    ev = ST.evaluate_story(ref, ref, [], config=ST.StoryEvalConfig(metrics=("bleu1",), null_z=False),
                           controls={"shuffled": shuffled})
    perfect, shuf = ev.conditions["prediction"].identification, ev.conditions["shuffled"].identification
    assert perfect.metric == "bleu1" and perfect.similarity.shape == (101, 101)
    # the matrix agrees with the per-window scores on its diagonal
    np.testing.assert_allclose(np.diag(shuf.similarity), ev.conditions["shuffled"].window_scores["bleu1"])
    assert perfect.mean_percentile_rank > 0.97
    assert abs(shuf.mean_percentile_rank - 0.5) < 0.12


def test_identification_matrices_equal_pairwise_metrics(monkeypatch):
    from brainllm.evaluation import metrics as M
    from brainllm.evaluation.semantic import greedy_match_prf

    rng = np.random.default_rng(3)
    toks = [list(rng.choice(VOCAB[:8], n)) for n in (5, 0, 3, 7, 4)]  # repeats exercise clipping; one empty
    refs = [list(rng.choice(VOCAB[:8], n)) for n in (4, 6, 0, 2, 5)]
    ident = ST.identification(toks, refs, "bleu1")
    hand = np.array([[M.bleu_per_sample(p, r, 1) for r in refs] for p in toks])
    np.testing.assert_allclose(ident.similarity, hand, atol=1e-12)

    def unit(n):
        v = rng.standard_normal((n, 16)).astype(np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    pv, rv = [unit(n) for n in (3, 0, 5, 2)], [unit(n) for n in (4, 1, 0, 6)]
    monkeypatch.setattr(story_stats, "_PAIR_BLOCK", 40)  # several reference blocks
    sim = ST.identification([], [], "semsim", pv, rv).similarity
    hand = np.array([[greedy_match_prf(p, r)[1] for r in rv] for p in pv])
    np.testing.assert_allclose(sim, hand, atol=1e-6)


# ------------------------------------------------------------------------------------------------ output

def test_json_round_trip_and_summary_table(tmp_path):
    rng = np.random.default_rng(2)
    ref = random_words(rng, 40.0)
    nulls = [random_words(rng, 40.0) for _ in range(3)]
    controls = {"permuted": random_words(rng, 40.0), "no_brain": random_words(rng, 40.0)}
    same = two_windows("a b c d", "e f g h")
    ev = ST.evaluate_story(ref, ref, nulls, config=LEX, controls=controls)
    obj = ev.to_json(matrices=True)
    text = json.dumps(obj, allow_nan=False)  # raises on NaN/inf
    back = ST.StoryEvaluation.from_json(json.loads(text))
    assert list(back.conditions) == ["prediction", "permuted", "no_brain"]
    for name, c in ev.conditions.items():
        for m in LEX.metrics:
            assert back.conditions[name].story_z[m] == pytest.approx(c.story_z[m])
            np.testing.assert_allclose(back.conditions[name].window_scores[m], c.window_scores[m])
    np.testing.assert_allclose(back.null_window_scores["bleu1"], ev.null_window_scores["bleu1"])
    assert obj["variants"] == {"wer_score": "one_minus_wer_jiwer", "bleu1": "bleu1_per_window"}

    # a NaN z (identical nulls -> sd 0) must become null in JSON
    nan_ev = ST.evaluate_story(same, same, [two_windows("a x x x", "e x x x")] * 2, start=0, end=20,
                               config=ST.StoryEvalConfig(window=10, step=10, metrics=("bleu1",)))
    nan_obj = nan_ev.to_json()
    json.dumps(nan_obj, allow_nan=False)
    assert nan_obj["conditions"]["prediction"]["story_z"]["bleu1"] is None
    assert nan_obj["conditions"]["prediction"]["window_z"]["bleu1"] == [None, None]
    assert "similarity" not in nan_obj["conditions"]["prediction"]["identification"]

    table = ev.summary_table()
    for name in ("prediction", "permuted", "no_brain", "null (mean of 3)", "wer_score z", "bleu1 p",
                 "one_minus_wer_jiwer", "bleu1_per_window"):
        assert name in table
    path = tmp_path / "story" / "eval.json"
    ST.write_story_evaluation(ev, path)
    assert json.loads(path.read_text())["conditions"]["prediction"]["story_score"]["bleu1"] == pytest.approx(
        ev.conditions["prediction"].story_score["bleu1"])


# ------------------------------------------------------------------------------------------------ semantic

@pytest.mark.slow  # loads MiniLM (a few seconds on a busy CPU); 12 short texts
def test_semsim_recall_and_identification_matrix():
    from brainllm.evaluation.semantic import MiniLMScorer

    ref = tw([(1, "the"), (4, "river"), (8, "ran"), (12, "past"), (16, "old"), (21, "mills"), (26, "at"),
              (29, "night")])
    pred_words = tw([(1, "stock"), (6, "markets"), (11, "fell"), (22, "sharply")])
    cfg = ST.StoryEvalConfig(metrics=("semsim",), step=5, null_z=False)  # windows [0, 20), [5, 25), [10, 30)
    scorer = MiniLMScorer()
    ev = ST.evaluate_story(ref, ref, [], start=0, end=30, config=cfg, scorer=scorer,
                           controls={"unrelated": pred_words})
    good, bad = ev.conditions["prediction"], ev.conditions["unrelated"]
    np.testing.assert_allclose(good.window_scores["semsim"], 1.0, atol=1e-5)  # identical text: recall 1
    assert np.all(bad.window_scores["semsim"] < 0.9)
    assert ev.variants == {"semsim": "bertscore_minilm_recall"}
    # the identification matrix is the same recall, for every pair of windows
    sim = good.identification.similarity
    assert sim.shape == (3, 3) and good.identification.metric == "semsim"
    np.testing.assert_allclose(np.diag(sim), good.window_scores["semsim"], atol=1e-5)
    np.testing.assert_allclose(np.diag(bad.identification.similarity), bad.window_scores["semsim"], atol=1e-5)
    from brainllm.evaluation.semantic import greedy_match_prf

    texts = ["the river ran past old", "past old mills at night"]  # pred window 0, ref window 2
    assert sim[0, 2] == pytest.approx(greedy_match_prf(scorer.token_vectors(texts[0]),
                                                       scorer.token_vectors(texts[1]))[1], abs=1e-5)
    assert good.identification.mean_percentile_rank == pytest.approx(1.0)
