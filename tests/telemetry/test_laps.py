"""Lap timing: real recordings against an independent reference, and constructed edge cases.

The recordings (tests/data/PROVENANCE.md, dashboard/data/PROVENANCE.md) go through the project's
own NMEA decoder (``telemetry.gps``) into frames ``{seq, t, channels}``, as the monitor would send
them. The reference timing below shares no code with the timer: its own NMEA parser, WGS84 ECEF →
ENU coordinates instead of the timer's equirectangular plane, and cubic Hermite interpolation of
the path using the receiver's Doppler speed and course instead of straight moves.
"""
from __future__ import annotations

import calendar
import math
import random
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from dashboard.car.replay import BUNDLED_LOG
from dashboard.telemetry.frames import Frame
from dashboard.telemetry.geo import LocalProjection, segment_crossing
from dashboard.telemetry.gps import GpsReading, NmeaDecoder, read_log
from dashboard.telemetry.laps import (
    LAP_COMPLETED,
    LAP_DELTA,
    ORLANDO_KART_CENTER,
    SECTOR_COMPLETED,
    LapEvent,
    LapTimer,
    Line,
    Track,
    recompute,
)

DATA = Path(__file__).resolve().parents[1] / "data"
PLAIN_25HZ = DATA / "okc-tillotson-plain.nmea"
FOUR_LAPS = BUNDLED_LOG

ACCURACY_25HZ_S = 0.05  # issue 6: every lap within 0.05 s of the reference on the 25 Hz recording
ACCURACY_10HZ_S = 0.1  # ... and within 0.1 s at 10 Hz decimation
REGRESSION_S = 0.005  # what the timer achieves here (< 1 ms, at 5 Hz < 2 ms): a worse result is a regression

# Lap times of the reference timing (``reference_crossings`` below, Hermite + ECEF, on every RMC
# fix), printed once and kept here so a change of the data or of the reference shows up. The
# straight-move variant of the same reference differs from these by < 0.2 ms on the 25 Hz log
# and < 0.5 ms on the 17 Hz one: the interpolation method does not matter at these rates.
REFERENCE_LAPS_25HZ = (56.4891, 55.5749, 56.9341, 55.6689, 55.3872, 56.9200,
                       55.4088, 55.1320, 55.3623, 55.2596, 55.3868)
REFERENCE_LAPS_4LAPS = (58.8566, 56.7912, 56.7970, 56.1726)


# ---------------------------------------------------------------------------------------------
# Frames from the recordings, through the project's decoder


def frames_from(readings: list[GpsReading], sentences: tuple[str, ...] = ("RMC",)) -> list[dict[str, Any]]:
    """Frames ``{seq, t, channels}`` of every reading of those types (t: GPS date+time)."""
    return [
        {"seq": seq, "t": r.time, "channels": dict(r.values)}
        for seq, r in enumerate(r for r in readings if r.sentence in sentences)
    ]


def frames_from_log(path: Path) -> list[dict[str, Any]]:
    """The RMC frames of a log."""
    return frames_from(list(read_log(path)))


@pytest.fixture(scope="module")
def plain_log() -> tuple[list[GpsReading], NmeaDecoder]:
    decoder = NmeaDecoder()
    return list(read_log(PLAIN_25HZ, decoder)), decoder


@pytest.fixture(scope="module")
def plain_frames(plain_log: tuple[list[GpsReading], NmeaDecoder]) -> list[dict[str, Any]]:
    return frames_from(plain_log[0])


@pytest.fixture(scope="module")
def four_lap_frames() -> list[dict[str, Any]]:
    return frames_from_log(FOUR_LAPS)


def decimate_10hz(frames: list[dict[str, Any]], ties: str = "earlier") -> list[dict[str, Any]]:
    """The fix nearest each point of a 0.1 s grid (none if all are >= 0.05 s away), each used once.

    From 25 Hz fixes (every 0.04 s) half the grid points have a fix on them and half sit between
    two fixes 0.02 s away: ``ties`` picks the earlier or the later, giving fixes alternately 0.08
    and 0.12 s apart (0.1 s on average), worse where the recording dropped fixes.
    """
    best: dict[int, tuple[int, int, dict[str, Any]]] = {}
    for frame in frames:
        cs = round(frame["t"] * 100)
        grid = (cs + 5) // 10  # nearest grid point; 25 Hz centiseconds are never 5 from the grid
        key = (abs(cs - 10 * grid), cs if ties == "earlier" else -cs)
        if grid not in best or key < best[grid][:2]:
            best[grid] = (*key, frame)
    return [best[g][2] for g in sorted(best)]


def run(track: Track, frames: list[Any]) -> tuple[LapTimer, list[LapEvent]]:
    timer = LapTimer(track)
    events: list[LapEvent] = []
    for frame in frames:
        events.extend(timer.feed(frame))
    events.extend(timer.finish())
    return timer, events


# ---------------------------------------------------------------------------------------------
# The reference timing: independent of the code under test

RMC_RE = re.compile(r"\$(GPRMC,[^$*\r\n]*)\*([0-9A-Fa-f]{2})")  # finds sentences inside run-on lines too
KNOT_MS = 1852.0 / 3600.0
WGS84_A = 6378137.0
WGS84_F = 1 / 298.257223563
Fix = tuple[float, float, float, float, float | None]  # t, lat, lon, speed m/s, course degrees


def parse_rmc(path: Path) -> list[Fix]:
    """Every valid GPRMC fix (checksum checked), in time order, repeated times dropped."""
    fixes: list[Fix] = []
    for m in RMC_RE.finditer(path.read_bytes().decode("ascii", "replace")):
        body = m.group(1)
        checksum = 0
        for ch in body:
            checksum ^= ord(ch)
        f = body.split(",")
        if checksum != int(m.group(2), 16) or len(f) < 10 or f[2] != "A":
            continue
        t = (calendar.timegm((2000 + int(f[9][4:6]), int(f[9][2:4]), int(f[9][:2]), 0, 0, 0))
             + int(f[1][:2]) * 3600 + int(f[1][2:4]) * 60 + float(f[1][4:]))
        lat = (int(f[3][:2]) + float(f[3][2:]) / 60) * (-1 if f[4] == "S" else 1)
        lon = (int(f[5][:3]) + float(f[5][3:]) / 60) * (-1 if f[6] == "W" else 1)
        if not fixes or t > fixes[-1][0]:
            fixes.append((t, lat, lon, float(f[7] or 0) * KNOT_MS, float(f[8]) if f[8] else None))
    return fixes


def _ecef(lat: float, lon: float) -> tuple[float, float, float]:
    e2 = WGS84_F * (2 - WGS84_F)
    p, q = math.radians(lat), math.radians(lon)
    n = WGS84_A / math.sqrt(1 - e2 * math.sin(p) ** 2)
    return n * math.cos(p) * math.cos(q), n * math.cos(p) * math.sin(q), n * (1 - e2) * math.sin(p)


def _enu(origin: tuple[float, float]) -> Callable[[float, float], tuple[float, float]]:
    """(lat, lon) → (east, north) metres in the tangent plane at origin, via WGS84 ECEF."""
    o = _ecef(*origin)
    sp, cp = math.sin(math.radians(origin[0])), math.cos(math.radians(origin[0]))
    sl, cl = math.sin(math.radians(origin[1])), math.cos(math.radians(origin[1]))

    def enu(lat: float, lon: float) -> tuple[float, float]:
        x, y, z = (c - c0 for c, c0 in zip(_ecef(lat, lon), o, strict=True))
        return -sl * x + cl * y, -sp * cl * x - sp * sl * y + cp * z

    return enu


def reference_crossings(fixes: list[Fix], a: tuple[float, float], b: tuple[float, float],
                        hermite: bool = True) -> list[float]:
    """Times the car crossed the line a–b northbound (A on its left), at more than 5 m/s.

    For each pair of consecutive fixes on opposite sides of the line's vertical plane, the path
    between them is a cubic Hermite curve through both fixes with the receiver's velocity
    (speed over ground and course, from Doppler, not from positions) as tangents; the crossing
    is found by bisection to 1e-18 of the interval and must fall between a and b.
    """
    enu = _enu(((a[0] + b[0]) / 2, (a[1] + b[1]) / 2))
    pa, pb = enu(*a), enu(*b)
    ab = (pb[0] - pa[0], pb[1] - pa[1])

    def side(p: tuple[float, float]) -> float:
        return ab[0] * (p[1] - pa[1]) - ab[1] * (p[0] - pa[0])

    points = [enu(f[1], f[2]) for f in fixes]
    velocities = []
    for i, f in enumerate(fixes):
        if f[4] is None:  # no course while standing: the chord's velocity
            j = min(i + 1, len(fixes) - 1)
            dt = fixes[j][0] - fixes[j - 1][0]
            velocities.append(((points[j][0] - points[j - 1][0]) / dt, (points[j][1] - points[j - 1][1]) / dt))
        else:
            c = math.radians(f[4])
            velocities.append((f[3] * math.sin(c), f[3] * math.cos(c)))
    crossings = []
    for i in range(len(fixes) - 1):
        p0, p1, v0, v1 = points[i], points[i + 1], velocities[i], velocities[i + 1]
        if (side(p0) > 0) == (side(p1) > 0):
            continue
        dt = fixes[i + 1][0] - fixes[i][0]

        def path(s: float, p0=p0, p1=p1, v0=v0, v1=v1, dt=dt) -> tuple[float, float]:
            if not hermite:
                return p0[0] + s * (p1[0] - p0[0]), p0[1] + s * (p1[1] - p0[1])
            h00, h10 = 2 * s**3 - 3 * s**2 + 1, s**3 - 2 * s**2 + s
            h01, h11 = -2 * s**3 + 3 * s**2, s**3 - s**2
            return (h00 * p0[0] + h10 * dt * v0[0] + h01 * p1[0] + h11 * dt * v1[0],
                    h00 * p0[1] + h10 * dt * v0[1] + h01 * p1[1] + h11 * dt * v1[1])

        lo, hi = 0.0, 1.0
        for _ in range(60):
            mid = (lo + hi) / 2
            lo, hi = (mid, hi) if (side(path(mid)) > 0) == (side(p0) > 0) else (lo, mid)
        s = (lo + hi) / 2
        x = path(s)
        u = ((x[0] - pa[0]) * ab[0] + (x[1] - pa[1]) * ab[1]) / (ab[0] ** 2 + ab[1] ** 2)
        v = (v0[0] + s * (v1[0] - v0[0]), v0[1] + s * (v1[1] - v0[1]))
        forwards = v[0] * -ab[1] + v[1] * ab[0] > 0  # velocity towards the left of a→b
        if 0 <= u <= 1 and forwards and math.hypot(*v) > 5:
            crossings.append(fixes[i][0] + s * dt)
    return crossings


@pytest.fixture(scope="module")
def reference_25hz() -> list[float]:
    return reference_crossings(parse_rmc(PLAIN_25HZ), ORLANDO_KART_CENTER.a, ORLANDO_KART_CENTER.b)


@pytest.fixture(scope="module")
def reference_4laps() -> list[float]:
    return reference_crossings(parse_rmc(FOUR_LAPS), ORLANDO_KART_CENTER.a, ORLANDO_KART_CENTER.b)


def lap_times(crossings: list[float]) -> list[float]:
    return [b - a for a, b in zip(crossings[:-1], crossings[1:], strict=True)]


def test_reference_is_stable_and_does_not_depend_on_interpolation(reference_25hz: list[float]) -> None:
    assert lap_times(reference_25hz) == pytest.approx(REFERENCE_LAPS_25HZ, abs=1e-3)
    straight = reference_crossings(parse_rmc(PLAIN_25HZ), ORLANDO_KART_CENTER.a, ORLANDO_KART_CENTER.b,
                                   hermite=False)
    assert straight == pytest.approx(reference_25hz, abs=1e-3)
    four = reference_crossings(parse_rmc(FOUR_LAPS), ORLANDO_KART_CENTER.a, ORLANDO_KART_CENTER.b)
    assert lap_times(four) == pytest.approx(REFERENCE_LAPS_4LAPS, abs=1e-3)


# ---------------------------------------------------------------------------------------------
# Accuracy on the real recordings


def test_25hz_recording_every_lap_within_50ms_of_reference(
    plain_frames: list[dict[str, Any]], reference_25hz: list[float]
) -> None:
    timer, events = run(ORLANDO_KART_CENTER, plain_frames)
    laps = timer.laps
    assert [lap.number for lap in laps] == list(range(13))  # out-lap, 11 laps, in-lap
    assert laps[0].out_lap and not laps[0].in_lap and laps[-1].in_lap and not laps[-1].out_lap
    timed = timer.timed_laps
    assert len(timed) == 11
    starts = [lap.start_t for lap in timed] + [timed[-1].end_t]
    errors = [abs(a - b) for a, b in zip(starts, reference_25hz, strict=True)]
    assert max(errors) < REGRESSION_S  # each crossing
    lap_errors = [abs(lap.lap_time - ref) for lap, ref in zip(timed, lap_times(reference_25hz), strict=True)]
    assert max(lap_errors) < ACCURACY_25HZ_S
    assert max(lap_errors) < REGRESSION_S  # measured: 0.2 ms
    assert timer.best_lap is not None and timer.best_lap.number == 8
    assert timer.best_lap.lap_time == pytest.approx(55.132, abs=0.01)
    assert laps[0].lap_time == pytest.approx(83.73, abs=0.01)  # ~42 s standing in the pits + the drive to the line
    assert laps[-1].lap_time == pytest.approx(46.3, abs=0.1)  # in-lap back to the pits
    assert all(980 < lap.distance_m < 1010 for lap in timed)  # the "Normal" layout is ~1 km
    assert sum(e.type == LAP_COMPLETED for e in events) == 13


@pytest.mark.parametrize("ties", ["earlier", "later"])
def test_10hz_decimation_every_lap_within_100ms_of_reference(
    plain_frames: list[dict[str, Any]], reference_25hz: list[float], ties: str
) -> None:
    frames = decimate_10hz(plain_frames, ties)
    span = frames[-1]["t"] - frames[0]["t"]
    assert len(frames) / span == pytest.approx(10, abs=0.6)  # ~10 Hz (dropped fixes leave holes)
    timer, _ = run(ORLANDO_KART_CENTER, frames)
    timed = timer.timed_laps
    errors = [abs(lap.lap_time - ref) for lap, ref in zip(timed, lap_times(reference_25hz), strict=True)]
    assert len(timed) == 11
    assert max(errors) < ACCURACY_10HZ_S
    assert max(errors) < REGRESSION_S  # measured: 0.7 ms (the line is on a straight: moves are straight)


def test_four_lap_recording(four_lap_frames: list[dict[str, Any]], reference_4laps: list[float]) -> None:
    timer, _ = run(ORLANDO_KART_CENTER, four_lap_frames)
    timed = timer.timed_laps
    assert len(timed) == 4
    assert all(45 < lap.lap_time < 60 for lap in timed)  # the data says 56.2–58.9 s
    errors = [abs(lap.lap_time - ref) for lap, ref in zip(timed, lap_times(reference_4laps), strict=True)]
    assert max(errors) < ACCURACY_25HZ_S
    assert timer.laps[0].out_lap and timer.laps[0].lap_time == pytest.approx(41.27, abs=0.01)
    assert timer.laps[-1].in_lap and timer.best_lap is not None and timer.best_lap.number == 4


def test_robust_to_both_sentence_types_truncated_lines_and_null_positions(
    plain_log: tuple[list[GpsReading], NmeaDecoder], plain_frames: list[dict[str, Any]]
) -> None:
    readings, decoder = plain_log
    assert decoder.counters.errors >= 13  # the truncated, run-on sentences were skipped, not fatal
    # RMC and GGA interleaved (GGA repeats an RMC's time: set aside as out of order)...
    mixed = frames_from(readings, ("RMC", "GGA"))
    # ...with frames that have no position (a stale GPS channel is null) between them
    with_nulls: list[dict[str, Any]] = []
    for frame in mixed:
        with_nulls.append(frame)
        with_nulls.append({"seq": frame["seq"], "t": frame["t"] + 0.001, "channels": {"lat": None, "lon": None}})
    with_nulls.insert(0, {"seq": 0, "t": mixed[0]["t"] - 1, "channels": {"speed": 0.0}})
    timer, _ = run(ORLANDO_KART_CENTER, with_nulls)
    plain, _ = run(ORLANDO_KART_CENTER, plain_frames)
    # the same laps; a GGA fix stands in where its RMC was truncated, which moves a crossing by < 1 ms
    assert [lap.lap_time for lap in timer.laps] == pytest.approx([lap.lap_time for lap in plain.laps], abs=1e-3)
    assert timer.counters.no_position == len(mixed) + 1 and timer.counters.out_of_order > 0


def test_dropped_fixes_and_a_gps_jump_at_the_line(
    plain_frames: list[dict[str, Any]], reference_25hz: list[float]
) -> None:
    rng = random.Random(6)
    kept = [f for f in plain_frames if rng.random() > 0.3]  # a third of the fixes lost
    reference = lap_times(reference_25hz)
    timer, _ = run(ORLANDO_KART_CENTER, kept)
    assert max(abs(lap.lap_time - ref) for lap, ref in zip(timer.timed_laps, reference, strict=True)) < 0.05
    # a fix thrown 300 m off, just before each real crossing: not a crossing, the lap times stand
    jumped = list(plain_frames)
    for crossing in reversed(reference_25hz):
        i = next(i for i, f in enumerate(jumped) if f["t"] > crossing) - 1
        f = jumped[i]
        jumped[i] = {**f, "channels": {**f["channels"], "lat": f["channels"]["lat"] + 0.0027}}  # ~300 m north
    timer, _ = run(ORLANDO_KART_CENTER, jumped)
    assert timer.counters.jumps == 12 and timer.counters.relocations == 0
    assert max(abs(lap.lap_time - ref) for lap, ref in zip(timer.timed_laps, reference, strict=True)) < 0.05


def test_sectors_on_the_real_recording(plain_frames: list[dict[str, Any]]) -> None:
    first, _ = run(ORLANDO_KART_CENTER, plain_frames)
    lap1 = first.timed_laps[0]
    projection = LocalProjection(ORLANDO_KART_CENTER.a)
    lap_fixes = [f for f in plain_frames if lap1.start_t < f["t"] < lap1.end_t]

    def sector_line(fraction: float) -> Line:
        """A 12 m line across the path of lap 1, at that fraction of its fixes, A on the driver's left."""
        i = int(len(lap_fixes) * fraction)
        x0, y0 = projection.to_xy(lap_fixes[i]["channels"]["lat"], lap_fixes[i]["channels"]["lon"])
        x1, y1 = projection.to_xy(lap_fixes[i + 1]["channels"]["lat"], lap_fixes[i + 1]["channels"]["lon"])
        norm = math.hypot(x1 - x0, y1 - y0)
        left = (-(y1 - y0) / norm * 6, (x1 - x0) / norm * 6)
        return Line(projection.to_latlon(x0 + left[0], y0 + left[1]),
                    projection.to_latlon(x0 - left[0], y0 - left[1]), "a_left")

    track = Track("OKC with sectors", ORLANDO_KART_CENTER.a, ORLANDO_KART_CENTER.b,
                  sectors=(sector_line(1 / 3), sector_line(2 / 3)), direction="a_left")
    timer, events = run(track, plain_frames)
    for lap in timer.timed_laps:
        assert len(lap.sectors) == 3 and None not in lap.sectors
        assert sum(s for s in lap.sectors if s is not None) == pytest.approx(lap.lap_time, abs=1e-6)
    sector_events = [e for e in events if e.type == SECTOR_COMPLETED]
    assert len(sector_events) >= 3 * 11
    assert {e.payload["sector"] for e in sector_events} == {1, 2, 3}
    best = timer.best_sectors
    assert best == [min(lap.sectors[i] for lap in timer.laps if lap.number > 0 and lap.sectors[i] is not None)
                    for i in range(3)]
    assert timer.theoretical_best is not None and timer.best_lap is not None
    assert timer.theoretical_best == pytest.approx(sum(best))  # type: ignore[arg-type]
    assert timer.best_lap.lap_time - 0.5 < timer.theoretical_best <= timer.best_lap.lap_time
    assert [lap.lap_time for lap in timer.laps] == pytest.approx([lap.lap_time for lap in first.laps], abs=1e-9)


def test_live_delta_and_prediction_on_the_real_recording(plain_frames: list[dict[str, Any]]) -> None:
    timer = LapTimer(ORLANDO_KART_CENTER)
    last_delta: dict[int, dict[str, Any]] = {}
    for frame in plain_frames:
        for event in timer.feed(frame):
            if event.type == LAP_DELTA:
                last_delta[event.payload["lap"]] = event.payload
    timer.finish()
    for lap in timer.timed_laps[1:]:
        end = last_delta[lap.number]  # the last fix before the line
        assert end["delta"] is not None and end["predicted_lap_time"] is not None
        assert end["predicted_lap_time"] == pytest.approx(lap.lap_time, abs=0.3)  # lines differ by a few metres
    assert 0 not in last_delta  # no delta on the out-lap


# ---------------------------------------------------------------------------------------------
# Constructed tracks: exact answers

ORIGIN = (28.4127, -81.3797)
M_PER_DEG = 111_000.0  # the generator's own (rough) scale: any affine map keeps straight moves straight
T0 = 1_700_000_000.0


def latlon(x: float, y: float) -> tuple[float, float]:
    """Metres east/north of ORIGIN → degrees, by an affine map (not the one under test)."""
    return ORIGIN[0] + y / M_PER_DEG, ORIGIN[1] + x / (M_PER_DEG * math.cos(math.radians(ORIGIN[0])))


def frame(seq: int, t: float, x: float, y: float) -> dict[str, Any]:
    lat, lon = latlon(x, y)
    return {"seq": seq, "t": t, "channels": {"lat": lat, "lon": lon}}


class Stadium:
    """Two 600 m straights joined by semicircles of 100 m, driven anticlockwise, rotated by ``angle``.

    Arc length 0 is the south end of the east straight (northbound). The timing line crosses
    that straight ``line_at`` metres from its south end.
    """

    STRAIGHT = 600.0
    RADIUS = 100.0
    LENGTH = 2 * STRAIGHT + 2 * math.pi * RADIUS

    def __init__(self, angle: float = 0.0, line_at: float = 300.0, line_angle: float = 0.0) -> None:
        self.angle, self.line_at, self.line_angle = angle, line_at, line_angle

    def xy(self, sigma: float) -> tuple[float, float]:
        s, r, half = sigma % self.LENGTH, self.RADIUS, self.STRAIGHT / 2
        if s < self.STRAIGHT:
            x, y = r, -half + s
        elif s < self.STRAIGHT + math.pi * r:
            phi = (s - self.STRAIGHT) / r
            x, y = r * math.cos(phi), half + r * math.sin(phi)
        elif s < 2 * self.STRAIGHT + math.pi * r:
            x, y = -r, half - (s - self.STRAIGHT - math.pi * r)
        else:
            phi = math.pi + (s - 2 * self.STRAIGHT - math.pi * r) / r
            x, y = r * math.cos(phi), -half + r * math.sin(phi)
        c, n = math.cos(self.angle), math.sin(self.angle)
        return x * c - y * n, x * n + y * c

    def track(self, **kwargs: Any) -> Track:
        """A line 20 m long centred on the east straight, tilted by line_angle; A on the driver's left."""
        cx, cy = self.RADIUS, -self.STRAIGHT / 2 + self.line_at
        dx, dy = 10 * math.cos(self.line_angle), 10 * math.sin(self.line_angle)
        c, n = math.cos(self.angle), math.sin(self.angle)

        def rotated(x: float, y: float) -> tuple[float, float]:
            return latlon(x * c - y * n, x * n + y * c)

        kwargs.setdefault("direction", "a_left")
        kwargs.setdefault("min_lap_time_s", 10.0)
        return Track("stadium", rotated(cx - dx, cy - dy), rotated(cx + dx, cy + dy), **kwargs)

    def frames(self, speed_ms: float, dt: float, duration: float, sigma0: float = 0.0,
               t0: float = T0) -> list[dict[str, Any]]:
        """Fixes every dt seconds of a car at constant speed, starting at arc length sigma0."""
        out = []
        for i in range(int(duration / dt) + 1):
            out.append(frame(i, t0 + i * dt, *self.xy(sigma0 + speed_ms * i * dt)))
        return out

    def crossing_times(self, speed_ms: float, sigma0: float, t0: float = T0) -> Iterator[float]:
        """Exact times the car passes the line."""
        first = (self.line_at - sigma0) % self.LENGTH
        k = 0
        while True:
            yield t0 + (first + k * self.LENGTH) / speed_ms
            k += 1


@settings(max_examples=30, deadline=None)
@given(
    speed_kmh=st.floats(60, 300),
    dt=st.floats(0.05, 0.5),
    sigma0=st.floats(0, Stadium.LENGTH),
    angle=st.floats(0, 2 * math.pi),
    line_at=st.floats(60, 540),
    line_angle=st.floats(-1.0, 1.0),  # up to ~57° off square to the straight
)
def test_straight_crossing_at_known_speed_gives_the_exact_time(
    speed_kmh: float, dt: float, sigma0: float, angle: float, line_at: float, line_angle: float
) -> None:
    assume(abs((line_at - sigma0) % Stadium.LENGTH) > 1e-3)  # the first fix exactly on the line is ambiguous
    stadium = Stadium(angle, line_at, line_angle)
    v = speed_kmh / 3.6
    frames = stadium.frames(v, dt, 3 * Stadium.LENGTH / v + dt, sigma0)
    timer, _ = run(stadium.track(), frames)
    expected = stadium.crossing_times(v, sigma0)
    starts = [lap.start_t for lap in timer.laps if lap.number > 0]
    assert len(starts) >= 3
    for start in starts:
        assert start == pytest.approx(next(expected), abs=1e-5)  # float epoch seconds resolve ~2e-7 s
    for lap in timer.timed_laps:
        assert lap.lap_time == pytest.approx(Stadium.LENGTH / v, abs=1e-5)
        # chords cut the bends (up to 0.25%), and the generator's scale is rough (0.2%)
        assert lap.distance_m == pytest.approx(Stadium.LENGTH, rel=6e-3)


@settings(max_examples=100, deadline=None)
@given(
    p0=st.tuples(st.floats(-50, 50), st.floats(-50, 50)),
    p1=st.tuples(st.floats(-50, 50), st.floats(-50, 50)),
    a=st.tuples(st.floats(-50, 50), st.floats(-50, 50)),
    b=st.tuples(st.floats(-50, 50), st.floats(-50, 50)),
)
def test_segment_crossing_point_lies_on_both_segments(
    p0: tuple[float, float], p1: tuple[float, float], a: tuple[float, float], b: tuple[float, float]
) -> None:
    if math.dist(a, b) < 1 or math.dist(p0, p1) < 0.01:
        return
    hit = segment_crossing(p0, p1, a, b)
    back = segment_crossing(p1, p0, a, b)
    assert (hit is None) == (back is None)  # the reverse move crosses too...
    if hit is None or back is None:
        return
    s, direction = hit
    assert back[1] == -direction  # ...the other way
    x = (p0[0] + s * (p1[0] - p0[0]), p0[1] + s * (p1[1] - p0[1]))
    # the point is on the line a-b (distance from it tiny) and within it
    cross = (b[0] - a[0]) * (x[1] - a[1]) - (b[1] - a[1]) * (x[0] - a[0])
    assert abs(cross) / math.dist(a, b) < 1e-6
    assert math.dist(a, x) + math.dist(x, b) == pytest.approx(math.dist(a, b), abs=1e-6)


def test_projection_round_trip_and_scale() -> None:
    projection = LocalProjection(ORLANDO_KART_CENTER.a)
    x, y = projection.to_xy(*ORLANDO_KART_CENTER.b)
    assert math.hypot(x, y) == pytest.approx(16.08, abs=0.01)  # the line is 16 m long
    assert projection.to_latlon(x, y) == pytest.approx(ORLANDO_KART_CENTER.b, abs=1e-12)
    east, north = _enu(ORLANDO_KART_CENTER.a)(*ORLANDO_KART_CENTER.b)  # exact WGS84 tangent plane
    assert (x, y) == pytest.approx((east, north), abs=1e-4)
    far = projection.to_xy(ORLANDO_KART_CENTER.a[0] + 0.01, ORLANDO_KART_CENTER.a[1] + 0.01)  # 1.5 km off
    assert far == pytest.approx(_enu(ORLANDO_KART_CENTER.a)(ORLANDO_KART_CENTER.a[0] + 0.01,
                                                             ORLANDO_KART_CENTER.a[1] + 0.01), rel=2e-4)


def test_driving_the_wrong_way_is_no_lap() -> None:
    stadium = Stadium()
    v = 30.0
    forwards = stadium.frames(v, 0.1, 3 * Stadium.LENGTH / v)
    backwards = [{**f, "t": forwards[i]["t"]} for i, f in enumerate(reversed(forwards))]
    timer, events = run(stadium.track(), backwards)
    assert [lap.number for lap in timer.laps] == [0]  # one out-lap that never started a lap
    assert timer.laps[0].out_lap and timer.laps[0].in_lap
    assert timer.counters.backward == 3 and not [e for e in events if e.type == LAP_DELTA]
    # an "auto" line takes the first crossing at speed as forwards: explicit directions are safer
    learned, _ = run(stadium.track(direction="auto"), backwards)
    assert len(learned.timed_laps) == 2


def test_backing_over_the_line_and_driving_on_is_not_a_lap() -> None:
    line_y = 0.0
    track = Track("strip", latlon(-8, line_y), latlon(8, line_y), direction="a_left", min_lap_time_s=5)
    # north over the line (lap 1 starts), a long way round, back south over it by 3 m, north again
    path = [(0, -20), (0, 20), (0, 100), (0, 2), (0, -3), (0, 10), (0, 30)]
    frames = [frame(i, T0 + 2 * i, x, y) for i, (x, y) in enumerate(path)]
    timer, _ = run(track, frames)
    assert [lap.number for lap in timer.laps] == [0, 1]  # the out-lap, then lap 1 runs on into the in-lap
    assert timer.counters.backward == 1 and timer.counters.undone == 1


def test_min_lap_time_debounces() -> None:
    """A 140 m loop round the end of the line takes 7 s: only every third pass is past 20 s."""
    track = Track("loop", latlon(-8, 0), latlon(8, 0), direction="a_left", min_lap_time_s=20)
    corners = [(0, -20), (0, 20), (30, 20), (30, -20)]
    frames, t, seq = [], T0, 0
    for _ in range(10):
        for (x0, y0), (x1, y1) in zip(corners, corners[1:] + corners[:1], strict=True):
            n = 10
            for k in range(n):
                frames.append(frame(seq, t, x0 + (x1 - x0) * k / n, y0 + (y1 - y0) * k / n))
                seq += 1
                t += math.dist((x0, y0), (x1, y1)) / 20 / n
    timer, _ = run(track, frames)
    assert [lap.lap_time for lap in timer.timed_laps] == pytest.approx([21.0, 21.0, 21.0], abs=1e-4)
    assert timer.counters.debounced == 6


def test_crossing_exactly_at_a_fix_counts_once() -> None:
    track = Track("strip", latlon(-8, 0), latlon(8, 0), direction="a_left")
    lat_line = track.a[0]
    lon = (track.a[1] + track.b[1]) / 2

    def at(seq: int, lat: float) -> dict[str, Any]:
        return {"seq": seq, "t": T0 + seq * 0.1, "channels": {"lat": lat, "lon": lon}}

    step = 2 / M_PER_DEG
    # northbound, with a fix exactly on the line, held there (a car stopped on it), then on
    frames = [at(0, lat_line - 2 * step), at(1, lat_line - step), at(2, lat_line), at(3, lat_line),
              at(4, lat_line), at(5, lat_line + step), at(6, lat_line + 2 * step)]
    timer, _ = run(track, frames)
    assert [lap.number for lap in timer.laps] == [0, 1]
    assert timer.laps[0].end_t == pytest.approx(T0 + 0.2, abs=1e-9)  # the first fix on the line
    # touching the line and going back is no crossing
    touch = [at(0, lat_line - step), at(1, lat_line), at(2, lat_line - step)]
    timer, _ = run(track, touch)
    assert [lap.number for lap in timer.laps] == [0] and timer.counters.backward == 0


def test_pit_stop_next_to_the_line_with_gps_jitter() -> None:
    """Stopped for a minute 1 m past the line, the fix wandering ±3 m over it: no extra laps."""
    stadium = Stadium()
    v = 25.0
    lap = Stadium.LENGTH / v
    stop_sigma = stadium.line_at + Stadium.LENGTH + 1  # 1 m past the line, starting lap 2
    drive = stadium.frames(v, 0.1, stop_sigma / v, sigma0=0.0)
    rng = random.Random(1)
    seq, t = len(drive), drive[-1]["t"]
    jitter = []
    for _ in range(600):  # 60 s at 10 Hz
        t += 0.1
        jitter.append(frame(seq, t, *stadium.xy(stop_sigma + rng.uniform(-3, 3))))
        seq += 1
    leave = stadium.frames(v, 0.1, 1.2 * lap, sigma0=stop_sigma, t0=t + 0.1)
    timer, _ = run(stadium.track(), drive + jitter + [{**f, "seq": f["seq"] + seq} for f in leave])
    assert timer.counters.backward > 10 and timer.counters.undone == timer.counters.backward
    timed = timer.timed_laps
    assert [lap.number for lap in timer.laps] == [0, 1, 2, 3]
    # the car may reach the line only in the move to the first jittered fix: up to 0.1 s late
    assert timed[0].lap_time == pytest.approx(lap, abs=0.1)
    assert timed[1].lap_time == pytest.approx(lap + 60, abs=0.25)  # the lap with the stop in it


def test_first_fix_far_off_is_recovered_from() -> None:
    stadium = Stadium()
    v = 30.0
    frames = stadium.frames(v, 0.1, 2.5 * Stadium.LENGTH / v, sigma0=100)
    bad = {"seq": -1, "t": T0 - 0.1, "channels": {"lat": ORIGIN[0] + 0.05, "lon": ORIGIN[1]}}  # 5.5 km off
    timer, _ = run(stadium.track(), [bad, *frames])
    assert timer.counters.jumps == 1 and timer.counters.relocations == 1
    assert [lap.lap_time for lap in timer.timed_laps] == pytest.approx([Stadium.LENGTH / v] * 2, abs=1e-5)


def test_spike_across_the_line_is_no_crossing() -> None:
    stadium = Stadium()
    v = 30.0
    frames = stadium.frames(v, 0.1, 1.5 * Stadium.LENGTH / v, sigma0=200)  # starts 100 m before the line
    # the fix 50 m before the line jumps 400 m up the straight, over the line and back: impossible at 0.1 s
    i = next(i for i, f in enumerate(frames) if f["t"] >= T0 + 50 / v)
    frames[i] = frame(frames[i]["seq"], frames[i]["t"], *stadium.xy(200 + 400))
    timer, _ = run(stadium.track(), frames)
    assert timer.counters.jumps == 1
    assert timer.laps[0].end_t == pytest.approx(T0 + 100 / v, abs=1e-5)  # crossed when it really did


def test_held_samples_are_timed_from_their_first_frame() -> None:
    """A 5 Hz receiver read into 10 Hz frames repeats each position: the timing is unchanged."""
    stadium = Stadium()
    v = 30.0
    fixes = stadium.frames(v, 0.2, 2.5 * Stadium.LENGTH / v, sigma0=100)
    held = []
    for f in fixes:
        held += [f, {**f, "t": f["t"] + 0.1}]
    timer, _ = run(stadium.track(), held)
    assert timer.counters.held == len(fixes)
    assert [lap.lap_time for lap in timer.timed_laps] == pytest.approx([Stadium.LENGTH / v] * 2, abs=1e-5)
    # a car standing 1 m before the line longer than HOLD_MAX_S moves off from the last frame that held it
    track = Track("strip", latlon(-8, 0), latlon(8, 0), direction="a_left")
    standing = [frame(k, T0 + k, 0, -1) for k in range(5)] + [frame(5, T0 + 4.1, 0, 1)]
    timer, _ = run(track, standing)
    assert timer.counters.held == 4
    assert timer.laps[0].end_t == pytest.approx(T0 + 4.05, abs=1e-6)


def test_delta_to_best_and_predicted_lap_time() -> None:
    """Laps at 30, 32 and 28 m/s: in lap 3 the delta at distance d is d/28 - d/32."""
    stadium = Stadium()
    track = stadium.track()
    speeds = [30.0, 30.0, 32.0, 28.0, 28.0]  # out-lap, lap 1, lap 2 (best), lap 3, in-lap
    line = stadium.line_at
    frames, t, sigma, seq = [], T0, line - 150.0, 0
    timer = LapTimer(track)
    seen: list[dict[str, Any]] = []
    while sigma < line + 3.5 * Stadium.LENGTH:
        frames.append(frame(seq, t, *stadium.xy(sigma)))
        lap = int((sigma - line) // Stadium.LENGTH) + 1
        for event in timer.feed(frames[-1]):
            if event.type == LAP_DELTA:
                seen.append(event.payload)
        sigma += 2.0
        t += 2.0 / speeds[lap]
        seq += 1
    assert timer.best_lap is not None and timer.best_lap.number == 2
    # the speed changes at the line, inside a 2 m move timed as if at one speed: a few ms
    assert timer.best_lap.lap_time == pytest.approx(Stadium.LENGTH / 32, abs=0.01)
    in_lap3 = [p for p in seen if p["lap"] == 3]
    mid = in_lap3[len(in_lap3) // 2]
    d = mid["distance_m"]
    assert mid["delta"] == pytest.approx(d / 28 - d / 32, abs=0.01)
    assert mid["predicted_lap_time"] == pytest.approx(timer.best_lap.lap_time + d / 28 - d / 32, abs=0.01)
    assert all(p["delta"] is None for p in seen if p["lap"] == 1)  # no best lap yet
    lap2 = [p for p in seen if p["lap"] == 2]
    assert all(p["delta"] < 0 for p in lap2[5:])  # lap 2 is faster than lap 1, the best so far
    assert timer.delta_to_best == pytest.approx(seen[-1]["delta"])
    assert timer.current_lap == 4 and timer.current_lap_elapsed is not None
    assert timer.predicted_lap_time == pytest.approx(seen[-1]["predicted_lap_time"])


# ---------------------------------------------------------------------------------------------
# Events, setups, recompute, track definitions


def test_events_and_setup_versions() -> None:
    stadium = Stadium()
    v = 30.0
    lap = Stadium.LENGTH / v
    frames = stadium.frames(v, 0.1, 3.5 * lap, sigma0=200)  # the line is 100 m ahead
    t_line = T0 + 100 / v
    timer = LapTimer(stadium.track(), setup_version=1)
    events: list[LapEvent] = []
    for f in frames:
        if f["t"] >= t_line + 0.5 * lap and timer.setup_version == 1:
            timer.setup_version = 2  # changed during lap 1
        events.extend(timer.feed(f))
    events.extend(timer.finish())
    assert timer.finish() == []  # safe twice
    with pytest.raises(RuntimeError):
        timer.feed(frames[-1])
    completed = [e for e in events if e.type == LAP_COMPLETED]
    assert [e.payload["lap"] for e in completed] == [0, 1, 2, 3, 4]
    out, lap1, lap2, lap3, in_lap = (e.payload for e in completed)
    assert out["out_lap"] and not out["is_best"] and out["setup_version"] == 1
    assert lap1["setup_version"] == 1 and lap1["setup_changed"] and lap1["is_best"]
    assert lap2["setup_version"] == 2 and not lap2["setup_changed"]
    assert in_lap["in_lap"] and in_lap["lap_time"] == pytest.approx(frames[-1]["t"] - lap3["end_t"])
    assert set(lap1) == {"lap", "start_t", "end_t", "lap_time", "sectors", "is_best", "out_lap", "in_lap",
                         "setup_version", "setup_changed", "distance_m", "max_gap_s", "start_seq", "end_seq",
                         "interrupted"}
    assert lap1["sectors"] == [pytest.approx(lap1["lap_time"])]  # no sector lines: one sector, the lap
    assert lap1["max_gap_s"] == pytest.approx(0.1, abs=1e-6)
    assert completed[1].t == lap1["end_t"] and completed[1].seq == lap1["end_seq"]
    assert frames[lap1["end_seq"] - 1]["t"] < lap1["end_t"] <= frames[lap1["end_seq"]]["t"]
    deltas = [e for e in events if e.type == LAP_DELTA]
    assert set(deltas[-1].payload) == {"lap", "elapsed", "distance_m", "delta", "predicted_lap_time",
                                       "best_lap_time"}
    assert completed[2].to_dict()["payload"] == lap2
    # recomputed afterwards, with the setup changes as (time, version): the same laps
    setups = [(T0 - 1, 1), (t_line + 0.5 * lap, 2)]
    again = recompute(stadium.track(), (Frame.model_validate(f) for f in frames), setups)
    assert [x.to_dict() for x in again] == [e.payload for e in completed]


def test_track_definition_round_trip_and_validation() -> None:
    assert ORLANDO_KART_CENTER.name == "Orlando Kart Center"
    assert ORLANDO_KART_CENTER.a == (28.41270817, -81.37973266)
    assert ORLANDO_KART_CENTER.b == (28.41273039, -81.37957049)
    assert ORLANDO_KART_CENTER.direction == "a_left" and ORLANDO_KART_CENTER.sectors == ()
    track = Track("x", (1.0, 2.0), (1.0, 2.001), sectors=[Line((1.1, 2.0), (1.1, 2.001))], min_lap_time_s=30)
    raw = track.to_dict()
    assert raw["sectors"] == [{"a": [1.1, 2.0], "b": [1.1, 2.001], "direction": "auto"}]
    assert Track.from_dict(raw) == track
    for bad in (
        {"a": (1.0, 2.0), "b": (1.0, 2.0)},
        {"a": (91.0, 2.0), "b": (1.0, 2.0)},
        {"a": (float("nan"), 2.0), "b": (1.0, 2.0)},
        {"a": (1.0, 2.0), "b": (1.0, 3.0), "direction": "north"},
        {"a": (1.0, 2.0), "b": (1.0, 3.0), "min_lap_time_s": 0},
        {"a": (1.0, 2.0), "b": (1.0, 3.0), "max_speed_kmh": -1},
    ):
        with pytest.raises(ValueError):
            Track("bad", **bad)  # type: ignore[arg-type]


def test_no_fixes_no_laps() -> None:
    timer, events = run(ORLANDO_KART_CENTER, [{"seq": 1, "t": T0, "channels": {"lat": None, "lon": None}},
                                              {"seq": 2, "t": T0 + 1, "channels": {"lat": True, "lon": 5}},
                                              {"seq": 3, "t": None, "channels": {"lat": 1.0, "lon": 2.0}},
                                              {"seq": 4, "t": T0 + 2}])
    assert timer.laps == [] and events == [] and timer.counters.no_position == 4
    assert timer.best_lap is None and timer.theoretical_best is None and timer.delta_to_best is None


# ---------------------------------------------------------------------------------------------
# A lap is timed only on a continuous trace: gaps, relocations and the demo's loop seam


def renumbered(frames: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{**f, "seq": i} for i, f in enumerate(frames)]


def test_a_gap_mid_lap_ends_the_lap_untimed_and_the_next_crossing_times_again() -> None:
    """Fixes stop for 20 s in the middle of lap 2 (a monitor restarted): lap 2 is not timed, no lap spans the gap."""
    stadium = Stadium()
    v = 30.0
    lap = Stadium.LENGTH / v
    frames = stadium.frames(v, 0.1, 3.2 * lap, sigma0=100)  # crosses the line 200 m in, at T0 + 6.67 s
    first_cross = T0 + 200 / v
    hole_from, hole_to = first_cross + 1.5 * lap, first_cross + 1.5 * lap + 20  # mid lap 2
    kept = renumbered([f for f in frames if not hole_from <= f["t"] < hole_to])
    timer = LapTimer(stadium.track())
    events: list[LapEvent] = []
    deltas_after_gap = []
    for f in kept:
        out = timer.feed(f)
        events += out
        if hole_to <= f["t"] and timer.counters.gaps == 1 and timer.on_out_lap:
            deltas_after_gap += [e for e in out if e.type == LAP_DELTA]
            assert timer.delta_to_best is None and timer.current_lap_elapsed is None
    events += timer.finish()
    laps = timer.laps
    assert timer.counters.gaps == 1 and timer.counters.interrupted == 1 and timer.counters.relocations == 0
    assert [(x.number, x.out_lap, x.in_lap, x.interrupted) for x in laps] == [
        (0, True, False, None), (1, False, False, None), (2, False, True, "gap"), (3, True, False, None),
        (4, False, False, None), (5, False, True, None)]
    assert laps[2].end_t == pytest.approx(hole_from - 0.1, abs=0.11)  # closed at the last fix before the gap
    assert laps[3].start_t == pytest.approx(hole_to, abs=0.11)  # the out-lap starts with the first fix after it
    assert [x.lap_time for x in timer.timed_laps] == pytest.approx([lap, lap], abs=1e-5)
    assert all(x.max_gap_s < 0.2 for x in timer.timed_laps)
    assert timer.best_lap is not None and timer.best_lap.number in (1, 4)
    assert not deltas_after_gap  # no delta on the out-lap after the gap
    assert [e.payload["lap"] for e in events if e.type == LAP_COMPLETED] == [0, 1, 2, 3, 4, 5]
    assert recompute(stadium.track(), kept) == laps  # a past session timed again: the same laps


def test_a_gap_across_the_line_is_no_crossing() -> None:
    """The line falls in a 10 s gap on the out-lap: no lap starts there (its time would be a guess), the next does."""
    stadium = Stadium()
    v = 30.0
    lap = Stadium.LENGTH / v
    frames = stadium.frames(v, 0.1, 1.5 * lap, sigma0=100)
    cross = T0 + 200 / v
    kept = renumbered([f for f in frames if not cross - 5 <= f["t"] < cross + 5])
    timer, _ = run(stadium.track(), kept)
    assert timer.counters.gaps == 1 and timer.counters.interrupted == 0
    assert [(x.number, x.out_lap, x.in_lap) for x in timer.laps] == [(0, True, False), (1, False, True)]
    assert timer.laps[0].end_t == pytest.approx(cross + lap, abs=1e-5)  # the crossing after the gap


def test_a_jump_mid_lap_ends_the_lap_untimed() -> None:
    """The trace relocates 300 m along the track mid lap (fixes agreeing with each other after it): not timed."""
    stadium = Stadium()
    v = 30.0
    lap = Stadium.LENGTH / v
    before = stadium.frames(v, 0.1, 200 / v + 1.5 * lap, sigma0=100)  # into the middle of lap 2
    t_jump = before[-1]["t"] + 0.1
    after = stadium.frames(v, 0.1, 2.5 * lap, sigma0=100 + v * (t_jump - T0) + 300, t0=t_jump)
    frames = renumbered(before + after)
    timer, events = run(stadium.track(), frames)
    assert timer.counters.jumps == 1 and timer.counters.relocations == 1 and timer.counters.interrupted == 1
    interrupted = [x for x in timer.laps if x.interrupted]
    assert [(x.number, x.in_lap, x.interrupted) for x in interrupted] == [(2, True, "jump")]
    assert timer.laps[3].out_lap and timer.laps[3].number == 3
    assert [x.lap_time for x in timer.timed_laps] == pytest.approx([lap] * 3, abs=1e-5)  # laps 1, 4 and 5
    assert [x.number for x in timer.timed_laps] == [1, 4, 5]


def test_a_short_dropout_with_the_position_held_is_still_timed() -> None:
    """The receiver goes quiet for 2 s over the line and the monitor repeats its last fix: timed from its first frame.

    At 10 Hz the held position outlasts HOLD_MAX_S, so it looks like a standing car, but the next
    fix is too far for a car moving off from it: the position was stale. Within GAP_MAX_S the
    move is timed from the first frame that carried it, and the crossing in it counts.
    """
    stadium = Stadium()
    v = 30.0
    lap = Stadium.LENGTH / v
    frames = stadium.frames(v, 0.1, 3.5 * lap, sigma0=100)
    second_cross = T0 + 200 / v + lap
    i = next(i for i, f in enumerate(frames) if f["t"] >= second_cross - 1)
    held = frames[i]["channels"]
    for k in range(i + 1, i + 20):  # 1.9 s of the same position, then the car reappears 60 m further
        frames[k] = {**frames[k], "channels": dict(held)}
    timer, _ = run(stadium.track(), frames)
    assert timer.counters.stale == 1 and timer.counters.gaps == 0 and timer.counters.interrupted == 0
    assert [x.lap_time for x in timer.timed_laps] == pytest.approx([lap] * 3, abs=1e-5)  # a straight at constant v


def test_a_long_frozen_position_is_a_gap_once_the_car_reappears_far_away() -> None:
    """The monitor repeats a fix for 5 s (its staleness limit), then fixes resume 150 m on: the lap is not timed."""
    stadium = Stadium()
    v = 30.0
    lap = Stadium.LENGTH / v
    frames = stadium.frames(v, 0.1, 3.5 * lap, sigma0=100)
    i = next(i for i, f in enumerate(frames) if f["t"] >= T0 + 200 / v + 0.5 * lap)  # mid lap 1
    for k in range(i + 1, i + 50):
        frames[k] = {**frames[k], "channels": dict(frames[i]["channels"])}
    timer, _ = run(stadium.track(), frames)
    assert timer.counters.interrupted == 1 and timer.counters.stale == 0
    assert [x.interrupted for x in timer.laps if x.interrupted] == ["jump"]
    assert [x.lap_time for x in timer.timed_laps] == pytest.approx([lap, lap], abs=1e-5)  # laps 3 and 4


def test_a_pit_stop_with_fixes_is_no_gap() -> None:
    """Standing 60 s in the pit while the receiver keeps sending the same position: the lap is timed, stop and all."""
    stadium = Stadium()
    v = 30.0
    lap = Stadium.LENGTH / v
    drive = stadium.frames(v, 0.1, 200 / v + 0.5 * lap, sigma0=100)
    stand_t = drive[-1]["t"]
    standing = [{**drive[-1], "t": stand_t + 0.1 * k} for k in range(1, 601)]
    sigma = 100 + v * (stand_t - T0)
    go = stadium.frames(v, 0.1, 2 * lap, sigma0=sigma, t0=stand_t + 60.1)
    timer, _ = run(stadium.track(), renumbered(drive + standing + go))
    assert timer.counters.gaps == 0 and timer.counters.interrupted == 0 and timer.counters.stale == 0
    assert timer.timed_laps[0].lap_time == pytest.approx(lap + 60, abs=0.15)


def looped(frames: list[dict[str, Any]], times: int, pause_s: float = 0.0) -> list[dict[str, Any]]:
    """The recording played ``times`` times end to start, as the demo's replay loops it (time runs on)."""
    span = frames[-1]["t"] - frames[0]["t"] + 0.1 + pause_s
    out = []
    for k in range(times):
        out += [{**f, "t": f["t"] + k * span} for f in frames]
    return renumbered(out)


@pytest.mark.parametrize("pause_s", [0.0, 30.0])
def test_the_bundled_recording_looped_end_to_start_times_no_fake_lap(
    four_lap_frames: list[dict[str, Any]], reference_4laps: list[float], pause_s: float
) -> None:
    """The demo's loop seam: the kart jumps 135 m from where the recording ends back to the pit lane.

    It used to time a 1:25.3 "lap" every four laps (the in-lap and the out-lap joined across the
    seam). Now each seam closes the lap in progress untimed and the out-lap starts again; with a
    pause at the seam (a replay that keeps the recording's time base) the same happens as a gap.
    """
    timer, _ = run(ORLANDO_KART_CENTER, looped(four_lap_frames, 3, pause_s))
    real = lap_times(reference_4laps)
    timed = timer.timed_laps
    assert len(timed) == 12
    assert max(x.lap_time for x in timed) < max(real) + 0.05
    assert [x.lap_time for x in timed] == pytest.approx(real * 3, abs=0.05)
    reason = "gap" if pause_s else "jump"
    assert [x.interrupted for x in timer.laps if x.interrupted] == [reason, reason]
    assert timer.counters.interrupted == 2
    assert timer.best_lap is not None and timer.best_lap.lap_time == pytest.approx(min(real), abs=0.05)
