"""The sources' base (a Worker): crash accounting, stop from its own thread, the join timeout warning."""
from __future__ import annotations

import logging
import threading

import pytest

from dashboard.car.source import ChannelStore, Source, SourceState
from tests.waiting import wait_for


class Crashing(Source):
    """Reads once, then fails in a way it does not expect."""

    def _run(self) -> None:
        self._set_status(SourceState.READING)
        raise RuntimeError("adapter said something odd")


class StopsItself(Source):
    """Ends its own reading, as a replay at the end of its log might."""

    def _run(self) -> None:
        self.stop()
        self.ended = True


class Stuck(Source):
    """A blocking read that ignores the stop flag until ``release`` is set."""

    def __init__(self, store: ChannelStore) -> None:
        super().__init__("stuck", store)
        self.release = threading.Event()
        self.interrupted = False

    def _run(self) -> None:
        self.release.wait(30)

    def _interrupt(self) -> None:
        self.interrupted = True


def test_a_crash_is_counted_reported_and_cleared_by_stop(caplog: pytest.LogCaptureFixture) -> None:
    source = Crashing("obd", ChannelStore())
    with caplog.at_level(logging.ERROR, logger="dashboard.car.source"):
        source.start()
        wait_for(lambda: source.crashed, 5, "the crash")
    assert source.crashes == 1 and source.crash_reason == "RuntimeError: adapter said something odd"
    assert source.status.state is SourceState.ERROR and source.status.reason == source.crash_reason
    assert not source.running
    assert any("source obd crashed" in r.getMessage() and r.exc_info for r in caplog.records)
    source.stop()
    assert not source.crashed and source.status.state is SourceState.STOPPED
    source.start()  # the ServiceManager's restart
    wait_for(lambda: source.crashes == 2, 5, "the second crash")
    source.stop()


def test_stop_from_its_own_thread_does_not_join_itself() -> None:
    source = StopsItself("replay", ChannelStore())
    source.start()
    wait_for(lambda: getattr(source, "ended", False) and not source.running, 5, "the source to end")
    assert source.status.state is SourceState.STOPPED and not source.crashed and source.crashes == 0
    source.stop()  # already stopped: no-op


def test_a_source_that_outlives_the_join_timeout_is_logged_and_let_go(caplog: pytest.LogCaptureFixture) -> None:
    source = Stuck(ChannelStore())
    source.start()
    with caplog.at_level(logging.WARNING, logger="dashboard.car.worker"):
        source.stop(timeout=0.1)
    assert source.interrupted  # the source was asked to wake from its read
    assert any("source-stuck did not stop within" in r.getMessage() for r in caplog.records)
    assert source.status.state is SourceState.STOPPED and not source.running  # the manager can go on
    source.release.set()
