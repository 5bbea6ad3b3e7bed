"""BrainLLM full-story decoding end to end with a tiny model on a small simulated story dataset."""

from __future__ import annotations

import json

import numpy as np
import pytest

from brainllm import config, training
from brainllm.errors import BrainLLMError
from brainllm.decoding.fullstory import StoryDecoderConfig, fit_frame_wordrate
from brainllm.experiments.fullstory import _derangement, decode_story, other_story_run
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
    from brainllm.decoding.wordrate import WordRateConfig
    from brainllm.cli import _test_stories
    from brainllm.decoding.fullstory import brain_prior, predicted_times

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


def test_decoder_nulls_are_the_trained_decoder_on_other_stories_frames(story_run, tmp_path):
    from brainllm.evaluation.pooled import load_story_evaluation
    from brainllm.decoding.fullstory import decode_brainllm, heldout_run, predicted_times, run_word_lm, story_prefix
    from brainllm.experiments.fullstory import DECODER_NULL_DIR, stretched_order

    ds = story_run.dataset
    story = ds.by_id(story_run.split.test[0]).stimulus
    cfg = StoryDecoderConfig(width=2, extensions=2, context_words=4)
    decode_story(story_run, story, tmp_path, cfg, n_nulls=2, conditions=("brain", "no_brain"), progress=False,
                 decoder_nulls=3)
    folder = tmp_path / DECODER_NULL_DIR
    _, ev = load_story_evaluation(folder)
    assert ev.null_kind == "decoder" and ev.n_nulls == 3 and list(ev.conditions) == ["brain", "no_brain"]
    assert load_story_evaluation(tmp_path)[1].null_kind == "lm"
    assert (json.loads((folder / "decoded.json").read_text())
            == json.loads((tmp_path / "decoded.json").read_text()))  # the same decodes, scored twice
    nulls = json.loads((folder / "nulls.json").read_text())
    train = {ds.by_id(i).stimulus for i in story_run.split.train}
    assert nulls["kind"] == "decoder" and len(nulls["words"]) == 3
    assert all(s["story"] != story and s["story"] not in train for s in nulls["sources"])  # unrelated, unseen
    # null 0 is exactly the trained decoder (adapter included) on its source's frames at its offset
    run, _ = heldout_run(story_run, story)
    source = next(r for r in ds.runs if r.stimulus == nulls["sources"][0]["story"])
    order = stretched_order(run.n_trs, source.n_trs, nulls["sources"][0]["offset_trs"])
    times = np.asarray(nulls["times"])
    np.testing.assert_allclose(times, predicted_times(fit_frame_wordrate(ds, sorted(train)),
                                                      np.asarray(ds.frames[run.rows[0]:run.rows[1]]), run), atol=1e-4)
    again = decode_brainllm(run_word_lm(story_run, cfg.context_words), times, np.asarray(run.tr_times),
                            story_prefix(story_run, source, order), cfg, progress=False)
    assert again.words == nulls["words"][0]
    with pytest.raises(BrainLLMError, match="at least 2"):
        decode_story(story_run, story, tmp_path / "one", cfg, decoder_nulls=1, progress=False)


def test_stretched_order_and_decoder_null_sources_by_hand():
    from brainllm.experiments.fullstory import decoder_null_sources, stretched_order

    assert stretched_order(4, 8).tolist() == [0, 2, 4, 6]
    assert stretched_order(4, 8, offset=7).tolist() == [7, 1, 3, 5]
    assert stretched_order(3, 2).tolist() == [0, 0, 1]

    class FakeRun:
        def __init__(self, name, n):
            self.stimulus, self.n_trs = name, n

    pool = [FakeRun("a", 5), FakeRun("b", 9)]
    sources = decoder_null_sources(pool, 5, seed=3)
    assert [s.stimulus for s, _ in sources] == ["a", "b", "a", "b", "a"]
    assert all(0 <= off < s.n_trs for s, off in sources)
    assert sources == decoder_null_sources(pool, 5, seed=3)  # reproducible


def test_an_injecting_run_decodes_with_its_states_in_the_prefix(story_run, tmp_path):
    """A run with `model.inject_layer` (beyond the paper): each TR's prefix holds zeros in the brain slots and
    an injection of `state_centre + adapter(frames)` after that layer; the story decodes end to end."""
    import torch

    from brainllm.decoding.fullstory import story_prefix

    data = story_run.config.data.path
    cfg = config.from_dict({"data": {"path": data, "split": "by_story"},
                            "model": {"backbone": story_run.config.model.backbone, "inject_layer": 1,
                                      "adapter": {"name": "mlp", "hidden": 32}},
                            "training": {"warmup_epochs": 1, "epochs": 1, "lr": 3e-3, "cpu": True,
                                         "warmup_target": "continuation"},
                            "output": str(tmp_path / "run")})
    training.train(cfg)
    run = load_run(tmp_path / "run")
    test_story = run.dataset.by_id(run.split.test[0]).stimulus
    story = next(r for r in run.dataset.runs if r.stimulus == test_story)
    prefix = story_prefix(run, story)
    embeds, injection = prefix(2)
    t = prefix.t
    assert embeds.shape == (t + 2, run.model.hidden_size) and torch.count_nonzero(embeds[1:-1]) == 0
    assert injection.mask.tolist() == [False] + [True] * t + [False]
    assert injection.module is run.model.decoder_layer(1)
    rows = [story.rows[0] + 2 + prefix.hrf_delay + j for j in range(t)]
    frames = torch.as_tensor(np.asarray(run.dataset.frames[rows], dtype=np.float32))[None]
    with torch.no_grad():
        expected = run.model.state_centre + run.model.adapter(frames, torch.ones(1, t, dtype=torch.bool))[0]
    torch.testing.assert_close(injection.states[1:-1], expected)
    ev = decode_story(run, test_story, tmp_path / "decode", StoryDecoderConfig(width=2, extensions=2, context_words=4),
                      n_nulls=2, conditions=("brain", "no_brain"), progress=False)
    assert "brain" in ev.summary_table()
