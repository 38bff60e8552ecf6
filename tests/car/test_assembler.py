"""Frame assembler: staleness → null, seq continuity across restarts, GPS time."""
from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from dashboard.car.assembler import FrameAssembler
from dashboard.car.clock import GPS_TIME_VALID_S, GpsClock
from dashboard.car.outbox import Outbox
from dashboard.car.source import ChannelStore
from tests.waiting import wait_for


class FakeClock:
    """Monotonic time the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_stale_channel_is_null_not_its_old_value(tmp_path: Path) -> None:
    mono = FakeClock()
    store = ChannelStore(clock=mono)
    asm = FrameAssembler(store, Outbox(tmp_path / "o.sqlite"), clock=GpsClock(wall=lambda: 1.7e9, mono=mono))
    assert asm.tick() is None  # nothing seen yet: no frame
    store.update({"rpm": 5000.0, "lat": 28.4, "fuel_level": 50.0})
    mono.now += 1.9  # lat goes stale after 2 s, rpm after 5 s, fuel after 30 s
    assert asm.sample()["channels"] == {"rpm": 5000.0, "lat": 28.4, "fuel_level": 50.0}
    mono.now += 0.2
    assert asm.sample()["channels"] == {"rpm": 5000.0, "lat": None, "fuel_level": 50.0}
    mono.now += 3.0
    assert asm.sample()["channels"] == {"rpm": None, "lat": None, "fuel_level": 50.0}
    store.update({"rpm": 6000.0})
    seq = asm.tick()
    assert asm.outbox.oldest(1)[0] == {"seq": seq, "t": 1.7e9,
                                       "channels": {"rpm": 6000.0, "lat": None, "fuel_level": 50.0}}


def test_seq_plus_one_per_frame_and_continues_after_restart(tmp_path: Path) -> None:
    store = ChannelStore()
    store.update({"rpm": 1.0})
    box = Outbox(tmp_path / "o.sqlite")
    asm = FrameAssembler(store, box, rate_hz=50)
    asm.start()
    asm.start()  # safe twice
    wait_for(lambda: asm.frames >= 10, 5, "10 frames")
    asm.stop()
    asm.stop()
    first_run = [f["seq"] for f in box.oldest(1000)]
    assert first_run == list(range(1, len(first_run) + 1))
    box.close()
    box = Outbox(tmp_path / "o.sqlite")  # a monitor restart
    asm = FrameAssembler(store, box, rate_hz=50)
    asm.start()
    wait_for(lambda: asm.frames >= 5, 5, "5 more frames")
    asm.stop()
    seqs = [f["seq"] for f in box.oldest(1000)]
    assert seqs == list(range(1, len(seqs) + 1)) and len(seqs) > len(first_run)


def test_rate_is_respected(tmp_path: Path) -> None:
    store = ChannelStore()
    store.update({"rpm": 1.0})
    asm = FrameAssembler(store, Outbox(tmp_path / "o.sqlite"), rate_hz=20)
    asm.start()
    wait_for(lambda: asm.frames >= 10, 5, "10 frames")
    asm.stop()
    frames = asm.outbox.oldest(1000)
    span = frames[-1]["t"] - frames[0]["t"]
    assert span == pytest.approx((len(frames) - 1) / 20, abs=0.1)


def test_gps_clock_prefers_gps_time_while_fixes_are_fresh() -> None:
    mono = FakeClock()
    clock = GpsClock(wall=lambda: 1.8e9, mono=mono)
    assert clock.now() == 1.8e9 and not clock.using_gps
    clock.observe(1.7e9)
    mono.now += 0.5
    assert clock.now() == pytest.approx(1.7e9 + 0.5) and clock.using_gps
    mono.now += GPS_TIME_VALID_S
    assert clock.now() == 1.8e9
    clock.observe(12.0)  # a receiver that never had its clock set: ignored
    assert clock.now() == 1.8e9


def test_a_tick_frames_every_fix_at_its_time_before_the_tick_frame(tmp_path: Path) -> None:
    mono = FakeClock()
    store = ChannelStore(clock=mono)
    clock = GpsClock(wall=lambda: 1.8e9, mono=mono)
    asm = FrameAssembler(store, Outbox(tmp_path / "o.sqlite"), rate_hz=5, clock=clock)
    store.update({"rpm": 4000.0, "gps_fix": 1.0})
    fixes = [1.7e9 + i * 0.04 for i in range(50)]  # 2 s of a 25 Hz receiver while the assembler stalled
    for t in fixes:
        store.add_fix(t, {"lat": 28.41 + (t - 1.7e9) * 1e-4, "lon": -81.38, "gps_speed": 40.0})
        clock.observe(t, mono.now)
    seq = asm.tick()
    frames = asm.outbox.oldest(100)
    assert [f["t"] for f in frames[:-1]] == [round(t, 3) for t in fixes]  # every one, in order, at its GPS time
    assert all(set(f["channels"]) == {"lat", "lon", "gps_speed"} for f in frames[:-1])
    assert frames[-1]["channels"] == {"rpm": 4000.0, "gps_fix": 1.0} and frames[-1]["seq"] == seq
    assert frames[-1]["t"] == round(fixes[-1], 3)  # the tick frame: the frame clock (GPS time of the last fix)
    assert [f["seq"] for f in frames] == list(range(1, 52)) and asm.frames == 51 and asm.fix_frames == 50
    # the LoRa link's view: the newest position and the other channels together
    assert asm.last_frame["seq"] == seq and asm.last_frame["channels"]["lat"] == frames[-2]["channels"]["lat"]
    assert asm.last_frame["channels"]["rpm"] == 4000.0
    asm.tick()
    assert [f["channels"] for f in asm.outbox.after(seq, 10)] == [{"rpm": 4000.0, "gps_fix": 1.0}]  # no fix: tick only


def test_fixes_of_a_tick_the_outbox_refused_go_out_with_the_next_one(tmp_path: Path) -> None:
    class FullOnce(Outbox):
        """An outbox whose disk is full for one write."""

        full = True

        def append_many(self, frames):  # type: ignore[no-untyped-def]
            if self.full:
                self.full = False
                raise sqlite3.OperationalError("database or disk is full")
            return super().append_many(frames)

    store = ChannelStore()
    asm = FrameAssembler(store, FullOnce(tmp_path / "o.sqlite"), clock=GpsClock(wall=lambda: 1.8e9))
    for t in (1.7e9, 1.7e9 + 0.04):
        store.add_fix(t, {"lat": 28.4, "lon": -81.4 + t - 1.7e9})
    with pytest.raises(sqlite3.OperationalError):
        asm.tick()
    assert store.pending_fixes == 2 and asm.frames == 0
    store.add_fix(1.7e9 + 0.08, {"lat": 28.4, "lon": -81.32})
    asm.tick()
    assert [f["t"] for f in asm.outbox.oldest(10)] == [1.7e9, 1.7e9 + 0.04, 1.7e9 + 0.08]
