"""Analyses: data and figures for single runs and across runs; inapplicable analyses say why."""

import json

import pytest

from brainllm.evaluation import analyses as A
from brainllm.evaluation import metrics as M
from brainllm.evaluation.evaluate import EvalConfig, evaluate_run

FAST = M.MetricConfig(semantic=False)
CFG = EvalConfig(n_boot=300, n_permutations=1000)


@pytest.fixture(scope="module")
def evs(fake_runs):
    return [evaluate_run(run, metric_config=FAST, config=CFG) for run in fake_runs]


def test_quantile_bins():
    bins, edges = A.quantile_bins([1, 2, 3, 4, 5, 6, 7, 8], 4)
    assert list(bins) == [0, 0, 1, 1, 2, 2, 3, 3] and len(edges) == 5
    bins, edges = A.quantile_bins([1, 1, 1, 1], 4)  # all equal: one bin
    assert set(bins) == {0}


def test_by_surprisal_and_prompt_length(evs):
    ev = evs[0]
    a = A.by_surprisal(ev, n_bins=3)
    assert a.figure is not None and len(a.data["bins"]) == 3 and a.run == str(ev.run.path)
    assert sum(b["n"] for b in a.data["bins"]) == 30
    low, high = a.data["bins"][0], a.data["bins"][-1]
    assert low["high"] <= high["low"]  # bins ordered by StdLLM loss
    assert {"brain", "permuted", "no_brain", "brain_minus_permuted"} <= set(low)
    p = A.by_prompt_length(ev)
    assert p.figure is not None and p.data["x"] == "prompt length (words)"
    assert p.png()[:8] == b"\x89PNG\r\n\x1a\n"


def test_multi_run_analyses(evs):
    lc = A.learning_curve(evs)
    assert [pt["train_size"] for pt in lc.data["points"]] == [10, 20, 40] and lc.figure is not None
    bb = A.by_backbone(evs)
    assert {pt["group"] for pt in bb.data["points"]} == {"tiny-llama", "tiny-gpt2"} and bb.figure is not None
    roi = A.by_region(evs)
    assert [pt["group"] for pt in roi.data["points"]] == ["sim_all", "sim_roi_language", "sim_roi_visual"]
    tc = A.training_curves([ev.run for ev in evs])
    assert tc.figure is not None and len(tc.data) == 3


def test_inapplicable_analyses_say_why(evs, tmp_path):
    one = A.learning_curve(evs[:1])
    assert one.figure is None and "two different" in one.note
    assert A.by_backbone([evs[0], evs[2]]).figure is None  # both tiny-llama
    from .fakeruns import write_fake_run

    brain_only = evaluate_run(write_fake_run(tmp_path / "b", conditions=("brain",), crossloss=False),
                              metric_config=FAST, config=CFG)
    assert A.by_surprisal(brain_only).figure is None


def test_write_analyses_and_unknown_metric(evs, tmp_path):
    paths = A.write_analyses(A.run_all(evs), tmp_path)
    names = sorted(p.name for p in paths)
    assert "learning_curve.png" in names and "by_surprisal_llama_all.png" in names
    assert all(p.stat().st_size > 1000 for p in paths)
    data = json.loads((tmp_path / "analyses.json").read_text())
    assert {d["name"] for d in data} >= {"by_surprisal", "by_region", "training_curves"}
    with pytest.raises(KeyError, match="not computed"):
        A.by_surprisal(evs[0], "semsim_minilm_cosine")
