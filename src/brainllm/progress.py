"""Progress bars for the loops a user waits for (training epochs, decoding batches, bootstraps, story windows).

One helper so that every bar behaves the same: shown on a terminal only (`disable=None`), so logs and CI output stay
readable; cleared when done (`leave=False`); never shown when the caller says so (`enabled=False`, e.g. on every
rank but the main one).
"""

from __future__ import annotations

from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")


def progress(items: Iterable[T], desc: str, unit: str = "it", enabled: bool = True) -> Iterator[T]:
    """`items` wrapped in a tqdm bar labelled `desc`, counting in `unit`; `items` itself when tqdm is off."""
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, unit=unit, disable=None if enabled else True, leave=False, dynamic_ncols=True)
