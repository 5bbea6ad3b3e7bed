"""Reading run folders: the format contract and the checks evaluation relies on."""

import json

import numpy as np
import pytest

from brainllm.evaluation.rundata import EvaluationError, available_conditions, load_run_data

from .fakeruns import write_fake_run


def _rewrite(path, fn):
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    rows = fn(rows)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_load_fake_run(fake_run):
    run = load_run_data(fake_run)
    assert available_conditions(fake_run, "test") == ["brain", "permuted", "no_brain"]
    assert len(run.ids) == 36 and len(set(run.stimuli)) == 12
    assert run.conditions["permuted"].loss.shape == (36, 3)
    assert run.conditions["brain"].loss.shape == (36, 1)
    assert run.crossloss is not None and run.crossloss[1].shape == (36, 36)
    assert run.backbone == "tiny-llama" and run.dataset_name == "sim_sentence" and run.train_size() == 40
    assert run.training_log[0]["stage"] == "warmup"
    fixed = run.conditions["permuted"].fixed_point
    rows = [json.loads(line) for line in (fake_run / "predictions/test_permuted.jsonl").read_text().splitlines()]
    assert fixed.sum() == sum(r["frames_from"] == r["id"] for r in rows)


def test_train_size_prefers_the_cap(tmp_path):
    run = load_run_data(write_fake_run(tmp_path / "r", max_train_samples=10, n_train=40))
    assert run.train_size() == 10


def test_missing_files_give_clear_errors(tmp_path, fake_run):
    with pytest.raises(EvaluationError, match="brainllm.json is missing"):
        load_run_data(tmp_path)
    with pytest.raises(EvaluationError, match="generate the 'valid' predictions"):
        load_run_data(fake_run, "valid")


def test_only_brain_condition_is_enough(tmp_path):
    run = load_run_data(write_fake_run(tmp_path / "r", conditions=("brain",), crossloss=False))
    assert list(run.conditions) == ["brain"] and run.crossloss is None


def test_reference_mismatch_between_conditions_is_refused(fake_run):
    def damage(rows):
        rows[0]["reference"] = "a different reference text"
        return rows

    _rewrite(fake_run / "predictions/test_no_brain.jsonl", damage)
    with pytest.raises(EvaluationError, match="same text"):
        load_run_data(fake_run)


@pytest.mark.parametrize("key, value", [("loss", "3.2 nats"), ("posterior_loss", "n/a"), ("posterior_loss", True)])
def test_a_loss_that_is_not_a_number_is_refused(fake_run, key, value):
    def damage(rows):
        rows[1][key] = value
        return rows

    _rewrite(fake_run / "predictions/test_permuted.jsonl", damage)
    with pytest.raises(EvaluationError, match=f"'{key}' of sample .* must be a number or null, got {value!r}"):
        load_run_data(fake_run)


def test_a_null_posterior_loss_is_no_posterior_loss(fake_run):
    def add(rows):
        for r in rows:
            r["posterior_loss"] = None
        return rows

    _rewrite(fake_run / "predictions/test_brain.jsonl", add)
    assert load_run_data(fake_run).conditions["brain"].posterior_loss is None


def test_training_ids_in_predictions_are_refused(fake_run):
    split = json.loads((fake_run / "split.json").read_text())
    split["train"].append(split["test"][0])
    (fake_run / "split.json").write_text(json.dumps(split))
    with pytest.raises(EvaluationError, match="training ids"):
        load_run_data(fake_run)


def test_incomplete_permutation_and_unknown_ids_are_refused(fake_run):
    _rewrite(fake_run / "predictions/test_permuted.jsonl", lambda rows: rows[1:])
    with pytest.raises(EvaluationError, match="missing in permutation 0"):
        load_run_data(fake_run)


def test_unknown_id_and_missing_field(tmp_path):
    run = write_fake_run(tmp_path / "a")

    def rename(rows):
        rows[0]["id"] = "nobody"
        return rows

    _rewrite(run / "predictions/test_no_brain.jsonl", rename)
    with pytest.raises(EvaluationError, match="not in the brain predictions"):
        load_run_data(run)
    run = write_fake_run(tmp_path / "b")

    def drop(rows):
        del rows[2]["loss"]
        return rows

    _rewrite(run / "predictions/test_brain.jsonl", drop)
    with pytest.raises(EvaluationError, match="lacks \\['loss'\\]"):
        load_run_data(run)


def test_crossloss_shape_is_checked(fake_run):
    np.savez(fake_run / "predictions/test_crossloss.npz", ids=np.array(["a", "b"]), loss=np.zeros((2, 3)))
    with pytest.raises(EvaluationError, match="shape"):
        load_run_data(fake_run)
