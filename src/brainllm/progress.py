"""Progress for the loops a user waits for (training epochs, decoding batches, tuning, bootstraps, story windows).

One helper so that every loop reports the same way:
* on a terminal, a tqdm bar with counts and an ETA, cleared when done (`leave=False`);
* elsewhere (a log file, CI, a cluster job's output), no bar but log lines: one every `HEARTBEAT_SECONDS` while a
  stage runs (count, rate, ETA) and one when a stage that logged ends, so a long stage is never silent and a short
  one adds nothing to the log;
* nothing when the caller says so (`enabled=False`, e.g. on every rank but the main one).
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")

log = logging.getLogger("brainllm.progress")

#: off a terminal, the longest a running stage goes without a log line (seconds)
HEARTBEAT_SECONDS = 20.0


def progress(items: Iterable[T], desc: str, unit: str = "it", enabled: bool = True) -> Iterable[T]:
    """`items` wrapped in a tqdm bar labelled `desc`, counting in `unit`, on a terminal; elsewhere in a
    `LoggedProgress`; with `enabled` False in one that logs nothing. Each has `set_postfix(**values)`."""
    if enabled and sys.stderr.isatty():
        from tqdm.auto import tqdm

        return tqdm(items, desc=desc, unit=unit, leave=False, dynamic_ncols=True)
    return LoggedProgress(items, desc, unit, every=HEARTBEAT_SECONDS if enabled else float("inf"))


class LoggedProgress:
    """Iterate `items`, logging (INFO) `desc: i/N unit (rate, ETA, postfix)` each time `every` seconds have passed
    since the start or the last such line, and, if it logged any, the stage's end with the time it took. `clock`
    returns seconds (a test passes a fake one)."""

    def __init__(self, items: Iterable[T], desc: str, unit: str = "it", every: float = HEARTBEAT_SECONDS,
                 clock=time.monotonic) -> None:
        self.items, self.desc, self.unit, self.every, self.clock = items, desc, unit, every, clock
        self.postfix = ""

    def set_postfix(self, **values) -> None:
        """What the next line adds after the rate (tqdm's `set_postfix`)."""
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def __iter__(self) -> Iterator[T]:
        total = len(self.items) if hasattr(self.items, "__len__") else None
        of, unit = (f"/{total}" if total is not None else ""), self.unit
        start = last = self.clock()
        done, logged = 0, False
        for item in self.items:
            yield item
            done += 1
            now = self.clock()
            if now - last >= self.every:
                last = now
                rate = done / max(now - start, 1e-9)
                extra = [f"{rate:.3g} {unit}/s"]
                if total is not None:
                    extra.append(f"ETA {_seconds((total - done) / rate)}")
                if self.postfix:
                    extra.append(self.postfix)
                log.info("%s: %d%s %s (%s)", self.desc, done, of, unit, ", ".join(extra))
                logged = True
        if logged:
            log.info("%s: done, %d %s in %s", self.desc, done, unit, _seconds(self.clock() - start))


def _seconds(seconds: float) -> str:
    """`seconds` as `1h02m`, `3m05s` or `12.3s`."""
    if seconds >= 3600:
        return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"
    if seconds >= 60:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{seconds:.1f}s"
