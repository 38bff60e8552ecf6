"""Laps compared: channels against distance, the delta trace, where time was gained, setups side by side.

Pure, no I/O: the server reads the stored frames of the laps and calls these.

Distance around a lap
    From the position frames only (lat/lon), in their own time order, as the lap timer uses
    them: fixes not later than the previous one are skipped, a fix implying more than
    ``max_speed_kmh`` is a GPS jump and skipped. The path starts at the lap's start time and
    ends at its end time, each placed on the move that holds it by linear interpolation (as
    the timer placed the crossings), and distance is the cumulative length of the moves on
    the local plane (``geo``). A car standing still adds no distance; the time at a distance
    where it stood is the time it left.

The grid
    Each lap is resampled on ``points`` (at most ``MAX_POINTS``) equally spaced fractions of
    its own length, 0 to 1. Two laps are compared at the same fraction of the lap, not the same
    metre: their lengths differ by a few metres (lines, GPS), and at fraction 1 both have
    finished, so the delta trace ends exactly at the difference of the lap times. Distances are
    reported in metres of the reference lap (fraction × its length). Channels are interpolated
    linearly in time from their own samples onto the grid's times; None where the nearest
    samples on either side are more than ``CHANNEL_GAP_S`` apart (the chart draws a break) or
    the channel has no sample around that time.

The delta trace
    ``delta[k] = time of lap B at grid point k − time of lap A there`` (elapsed from each lap's
    start): > 0 where B is behind. Per segment (``segment_gains``) the change of the delta over
    the segment: < 0 where B gained, > 0 where B lost, for colouring the map (``EVEN_S`` is
    "even").

Setups
    ``compare_setups``: per setup version, the laps, best (``cleanlap`` rules 1-4), mean and
    standard deviation of the clean laps (the ``cleanlap`` rule, judged against the version's
    own best), the change of best and mean from the previous version, and the setup fields that
    changed from the previous version (a dict diff of nested keys as dotted paths).
"""
from __future__ import annotations

import bisect
import json
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from dashboard.telemetry.cleanlap import best_time, clean_laps, lap_record
from dashboard.telemetry.geo import LocalProjection, distance
from dashboard.telemetry.laps import DEFAULT_MAX_SPEED_KMH, JUMP_SLACK_M

DEFAULT_POINTS = 2000  # a kart lap of ~1 km: a point every 0.5 m; a 5 km circuit: every 2.5 m
MAX_POINTS = 4000  # what the browser is sent per lap at most
CHANNEL_GAP_S = 2.0  # samples further apart than this are not joined: a break in the chart
EVEN_S = 0.005  # a segment where the delta changed less than this is "even"
DEFAULT_SEGMENTS = 50


@dataclass(frozen=True)
class ResampledLap:
    """A lap on the fraction grid: elapsed time, distance, position and channels at each point."""

    lap_time: float
    length_m: float
    fraction: tuple[float, ...]
    distance_m: tuple[float, ...]
    time_s: tuple[float, ...]  # elapsed since the lap's start
    lat: tuple[float, ...]
    lon: tuple[float, ...]
    channels: dict[str, tuple[float | None, ...]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (what the API serves per lap)."""
        return {"lap_time": self.lap_time, "length_m": self.length_m, "distance_m": list(self.distance_m),
                "time_s": list(self.time_s), "lat": list(self.lat), "lon": list(self.lon),
                "channels": {k: list(v) for k, v in self.channels.items()}}


def _number(value: Any) -> float | None:
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _fields(frame: Any) -> tuple[float | None, Mapping[str, Any]]:
    if isinstance(frame, Mapping):
        t, channels = frame.get("t"), frame.get("channels")
    else:
        t, channels = getattr(frame, "t", None), getattr(frame, "channels", None)
    return _number(t), (channels if isinstance(channels, Mapping) else {})


def _path(frames: Sequence[Any], max_speed_kmh: float) -> list[tuple[float, float, float]]:
    """(t, lat, lon) of the usable fixes, in time order, jumps left out."""
    fixes: list[tuple[float, float, float]] = []
    for frame in frames:
        t, channels = _fields(frame)
        lat, lon = _number(channels.get("lat")), _number(channels.get("lon"))
        if t is None or lat is None or lon is None or not (-90 <= lat <= 90 and -180 <= lon <= 180):
            continue
        fixes.append((t, lat, lon))
    fixes.sort(key=lambda f: f[0])
    if not fixes:
        return []
    projection = LocalProjection(fixes[0][1:])
    out = [fixes[0]]
    last_p = projection.to_xy(*fixes[0][1:])
    for fix in fixes[1:]:
        if fix[0] <= out[-1][0]:
            continue
        p = projection.to_xy(*fix[1:])
        if distance(last_p, p) > max_speed_kmh / 3.6 * (fix[0] - out[-1][0]) + JUMP_SLACK_M:
            continue
        out.append(fix)
        last_p = p
    return out


def _at(fixes: list[tuple[float, float, float]], times: list[float], t: float) -> tuple[float, float] | None:
    """Position at ``t`` on the move that holds it (None outside the fixes)."""
    if not fixes or t < fixes[0][0] or t > fixes[-1][0]:
        return None
    i = bisect.bisect_left(times, t)
    if times[i] == t:
        return fixes[i][1], fixes[i][2]
    (t0, la0, lo0), (t1, la1, lo1) = fixes[i - 1], fixes[i]
    s = (t - t0) / (t1 - t0)
    return la0 + s * (la1 - la0), lo0 + s * (lo1 - lo0)


def resample_lap(frames: Sequence[Any], start_t: float, end_t: float, channels: Iterable[str] = (),
                 points: int = DEFAULT_POINTS, max_speed_kmh: float = DEFAULT_MAX_SPEED_KMH) -> ResampledLap:
    """The lap ``start_t``..``end_t`` on a grid of ``points`` fractions (the rule in the module docstring).

    ``frames``: the session's frames around the lap (at least one fix at or before its start and one at or
    after its end). Raises ValueError when the lap cannot be placed on its fixes.
    """
    if not 2 <= points <= MAX_POINTS:
        raise ValueError(f"points must be between 2 and {MAX_POINTS}")
    if not (math.isfinite(start_t) and math.isfinite(end_t) and end_t > start_t):
        raise ValueError("a lap needs finite start_t < end_t")
    fixes = _path(frames, max_speed_kmh)
    times = [f[0] for f in fixes]
    first, last = _at(fixes, times, start_t), _at(fixes, times, end_t)
    if first is None or last is None:
        raise ValueError("the frames do not cover the lap: a fix is needed at or before its start and after its end")
    inside = [f for f in fixes if start_t < f[0] < end_t]
    path = [(start_t, *first), *inside, (end_t, *last)]
    projection = LocalProjection(first)
    xy = [projection.to_xy(lat, lon) for _, lat, lon in path]
    cum = [0.0]
    for p0, p1 in zip(xy, xy[1:], strict=False):
        cum.append(cum[-1] + distance(p0, p1))
    length = cum[-1]
    if length <= 0:
        raise ValueError("the car did not move during the lap")
    # Time at distance: on a stretch without distance (standing) the later time counts (when it left).
    dist_pts: list[float] = []
    time_pts: list[float] = []
    pos_pts: list[tuple[float, float]] = []
    for d, (t, lat, lon) in zip(cum, path, strict=True):
        if dist_pts and d <= dist_pts[-1]:
            time_pts[-1], pos_pts[-1] = t, (lat, lon)
            continue
        dist_pts.append(d)
        time_pts.append(t)
        pos_pts.append((lat, lon))
    fractions = tuple(k / (points - 1) for k in range(points))
    grid_d, grid_t, grid_lat, grid_lon = [], [], [], []
    j = 1
    for f in fractions:
        d = f * length
        while j < len(dist_pts) - 1 and dist_pts[j] < d:
            j += 1
        d0, d1 = dist_pts[j - 1], dist_pts[j]
        s = min(1.0, max(0.0, (d - d0) / (d1 - d0)))
        grid_d.append(d)
        grid_t.append(time_pts[j - 1] + s * (time_pts[j] - time_pts[j - 1]) - start_t)
        (la0, lo0), (la1, lo1) = pos_pts[j - 1], pos_pts[j]
        grid_lat.append(la0 + s * (la1 - la0))
        grid_lon.append(lo0 + s * (lo1 - lo0))
    series = {name: _channel_on_grid(frames, name, [start_t + t for t in grid_t]) for name in channels}
    return ResampledLap(end_t - start_t, length, fractions, tuple(grid_d), tuple(grid_t), tuple(grid_lat),
                        tuple(grid_lon), series)


def _channel_on_grid(frames: Sequence[Any], name: str, at: list[float]) -> tuple[float | None, ...]:
    samples: list[tuple[float, float]] = []
    for frame in frames:
        t, channels = _fields(frame)
        value = _number(channels.get(name))
        if t is not None and value is not None:
            samples.append((t, value))
    samples.sort(key=lambda s: s[0])
    times = [s[0] for s in samples]
    out: list[float | None] = []
    for t in at:
        i = bisect.bisect_left(times, t)
        if i < len(times) and times[i] == t:
            out.append(samples[i][1])
        elif 0 < i < len(times) and times[i] - times[i - 1] <= CHANNEL_GAP_S:
            (t0, v0), (t1, v1) = samples[i - 1], samples[i]
            out.append(v0 + (v1 - v0) * (t - t0) / (t1 - t0))
        else:
            out.append(None)
    return tuple(out)


@dataclass(frozen=True)
class DeltaTrace:
    """Lap B against lap A: ``delta_s[k]`` = B's time − A's at ``distance_m[k]`` (A's metres)."""

    distance_m: tuple[float, ...]
    delta_s: tuple[float, ...]

    @property
    def final(self) -> float:
        """The delta at the line: B's lap time − A's."""
        return self.delta_s[-1]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"distance_m": list(self.distance_m), "delta_s": list(self.delta_s)}


def delta_trace(a: ResampledLap, b: ResampledLap) -> DeltaTrace:
    """The running time difference of B against A (both resampled with the same number of points)."""
    if len(a.time_s) != len(b.time_s):
        raise ValueError("the laps must be resampled on the same number of points")
    return DeltaTrace(a.distance_m, tuple(tb - ta for ta, tb in zip(a.time_s, b.time_s, strict=True)))


@dataclass(frozen=True)
class Segment:
    """A stretch of lap A's path and what B gained (< 0) or lost (> 0) there."""

    start_index: int
    end_index: int
    start_m: float
    end_m: float
    change_s: float
    verdict: str  # "gain", "loss" or "even" (for B)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return dict(self.__dict__)


def segment_gains(trace: DeltaTrace, segments: int = DEFAULT_SEGMENTS) -> list[Segment]:
    """The lap cut into ``segments`` equal stretches, each with the change of the delta over it."""
    n = len(trace.delta_s)
    if not 1 <= segments <= n - 1:
        raise ValueError(f"segments must be between 1 and {n - 1}")
    bounds = [round(k * (n - 1) / segments) for k in range(segments + 1)]
    out = []
    for i0, i1 in zip(bounds, bounds[1:], strict=False):
        change = trace.delta_s[i1] - trace.delta_s[i0]
        verdict = "even" if abs(change) < EVEN_S else ("gain" if change < 0 else "loss")
        out.append(Segment(i0, i1, trace.distance_m[i0], trace.distance_m[i1], change, verdict))
    return out


# ------------------------------------------------------------------------------------------ setups


def setup_diff(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    """Fields that differ, as dotted paths: ``{"tyres.front.pressure": {"from": 1.0, "to": 1.1}}``."""

    def flat(value: Any, prefix: str = "") -> dict[str, Any]:
        if isinstance(value, Mapping) and value:
            out: dict[str, Any] = {}
            for key, inner in value.items():
                out.update(flat(inner, f"{prefix}{key}."))
            return out
        return {prefix[:-1]: value} if prefix else {}

    a, b = flat(before or {}), flat(after or {})
    return {key: {"from": a.get(key), "to": b.get(key)} for key in sorted(a.keys() | b.keys())
            if a.get(key) != b.get(key) or (key in a) != (key in b)}


@dataclass(frozen=True)
class SetupSummary:
    """One setup version's laps, and the change from the previous version."""

    setup_version: int | None
    laps: int
    clean_laps: int
    best: float | None
    mean_clean: float | None
    consistency: float | None
    best_change: float | None  # this version's best − the previous version's (< 0: faster)
    mean_change: float | None
    changed: dict[str, dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return dict(self.__dict__)


def compare_setups(laps: Iterable[Any], setups: Mapping[int, Mapping[str, Any]] | None = None) -> list[SetupSummary]:
    """Per setup version (ascending; laps without one last), the module docstring's figures.

    ``laps``: lap records (``laps.Lap``, its dict, ``cleanlap.LapRecord``) with ``setup_version``;
    ``setups``: each version's setup fields, for the diff.
    """
    groups: dict[int | None, list[Any]] = {}
    for raw in laps:
        lap = lap_record(raw)
        groups.setdefault(lap.setup_version, []).append(lap)
    order = sorted((v for v in groups if v is not None)) + ([None] if None in groups else [])
    out: list[SetupSummary] = []
    previous: SetupSummary | None = None
    for version in order:
        mine = groups[version]
        clean = [lap.lap_time for lap in clean_laps(mine)]
        best = best_time(mine)
        mean = statistics.fmean(clean) if clean else None
        changed = {}
        if previous is not None and setups is not None and version is not None and previous.setup_version is not None:
            changed = setup_diff(setups.get(previous.setup_version), setups.get(version))
        summary = SetupSummary(
            setup_version=version, laps=len(mine), clean_laps=len(clean), best=best, mean_clean=mean,
            consistency=statistics.stdev(clean) if len(clean) >= 2 else None,
            best_change=None if previous is None or previous.best is None or best is None else best - previous.best,
            mean_change=(None if previous is None or previous.mean_clean is None or mean is None
                         else mean - previous.mean_clean),
            changed=changed,
        )
        out.append(summary)
        previous = summary
    return out


def number_setups(setups: Iterable[Mapping[str, Any]]) -> tuple[dict[tuple[str, int], int], dict[int, Any]]:
    """A car's setups across its sessions, numbered by content in the order given (oldest first).

    Each session numbers its own setup versions from 1, so "version 2" of two sessions may be two setups,
    and the same setup posted again in the next session is the same setup. ``setups``: rows with
    ``session_id``, ``version`` and ``setup``. Returns ``(session_id, version) -> car version`` and
    ``car version -> setup fields``; identical fields (whatever their key order) share a number.
    """
    numbers: dict[str, int] = {}
    by_key: dict[tuple[str, int], int] = {}
    fields: dict[int, Any] = {}
    for row in setups:
        content = _canonical(row.get("setup"))
        number = numbers.get(content)
        if number is None:
            number = numbers[content] = len(numbers) + 1
            fields[number] = row.get("setup")
        by_key[(row["session_id"], row["version"])] = number
    return by_key, fields


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
