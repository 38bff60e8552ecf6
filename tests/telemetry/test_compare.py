"""Lap comparison on the bundled recording, checked against an independent distance computation."""
from __future__ import annotations

import math
from typing import Any

import pytest

from dashboard.car.replay import BUNDLED_LOG
from dashboard.telemetry.cleanlap import LapRecord
from dashboard.telemetry.compare import (
    MAX_POINTS,
    compare_setups,
    delta_trace,
    resample_lap,
    segment_gains,
    setup_diff,
)
from dashboard.telemetry.gps import read_log
from dashboard.telemetry.laps import ORLANDO_KART_CENTER, Lap, recompute

END_TOLERANCE_S = 0.05  # the brief: the delta trace ends at the difference of the lap times within 0.05 s
MID_TOLERANCE_S = 0.05  # and agrees with an independent computation along the lap
EARTH_R_M = 6_371_008.8  # mean Earth radius, for the haversine reference


@pytest.fixture(scope="module")
def session() -> tuple[list[dict[str, Any]], list[Lap]]:
    """The recording's RMC fixes, with sampled frames (no position, an ``rpm`` channel) interleaved
    as a car sends them: their t runs a little behind the fixes' t along seq."""
    fixes = [r for r in read_log(BUNDLED_LOG) if r.sentence == "RMC"]
    frames: list[dict[str, Any]] = []
    for r in fixes:
        frames.append({"t": r.time, "channels": dict(r.values)})
        if len(frames) % 3 == 0:  # every other fix or so, a sampled frame stamped 30 ms earlier
            frames.append({"t": r.time - 0.03, "channels": {"rpm": 100.0 * r.values["gps_speed"]}})
    frames = [{**f, "seq": seq} for seq, f in enumerate(frames)]
    laps = [lap for lap in recompute(ORLANDO_KART_CENTER, frames) if lap.timed]
    assert len(laps) == 4
    return frames, laps


def reference_time_at(frames: list[dict[str, Any]], lap: Lap, fraction: float) -> float:
    """Elapsed time at a fraction of the lap's length: haversine distances, no code shared with compare."""
    fixes = sorted((f["t"], f["channels"]["lat"], f["channels"]["lon"]) for f in frames if "lat" in f["channels"])

    def at(t: float) -> tuple[float, float]:
        for (t0, a0, o0), (t1, a1, o1) in zip(fixes, fixes[1:], strict=False):
            if t0 <= t <= t1:
                s = (t - t0) / (t1 - t0)
                return a0 + s * (a1 - a0), o0 + s * (o1 - o0)
        raise AssertionError("not covered")

    def hav(p: tuple[float, float], q: tuple[float, float]) -> float:
        la1, lo1, la2, lo2 = map(math.radians, (*p, *q))
        h = math.sin((la2 - la1) / 2) ** 2 + math.cos(la1) * math.cos(la2) * math.sin((lo2 - lo1) / 2) ** 2
        return 2 * EARTH_R_M * math.asin(math.sqrt(h))

    path = [(lap.start_t, at(lap.start_t))] + [(t, (a, o)) for t, a, o in fixes if lap.start_t < t < lap.end_t]
    path.append((lap.end_t, at(lap.end_t)))
    cum = [0.0]
    for (_, p), (_, q) in zip(path, path[1:], strict=False):
        cum.append(cum[-1] + hav(p, q))
    target = fraction * cum[-1]
    for i in range(1, len(cum)):
        if cum[i] >= target:
            s = (target - cum[i - 1]) / (cum[i] - cum[i - 1])
            return path[i - 1][0] + s * (path[i][0] - path[i - 1][0]) - lap.start_t
    return lap.end_t - lap.start_t


def test_delta_trace_of_two_laps_ends_at_their_lap_time_difference(
        session: tuple[list[dict[str, Any]], list[Lap]]) -> None:
    frames, laps = session
    a, b = laps[0], laps[3]  # 58.86 s and 56.17 s
    ra = resample_lap(frames, a.start_t, a.end_t, ["gps_speed", "rpm"])
    rb = resample_lap(frames, b.start_t, b.end_t, ["gps_speed", "rpm"])
    trace = delta_trace(ra, rb)
    assert len(trace.delta_s) == 2000
    assert trace.final == pytest.approx(b.lap_time - a.lap_time, abs=END_TOLERANCE_S)
    assert trace.delta_s[0] == pytest.approx(0.0, abs=1e-9)
    for fraction in (0.1, 0.25, 0.5, 0.75, 0.9):
        k = round(fraction * 1999)
        f = ra.fraction[k]
        expected = reference_time_at(frames, b, f) - reference_time_at(frames, a, f)
        assert trace.delta_s[k] == pytest.approx(expected, abs=MID_TOLERANCE_S), fraction
    steps = [abs(y - x) for x, y in zip(trace.delta_s, trace.delta_s[1:], strict=False)]
    assert max(steps) < 0.02  # continuous: no jump between neighbouring points half a metre apart
    assert ra.length_m == pytest.approx(a.distance_m, rel=0.01)  # the lap timer's own distance

    segments = segment_gains(trace, 20)
    assert sum(s.change_s for s in segments) == pytest.approx(trace.final)
    assert {s.verdict for s in segments} <= {"gain", "loss", "even"}
    assert sum(s.verdict == "gain" for s in segments) > sum(s.verdict == "loss" for s in segments)  # 2.7 s faster

    speed = ra.channels["gps_speed"]
    assert None not in speed and 20 < min(speed) < max(speed) < 100  # km/h of a kart
    rpm = ra.channels["rpm"]  # from the sampled frames, which carry no position
    assert None not in rpm
    assert all(r == pytest.approx(100 * s, abs=300) for r, s in zip(rpm, speed, strict=True))


def test_every_pair_of_laps(session: tuple[list[dict[str, Any]], list[Lap]]) -> None:
    frames, laps = session
    resampled = [resample_lap(frames, lap.start_t, lap.end_t, points=MAX_POINTS) for lap in laps]
    for i in range(len(laps)):
        for j in range(len(laps)):
            final = delta_trace(resampled[i], resampled[j]).final
            assert final == pytest.approx(laps[j].lap_time - laps[i].lap_time, abs=END_TOLERANCE_S)


def test_channel_gaps_are_breaks_and_bad_input_is_refused() -> None:
    frames = [{"seq": i, "t": float(i), "channels": {"lat": 28.4, "lon": -81.4 + i * 1e-4}} for i in range(21)]
    for t, v in ((0.5, 1.0), (1.5, 2.0), (12.5, 3.0), (13.5, 4.0)):  # nothing between 1.5 and 12.5
        frames.append({"seq": len(frames), "t": t, "channels": {"throttle": v}})
    frames.append({"seq": len(frames), "t": 5.0, "channels": {"throttle": "x", "lat": None}})
    lap = resample_lap(frames, 1.0, 14.0, ["throttle", "oil_temp"], points=14)
    assert lap.channels["throttle"][0] == pytest.approx(1.5)
    assert lap.channels["throttle"][5] is None
    assert lap.channels["throttle"][-1] is None  # after the last sample
    assert set(lap.channels["oil_temp"]) == {None}
    assert lap.time_s[-1] == pytest.approx(13.0)
    with pytest.raises(ValueError):
        resample_lap(frames, 1.0, 14.0, points=MAX_POINTS + 1)
    with pytest.raises(ValueError):
        resample_lap(frames, 15.0, 30.0)  # no fix after the end
    with pytest.raises(ValueError):
        resample_lap(frames, 3.0, 2.0)
    with pytest.raises(ValueError):
        delta_trace(lap, resample_lap(frames, 1.0, 14.0, points=15))


def test_setup_diff() -> None:
    before = {"tyres": {"front": 1.0, "rear": 1.1}, "wing": 3, "note": "x"}
    after = {"tyres": {"front": 1.0, "rear": 1.2}, "wing": 3, "ballast": 5}
    assert setup_diff(before, after) == {
        "ballast": {"from": None, "to": 5},
        "note": {"from": "x", "to": None},
        "tyres.rear": {"from": 1.1, "to": 1.2},
    }
    assert setup_diff(None, None) == {}


def test_compare_setups() -> None:
    def lap(n: int, time: float, version: int | None, **kw: Any) -> LapRecord:
        return LapRecord(number=n, start_t=n * 100.0, end_t=n * 100.0 + time, lap_time=time,
                         setup_version=version, **kw)

    laps = [
        lap(0, 70.0, 3, timed=False), lap(1, 60.0, 3), lap(2, 61.0, 3), lap(3, 62.0, 3), lap(4, 90.0, 3),
        lap(5, 59.0, 4, pit=True), lap(6, 59.5, 4), lap(7, 59.9, 4), lap(8, 60.1, 4),
        lap(9, 58.0, None),
    ]
    setups = {3: {"wing": 3, "tyres": {"rear": 1.1}}, 4: {"wing": 4, "tyres": {"rear": 1.1}}}
    v3, v4, unknown = compare_setups(laps, setups)
    assert (v3.setup_version, v3.laps, v3.clean_laps, v3.best) == (3, 5, 3, 60.0)
    assert v3.mean_clean == pytest.approx(61.0) and v3.consistency == pytest.approx(1.0)
    assert v3.best_change is None and v3.changed == {}
    assert (v4.best, v4.clean_laps) == (59.5, 3)  # the pit lap's 59.0 is no best
    assert v4.best_change == pytest.approx(-0.5)
    assert v4.mean_change == pytest.approx(59.833333 - 61.0)
    assert v4.changed == {"wing": {"from": 3, "to": 4}}
    assert unknown.setup_version is None and unknown.changed == {}
    assert compare_setups([]) == []


def test_a_cars_setups_are_numbered_by_content_across_sessions():
    from dashboard.telemetry.compare import number_setups

    rows = [{"session_id": "s1", "version": 1, "setup": {"tyres": {"front": 1.0}, "wing": 3}},
            {"session_id": "s1", "version": 2, "setup": {"tyres": {"front": 1.1}, "wing": 3}},
            {"session_id": "s2", "version": 1, "setup": {"wing": 3, "tyres": {"front": 1.0}}},  # s1 v1, keys reordered
            {"session_id": "s2", "version": 2, "setup": {"wing": 4}}]
    by_key, fields = number_setups(rows)
    assert by_key == {("s1", 1): 1, ("s1", 2): 2, ("s2", 1): 1, ("s2", 2): 3}
    assert fields[3] == {"wing": 4} and fields[1] == rows[0]["setup"]
    assert number_setups([]) == ({}, {})
