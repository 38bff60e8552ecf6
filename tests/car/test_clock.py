"""The frame clock: unknown before real time, run on from the last fix, never backwards when a fix returns."""
from __future__ import annotations

import math

import pytest

from dashboard.car import clock as clock_module
from dashboard.car.clock import SLEW_RATE, SYNC_CHECK_S, GpsClock
from dashboard.telemetry.laps import LapTimer, Track

GPS_EPOCH = 1.75e9  # the real time when the test's monotonic clock reads MONO0
MONO0 = 5000.0
RATE_HZ = 10.0


class Mono:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = MONO0

    def __call__(self) -> float:
        return self.now


def test_time_is_unknown_until_the_system_clock_is_synchronized() -> None:
    mono = Mono()
    synced = {"value": False, "asked": 0}

    def is_synced() -> bool:
        synced["asked"] += 1
        return synced["value"]

    clock = GpsClock(wall=lambda: 0.0 + mono.now, mono=mono, synced=is_synced)  # booted in 1970
    assert clock.now() is None and clock.offset() is None and clock.source is None
    mono.now += 0.5
    assert clock.now() is None and synced["asked"] == 1  # asked at most once a second
    wall = GPS_EPOCH - MONO0
    clock._wall = lambda: wall + mono.now  # NTP set the clock...
    mono.now += SYNC_CHECK_S
    assert clock.now() is None  # ...but does not say it is synchronized yet: still unknown
    synced["value"] = True
    mono.now += SYNC_CHECK_S
    assert clock.now() == pytest.approx(GPS_EPOCH + mono.now - MONO0) and clock.source == "system"
    assert clock.offset() == pytest.approx(wall)


def test_a_1970_system_clock_is_never_taken_even_when_said_synchronized() -> None:
    mono = Mono()
    clock = GpsClock(wall=lambda: 12.0, mono=mono, synced=lambda: True)
    assert clock.now() is None
    clock.observe(12.0)  # a receiver that never had its clock set: ignored too
    assert clock.now() is None


def test_the_kernel_is_asked_for_real() -> None:
    state = clock_module._adjtimex_state()
    assert state is None or 0 <= state <= 5  # TIME_OK..TIME_ERROR
    assert isinstance(clock_module.system_clock_synced(), bool)
    assert len(clock_module.boot_id()) >= 8


def test_gps_wins_over_the_system_clock_and_runs_on_without_fixes() -> None:
    mono = Mono()
    clock = GpsClock(wall=lambda: GPS_EPOCH + 3600 + mono.now, mono=mono, synced=lambda: True)
    clock.observe(GPS_EPOCH, at_mono=MONO0)
    mono.now += 60.0  # a minute without a fix: GPS time run on, never the system clock
    assert clock.now() == pytest.approx(GPS_EPOCH + 60.0) and clock.using_gps


def circle_track() -> tuple[Track, float, float]:
    """A 100 m radius circle and a start/finish line across it; (track, lat0, lon0)."""
    lat0, lon0 = 28.41, -81.38
    east = 1 / (111_320 * math.cos(math.radians(lat0)))
    return Track("circle", (lat0, lon0 + 80 * east), (lat0, lon0 + 120 * east), min_lap_time_s=10), lat0, lon0


def drive(offset_s: float) -> tuple[list[float], list[float], LapTimer]:
    """75 s of frames at 10 Hz; fixes from 5 to 45 s, lost 45-55 s, back from 55 s; the system clock off by
    ``offset_s`` and synchronized. Returns (frame times, true times, the lap timer fed those frames)."""
    mono = Mono()
    clock = GpsClock(wall=lambda: GPS_EPOCH + (mono.now - MONO0) + offset_s, mono=mono, synced=lambda: True)
    track, lat0, lon0 = circle_track()
    timer = LapTimer(track)
    east = 1 / (111_320 * math.cos(math.radians(lat0)))
    times, truths = [], []
    for i in range(int(75 * RATE_HZ)):
        elapsed = i / RATE_HZ
        mono.now = MONO0 + elapsed
        true_t = GPS_EPOCH + elapsed
        if 5.0 <= elapsed < 45.0 or elapsed >= 55.0:
            clock.observe(true_t - 0.04, at_mono=mono.now - 0.04)  # the fix came in 40 ms before this frame
        t = clock.now()
        assert t is not None
        angle = elapsed * 20.0 / 100.0  # 20 m/s on a 100 m radius
        channels = {"lat": lat0 + 100 * math.sin(angle) / 111_320, "lon": lon0 + 100 * math.cos(angle) * east}
        timer.feed({"seq": i + 1, "t": round(t, 3), "channels": channels})
        times.append(round(t, 3))
        truths.append(true_t)
    return times, truths, timer


@pytest.mark.parametrize("offset_s", [3.0, -3.0], ids=["system-clock-3s-ahead", "system-clock-3s-behind"])
def test_a_fix_lost_for_ten_seconds_keeps_frame_times_continuous_and_the_lap_timer_drops_none(offset_s: float) -> None:
    times, truths, timer = drive(offset_s)
    steps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert all(step > 0 for step in steps), "frame times never stand still or go back"
    period = 1 / RATE_HZ
    first_fix = int(5 * RATE_HZ)
    for i, step in enumerate(steps):
        if i + 1 == first_fix and offset_s < 0:
            assert step == pytest.approx(period - offset_s, abs=0.06)  # the clock was behind: one step forward
        else:  # otherwise, the clock was ahead: slewed, 10% slow at most
            assert period * (1 - SLEW_RATE) - 0.002 <= step <= period + 0.002
    # the fix was right for 10 s before it was lost, then through the loss and back: GPS time throughout
    window = range(int(35 * RATE_HZ), len(times))
    assert max(abs(times[i] - (truths[i] - 0.0)) for i in window) < 0.01
    assert all(abs(steps[i] - period) < 0.002 for i in window[:-1])
    assert timer.counters.out_of_order == 0
    assert timer.counters.fixes == len(times)
    assert len(timer.laps) >= 1  # the timer timed laps through all of it


def test_a_fix_that_returns_behind_the_running_time_is_slewed_not_stepped_back() -> None:
    mono = Mono()
    clock = GpsClock(wall=lambda: 0.0, mono=mono, synced=lambda: False)
    clock.observe(GPS_EPOCH, at_mono=MONO0)
    mono.now += 10.0
    before = clock.now()
    clock.observe(GPS_EPOCH + 8.0, at_mono=mono.now)  # the receiver says we ran 2 s fast
    assert clock.now() == before and clock.corrections == 1
    mono.now += 1.0
    assert clock.now() == pytest.approx(before + 1.0 - SLEW_RATE)
    mono.now += 2.0 / SLEW_RATE
    assert clock.now() == pytest.approx(GPS_EPOCH + 8.0 + 1.0 + 2.0 / SLEW_RATE)  # caught up: GPS time again


def test_frames_made_before_real_time_reach_the_server_only_once_stamped(monitor_server, tmp_path) -> None:
    """A real ServiceManager and Uplink: held while the time is unknown, then sent re-stamped, in seq order."""
    import threading
    import time

    from dashboard.car.monitor import ServiceManager
    from dashboard.car.outbox import Outbox
    from dashboard.car.source import ChannelStore
    from dashboard.car.uplink import LinkState, Uplink
    from tests.waiting import wait_for

    outbox = Outbox(tmp_path / "o.sqlite")
    store = ChannelStore()
    store.update({"rpm": 3000.0})
    clock = GpsClock(wall=lambda: 0.0, synced=lambda: False)  # a Pi just booted: 1970, no NTP, no fix yet
    uplink = Uplink(monitor_server.url, "car-clock", outbox, api_key=monitor_server.api_key, heartbeat_s=0.2)
    manager = ServiceManager([], store, outbox, uplink, rate_hz=20, clock=clock)
    stop = threading.Event()
    runner = threading.Thread(target=manager.run, args=(stop,), daemon=True)
    runner.start()
    try:
        wait_for(lambda: uplink.state is LinkState.CONNECTED and outbox.unstamped() >= 20, 15,
                 "connected, with frames waiting for the time")
        assert monitor_server.calls_of("telemetry") == []  # nothing without a date left the car
        waited = outbox.unstamped()
        first_fix = time.time()
        clock.observe(first_fix, time.monotonic())
        session = uplink.session_id
        wait_for(lambda: len(monitor_server.stored_seqs(session)) >= waited + 20, 15, "the frames on the server")
        frames = monitor_server.stored(session)
        assert [f["seq"] for f in frames] == list(range(1, len(frames) + 1))
        times = [f["t"] for f in frames]
        not_later = [(a, b) for a, b in zip(frames, frames[1:], strict=False) if b["t"] <= a["t"]]
        assert not_later == []  # one time base, increasing
        assert first_fix - 60 < times[0] < first_fix - (waited - 1) / 20 + 0.5  # dated back from the fix
        assert all(abs(t - first_fix) < 60 for t in times)  # never 1970
        backfill = {f["seq"] for c in monitor_server.calls_of("telemetry") if c.data.get("backfill")
                    for f in c.data["frames"]}
        assert set(range(1, waited + 1)) <= backfill  # dated late: sent as backlog, not as live frames
    finally:
        stop.set()
        runner.join(30)
        outbox.close()


@pytest.mark.parametrize("trust", [True, False])
def test_the_monitor_asks_the_kernel_unless_told_to_trust_the_system_clock(tmp_path, trust: bool) -> None:
    from dashboard.car.monitor import build_monitor
    from dashboard.car.settings import load_settings

    settings = load_settings(None, outbox_path=tmp_path / "o.sqlite", gps_port="/dev/null", trust_system_clock=trust)
    manager = build_monitor(settings)
    try:
        expected = clock_module.trusted if trust else clock_module.system_clock_synced
        assert manager.assembler.clock._synced is expected
    finally:
        manager.outbox.close()
