import pytest

from brainllm.data.splits import LeakError, Split, by_sample, by_stimulus, check_no_leak, kfold_by_stimulus
from tests.conftest import make_dataset


def test_by_stimulus_keeps_stimuli_whole_and_covers_everything(small_sentence_sim):
    ds = small_sentence_sim.dataset
    split = by_stimulus(ds, seed=1)
    stim = {name: {ds.by_id(i).stimulus for i in split.ids(name)} for name in ("train", "valid", "test")}
    assert not (stim["train"] & stim["test"]) and not (stim["valid"] & stim["test"]) and not (stim["train"] & stim["valid"])
    assert sorted(split.train + split.valid + split.test) == sorted(s.id for s in ds)
    assert len(stim["test"]) == 8 and len(stim["valid"]) == 4  # 20 % and 10 % of 40 passages
    assert by_stimulus(ds, seed=1).test == split.test and by_stimulus(ds, seed=2).test != split.test


def test_leak_check_catches_planted_leaks():
    ds = make_dataset(n_frames=6, n_stimuli=3)
    good = Split(["s0", "s3"], ["s1", "s4"], ["s2", "s5"], "by_stimulus", 0)
    check_no_leak(ds, good)
    with pytest.raises(LeakError, match="sample ids"):
        check_no_leak(ds, Split(["s0", "s2"], ["s1", "s4"], ["s2", "s5"], "by_stimulus", 0))
    with pytest.raises(LeakError, match="Stimuli"):  # s3 shares stim0 with test sample s0
        check_no_leak(ds, Split(["s1", "s3"], ["s2", "s5"], ["s0"], "by_stimulus", 0))
    ds.samples[3].frames = [2]  # s3 (train, stim0) now uses test sample s2's frame
    ds.samples[3].stimulus = "stim9"
    with pytest.raises(LeakError, match="brain frames"):
        check_no_leak(ds, Split(["s0", "s3"], ["s1", "s4"], ["s2", "s5"], "by_stimulus", 0))


def test_by_sample_warns_and_kfold_partitions_stimuli(small_sentence_sim):
    ds = small_sentence_sim.dataset
    with pytest.warns(UserWarning, match="inflated"):
        by_sample(ds, seed=0)
    tests = [set(kfold_by_stimulus(ds, n_folds=5, fold=f).test) for f in range(5)]
    assert set().union(*tests) == {s.id for s in ds}
    assert sum(len(t) for t in tests) == len(ds)
