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


def test_fit_then_decode_every_heldout_story_with_nulls_control_and_pooled_summary(story_data, tmp_path,
                                                                                   tiny_gpt2_path):
    runner = CliRunner()
    model = tmp_path / "tang"
    res = runner.invoke(app, ["tang", "fit", str(story_data), "--out", str(model), "--heldout", "story03",
                              "--heldout", "story02", "--backbone", str(tiny_gpt2_path), "--boots", "3",
                              "--voxels", "32", "--context-words", "4"])
    assert res.exit_code == 0, res.output
    info = json.loads((model / "tang.json").read_text())
    assert info["heldout_stories"] == ["story02", "story03"] and "story03" not in info["train_stories"]
    assert info["space"] == "raw"  # the simulated voxels, not the PCA frames
    # no --story: every held-out story, each in OUT/decode_<story>, pooled in OUT/story_summary.json
    res = runner.invoke(app, ["tang", "decode", str(model), "--width", "3", "--nulls", "2", "--out",
                              str(tmp_path / "dec")])
    assert res.exit_code == 0, res.output
    for story in ("story02", "story03"):
        folder = tmp_path / "dec" / f"decode_{story}"
        decoded = json.loads((folder / "decoded.json").read_text())
        assert decoded["story"] == story and set(decoded["decoded"]) == {"tang", "shifted"}
        assert decoded["decoded"]["tang"]["times"] == decoded["decoded"]["shifted"]["times"]
        assert json.loads((folder / "story_evaluation.json").read_text())["n_nulls"] == 2
    summary = json.loads((tmp_path / "dec" / "story_summary.json").read_text())
    assert summary["stories"] == ["story02", "story03"] and set(summary["conditions"]) == {"tang", "shifted"}
    assert "pooled over 2 stories" in res.output and "shifted" in res.output


def test_decoding_a_training_story_is_refused(story_data, tmp_path, tiny_gpt2_path):
    runner = CliRunner()
    model = tmp_path / "tang"
    assert runner.invoke(app, ["tang", "fit", str(story_data), "--out", str(model), "--heldout", "story03",
                               "--backbone", str(tiny_gpt2_path), "--boots", "2"]).exit_code == 0
    res = runner.invoke(app, ["tang", "decode", str(model), "--story", "story00"])
    assert res.exit_code != 0 and "trained this decoder" in str(res.exception)


def test_tang_fits_and_decodes_a_story_converted_from_the_huth_format(tmp_path, tiny_gpt2_path):
    from brainllm.data.convert import convert
    from tests.data.real_fixtures import write_huth

    write_huth(tmp_path, stories={"alpha": 110, "bravo": 105, "charlie": 108, "delta": 45})  # >= 2 ridge chunks
    convert("huth", tmp_path / "derivative", tmp_path / "data", split="held_out_story", test_stories="delta",
            pca_components=8)
    runner = CliRunner()
    res = runner.invoke(app, ["tang", "fit", str(tmp_path / "data"), "--out", str(tmp_path / "tang"), "--heldout",
                              "delta", "--backbone", str(tiny_gpt2_path), "--boots", "2", "--voxels", "16",
                              "--context-words", "4"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["tang", "decode", str(tmp_path / "tang"), "--width", "2", "--nulls", "2",
                              "--no-control"])
    assert res.exit_code == 0, res.output
    evaluation = json.loads((tmp_path / "tang" / "decode_delta" / "story_evaluation.json").read_text())
    assert list(evaluation["conditions"]) == ["tang"] and evaluation["n_windows"] > 0
