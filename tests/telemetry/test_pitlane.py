"""Pit stops: a synthetic straight pit lane, and the bundled recording with a held position inserted."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pytest

from dashboard.car.replay import BUNDLED_LOG
from dashboard.telemetry.geo import LocalProjection
from dashboard.telemetry.gps import read_log
from dashboard.telemetry.laps import ORLANDO_KART_CENTER, Line, recompute
from dashboard.telemetry.pitlane import (
    PIT_ENTRY,
    PIT_STATIONARY,
    PIT_STOP,
    PitDetector,
    PitEvent,
    PitLane,
    PitStop,
    pit_lap_flags,
)

ORIGIN = (28.4, -81.4)
PROJ = LocalProjection(ORIGIN)
T0 = 1_700_000_000.0
TOLERANCE_S = 0.1  # the brief: a stop's durations right to 0.1 s
EXACT_S = 1e-3  # synthetic traces: exact but for float rounding of epoch times


def latlon(x: float, y: float) -> tuple[float, float]:
    return PROJ.to_latlon(x, y)


def frame(seq: int, t: float, x: float, y: float, speed: float | None) -> dict[str, Any]:
    lat, lon = latlon(x, y)
    channels: dict[str, Any] = {"lat": lat, "lon": lon}
    if speed is not None:
        channels["gps_speed"] = speed
    return {"seq": seq, "t": t, "channels": channels}


# A straight pit lane along x: pit-in across x = 100, pit-out across x = 400 (drawn north to south,
# so a car driving east has A on its left).
LANE = PitLane(Line(latlon(100, 10), latlon(100, -10), "a_left"), Line(latlon(400, 10), latlon(400, -10), "a_left"))
SPEED_MS = 60 / 3.6


def straight(stop_at: float = 250.0, hold_s: float = 30.0, dt: float = 0.1, end_x: float = 600.0,
             with_speed: bool = True) -> list[dict[str, Any]]:
    """A car at 60 km/h along x from 0, held at ``stop_at`` for ``hold_s`` (speed 0), on to ``end_x``."""
    frames, t, x, seq = [], T0, 0.0, 0
    held = False
    while x <= end_x:
        frames.append(frame(seq, t, x, 0.0, 60.0 if with_speed else None))
        seq += 1
        if not held and x < stop_at <= x + SPEED_MS * dt:
            frames.append(frame(seq, t + (stop_at - x) / SPEED_MS, stop_at, 0.0, 60.0 if with_speed else None))
            seq += 1
            t0 = t + (stop_at - x) / SPEED_MS
            for k in range(1, round(hold_s / dt) + 1):
                frames.append(frame(seq, t0 + k * dt, stop_at, 0.0, 0.0 if with_speed else None))
                seq += 1
            held = True
            t, x = t0 + hold_s, stop_at
        t += dt
        x += SPEED_MS * dt
    return frames


def run(detector: PitDetector, frames: list[Any]) -> list[PitEvent]:
    events: list[PitEvent] = []
    for f in frames:
        events.extend(detector.feed(f))
    events.extend(detector.finish())
    return events


def test_a_stop_in_a_straight_lane_has_its_lane_and_stationary_time() -> None:
    detector = PitDetector(LANE)
    events = run(detector, straight())
    assert [e.type for e in events] == [PIT_ENTRY, PIT_STATIONARY, PIT_STOP]
    (stop,) = detector.stops
    assert stop.lane_time == pytest.approx(300 / SPEED_MS + 30.0, abs=EXACT_S)
    assert stop.stationary_time == pytest.approx(30.0, abs=EXACT_S)
    assert stop.entry_t == pytest.approx(T0 + 100 / SPEED_MS, abs=EXACT_S)
    assert not stop.open and stop.gaps == 0
    assert events[-1].payload == stop.to_dict()


def test_without_gps_speed_the_stop_is_judged_by_position() -> None:
    detector = PitDetector(LANE)
    run(detector, straight(with_speed=False))
    (stop,) = detector.stops
    assert stop.stationary_time == pytest.approx(30.0, abs=TOLERANCE_S)
    assert stop.lane_time == pytest.approx(300 / SPEED_MS + 30.0, abs=EXACT_S)


def test_a_drive_through_is_a_stop_with_no_stationary_time_and_a_short_halt_does_not_count() -> None:
    detector = PitDetector(LANE)
    run(detector, straight(hold_s=1.5))  # under STATIONARY_MIN_S
    (stop,) = detector.stops
    assert stop.stationary_time == 0.0
    assert stop.lane_time == pytest.approx(300 / SPEED_MS + 1.5, abs=EXACT_S)


def test_status_while_in_the_lane() -> None:
    detector = PitDetector(LANE)
    frames = straight()
    seen = set()
    for f in frames:
        detector.feed(f)
        seen.add(detector.status)
        if detector.status == "stopped":
            assert detector.running_stop_time() is not None and detector.running_stop_time() > 0
    assert seen == {"on_track", "in_lane", "stopped"}
    assert detector.status == "on_track" and detector.running_stop_time() is None


def test_a_gap_while_stopped_keeps_the_stop_open_until_pit_out() -> None:
    frames = straight()
    stop_t = T0 + 250 / SPEED_MS
    kept = [f for f in frames if not stop_t + 5 < f["t"] < stop_t + 15]  # 10 s without a fix, standing
    detector = PitDetector(LANE)
    run(detector, kept)
    (stop,) = detector.stops
    assert stop.gaps == 1 and detector.counters.gaps == 1
    assert stop.stationary_time == pytest.approx(30.0, abs=EXACT_S)  # the car did not move across the gap
    assert stop.lane_time == pytest.approx(300 / SPEED_MS + 30.0, abs=EXACT_S)


def test_a_gps_jump_in_the_lane_is_ignored() -> None:
    frames = straight()
    i = next(i for i, f in enumerate(frames) if f["t"] > T0 + 250 / SPEED_MS + 10)
    lat, lon = latlon(5000, 3000)
    frames[i] = {**frames[i], "channels": {"lat": lat, "lon": lon, "gps_speed": 0.0}}
    detector = PitDetector(LANE)
    run(detector, frames)
    (stop,) = detector.stops
    assert detector.counters.jumps == 1
    assert stop.stationary_time == pytest.approx(30.0, abs=EXACT_S)


def test_a_car_that_never_leaves_the_lane_is_an_open_stop_at_finish() -> None:
    frames = [f for f in straight(hold_s=60) if f["t"] < T0 + 250 / SPEED_MS + 20]
    detector = PitDetector(LANE)
    events = run(detector, frames)
    assert events[-1].type == PIT_STOP
    (stop,) = detector.stops
    assert stop.open
    assert stop.exit_t == frames[-1]["t"]
    assert stop.stationary_time == pytest.approx(frames[-1]["t"] - (T0 + 250 / SPEED_MS), abs=EXACT_S)
    assert detector.finish() == []


def test_bad_frames_are_counted_not_fatal() -> None:
    detector = PitDetector(LANE)
    bad: list[Any] = [None, {}, {"t": "x", "channels": {"lat": 1, "lon": 2}}, {"t": T0, "channels": "no"},
                      {"t": T0, "channels": {"lat": float("nan"), "lon": 0}},
                      {"t": T0, "channels": {"lat": 95, "lon": 0}}, object()]
    for f in bad:
        assert detector.feed(f) == []
    assert detector.counters.no_position == len(bad)
    frames = straight()
    clean = PitDetector(LANE)
    run(clean, frames)
    run(detector, frames[:10] + frames[5:6] + frames[10:])  # a repeated frame
    assert detector.counters.out_of_order == clean.counters.out_of_order + 1
    assert len(detector.stops) == 1


def test_fallback_without_a_pit_lane_is_a_long_standstill() -> None:
    detector = PitDetector(None, fallback_stop_s=30.0)
    run(detector, straight(hold_s=40.0))
    (stop,) = detector.stops
    assert stop.lane_time is None
    assert stop.stationary_time == pytest.approx(40.0, abs=EXACT_S)
    short = PitDetector(None, fallback_stop_s=30.0)
    run(short, straight(hold_s=20.0))
    assert short.stops == []


def test_pit_lane_round_trips_and_rejects_bad_input() -> None:
    assert PitLane.from_dict(LANE.to_dict()) == LANE
    with pytest.raises(ValueError):
        PitLane.from_dict({"pit_in": LANE.pit_in.to_dict()})
    with pytest.raises(ValueError):
        PitLane.from_dict({"pit_in": {"a": [0, 0], "b": [0, 0]}, "pit_out": LANE.pit_out.to_dict()})


@dataclass
class _Lap:
    number: int
    start_t: float
    end_t: float


def test_lap_flags_in_lap_and_out_lap() -> None:
    laps = [_Lap(1, 0, 60), _Lap(2, 60, 150), _Lap(3, 150, 210), _Lap(4, 210, 270)]
    across_line = PitStop(1, 55.0, 95.0, 40.0, 30.0)  # lane across the start/finish line
    inside = PitStop(2, 160.0, 200.0, 40.0, 30.0)  # the whole lane inside lap 3
    flags = pit_lap_flags(laps, [across_line, inside])
    assert flags[1].pit_in and not flags[1].pit_out
    assert flags[2].pit_out and not flags[2].pit_in
    assert flags[3].pit_in and flags[3].pit_out and flags[3].stops == (2,)
    assert not flags[4].pit_in and not flags[4].pit_out


# ---------------------------------------------------------------------------------------------
# The bundled recording: a pit lane drawn across the path it takes out of the pits at the start
# (that path is 11-28 m from every later lap, so the lines are crossed once), and a stop made by
# holding the position of one fix for HOLD_S, everything after it shifted by HOLD_S.

PIT_IN_FIX, HOLD_FIX, PIT_OUT_FIX = 50, 90, 125
HOLD_S = 45.0
HOLD_DT = 0.1  # 10 Hz held samples


def recording() -> list[dict[str, Any]]:
    readings = [r for r in read_log(BUNDLED_LOG) if r.sentence == "RMC"]
    return [{"seq": i, "t": r.time, "channels": dict(r.values)} for i, r in enumerate(readings)]


def line_across(frames: list[dict[str, Any]], i: int, half_m: float = 5.0) -> Line:
    """A line across the path through the midpoint of fixes i and i+1 (perpendicular to the move i-1 → i+2).

    The move i → i+1 passes through that midpoint half-way, so the car crosses it at (t_i + t_i+1) / 2.
    """
    proj = LocalProjection(ORLANDO_KART_CENTER.a)
    p0, pa, pb, p1 = (proj.to_xy(frames[j]["channels"]["lat"], frames[j]["channels"]["lon"])
                      for j in (i - 1, i, i + 1, i + 2))
    p = ((pa[0] + pb[0]) / 2, (pa[1] + pb[1]) / 2)
    dx, dy = p1[0] - p0[0], p1[1] - p0[1]
    n = math.hypot(dx, dy)
    nx, ny = -dy / n * half_m, dx / n * half_m
    return Line(proj.to_latlon(p[0] + nx, p[1] + ny), proj.to_latlon(p[0] - nx, p[1] - ny), "auto")


def crossing_t(frames: list[dict[str, Any]], i: int) -> float:
    return (frames[i]["t"] + frames[i + 1]["t"]) / 2


def with_hold(frames: list[dict[str, Any]], at: int, hold_s: float) -> list[dict[str, Any]]:
    held = frames[at]
    out = frames[: at + 1]
    for k in range(1, round(hold_s / HOLD_DT) + 1):
        out.append({"t": held["t"] + k * HOLD_DT, "channels": {**held["channels"], "gps_speed": 0.0}})
    out.extend({**f, "t": f["t"] + hold_s} for f in frames[at + 1:])
    return [{**f, "seq": seq} for seq, f in enumerate(out)]


@pytest.mark.parametrize("with_speed", [True, False])
def test_recording_with_a_held_position_gives_the_stop_to_a_tenth(with_speed: bool) -> None:
    original = recording()
    lane = PitLane(line_across(original, PIT_IN_FIX), line_across(original, PIT_OUT_FIX))
    frames = with_hold(original, HOLD_FIX, HOLD_S)
    if not with_speed:
        frames = [{**f, "channels": {k: v for k, v in f["channels"].items() if k != "gps_speed"}} for f in frames]
    detector = PitDetector(lane)
    events = run(detector, frames)
    (stop,) = detector.stops  # the four laps after it never cross the lane's lines
    expected_lane = crossing_t(original, PIT_OUT_FIX) - crossing_t(original, PIT_IN_FIX) + HOLD_S
    assert stop.entry_t == pytest.approx(crossing_t(original, PIT_IN_FIX), abs=0.01)
    assert stop.lane_time == pytest.approx(expected_lane, abs=TOLERANCE_S)
    assert stop.stationary_time == pytest.approx(HOLD_S, abs=TOLERANCE_S)
    assert [e.type for e in events] == [PIT_ENTRY, PIT_STATIONARY, PIT_STOP]
    assert not stop.open and stop.gaps == 0 and detector.counters.jumps == 0

    laps = recompute(ORLANDO_KART_CENTER, frames)
    flags = pit_lap_flags(laps, detector.stops)
    assert flags[0].pit_in and flags[0].pit_out  # the whole lane is inside the out-lap
    assert not any(f.pit_in or f.pit_out for n, f in flags.items() if n > 0)
    assert [round(lap.lap_time, 3) for lap in laps if lap.timed] == [
        round(lap.lap_time, 3) for lap in recompute(ORLANDO_KART_CENTER, original) if lap.timed]


def test_recording_without_a_pit_lane_finds_the_held_position_only() -> None:
    frames = with_hold(recording(), HOLD_FIX, HOLD_S)
    detector = PitDetector(None)
    run(detector, frames)
    (stop,) = detector.stops  # the kart standing in the pits at the start and at the end is shorter than 30 s
    assert stop.stationary_time == pytest.approx(HOLD_S, abs=TOLERANCE_S)
