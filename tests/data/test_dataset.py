import json

import numpy as np
import pytest

from brainllm.data.dataset import BrainTextDataset, Sample
from brainllm.errors import DatasetError
from tests.conftest import make_dataset


def test_round_trip_preserves_frames_samples_and_meta(tmp_path):
    ds = make_dataset()
    ds.samples[0].extra["topic"] = "bees"
    ds.save(tmp_path / "d")
    back = BrainTextDataset.load(tmp_path / "d")
    assert isinstance(back.frames, np.memmap)
    np.testing.assert_array_equal(np.asarray(back.frames), ds.frames)
    assert [s.to_json() for s in back] == [s.to_json() for s in ds]
    assert back.samples[0].extra == {"topic": "bees"}
    assert back.meta["subject"] == "subj"
    assert back.sample_frames("s1").shape == (1, 4)
    assert back.sample_frames(0).dtype == np.float32
    assert back.stimuli() == ["stim0", "stim1", "stim2"]
    header = json.loads((tmp_path / "d" / "dataset.json").read_text())
    assert header["format"] == "brainllm-dataset" and header["version"] == 1 and header["n_samples"] == 6


def test_save_refuses_to_clobber_without_overwrite(tmp_path):
    ds = make_dataset()
    ds.save(tmp_path / "d")
    with pytest.raises(Exception, match="already exists"):
        ds.save(tmp_path / "d")
    ds.save(tmp_path / "d", overwrite=True)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "no staging folder may be left behind"


def _corrupt(tmp_path, edit):
    ds = make_dataset()
    path = ds.save(tmp_path / "d")
    edit(path)
    return path


def _edit_json(path, **changes):
    meta = json.loads((path / "dataset.json").read_text())
    meta.update(changes)
    (path / "dataset.json").write_text(json.dumps(meta))


def _edit_sample(path, index, **changes):
    lines = (path / "samples.jsonl").read_text().splitlines()
    row = json.loads(lines[index])
    row.update(changes)
    lines[index] = json.dumps(row)
    (path / "samples.jsonl").write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("edit, message", [
    (lambda p: _edit_sample(p, 2, frames=[99]), "outside frames.npy"),
    (lambda p: _edit_sample(p, 2, frames=[-1]), "outside frames.npy"),
    (lambda p: _edit_sample(p, 1, continuation="   "), "empty continuation"),
    (lambda p: _edit_sample(p, 1, frames=[]), "no frames"),
    (lambda p: _edit_sample(p, 1, id="s0"), "occurs twice"),
    (lambda p: _edit_json(p, feature_dim=7), "feature_dim=7"),
    (lambda p: _edit_json(p, version=99), "version 99"),
    (lambda p: _edit_json(p, format="something-else"), "format"),
    (lambda p: np.save(p / "frames.npy", np.full((6, 4), np.nan, dtype=np.float32)), "NaN/Inf"),
    (lambda p: np.save(p / "frames.npy", np.ones((6, 4), dtype=np.float64)), "float32"),
    (lambda p: (p / "frames.npy").write_bytes((p / "frames.npy").read_bytes()[:100]), "truncated"),
    (lambda p: (p / "samples.jsonl").write_text((p / "samples.jsonl").read_text()[:-30]), "truncated"),
    (lambda p: (p / "samples.jsonl").write_text("\n".join((p / "samples.jsonl").read_text().splitlines()[:4]) + "\n"),
     "truncated"),
    (lambda p: (p / "dataset.json").write_text('{"format": "brainllm-data'), "not valid JSON"),
    (lambda p: (p / "samples.jsonl").unlink(), "no samples.jsonl"),
    (lambda p: _edit_sample(p, 0, frames="0"), "list of integer"),
])
def test_load_rejects_malformed_dataset_with_clear_error(tmp_path, edit, message):
    path = _corrupt(tmp_path, edit)
    with pytest.raises(DatasetError, match=message):
        BrainTextDataset.load(path)


def test_nan_error_names_the_frame_and_feature():
    frames = np.zeros((5, 3), dtype=np.float32)
    frames[3, 2] = np.inf
    with pytest.raises(DatasetError, match="frame 3, feature 2"):
        BrainTextDataset(frames, [Sample("a", "x", "s", "p", "c", [0])])


def test_save_validates_before_writing(tmp_path):
    ds = make_dataset()
    ds.samples[0].continuation = ""
    with pytest.raises(DatasetError, match="empty continuation"):
        ds.save(tmp_path / "d")
    assert not (tmp_path / "d").exists()


def test_summary_counts_and_lengths():
    info = make_dataset().summary()
    assert info["samples"] == 6 and info["stimuli"] == 3 and info["frames"] == 6 and info["feature_dim"] == 4
    assert info["prompt_words"]["mean"] == 2 and info["frames_per_sample"]["max"] == 1
    assert "prompt:" in make_dataset().describe(2)


def _with_runs(tmp_path):
    from brainllm.data.dataset import Run

    ds = make_dataset(n_frames=6)
    runs = [Run("story_a", "s0", (0, 4), [1.0, 3.0, 5.0, 7.0], ["so", "it", "began"], [0.5, 1.5, 4.0]),
            Run("story_b", "s1", (4, 6), [1.0, 3.0], ["then"], [2.0])]
    raw = np.arange(6 * 3, dtype=np.float32).reshape(6, 3)
    return BrainTextDataset(ds.frames, ds.samples, ds.meta, runs=runs, raw=raw)


def test_runs_and_raw_frames_round_trip(tmp_path):
    ds = _with_runs(tmp_path)
    ds.save(tmp_path / "d")
    back = BrainTextDataset.load(tmp_path / "d")
    assert [r.to_json() for r in back.runs] == [r.to_json() for r in ds.runs]
    assert back.run("story_b").words == ["then"] and back.run("story_a").n_trs == 4
    np.testing.assert_array_equal(back.raw, ds.raw)
    assert back.subset([ds.samples[0].id]).runs == back.runs
    with pytest.raises(DatasetError, match="No run 'nope'"):
        back.run("nope")


@pytest.mark.parametrize("change, message", [
    (lambda r: setattr(r, "rows", (4, 9)), "outside frames.npy"),
    (lambda r: r.tr_times.pop(), "TR times"),
    (lambda r: r.word_times.pop(), "word times"),
    (lambda r: setattr(r, "word_times", [2.0, 1.0, 3.0]), "non-decreasing"),
])
def test_bad_runs_are_refused(tmp_path, change, message):
    ds = _with_runs(tmp_path)
    change(ds.runs[0])
    with pytest.raises(DatasetError, match=message):
        ds.validate()


def test_raw_frames_must_match_the_frame_rows(tmp_path):
    ds = _with_runs(tmp_path)
    with pytest.raises(DatasetError, match="raw frames"):
        BrainTextDataset(ds.frames, ds.samples, ds.meta, runs=ds.runs, raw=ds.raw[:5])
