"""Pooling the windowed evaluations of several stories: hand-computed pooled z and p, one story reproduces its
own evaluation, folders round-trip, and a story given twice is refused."""

import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

from brainllm.evaluation import story as ST
from brainllm.evaluation.pooled import pool_folders, pool_story_evaluations
from brainllm.evaluation.rundata import EvaluationError


def fake_evaluation(k: int, brain: float, nulls: list[float], story_z: float = 0.0) -> ST.StoryEvaluation:
    """A one-metric (bleu1) evaluation of K windows whose windows all score `brain`; null n scores `nulls[n]`."""
    scores = {"bleu1": np.full(k, brain)}
    cond = ST.ConditionResult("brain", scores, {"bleu1": np.zeros(k)}, {"bleu1": 0.0}, {"bleu1": brain},
                              {"bleu1": story_z}, {"bleu1": 0.5},
                              ST.Identification("bleu1", None, np.linspace(0.5, 1.0, k)))
    cfg = ST.StoryEvalConfig(metrics=("bleu1",))
    bounds = np.stack([np.arange(k), np.arange(k) + 20.0], axis=1)
    return ST.StoryEvaluation(cfg, {"bleu1": "bleu1_per_window"}, 0.0, k + 19.0, bounds, {"brain": cond},
                              {"bleu1": np.repeat(np.asarray(nulls, float)[:, None], k, axis=1)}, 10)


def test_pooled_score_z_and_p_match_a_hand_computation():
    a = fake_evaluation(2, 0.5, [0.1, 0.3], story_z=1.5)
    b = fake_evaluation(6, 0.1, [0.2, 0.0, 0.4], story_z=-0.5)  # 3 nulls: only the first 2 are paired with a's
    pooled = pool_story_evaluations({"a": a, "b": b})
    c = pooled.conditions["brain"]
    # weights 2/8 and 6/8: S = 0.25*0.5 + 0.75*0.1 = 0.2; nulls 0.25*0.1+0.75*0.2 = 0.175, 0.25*0.3+0.75*0 = 0.075
    assert c.score["bleu1"] == pytest.approx(0.2)
    np.testing.assert_allclose(pooled.null_scores["bleu1"], [0.175, 0.075])
    assert c.z["bleu1"] == pytest.approx((0.2 - 0.125) / (0.1 / math.sqrt(2)))
    assert c.p_value["bleu1"] == pytest.approx(1 / 3)  # no null reaches 0.2
    assert c.story_z["bleu1"] == {"a": 1.5, "b": -0.5}
    # identification: the mean over all 8 windows, not the mean of the two stories' means
    expected = np.concatenate([np.linspace(0.5, 1, 2), np.linspace(0.5, 1, 6)]).mean()
    assert c.identification == pytest.approx(expected)
    assert pooled.n_windows == {"a": 2, "b": 6} and pooled.n_nulls == 2
    table = pooled.summary_table()
    assert "brain" in table and "null (mean of 2)" in table and "bleu1_per_window" in table


def test_one_story_pooled_equals_its_own_story_level_evaluation():
    rng = np.random.default_rng(0)
    vocab = [f"w{i}" for i in range(30)]

    def words(n):
        return ST.TimedWords(list(rng.choice(vocab, n)), np.sort(rng.uniform(0, 60, n)))

    ref, pred = words(120), words(120)
    ev = ST.evaluate_story(pred, ref, [words(120) for _ in range(5)], config=ST.StoryEvalConfig(metrics=("bleu1",)),
                           controls={"other": words(120)}, name="brain")
    pooled = pool_story_evaluations({"s": ev})
    for name in ("brain", "other"):
        c, own = pooled.conditions[name], ev.conditions[name]
        assert c.score["bleu1"] == pytest.approx(own.story_score["bleu1"])
        assert c.z["bleu1"] == pytest.approx(own.story_z["bleu1"])
        assert c.p_value["bleu1"] == pytest.approx(own.p_value["bleu1"])
        assert c.identification == pytest.approx(own.identification.mean_percentile_rank)


def test_missing_conditions_are_dropped_and_mismatches_refused(caplog):
    a = fake_evaluation(3, 0.2, [0.1, 0.2])
    b = fake_evaluation(3, 0.2, [0.1, 0.2])
    b.conditions["permuted"] = b.conditions["brain"]
    assert list(pool_story_evaluations({"a": a, "b": b}).conditions) == ["brain"]
    assert "permuted" in caplog.text
    with pytest.raises(EvaluationError, match="at least 2 nulls"):
        pool_story_evaluations({"a": a, "c": fake_evaluation(3, 0.2, [0.1])})
    b.variants = {"bleu1": "something_else"}
    with pytest.raises(EvaluationError, match="variants"):
        pool_story_evaluations({"a": a, "b": b})
    with pytest.raises(EvaluationError, match="No story"):
        pool_story_evaluations({})


def test_folders_pool_through_the_cli_and_a_story_twice_is_refused(tmp_path):
    from brainllm.cli import app

    for story, ev in (("s1", fake_evaluation(2, 0.5, [0.1, 0.3])), ("s2", fake_evaluation(6, 0.1, [0.2, 0.0]))):
        folder = tmp_path / f"decode_{story}"
        folder.mkdir()
        ST.write_story_evaluation(ev, folder / "story_evaluation.json")
        (folder / "decoded.json").write_text(json.dumps({"story": story}))
    pooled = pool_folders([tmp_path / "decode_s1", tmp_path / "decode_s2" / "story_evaluation.json"])
    assert pooled.stories == ["s1", "s2"] and pooled.conditions["brain"].score["bleu1"] == pytest.approx(0.2)
    with pytest.raises(EvaluationError, match="twice"):
        pool_folders([tmp_path / "decode_s1", tmp_path / "decode_s1"])
    out = tmp_path / "pooled.json"
    res = CliRunner().invoke(app, ["story-summary", str(tmp_path / "decode_s1"), str(tmp_path / "decode_s2"),
                                   "--out", str(out)])
    assert res.exit_code == 0, res.output
    saved = json.loads(out.read_text())
    assert saved["stories"] == ["s1", "s2"] and saved["conditions"]["brain"]["score"]["bleu1"] == pytest.approx(0.2)
    assert "brain" in res.output
    res = CliRunner().invoke(app, ["story-summary", str(tmp_path / "missing")])
    assert res.exit_code != 0 and "does not exist" in res.output + str(res.exception)
    (tmp_path / "broken.json").write_text(json.dumps({"format": "brainllm.story_evaluation", "n_windows": 2}))
    with pytest.raises(EvaluationError, match="Incomplete or malformed story evaluation"):
        pool_folders([tmp_path / "broken.json"])


def test_the_kind_of_null_is_kept_and_kinds_are_never_pooled_together():
    lm, decoder = fake_evaluation(3, 0.2, [0.1, 0.2]), fake_evaluation(3, 0.2, [0.1, 0.2])
    decoder.null_kind = "decoder"
    obj = decoder.to_json()
    assert obj["null_kind"] == "decoder" and "other stories" in obj["null"]
    assert ST.StoryEvaluation.from_json(obj).null_kind == "decoder"
    del obj["null_kind"]  # files written before the decoder null existed were scored against the LM null
    assert ST.StoryEvaluation.from_json(obj).null_kind == "lm"
    with pytest.raises(EvaluationError, match="different kinds of null"):
        pool_story_evaluations({"a": lm, "b": decoder})
    pooled = pool_story_evaluations({"a": decoder, "b": decoder})
    assert pooled.null_kind == "decoder" and "other stories" in pooled.summary_table()
    with pytest.raises(EvaluationError, match="Unknown null kind"):
        ST.evaluate_story(ST.TimedWords(["a"], np.array([1.0])), ST.TimedWords(["a"], np.array([1.0])), [],
                          config=ST.StoryEvalConfig(metrics=("bleu1",), null_z=False), null_kind="bare")


def test_two_decoders_pooled_into_one_folder_keep_their_own_summaries(tmp_path):
    from brainllm.experiments.fullstory import PRIOR_SUMMARY_FILE, SUMMARY_FILE, decode_stories

    plain = {"a": fake_evaluation(3, 0.3, [0.1, 0.2]), "b": fake_evaluation(2, 0.4, [0.2, 0.1])}
    prior = {"a": fake_evaluation(3, 0.9, [0.1, 0.2]), "b": fake_evaluation(2, 0.8, [0.2, 0.1])}
    decode_stories(lambda s, folder: plain[s], ["a", "b"], tmp_path, "decode_")
    decode_stories(lambda s, folder: prior[s], ["a", "b"], tmp_path, "decode_brainprior_", PRIOR_SUMMARY_FILE)
    first = json.loads((tmp_path / SUMMARY_FILE).read_text())
    second = json.loads((tmp_path / PRIOR_SUMMARY_FILE).read_text())
    assert first != second and first["stories"] == second["stories"] == ["a", "b"]
    assert first == json.loads(json.dumps(pool_story_evaluations(plain).to_json()))
