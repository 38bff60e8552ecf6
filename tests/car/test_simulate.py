"""The simulated car: engine model from real recorded speed, replay pacing, the pipeline without a server."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

from dashboard.car.replay import (
    BUNDLED_LOG,
    LOOP_PAUSE_S,
    MAX_GAP_S,
    ReplayClock,
    ReplaySource,
    ReplayTimeline,
    replay_length,
)
from dashboard.car.simulate import build_simulation, engine_processor
from dashboard.car.source import ChannelStore, SourceState
from dashboard.telemetry.channels import REGISTRY
from dashboard.telemetry.engine_model import REDLINE_RPM, EngineModel
from dashboard.telemetry.gps import read_log
from tests.waiting import wait_for


def _engine_over_log() -> list[dict[str, float]]:
    process = engine_processor(EngineModel())
    return [out for r in read_log(BUNDLED_LOG) if (out := process(r))]


def test_engine_channels_follow_the_recorded_laps() -> None:
    out = _engine_over_log()
    assert len(out) == 3828  # one per RMC fix
    for frame in out:
        for name, value in frame.items():
            channel = REGISTRY[name]
            assert channel.minimum <= value <= channel.maximum, (name, value)
    assert max(f["speed"] for f in out) == pytest.approx(91.5, abs=0.1)
    assert max(f["rpm"] for f in out) <= REDLINE_RPM
    assert {f["gear"] for f in out} >= {0.0, 1.0, 2.0, 3.0, 4.0}  # pits (neutral) and 4 gears on track
    assert any(f["throttle"] == 0 for f in out) and any(f["throttle"] > 80 for f in out)  # braking and full power
    fuel = [f["fuel_level"] for f in out]
    assert fuel == sorted(fuel, reverse=True) and fuel[0] - fuel[-1] > 0.3  # only ever drains
    assert out[0]["coolant_temp"] < 60 < out[-1]["coolant_temp"] < 100  # warms up over the run


def test_faster_car_means_more_rpm_in_the_same_gear() -> None:
    model = EngineModel()
    a = model.update(0.0, 30.0)
    b = model.update(0.1, 31.0)
    assert a["gear"] == b["gear"] and b["rpm"] > a["rpm"] and b["throttle"] > 0


def test_replay_paces_by_the_log_and_speedup(tmp_path: Path) -> None:
    short = tmp_path / "short.nmea"
    lines = BUNDLED_LOG.read_text().splitlines(keepends=True)[:62]  # 31 fixes, ~1.8 s of recording
    short.write_text("".join(lines) + "$GPRMC,1653")  # and a truncated last line
    store = ChannelStore()
    source = ReplaySource(store, short, speedup=3.0, loop=False)
    started = time.monotonic()
    source.start()
    wait_for(lambda: source.finished, 10, "end of log")
    elapsed = time.monotonic() - started
    assert 0.4 < elapsed < 1.6  # ~1.8 s / 3
    assert source.readings == 62 and source.decoder.counters.errors == 1 and source.loops == 1
    assert source.status.state is SourceState.STOPPED
    assert store.snapshot()["lat"] == pytest.approx(28.41, abs=0.01)
    source.stop()


def test_pipeline_without_server_fills_the_outbox(tmp_path: Path) -> None:
    manager = build_simulation(None, "sim-test", speedup=0, loop=True, outbox_path=tmp_path / "o.sqlite",
                               rate_hz=50)
    manager.start()
    try:
        wait_for(lambda: manager.assembler.frames - manager.assembler.fix_frames >= 5, 10, "5 tick frames")
    finally:
        manager.stop()
        manager.stop()
    frames = manager.outbox.oldest(100_000)
    fixes = [f for f in frames if f["channels"].get("lat") is not None]
    ticks = [f for f in frames if "rpm" in f["channels"]]
    assert fixes and ticks and len(fixes) + len(ticks) == len(frames)  # every frame one or the other
    assert all({"lat", "lon", "gps_speed"} <= set(f["channels"]) for f in fixes)
    assert all({"rpm", "gear", "throttle", "fuel_level"} <= set(f["channels"]) for f in ticks)
    assert not any(f["channels"].get("lat") is not None for f in ticks)  # positions travel in fix frames only
    assert manager.sources[0].readings > 200  # speedup 0 plays the log as fast as it can


def test_replay_timeline_keeps_the_recorded_steps_shortens_pauses_and_moves_forward_across_passes() -> None:
    recorded = [1000.0, 1000.04, 1000.08, 1010.08, 1010.12]  # a 10 s pause in the recording
    assert replay_length(recorded) == pytest.approx(0.08 + MAX_GAP_S + 0.04)
    now = 1.8e9
    timeline = ReplayTimeline(recorded, now, speedup=10.0)
    first = [timeline.replayed(t) for t in recorded]
    assert first[0] == pytest.approx(now - replay_length(recorded) * 0.9)  # at 10x the first pass ends now
    assert first[-1] == pytest.approx(now - replay_length(recorded) * 0.9 + replay_length(recorded))
    steps = [round(b - a, 6) for a, b in zip(first, first[1:], strict=False)]
    assert steps == [0.04, 0.04, MAX_GAP_S, 0.04]  # the recording's own steps; the pause shortened
    timeline.new_pass()
    second = [timeline.replayed(t) for t in recorded]
    assert second[0] == pytest.approx(first[-1] + LOOP_PAUSE_S)  # the seam: forward, after a pause
    assert [round(b - a, 6) for a, b in zip(second, second[1:], strict=False)] == steps
    assert ReplayTimeline(recorded, now, speedup=1.0).replayed(1000.0) == now  # at 1x it starts now


def test_replay_clock_runs_at_the_speedup_from_the_newest_fix_and_never_too_far_ahead() -> None:
    mono, wall = [50.0], [1.8e9]
    clock = ReplayClock(10.0, max_ahead_s=240.0, wall=lambda: wall[0], mono=lambda: mono[0])
    assert clock.now() == 1.8e9 and not clock.using_gps  # before the first fix: the wall clock
    clock.observe(1.8e9 - 100.0)
    mono[0] += 0.5
    assert clock.now() == pytest.approx(1.8e9 - 95.0)  # 0.5 s at 10x
    mono[0] += 60.0
    assert clock.now() == pytest.approx(1.8e9 + 240.0)  # held at the limit ahead of the wall clock


def test_replay_at_10x_frames_each_fix_at_its_recorded_step(tmp_path: Path) -> None:
    short = tmp_path / "short.nmea"
    short.write_text("".join(BUNDLED_LOG.read_text().splitlines(keepends=True)[1000:1200]))  # 100 fixes, ~8 s
    recorded = sorted({r.time for r in read_log(short) if r.has_fix})
    store = ChannelStore()
    source = ReplaySource(store, short, speedup=10.0, loop=False)
    started = time.time()
    source.start()
    wait_for(lambda: source.finished, 10, "end of log")
    source.stop()
    fixes = store.take_fixes()
    assert len(fixes) == len(recorded) == 100
    assert [round(t - fixes[0][0], 3) for t, _ in fixes] == [round(t - recorded[0], 3) for t in recorded]
    span = recorded[-1] - recorded[0]
    assert started - span <= fixes[0][0] and fixes[-1][0] <= time.time()  # the pass ends about now, never ahead


def test_replay_timeline_restarted_after_a_pause_starts_from_now_and_never_goes_back() -> None:
    recorded = [1000.0 + i * 0.1 for i in range(101)]  # 10 s
    timeline = ReplayTimeline(recorded, 1.8e9, speedup=1.0)
    last = [timeline.replayed(t) for t in recorded][-1]
    timeline.restart(1.8e9 + 600.0)  # the session was stopped for ten minutes, then started again
    again = [timeline.replayed(t) for t in recorded]
    assert again[0] == pytest.approx(1.8e9 + 600.0) and again[0] > last
    timeline.restart(1.8e9 + 1.0)  # a wall clock behind the replay (a restart at once): still forward
    assert timeline.replayed(recorded[0]) == pytest.approx(again[-1] + LOOP_PAUSE_S)
