import json

import h5py
import numpy as np
import pytest

from brainllm.data.convert import convert
from brainllm.data.huth import read_huth, story_words
from brainllm.data.textgrid import parse_textgrid, read_textgrid
from brainllm.errors import DatasetError
from tests.data.real_fixtures import textgrid_long, textgrid_short, write_huth

TIERS = [("phone", [(0, 0.5, "AH"), (0.5, 1.25, "")]),
         ("word", [(0, 0.5, "{BR}"), (0.5, 1.25, 'say ""hi""'), (1.25, 2.0, "sp")])]


def test_textgrid_long_and_short_formats_parse_identically(tmp_path):
    long_, short = parse_textgrid(textgrid_long(TIERS, 2.0)), parse_textgrid(textgrid_short(TIERS, 2.0))
    assert long_.tiers == short.tiers and long_.names() == ["phone", "word"]
    word = long_.tier("word")
    assert [iv.text for iv in word.intervals] == ["{BR}", 'say "hi"', "sp"] and word.intervals[1].mid == 0.875
    assert long_.tier(0).name == "phone" and long_.xmax == 2.0
    (tmp_path / "u16.TextGrid").write_bytes(textgrid_long(TIERS, 2.0).encode("utf-16"))
    assert read_textgrid(tmp_path / "u16.TextGrid").tiers == long_.tiers
    with pytest.raises(DatasetError, match="not a Praat text TextGrid|ends early"):
        parse_textgrid('File type = "ooTextFile"\nObject class = "TextGrid"\n0\n2\n<exists>\n1\n"IntervalTier"\n"w"\n0\n2\n')
    with pytest.raises(DatasetError, match="no tier named 'words'"):
        long_.tier("words")


def test_word_tier_drops_fillers_lowercases_and_uses_midpoints(tmp_path):
    (tmp_path / "s.TextGrid").write_text(textgrid_long(TIERS, 2.0))
    words, times, dropped = story_words(tmp_path / "s.TextGrid")
    assert words == ['say "hi"'] and times.tolist() == [0.875] and dropped == 2


def test_rows_align_with_tr_centres_2i_plus_11_seconds(tmp_path):
    transcripts = write_huth(tmp_path, short_format=("bravo",))
    rec = read_huth(tmp_path / "derivative")
    assert rec.meta["tr"] == 2.0 and rec.meta["subject"] == "UTS01"
    rows = {"alpha": 40, "bravo": 35, "charlie": 38, "delta": 42}
    assert rec.runs == [(0, 40), (40, 75), (75, 113), (113, 155)] and rec.raw.shape == (155, 30)
    words, mids = transcripts["bravo"]
    word_rows = np.floor((mids - 10) / 2).astype(int)
    bravo = [s for s in rec.samples if s.stimulus == "bravo"]
    assert bravo
    for s in bravo:
        i = s.extra["tr_index"]
        expected = [w for w, r in zip(words, word_rows) if r == i]
        assert s.continuation == " ".join(expected)
        assert s.frames == [40 + i + 1 + j for j in range(4)]  # hrf_delay 1, 4 frames
        first = word_rows.tolist().index(i)
        assert s.prompt == " ".join(words[max(0, first - 20):first])
        assert s.extra["span_trs"][1] == i + 4 and s.extra["run"] == "bravo"
    assert all(max(s.frames) < 75 for s in bravo)
    with h5py.File(tmp_path / "derivative" / "preprocessed_data" / "UTS01" / "alpha.hf5") as f:
        np.testing.assert_allclose(rec.raw[:40], f["data"][()], rtol=1e-6)
    assert rows == {k: v["rows"] for k, v in rec.preprocessing[0]["stories"].items()}
    later = read_huth(tmp_path / "derivative", hrf_delay=2, frames_per_sample=2, prompt_words=3, stories="alpha")
    s = later.samples[5]
    assert s.frames == [s.extra["tr_index"] + 2, s.extra["tr_index"] + 3] and len(s.prompt.split()) <= 3


def test_multi_repeat_story_is_averaged_or_kept_never_reshaped_silently(tmp_path):
    stories = {"alpha": 60, "bravo": 55, "wheretheressmoke": 50}
    write_huth(tmp_path / "a", stories=stories, repeated={"wheretheressmoke": 3})
    with h5py.File(tmp_path / "a" / "derivative" / "preprocessed_data" / "UTS01" / "wheretheressmoke.hf5") as f:
        reps = f["data"][()]
    avg = read_huth(tmp_path / "a", stories=["wheretheressmoke"])
    np.testing.assert_allclose(avg.raw, reps.mean(0), atol=1e-6)
    assert avg.preprocessing[-1] == {"step": "repeats", "mode": "average", "stories": {"wheretheressmoke": 3}}
    kept = read_huth(tmp_path / "a", stories=["wheretheressmoke"], repeats="keep")
    assert kept.runs == [(0, 30), (30, 60), (60, 90)]
    assert {s.stimulus for s in kept.samples} == {"wheretheressmoke"}
    assert {s.extra["run"] for s in kept.samples} == {f"wheretheressmoke_rep{r:02d}" for r in range(3)}
    assert len(kept.samples) == 3 * len(avg.samples)
    write_huth(tmp_path / "b", stories=stories, repeated={"wheretheressmoke": 3}, stacked=True)
    with pytest.raises(DatasetError, match="90 rows, 3 x the 30 trimmed TRs.*repeat_layout=stacked"):
        read_huth(tmp_path / "b")
    stacked = read_huth(tmp_path / "b", stories=["wheretheressmoke"], repeat_layout="stacked")
    assert stacked.raw.shape == (30, 30)


def test_mismatched_files_fail_clearly(tmp_path):
    write_huth(tmp_path, stories={"alpha": 60, "bravo": 55, "charlie": 58})
    deriv = tmp_path / "derivative"
    (deriv / "respdict.json").write_text(json.dumps({"alpha": 61, "bravo": 55, "charlie": 58}))
    with pytest.raises(DatasetError, match=r"alpha.hf5: 'data' has 40 rows, but respdict.json says 61 TRs, i.e. 41"):
        read_huth(deriv)
    assert read_huth(deriv, check_respdict=False, stories="alpha").raw.shape == (40, 30)
    with h5py.File(deriv / "preprocessed_data" / "UTS01" / "bravo.hf5", "w") as f:
        f.create_dataset("responses", data=np.zeros((35, 30)))
    with pytest.raises(DatasetError, match=r"bravo.hf5: no dataset 'data' \(found keys \['responses'\]\)"):
        read_huth(deriv, stories="bravo")
    with h5py.File(deriv / "preprocessed_data" / "UTS01" / "charlie.hf5", "w") as f:
        f.create_dataset("data", data=np.zeros((10, 30)))
    (deriv / "respdict.json").write_text(json.dumps({"alpha": 60, "bravo": 55, "charlie": 30}))
    with pytest.raises(DatasetError, match="words lie outside the run"):
        read_huth(deriv, stories="charlie")
    with pytest.raises(DatasetError, match="no .hf5 for stories"):
        read_huth(deriv, stories="zulu")
    (tmp_path / "nowhere").mkdir()
    with pytest.raises(DatasetError, match="expected ds003020"):
        read_huth(tmp_path / "nowhere")


def test_roi_file_and_missing_textgrids(tmp_path):
    write_huth(tmp_path)
    deriv = tmp_path / "derivative"
    (tmp_path / "UTS01.json").write_text(json.dumps({"speech": [3, 1, 7], "auditory": [7, 20]}))
    rec = read_huth(deriv, roi_file=str(tmp_path / "UTS01.json"), roi=["speech", "auditory"])
    assert rec.columns.tolist() == [1, 3, 7, 20] and rec.raw.shape[1] == 4
    (deriv / "TextGrids" / "delta.TextGrid").unlink()
    rec = read_huth(deriv)
    assert rec.dropped["stories_without_textgrid"] == ["delta"] and len(rec.runs) == 3


def test_convert_huth_drops_nan_voxels_and_holds_out_a_story(tmp_path):
    write_huth(tmp_path, nan_voxel=4, stories={"alpha": 60, "bravo": 55, "charlie": 58, "delta": 62,
                                               "wheretheressmoke": 50}, repeated={"wheretheressmoke": 2})
    ds = convert("huth", tmp_path / "derivative", tmp_path / "out", split="held_out_story",
                 test_stories="wheretheressmoke", pca_components=8)
    split = ds.meta["split"]
    assert split["method"] == "held_out_story" and {ds.by_id(i).stimulus for i in split["test"]} == {"wheretheressmoke"}
    assert ds.meta["dropped"]["nonfinite_voxels"] == 1 and ds.meta["dropped"]["filler_tokens"] > 0
    columns = np.load(tmp_path / "out" / "raw" / "columns.npy")
    assert 4 not in columns and len(columns) == 29
    assert ds.feature_dim == 8 and ds.meta["tr"] == 2.0
    assert [s["step"] for s in ds.meta["preprocessing"]] == ["read", "repeats", "per_run", "standardize", "pca"]
