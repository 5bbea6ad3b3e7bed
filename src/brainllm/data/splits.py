"""Leak-free splits of a prepared dataset, and the leak check every split must pass.

The default keeps each stimulus (a Pereira passage, a story) whole on one side, so no test sample shares
text or a brain frame with training. The authors' per-sample random split is available as an explicit option
(`by_sample`), with a warning: in their Pereira code 77 % of test samples share their fMRI image with a
training sample.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field

import numpy as np

from ..errors import DatasetError
from .dataset import BrainTextDataset

log = logging.getLogger(__name__)

SPLIT_NAMES = ("train", "valid", "test")


class LeakError(DatasetError):
    """A split shares sample ids, stimuli or brain frames between training/validation and test."""


@dataclass
class Split:
    """Sample ids per split plus how they were made (stored as split.json in a run folder)."""

    train: list[str]
    valid: list[str]
    test: list[str]
    method: str
    seed: int
    info: dict = field(default_factory=dict)

    def ids(self, name: str) -> list[str]:
        if name not in SPLIT_NAMES:
            raise DatasetError(f"Unknown split '{name}'; expected one of {SPLIT_NAMES}.")
        return getattr(self, name)

    def to_json(self) -> dict:
        return {"method": self.method, "seed": self.seed, "info": self.info,
                "train": self.train, "valid": self.valid, "test": self.test}

    @classmethod
    def from_json(cls, row: dict) -> "Split":
        return cls(list(row["train"]), list(row["valid"]), list(row["test"]), row["method"], int(row["seed"]),
                   dict(row.get("info", {})))


def _partition(units: list[str], fractions: tuple[float, float], seed: int) -> tuple[set, set, set]:
    """Shuffle units and cut them into (train, valid, test) with at least one unit in valid and test."""
    valid_fraction, test_fraction = fractions
    if not (0 < valid_fraction < 1 and 0 < test_fraction < 1 and valid_fraction + test_fraction < 1):
        raise DatasetError(f"valid/test fractions must be in (0, 1) with a sum below 1, got {fractions}.")
    if len(units) < 3:
        raise DatasetError(f"Need at least 3 units to split into train/valid/test, found {len(units)}.")
    order = np.random.default_rng(seed).permutation(len(units))
    n_test = max(1, round(test_fraction * len(units)))
    n_valid = max(1, round(valid_fraction * len(units)))
    if n_test + n_valid >= len(units):
        raise DatasetError(f"{len(units)} units are too few for valid={valid_fraction}, test={test_fraction}.")
    shuffled = [units[i] for i in order]
    return set(shuffled[n_test + n_valid:]), set(shuffled[n_test:n_test + n_valid]), set(shuffled[:n_test])


def by_stimulus(dataset: BrainTextDataset, valid_fraction: float = 0.1, test_fraction: float = 0.2,
                seed: int = 0) -> Split:
    """Assign whole stimuli to train/valid/test (the default, leak-free split)."""
    train, valid, test = _partition(dataset.stimuli(), (valid_fraction, test_fraction), seed)
    pick = lambda units: [s.id for s in dataset if s.stimulus in units]  # noqa: E731
    split = Split(pick(train), pick(valid), pick(test), "by_stimulus", seed,
                  {"valid_fraction": valid_fraction, "test_fraction": test_fraction,
                   "stimuli": {"train": len(train), "valid": len(valid), "test": len(test)}})
    check_no_leak(dataset, split)
    return split


def by_sample(dataset: BrainTextDataset, valid_fraction: float = 0.1, test_fraction: float = 0.2,
              seed: int = 0) -> Split:
    """The authors' per-sample random split. It leaks (shared stimuli and frames); use only to reproduce them."""
    msg = ("by_sample split: samples of one stimulus (and the brain frames they share) fall on both sides of the "
           "split, as in the authors' code. Scores are inflated; use by_stimulus for honest results.")
    warnings.warn(msg, stacklevel=2)
    log.warning(msg)
    ids = [s.id for s in dataset]
    train, valid, test = _partition(ids, (valid_fraction, test_fraction), seed)
    return Split([i for i in ids if i in train], [i for i in ids if i in valid], [i for i in ids if i in test],
                 "by_sample", seed, {"valid_fraction": valid_fraction, "test_fraction": test_fraction, "leaky": True})


def kfold_by_stimulus(dataset: BrainTextDataset, n_folds: int = 5, fold: int = 0, valid_fraction: float = 0.1,
                      seed: int = 0) -> Split:
    """Fold `fold` of a k-fold cross-validation over stimuli; validation stimuli come from the training folds."""
    if not 0 <= fold < n_folds:
        raise DatasetError(f"fold must be in 0..{n_folds - 1}, got {fold}.")
    units = dataset.stimuli()
    if len(units) < n_folds + 1:
        raise DatasetError(f"{len(units)} stimuli are too few for {n_folds} folds plus a validation set.")
    rng = np.random.default_rng(seed)
    shuffled = [units[i] for i in rng.permutation(len(units))]
    test = set(shuffled[fold::n_folds])
    rest = [u for u in shuffled if u not in test]
    n_valid = max(1, round(valid_fraction * len(units)))
    valid = set(rest[:n_valid])
    pick = lambda chosen: [s.id for s in dataset if s.stimulus in chosen]  # noqa: E731
    split = Split([s.id for s in dataset if s.stimulus not in test and s.stimulus not in valid], pick(valid),
                  pick(test), "kfold_by_stimulus", seed, {"n_folds": n_folds, "fold": fold})
    check_no_leak(dataset, split)
    return split


SPLITTERS = {"by_stimulus": by_stimulus, "by_sample": by_sample}


def make_split(dataset: BrainTextDataset, method: str = "by_stimulus", **kwargs) -> Split:
    """Build a split by name (`by_stimulus`, `by_sample`, or `kfold_by_stimulus` with n_folds/fold)."""
    if method == "kfold_by_stimulus":
        return kfold_by_stimulus(dataset, **kwargs)
    if method not in SPLITTERS:
        raise DatasetError(f"Unknown split method '{method}'; choose from {[*SPLITTERS, 'kfold_by_stimulus']}.")
    return SPLITTERS[method](dataset, **kwargs)


def check_no_leak(dataset: BrainTextDataset, split: Split) -> None:
    """Fail loudly if test shares a sample id, a stimulus or a brain frame with train or valid.

    Validation is checked against test too, because model selection on it must not see test data. A split
    made with `by_sample` is exempt from the stimulus/frame checks (it is leaky by construction and says so).
    """
    parts = {name: split.ids(name) for name in SPLIT_NAMES}
    for name, ids in parts.items():
        if len(set(ids)) != len(ids):
            raise LeakError(f"Split '{name}' lists a sample id more than once.")
        unknown = [i for i in ids if i not in dataset._index]
        if unknown:
            raise LeakError(f"Split '{name}' names {len(unknown)} ids absent from the dataset, e.g. {unknown[:3]}.")
    test_ids = set(parts["test"])
    for name in ("train", "valid"):
        shared = test_ids & set(parts[name])
        if shared:
            raise LeakError(f"{len(shared)} sample ids are in both {name} and test, e.g. {sorted(shared)[:3]}.")
    if split.method == "by_sample":
        return
    samples = {name: [dataset.by_id(i) for i in ids] for name, ids in parts.items()}
    test_stimuli = {s.stimulus for s in samples["test"]}
    test_frames = {f for s in samples["test"] for f in s.frames}
    for name in ("train", "valid"):
        stimuli = test_stimuli & {s.stimulus for s in samples[name]}
        if stimuli:
            raise LeakError(f"Stimuli {sorted(stimuli)[:3]} have samples in both {name} and test.")
        frames = test_frames & {f for s in samples[name] for f in s.frames}
        if frames:
            raise LeakError(f"{len(frames)} brain frames are used by both {name} and test samples, e.g. {sorted(frames)[:3]}.")
