"""Cost of the pit-wall processors per frame, and what a 20-car team at 25 Hz costs in all.

    python -m bench.pitwall

Feeds the bundled recording (its fixes, looped 5 times with times shifted) to a PitDetector with a
pit lane on the path out of the pits, a synthetic 25 Hz fuel_level trace to SensorFuel, the clock
to RulesWatch once a second, and resamples each lap for the comparison. Prints µs per frame (or per
call) and the share of one core that 20 cars × 25 frames/s would take. Single process, no I/O.
"""
from __future__ import annotations

import math
import random
import time
from typing import Any

from dashboard.car.replay import BUNDLED_LOG
from dashboard.telemetry.compare import resample_lap
from dashboard.telemetry.fuel import SensorFuel
from dashboard.telemetry.geo import LocalProjection
from dashboard.telemetry.gps import read_log
from dashboard.telemetry.laps import ORLANDO_KART_CENTER, Line, recompute
from dashboard.telemetry.pitlane import PitDetector, PitLane
from dashboard.telemetry.stints import CHAMPCAR, DriverChange, RulesWatch, stints_from_changes

CARS = 20
RATE_HZ = 25
LOOPS = 5


def fixes() -> list[dict[str, Any]]:
    one = [{"t": r.time, "channels": dict(r.values)} for r in read_log(BUNDLED_LOG) if r.sentence == "RMC"]
    span = one[-1]["t"] - one[0]["t"] + 0.1
    out = [{**f, "t": f["t"] + k * span} for k in range(LOOPS) for f in one]
    return [{**f, "seq": i} for i, f in enumerate(out)]


def lane(frames: list[dict[str, Any]]) -> PitLane:
    proj = LocalProjection(ORLANDO_KART_CENTER.a)

    def across(i: int) -> Line:
        p0, p, p1 = (proj.to_xy(frames[j]["channels"]["lat"], frames[j]["channels"]["lon"]) for j in (i - 1, i, i + 1))
        dx, dy = p1[0] - p0[0], p1[1] - p0[1]
        n = math.hypot(dx, dy)
        return Line(proj.to_latlon(p[0] - dy / n * 5, p[1] + dx / n * 5),
                    proj.to_latlon(p[0] + dy / n * 5, p[1] - dx / n * 5))

    return PitLane(across(50), across(125))


def per_frame_us(work: Any, n: int) -> float:
    start = time.perf_counter()
    work()
    return (time.perf_counter() - start) / n * 1e6


def main() -> None:
    frames = fixes()
    detector = PitDetector(lane(frames))
    pit_us = per_frame_us(lambda: [detector.feed(f) for f in frames], len(frames))

    rng = random.Random(1)
    t0 = frames[0]["t"]
    fuel_frames = [{"t": t0 + i / RATE_HZ, "channels": {"fuel_level": 90 - i / RATE_HZ / 30 + rng.uniform(-5, 5),
                                                          "speed": 80.0}} for i in range(RATE_HZ * 1800)]
    laps = [{"lap": k, "start_t": t0 + 60 * k, "end_t": t0 + 60 * (k + 1)} for k in range(30)]
    fuel = SensorFuel(alert_laps_left=3)

    def feed_fuel() -> None:
        pending = list(laps)
        for f in fuel_frames:
            while pending and pending[0]["end_t"] <= f["t"]:
                fuel.lap_completed(pending.pop(0))
            fuel.feed(f)

    fuel_us = per_frame_us(feed_fuel, len(fuel_frames))

    stints = stints_from_changes(t0, [DriverChange(t0, "a"), DriverChange(t0 + 3600, "b")])
    watch = RulesWatch(CHAMPCAR)
    calls = 7200
    rules_us = per_frame_us(lambda: [watch.check(t0 + s, stints) for s in range(calls)], calls)

    timed = [lap for lap in recompute(ORLANDO_KART_CENTER, frames) if lap.timed]
    slices = [[f for f in frames if lap.start_t - 1 <= f["t"] <= lap.end_t + 1] for lap in timed]  # as a query would
    lap_frames = sum(map(len, slices)) / max(1, len(slices))
    start = time.perf_counter()
    for lap, lap_slice in zip(timed, slices, strict=True):
        resample_lap(lap_slice, lap.start_t, lap.end_t, ["gps_speed"])
    resample_ms = (time.perf_counter() - start) / len(timed) * 1e3

    per_frame = pit_us + fuel_us
    share = per_frame * CARS * RATE_HZ / 1e6 + rules_us * CARS / 1e6
    print(f"PitDetector.feed         {pit_us:8.1f} µs/frame  ({len(frames)} fixes)")
    print(f"SensorFuel.feed+laps     {fuel_us:8.1f} µs/frame  ({len(fuel_frames)} frames at {RATE_HZ} Hz, 30 laps)")
    print(f"RulesWatch.check         {rules_us:8.1f} µs/call   (once a second per car)")
    print(f"resample_lap (2,000 pts) {resample_ms:8.1f} ms/lap    (on request; the lap's ~{lap_frames:.0f} frames "
          f"± 1 s, one channel)")
    print(f"{CARS} cars × {RATE_HZ} Hz: pit + fuel on every frame, rules once a second: "
          f"{share * 100:.1f} % of one core")


if __name__ == "__main__":
    main()
