"""BrainLLM full-story decoding end to end with a tiny model on a small simulated story dataset."""

from __future__ import annotations

import json

import numpy as np
import pytest

from brainllm import config, training
from brainllm.errors import BrainLLMError
from brainllm.fullstory import StoryDecoderConfig, _derangement, decode_story, fit_frame_wordrate
from brainllm.runs import load_run


@pytest.fixture(scope="module")
def story_run(tmp_path_factory, tiny_llama_path):
    from brainllm.data.simulate import simulate

    root = tmp_path_factory.mktemp("story")
    simulate(design="story", passages=12, stories=4, voxels=100, components=16, seed=4, snr=1.0,
             words_per_second=1.5).dataset.save(root / "data")
    cfg = config.from_dict({"data": {"path": str(root / "data"), "split": "by_story"},
                            "model": {"backbone": str(tiny_llama_path), "adapter": {"name": "mlp", "hidden": 32}},
                            "training": {"warmup_epochs": 1, "epochs": 1, "lr": 3e-3, "cpu": True},
                            "output": str(root / "run")})
    training.train(cfg)
    return load_run(root / "run")


def test_derangement_has_no_fixed_point():
    for n in (2, 3, 10, 57):
        perm = _derangement(n, seed=n)
        assert sorted(perm) == list(range(n)) and not np.any(perm == np.arange(n))


def test_word_rate_is_fitted_on_training_stories_and_tracks_the_rate(story_run):
    ds = story_run.dataset
    train = sorted({ds.by_id(i).stimulus for i in story_run.split.train})
    model = fit_frame_wordrate(ds, train)
    assert np.isfinite(model.mean_rate_)


def test_decode_story_writes_every_condition_and_scores_against_the_null(story_run, tmp_path):
    ds = story_run.dataset
    test_story = ds.by_id(story_run.split.test[0]).stimulus
    ev = decode_story(story_run, test_story, tmp_path, StoryDecoderConfig(width=2, extensions=2, context_words=4),
                      n_nulls=3, progress=False)
    decoded = json.loads((tmp_path / "decoded.json").read_text())
    assert set(decoded["decoded"]) == {"brain", "permuted", "no_brain"}
    lengths = {len(d["words"]) for d in decoded["decoded"].values()}
    assert len(lengths) == 1  # every condition decodes the same predicted word times
    assert len(json.loads((tmp_path / "nulls.json").read_text())["words"]) == 3
    table = ev.summary_table()
    for name in ("brain", "permuted", "no_brain", "null"):
        assert name in table
    assert (tmp_path / "story_evaluation.json").exists() and (tmp_path / "contamination.json").exists()


def test_training_stories_are_refused(story_run, tmp_path):
    ds = story_run.dataset
    train_story = ds.by_id(story_run.split.train[0]).stimulus
    with pytest.raises(BrainLLMError, match="trained this run"):
        decode_story(story_run, train_story, tmp_path, progress=False)


def test_tang_fit_holds_out_the_runs_test_stories(story_run):
    from brainllm.cli import _test_stories

    ds = story_run.dataset
    assert _test_stories(story_run.path) == sorted({ds.by_id(i).stimulus for i in story_run.split.test})
