"""Pooling an outer cross-validation's folds into one evaluation (`evaluation.folds`)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from brainllm.evaluation.evaluate import evaluate_run
from brainllm.evaluation.folds import evaluate_folds, load_folds
from brainllm.evaluation.metrics import MetricConfig
from brainllm.evaluation.rundata import EvaluationError

from .fakeruns import write_fake_run

WORDS_ONLY = MetricConfig(semantic=False)


def fold_runs(base: Path, n_folds: int = 3, signal: float = 0.5, seed: int = 6) -> list[Path]:
    """`n_folds` fake fold runs of one cross-validation, each testing 6 passages of its own."""
    return [write_fake_run(base / f"fold{f}", n_stimuli=6, signal=signal, seed=10 + f, prefix=f"f{f}p",
                           split_info={"method": "kfold_by_stimulus", "seed": seed,
                                       "info": {"n_folds": n_folds, "fold": f}})
            for f in range(n_folds)]


def test_pooled_scores_are_the_folds_samples_together(tmp_path: Path) -> None:
    paths = fold_runs(tmp_path)
    pooled, runs = load_folds(paths)
    assert pooled.ids == [i for r in runs for i in r.ids] and len(set(pooled.stimuli)) == 18
    assert pooled.conditions["permuted"].loss.shape == (54, 3)
    ev = evaluate_folds(paths, metric_config=WORDS_ONLY)
    folds = [evaluate_run(p, metric_config=WORDS_ONLY) for p in paths]
    # the pooled mean is the sample-weighted mean of the folds' means (equal sizes here: their plain mean)
    for cond in ("brain", "permuted", "no_brain"):
        mean = np.mean([f.summary["conditions"][cond]["bleu1_per_sample"]["mean"] for f in folds])
        assert ev.summary["conditions"][cond]["bleu1_per_sample"]["mean"] == pytest.approx(mean)
    assert ev.summary["name"] == f"3 folds of {tmp_path.name}"
    assert ev.summary["n_stimuli"] == 18 and [f["fold"] for f in ev.summary["folds"]] == [0, 1, 2]
    # three times the passages: the same effect is tested with more power than in any one fold
    p_pooled = ev.summary["comparisons"]["brain_vs_permuted"]["bleu1_per_sample"]["p_signflip_stimuli"]
    p_folds = [f.summary["comparisons"]["brain_vs_permuted"]["bleu1_per_sample"]["p_signflip_stimuli"] for f in folds]
    assert p_pooled < min(p_folds)
    assert ev.summary["verdicts"] and ev.summary["identification"]["available"] is False


def test_folds_that_are_not_one_cross_validation_are_refused(tmp_path: Path) -> None:
    paths = fold_runs(tmp_path / "a")
    with pytest.raises(EvaluationError, match="at least two"):
        load_folds(paths[:1])
    with pytest.raises(EvaluationError, match="appears twice"):
        load_folds([paths[0], paths[0]])
    other = fold_runs(tmp_path / "b", seed=7)
    with pytest.raises(EvaluationError, match="different cross-validations"):
        load_folds([paths[0], other[1]])
    single = write_fake_run(tmp_path / "single", n_stimuli=6, prefix="zz")
    with pytest.raises(EvaluationError, match="was not split by kfold_by_stimulus"):
        load_folds([paths[0], single])
    # a passage tested by two folds (the same stimulus names in two folds' test sets)
    clash = write_fake_run(tmp_path / "clash", n_stimuli=6, prefix="f0p",
                           split_info={"method": "kfold_by_stimulus", "seed": 6, "info": {"n_folds": 3, "fold": 1}})
    with pytest.raises(EvaluationError, match="tested by both"):
        load_folds([paths[0], clash])
    fewer = write_fake_run(tmp_path / "fewer", n_stimuli=6, prefix="f1p", conditions=("brain", "permuted"),
                           split_info={"method": "kfold_by_stimulus", "seed": 6, "info": {"n_folds": 3, "fold": 1}})
    with pytest.raises(EvaluationError, match="different conditions"):
        load_folds([paths[0], fewer])


def test_cli_writes_the_pooled_evaluation(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from brainllm.cli import app

    paths = fold_runs(tmp_path)
    result = CliRunner().invoke(app, ["evaluate-folds", *map(str, paths), "--out", str(tmp_path / "pooled"),
                                      "--no-semantic"])
    assert result.exit_code == 0, result.output
    scores = json.loads((tmp_path / "pooled" / "scores.json").read_text())
    assert scores["n_samples"] == 54 and "VERDICT" in result.output
    assert sum(1 for _ in (tmp_path / "pooled" / "per_sample.jsonl").open()) == 54


def test_fold_identification_is_the_sample_weighted_mean_of_the_folds() -> None:
    from types import SimpleNamespace

    from brainllm.evaluation.folds import fold_identification

    def fold(n: int, sign: float) -> SimpleNamespace:
        # text i for frames j scores sign on the diagonal, 0 elsewhere: every pair right (sign 1) or wrong (-1)
        matrix = sign * np.eye(n)
        ids = [f"s{sign}-{i}" for i in range(n)]
        return SimpleNamespace(path=f"fold{n}", crossloss=None, decoder_scores={
            "ids": np.array(ids), "stimuli": np.array([f"p{i % 2}" for i in range(n)]), "frame_keys": np.array(ids),
            "encoding": matrix, "nuisance": np.zeros((n, n)), "n_tokens": np.ones(n), "weight": 1.0})

    out = fold_identification([fold(4, 1.0), fold(2, -1.0)])
    assert out["n"] == 6 and [f["n"] for f in out["per_fold"]] == [4, 2]
    assert out["encoding_model"]["across"] == pytest.approx(4 / 6)
    assert out["length_position_model"]["across"] == pytest.approx(0.5)  # all ties: half
    assert fold_identification([fold(4, 1.0), SimpleNamespace(path="x", crossloss=None, decoder_scores=None)])[
        "available"] is False


def test_folds_that_chose_different_pick_rules_say_so() -> None:
    """Each fold's validation chooses its decoder: the pooled condition names every fold's rule, and the look-up
    verdict says it looked up per fold (not by the first fold's rule alone)."""
    from brainllm.evaluation.controls import _retrieval_line
    from brainllm.evaluation.folds import _merged
    from brainllm.evaluation.rundata import Condition

    def part(pick: str) -> Condition:
        ones = np.ones((2, 1))
        return Condition("retrieval", {"decoding": {"rerank": "encoding", "pick": pick}}, [["a"], ["b"]], ones,
                         np.zeros((2, 1), bool), None)

    same = _merged("retrieval", [part("map"), part("map")])
    assert same.header["decoding"]["pick"] == "map" and len(same.predictions) == 4
    mixed = _merged("retrieval", [part("map"), part("pool-mbr"), part("pool-mbr")])
    assert mixed.header["decoding"]["pick"] == "per fold: map, pool-mbr, pool-mbr"
    summary = {"decoding": {"retrieval": mixed.header["decoding"]}, "comparisons": {}}
    assert "per fold, by that fold's decoder's rule (map, pool-mbr, pool-mbr" in _retrieval_line(summary)
