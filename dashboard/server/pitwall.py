"""One session's pit wall: pit stops, drivers and stints, fuel and the series rules, beside its lap timer.

Pure: no I/O and no clock (``now`` is passed in). :class:`PitWall` lives in the session's
processors (``timing.SessionTiming``), is fed the same frames in seq order, and is rebuilt the
same way from the stored frames (after a restart or a track change), with the driver changes and
the crew's fuel corrections read from the session's event log.

- Pit stops: a ``PitDetector`` on the track's pit lane (``definition["pit_lane"]``), or the no-lane
  fallback (a long standstill) when the track has none or the session has no track.
- Laps: each completed lap is stamped with ``driver_id`` (the driver in the car at its start, as the
  setup version is) and ``pit_in`` / ``pit_out`` (a pit entry / exit inside it: ``pitlane.pit_lap_flags``'
  rule, applied as laps complete); a pit lap is also an ``in_lap`` / ``out_lap`` (not timed, never best),
  and carries the ``fuel_used`` the fuel model gave it.
- Fuel: ``SensorFuel`` from ``fuel_level`` unless the session (or its car) has a model configured
  (tank and use per lap: ``ModelFuel``); the crew's "filled 40 l" is applied at its time.
- Series rules: ``RulesWatch`` over the stints and stops, run on the timing tick; its warn and breach
  events become alerts named for the rule (``series.max_stint``...), through the existing alert path.
"""
from __future__ import annotations

import bisect
from typing import Any, Iterable

from dashboard.telemetry.fuel import FUEL_LOW, FuelTracker, ModelFuel, SensorFuel
from dashboard.telemetry.pitlane import PIT_ENTRY, PIT_STOP, PitDetector, PitLane
from dashboard.telemetry.stints import (
    RULE_BREACH,
    DriverChange,
    Roster,
    RulesWatch,
    SeriesRules,
    Stint,
    stint_at,
    stints_from_changes,
)

Output = list[tuple[str, dict[str, Any]]]
FUEL_RULE_ID = "fuel.low"
RULE_LABELS = {"max_stint": "Maximum stint", "min_stop": "Minimum stop", "max_driver_total": "Maximum driver time"}


def series_rule_id(rule: str) -> str:
    """The alert rule id of a series rule (one open alert per rule and car)."""
    return f"series.{rule}"


def alert_payload(kind: str, rule_id: str, name: str, severity: str, channel: str, comparison: str,
                  threshold: float, value: float, t: float, seq: int) -> dict[str, Any]:
    """An alert.raised / alert.cleared payload in the alert engine's shape (AlertEvent), for the alert path."""
    return {"kind": kind, "rule_id": rule_id, "name": name, "severity": severity, "channel": channel,
            "comparison": comparison, "threshold": float(threshold), "value": float(value), "t": float(t),
            "seq": int(seq), "reason": "condition"}


def make_fuel(config: dict[str, Any] | None) -> FuelTracker:
    """The fuel tracker a configuration asks for (FuelConfig); the sensor when there is none."""
    config = config or {}
    if config.get("tank_l") is not None and config.get("use_per_lap_l") is not None:
        return ModelFuel(config["tank_l"], config["use_per_lap_l"], config.get("level_l"),
                         config.get("alert_laps_left"))
    return SensorFuel(config.get("alert_laps_left"))


class PitWall:
    """Pit stops, stints, fuel and series rules of one session (the module docstring)."""

    def __init__(self, lane: PitLane | None, session_start: float, changes: Iterable[DriverChange] = (),
                 series: SeriesRules | None = None, roster: Roster | None = None,
                 fuel: dict[str, Any] | None = None, refills: Iterable[tuple[float, float | None, bool]] = ()) -> None:
        self.detector = PitDetector(lane)
        self.has_lane = lane is not None
        self.session_start = session_start
        self.changes = sorted(changes, key=lambda c: c.t)
        self.roster = roster
        self.series = series
        self.watch = RulesWatch(series, roster) if series is not None else None
        self.fuel_config = dict(fuel or {})
        self.fuel = make_fuel(fuel)
        self._refills = sorted(refills)
        self._next_refill = 0
        self.entries: list[float] = []  # pit entry times (lap flags)
        self.exits: list[float] = []  # pit exit times
        self.open_entry_t: float | None = None  # the stop in progress began here
        self.last_t: float | None = None  # the latest frame time fed
        self.last_seq = 0
        self.last_lap: dict[str, Any] | None = None
        self.last_fuel: dict[str, Any] | None = None  # the latest fuel.lap payload
        self.finished = False

    # ------------------------------------------------------------ frames
    def feed(self, frame: dict[str, Any], alerts: bool = True) -> Output:
        """One frame (before the lap timer sees it): pit events, fuel refills seen by the sensor."""
        t = frame.get("t")
        if isinstance(t, (int, float)):
            if self.last_t is None and t < self.session_start:
                self.session_start = t  # the first stint starts with the first frame when that is earlier
            self._apply_refills(t)
            self.last_t = t if self.last_t is None else max(self.last_t, t)
        if isinstance(frame.get("seq"), int):
            self.last_seq = frame["seq"]
        out: Output = []
        for event in self.detector.feed(frame):
            if event.type == PIT_ENTRY:
                self.entries.append(event.t)
                self.open_entry_t = event.t
            elif event.type == PIT_STOP:
                stop = event.payload
                if stop["lane_time"] is None:  # no pit lane: the standstill is the stop, in and out of one lap
                    self.entries.append(stop["entry_t"])
                if not stop["open"]:
                    self.exits.append(stop["exit_t"])
                self.open_entry_t = None
            out.append(("pit", event.to_dict()))
        for fuel_event in self.fuel.feed(frame):
            out.append(("fuel", fuel_event.to_dict()))
        return out

    def on_lap(self, lap: dict[str, Any], alerts: bool = True) -> Output:
        """A lap completed: stamp it (driver, pit flags, fuel used) in place; fuel events, maybe the low-fuel alert."""
        start, end = lap["start_t"], lap["end_t"]
        stint = stint_at(self.stints(), start)
        lap["driver_id"] = stint.driver_id if stint is not None else None
        lap["pit_in"] = any(start <= t < end for t in self.entries)
        lap["pit_out"] = any(start <= t < end for t in self.exits)
        lap["in_lap"] = lap["in_lap"] or lap["pit_in"]
        lap["out_lap"] = lap["out_lap"] or lap["pit_out"]
        out: Output = []
        lap["fuel_used"] = None
        for event in self.fuel.lap_completed({"number": lap["lap"], "start_t": start, "end_t": end}):
            if event.type == FUEL_LOW:
                if alerts:
                    out.append(("alert", self._fuel_alert("alert.raised", event.t, event.payload["laps_left"])))
                continue
            lap["fuel_used"] = event.payload.get("used")
            self.last_fuel = event.payload
            out.append(("fuel", event.to_dict()))
        if lap["lap"] >= 1 and not lap.get("interrupted"):  # the session's out-lap (from wherever the car was when
            self.last_lap = lap  # the session started) and a lap cut by a gap are no lap time to show as "last"
        return out

    def finish(self) -> Output:
        """The session ended: a stop still open closes as ``open``."""
        out: Output = []
        self.finished = True
        for event in self.detector.finish():
            if event.type == PIT_STOP:
                self.open_entry_t = None
            out.append(("pit", event.to_dict()))
        return out

    # ------------------------------------------------------------ crew
    def driver_change(self, t: float, driver_id: str, open_alerts: Iterable[str] = ()) -> Output:
        """``driver_id`` got in at ``t``: a new stint, so the last one's stint-limit alert is cleared."""
        bisect.insort(self.changes, DriverChange(t, driver_id), key=lambda c: c.t)
        rule_id = series_rule_id("max_stint")
        if rule_id not in set(open_alerts):
            return []
        limit = self.series.max_stint_s if self.series is not None and self.series.max_stint_s else 0.0
        return [("alert", alert_payload("alert.cleared", rule_id, RULE_LABELS["max_stint"], "warning", "max_stint",
                                        ">=", limit, 0.0, t, self.last_seq))]

    def refill(self, t: float, added: float | None, to_full: bool, open_alert: bool) -> Output:
        """The crew's word after a stop, applied now (ValueError when it says nothing usable)."""
        self.fuel.refilled(t, added, to_full)
        estimate = self.fuel.estimate()
        threshold = self.fuel_config.get("alert_laps_left")
        if open_alert and threshold is not None and (estimate.laps_left is None or estimate.laps_left > threshold):
            return [("alert", self._fuel_alert("alert.cleared", t, estimate.laps_left or 0.0))]
        return []

    def _apply_refills(self, t: float) -> None:
        while self._next_refill < len(self._refills) and self._refills[self._next_refill][0] <= t:
            at, added, to_full = self._refills[self._next_refill]
            self.fuel.refilled(at, added, to_full)
            self._next_refill += 1

    def _fuel_alert(self, kind: str, t: float, laps_left: float) -> dict[str, Any]:
        return alert_payload(kind, FUEL_RULE_ID, "Low fuel: laps left", "warning", "fuel_laps_left", "<=",
                             self.fuel_config.get("alert_laps_left") or 0.0, laps_left, t, self.last_seq)

    # ------------------------------------------------------------ rules
    def stints(self, end: float | None = None) -> list[Stint]:
        """The session's stints from its driver changes."""
        return stints_from_changes(self.session_start, self.changes, end)

    def set_series(self, series: SeriesRules | None, roster: Roster | None) -> None:
        """New series rules or roster: counted again from now (what was raised stays raised)."""
        self.series, self.roster = series, roster
        self.watch = RulesWatch(series, roster) if series is not None else None

    def tick(self, now: float, open_alerts: Iterable[str]) -> Output:
        """The series rules at ``now``: a warn or breach raises its rule's alert (the previous one of it cleared)."""
        if self.watch is None:
            return []
        out: Output = []
        open_ids = set(open_alerts)
        for event in self.watch.check(now, self.stints(), self.detector.stops, self.open_entry_t):
            rule_id = series_rule_id(event.rule)
            breach = event.type == RULE_BREACH
            label = RULE_LABELS.get(event.rule, event.rule)
            used = event.limit_s - event.left_s
            comparison = "<" if event.rule == "min_stop" else ">="
            if rule_id in open_ids:
                out.append(("alert", alert_payload("alert.cleared", rule_id, label, "warning", event.rule,
                                                   comparison, event.limit_s, used, event.t, self.last_seq)))
            name = f"{label} {'broken' if breach else 'near'}: {event.subject}"
            out.append(("alert", alert_payload("alert.raised", rule_id, name, "critical" if breach else "warning",
                                               event.rule, comparison, event.limit_s, used, event.t, self.last_seq)))
            open_ids.add(rule_id)
        return out

    def limits(self, now: float) -> list[dict[str, Any]]:
        """Every series limit now (time left), for the team view."""
        if self.watch is None:
            return []
        return [s.to_dict() for s in self.watch.status(now, self.stints(), self.detector.stops, self.open_entry_t)]
