"""Session statistics over the real recording and over constructed cases."""
from __future__ import annotations

from pathlib import Path

from dashboard.telemetry.gps import read_log
from dashboard.telemetry.stats import FrameStats, step_m

RECORDING = Path(__file__).resolve().parents[2] / "dashboard" / "data" / "okc-2023-4laps.nmea"


def test_distance_and_max_speed_of_the_recording():
    stats = FrameStats()
    readings = [r for r in read_log(RECORDING) if r.sentence == "RMC"]
    for seq, r in enumerate(readings):
        stats.feed({"seq": seq, "t": r.time, "channels": {**r.values, "speed": r.values.get("gps_speed")}})
    laps_m = stats.distance_m
    # 4 laps of a ~1 km kart track plus out- and in-laps (PROVENANCE: 314 s, max 91.5 km/h)
    assert 4000 < laps_m < 7000
    assert abs(stats.max_speed - 91.5) < 0.6
    assert stats.gaps == 0  # spacing 0.05–0.23 s


def test_gaps_jumps_nulls_and_round_trip():
    stats = FrameStats()
    frames = [
        {"seq": 0, "t": 100.0, "channels": {"lat": 28.0, "lon": -81.0, "rpm": 5000}},
        {"seq": 1, "t": 100.1, "channels": {"lat": 28.00001, "lon": -81.0, "rpm": None}},
        {"seq": 2, "t": 103.1, "channels": {"lat": 28.00002, "lon": -81.0, "rpm": 7000}},  # a 3 s gap
        {"seq": 3, "t": 103.2, "channels": {"lat": 29.0, "lon": -81.0}},  # 111 km in 0.1 s: a jump
    ]
    for f in frames:
        stats.feed(f, backfill=f["seq"] == 2)
    one_step = step_m(28.0, -81.0, 28.00001, -81.0)
    assert abs(one_step - 1.112) < 0.001
    assert abs(stats.distance_m - 2 * one_step) < 1e-6
    assert stats.max_rpm == 7000 and stats.max_speed is None
    assert stats.gaps == 1 and abs(stats.gap_s - 3.0) < 1e-9 and stats.backfilled == 1
    assert FrameStats.from_dict(stats.to_dict()) == stats and FrameStats.from_dict(None) == FrameStats()
