"""The prepared dataset: the one on-disk format every reader writes and every model reads.

A prepared dataset is a folder holding

* `dataset.json`: format name and version, subject, source, `feature_dim`, `n_frames`, `n_samples`, TR in
  seconds (or null), whether the data are simulated, and the preprocessing log (a list of steps);
* `frames.npy`: float32 array `(n_frames, feature_dim)`, opened memory-mapped;
* `samples.jsonl`: one sample per line with `id, stimulus, subject, prompt, continuation, frames` (row indices
  into frames.npy, in temporal order) plus source-specific fields;
* `runs.jsonl` (story designs only, optional): one time-series run per line with its frame rows, the time of
  each row and the timed transcript (`Run`), which full-story decoding needs;
* `raw/frames.npy` (optional): the same rows in the source's voxel space before PCA (z-scored per run), which
  voxelwise encoding models (the Tang et al. baseline) fit.

`stimulus` is the unit a split must keep whole (a Pereira passage, a story).
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from ..errors import BrainLLMError, DatasetError
from ..io import read_json, read_jsonl, replace_dir, staging_dir, write_json, write_jsonl

log = logging.getLogger(__name__)

FORMAT_NAME = "brainllm-dataset"
FORMAT_VERSION = 1
REQUIRED_FIELDS = ("id", "stimulus", "subject", "prompt", "continuation", "frames")
_NONFINITE_CHUNK = 4096  # rows checked at a time, so validation of a memory-mapped array stays in bounded RAM


@dataclass
class Sample:
    """One (brain frames, prompt, continuation) triple.

    `frames` are row indices into the dataset's frame array, `(T,)` with T >= 1; `extra` holds source-specific
    fields (e.g. Pereira topic, story TR index) that round-trip through samples.jsonl.
    """

    id: str
    stimulus: str
    subject: str
    prompt: str
    continuation: str
    frames: list[int]
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict:
        row = {k: v for k, v in asdict(self).items() if k != "extra"}
        row.update(self.extra)
        return row

    @classmethod
    def from_json(cls, row: dict, where: str) -> "Sample":
        missing = [k for k in REQUIRED_FIELDS if k not in row]
        if missing:
            raise DatasetError(f"{where}: sample lacks the field(s) {missing}; every sample needs {list(REQUIRED_FIELDS)}.")
        extra = {k: v for k, v in row.items() if k not in REQUIRED_FIELDS}
        frames = row["frames"]
        if not isinstance(frames, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in frames):
            raise DatasetError(f"{where}: 'frames' must be a list of integer row indices, found {frames!r}.")
        return cls(str(row["id"]), str(row["stimulus"]), str(row["subject"]), row["prompt"], row["continuation"],
                   frames, extra)


@dataclass
class Run:
    """One continuous recording (a story run): which frame rows it spans, when each row and each word happened.

    Samples alone cut a story into TR chunks; full-story decoding needs every TR and every word time.

    `rows`: `[start, stop)` rows of frames.npy; `tr_times`: `(stop - start,)` seconds from audio onset of each
    row's centre; `words`: the transcript in temporal order; `word_times`: `(n_words,)` seconds from audio onset
    (word midpoints for real transcripts), non-decreasing.
    """

    name: str
    stimulus: str
    rows: tuple[int, int]
    tr_times: list[float]
    words: list[str]
    word_times: list[float]

    def to_json(self) -> dict:
        return {"name": self.name, "stimulus": self.stimulus, "rows": list(self.rows),
                "tr_times": [round(float(t), 4) for t in self.tr_times], "words": list(self.words),
                "word_times": [round(float(t), 4) for t in self.word_times]}

    @classmethod
    def from_json(cls, row: dict, where: str) -> "Run":
        missing = [k for k in ("name", "stimulus", "rows", "tr_times", "words", "word_times") if k not in row]
        if missing:
            raise DatasetError(f"{where}: run lacks the field(s) {missing}.")
        return cls(str(row["name"]), str(row["stimulus"]), tuple(int(r) for r in row["rows"]),
                   [float(t) for t in row["tr_times"]], [str(w) for w in row["words"]],
                   [float(t) for t in row["word_times"]])

    @property
    def n_trs(self) -> int:
        return self.rows[1] - self.rows[0]

    def validate(self, n_frames: int) -> None:
        start, stop = self.rows
        if not 0 <= start < stop <= n_frames:
            raise DatasetError(f"Run '{self.name}' spans rows {start}..{stop}, outside frames.npy (0..{n_frames}).")
        if len(self.tr_times) != stop - start:
            raise DatasetError(f"Run '{self.name}' has {stop - start} rows but {len(self.tr_times)} TR times.")
        if len(self.words) != len(self.word_times):
            raise DatasetError(f"Run '{self.name}' has {len(self.words)} words but {len(self.word_times)} word times.")
        for name, times in (("TR", self.tr_times), ("word", self.word_times)):
            arr = np.asarray(times, dtype=float)
            if not np.all(np.isfinite(arr)) or np.any(np.diff(arr) < 0):
                raise DatasetError(f"Run '{self.name}': {name} times must be finite and non-decreasing.")


class BrainTextDataset:
    """Brain frames plus the text samples aligned to them.

    Args:
        frames: `(n_frames, D)` float32 array (may be a read-only memory map).
        samples: the samples; their `frames` index rows of `frames`.
        meta: the dataset.json content other than the fields derived from the arrays (subject, source, tr,
            simulated, preprocessing, description...).
        runs: the time-series runs with their timed transcripts (story designs; empty for event designs).
        raw: `(n_frames, V)` float32 frames in the source's voxel space (optional; may be a memory map).
    """

    def __init__(self, frames: np.ndarray, samples: Sequence[Sample], meta: dict[str, Any] | None = None,
                 runs: Sequence[Run] = (), raw: np.ndarray | None = None):
        self.frames = frames
        self.samples = list(samples)
        self.meta = dict(meta or {})
        self.runs = list(runs)
        self.raw = raw
        self._index = {s.id: i for i, s in enumerate(self.samples)}
        self.validate()

    # ------------------------------------------------------------------ access
    def __len__(self) -> int:
        return len(self.samples)

    def __iter__(self) -> Iterator[Sample]:
        return iter(self.samples)

    def __getitem__(self, i: int) -> Sample:
        return self.samples[i]

    def by_id(self, sample_id: str) -> Sample:
        try:
            return self.samples[self._index[sample_id]]
        except KeyError:
            raise DatasetError(f"No sample with id '{sample_id}' in this dataset.") from None

    @property
    def feature_dim(self) -> int:
        return int(self.frames.shape[1])

    @property
    def simulated(self) -> bool:
        return bool(self.meta.get("simulated", False))

    def sample_frames(self, sample: Sample | int | str) -> np.ndarray:
        """The frames of one sample as a `(T, D)` float32 array (a copy, safe to modify)."""
        if isinstance(sample, int):
            sample = self.samples[sample]
        elif isinstance(sample, str):
            sample = self.by_id(sample)
        return np.asarray(self.frames[sample.frames], dtype=np.float32)

    def stimuli(self) -> list[str]:
        """The units a split must keep whole, in order of first appearance."""
        return list(dict.fromkeys(s.stimulus for s in self.samples))

    def subset(self, ids: Sequence[str]) -> "BrainTextDataset":
        """A dataset view with only the given sample ids (same frame array, no copy)."""
        return BrainTextDataset(self.frames, [self.by_id(i) for i in ids], self.meta, self.runs, self.raw)

    def run(self, name: str) -> Run:
        """The run called `name` (a story, or `<story>_repNN` for kept repeats)."""
        for r in self.runs:
            if r.name == name:
                return r
        raise DatasetError(f"No run '{name}' in this dataset; runs: {[r.name for r in self.runs] or 'none'} "
                           "(only story designs record runs).")

    # ------------------------------------------------------------------ checks
    def validate(self) -> None:
        """Raise `DatasetError` on anything a model would trip over later."""
        if self.frames.ndim != 2:
            raise DatasetError(f"frames must be 2-D (n_frames, feature_dim), found shape {self.frames.shape}.")
        if self.frames.dtype != np.float32:
            raise DatasetError(f"frames must be float32, found {self.frames.dtype}; cast with .astype(np.float32).")
        declared = self.meta.get("feature_dim")
        if declared is not None and int(declared) != self.frames.shape[1]:
            raise DatasetError(
                f"dataset.json declares feature_dim={declared} but frames.npy has {self.frames.shape[1]} columns."
            )
        n = self.frames.shape[0]
        for start in range(0, n, _NONFINITE_CHUNK):
            block = np.asarray(self.frames[start:start + _NONFINITE_CHUNK])
            bad = ~np.isfinite(block)
            if bad.any():
                row, col = np.argwhere(bad)[0]
                raise DatasetError(
                    f"frames contain NaN/Inf (first at frame {start + row}, feature {col}; {int(bad.sum())} values in "
                    f"frames {start}-{start + len(block) - 1}). Impute or drop those voxels/frames before preparing."
                )
        if not self.samples:
            raise DatasetError("The dataset has no samples.")
        seen: set[str] = set()
        for s in self.samples:
            if s.id in seen:
                raise DatasetError(f"Sample id '{s.id}' occurs twice; ids must be unique.")
            seen.add(s.id)
            if not s.frames:
                raise DatasetError(f"Sample '{s.id}' has no frames; every sample needs at least one brain frame.")
            lo, hi = min(s.frames), max(s.frames)
            if lo < 0 or hi >= n:
                raise DatasetError(
                    f"Sample '{s.id}' refers to frame {lo if lo < 0 else hi}, outside frames.npy (0..{n - 1})."
                )
            if not isinstance(s.continuation, str) or not s.continuation.strip():
                raise DatasetError(f"Sample '{s.id}' has an empty continuation; there is nothing to reconstruct.")
            if not isinstance(s.prompt, str):
                raise DatasetError(f"Sample '{s.id}' has a non-string prompt ({type(s.prompt).__name__}).")
        names = [r.name for r in self.runs]
        if len(set(names)) != len(names):
            raise DatasetError(f"Run names must be unique, found {names}.")
        for r in self.runs:
            r.validate(n)
        if self.raw is not None and (self.raw.ndim != 2 or self.raw.shape[0] != n):
            raise DatasetError(f"raw frames have shape {self.raw.shape}; expected ({n}, n_voxels), one row per frame.")

    # ------------------------------------------------------------------ disk
    def header(self) -> dict[str, Any]:
        """The dataset.json content."""
        return {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            **{k: v for k, v in self.meta.items() if k not in ("format", "version")},
            "feature_dim": self.feature_dim,
            "n_frames": int(self.frames.shape[0]),
            "n_samples": len(self.samples),
        }

    def save(self, path: str | os.PathLike, overwrite: bool = False) -> Path:
        """Write the dataset folder atomically (a crash leaves either the old folder or none)."""
        path = Path(path)
        self.validate()
        tmp = staging_dir(path)
        np.save(tmp / "frames.npy", np.ascontiguousarray(self.frames, dtype=np.float32))
        write_jsonl(tmp / "samples.jsonl", (s.to_json() for s in self.samples))
        if self.runs:
            write_jsonl(tmp / "runs.jsonl", (r.to_json() for r in self.runs))
        if self.raw is not None:
            (tmp / "raw").mkdir()
            np.save(tmp / "raw" / "frames.npy", np.ascontiguousarray(self.raw, dtype=np.float32))
        write_json(tmp / "dataset.json", self.header())
        replace_dir(tmp, path, overwrite=overwrite)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, mmap: bool = True) -> "BrainTextDataset":
        """Open a prepared dataset folder, validating it; frames are memory-mapped unless `mmap=False`."""
        path = Path(path)
        if not path.is_dir():
            raise DatasetError(f"{path} is not a folder; expected a prepared dataset (dataset.json, frames.npy, samples.jsonl).")
        for name in ("dataset.json", "frames.npy", "samples.jsonl"):
            if not (path / name).exists():
                raise DatasetError(f"{path} has no {name}; a prepared dataset needs dataset.json, frames.npy and samples.jsonl.")
        try:
            meta = read_json(path / "dataset.json")
        except BrainLLMError as err:
            raise DatasetError(str(err)) from err
        if meta.get("format") != FORMAT_NAME:
            raise DatasetError(f"{path}/dataset.json has format {meta.get('format')!r}, expected '{FORMAT_NAME}'.")
        if meta.get("version") != FORMAT_VERSION:
            raise DatasetError(
                f"{path} uses dataset format version {meta.get('version')!r}; this brainllm reads version "
                f"{FORMAT_VERSION}. Re-create it with `brainllm convert` / `brainllm simulate` from this version."
            )
        try:
            frames = np.load(path / "frames.npy", mmap_mode="r" if mmap else None, allow_pickle=False)
        except (ValueError, OSError, EOFError) as err:
            raise DatasetError(f"{path}/frames.npy cannot be read ({err}); the file is probably truncated.") from err
        if meta.get("n_frames") is not None and frames.shape[0] != meta["n_frames"]:
            raise DatasetError(f"{path}/frames.npy has {frames.shape[0]} frames, dataset.json says {meta['n_frames']}.")
        try:
            rows = read_jsonl(path / "samples.jsonl")
        except BrainLLMError as err:
            raise DatasetError(str(err)) from err
        samples = [Sample.from_json(r, f"{path}/samples.jsonl line {i + 1}") for i, r in enumerate(rows)]
        if meta.get("n_samples") is not None and len(samples) != meta["n_samples"]:
            raise DatasetError(
                f"{path}/samples.jsonl has {len(samples)} samples, dataset.json says {meta['n_samples']}; "
                "the file is truncated or was edited."
            )
        runs = []
        if (path / "runs.jsonl").exists():
            try:
                runs = [Run.from_json(r, f"{path}/runs.jsonl line {i + 1}")
                        for i, r in enumerate(read_jsonl(path / "runs.jsonl"))]
            except BrainLLMError as err:
                raise DatasetError(str(err)) from err
        raw = None
        if (path / "raw" / "frames.npy").exists():
            try:
                raw = np.load(path / "raw" / "frames.npy", mmap_mode="r" if mmap else None, allow_pickle=False)
            except (ValueError, OSError, EOFError) as err:
                raise DatasetError(f"{path}/raw/frames.npy cannot be read ({err}); the file is probably truncated.") from err
        for key in ("format", "version", "n_frames", "n_samples"):
            meta.pop(key, None)
        return cls(frames, samples, meta, runs, raw)

    # ------------------------------------------------------------------ summary
    def summary(self) -> dict[str, Any]:
        """Counts and length distributions (words) that `brainllm inspect` prints."""
        def dist(values: list[int]) -> dict[str, float]:
            arr = np.asarray(values, dtype=float)
            return {"min": float(arr.min()), "mean": round(float(arr.mean()), 2),
                    "median": float(np.median(arr)), "max": float(arr.max())}

        per_stim = Counter(s.stimulus for s in self.samples)
        return {
            "simulated": self.simulated,
            "subject": self.meta.get("subject"),
            "source": self.meta.get("source"),
            "samples": len(self.samples),
            "stimuli": len(per_stim),
            "samples_per_stimulus": dist(list(per_stim.values())),
            "frames": int(self.frames.shape[0]),
            "feature_dim": self.feature_dim,
            "tr": self.meta.get("tr"),
            "frames_per_sample": dist([len(s.frames) for s in self.samples]),
            "prompt_words": dist([len(s.prompt.split()) for s in self.samples]),
            "continuation_words": dist([len(s.continuation.split()) for s in self.samples]),
        }

    @property
    def task(self) -> str:
        """What the samples ask (`data.tasks`): `continuation` (the paper's; also data converted before the task
        was recorded) or `sentence` (the whole sentence from its image, no prompt)."""
        return str(self.meta.get("task", "continuation"))

    def describe(self, examples: int = 3) -> str:
        """A human-readable summary: counts, length distributions and a few examples."""
        info = self.summary()
        lines = []
        if self.simulated:
            lines.append(f"*** SIMULATED DATA: {self.meta.get('description', 'simulated participant')} ***")
        lines.append(f"subject {info['subject']}  source {info['source']}  TR {info['tr'] or '-'} s  "
                     f"task {self.task}")
        lines.append(f"samples {info['samples']}  stimuli {info['stimuli']}  frames {info['frames']} x "
                     f"{info['feature_dim']} features")
        for key in ("samples_per_stimulus", "frames_per_sample", "prompt_words", "continuation_words"):
            d = info[key]
            lines.append(f"{key:<20} min {d['min']:g}  mean {d['mean']:g}  median {d['median']:g}  max {d['max']:g}")
        for step in self.meta.get("preprocessing", []):
            lines.append("preprocessing: " + ", ".join(f"{k}={v}" for k, v in step.items() if k != "stories"))
        step = max(1, len(self.samples) // max(1, examples))
        for s in self.samples[::step][:examples]:
            lines.append(f"[{s.id}] frames {s.frames}\n    prompt: {s.prompt!r}\n    continuation: {s.continuation!r}")
        return "\n".join(lines)
