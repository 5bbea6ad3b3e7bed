"""A small reader for Praat TextGrid files (the word/phone transcripts of the Huth/LeBel stories).

Both Praat text layouts are read: the long one (`xmin = 0`, `intervals [1]:` ...) and the short one (bare values,
one per line). Both carry the same sequence of values once the key names and the bracketed indices of the long
layout are ignored, so the file is reduced to that sequence of values (quoted strings, numbers, `<exists>`) and
then walked: file type, object class, xmin, xmax, `<exists>`, tier count, then per tier its class, name, xmin,
xmax, item count and the items (interval: xmin, xmax, text; point: time, mark).

Files saved by Praat with non-ASCII text are UTF-16 with a byte-order mark; that is detected.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from ..errors import DatasetError
from ..io import read_input_bytes

# A quoted string (Praat doubles a quote inside a string), a bracketed index to skip, a flag, or a number.
_TOKEN = re.compile(
    r'"((?:[^"]|"")*)"'
    r'|(\[\s*\d*\s*\])'
    r'|(<exists>|<absent>)'
    r'|([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)'
)


@dataclass(frozen=True)
class Interval:
    """One labelled stretch of time, in seconds from the start of the recording."""

    start: float
    end: float
    text: str

    @property
    def mid(self) -> float:
        return 0.5 * (self.start + self.end)


@dataclass
class Tier:
    """A tier: `kind` is "IntervalTier" or "TextTier" (points have start == end)."""

    name: str
    kind: str
    xmin: float
    xmax: float
    intervals: list[Interval]


@dataclass
class TextGrid:
    """All tiers of one TextGrid file."""

    path: str
    xmin: float
    xmax: float
    tiers: list[Tier]

    def tier(self, which: int | str) -> Tier:
        """A tier by 0-based position or by name (case-insensitive)."""
        if isinstance(which, int):
            if not -len(self.tiers) <= which < len(self.tiers):
                raise DatasetError(f"{self.path}: has {len(self.tiers)} tier(s) {self.names()}, no tier index {which}.")
            return self.tiers[which]
        for t in self.tiers:
            if t.name.lower() == which.lower():
                return t
        raise DatasetError(f"{self.path}: no tier named '{which}'; the tiers are {self.names()}.")

    def names(self) -> list[str]:
        return [t.name for t in self.tiers]


def _decode(raw: bytes) -> str:
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return raw.decode("utf-16")
    if raw.startswith(b"\xef\xbb\xbf"):
        return raw[3:].decode("utf-8")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _values(text: str) -> Iterator[str | float]:
    """The file's values in order: strings as str, numbers as float, flags as '<exists>'/'<absent>'."""
    for m in _TOKEN.finditer(text):
        string, index, flag, number = m.groups()
        if string is not None:
            yield string.replace('""', '"')
        elif flag is not None:
            yield flag
        elif number is not None:
            yield float(number)
        # bracketed indices (`item [1]:`) carry no value


class _Cursor:
    def __init__(self, values: list, path: str):
        self.values, self.pos, self.path = values, 0, path

    def take(self, kind: type, what: str):
        if self.pos >= len(self.values):
            raise DatasetError(f"{self.path}: the TextGrid ends early while reading {what}; the file is truncated.")
        value = self.values[self.pos]
        self.pos += 1
        if kind is float and isinstance(value, float):
            return value
        if kind is str and isinstance(value, str):
            return value
        raise DatasetError(f"{self.path}: expected {what} ({kind.__name__}) at value {self.pos}, found {value!r}; "
                           "this is not a Praat text TextGrid (long or short format).")


def parse_textgrid(text: str, path: str = "<string>") -> TextGrid:
    """Parse the content of a TextGrid file (long or short text format)."""
    cur = _Cursor(list(_values(text)), path)
    file_type = cur.take(str, "the file type")
    if not file_type.startswith("ooTextFile"):
        raise DatasetError(f"{path}: file type is {file_type!r}, expected 'ooTextFile' (a Praat text file).")
    object_class = cur.take(str, "the object class")
    if object_class != "TextGrid":
        raise DatasetError(f"{path}: object class is {object_class!r}, expected 'TextGrid'.")
    xmin, xmax = cur.take(float, "xmin"), cur.take(float, "xmax")
    if cur.take(str, "the tiers flag") != "<exists>":
        return TextGrid(path, xmin, xmax, [])
    tiers = []
    for t in range(int(cur.take(float, "the number of tiers"))):
        kind = cur.take(str, f"the class of tier {t + 1}")
        name = cur.take(str, f"the name of tier {t + 1}")
        txmin, txmax = cur.take(float, "tier xmin"), cur.take(float, "tier xmax")
        n = int(cur.take(float, f"the item count of tier '{name}'"))
        items = []
        for _ in range(n):
            if kind == "IntervalTier":
                a, b = cur.take(float, "interval xmin"), cur.take(float, "interval xmax")
                items.append(Interval(a, b, cur.take(str, "interval text")))
            elif kind == "TextTier":
                a = cur.take(float, "point time")
                items.append(Interval(a, a, cur.take(str, "point mark")))
            else:
                raise DatasetError(f"{path}: tier '{name}' has class {kind!r}; expected IntervalTier or TextTier.")
        tiers.append(Tier(name, kind, txmin, txmax, items))
    return TextGrid(path, xmin, xmax, tiers)


def read_textgrid(path: str | os.PathLike) -> TextGrid:
    """Read a TextGrid file (UTF-8, UTF-16 with BOM, or Latin-1)."""
    path = Path(path)
    return parse_textgrid(_decode(read_input_bytes(path, "TextGrid")), str(path))
