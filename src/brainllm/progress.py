"""Progress for the loops a user waits for (training epochs, decoding batches, tuning, bootstraps, story windows).

One helper so that every loop reports the same way:
* on a terminal, a tqdm bar with counts and an ETA, cleared when done (`leave=False`);
* elsewhere (a log file, CI, a cluster job's output), no bar but log lines: one every `HEARTBEAT_SECONDS` while a
  stage runs (count, rate, ETA) and one when a stage that logged ends, so a long stage is never silent and a short
  one adds nothing to the log;
* nothing when the caller says so (`enabled=False`, e.g. on every rank but the main one).

A loop can only speak between its items. `watch` (which the CLI starts off a terminal) covers the rest: whenever
the package's loggers have been silent for `HEARTBEAT_SECONDS`, a line names the stage running and its count, so a
decoding batch, a teacher-forced pass or a refit longer than the heartbeat, or the work between two loops, never
leaves the log silent for long.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from typing import Callable, Iterable, Iterator, TypeVar

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


#: the `LoggedProgress` loops running now, innermost last (what `watch` names)
_RUNNING: list["LoggedProgress"] = []


class LoggedProgress:
    """Iterate `items`, logging (INFO) `desc: i/N unit (rate, ETA, postfix)` each time `every` seconds have passed
    since the start or the last such line, and, if it logged any, the stage's end with the time it took. `clock`
    returns seconds (a test passes a fake one)."""

    def __init__(self, items: Iterable[T], desc: str, unit: str = "it", every: float = HEARTBEAT_SECONDS,
                 clock=time.monotonic) -> None:
        self.items, self.desc, self.unit, self.every, self.clock = items, desc, unit, every, clock
        self.postfix = ""
        self.done, self.total = 0, len(items) if hasattr(items, "__len__") else None

    def status(self) -> str:
        """`desc: done/total unit`, as far as the loop has got."""
        return f"{self.desc}: {self.done}{'' if self.total is None else f'/{self.total}'} {self.unit}"

    def set_postfix(self, **values) -> None:
        """What the next line adds after the rate (tqdm's `set_postfix`)."""
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())

    def __iter__(self) -> Iterator[T]:
        start = last = self.clock()
        self.done, logged = 0, False
        if self.every != float("inf"):
            _RUNNING.append(self)
        try:
            for item in self.items:
                yield item
                self.done += 1
                now = self.clock()
                if now - last >= self.every:
                    last = now
                    self._line(now - start)
                    logged = True
        finally:
            if self in _RUNNING:
                _RUNNING.remove(self)
        if logged:
            log.info("%s: done, %d %s in %s", self.desc, self.done, self.unit, _seconds(self.clock() - start))

    def _line(self, elapsed: float) -> None:
        """`status()` with the rate, the ETA (when the total is known) and the postfix."""
        rate = self.done / max(elapsed, 1e-9)
        extra = [f"{rate:.3g} {self.unit}/s"]
        if self.total is not None:
            extra.append(f"ETA {_seconds((self.total - self.done) / rate)}")
        if self.postfix:
            extra.append(self.postfix)
        log.info("%s (%s)", self.status(), ", ".join(extra))


class _LastLine(logging.Handler):
    """Notes when a package logger last wrote a line."""

    def __init__(self, clock: Callable[[], float]) -> None:
        super().__init__()
        self.clock, self.at = clock, clock()

    def emit(self, record: logging.LogRecord) -> None:
        self.at = self.clock()


class watch:
    """While running (`start` .. `stop`, or as a context manager), a log line whenever the package's loggers have
    been silent for `every` seconds: `still working (T into the command): <stage>`, the stage being the innermost
    `progress` loop running and its count. Checked every `poll` seconds on a daemon thread; `clock` returns
    seconds."""

    def __init__(self, every: float = HEARTBEAT_SECONDS, poll: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.every, self.poll, self.clock = every, poll, clock
        self._stop = threading.Event()
        self._last = _LastLine(clock)
        self._thread: threading.Thread | None = None

    def start(self) -> "watch":
        logging.getLogger("brainllm").addHandler(self._last)
        self._thread = threading.Thread(target=self._run, name="brainllm-watch", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        logging.getLogger("brainllm").removeHandler(self._last)

    __enter__ = start

    def __exit__(self, *exc) -> None:
        self.stop()

    def _run(self) -> None:
        start = self.clock()
        while not self._stop.wait(self.poll):
            now = self.clock()
            if now - self._last.at >= self.every:
                running = list(_RUNNING)  # the loops may end meanwhile on the main thread
                stage = running[-1].status() if running else "between stages"
                log.info("still working (%s into the command): %s", _seconds(now - start), stage)
                self._last.at = now  # also when INFO lines are not emitted


_WATCH: watch | None = None


def watch_process() -> None:
    """Start one `watch` for the rest of the process, off a terminal and on the main rank only (a command's long
    steps then never leave a log silent for more than `HEARTBEAT_SECONDS` plus a second)."""
    global _WATCH
    if _WATCH is None and not sys.stderr.isatty() and os.environ.get("RANK", "0") == "0":
        _WATCH = watch().start()


def _seconds(seconds: float) -> str:
    """`seconds` as `1h02m`, `3m05s` or `12.3s`."""
    if seconds >= 3600:
        return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"
    if seconds >= 60:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{seconds:.1f}s"
