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


# ------------------------------------------------------------- the store's fixes
class Mono:
    """Monotonic time moved by hand."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_every_fix_waits_whole_with_its_own_time_and_one_epoch_is_one_fix() -> None:
    store = ChannelStore(clock=Mono())
    store.add_fix(10.00, {"lat": 1.0, "lon": 2.0, "altitude": 5.0, "hdop": None})  # GGA: no hdop known
    store.add_fix(10.00, {"lat": 1.0, "lon": 2.0, "gps_speed": 30.0})  # RMC of the same epoch: merged
    store.add_fix(10.04, {"lat": 1.1, "lon": 2.1})
    store.add_fix(10.02, {"lat": 1.05, "lon": 2.05})  # out of order on arrival: framed in time order
    assert store.pending_fixes == 3
    assert store.take_fixes() == [(10.00, {"lat": 1.0, "lon": 2.0, "altitude": 5.0, "gps_speed": 30.0}),
                                  (10.02, {"lat": 1.05, "lon": 2.05}), (10.04, {"lat": 1.1, "lon": 2.1})]
    assert store.take_fixes() == []
    store.add_fix(10.04, {"lat": 1.1, "lon": 2.1, "gps_speed": 31.0})  # a late sentence of an epoch already framed
    assert store.take_fixes() == []  # no second fix frame at the same time
    assert store.tick_channels() == {"gps_speed": 31.0}  # its speed goes with the next tick frame, never a position
    assert store.snapshot()["lat"] == 1.1  # the latest values follow the fixes too (LoRa, staleness)


def test_tick_channels_leave_out_fresh_fix_values_and_send_stale_ones_as_null() -> None:
    mono = Mono()
    store = ChannelStore(clock=mono)
    store.update({"rpm": 3000.0, "gps_fix": 1.0})
    store.add_fix(10.0, {"lat": 1.0, "lon": 2.0})
    assert store.tick_channels() == {"rpm": 3000.0, "gps_fix": 1.0}  # the position travels in its fix frame
    mono.now += 2.5  # past the position's 2 s staleness
    assert store.tick_channels() == {"rpm": 3000.0, "gps_fix": None, "lat": None, "lon": None}
    store.update({"lat": None, "lon": None})  # a no-fix sentence: known unknown
    mono.now -= 2.5
    assert store.tick_channels()["lat"] is None and "lat" in store.tick_channels()


def test_fixes_nobody_takes_are_bounded_and_counted() -> None:
    store = ChannelStore(clock=Mono(), max_fixes=10)
    for i in range(15):
        store.add_fix(float(i), {"lat": 1.0, "lon": float(i)})
    assert store.fixes_dropped == 5
    assert [t for t, _ in store.take_fixes()] == [float(i) for i in range(5, 15)]  # the newest kept
    store.add_fix(20.0, {"lat": None, "lon": None})  # nothing known: no fix frame
    assert store.take_fixes() == []
