import json

import numpy as np
import pytest
from scipy.io import loadmat, savemat
from typer.testing import CliRunner

from brainllm.cli import app
from brainllm.data.dataset import BrainTextDataset
from brainllm.data.pereira import read_pereira
from brainllm.data.tasks import chunk_words
from brainllm.data.splits import make_split
from brainllm.errors import DatasetError
from tests.data.real_fixtures import write_pereira


def test_reads_sentences_passages_topics_and_chunks_like_the_paper(tmp_path):
    path = write_pereira(tmp_path / "P01" / "data_384sentences.mat")
    mat = loadmat(path)
    rec = read_pereira(path)
    assert rec.raw.shape == (32, 60) and rec.raw.dtype == np.float32 and rec.runs == []
    np.testing.assert_allclose(rec.raw, mat["examples_passagesentences"], rtol=1e-6)
    assert len(rec.samples) == 64 and rec.meta["subject"] == "P01" and rec.meta["tr"] is None
    first = mat["keySentences"][0][0][0]
    chunks = chunk_words(first.split())
    s1, s2 = rec.samples[0], rec.samples[1]
    assert (s1.prompt, s1.continuation) == (" ".join(chunks[0]), " ".join(chunks[1]))
    assert (s2.prompt, s2.continuation) == (" ".join(chunks[0] + chunks[1]), " ".join(chunks[2]))
    assert s1.frames == s2.frames == [0] and s1.stimulus == s2.stimulus == "exp2_p001"
    # passage 3 (1-based) holds sentences 8-11 and has topic index 3 -> keyPassageCategory[2]
    s = next(x for x in rec.samples if x.frames == [9])
    assert s.stimulus == "exp2_p003" and s.extra["sentence"] == 1 and s.extra["topic"] == "topic2"
    assert s.extra["passage"] == "passage2"


def test_examples_variant_and_row_oriented_cells_read_the_same(tmp_path):
    a = read_pereira(write_pereira(tmp_path / "a" / "data_384sentences.mat", seed=4), subject="P01")
    b = read_pereira(write_pereira(tmp_path / "b" / "examples_384sentences.mat", seed=4, variant="examples",
                                   column_cells=False), subject="P01")
    np.testing.assert_array_equal(a.raw, b.raw)
    assert [s.to_json() for s in a.samples] == [s.to_json() for s in b.samples]
    assert b.preprocessing[0]["brain_key"] == ["examples"]


def test_roi_selection_uses_the_1_based_roi_columns(tmp_path):
    data = np.arange(32 * 60, dtype=np.float64).reshape(32, 60)
    path = write_pereira(tmp_path / "P01" / "data_384sentences.mat", data=data)
    rec = read_pereira(path, atlas="languageLH", rois=["L_IFG", "L_PostTemp"])
    np.testing.assert_array_equal(rec.columns, [0, 1, 2, 9])  # roiColumns {1,2,3} and {10}
    np.testing.assert_array_equal(rec.raw, data[:, [0, 1, 2, 9]])
    whole = read_pereira(path, atlas="MD")
    np.testing.assert_array_equal(whole.columns, [19, 20, 21, 22])
    with pytest.raises(DatasetError, match="atlas 'visual' not in meta.atlases"):
        read_pereira(path, atlas="visual")
    with pytest.raises(DatasetError, match=r"ROIs \['L_AG'\] are not in atlas"):
        read_pereira(path, atlas="languageLH", rois="L_AG")
    with pytest.raises(DatasetError, match="without an atlas"):
        read_pereira(path, rois="L_IFG")


def test_both_experiments_join_on_shared_voxel_coordinates(tmp_path):
    coords2 = np.stack(np.unravel_index(np.arange(60), (79, 95, 69)), 1)
    coords3 = coords2[5:].copy()  # exp3 lacks the first 5 voxels and has 5 others
    coords3 = np.concatenate([coords3, coords2[:5] + 1000])
    write_pereira(tmp_path / "M02" / "data_384sentences.mat", coords=coords2)
    write_pereira(tmp_path / "M02" / "data_243sentences.mat", n_passages=6, per_passage=3, seed=1, coords=coords3,
                  short_sentence=True)
    rec = read_pereira(tmp_path / "M02")
    assert rec.raw.shape == (32 + 18, 55) and rec.meta["subject"] == "M02"
    assert rec.meta["experiments"] == ["exp2", "exp3"]
    assert rec.dropped == {"sentences_under_3_words": 1, "voxels_not_shared_by_all_files": 10}
    assert {s.stimulus for s in rec.samples if s.frames[0] >= 32} == {f"exp3_p{p:03d}" for p in range(1, 7)}
    assert len(rec.samples) == 2 * (50 - 1)
    only3 = read_pereira(tmp_path / "M02", experiments=3)
    assert only3.raw.shape == (18, 60)


def test_malformed_files_fail_with_the_file_the_key_and_what_to_do(tmp_path):
    path = write_pereira(tmp_path / "data_384sentences.mat")
    mat = {k: v for k, v in loadmat(path).items() if not k.startswith("__")}
    bad = dict(mat)
    del bad["examples_passagesentences"]
    savemat(tmp_path / "nokey.mat", bad)
    with pytest.raises(DatasetError, match=r"nokey.mat: no brain-data key; expected one of \['examples_passagesentences', "
                                           r"'examples'\]"):
        read_pereira(tmp_path / "nokey.mat")
    short = dict(mat, keySentences=mat["keySentences"][:30])
    savemat(tmp_path / "short.mat", short)
    with pytest.raises(DatasetError, match="has 32 rows but keySentences has 30"):
        read_pereira(tmp_path / "short.mat")
    zero = dict(mat, labelsPassageForEachSentence=mat["labelsPassageForEachSentence"] - 1)
    savemat(tmp_path / "zero.mat", zero)
    with pytest.raises(DatasetError, match="1-based"):
        read_pereira(tmp_path / "zero.mat")
    v73 = tmp_path / "v73.mat"
    v73.write_bytes(b"MATLAB 7.3 MAT-file, Platform: GLNXA64".ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02IM" +
                    b"\x00" * 512)
    with pytest.raises(DatasetError, match="v7.3"):
        read_pereira(v73)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="no sentence-experiment file"):
        read_pereira(tmp_path / "empty")


def test_cli_convert_writes_a_prepared_dataset_with_split_and_log(tmp_path, caplog):
    write_pereira(tmp_path / "P01" / "data_384sentences.mat", n_passages=10)
    out = tmp_path / "prepared"
    result = CliRunner().invoke(app, ["convert", "pereira", str(tmp_path / "P01"), "--out", str(out),
                                      "-o", "atlas=languageLH", "-o", "seed=3"])
    assert result.exit_code == 0, result.output
    assert "40 frames x" in result.output
    ds = BrainTextDataset.load(out)
    header = json.loads((out / "dataset.json").read_text())
    steps = [s["step"] for s in header["preprocessing"]]
    assert steps == ["read", "roi", "standardize", "pca"]
    n_train_frames = len({f for i in header["split"]["train"] for f in ds.by_id(i).frames})
    assert ds.feature_dim == min(n_train_frames - 1, 6)  # 1000 components clipped to what 6 ROI voxels support
    assert header["split"]["method"] == "by_stimulus" and header["split"]["seed"] == 3
    assert header["preprocess_config"]["pca_components"] == 1000 and header["source"] == "pereira2018"
    assert make_split(ds, "recorded").test == make_split(ds, "by_stimulus", seed=3).test
    result = CliRunner().invoke(app, ["convert", "pereira", str(tmp_path / "P01"), "--out", str(out)])
    assert result.exit_code != 0 and "already exists" in str(result.exception)
    result = CliRunner().invoke(app, ["convert", "pereira", str(tmp_path / "P01"), "--out", str(tmp_path / "o2"),
                                      "-o", "atlass=x"])
    assert "Unknown option(s) ['atlass']" in str(result.exception)
