"""Leak-free splits of a prepared dataset, and the leak check every split must pass.

The default keeps each stimulus (a Pereira passage, a story) whole on one side, so no test sample shares
text or a brain frame with training. Time series add `by_story` (the same, by story), `held_out_story` (named test
stories) and `within_story` (contiguous blocks of each story with a gap of TRs between train and test).
The authors' per-sample random split is available as an explicit option (`by_sample`), with a warning: in their
Pereira code 77 % of test samples share their fMRI image with a training sample.

A dataset written by `brainllm convert` records the split its PCA/scaler were fitted with (dataset.json
`split`); `check_no_leak` then also refuses any split whose test frames were among those fitted on.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from typing import Sequence

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


def by_story(dataset: BrainTextDataset, valid_fraction: float = 0.1, test_fraction: float = 0.2,
             seed: int = 0) -> Split:
    """Whole stories (runs) to train/valid/test: `by_stimulus` for time-series data, where stimulus = story."""
    split = by_stimulus(dataset, valid_fraction, test_fraction, seed)
    split.method = "by_story"
    return split


def held_out_story(dataset: BrainTextDataset, test_stories: str | Sequence[str] = (),
                   valid_stories: str | Sequence[str] | None = None, valid_fraction: float = 0.1,
                   seed: int = 0) -> Split:
    """The named stories are the test set (the full-story setting, e.g. Huth's `wheretheressmoke`).

    Validation stories are `valid_stories` if given, else a random `valid_fraction` (at least one) of the rest.
    """
    test = _names(test_stories)
    units = dataset.stimuli()
    missing = [t for t in test if t not in units]
    if not test or missing:
        raise DatasetError(f"held_out_story needs test_stories naming stories of the dataset; "
                           f"{'missing: ' + str(missing) if missing else 'none given'}. Stories: {units}.")
    rest = [u for u in units if u not in test]
    if valid_stories is not None:
        valid = _names(valid_stories)
        bad = [v for v in valid if v not in rest]
        if bad:
            raise DatasetError(f"valid_stories {bad} are not stories of the dataset outside the test set {test}.")
    else:
        if len(rest) < 2:
            raise DatasetError(f"Only {len(rest)} story is left besides the test stories; need >= 2 for train + valid.")
        n_valid = max(1, round(valid_fraction * len(units)))
        if n_valid >= len(rest):
            raise DatasetError(f"{len(rest)} non-test stories are too few for valid_fraction={valid_fraction}.")
        order = np.random.default_rng(seed).permutation(len(rest))
        valid = [rest[i] for i in order[:n_valid]]
    pick = lambda chosen: [s.id for s in dataset if s.stimulus in chosen]  # noqa: E731
    split = Split([s.id for s in dataset if s.stimulus not in test and s.stimulus not in valid], pick(valid),
                  pick(test), "held_out_story", seed, {"test_stories": sorted(test), "valid_stories": sorted(valid)})
    check_no_leak(dataset, split)
    return split


def _names(value: str | Sequence[str] | None) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else [str(v) for v in value]


def _span(sample) -> tuple[int, int]:
    """A sample's extent in story time: `span_trs` (first prompt word .. last frame) if recorded, else its frames."""
    span = sample.extra.get("span_trs")
    if span is not None:
        return int(span[0]), int(span[1])
    return min(sample.frames), max(sample.frames)


def _too_close(a: tuple[int, int], b: tuple[int, int], gap: int) -> bool:
    """Whether two spans are separated by fewer than `gap` TRs (overlap counts as too close)."""
    return not (a[0] - b[1] - 1 >= gap or b[0] - a[1] - 1 >= gap)


def within_story(dataset: BrainTextDataset, valid_fraction: float = 0.1, test_fraction: float = 0.2,
                 gap_trs: int = 5, seed: int = 0) -> Split:
    """Split every story in time: a contiguous test block and a contiguous validation block per story.

    Samples of training (and validation) whose span (from their first prompt word to their last frame, in TRs;
    `span_trs`, else the frame rows) comes within `gap_trs` TRs of a test sample's span in the same story are
    dropped from the split, and so are training samples within `gap_trs` of a validation sample. So no text
    and no frame is shared across the boundary, and slow drifts in the BOLD signal have `gap_trs` TRs to decay.
    For one-story subjects (many Narratives participants) this is the only honest split.
    """
    if gap_trs < 0:
        raise DatasetError(f"gap_trs must be >= 0, got {gap_trs}.")
    if not (0 < valid_fraction < 1 and 0 < test_fraction < 1 and valid_fraction + test_fraction < 1):
        raise DatasetError(f"valid/test fractions must be in (0, 1) with a sum below 1, got "
                           f"{(valid_fraction, test_fraction)}.")
    rng = np.random.default_rng(seed)
    by_stim: dict[str, list] = {}
    for s in dataset:
        by_stim.setdefault(s.stimulus, []).append(s)
    train, valid, test, dropped = [], [], [], 0
    for stim, samples in by_stim.items():
        order = sorted(samples, key=lambda s: (_span(s)[0], s.id))
        n = len(order)
        n_test, n_valid = max(1, round(test_fraction * n)), max(1, round(valid_fraction * n))
        if n_test + n_valid >= n:
            log.info("within_story: story %s has only %d samples; all go to training.", stim, n)
            train += order
            continue
        t0 = int(rng.integers(0, n - n_test + 1))
        test_block = order[t0:t0 + n_test]
        rest_before, rest_after = order[:t0], order[t0 + n_test:]
        # validation: the far end of the longer remainder, as far from the test block as the story allows
        valid_block = rest_before[:n_valid] if len(rest_before) >= len(rest_after) else rest_after[-n_valid:]
        chosen = {s.id for s in test_block} | {s.id for s in valid_block}
        test_spans = [_span(s) for s in test_block]
        keep_valid = [s for s in valid_block if not any(_too_close(_span(s), t, gap_trs) for t in test_spans)]
        valid_spans = [_span(s) for s in keep_valid]
        keep_train = [s for s in order if s.id not in chosen
                      and not any(_too_close(_span(s), t, gap_trs) for t in test_spans + valid_spans)]
        dropped += n - len(test_block) - len(keep_valid) - len(keep_train)
        test += test_block
        valid += keep_valid
        train += keep_train
    if not test or not valid or not train:
        raise DatasetError(f"within_story: {len(train)} train, {len(valid)} valid, {len(test)} test samples left after "
                           f"keeping a {gap_trs}-TR gap around test/validation blocks ({dropped} dropped); the stories "
                           "are too short for these fractions, gap and sample spans (prompt + frames).")
    ids = lambda chosen: [s.id for s in chosen]  # noqa: E731
    split = Split(ids(train), ids(valid), ids(test), "within_story", seed,
                  {"valid_fraction": valid_fraction, "test_fraction": test_fraction, "gap_trs": gap_trs,
                   "dropped_for_gap": dropped})
    log.info("within_story split: %d train, %d valid, %d test; %d samples dropped to keep a %d-TR gap.",
             len(train), len(valid), len(test), dropped, gap_trs)
    check_no_leak(dataset, split)
    return split


def recorded(dataset: BrainTextDataset) -> Split:
    """The split stored in dataset.json by `brainllm convert` (the one its fitted preprocessing was fitted with)."""
    row = dataset.meta.get("split")
    if not isinstance(row, dict) or "train" not in row:
        raise DatasetError("This dataset records no split (dataset.json has no 'split' with sample ids); "
                           "choose a method such as by_stimulus.")
    split = Split.from_json(row)
    check_no_leak(dataset, split)
    return split


SPLITTERS = {"by_stimulus": by_stimulus, "by_sample": by_sample, "by_story": by_story,
             "held_out_story": held_out_story, "within_story": within_story}


def make_split(dataset: BrainTextDataset, method: str = "by_stimulus", **kwargs) -> Split:
    """Build a split by name: `by_stimulus`, `by_sample`, `kfold_by_stimulus` (n_folds/fold), `by_story`,
    `held_out_story` (test_stories), `within_story` (gap_trs) or `recorded` (the split stored by convert)."""
    if method == "kfold_by_stimulus":
        return kfold_by_stimulus(dataset, **kwargs)
    if method == "recorded":
        return recorded(dataset)
    if method not in SPLITTERS:
        raise DatasetError(f"Unknown split method '{method}'; choose from "
                           f"{[*SPLITTERS, 'kfold_by_stimulus', 'recorded']}.")
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
        if stimuli and split.method != "within_story":
            raise LeakError(f"Stimuli {sorted(stimuli)[:3]} have samples in both {name} and test.")
        frames = test_frames & {f for s in samples[name] for f in s.frames}
        if frames:
            raise LeakError(f"{len(frames)} brain frames are used by both {name} and test samples, e.g. {sorted(frames)[:3]}.")
    if split.method == "within_story":
        _check_gap(samples, int(split.info.get("gap_trs", 0)))
    _check_fitted_on(dataset, split, test_frames)


def _check_gap(samples: dict[str, list], gap: int) -> None:
    """Within-story splits: every train/valid sample keeps `gap` TRs from every test sample of the same story."""
    test_spans: dict[str, list] = {}
    for s in samples["test"]:
        test_spans.setdefault(s.stimulus, []).append(_span(s))
    for name in ("train", "valid"):
        for s in samples[name]:
            for t in test_spans.get(s.stimulus, ()):
                if _too_close(_span(s), t, gap):
                    raise LeakError(f"{name} sample '{s.id}' (TRs {_span(s)}) is within {gap} TRs of a test sample "
                                    f"(TRs {t}) of story '{s.stimulus}'.")


def _check_fitted_on(dataset: BrainTextDataset, split: Split, test_frames: set) -> None:
    """If the frames were preprocessed by a transform fitted on some samples (dataset.json 'split'), no test
    frame of this split may be among the frames it was fitted on. A dataset whose recorded preprocessing fitted
    nothing (every step without `fitted_on`, as the authors' released frames, PCA-reduced before brainllm reads
    them) may be split any way."""
    fitted = dataset.meta.get("split")
    if not isinstance(fitted, dict) or fitted.get("method") == "by_sample" or "train" not in fitted:
        return
    steps = dataset.meta.get("preprocessing")
    if isinstance(steps, list) and not any(isinstance(s, dict) and "fitted_on" in s for s in steps):
        return
    fit_frames = {f for i in fitted["train"] if i in dataset._index for f in dataset.by_id(i).frames}
    shared = test_frames & fit_frames
    if shared:
        raise LeakError(
            f"{len(shared)} test frames of this split (e.g. {sorted(shared)[:3]}) were used to fit the dataset's "
            f"preprocessing (PCA/scaler/voxel selection, fitted with split '{fitted.get('method')}'). Use "
            "make_split(ds, 'recorded'), or refit the preprocessing for the new split with "
            "brainllm.data.convert.refit (needs the raw frames kept by convert)."
        )
