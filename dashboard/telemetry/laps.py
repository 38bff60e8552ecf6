"""Lap timing from GPS: start/finish and sector crossings, best laps, live delta. Pure, no I/O.

A processor in Traccar's style: ``LapTimer`` is a state machine fed one frame
at a time (``feed(frame) -> list[LapEvent]``); the server decides what to store,
broadcast or log. No clock is read: every time comes from the frames. A past
session is timed again by feeding its stored frames to a new timer
(``recompute``), the same code path as live.

How a crossing is found
    Positions are projected onto a plane around the start/finish line
    (``geo.LocalProjection``). The move between two consecutive accepted fixes
    is a segment; where it intersects a timing line (a segment between two
    points A and B) the car crossed, and the crossing time is interpolated
    between the two fixes' times by the fraction of the way along the move
    (sub-sample accuracy: at 10 Hz and race speed fixes are 2–3 m apart).

Direction
    A line is crossed forwards when the car has A on its left and B on its
    right (``direction="a_left"``), or the reverse (``"a_right"``). With
    ``"auto"`` the direction of the first crossing at more than
    ``LEARN_MIN_SPEED_KMH`` is taken as forwards, for a line drawn without a
    convention. A backwards crossing of the start/finish line is no lap, and the
    next forwards crossing only undoes it (a car that rolled back over the line,
    or jitter of a car parked on it).

Rejected fixes
    Frames without a position are skipped. A frame not later than the last one
    is skipped (duplicates, out of order). A fix implying more than the track's
    ``max_speed_kmh`` from the last accepted fix is a GPS jump: it is no
    crossing and is not used. If the next fix agrees with the jumped one rather
    than with the last good one, the receiver has really moved (e.g. a bad first
    fix): the timer starts again from there without looking for a crossing
    across the jump. A fix at exactly the previous position is a held sample
    (a 10 Hz frame of a 5 Hz receiver): the move is timed from the first frame
    that carried it, unless it was held longer than ``HOLD_MAX_S`` (then the car
    was standing still, and the move starts from the last frame that held it).
    A position held while the car moved on is a stale one (the receiver went
    quiet and the monitor repeated its last fix): the move is then timed from
    the first frame that carried it, as long as that is within ``GAP_MAX_S``.

Gaps and jumps end a lap untimed
    A lap is only timed on a continuous trace. No fix for longer than
    ``GAP_MAX_S`` (a receiver, a monitor or a demo stopped and started again,
    the recording of a replay looping back) or a relocation after a GPS jump
    interrupts the lap in progress: it is closed where the trace broke as an
    untimed lap (``in_lap``, with ``interrupted`` saying why: ``"gap"`` or
    ``"jump"``), no crossing is looked for across the break, and the trace
    after it is an out-lap (``out_lap``, the next number) until the next
    forwards crossing of the line starts a timed lap again. Neither is ever
    the best lap, and no delta is given on them. During an out-lap a break only
    re-anchors the trace.

Laps
    Everything before the first forwards crossing is the out-lap (number 0,
    ``out_lap``); the first crossing starts lap 1 (after an interruption, the
    out-lap has its own number and the crossing starts the next). A forwards crossing less than
    ``min_lap_time_s`` after the lap started is ignored (debounce). ``finish()``
    closes the last partial lap as the in-lap (``in_lap``). Out- and in-laps
    are never the best lap. Sector times run from line to line in the order the
    track lists them; the last sector ends at the start/finish line.

Delta
    During a lap, the distance driven since the line (sum of the moves) and the
    elapsed time are compared with the best lap's elapsed time at the same
    distance, interpolated linearly along its trace: ``delta`` < 0 is ahead of
    the best lap; the predicted lap time is the best lap time + delta.
"""
from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from dashboard.telemetry.geo import LatLon, LocalProjection, Point, distance, segment_crossing

DEFAULT_MIN_LAP_TIME_S = 20.0  # shorter than any real lap (a kart track's ~40 s), longer than pit-lane jitter
DEFAULT_MAX_SPEED_KMH = 350.0  # faster than any car on a circuit; a fix implying more is a GPS jump
JUMP_SLACK_M = 5.0  # GPS noise allowance on top of max speed × time, so jitter between close fixes is no jump
HOLD_MAX_S = 0.5  # a position repeated longer than this is a standing car, not a held sample (receivers >= 2 Hz)
LEARN_MIN_SPEED_KMH = 10.0  # an "auto" line learns its direction only from a car really driving across it
# No fix for longer than this breaks the trace: the lap in progress is not timed. The longest silence of a working
# receiver in the bundled recordings is 1.52 s (0.23 s in the demo's), a 1 Hz receiver missing one fix is silent 2 s;
# a car standing in the pit still sends fixes (held positions), so a pit stop is no gap. Beyond 3 s a crossing
# would be interpolated over 80+ m at 100 km/h: no timing, and the monitor, the link or the demo was restarted.
GAP_MAX_S = 3.0
INTERRUPTED_BY_GAP = "gap"
INTERRUPTED_BY_JUMP = "jump"

LAP_COMPLETED = "lap.completed"
SECTOR_COMPLETED = "sector.completed"
LAP_DELTA = "lap.delta"

Direction = Literal["auto", "a_left", "a_right"]
_FORWARD: dict[str, int] = {"auto": 0, "a_left": 1, "a_right": -1}  # sign as in geo.segment_crossing


def _check_latlon(point: LatLon, what: str) -> LatLon:
    lat, lon = (float(v) for v in point)
    if not (math.isfinite(lat) and math.isfinite(lon) and -90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
        raise ValueError(f"{what}: not a latitude/longitude: {point!r}")
    return (lat, lon)


@dataclass(frozen=True)
class Line:
    """A timing line: the segment between two points, crossed forwards in ``direction``."""

    a: LatLon
    b: LatLon
    direction: Direction = "auto"

    def __post_init__(self) -> None:
        object.__setattr__(self, "a", _check_latlon(self.a, "line point a"))
        object.__setattr__(self, "b", _check_latlon(self.b, "line point b"))
        if self.a == self.b:
            raise ValueError("a line needs two different points")
        if self.direction not in _FORWARD:
            raise ValueError(f"direction must be one of {sorted(_FORWARD)}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"a": list(self.a), "b": list(self.b), "direction": self.direction}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Line:
        """The inverse of ``to_dict``."""
        return cls(tuple(raw["a"]), tuple(raw["b"]), raw.get("direction", "auto"))  # type: ignore[arg-type]


@dataclass(frozen=True)
class Track:
    """A circuit: its start/finish line A–B, optional sector lines in driving order, and timing limits."""

    name: str
    a: LatLon
    b: LatLon
    sectors: tuple[Line, ...] = ()
    direction: Direction = "auto"
    min_lap_time_s: float = DEFAULT_MIN_LAP_TIME_S
    max_speed_kmh: float = DEFAULT_MAX_SPEED_KMH

    def __post_init__(self) -> None:
        object.__setattr__(self, "sectors", tuple(self.sectors))
        object.__setattr__(self, "a", self.start_finish.a)  # validated and normalised by Line
        object.__setattr__(self, "b", self.start_finish.b)
        if not self.min_lap_time_s > 0:
            raise ValueError("min_lap_time_s must be > 0")
        if not self.max_speed_kmh > 0:
            raise ValueError("max_speed_kmh must be > 0")

    @property
    def start_finish(self) -> Line:
        """The start/finish line."""
        return Line(self.a, self.b, self.direction)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (for a tracks table or the REST API)."""
        return {
            "name": self.name,
            "a": list(self.a),
            "b": list(self.b),
            "direction": self.direction,
            "sectors": [s.to_dict() for s in self.sectors],
            "min_lap_time_s": self.min_lap_time_s,
            "max_speed_kmh": self.max_speed_kmh,
        }

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Track:
        """The inverse of ``to_dict``; missing limits take their defaults."""
        return cls(
            name=raw["name"],
            a=tuple(raw["a"]),  # type: ignore[arg-type]
            b=tuple(raw["b"]),  # type: ignore[arg-type]
            sectors=tuple(Line.from_dict(s) for s in raw.get("sectors", ())),
            direction=raw.get("direction", "auto"),
            min_lap_time_s=float(raw.get("min_lap_time_s", DEFAULT_MIN_LAP_TIME_S)),
            max_speed_kmh=float(raw.get("max_speed_kmh", DEFAULT_MAX_SPEED_KMH)),
        )


# Orlando Kart Center, "Normal" layout. The line is the one used by the lap-timer project that made
# the bundled recordings (github.com/TheAngryRaven/DovesLapTimer / DovesDataViewer; see
# dashboard/data/PROVENANCE.md). Both recordings cross it northbound (course ~349°) with A, the
# western point, on the driver's left: "a_left". No sector lines are published with it.
ORLANDO_KART_CENTER = Track(
    "Orlando Kart Center",
    a=(28.41270817, -81.37973266),
    b=(28.41273039, -81.37957049),
    direction="a_left",
)


@dataclass(frozen=True)
class Lap:
    """One lap as timed: line to line, or the out-/in-lap part of a session.

    ``sectors`` has one entry per sector (``len(track.sectors) + 1``); None where a
    sector line was not crossed in order. ``is_best`` is true when the lap was the
    best so far as it completed. ``max_gap_s`` is the longest time between two
    fixes used in the lap, including the two moves that hold its crossings: a
    measure of how precise the timing is.
    """

    number: int
    start_t: float
    end_t: float
    lap_time: float
    sectors: tuple[float | None, ...]
    is_best: bool = False
    out_lap: bool = False
    in_lap: bool = False
    setup_version: int | None = None
    setup_changed: bool = False  # the setup version changed during the lap; setup_version is the one at its start
    distance_m: float = 0.0
    max_gap_s: float = 0.0
    start_seq: int | None = None
    end_seq: int | None = None
    interrupted: str | None = None  # "gap" or "jump": the trace broke during the lap, it was not timed

    @property
    def timed(self) -> bool:
        """True for a full lap from line to line (not an out- or in-lap)."""
        return not (self.out_lap or self.in_lap)

    def to_dict(self) -> dict[str, Any]:
        """The ``lap.completed`` payload."""
        return {
            "lap": self.number,
            "start_t": self.start_t,
            "end_t": self.end_t,
            "lap_time": self.lap_time,
            "sectors": list(self.sectors),
            "is_best": self.is_best,
            "out_lap": self.out_lap,
            "in_lap": self.in_lap,
            "setup_version": self.setup_version,
            "setup_changed": self.setup_changed,
            "distance_m": self.distance_m,
            "max_gap_s": self.max_gap_s,
            "start_seq": self.start_seq,
            "end_seq": self.end_seq,
            "interrupted": self.interrupted,
        }


@dataclass(frozen=True)
class LapEvent:
    """Something the timer found: ``type`` is LAP_COMPLETED, SECTOR_COMPLETED or LAP_DELTA.

    ``t`` is when it happened (the interpolated crossing time, or the frame's time
    for a delta); ``seq`` the frame that revealed it.
    """

    type: str
    t: float
    seq: int | None
    payload: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"type": self.type, "t": self.t, "seq": self.seq, "payload": self.payload}


@dataclass
class LapCounters:
    """What the timer has seen and set aside, for tests and diagnostics."""

    fixes: int = 0  # frames with a usable position, in time order
    no_position: int = 0  # frames without lat/lon (or with a bad time)
    out_of_order: int = 0  # frames not later than the previous one
    held: int = 0  # frames repeating the previous position exactly
    jumps: int = 0  # fixes rejected as GPS jumps
    relocations: int = 0  # times the timer restarted from a new position after a jump
    backward: int = 0  # start/finish crossings the wrong way
    undone: int = 0  # forwards crossings that only undid a backwards one
    debounced: int = 0  # forwards crossings within min_lap_time_s of the lap start
    gaps: int = 0  # breaks of the trace: no fix for longer than GAP_MAX_S
    stale: int = 0  # held positions that turned out stale (the car moved on): timed from their first frame
    interrupted: int = 0  # laps in progress closed untimed by a gap or a relocation


@dataclass(frozen=True)
class _Fix:
    t: float
    p: Point
    seq: int | None


class _LineWatch:
    """One timing line on the local plane, with its forward direction (0 until learned)."""

    def __init__(self, line: Line, projection: LocalProjection) -> None:
        self.a = projection.to_xy(*line.a)
        self.b = projection.to_xy(*line.b)
        self.forward = _FORWARD[line.direction]

    def check(self, p0: Point, p1: Point, speed_kmh: float) -> tuple[float, bool] | None:
        """``(s, forwards)`` when the move p0→p1 crosses the line."""
        hit = segment_crossing(p0, p1, self.a, self.b)
        if hit is None:
            return None
        s, direction = hit
        if self.forward == 0:
            if speed_kmh < LEARN_MIN_SPEED_KMH:
                return None
            self.forward = direction
        return s, direction == self.forward


def _number(value: Any) -> float | None:
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _frame_fields(frame: Any) -> tuple[int | None, float | None, float | None, float | None]:
    """(seq, t, lat, lon) of a frame given as a mapping or as an object (a ``frames.Frame``)."""
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
    return (seq if isinstance(seq, int) else None), _number(t), lat, lon


class LapTimer:
    """Times laps and sectors of one car on one track from its frames, one frame at a time."""

    def __init__(self, track: Track, setup_version: int | None = None, gap_max_s: float = GAP_MAX_S) -> None:
        self.track = track
        self.gap_max_s = gap_max_s
        self.counters = LapCounters()
        self.laps: list[Lap] = []
        self._projection = LocalProjection(((track.a[0] + track.b[0]) / 2, (track.a[1] + track.b[1]) / 2))
        self._start_finish = _LineWatch(track.start_finish, self._projection)
        self._sector_lines = [_LineWatch(s, self._projection) for s in track.sectors]
        self._max_speed_ms = track.max_speed_kmh / 3.6
        self._setup_version = setup_version
        self._finished = False
        # fixes
        self._anchor: _Fix | None = None  # the last accepted fix: the next move starts here
        self._anchor_last_t = 0.0  # the last frame that held the anchor's position
        self._rejected: _Fix | None = None  # the last fix rejected as a jump
        self._last_seen_t: float | None = None
        self._first: _Fix | None = None
        # the lap in progress (number 0: the out-lap)
        self._lap_number = 0
        self._out_lap = True  # before the first crossing, and after an interruption until the next one
        self._lap_start_t = 0.0
        self._lap_start_seq: int | None = None
        self._lap_distance = 0.0
        self._lap_max_gap = 0.0
        self._lap_setup: int | None = setup_version
        self._lap_setup_changed = False
        self._trace_d: list[float] = []  # distance since the line at each fix of the lap...
        self._trace_t: list[float] = []  # ...and the elapsed time there
        self._backward_pending = False
        self._sector_start_t = 0.0
        self._next_sector = 0
        self._sector_times: list[float | None] = []
        # bests
        self._best: Lap | None = None
        self._best_trace: tuple[list[float], list[float]] = ([], [])
        self._best_sectors: list[float | None] = [None] * (len(track.sectors) + 1)

    # ----------------------------------------------------------------- state

    @property
    def setup_version(self) -> int | None:
        """The setup version in force; each lap records the one in force when it started."""
        return self._setup_version

    @setup_version.setter
    def setup_version(self, version: int | None) -> None:
        if self._anchor is None:
            self._lap_setup = version  # nothing driven yet: the out-lap starts with this version
        elif version != self._lap_setup:
            self._lap_setup_changed = True
        self._setup_version = version

    @property
    def finished(self) -> bool:
        """True once ``finish()`` closed the session."""
        return self._finished

    @property
    def current_lap(self) -> int:
        """Number of the lap in progress (0 while on the first out-lap)."""
        return self._lap_number

    @property
    def on_out_lap(self) -> bool:
        """True while no timed lap is in progress (before the first crossing, or after a gap or jump)."""
        return self._out_lap

    @property
    def current_lap_elapsed(self) -> float | None:
        """Seconds since the lap in progress started, at the last accepted fix (None on an out-lap)."""
        if self._out_lap or self._anchor is None:
            return None
        return self._anchor_last_t - self._lap_start_t

    @property
    def current_lap_distance(self) -> float | None:
        """Metres driven since the line in the lap in progress (None on an out-lap)."""
        return None if self._out_lap else self._lap_distance

    @property
    def timed_laps(self) -> list[Lap]:
        """The full laps, line to line."""
        return [lap for lap in self.laps if lap.timed]

    @property
    def best_lap(self) -> Lap | None:
        """The fastest full lap."""
        return self._best

    @property
    def best_sectors(self) -> list[float | None]:
        """The best time of each sector so far (None: not yet completed).

        Every lap started at the line counts, the in-lap's completed sectors too (they
        are reported live, before anyone knows it is the in-lap); the out-lap does not.
        """
        return list(self._best_sectors)

    @property
    def theoretical_best(self) -> float | None:
        """Sum of the best sectors: the lap the driver has shown they can do (None until all are known)."""
        if any(s is None for s in self._best_sectors):
            return None
        return sum(s for s in self._best_sectors if s is not None)

    @property
    def delta_to_best(self) -> float | None:
        """Seconds behind (> 0) or ahead (< 0) of the best lap at the same distance, now."""
        if self._out_lap or self._best is None or self._anchor is None:
            return None
        best_d, best_t = self._best_trace
        d = self._lap_distance
        i = bisect.bisect_right(best_d, d)
        if i >= len(best_d):
            best_at = best_t[-1]  # further than the best lap went: compare with its full time
        else:
            d0, d1, t0, t1 = best_d[i - 1], best_d[i], best_t[i - 1], best_t[i]
            best_at = t0 + (t1 - t0) * (d - d0) / (d1 - d0)  # d1 > d0 by bisect_right
        return (self._anchor_last_t - self._lap_start_t) - best_at

    @property
    def predicted_lap_time(self) -> float | None:
        """Best lap time + delta: this lap's time if the rest goes like the best lap."""
        delta = self.delta_to_best
        return None if delta is None or self._best is None else self._best.lap_time + delta

    # ------------------------------------------------------------------ feed

    def feed(self, frame: Any) -> list[LapEvent]:
        """Process one frame ``{seq, t, channels: {lat, lon, ...}}``; the events it completes.

        Returns, in time order: ``sector.completed`` and ``lap.completed`` for every
        crossing in the move up to this fix, then one ``lap.delta`` for this fix
        while a lap (not the out-lap) is in progress.
        """
        if self._finished:
            raise RuntimeError("the lap timer was finished; start a new one")
        seq, t, lat, lon = _frame_fields(frame)
        if t is None or lat is None or lon is None:
            self.counters.no_position += 1
            return []
        if self._last_seen_t is not None and t <= self._last_seen_t:
            self.counters.out_of_order += 1
            return []
        self._last_seen_t = t
        fix = _Fix(t, self._projection.to_xy(lat, lon), seq)
        self.counters.fixes += 1
        anchor = self._anchor
        if anchor is None:
            self._first = fix
            self._lap_start_t, self._lap_start_seq = t, seq
            self._accept(fix)
            return []
        if t - self._anchor_last_t > self.gap_max_s:
            return self._break(fix, INTERRUPTED_BY_GAP)  # no fix for too long: whatever happened is unknown
        if fix.p == anchor.p:
            self.counters.held += 1
            self._anchor_last_t = t
            return self._delta_events(fix)
        held = self._anchor_last_t - anchor.t
        start = anchor if held <= HOLD_MAX_S else _Fix(self._anchor_last_t, anchor.p, anchor.seq)
        if (start is not anchor and t - anchor.t <= self.gap_max_s and self._is_jump(start, fix)
                and not self._is_jump(anchor, fix)):
            self.counters.stale += 1  # no standing car: a stale position repeated while the car moved on
            start = anchor
        if self._is_jump(start, fix):
            if self._rejected is not None and not self._is_jump(self._rejected, fix):
                self.counters.relocations += 1  # the receiver really moved: start again from here
                return self._break(fix, INTERRUPTED_BY_JUMP)
            self.counters.jumps += 1
            self._rejected = fix
            return []
        events = self._move(start, fix)
        self._accept(fix)
        events.extend(self._delta_events(fix))
        return events

    def finish(self) -> list[LapEvent]:
        """Close the session: the lap in progress becomes the in-lap. Safe to call twice."""
        if self._finished:
            return []
        self._finished = True
        if self._anchor is None or self._first is None:
            return []
        end_t, end_seq = self._anchor_last_t, self._anchor.seq
        if self._out_lap:
            lap = self._make_lap(self._lap_number, self._lap_start_t, end_t, (), out_lap=True, in_lap=True,
                                 end_seq=end_seq)
        elif end_t > self._lap_start_t:
            lap = self._make_lap(
                self._lap_number, self._lap_start_t, end_t, tuple(self._sector_times), in_lap=True, end_seq=end_seq
            )
        else:
            return []  # the session ended on the line: no in-lap
        self.laps.append(lap)
        return [LapEvent(LAP_COMPLETED, end_t, end_seq, lap.to_dict())]

    # -------------------------------------------------------------- internals

    def _accept(self, fix: _Fix) -> None:
        self._anchor = fix
        self._anchor_last_t = fix.t
        self._rejected = None

    def _break(self, fix: _Fix, reason: str) -> list[LapEvent]:
        """The trace broke before ``fix`` (a gap or a relocation): the lap in progress ends untimed there.

        No crossing is looked for across the break; from ``fix`` on the car is on an out-lap until it
        crosses the line. On an out-lap already, the trace is only anchored again.
        """
        if reason == INTERRUPTED_BY_GAP:
            self.counters.gaps += 1
        events: list[LapEvent] = []
        if not self._out_lap:
            assert self._anchor is not None
            end_t, end_seq = self._anchor_last_t, self._anchor.seq
            if end_t > self._lap_start_t:
                lap = self._make_lap(self._lap_number, self._lap_start_t, end_t, tuple(self._sector_times),
                                     in_lap=True, end_seq=end_seq, interrupted=reason)
                self.laps.append(lap)
                events.append(LapEvent(LAP_COMPLETED, end_t, end_seq, lap.to_dict()))
                self._lap_number += 1
            self.counters.interrupted += 1
            self._start_lap(self._lap_number, fix.t, fix.seq, 0.0)
            self._out_lap = True
        self._backward_pending = False  # a backwards crossing before the break is no reason to ignore the next
        self._accept(fix)
        return events

    def _is_jump(self, a: _Fix, b: _Fix) -> bool:
        return distance(a.p, b.p) > self._max_speed_ms * (b.t - a.t) + JUMP_SLACK_M

    def _move(self, start: _Fix, fix: _Fix) -> list[LapEvent]:
        """Advance along the move start→fix, handling every line it crosses in order."""
        dt = fix.t - start.t
        length = distance(start.p, fix.p)
        speed_kmh = length / dt * 3.6
        crossings: list[tuple[float, int, bool]] = []  # (s, line index (-1 start/finish), forwards)
        hit = self._start_finish.check(start.p, fix.p, speed_kmh)
        if hit is not None:
            crossings.append((hit[0], -1, hit[1]))
        for index, watch in enumerate(self._sector_lines):
            hit = watch.check(start.p, fix.p, speed_kmh)
            if hit is not None:
                crossings.append((hit[0], index, hit[1]))
        crossings.sort()
        events: list[LapEvent] = []
        self._lap_max_gap = max(self._lap_max_gap, dt)
        done = 0.0
        for s, index, forwards in crossings:
            self._lap_distance += (s - done) * length
            done = s
            at = start.t + s * dt
            if index < 0:
                events.extend(self._on_start_finish(at, forwards, fix.seq, dt))
            else:
                events.extend(self._on_sector(index, at, forwards, fix.seq))
        self._lap_distance += (1.0 - done) * length
        if not self._out_lap:
            self._trace_d.append(self._lap_distance)
            self._trace_t.append(fix.t - self._lap_start_t)
        return events

    def _on_start_finish(self, at: float, forwards: bool, seq: int | None, dt: float) -> list[LapEvent]:
        if not forwards:
            self.counters.backward += 1
            self._backward_pending = True
            return []
        if self._backward_pending:
            self.counters.undone += 1
            self._backward_pending = False
            return []
        events: list[LapEvent] = []
        if self._out_lap:
            lap = self._make_lap(self._lap_number, self._lap_start_t, at, (), out_lap=True, end_seq=seq)
            self.laps.append(lap)
            events.append(LapEvent(LAP_COMPLETED, at, seq, lap.to_dict()))
        elif at - self._lap_start_t < self.track.min_lap_time_s:
            self.counters.debounced += 1
            return []
        else:
            events.extend(self._complete_lap(at, seq))
        self._start_lap(self._lap_number + 1, at, seq, dt)
        return events

    def _complete_lap(self, at: float, seq: int | None) -> list[LapEvent]:
        events: list[LapEvent] = []
        last = len(self._sector_lines)
        if self._next_sector == last:
            events.extend(self._sector_done(last, at - self._sector_start_t, at, seq))
        self._trace_d.append(self._lap_distance)
        self._trace_t.append(at - self._lap_start_t)
        lap_time = at - self._lap_start_t
        is_best = self._best is None or lap_time < self._best.lap_time
        lap = self._make_lap(
            self._lap_number, self._lap_start_t, at, tuple(self._sector_times), is_best=is_best, end_seq=seq
        )
        if is_best:
            self._best = lap
            self._best_trace = (self._trace_d, self._trace_t)
        self.laps.append(lap)
        events.append(LapEvent(LAP_COMPLETED, at, seq, lap.to_dict()))
        return events

    def _start_lap(self, number: int, at: float, seq: int | None, dt: float) -> None:
        self._lap_number = number
        self._out_lap = False
        self._lap_start_t, self._lap_start_seq = at, seq
        self._lap_distance = 0.0
        self._lap_max_gap = dt  # the move that holds the crossing
        self._lap_setup, self._lap_setup_changed = self._setup_version, False
        self._trace_d, self._trace_t = [0.0], [0.0]
        self._sector_start_t = at
        self._next_sector = 0
        self._sector_times = [None] * (len(self._sector_lines) + 1)

    def _on_sector(self, index: int, at: float, forwards: bool, seq: int | None) -> list[LapEvent]:
        if not forwards or self._out_lap or index < self._next_sector:
            return []  # wrong way, out-lap, or a line already passed this lap
        time = at - self._sector_start_t if index == self._next_sector else None  # None: a line was missed
        self._next_sector = index + 1
        self._sector_start_t = at
        return [] if time is None else self._sector_done(index, time, at, seq)

    def _sector_done(self, index: int, time: float, at: float, seq: int | None) -> list[LapEvent]:
        self._sector_times[index] = time
        best = self._best_sectors[index]
        is_best = best is None or time < best
        if is_best:
            self._best_sectors[index] = time
        if not self._sector_lines:
            return []  # a track without sector lines has one sector: the lap itself
        payload = {
            "lap": self._lap_number,
            "sector": index + 1,
            "time": time,
            "start_t": at - time,
            "end_t": at,
            "is_best": is_best,
            "setup_version": self._lap_setup,
        }
        return [LapEvent(SECTOR_COMPLETED, at, seq, payload)]

    def _make_lap(
        self,
        number: int,
        start_t: float,
        end_t: float,
        sectors: tuple[float | None, ...],
        *,
        is_best: bool = False,
        out_lap: bool = False,
        in_lap: bool = False,
        end_seq: int | None = None,
        interrupted: str | None = None,
    ) -> Lap:
        return Lap(
            number=number,
            start_t=start_t,
            end_t=end_t,
            lap_time=end_t - start_t,
            sectors=sectors,
            is_best=is_best,
            out_lap=out_lap,
            in_lap=in_lap,
            setup_version=self._lap_setup,
            setup_changed=self._lap_setup_changed,
            distance_m=self._lap_distance,
            max_gap_s=self._lap_max_gap,
            start_seq=self._lap_start_seq,
            end_seq=end_seq,
            interrupted=interrupted,
        )

    def _delta_events(self, fix: _Fix) -> list[LapEvent]:
        if self._out_lap:
            return []
        delta = self.delta_to_best
        payload = {
            "lap": self._lap_number,
            "elapsed": self._anchor_last_t - self._lap_start_t,
            "distance_m": self._lap_distance,
            "delta": delta,
            "predicted_lap_time": None if delta is None or self._best is None else self._best.lap_time + delta,
            "best_lap_time": None if self._best is None else self._best.lap_time,
        }
        return [LapEvent(LAP_DELTA, fix.t, fix.seq, payload)]


def recompute(
    track: Track,
    frames: Iterable[Any],
    setups: Iterable[tuple[float, int | None]] = (),
) -> list[Lap]:
    """Time a past session again on ``track``: every lap, out-lap and in-lap, in order.

    ``frames`` in seq order; ``setups`` the session's setup changes as (time, version),
    so each lap records the version in force, as it would have live.
    """
    timer = LapTimer(track)
    pending = sorted(setups, key=lambda change: change[0])
    i = 0
    for frame in frames:
        _, t, _, _ = _frame_fields(frame)
        while t is not None and i < len(pending) and pending[i][0] <= t:
            timer.setup_version = pending[i][1]
            i += 1
        timer.feed(frame)
    timer.finish()
    return timer.laps
