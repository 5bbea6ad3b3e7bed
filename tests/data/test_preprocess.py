import logging

import numpy as np
import pytest

from brainllm.data.convert import convert, refit
from brainllm.data.dataset import BrainTextDataset, Sample
from brainllm.data.preprocess import (PreprocessConfig, Transform, clean_runs, encoding_scores, fit_transform,
                                      text_features, tr_chunk_samples)
from brainllm.errors import DatasetError
from tests.data.real_fixtures import write_pereira


def test_tr_chunking_prompt_continuation_frames_and_skips():
    words = "w0 w1 w2 w3 w4 w5 w6".split()
    trs = [-1, 0, 0, 2, 2, 3, 9]
    samples, skipped = tr_chunk_samples(words, trs, n_trs=8, name="s", stimulus="s", subject="x", frame_offset=100,
                                        hrf_delay=1, frames_per_sample=3, prompt_words=2, record_span=True)
    by_tr = {s.extra["tr_index"]: s for s in samples}
    assert sorted(by_tr) == [0, 2, 3]  # TR -1: no preceding words; TR 9: frames past the run
    assert skipped == {"no_preceding_words": 1, "frames_outside_run": 1}
    s0 = by_tr[0]
    assert (s0.prompt, s0.continuation, s0.frames) == ("w0", "w1 w2", [101, 102, 103])
    assert s0.id == "s_tr0000" and s0.extra["span_trs"] == [-1, 3]
    assert by_tr[2].prompt == "w1 w2" and by_tr[2].continuation == "w3 w4"
    with pytest.raises(DatasetError, match="temporal order"):
        tr_chunk_samples(words, [0, 1, 0, 2, 2, 3, 4], 8, name="s", stimulus="s", subject="x")


def test_clean_runs_zscores_detrends_per_run_and_drops_bad_columns():
    rng = np.random.default_rng(0)
    raw = rng.standard_normal((30, 5)).astype(np.float32)
    raw[:20, 1] += np.linspace(0, 50, 20)  # a strong drift in run 1
    raw[:, 2] = np.nan
    raw[20:, 4] = 3.0  # constant within run 2
    out, kept, steps, dropped = clean_runs(raw, [(0, 20), (20, 30)], detrend=1, zscore=True)
    assert kept.tolist() == [True, True, False, True, False]
    assert dropped == {"nonfinite_voxels": 1, "constant_voxels": 1}
    assert out.shape == (30, 3) and out.dtype == np.float32
    for a, b in [(0, 20), (20, 30)]:
        np.testing.assert_allclose(out[a:b].mean(0), 0, atol=1e-5)
        np.testing.assert_allclose(out[a:b].std(0), 1, atol=1e-5)
    assert abs(np.corrcoef(out[:20, 1], np.arange(20))[0, 1]) < 1e-4  # the drift is gone
    assert steps[0]["step"] == "per_run"


def test_fitted_transform_never_sees_frames_outside_the_fit_rows():
    rng = np.random.default_rng(1)
    raw = rng.standard_normal((50, 40)).astype(np.float32)
    fit_rows = np.arange(0, 30)
    cfg = PreprocessConfig(pca_components=5)
    t1, _ = fit_transform(raw, fit_rows, cfg)
    changed = raw.copy()
    changed[30:] = rng.standard_normal((20, 40)) * 100 + 7  # wildly different validation/test frames
    t2, _ = fit_transform(changed, fit_rows, cfg)
    for name in ("mean", "scale", "pca_mean", "components"):
        np.testing.assert_array_equal(getattr(t1, name), getattr(t2, name))
    np.testing.assert_array_equal(t1.apply(raw)[:30], t2.apply(changed)[:30])
    t3, _ = fit_transform(raw + np.where(np.arange(50)[:, None] < 30, 1.0, 0.0).astype(np.float32), fit_rows, cfg)
    assert not np.array_equal(t1.mean, t3.mean)  # ...while changing training frames does change it


def test_pca_is_clipped_with_a_logged_message(caplog):
    raw = np.random.default_rng(2).standard_normal((20, 30)).astype(np.float32)
    with caplog.at_level(logging.INFO, logger="brainllm.data.preprocess"):
        t, steps = fit_transform(raw, np.arange(12), PreprocessConfig(pca_components=1000))
    assert t.output_dim == 11 and steps[-1]["components"] == 11 and steps[-1]["requested"] == 1000
    assert "1000 components requested" in caplog.text


def test_transform_round_trips_as_npy_and_json(tmp_path):
    raw = np.random.default_rng(3).standard_normal((25, 12)).astype(np.float32)
    t, _ = fit_transform(raw, np.arange(20), PreprocessConfig(pca_components=4))
    t.save(tmp_path / "t")
    assert sorted(p.suffix for p in (tmp_path / "t").iterdir()) == [".json"] + [".npy"] * 4
    back = Transform.load(tmp_path / "t")
    np.testing.assert_array_equal(back.apply(raw), t.apply(raw))
    assert back.output_dim == 4 and back.input_dim == 12


def _encoding_data(n_stimuli=10, per=12, n_vox=40, seed=0):
    rng = np.random.default_rng(seed)
    vocab = [f"word{i}" for i in range(60)]
    samples, texts = [], []
    for i in range(n_stimuli * per):
        text = " ".join(rng.choice(vocab, 6))
        texts.append(text)
        samples.append(Sample(f"s{i}", f"stim{i // per}", "x", "", text, [i]))
    feats = text_features(texts, "hashed")
    raw = rng.standard_normal((len(samples), n_vox)).astype(np.float32)
    weights = rng.standard_normal((feats.shape[1], 5))
    raw[:, :5] += 3 * (feats @ weights).astype(np.float32)  # voxels 0-4 respond to the text
    return raw, samples


def test_encoding_voxel_selection_finds_responsive_voxels_on_training_data_only():
    raw, samples = _encoding_data()
    cfg = PreprocessConfig(voxel_selection="encoding", n_voxels=5, encoding_features="hashed", pca_components=None)
    train = samples[:84]  # stimuli 0-6
    t, steps = fit_transform(raw, np.arange(84), cfg, train)
    assert t.voxels.tolist() == [0, 1, 2, 3, 4]
    assert steps[0]["step"] == "voxel_selection" and steps[0]["kept"] == 5
    scrambled = raw.copy()
    scrambled[84:] = np.random.default_rng(9).standard_normal(scrambled[84:].shape)
    np.testing.assert_array_equal(encoding_scores(raw, train, cfg), encoding_scores(scrambled, train, cfg))
    with pytest.raises(DatasetError, match="only 1 training stimulus"):
        fit_transform(raw, np.arange(12), cfg, samples[:12])


def test_pereira_conversion_fits_nothing_on_test_frames(tmp_path):
    """End to end: changing the test (and validation) sentences' brain data leaves the fitted transform and every
    training frame unchanged."""
    rng = np.random.default_rng(5)
    data = rng.standard_normal((32, 60))
    write_pereira(tmp_path / "a" / "P01" / "data_384sentences.mat", data=data)
    first = convert("pereira", tmp_path / "a" / "P01", tmp_path / "out_a", pca_components=6)
    split = first.meta["split"]
    held_out_rows = sorted({f for i in split["test"] + split["valid"] for f in first.by_id(i).frames})
    assert held_out_rows
    data[held_out_rows] = rng.standard_normal((len(held_out_rows), 60)) * 50 + 3
    write_pereira(tmp_path / "b" / "P01" / "data_384sentences.mat", data=data)
    second = convert("pereira", tmp_path / "b" / "P01", tmp_path / "out_b", pca_components=6)
    assert second.meta["split"] == split
    ta, tb = Transform.load(tmp_path / "out_a" / "transform"), Transform.load(tmp_path / "out_b" / "transform")
    for name in ("mean", "scale", "components"):
        np.testing.assert_array_equal(getattr(ta, name), getattr(tb, name))
    train_rows = sorted({f for i in split["train"] for f in first.by_id(i).frames})
    np.testing.assert_array_equal(np.asarray(first.frames)[train_rows], np.asarray(second.frames)[train_rows])
    assert not np.allclose(np.asarray(first.frames)[held_out_rows], np.asarray(second.frames)[held_out_rows])


def test_refit_uses_the_kept_raw_frames_for_another_split(tmp_path):
    write_pereira(tmp_path / "P01" / "data_384sentences.mat", n_passages=12)
    convert("pereira", tmp_path / "P01", tmp_path / "out", pca_components=6)
    again = refit(tmp_path / "out", tmp_path / "out2", "kfold_by_stimulus", n_folds=4, fold=2)
    assert again.meta["split"]["method"] == "kfold_by_stimulus" and again.meta["refitted_from"].endswith("out")
    assert [s["step"] for s in again.meta["preprocessing"]] == ["read", "standardize", "pca"]
    raw = np.load(tmp_path / "out" / "raw" / "frames.npy")
    t = Transform.load(tmp_path / "out2" / "transform")
    np.testing.assert_allclose(t.apply(raw), np.asarray(BrainTextDataset.load(tmp_path / "out2").frames), rtol=1e-6)
    convert("pereira", tmp_path / "P01", tmp_path / "noraw", pca_components=6, keep_raw=False)
    assert not (tmp_path / "noraw" / "raw").exists()
    with pytest.raises(DatasetError, match="no raw/frames.npy"):
        refit(tmp_path / "noraw", tmp_path / "x")
