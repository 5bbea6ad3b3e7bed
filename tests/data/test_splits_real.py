import numpy as np
import pytest

from brainllm.data.convert import convert
from brainllm.data.dataset import BrainTextDataset
from brainllm.data.preprocess import tr_chunk_samples
from brainllm.data.splits import (LeakError, Split, by_stimulus, by_story, check_no_leak, held_out_story, make_split,
                                  within_story)
from brainllm.errors import DatasetError
from tests.data.real_fixtures import write_huth, write_pereira


def _stories(n_stories=4, n_trs=60, prompt_words=6, seed=0) -> BrainTextDataset:
    """Story-design samples as the Huth/Narratives readers make them (3 words per TR, span_trs recorded)."""
    rng = np.random.default_rng(seed)
    samples, offset = [], 0
    for k in range(n_stories):
        words = [f"w{k}_{i}" for i in range(3 * (n_trs - 8))]
        trs = np.repeat(np.arange(n_trs - 8), 3)
        made, _ = tr_chunk_samples(words, trs, n_trs, name=f"story{k}", stimulus=f"story{k}", subject="x",
                                   frame_offset=offset, prompt_words=prompt_words, record_span=True)
        samples += made
        offset += n_trs
    return BrainTextDataset(rng.standard_normal((offset, 5)).astype(np.float32), samples, {"tr": 2.0})


def test_by_story_and_held_out_story_keep_stories_whole():
    ds = _stories(n_stories=6)
    split = by_story(ds, seed=2)
    assert split.method == "by_story" and split.test == by_stimulus(ds, seed=2).test
    held = make_split(ds, "held_out_story", test_stories="story3", valid_stories=["story0"])
    assert {ds.by_id(i).stimulus for i in held.test} == {"story3"}
    assert {ds.by_id(i).stimulus for i in held.valid} == {"story0"} and held.info["test_stories"] == ["story3"]
    auto = held_out_story(ds, ["story1", "story2"], seed=1)
    assert len({ds.by_id(i).stimulus for i in auto.valid}) == 1
    with pytest.raises(DatasetError, match=r"missing: \['nope'\]"):
        held_out_story(ds, "nope")


@pytest.mark.parametrize("gap", [0, 3, 8])
def test_within_story_keeps_a_gap_of_trs_between_train_and_test(gap):
    ds = _stories()
    split = within_story(ds, gap_trs=gap, seed=4)
    check_no_leak(ds, split)
    test_ids = set(split.test)
    for stim in ds.stimuli():
        test_spans = [ds.by_id(i).extra["span_trs"] for i in split.test if ds.by_id(i).stimulus == stim]
        assert test_spans, "every story contributes a test block"
        lo, hi = min(t[0] for t in test_spans), max(t[1] for t in test_spans)
        for i in split.train + split.valid:
            s = ds.by_id(i)
            if s.stimulus == stim:
                a, b = s.extra["span_trs"]
                assert a - hi - 1 >= gap or lo - b - 1 >= gap
    assert not test_ids & set(split.train) and split.info["gap_trs"] == gap
    n_used = len(split.train) + len(split.valid) + len(split.test)
    assert n_used + split.info["dropped_for_gap"] == len(ds)


def test_within_story_drops_more_with_a_larger_gap_and_leak_check_catches_a_planted_one():
    ds = _stories()
    small, large = within_story(ds, gap_trs=1, seed=0), within_story(ds, gap_trs=10, seed=0)
    assert large.info["dropped_for_gap"] > small.info["dropped_for_gap"]
    test_sample = ds.by_id(large.test[0])
    neighbour = next(s for s in ds if s.stimulus == test_sample.stimulus and s.id not in large.test
                     and abs(s.extra["tr_index"] - test_sample.extra["tr_index"]) == 6)
    planted = Split(large.train + [neighbour.id] if neighbour.id not in large.train else large.train,
                    large.valid, large.test, "within_story", 0, dict(large.info))
    with pytest.raises(LeakError, match="within 10 TRs of a test sample"):
        check_no_leak(ds, planted)
    shared = Split(large.train, large.valid, large.test, "by_story", 0)
    with pytest.raises(LeakError, match="Stimuli"):
        check_no_leak(ds, shared)  # outside within_story, stories may not be shared at all


def test_a_converted_dataset_refuses_splits_whose_test_frames_were_fitted_on(tmp_path):
    write_pereira(tmp_path / "P01" / "data_384sentences.mat", n_passages=12)
    ds = convert("pereira", tmp_path / "P01", tmp_path / "out", pca_components=4, seed=0)
    ds = BrainTextDataset.load(tmp_path / "out")
    recorded = make_split(ds, "recorded")
    assert recorded.test == ds.meta["split"]["test"]
    assert make_split(ds, "by_stimulus", seed=0).test == recorded.test  # the same split is fine
    with pytest.raises(LeakError, match="were used to fit the dataset's preprocessing"):
        make_split(ds, "by_stimulus", seed=1)
    with pytest.raises(LeakError, match="refit"):
        make_split(ds, "kfold_by_stimulus", n_folds=4, fold=3)
    with pytest.warns(UserWarning):
        make_split(ds, "by_sample")  # the authors' leaky split stays available, with its warning
    with pytest.raises(DatasetError, match="Unknown split method 'nope'"):
        make_split(ds, "nope")


def test_huth_within_story_conversion_records_gap_and_passes_leak_check(tmp_path):
    write_huth(tmp_path, stories={"alpha": 90, "bravo": 85})
    ds = convert("huth", tmp_path, tmp_path / "out", split="within_story", gap_trs=2, prompt_words=5,
                 pca_components=4)
    split = make_split(BrainTextDataset.load(tmp_path / "out"), "recorded")
    assert split.method == "within_story" and split.info["gap_trs"] == 2
    assert {ds.by_id(i).stimulus for i in split.test} == {"alpha", "bravo"}


def test_a_converted_dataset_trains_with_its_recorded_split(tmp_path, tiny_llama_path):
    from brainllm.config import from_dict
    from brainllm.training import train

    write_pereira(tmp_path / "P01" / "data_384sentences.mat", n_passages=10)
    convert("pereira", tmp_path / "P01", tmp_path / "ds", pca_components=8)
    cfg = from_dict({"data": {"path": str(tmp_path / "ds"), "split": "recorded"},
                     "model": {"backbone": str(tiny_llama_path), "adapter": {"name": "mlp", "hidden": 16}},
                     "training": {"warmup_epochs": 1, "epochs": 1, "lr": 1e-3, "cpu": True, "max_steps_per_epoch": 2},
                     "output": str(tmp_path / "run")})
    state = train(cfg)
    assert state.stage == "done" and np.isfinite(state.best_valid)
