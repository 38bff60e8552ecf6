"""Drivers, stints and the series rules on them. Pure, no I/O, no clock (``now`` is always passed in).

Roster and driver changes
    A car's roster lists its drivers (id, name, optional personal limits). A driver change
    says who got in and when (``DriverChange``). Stints run from one change to the next: the
    first from the session start (driver unknown, None, until the first change, unless a change
    is at the start), the last is open (``end_t`` None) until the session ends. Changes are
    taken in time order; two changes at the same time: the later in the list wins.

Laps
    A lap belongs to the driver in the car at its start (``stamp_laps``), as a lap carries the
    setup version in force at its start; the stint of a lap is the one it started in.

Stint summary
    Per stint: driver, laps started in it, best lap (timed, no pit, not flagged), mean and
    standard deviation (the sample standard deviation, "consistency") of its clean laps
    (``cleanlap``: the rule, judged against the stint's own best), and fuel used (the sum
    of its laps' ``fuel_used`` where every lap has one, else None).

Series rules (``SeriesRules``; ChampCar: 2 h maximum stint, 5 min minimum fuel stop)
    - ``max_stint_s``: a stint (one driver, change to change) may last at most this long;
    - ``min_stop_s``: a fuel stop lasts at least this long, pit-in to pit-out (the lane time;
      the stationary time where the track has no pit lane);
    - ``max_driver_total_s``: a driver's stints together may last at most this long.
    A driver's own limit in the roster replaces the series' for that driver when it is stricter.
    ``RulesWatch.check(now, stints, stops)`` answers, for every limit, the time left (negative
    when broken), and raises ``rule.warn`` once when the time left first is at most
    ``warn_lead_s`` and ``rule.breach`` once when a limit is broken, naming the rule. An event's
    ``t`` is the moment the threshold was reached (computed, not the time of the check), so an
    accelerated or late clock still stamps it right. A minimum stop has no warning: it is broken
    when a fuel stop ends too soon, and while the car is in the lane its time left is how long it
    must still wait.
"""
from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictStr, model_validator

from dashboard.telemetry.cleanlap import LapRecord, best_time, clean_laps, lap_record

MAX_NAME_LEN = 80
DEFAULT_WARN_LEAD_S = 300.0  # five minutes: time for the crew to call the car in and get the next driver ready
CHAMPCAR_MAX_STINT_S = 2 * 3600.0  # ChampCar: no driver more than 2 hours at a time
CHAMPCAR_MIN_STOP_S = 5 * 60.0  # ChampCar: a fuel stop lasts at least 5 minutes

RULE_WARN = "rule.warn"
RULE_BREACH = "rule.breach"
RuleName = Literal["max_stint", "min_stop", "max_driver_total"]

_Seconds = Annotated[float, Field(strict=False, gt=0, allow_inf_nan=False)]


class Driver(BaseModel):
    """One driver of a car: an id (stable, in events and laps), a name (shown, never logged), own limits."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Annotated[StrictStr, Field(pattern=r"^[A-Za-z0-9_.-]{1,40}$")]
    name: Annotated[StrictStr, Field(min_length=1, max_length=MAX_NAME_LEN, pattern=r"^[^\x00]*$")]
    max_stint_s: _Seconds | None = None
    max_total_s: _Seconds | None = None


class Roster(BaseModel):
    """The drivers of one car."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    car: Annotated[StrictStr, Field(min_length=1, max_length=40)]
    drivers: tuple[Driver, ...] = ()

    @model_validator(mode="after")
    def _unique_ids(self) -> Roster:
        ids = [d.id for d in self.drivers]
        if len(ids) != len(set(ids)):
            raise ValueError("driver ids must be unique in a roster")
        return self

    def get(self, driver_id: str | None) -> Driver | None:
        """The driver of that id, None if not on the roster."""
        return next((d for d in self.drivers if d.id == driver_id), None)


class SeriesRules(BaseModel):
    """The limits of a series (per event or per car); None: no such limit."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_stint_s: _Seconds | None = None
    min_stop_s: _Seconds | None = None
    max_driver_total_s: _Seconds | None = None
    warn_lead_s: Annotated[float, Field(ge=0, allow_inf_nan=False)] = DEFAULT_WARN_LEAD_S


CHAMPCAR = SeriesRules(max_stint_s=CHAMPCAR_MAX_STINT_S, min_stop_s=CHAMPCAR_MIN_STOP_S)


@dataclass(frozen=True)
class DriverChange:
    """``driver_id`` got in at ``t``."""

    t: float
    driver_id: str


@dataclass(frozen=True)
class Stint:
    """One driver's time in the car: ``start_t`` to ``end_t`` (None: still driving)."""

    number: int
    driver_id: str | None
    start_t: float
    end_t: float | None = None

    def duration(self, now: float) -> float:
        """Seconds driven, up to ``now`` for the open stint."""
        end = self.end_t if self.end_t is not None else now
        return max(0.0, end - self.start_t)


def stints_from_changes(session_start: float, changes: Iterable[DriverChange],
                        session_end: float | None = None) -> list[Stint]:
    """The stints of a session from its driver changes (the rule in the module docstring)."""
    ordered = sorted(changes, key=lambda c: c.t)  # stable: same-time changes keep their order
    starts: list[tuple[float, str | None]] = [(session_start, None)]
    for change in ordered:
        t = max(change.t, session_start)
        if starts and starts[-1][0] == t:
            starts[-1] = (t, change.driver_id)
        else:
            starts.append((t, change.driver_id))
    stints = []
    for i, (t, driver) in enumerate(starts):
        end = starts[i + 1][0] if i + 1 < len(starts) else session_end
        stints.append(Stint(len(stints) + 1, driver, t, end))
    return stints


def stint_at(stints: Sequence[Stint], t: float) -> Stint | None:
    """The stint in progress at ``t`` (the later one at a change), None before the first."""
    found = None
    for stint in stints:
        if stint.start_t <= t:
            found = stint
    return found


def stamp_laps(laps: Iterable[Any], stints: Sequence[Stint]) -> list[LapRecord]:
    """Each lap as a LapRecord carrying the driver in the car at its start."""
    out = []
    for raw in laps:
        lap = lap_record(raw)
        stint = stint_at(stints, lap.start_t)
        out.append(lap_record(lap, driver_id=stint.driver_id if stint else None))
    return out


@dataclass(frozen=True)
class StintSummary:
    """A stint's figures (the rule in the module docstring)."""

    stint: int
    driver_id: str | None
    start_t: float
    end_t: float | None
    laps: int
    clean_laps: int
    best: float | None
    mean_clean: float | None
    consistency: float | None  # sample standard deviation of the clean laps (None under two)
    fuel_used: float | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return dict(self.__dict__)


def summarise_stints(stints: Sequence[Stint], laps: Iterable[Any]) -> list[StintSummary]:
    """One summary per stint, from the laps that started in it."""
    records = [lap_record(raw) for raw in laps]
    out = []
    for stint in stints:
        mine = [lap for lap in records if stint_at(stints, lap.start_t) is stint]
        clean = [lap.lap_time for lap in clean_laps(mine)]
        fuel = [lap.fuel_used for lap in mine]
        out.append(StintSummary(
            stint=stint.number, driver_id=stint.driver_id, start_t=stint.start_t, end_t=stint.end_t,
            laps=len(mine), clean_laps=len(clean), best=best_time(mine),
            mean_clean=statistics.fmean(clean) if clean else None,
            consistency=statistics.stdev(clean) if len(clean) >= 2 else None,
            fuel_used=sum(f for f in fuel if f is not None) if mine and all(f is not None for f in fuel) else None,
        ))
    return out


@dataclass(frozen=True)
class LimitStatus:
    """One limit now: the rule, what it applies to (a stint, a driver, a stop), the limit and the time left."""

    rule: RuleName
    subject: str
    limit_s: float
    used_s: float
    left_s: float  # < 0: broken by that much (for min_stop: > 0 while the car must still wait)
    warn_at: float | None  # when the warning is (was) due, None for min_stop
    breach_at: float | None  # when the limit is (was) broken, None if not (yet) known

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return dict(self.__dict__)


@dataclass(frozen=True)
class RuleEvent:
    """``rule.warn`` or ``rule.breach`` of ``rule`` for ``subject``, reached at ``t``."""

    type: str
    t: float
    rule: RuleName
    subject: str
    limit_s: float
    left_s: float

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return dict(self.__dict__)


def _reached(stints: Sequence[Stint], now: float, amount: float) -> float | None:
    """When a driver's stints (in order) together reached ``amount`` seconds: past, or ahead if still driving."""
    done = 0.0
    for stint in sorted(stints, key=lambda s: s.start_t):
        used = stint.duration(now)
        if stint.end_t is None or done + used >= amount:
            return stint.start_t + (amount - done)
        done += used
    return None


class RulesWatch:
    """Counts down to each series limit of one car and raises warn/breach events once each."""

    def __init__(self, rules: SeriesRules, roster: Roster | None = None) -> None:
        self.rules = rules
        self.roster = roster
        self._sent: set[tuple[str, str, str]] = set()

    def _driver_limit(self, driver_id: str | None, series: float | None, own: str) -> float | None:
        driver = self.roster.get(driver_id) if self.roster is not None else None
        personal = getattr(driver, own) if driver is not None else None
        limits = [v for v in (series, personal) if v is not None]
        return min(limits) if limits else None

    def status(self, now: float, stints: Sequence[Stint], stops: Iterable[Any] = (),
               in_pit_since: float | None = None, fuel_stops: set[int] | None = None) -> list[LimitStatus]:
        """Every limit's state at ``now``.

        ``stops``: completed stops (``pitlane.PitStop``: ``number``, ``lane_time`` or ``stationary_time``,
        ``exit_t``); ``fuel_stops``: the numbers of those that were fuel stops (None: all);
        ``in_pit_since``: the entry time of a stop in progress.
        """
        lead = self.rules.warn_lead_s
        out: list[LimitStatus] = []
        for stint in stints:
            limit = self._driver_limit(stint.driver_id, self.rules.max_stint_s, "max_stint_s")
            if limit is None:
                continue
            used = stint.duration(now)
            driving = stint.end_t is None
            out.append(LimitStatus(
                "max_stint", f"stint {stint.number}", limit, used, limit - used,
                stint.start_t + max(0.0, limit - lead) if driving or used >= limit - lead else None,
                stint.start_t + limit if driving or used > limit else None))
        for driver_id in dict.fromkeys(s.driver_id for s in stints if s.driver_id is not None):
            limit = self._driver_limit(driver_id, self.rules.max_driver_total_s, "max_total_s")
            if limit is None:
                continue
            mine = [s for s in stints if s.driver_id == driver_id]
            used = sum(s.duration(now) for s in mine)
            out.append(LimitStatus("max_driver_total", f"driver {driver_id}", limit, used, limit - used,
                                   _reached(mine, now, max(0.0, limit - lead)), _reached(mine, now, limit)))
        if self.rules.min_stop_s is not None:
            limit = self.rules.min_stop_s
            for stop in stops:
                if fuel_stops is not None and stop.number not in fuel_stops:
                    continue
                used = stop.lane_time if stop.lane_time is not None else stop.stationary_time
                out.append(LimitStatus("min_stop", f"stop {stop.number}", limit, used, limit - used, None,
                                       stop.exit_t if used < limit else None))
            if in_pit_since is not None:
                used = max(0.0, now - in_pit_since)
                out.append(LimitStatus("min_stop", "stop in progress", limit, used, limit - used, None, None))
        return out

    def check(self, now: float, stints: Sequence[Stint], stops: Iterable[Any] = (),
              in_pit_since: float | None = None, fuel_stops: set[int] | None = None) -> list[RuleEvent]:
        """The warn and breach events due by ``now`` not yet raised, in time order."""
        events: list[RuleEvent] = []
        for status in self.status(now, stints, stops, in_pit_since, fuel_stops):
            if status.warn_at is not None and status.warn_at <= now:
                self._emit(events, RULE_WARN, status.warn_at, status)
            broken = status.left_s > 0 if status.rule == "min_stop" else status.left_s < 0
            if broken and status.breach_at is not None and status.breach_at <= now:
                self._emit(events, RULE_BREACH, status.breach_at, status)
        return sorted(events, key=lambda e: e.t)

    def _emit(self, events: list[RuleEvent], kind: str, t: float, status: LimitStatus) -> None:
        key = (kind, status.rule, status.subject)
        if key in self._sent:
            return
        self._sent.add(key)
        events.append(RuleEvent(kind, t, status.rule, status.subject, status.limit_s, status.left_s))
