"""Progress off a terminal: a log line at least every heartbeat while a stage runs, with count and ETA, and
nothing for a short stage."""

import logging

from brainllm.progress import LoggedProgress


class FakeClock:
    def __init__(self, step: float):
        self.now, self.step = 0.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def test_a_long_stage_logs_every_heartbeat_with_an_eta(caplog):
    caplog.set_level(logging.INFO, logger="brainllm.progress")
    # each item takes 5 s of fake time: a line every 5 items, then one at the end
    assert list(LoggedProgress(range(10), "tune", "cell", every=25.0, clock=FakeClock(5.0))) == list(range(10))
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0] == "tune: 5/10 cell (0.2 cell/s, ETA 25.0s)"
    assert lines[-1] == "tune: done, 10 cell in 55.0s"
    assert len(lines) == 3
    # the gap between two lines never exceeds the heartbeat plus one item's time
    assert all("ETA" in line for line in lines[:-1])


def test_a_short_stage_logs_nothing(caplog):
    caplog.set_level(logging.INFO, logger="brainllm.progress")
    list(LoggedProgress(iter(range(5)), "quick", every=25.0, clock=FakeClock(0.1)))
    assert caplog.records == []


def test_a_training_bar_shows_its_postfix(caplog):
    caplog.set_level(logging.INFO, logger="brainllm.progress")
    bar = LoggedProgress(range(3), "main 1", "batch", every=1.0, clock=FakeClock(1.0))
    for _ in bar:
        bar.set_postfix(loss="3.1000")
    assert caplog.records[0].getMessage() == "main 1: 1/3 batch (1 batch/s, ETA 2.0s, loss=3.1000)"
    assert caplog.records[1].getMessage().endswith("loss=3.1000)")


def test_watch_names_the_running_stage_when_an_item_outlasts_the_heartbeat(caplog):
    """A loop speaks only between items; `watch` speaks when the log has been silent for its heartbeat, naming the
    stage and its count, and stops speaking when stopped."""
    import time

    from brainllm.progress import watch

    caplog.set_level(logging.INFO, logger="brainllm")
    with watch(every=0.15, poll=0.01):
        for i in LoggedProgress(range(2), "valid/tune/sample", "batch", every=60.0):
            time.sleep(0.5 if i == 1 else 0.0)  # the second batch outlasts the heartbeat
        time.sleep(0.4)  # between stages
    stopped = len(caplog.records)
    time.sleep(0.3)
    lines = [r.getMessage() for r in caplog.records]
    assert any(line.endswith("valid/tune/sample: 1/2 batch") and line.startswith("still working") for line in lines)
    assert any(line.endswith("between stages") for line in lines)
    assert len(lines) == stopped and len(lines) <= 2 * (0.9 / 0.15)  # one per silent heartbeat, none after stop
