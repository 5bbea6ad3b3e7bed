"""Timed words and Tang's windows: the data a decoded story and its reference are scored as (`evaluation.story`).

A decoded story and its reference are lists of *timed words* (`TimedWords`: reference times are the word midpoints
of the TextGrid, prediction times the decoder's word times). Windows (`windows`): width w = 20 s, centres c = start
+ w/2, start + w/2 + step, ..., end - w/2 (inclusive, step 1 s), each window [c - w/2, c + w/2). A word belongs to a
window when start <= time < end (`segment`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from .rundata import EvaluationError


@dataclass
class TimedWords:
    """A sequence of words with one time each.

    Attributes:
        words: `W` words (strings; tokenised again when scored).
        times: `(W,)` float64 seconds, finite and non-decreasing (word midpoints for a reference, decoder word times
            for a prediction).
    """

    words: list[str]
    times: np.ndarray

    def __post_init__(self) -> None:
        self.words = [str(w) for w in self.words]
        times = np.asarray(self.times, dtype=np.float64)
        if times.ndim != 1:
            raise EvaluationError(f"TimedWords.times must be one-dimensional (W,), found shape {times.shape}.")
        if len(times) != len(self.words):
            raise EvaluationError(f"TimedWords has {len(self.words)} words but {len(times)} times; give one time "
                                  "(seconds) per word.")
        if not np.all(np.isfinite(times)):
            bad = int(np.flatnonzero(~np.isfinite(times))[0])
            raise EvaluationError(f"TimedWords.times must be finite; word {bad} ({self.words[bad]!r}) has time "
                                  f"{times[bad]}.")
        if len(times) > 1 and np.any(np.diff(times) < 0):
            bad = int(np.flatnonzero(np.diff(times) < 0)[0])
            raise EvaluationError(f"TimedWords.times must be non-decreasing; word {bad + 1} ({self.words[bad + 1]!r}) "
                                  f"at {times[bad + 1]} s comes after {times[bad]} s. Sort the words by time.")
        self.times = times

    def __len__(self) -> int:
        return len(self.words)

    def to_json(self) -> dict[str, Any]:
        """`{"words": [...], "times": [...]}`."""
        return {"words": list(self.words), "times": [float(t) for t in self.times]}

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> "TimedWords":
        """Inverse of `to_json` (validated)."""
        if not isinstance(obj, dict) or "words" not in obj or "times" not in obj:
            raise EvaluationError("A TimedWords JSON object needs the keys 'words' and 'times'; found "
                                  f"{sorted(obj) if isinstance(obj, dict) else type(obj).__name__}.")
        return cls(list(obj["words"]), np.asarray(obj["times"], dtype=np.float64))


def windows(start: float, end: float, window: float = 20.0, step: float = 1.0) -> np.ndarray:
    """Tang's windows of a segment: `(K, 2)` float64 [lo, hi) in seconds.

    Centres c = start + window/2 + k*step for k = 0, 1, ... while c <= end - window/2; window [c - w/2, c + w/2).
    Raises `EvaluationError` when the segment is shorter than one window or the sizes are not positive.
    """
    if not (window > 0 and step > 0):
        raise EvaluationError(f"window and step must be positive seconds; found window={window}, step={step}.")
    if not (math.isfinite(start) and math.isfinite(end)):
        raise EvaluationError(f"start and end must be finite seconds; found start={start}, end={end}.")
    length = end - start
    if length < window - 1e-9:
        raise EvaluationError(f"The segment [{start}, {end}) lasts {length:g} s, shorter than one {window:g} s "
                              "window; evaluate a longer segment or pass a smaller window.")
    k = int(math.floor((length - window) / step + 1e-9)) + 1
    centres = start + window / 2.0 + step * np.arange(k, dtype=np.float64)
    return np.stack([centres - window / 2.0, centres + window / 2.0], axis=1)


def segment(words: TimedWords, bounds: np.ndarray) -> list[list[str]]:
    """The words of each window: `bounds` `(K, 2)` -> K lists of the words with lo <= time < hi."""
    bounds = np.asarray(bounds, dtype=np.float64).reshape(-1, 2)
    lo = np.searchsorted(words.times, bounds[:, 0], side="left")
    hi = np.searchsorted(words.times, bounds[:, 1], side="left")
    return [words.words[a:b] for a, b in zip(lo, hi)]
