"""Evaluating a run: the condition table, tests, pairwise/identification accuracy, files and the CLI."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from brainllm.evaluation import metrics as M
from brainllm.evaluation.evaluate import EvalConfig, evaluate_run, write_evaluation
from brainllm.evaluation.rundata import load_run_data

from .fakeruns import write_fake_run

FAST = M.MetricConfig(semantic=False)
CFG = EvalConfig(n_boot=500, n_permutations=2000)


def test_strong_brain_effect_is_seen(fake_run):
    ev = evaluate_run(fake_run, metric_config=FAST, config=CFG)
    s = ev.summary
    assert s["conditions_present"] == ["brain", "permuted", "no_brain"]
    brain, perm = s["conditions"]["brain"]["bleu1_per_sample"], s["conditions"]["permuted"]["bleu1_per_sample"]
    assert brain["ci_low"] <= brain["mean"] <= brain["ci_high"]
    assert brain["mean"] > perm["mean"]
    comp = s["comparisons"]["brain_vs_permuted"]
    assert comp["bleu1_per_sample"]["p_signflip_stimuli"] < 0.01
    assert comp["wer_per_sample"]["diff"] < 0  # lower is better: BrainLLM has fewer errors
    assert comp["loss_nats"]["diff"] < 0
    assert s["pairwise_accuracy"]["vs_permuted"]["mean"] > 0.75
    assert s["pairwise_accuracy"]["vs_permuted"]["chance"] == 0.5
    ident = s["identification"]
    assert ident["available"] and ident["n_candidates"] == 36 and ident["chance"]["top1"] == pytest.approx(1 / 36)
    assert ident["variants"]["frames_given_text"]["two_way"]["mean"] > 0.7
    assert set(ident["variants"]) == {"frames_given_text", "text_given_frames_rowmean", "text_given_frames_nobrain"}
    assert s["metrics"]["wer_per_sample"]["higher_is_better"] is False
    assert s["n_stimuli"] == 12 and s["n_permutations"] == 3
    assert "bleu4_corpus_sacrebleu" in s["corpus"]["brain"]
    # the permuted score averages the permutations that did not hand a sample its own frames
    run = load_run_data(fake_run)
    cond = run.conditions["permuted"]
    i = int(np.argmax(cond.fixed_point.any(axis=1)))
    scores = M.score_texts(cond.predictions[i], [run.references[i]] * cond.n_permutations, FAST)["bleu1_per_sample"]
    assert ev.per_sample["permuted"]["bleu1_per_sample"][i] == pytest.approx(scores[~cond.fixed_point[i]].mean())


def test_null_run_is_not_significant(tmp_path):
    ev = evaluate_run(write_fake_run(tmp_path / "null", signal=0.0, seed=5), metric_config=FAST, config=CFG)
    comp = ev.summary["comparisons"]["brain_vs_permuted"]
    assert comp["bleu1_per_sample"]["p_signflip_stimuli"] > 0.05
    assert comp["bleu1_per_sample"]["ci_low"] < 0 < comp["bleu1_per_sample"]["ci_high"]
    pa = ev.summary["pairwise_accuracy"]["vs_permuted"]
    assert pa["ci_low"] < 0.5 < pa["ci_high"]


def test_truncation_labels_every_per_sample_metric(fake_run):
    ev = evaluate_run(fake_run, metric_config=M.MetricConfig(semantic=False, truncate_to_reference=True),
                      config=CFG)
    names = list(ev.summary["conditions"]["brain"])
    assert all(n.endswith("_truncref") for n in names if n != "loss_nats")
    assert ev.summary["settings"]["truncate_to_reference"] is True


def test_brain_only_run_has_no_comparisons(tmp_path):
    ev = evaluate_run(write_fake_run(tmp_path / "r", conditions=("brain",), crossloss=False), metric_config=FAST,
                      config=CFG)
    assert ev.summary["comparisons"] == {} and ev.summary["pairwise_accuracy"] == {}
    assert ev.summary["identification"]["available"] is False


def test_written_files_are_json_and_markdown(fake_run):
    ev = evaluate_run(fake_run, metric_config=FAST, config=CFG)
    out = write_evaluation(ev)
    scores = json.loads((out / "scores.json").read_text())  # strict JSON: no NaN
    assert scores["name"] == fake_run.name
    table = (out / "table.md").read_text()
    assert "| bleu1_per_sample ↑ |" in table and "| wer_per_sample ↓ |" in table
    rows = [json.loads(line) for line in (out / "per_sample.jsonl").read_text().splitlines()]
    assert len(rows) == 36 and set(rows[0]) == {"id", "stimulus", "brain", "permuted", "no_brain"}


def test_cli_evaluate_prints_condition_table(fake_run):
    from brainllm.cli import app

    result = CliRunner().invoke(app, ["evaluate", str(fake_run), "--no-semantic"])
    assert result.exit_code == 0, result.output
    assert "BrainLLM" in result.output and "PerBrainLLM" in result.output and "StdLLM" in result.output
    assert "bleu1_per_sample" in result.output and "pairwise accuracy" in result.output
    assert (fake_run / "evaluation" / "scores.json").is_file()
