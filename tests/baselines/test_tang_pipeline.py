"""`brainllm tang fit` / `tang decode` end to end on a small simulated story dataset with a tiny LM."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from brainllm.baselines.tang.decode import shifted_responses
from brainllm.cli import app


@pytest.fixture(scope="module")
def story_data(tmp_path_factory):
    from brainllm.data.simulate import simulate

    root = tmp_path_factory.mktemp("tangdata")
    simulate(design="story", passages=12, stories=4, voxels=64, components=8, seed=5, snr=1.0).dataset.save(root / "d")
    return root / "d"


def test_shifted_control_rotates_by_half_the_run():
    x = np.arange(10)[:, None] * np.ones((1, 3))
    np.testing.assert_array_equal(shifted_responses(x)[:, 0], [5, 6, 7, 8, 9, 0, 1, 2, 3, 4])


def test_fit_then_decode_writes_scores_with_nulls_and_control(story_data, tmp_path, tiny_gpt2_path):
    runner = CliRunner()
    model = tmp_path / "tang"
    res = runner.invoke(app, ["tang", "fit", str(story_data), "--out", str(model), "--heldout", "story03",
                              "--backbone", str(tiny_gpt2_path), "--boots", "3", "--voxels", "32",
                              "--context-words", "4"])
    assert res.exit_code == 0, res.output
    info = json.loads((model / "tang.json").read_text())
    assert info["heldout_stories"] == ["story03"] and "story03" not in info["train_stories"]
    assert info["space"] == "raw"  # the simulated voxels, not the PCA frames
    res = runner.invoke(app, ["tang", "decode", str(model), "--story", "story03", "--width", "3", "--nulls", "2",
                              "--out", str(tmp_path / "dec")])
    assert res.exit_code == 0, res.output
    decoded = json.loads((tmp_path / "dec" / "decoded.json").read_text())["decoded"]
    assert set(decoded) == {"tang", "shifted"} and decoded["tang"]["times"] == decoded["shifted"]["times"]
    scores = json.loads((tmp_path / "dec" / "story_evaluation.json").read_text())
    assert "tang" in res.output and "shifted" in res.output and scores


def test_decoding_a_training_story_is_refused(story_data, tmp_path, tiny_gpt2_path):
    runner = CliRunner()
    model = tmp_path / "tang"
    assert runner.invoke(app, ["tang", "fit", str(story_data), "--out", str(model), "--heldout", "story03",
                               "--backbone", str(tiny_gpt2_path), "--boots", "2"]).exit_code == 0
    res = runner.invoke(app, ["tang", "decode", str(model), "--story", "story00"])
    assert res.exit_code != 0 and "trained this decoder" in str(res.exception)
