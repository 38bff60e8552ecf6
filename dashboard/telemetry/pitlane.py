"""Pit stops from GPS: pit-lane entry and exit, stationary time, in-laps and out-laps. Pure, no I/O.

A processor in the style of ``laps.LapTimer``: ``PitDetector.feed(frame) -> list[PitEvent]``,
fed the frames of one car in seq order; only frames carrying lat/lon are used, in their own
time order (a frame not later than the last position is skipped, as the lap timer does).
No clock is read: every time comes from the frames.

The pit lane
    A track's pit lane is two timing lines of the same form as the start/finish line
    (``laps.Line``): ``pit_in`` across the lane's entry and ``pit_out`` across its exit,
    each crossed forwards in its ``direction`` (``"auto"``: the first crossing above
    ``laps.LEARN_MIN_SPEED_KMH`` is forwards). Crossings are found and timed as the lap
    timer does (the move between two fixes intersected with the line, the time
    interpolated along the move).

A stop
    Crossing ``pit_in`` forwards opens a stop (``pit.entry``); crossing ``pit_out``
    forwards closes it (``pit.stop``, with the stop). Lane time = exit − entry.
    Stationary time = the sum of the stationary runs inside the lane that lasted at least
    ``stationary_min_s`` (a car creeping in a queue for a second is not stopped). A move
    between two fixes is stationary when the later fix's ``gps_speed`` (Doppler, the
    receiver's own) is under ``stationary_speed_kmh``; a frame without ``gps_speed`` is
    judged by position instead: stationary while it stays within ``STATIONARY_RADIUS_M``
    of where the run started (GPS noise of a parked car is well under that) and the move
    itself is slower than ``MOVING_SPEED_KMH`` (a car pulling away leaves the run at once). A stationary
    run starts at the fix before its first stationary move, so a position held for H
    seconds is H seconds stationary. ``pit.stationary`` is sent when a run in the lane
    reaches ``stationary_min_s`` (the overview's "stopped" with a running time).

Gaps and jumps
    A fix implying more than ``max_speed_kmh`` from the last accepted one is a GPS jump and
    not used; if the next fix agrees with it rather than with the last good one the
    receiver really moved and the trace restarts there, no crossing looked for across the
    relocation. No fix for longer than ``gap_max_s`` is a gap: inside the lane the stop
    stays open (it closes at pit-out as usual), its ``gaps`` count says its times are less
    sure, and the gap counts as stationary only if the car is where it was before (within
    ``STATIONARY_RADIUS_M``: the receiver lost the sky under the pit roof while the car
    stood). Crossings across a gap are still looked for (the car must have crossed), with
    the time interpolated over the gap. ``finish()`` closes a stop still open (entered and
    never left before the session ended) as ``open``: lane time up to the last fix.

Without a pit lane
    A track with no pit lane (``lane=None``) has a fallback: a stop is the car stationary
    anywhere for more than ``fallback_stop_s`` (default 30 s: longer than a spin and a
    restart or a slow queue at a chicane, shorter than any refuel or driver change). Its
    lane time is None, its entry and exit are the start and end of the stationary run.

In-laps and out-laps
    ``pit_lap_flags`` marks laps from the stops: the lap containing the entry is the
    in-lap, the lap containing the exit is the out-lap. With a lane across the start/finish
    line (the usual layout) these are consecutive laps; with the whole lane inside one lap,
    that lap is both, and the next lap, started at race speed, is not marked.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from dashboard.telemetry.geo import LatLon, LocalProjection, Point, distance, segment_crossing
from dashboard.telemetry.laps import (
    DEFAULT_MAX_SPEED_KMH,
    GAP_MAX_S,
    JUMP_SLACK_M,
    LEARN_MIN_SPEED_KMH,
    LapEvent,
    Line,
)

STATIONARY_SPEED_KMH = 3.0  # walking pace: a car rolling slower than this in the lane is stopped (Doppler ~0.2 km/h)
STATIONARY_RADIUS_M = 3.0  # without gps_speed: a parked car's GPS wanders < 1-2 m; 3 m over 2 s is < 5.4 km/h
STATIONARY_MIN_S = 2.0  # a stationary run shorter than this (a queue creeping) is not counted as stopped
MOVING_SPEED_KMH = 10.0  # without gps_speed: a move this fast is driving (a parked fix wanders cm per fix)
FALLBACK_STOP_S = 30.0  # no pit lane: stationary longer than this anywhere is a stop (a spin restarts sooner)

_FORWARD: dict[str, int] = {"auto": 0, "a_left": 1, "a_right": -1}  # as laps.py: sign as in geo.segment_crossing

PIT_ENTRY = "pit.entry"
PIT_STATIONARY = "pit.stationary"
PIT_STOP = "pit.stop"

PitStatus = Literal["on_track", "in_lane", "stopped"]


@dataclass(frozen=True)
class PitLane:
    """A track's pit lane: the line across its entry and the line across its exit."""

    pit_in: Line
    pit_out: Line
    max_speed_kmh: float = DEFAULT_MAX_SPEED_KMH

    def __post_init__(self) -> None:
        if not self.max_speed_kmh > 0:
            raise ValueError("max_speed_kmh must be > 0")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (next to a track's start/finish line)."""
        return {"pit_in": self.pit_in.to_dict(), "pit_out": self.pit_out.to_dict(),
                "max_speed_kmh": self.max_speed_kmh}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> PitLane:
        """The inverse of ``to_dict``; a malformed lane raises ValueError."""
        try:
            return cls(Line.from_dict(raw["pit_in"]), Line.from_dict(raw["pit_out"]),
                       float(raw.get("max_speed_kmh", DEFAULT_MAX_SPEED_KMH)))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"a pit lane needs pit_in and pit_out lines: {exc}") from None


@dataclass(frozen=True)
class PitStop:
    """One stop: lane time (None without a pit lane), stationary time, and how sure it is."""

    number: int
    entry_t: float
    exit_t: float
    lane_time: float | None
    stationary_time: float
    entry_seq: int | None = None
    exit_seq: int | None = None
    open: bool = False  # the session ended in the lane: exit_t is the last fix
    gaps: int = 0  # gaps in the trace inside the lane: the times are less sure

    def to_dict(self) -> dict[str, Any]:
        """The ``pit.stop`` payload."""
        return {"stop": self.number, "entry_t": self.entry_t, "exit_t": self.exit_t, "lane_time": self.lane_time,
                "stationary_time": self.stationary_time, "entry_seq": self.entry_seq, "exit_seq": self.exit_seq,
                "open": self.open, "gaps": self.gaps}


class PitEvent(LapEvent):
    """``pit.entry``, ``pit.stationary`` or ``pit.stop`` at time ``t``, revealed by frame ``seq`` (the lap timer's
    event shape: type, t, seq, payload)."""


@dataclass
class PitCounters:
    """What the detector has seen and set aside."""

    fixes: int = 0
    no_position: int = 0
    out_of_order: int = 0
    jumps: int = 0
    relocations: int = 0
    gaps: int = 0
    backward: int = 0  # pit-line crossings the wrong way
    exits_without_entry: int = 0  # pit-out crossed while not in the lane (entry missed)


@dataclass(frozen=True)
class _Fix:
    t: float
    p: Point
    seq: int | None
    speed_kmh: float | None


def _number(value: Any) -> float | None:
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def position_fields(frame: Any) -> tuple[int | None, float | None, float | None, float | None, float | None]:
    """(seq, t, lat, lon, gps_speed) of a frame given as a mapping or an object; None where absent or bad."""
    if isinstance(frame, Mapping):
        seq, t, channels = frame.get("seq"), frame.get("t"), frame.get("channels")
    else:
        seq, t, channels = getattr(frame, "seq", None), getattr(frame, "t", None), getattr(frame, "channels", None)
    if not isinstance(channels, Mapping):
        channels = {}
    lat, lon = _number(channels.get("lat")), _number(channels.get("lon"))
    if lat is not None and not -90.0 <= lat <= 90.0:
        lat = None
    if lon is not None and not -180.0 <= lon <= 180.0:
        lon = None
    speed = _number(channels.get("gps_speed"))
    if speed is not None and speed < 0:
        speed = None
    return (seq if isinstance(seq, int) and not isinstance(seq, bool) else None), _number(t), lat, lon, speed


class _Watch:
    """A pit line on the local plane with its forward direction (0 until learned)."""

    def __init__(self, line: Line, projection: LocalProjection) -> None:
        self.a, self.b = projection.to_xy(*line.a), projection.to_xy(*line.b)
        self.forward = _FORWARD[line.direction]

    def check(self, p0: Point, p1: Point, speed_kmh: float) -> tuple[float, bool] | None:
        hit = segment_crossing(p0, p1, self.a, self.b)
        if hit is None:
            return None
        s, direction = hit
        if self.forward == 0:
            if speed_kmh < LEARN_MIN_SPEED_KMH:
                return None
            self.forward = direction
        return s, direction == self.forward


@dataclass
class _Open:
    number: int
    entry_t: float
    entry_seq: int | None
    stationary: float = 0.0
    gaps: int = 0


@dataclass
class _Run:
    start: _Fix
    end_t: float
    announced: bool = False


class PitDetector:
    """Finds the pit stops of one car from its position frames, one frame at a time.

    ``lane`` None: the fallback (a long standstill is a stop). ``origin``: the local plane's origin
    (default the pit-in line's first point, else the first fix).
    """

    def __init__(
        self,
        lane: PitLane | None,
        origin: LatLon | None = None,
        *,
        stationary_speed_kmh: float = STATIONARY_SPEED_KMH,
        stationary_min_s: float = STATIONARY_MIN_S,
        fallback_stop_s: float = FALLBACK_STOP_S,
        gap_max_s: float = GAP_MAX_S,
    ) -> None:
        if not (stationary_speed_kmh > 0 and stationary_min_s >= 0 and fallback_stop_s > 0 and gap_max_s > 0):
            raise ValueError("pit detector limits must be positive")
        self.lane = lane
        self.stationary_speed_kmh = stationary_speed_kmh
        self.stationary_min_s = stationary_min_s
        self.fallback_stop_s = fallback_stop_s
        self.gap_max_s = gap_max_s
        self._max_speed_ms = (lane.max_speed_kmh if lane else DEFAULT_MAX_SPEED_KMH) / 3.6
        self._origin = origin if origin is not None else (lane.pit_in.a if lane else None)
        self._projection: LocalProjection | None = LocalProjection(self._origin) if self._origin else None
        self._in: _Watch | None = None
        self._out: _Watch | None = None
        if lane is not None and self._projection is not None:
            self._in, self._out = _Watch(lane.pit_in, self._projection), _Watch(lane.pit_out, self._projection)
        self.counters = PitCounters()
        self.stops: list[PitStop] = []
        self._last: _Fix | None = None
        self._rejected: _Fix | None = None
        self._open: _Open | None = None
        self._run: _Run | None = None
        self._finished = False

    # ------------------------------------------------------------------ state

    @property
    def status(self) -> PitStatus:
        """``stopped``, ``in_lane`` or ``on_track``.

        Stopped: stationary for at least the minimum, in the lane (or, on a track without one, anywhere
        for longer than ``fallback_stop_s``).
        """
        if self._run is not None and self._run.end_t - self._run.start.t >= self._stationary_limit():
            if self.lane is None or self._open is not None:
                return "stopped"
        return "in_lane" if self._open is not None else "on_track"

    def running_stop_time(self) -> float | None:
        """Seconds since the open stop began (pit entry, or the stationary run without a lane), at the last fix."""
        if self._last is None:
            return None
        if self._open is not None:
            return self._last.t - self._open.entry_t
        if self.lane is None and self.status == "stopped" and self._run is not None:
            return self._run.end_t - self._run.start.t
        return None

    def _stationary_limit(self) -> float:
        return self.stationary_min_s if self.lane is not None else self.fallback_stop_s

    # ------------------------------------------------------------------ feed

    def feed(self, frame: Any) -> list[PitEvent]:
        """Process one frame ``{seq, t, channels: {lat, lon, gps_speed?}}``; the events it completes, in time order."""
        if self._finished:
            raise RuntimeError("the pit detector was finished; start a new one")
        seq, t, lat, lon, speed = position_fields(frame)
        if t is None or lat is None or lon is None:
            self.counters.no_position += 1
            return []
        if self._last is not None and t <= self._last.t:
            self.counters.out_of_order += 1
            return []
        if self._projection is None:
            self._projection = LocalProjection((lat, lon))
        fix = _Fix(t, self._projection.to_xy(lat, lon), seq, speed)
        self.counters.fixes += 1
        last = self._last
        if last is None:
            self._last = fix
            return []
        dt = t - last.t
        gap = dt > self.gap_max_s
        if not gap and self._is_jump(last, fix):
            if self._rejected is not None and not self._is_jump(self._rejected, fix):
                self.counters.relocations += 1  # the receiver really moved: start again from here
                events = self._end_run(last.seq)
                self._last, self._rejected = fix, None
                return events
            self.counters.jumps += 1
            self._rejected = fix
            return []
        self._rejected = None
        events: list[PitEvent] = []
        if gap:
            self.counters.gaps += 1
            if self._open is not None:
                self._open.gaps += 1
        events.extend(self._crossings(last, fix))
        still = self._still(last, fix, gap)
        if still:
            if self._run is None:
                self._run = _Run(last, fix.t)
            else:
                self._run.end_t = fix.t
            events.extend(self._announce(fix))
        else:
            events.extend(self._end_run(fix.seq))
        self._last = fix
        return events

    def finish(self) -> list[PitEvent]:
        """Close the session: a stationary run ends, a stop still open closes as ``open``. Safe to call twice."""
        if self._finished:
            return []
        self._finished = True
        if self._last is None:
            return []
        events = self._end_run(self._last.seq)
        if self._open is not None:
            events.append(self._close(self._last.t, self._last.seq, open_=True))
        return events

    # -------------------------------------------------------------- internals

    def _is_jump(self, a: _Fix, b: _Fix) -> bool:
        return distance(a.p, b.p) > self._max_speed_ms * (b.t - a.t) + JUMP_SLACK_M

    def _still(self, last: _Fix, fix: _Fix, gap: bool) -> bool:
        anchor = self._run.start if self._run is not None else last
        if gap:
            return distance(anchor.p, fix.p) <= STATIONARY_RADIUS_M
        if fix.speed_kmh is None:
            move_kmh = distance(last.p, fix.p) / (fix.t - last.t) * 3.6
            return distance(anchor.p, fix.p) <= STATIONARY_RADIUS_M and move_kmh < MOVING_SPEED_KMH
        return fix.speed_kmh < self.stationary_speed_kmh

    def _crossings(self, last: _Fix, fix: _Fix) -> list[PitEvent]:
        if self._in is None or self._out is None:
            return []
        dt = fix.t - last.t
        speed_kmh = distance(last.p, fix.p) / dt * 3.6
        hits: list[tuple[float, int, bool]] = []
        for kind, watch in ((0, self._in), (1, self._out)):
            hit = watch.check(last.p, fix.p, speed_kmh)
            if hit is not None:
                hits.append((hit[0], kind, hit[1]))
        events: list[PitEvent] = []
        for s, kind, forwards in sorted(hits):
            at = last.t + s * dt
            if not forwards:
                self.counters.backward += 1
            elif kind == 0 and self._open is None:
                self._split_run(at)
                self._open = _Open(len(self.stops) + 1, at, fix.seq)
                events.append(PitEvent(PIT_ENTRY, at, fix.seq, {"stop": self._open.number, "entry_t": at}))
            elif kind == 1 and self._open is not None:
                self._split_run(at)
                events.append(self._close(at, fix.seq))
            elif kind == 1:
                self.counters.exits_without_entry += 1
        return events

    def _split_run(self, at: float) -> None:
        """A lane line crossed during a stationary run: the part before the line is outside the stop."""
        if self._run is not None:
            self._add_run(self._run.start.t, min(at, self._run.end_t))
            self._run = _Run(_Fix(at, self._run.start.p, self._run.start.seq, None), max(at, self._run.end_t),
                             self._run.announced)

    def _announce(self, fix: _Fix) -> list[PitEvent]:
        run = self._run
        assert run is not None
        if run.announced or run.end_t - run.start.t < self._stationary_limit():
            return []
        if self.lane is not None and self._open is None:
            return []
        run.announced = True
        number = self._open.number if self._open is not None else len(self.stops) + 1
        return [PitEvent(PIT_STATIONARY, run.start.t, fix.seq, {"stop": number, "since_t": run.start.t})]

    def _add_run(self, start_t: float, end_t: float) -> None:
        if self._open is None:
            return
        start_t = max(start_t, self._open.entry_t)
        if end_t - start_t >= self.stationary_min_s:
            self._open.stationary += end_t - start_t

    def _end_run(self, seq: int | None) -> list[PitEvent]:
        run, self._run = self._run, None
        if run is None:
            return []
        length = run.end_t - run.start.t
        if self.lane is not None:
            self._add_run(run.start.t, run.end_t)
            return []
        if length <= self.fallback_stop_s:
            return []
        stop = PitStop(len(self.stops) + 1, run.start.t, run.end_t, None, length, run.start.seq, seq)
        self.stops.append(stop)
        return [PitEvent(PIT_STOP, run.end_t, seq, stop.to_dict())]

    def _close(self, at: float, seq: int | None, open_: bool = False) -> PitEvent:
        current = self._open
        assert current is not None
        self._open = None
        stop = PitStop(current.number, current.entry_t, at, at - current.entry_t, current.stationary,
                       current.entry_seq, seq, open_, current.gaps)
        self.stops.append(stop)
        return PitEvent(PIT_STOP, at, seq, stop.to_dict())


@dataclass(frozen=True)
class PitLapFlags:
    """A lap's pit marks: it holds a pit entry (in-lap) and/or a pit exit (out-lap)."""

    pit_in: bool = False
    pit_out: bool = False
    stops: tuple[int, ...] = field(default=())


def pit_lap_flags(laps: Iterable[Any], stops: Iterable[PitStop]) -> dict[int, PitLapFlags]:
    """For each lap (anything with ``number``, ``start_t``, ``end_t``) its pit flags, by the module's rule.

    A time belongs to the lap with start_t <= t < end_t; the last lap also holds its end.
    """
    lap_list = sorted(laps, key=lambda lap: lap.start_t)
    marks: dict[int, dict[str, Any]] = {lap.number: {"pit_in": False, "pit_out": False, "stops": []}
                                        for lap in lap_list}

    def lap_at(t: float) -> int | None:
        for i, lap in enumerate(lap_list):
            if lap.start_t <= t < lap.end_t or (i == len(lap_list) - 1 and t == lap.end_t):
                return lap.number
        return None

    for stop in stops:
        entry, exit_ = lap_at(stop.entry_t), lap_at(stop.exit_t)
        if entry is not None:
            marks[entry]["pit_in"] = True
            marks[entry]["stops"].append(stop.number)
        if exit_ is not None and not stop.open:
            marks[exit_]["pit_out"] = True
            if exit_ != entry:
                marks[exit_]["stops"].append(stop.number)
    return {n: PitLapFlags(m["pit_in"], m["pit_out"], tuple(m["stops"])) for n, m in marks.items()}
