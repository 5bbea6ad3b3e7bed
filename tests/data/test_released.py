import os
import pickle

import numpy as np
import pytest

from brainllm.data.convert import convert
from brainllm.data.released import read_released, restricted_load, restricted_loads
from brainllm.errors import DatasetError
from tests.data.real_fixtures import numpy1_pickle, write_released


class _RunsShell:
    """Unpickling this calls os.system (the classic pickle attack)."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def test_a_pickle_that_would_run_code_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"fmri": np.zeros(3), "x": _RunsShell(f"touch {marker}")}, protocol=4)
    assert b"system" in payload
    with pytest.raises(DatasetError, match=r"refusing to unpickle '(posix|os|nt)\.system'"):
        restricted_loads(payload, "evil.pkl")
    assert not marker.exists()
    # the same payload hidden inside an authors'-layout file, through the converter
    folder = tmp_path / "Pereira"
    write_released(folder, "pereira")
    (folder / "P01.wq.pkl").write_bytes(pickle.dumps({0: [{"word": [_RunsShell(f"touch {marker}")]}]}))
    with pytest.raises(DatasetError, match=r"P01.wq.pkl: refusing to unpickle"):
        convert("released", tmp_path, tmp_path / "out", subject="P01", dataset="pereira")
    assert not marker.exists() and not (tmp_path / "out").exists()
    assert pickle.loads(payload) is not None and marker.exists()  # proof the payload was live


@pytest.mark.parametrize("payload, name", [
    (b"cbuiltins\neval\n(S'1+1'\ntR.", "builtins.eval"),
    (b"csubprocess\nPopen\n(S'true'\ntR.", "subprocess.Popen"),
    (b"cbuiltins\ngetattr\n(cbuiltins\nobject\nS'x'\ntR.", "builtins.getattr"),
    (b"cnumpy\nload\n(S'x'\ntR.", "numpy.load"),
    (pickle.dumps(exec, protocol=4), "builtins.exec"),  # STACK_GLOBAL (protocol 4) goes through find_class too
])
def test_every_global_outside_the_numpy_allowlist_is_refused(payload, name):
    with pytest.raises(DatasetError, match=f"refusing to unpickle '{name}'"):
        restricted_loads(payload)


def test_containers_numbers_strings_and_numpy_values_load_in_every_protocol():
    obj = {"fmri": np.arange(12, dtype=np.float32).reshape(3, 4), 7: [np.int64(3), np.float32(2.5), "text", (1, 2.0)],
           "ids": np.array([1, 2], dtype=np.int64), "nested": {"raw": [-1]}, "b": b"\x00\x01"}
    for data in [numpy1_pickle(obj)] + [pickle.dumps(obj, protocol=p) for p in (2, 3, 4, 5)]:
        back = restricted_loads(data)
        np.testing.assert_array_equal(back["fmri"], obj["fmri"])
        assert back["fmri"].dtype == np.float32 and back[7][0] == 3 and back[7][2:] == ["text", (1, 2.0)]
        assert back["nested"] == {"raw": [-1]} and back["b"] == b"\x00\x01"
    assert b"cnumpy.core.multiarray" in numpy1_pickle(obj)
    with pytest.raises(DatasetError, match="not allowed|not a readable"):
        restricted_loads(b"c_codecs\nencode\n(Vx\nVrot13\ntR.")
    with pytest.raises(DatasetError, match="not a readable pickle"):
        restricted_loads(pickle.dumps(obj, protocol=4)[:40], "cut.pkl")


def test_released_pereira_samples_follow_the_authors_construction(tmp_path):
    write_released(tmp_path / "Pereira", "pereira")
    rec = read_released(tmp_path, "P01")
    assert rec.meta["design"] == "sentence" and rec.raw.shape == (24, 16) and rec.raw.dtype == np.float32
    text = restricted_load(tmp_path / "Pereira" / "P01.wq.pkl")
    item = text[np.int64(2)][1]
    s1, s2 = [s for s in rec.samples if s.stimulus == "2" and s.extra["item"] == 1]
    chunks = [c["content"] for c in item["word"]]
    assert (s1.prompt, s1.continuation, s1.extra["k"]) == (chunks[0], chunks[1], 1)
    assert (s2.prompt, s2.continuation) == (" ".join(chunks[:2]), chunks[2])
    assert s1.frames == [2 * 4 + int(item["word"][1]["additional"][0])]  # offset of key 2 = 2 passages x 4 rows
    fmri = restricted_load(tmp_path / "Pereira" / "P01.pca1000.wq.pkl.dic")
    np.testing.assert_array_equal(rec.raw[8:12], fmri[np.int64(2)]["fmri"])


def test_released_huth_and_narratives_convert(tmp_path):
    write_released(tmp_path / "Huth", "huth", subject="1", numpy1=False)
    ds = convert("released", tmp_path, tmp_path / "huth_out", subject="1", dataset="huth", split="by_story")
    assert all(s.prompt == s.prompt.lower() and s.continuation == s.continuation.lower() for s in ds)
    assert {len(s.frames) for s in ds} == {4} and ds.meta["tr"] == 2.0
    assert ds.meta["preprocessing"][0]["step"] == "released" and "not refittable" in ds.meta["preprocessing"][0]["note"]
    assert ds.meta["raw_space"] is None and not (tmp_path / "huth_out" / "raw").exists()
    np.testing.assert_array_equal(np.asarray(ds.frames)[:12], restricted_load(
        tmp_path / "Huth" / "1.pca1000.wq.pkl.dic")["alpha"]["fmri"])  # released frames untouched by default
    write_released(tmp_path / "nar" / "Narratives", "narratives", subject="sub-016")
    rec = read_released(tmp_path / "nar", "016")
    assert rec.meta["subject"] == "sub-016" and rec.meta["design"] == "story" and rec.meta["tr"] == 1.5
    assert {s.stimulus for s in rec.samples} == {"pieman", "tunnel", "lucy"} and rec.raw.shape == (30, 16)
    with pytest.raises(DatasetError, match="pieman.wq.pkl has no subject sub-777"):
        read_released(tmp_path / "nar", "sub-777", stories=["pieman"])


def test_the_authors_example_converts_with_no_option(tmp_path):
    """Their README quick start ships `dataset/example.wq.pkl` + `example.pca1000.wq.pkl.dic` (Pereira layout, one
    participant): `brainllm convert released dataset --out X` needs neither subject nor dataset."""
    from typer.testing import CliRunner

    from brainllm.cli import app
    from brainllm.data.dataset import BrainTextDataset

    write_released(tmp_path / "dataset", "pereira", subject="example")
    assert sorted(p.name for p in (tmp_path / "dataset").iterdir()) == ["example.pca1000.wq.pkl.dic",
                                                                       "example.wq.pkl"]
    res = CliRunner().invoke(app, ["convert", "released", str(tmp_path / "dataset"), "--out", str(tmp_path / "X")])
    assert res.exit_code == 0, res.output
    assert "released data written to" in res.output
    ds = BrainTextDataset.load(tmp_path / "X")
    assert ds.meta["subject"] == "example" and ds.meta["source"] == "released (pereira)"
    assert ds.meta["design"] == "sentence" and len(ds) == 6 * 4 * 2 and ds.feature_dim == 16
    assert {s.subject for s in ds} == {"example"} and len({s.stimulus for s in ds}) == 6


def test_missing_released_options_name_the_flag_to_type(tmp_path):
    write_released(tmp_path / "two", "pereira", subject="P01")
    write_released(tmp_path / "two", "pereira", subject="M02")
    with pytest.raises(DatasetError, match=r"one of \['M02', 'P01'\] \(CLI: -o subject=M02\)"):
        convert("released", tmp_path / "two", tmp_path / "out")
    write_released(tmp_path / "nar", "narratives", subject="sub-016")  # the layout says Narratives: sub-XXX keys
    with pytest.raises(DatasetError, match=r"narratives.*CLI: -o subject=sub-016"):
        convert("released", tmp_path / "nar", tmp_path / "out")
    odd = tmp_path / "odd"
    odd.mkdir()
    (odd / "x.wq.pkl").write_bytes(pickle.dumps({(1, 2): []}))
    with pytest.raises(DatasetError, match=r"keys of no known layout.*\(CLI: -o dataset=pereira\)"):
        convert("released", odd, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_released_frames_fit_nothing_so_any_split_seed_is_allowed(tmp_path):
    """The released frames come PCA-reduced; convert fits no transform on them, so a new split seed leaks nothing
    (while a converted dataset with a fitted step refuses it: tests/data/test_splits_real.py)."""
    from brainllm.data.dataset import BrainTextDataset
    from brainllm.data.splits import make_split

    folder = tmp_path / "Pereira"
    write_released(folder, "pereira")
    convert("released", folder, tmp_path / "out", subject="P01")
    ds = BrainTextDataset.load(tmp_path / "out")
    assert not any("fitted_on" in step for step in ds.meta["preprocessing"])
    recorded = make_split(ds, "recorded")
    tests = [set(make_split(ds, "by_stimulus", seed=seed).test) for seed in range(1, 6)]  # no LeakError
    assert any(test != set(recorded.test) for test in tests)
