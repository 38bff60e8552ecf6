"""Frame assembler: staleness → null, seq continuity across restarts, group commits, frames waiting for real time."""
from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from dashboard.car.assembler import FrameAssembler
from dashboard.car.clock import GpsClock, trusted
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
    clock = GpsClock(wall=lambda: 1.7e9 + mono.now - 1000.0, mono=mono, synced=trusted)
    asm = FrameAssembler(store, Outbox(tmp_path / "o.sqlite"), clock=clock)
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
    assert asm.outbox.oldest(1)[0] == {"seq": seq, "t": 1.7e9 + 5.1,
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


def test_frames_are_committed_in_groups_of_a_tenth_of_a_second_and_the_rest_at_stop(tmp_path: Path) -> None:
    mono = FakeClock()
    store = ChannelStore(clock=mono)
    store.update({"rpm": 1.0})
    committed: list[int] = []
    asm = FrameAssembler(store, Outbox(tmp_path / "o.sqlite"), rate_hz=100, on_frame=committed.append,
                         clock=GpsClock(wall=lambda: 1.7e9 + mono.now, mono=mono, synced=trusted))
    assert asm.group_ticks == 10
    for i in range(25):
        mono.now += 0.01
        assert asm.tick() == (10 * (i + 1) // 10 if (i + 1) % 10 == 0 else None)
    assert committed == [10, 20] and asm.outbox.count() == 20 and asm.commits == 2  # 5 frames held, not yet sent
    assert asm.last_frame is not None and asm.last_frame["seq"] == 20
    asm.stop()  # never started: stop still commits what is held
    assert committed == [10, 20, 25] and asm.outbox.count() == 25
    frames = asm.outbox.oldest(100)
    assert [f["seq"] for f in frames] == list(range(1, 26))
    assert all(b["t"] - a["t"] == pytest.approx(0.01, abs=1e-6) for a, b in zip(frames, frames[1:], strict=False))
    assert FrameAssembler(store, asm.outbox, rate_hz=10).group_ticks == 1  # slower than 10 Hz: a commit a tick
    assert FrameAssembler(store, asm.outbox, rate_hz=25).group_ticks == 3  # 120 ms: never more often than 100 ms


def test_a_group_that_cannot_be_committed_is_kept_for_the_next_commit(tmp_path: Path) -> None:
    mono = FakeClock()
    store = ChannelStore(clock=mono)
    store.update({"rpm": 1.0})
    box = Outbox(tmp_path / "o.sqlite")
    asm = FrameAssembler(store, box, rate_hz=10, clock=GpsClock(wall=lambda: 1.7e9 + mono.now, mono=mono,
                                                                synced=trusted))
    real_append = box.append_many
    box.append_many = lambda frames: (_ for _ in ()).throw(OSError("disk full"))  # type: ignore[method-assign]
    with pytest.raises(OSError):
        asm.tick()
    assert box.count() == 0
    box.append_many = real_append  # type: ignore[method-assign]
    mono.now += 0.1
    assert asm.tick() == 2 and [f["seq"] for f in box.oldest(10)] == [1, 2]


def test_frames_before_real_time_wait_without_a_date_and_are_stamped_when_a_fix_comes(tmp_path: Path) -> None:
    mono = FakeClock()
    store = ChannelStore(clock=mono)
    store.update({"rpm": 1.0})
    clock = GpsClock(wall=lambda: 0.0, mono=mono, synced=lambda: False)  # a Pi just booted: 1970, no NTP
    box = Outbox(tmp_path / "o.sqlite", boot_id="boot-a")
    asm = FrameAssembler(store, box, rate_hz=10, clock=clock)
    for _ in range(5):
        asm.tick()
        mono.now += 0.1
    assert box.count() == 5 and box.unstamped() == 5
    assert box.oldest(10) == [] and box.after(0, 10) == []  # nothing the uplink could send
    clock.observe(1.7e9, at_mono=mono.now)  # the first fix
    asm.tick()
    frames = box.oldest(10)
    assert [f["seq"] for f in frames] == [1, 2, 3, 4, 5, 6] and box.unstamped() == 0
    assert [f["t"] for f in frames] == pytest.approx([1.7e9 - 0.5 + 0.1 * i for i in range(6)], abs=1e-6)


def test_a_late_ticks_catch_up_in_the_same_millisecond_makes_no_second_frame_with_the_same_time(tmp_path: Path) -> None:
    mono = FakeClock()
    store = ChannelStore(clock=mono)
    store.update({"rpm": 1.0})
    clock = GpsClock(wall=lambda: 1.7e9 + mono.now, mono=mono, synced=trusted)
    asm = FrameAssembler(store, Outbox(tmp_path / "o.sqlite"), rate_hz=10, clock=clock)
    assert asm.tick() == 1
    mono.now += 0.0004  # the tick that was due came right after a late one
    assert asm.tick() is None and asm.skipped_ticks == 1
    mono.now += 0.1
    assert asm.tick() == 2
    times = [f["t"] for f in asm.outbox.oldest(10)]
    assert times[1] > times[0]


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
    mono.now += 0.2  # the next tick (one made in the same millisecond is no frame)
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
    assert store.pending_fixes == 0 and asm.frames == 0  # held by the assembler for the next commit
    store.add_fix(1.7e9 + 0.08, {"lat": 28.4, "lon": -81.32})
    asm.tick()
    assert [f["t"] for f in asm.outbox.oldest(10)] == [1.7e9, 1.7e9 + 0.04, 1.7e9 + 0.08]
