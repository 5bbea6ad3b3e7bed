"""BrainLLM full-story decoding end to end with a tiny model on a small simulated story dataset."""

from __future__ import annotations

import json

import numpy as np
import pytest

from brainllm import config, training
from brainllm.errors import BrainLLMError
from brainllm.fullstory import StoryDecoderConfig, _derangement, decode_story, fit_frame_wordrate, other_story_run
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
    assert set(decoded["decoded"]) == {"brain", "permuted", "other_story", "no_brain"}
    assert decoded["other_story"] not in (None, test_story)
    lengths = {len(d["words"]) for d in decoded["decoded"].values()}
    assert len(lengths) == 1  # every condition decodes the same predicted word times
    assert len(json.loads((tmp_path / "nulls.json").read_text())["words"]) == 3
    table = ev.summary_table()
    for name in ("brain", "permuted", "other_story", "no_brain", "null"):
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


def test_decode_story_cli_defaults_to_the_runs_test_stories(story_run, tmp_path):
    from typer.testing import CliRunner

    from brainllm.cli import _test_stories, app

    res = CliRunner().invoke(app, ["decode-story", str(story_run.path), "--out", str(tmp_path), "--width", "2",
                                   "--extensions", "2", "--context-words", "4", "--nulls", "2"])
    assert res.exit_code == 0, res.output
    for story in _test_stories(story_run.path):
        decoded = json.loads((tmp_path / f"story_{story}" / "decoded.json").read_text())
        assert decoded["story"] == story and set(decoded["decoded"]) == {"brain", "permuted", "other_story",
                                                                         "no_brain"}  # every control by default
    res = CliRunner().invoke(app, ["decode-story", str(story_run.path), "--story", "x", "--story", "x"])
    assert res.exit_code != 0 and "twice" in str(res.exception)


def test_other_story_control_takes_the_next_heldout_story_cyclically(story_run):
    ds = story_run.dataset
    train = sorted({ds.by_id(i).stimulus for i in story_run.split.train})
    held = sorted({r.stimulus for r in ds.runs} - set(train))
    assert len(held) >= 2
    for k, story in enumerate(held):
        run = next(r for r in ds.runs if r.stimulus == story)
        assert other_story_run(ds, run, train).stimulus == held[(k + 1) % len(held)]
    only = next(r for r in ds.runs if r.stimulus == held[0])
    everything_trained = [s for s in {r.stimulus for r in ds.runs} if s != held[0]]
    assert other_story_run(ds, only, everything_trained).stimulus in everything_trained  # falls back to training


def test_brainllm_prior_mirrors_the_tang_beam_and_shares_its_nulls(story_run, tmp_path):
    from brainllm.baselines.tang.decode import decode_tang_story
    from brainllm.baselines.tang.decoder import TangDecoderConfig, decode
    from brainllm.baselines.tang.encoding import EncodingConfig
    from brainllm.baselines.tang.model import TangFitConfig, fit_tang, responses_of, story_runs
    from brainllm.baselines.tang.wordrate import WordRateConfig
    from brainllm.cli import _test_stories
    from brainllm.fullstory import brain_prior, predicted_times

    held = _test_stories(story_run.path)
    cfg = TangFitConfig(backbone=str(story_run.config.model.backbone), context_words=4,
                        encoding=EncodingConfig(n_voxels=32, n_boots=2, chunk_len=10),
                        wordrate=WordRateConfig(n_boots=2))
    tang = fit_tang(story_run.config.data.path, held, tmp_path / "tang", cfg)
    story = held[0]
    run = story_runs(story_run.dataset, [story])[0]
    responses = responses_of(story_run.dataset, run, tang.info["space"])
    times = predicted_times(tang.wordrate, responses, run)
    prior = brain_prior(story_run, run, times, tang.lm.context_words)
    decoded = decode(tang.lm, tang.encoding, responses, np.asarray(run.tr_times), times,
                     TangDecoderConfig(width=3, extensions=2), progress=False, prior=prior)
    # the prior followed every choice of the decoder: its best-kept hypothesis is the decoded story
    assert [prior.lm.vocab.words[w] for w in prior.beam.words[0]] == decoded.words
    assert decoded.settings["decoder"] == "tang2023+brainllm_prior" and len(decoded.words) == len(times)

    small = TangDecoderConfig(width=2, extensions=2)
    plain = decode_tang_story(tang, story, tmp_path / "plain", small, n_nulls=2, progress=False, control=False)
    both = decode_tang_story(tang, story, tmp_path / "prior", small, n_nulls=2, progress=False, prior=story_run)
    assert list(plain.conditions) == ["tang"] and list(both.conditions) == ["tang+brainllm", "shifted+brainllm"]
    nulls = [json.loads((tmp_path / f / "nulls.json").read_text()) for f in ("plain", "prior")]
    assert nulls[0] == nulls[1]  # same word times and seed: the z-scores of the two decoders compare
