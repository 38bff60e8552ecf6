"""The pit wall's settings and inputs, and the team view: drivers, driver changes, series rules, fuel.

A "team" is every car on this server: there is no team entity yet. Its key is ``default`` (the
Socket.IO room ``team:default``), so teams can be added later without renaming anything.

Settings (the ``pitwall_settings`` table, one row each, written through the single writer):

- a car's roster (``roster/<car_id>``): its drivers, each an id (in events and laps) and a name
  (shown, never logged), with optional personal limits;
- series rules (``series/<scope>``: ``session:<id>``, a car id, or ``*`` for every car; the
  narrowest wins, as for alert rules);
- a fuel model (``fuel/<scope>``: ``session:<id>`` or a car id): tank and use per lap for a car
  without a fuel sensor, and the laps-left alert threshold; none: the ``fuel_level`` sensor.

A driver change (``driver.change`` {driver_id, at}) and the crew's fuel word (``fuel.crew``
{added, to_full, at}) are entries of the session's event log, read again when the session's
processors are rebuilt from the stored frames, so laps are stamped the same after a restart.

The team view (``team_snapshot``) is read from memory only (each car's live entry, under its lock):
no database call, so the hub can build it several times a second.
"""
from __future__ import annotations

import logging
from typing import Any

from dashboard.errors import Conflict, InvalidInput, NotFound
from dashboard.server.live import LiveSession
from dashboard.server.pitwall import FUEL_RULE_ID
from dashboard.server.service import Service, Shared
from dashboard.server.timing import TimingService
from dashboard.telemetry.cleanlap import lap_record
from dashboard.telemetry.stints import Driver, DriverChange, Roster, SeriesRules, summarise_stints

log = logging.getLogger(__name__)

TEAM = "default"  # every car on this server (no team entity yet)
LINK_STALE_S = 3.0  # no frame over the main link for longer: the link is not live
LORA_STALE_S = 30.0  # a LoRa summary older than this no longer keeps a car "on LoRa"
DRIVER_CHANGE = "driver.change"
FUEL_CREW = "fuel.crew"


def team_room(team: str = TEAM) -> str:
    """The /dashboard room of a team's viewers."""
    return f"team:{team}"


def _scope(car_id: str | None, session_id: str | None) -> str:
    return f"session:{session_id}" if session_id else car_id or "*"


def setting_key(kind: str, car_id: str | None = None, session_id: str | None = None) -> str:
    """Primary key of a pit-wall setting: its kind and scope."""
    return f"{kind}/{_scope(car_id, session_id)}"


def _round(value: Any, digits: int = 3) -> float | None:
    return round(value, digits) if isinstance(value, (int, float)) else None


def _position(latest: dict[str, tuple[Any, ...]]) -> dict[str, Any] | None:
    """The car's last GPS position on the team map: {lat, lon, lag_s}; None before its first fix.

    ``lag_s`` is how much older the fix is than the car's newest value (both on the car's clock, so no clock
    offset enters): a car still sending but without a fix has its position age grow, as its link age does not.
    """
    lat, lon = latest.get("lat"), latest.get("lon")
    if not lat or not lon or not isinstance(lat[0], (int, float)) or not isinstance(lon[0], (int, float)):
        return None
    newest = max((entry[1] for entry in latest.values() if isinstance(entry[1], (int, float))), default=lat[1])
    fix_t = min(lat[1], lon[1]) if isinstance(lat[1], (int, float)) and isinstance(lon[1], (int, float)) else newest
    return {"lat": round(lat[0], 7), "lon": round(lon[0], 7), "lag_s": _round(max(0.0, newest - fix_t), 1)}


class TeamService(Service):
    """Rosters, driver changes, series rules, fuel models and corrections; the team snapshot."""

    def __init__(self, shared: Shared, timing: TimingService) -> None:
        super().__init__(shared)
        self.timing = timing
        timing.pit_settings = self.settings_for
        self._names: dict[tuple[str | None, str], str] = {}  # (car, driver id) -> name, as last read: the team view

    # ------------------------------------------------------------ settings
    def _value(self, kind: str, car_id: str | None = None, session_id: str | None = None) -> Any:
        row = self.store.setting(setting_key(kind, car_id, session_id))
        return row["value"] if row else None

    def _save(self, kind: str, value: dict[str, Any], car_id: str | None = None,
              session_id: str | None = None) -> None:
        row = {"id": setting_key(kind, car_id, session_id), "kind": kind, "car_id": None if session_id else car_id,
               "session_id": session_id, "value": value, "updated_at": self.clock()}
        self.writer.call(lambda conn: self.store.save_setting(row, conn=conn))

    def settings_for(self, live: LiveSession) -> dict[str, Any]:
        """What a session's pit wall is built with (TimingService._build, off the event loop's hot path)."""
        car_id = live.row.get("car_id")
        changes, refills = [], []
        for event in self.store.events_of_types(live.id, (DRIVER_CHANGE, FUEL_CREW)):
            payload = event["payload"]
            if event["event_type"] == DRIVER_CHANGE:
                changes.append(DriverChange(payload["at"], payload["driver_id"]))
            else:
                refills.append((payload["at"], payload.get("added"), bool(payload.get("to_full"))))
        series, _source = self.series_in_force(car_id, live.id)
        return {"changes": changes, "refills": refills, "series": SeriesRules(**series) if series else None,
                "roster": self.roster(car_id), "fuel": self.fuel_config(live)[0]}

    # ------------------------------------------------------------ drivers
    def roster(self, car_id: str | None) -> Roster | None:
        """The car's roster (None when it has none)."""
        if car_id is None:
            return None
        value = self._value("roster", car_id)
        if not value:
            return None
        roster = Roster(car=car_id[:40], drivers=tuple(Driver(**d) for d in value["drivers"]))
        self._names.update({(car_id, d.id): d.name for d in roster.drivers})
        return roster

    def drivers(self, car_id: str) -> list[dict[str, Any]]:
        """The car's drivers (DriverOut each), in the order added."""
        roster = self.roster(car_id)
        return [self._driver_out(car_id, d) for d in (roster.drivers if roster else ())]

    @staticmethod
    def _driver_out(car_id: str, driver: Driver) -> dict[str, Any]:
        return {"car_id": car_id, "driver_id": driver.id, "name": driver.name, "max_stint_s": driver.max_stint_s,
                "max_total_s": driver.max_total_s}

    def save_driver(self, car_id: str, driver: Driver, create: bool) -> dict[str, Any]:
        """Add a driver (Conflict when the id is taken) or change one (NotFound when unknown)."""
        roster = self.roster(car_id)
        drivers = list(roster.drivers) if roster else []
        index = next((i for i, d in enumerate(drivers) if d.id == driver.id), None)
        if create and index is not None:
            raise Conflict(f"car {car_id} already has a driver {driver.id}", field="driver_id")
        if not create and index is None:
            raise NotFound(f"no driver {driver.id} in car {car_id}'s roster", field="driver_id")
        if index is None:
            drivers.append(driver)
        else:
            drivers[index] = driver
        self._save_roster(car_id, drivers)
        log.info("car %s: driver %s %s", car_id, driver.id, "added" if create else "changed")
        return self._driver_out(car_id, driver)

    def remove_driver(self, car_id: str, driver_id: str) -> None:
        """Take a driver off the roster (laps keep their driver id); NotFound when unknown."""
        roster = self.roster(car_id)
        drivers = [d for d in (roster.drivers if roster else ()) if d.id != driver_id]
        if roster is None or len(drivers) == len(roster.drivers):
            raise NotFound(f"no driver {driver_id} in car {car_id}'s roster", field="driver_id")
        self._save_roster(car_id, drivers)
        log.info("car %s: driver %s removed", car_id, driver_id)

    def _save_roster(self, car_id: str, drivers: list[Driver]) -> None:
        self._save("roster", {"drivers": [d.model_dump() for d in drivers]}, car_id)
        self._names.update({(car_id, d.id): d.name for d in drivers})
        self._refresh_rules(car_id, None)

    def driver_change(self, session_id: str, driver_id: str, at: float | None) -> dict[str, Any]:
        """``driver_id`` got in (at ``at``, default now): logged, and the laps from then on carry the driver."""
        live = self.cache.get(session_id)
        roster = self.roster(live.row.get("car_id"))
        if roster is None or roster.get(driver_id) is None:
            raise NotFound(f"no driver {driver_id} in car {live.row.get('car_id')}'s roster: add the driver to "
                           "the roster first", field="driver_id")
        at = self.clock() if at is None else at
        payload = {"driver_id": driver_id, "at": at}
        stored = self.events.log(live.id, DRIVER_CHANGE, payload, timestamp=at).get()
        with live.lock:
            timing = self.timing.processors(live)
            if timing.pit is not None:
                self.timing.apply(live, timing.pit.driver_change(at, driver_id, list(live.open_alerts)))
        log.info("session %s: driver %s got in", live.id, driver_id)
        return {"session_id": live.id, "event_id": stored["id"] if stored else None, **payload}

    def stints(self, session_id: str) -> dict[str, Any]:
        """The session's stints with their summaries (StintList: driver, laps, best, clean mean, consistency, fuel)."""
        live = self.cache.get(session_id)
        laps = self.store.laps(live.id)
        with live.lock:
            timing = self.timing.processors(live)
            stints = timing.pit.stints(live.row.get("ended_at")) if timing.pit is not None else []
        records = [lap_record(lap, pit=bool(lap.get("pit_in") or lap.get("pit_out"))) for lap in laps]
        return {"session_id": live.id, "items": [s.to_dict() for s in summarise_stints(stints, records)]}

    # ------------------------------------------------------------ series rules
    def series_in_force(self, car_id: str | None, session_id: str | None) -> tuple[dict[str, Any] | None, str]:
        """The series rules in force for a car's session and where they come from (session, car, all, none)."""
        for source, key in (("session", setting_key("series", None, session_id) if session_id else None),
                            ("car", setting_key("series", car_id) if car_id else None),
                            ("all", setting_key("series"))):
            if key is None:
                continue
            row = self.store.setting(key)
            if row is not None:
                return row["value"], source
        return None, "none"

    def series_out(self, car_id: str | None, session_id: str | None) -> dict[str, Any]:
        """SeriesRulesOut."""
        if session_id is not None:
            live = self.cache.get(session_id)
            car_id, session_id = live.row.get("car_id"), live.id
        rules, source = self.series_in_force(car_id, session_id)
        return {"car_id": car_id, "session_id": session_id, "source": source, "rules": rules}

    def save_series(self, rules: SeriesRules, car_id: str | None, session_id: str | None) -> dict[str, Any]:
        """Store series rules for a session, a car or every car; the live sessions concerned count from now on."""
        if session_id is not None:
            session_id, car_id = self.cache.get(session_id).id, None
        self._save("series", rules.model_dump(), car_id, session_id)
        self._refresh_rules(car_id, session_id)
        return self.series_out(car_id, session_id)

    def delete_series(self, car_id: str | None, session_id: str | None) -> bool:
        """Forget stored series rules (the wider scope's apply again)."""
        if session_id is not None:
            session_id, car_id = self.cache.get(session_id).id, None
        deleted = self.writer.call(lambda conn: self.store.delete_setting(setting_key("series", car_id, session_id),
                                                                           conn=conn))
        if deleted:
            self._refresh_rules(car_id, session_id)
        return deleted

    def _refresh_rules(self, car_id: str | None, session_id: str | None) -> None:
        for live in self.cache.entries():
            if live.timing is None or live.timing.pit is None:
                continue
            if session_id is not None and live.id != session_id:
                continue
            if session_id is None and car_id is not None and live.row.get("car_id") != car_id:
                continue
            series, _source = self.series_in_force(live.row.get("car_id"), live.id)
            roster = self.roster(live.row.get("car_id"))
            with live.lock:
                live.timing.pit.set_series(SeriesRules(**series) if series else None, roster)

    # ------------------------------------------------------------ fuel
    def fuel_config(self, live: LiveSession) -> tuple[dict[str, Any] | None, str]:
        """The session's fuel model configuration and where it comes from (session, car, none: the sensor)."""
        value = self._value("fuel", None, live.id)
        if value is not None:
            return value, "session"
        value = self._value("fuel", live.row.get("car_id")) if live.row.get("car_id") else None
        return (value, "car") if value is not None else (None, "none")

    def fuel_out(self, session_id: str) -> dict[str, Any]:
        """FuelOut: the configuration in force and the estimate now."""
        live = self.cache.get(session_id)
        config, source = self.fuel_config(live)
        with live.lock:
            timing = self.timing.processors(live)
            estimate = timing.pit.fuel.estimate().to_dict() if timing.pit is not None else None
        return {"session_id": live.id, "source": source, "config": config, "estimate": estimate}

    def save_fuel(self, session_id: str, config: dict[str, Any], car: bool = False) -> dict[str, Any]:
        """Store a session's (or its car's) fuel model; the session's fuel is worked out again from its frames."""
        live = self.cache.get(session_id)
        tank, use, level = config.get("tank_l"), config.get("use_per_lap_l"), config.get("level_l")
        if (tank is None) != (use is None):
            raise InvalidInput("give both tank_l and use_per_lap_l (a car without a fuel sensor), or neither",
                               field="tank_l" if tank is None else "use_per_lap_l")
        if level is not None and (tank is None or level > tank):
            raise InvalidInput("level_l must be at most tank_l", field="level_l")
        self._save("fuel", config, live.row.get("car_id") if car else None, None if car else live.id)
        self.timing.retime(live)
        return self.fuel_out(live.id)

    def refill(self, session_id: str, added: float | None, to_full: bool, at: float | None) -> dict[str, Any]:
        """The crew's word after a stop ("filled 40 l", or to full): logged and applied."""
        live = self.cache.get(session_id)
        if added is None and not to_full:
            raise InvalidInput("say how much went in (added), or that the tank was filled to full (to_full)",
                               field="added")
        at = self.clock() if at is None else at
        payload = {"added": added, "to_full": to_full, "at": at}
        with live.lock:
            timing = self.timing.processors(live)
            if timing.pit is not None:
                try:
                    outputs = timing.pit.refill(at, added, to_full, FUEL_RULE_ID in live.open_alerts)
                except ValueError as exc:
                    raise InvalidInput(str(exc), field="added") from None
                self.timing.apply(live, outputs)
        self.events.log(live.id, FUEL_CREW, payload, timestamp=at).get()
        return self.fuel_out(live.id)

    # ------------------------------------------------------------ team view
    def team_snapshot(self, session_ids: set[str] | None = None) -> dict[str, Any]:
        """Every active session (or those of ``session_ids`` still active) as a TeamCar row (TeamOut)."""
        now = self.clock()
        lives = [live for live in self.cache.entries() if live.status == "active"]
        best = min((live.row["best_lap_s"] for live in lives if live.row.get("best_lap_s") is not None), default=None)
        cars = [self.team_row(live, now, best) for live in lives if session_ids is None or live.id in session_ids]
        cars.sort(key=lambda car: (car["car_id"] or "", car["session_id"]))
        return {"team": TEAM, "generated_at": now, "team_best_lap_s": best, "cars": cars}

    def team_row(self, live: LiveSession, now: float, team_best: float | None) -> dict[str, Any]:
        """One car of the team view, from memory (TeamCar)."""
        with live.lock:
            row = dict(live.row)
            timing = live.timing
            pit = timing.pit if timing is not None else None
            delta = timing.delta if timing is not None else None
            last_update = live.last_update
            lora_at = live.lora_at
            position = _position(live.latest)
            alerts = [{"rule_id": rule_id, "name": a.get("name"), "severity": a.get("severity")}
                      for rule_id, a in live.open_alerts.items()]
            driver_id, stint, limits, fuel, pit_out, last_lap = None, None, [], None, None, None
            if pit is not None:
                stints = pit.stints()
                current = stints[-1] if stints else None
                driver_id = current.driver_id if current else None
                limits = pit.limits(now)
                if current is not None:
                    own = next((s for s in limits if s["rule"] == "max_stint" and s["subject"] ==
                                f"stint {current.number}"), None)
                    stint = {"number": current.number, "start_t": current.start_t,
                             "elapsed_s": _round(current.duration(now)), "limit_s": own["limit_s"] if own else None,
                             "left_s": _round(own["left_s"]) if own else None}
                estimate = pit.fuel.estimate()
                percent = estimate.level if estimate.unit == "%" else (
                    estimate.level / pit.fuel.tank_l * 100 if estimate.level is not None else None)
                fuel = {"unit": estimate.unit, "level": _round(estimate.level), "percent": _round(percent, 1),
                        "per_lap": _round(estimate.per_lap), "laps_left": _round(estimate.laps_left, 1),
                        "settled": estimate.settled}
                stops = pit.detector.stops
                pit_out = {"status": pit.detector.status, "running_s": _round(pit.detector.running_stop_time()),
                           "stops": len(stops), "lane": pit.has_lane,
                           "last_stop": stops[-1].to_dict() if stops else None}
                last_lap = pit.last_lap
        name = self._names.get((row.get("car_id"), driver_id)) if driver_id is not None else None
        best_lap = row.get("best_lap_s")
        main_age = None if last_update is None else max(0.0, now - last_update)
        lora_age = None if lora_at is None else max(0.0, now - lora_at)
        if main_age is not None and main_age <= LINK_STALE_S:
            state = "live"
        elif lora_age is not None and lora_age <= LORA_STALE_S:
            state = "lora"
        else:
            state = "stale" if main_age is not None or lora_age is not None else "none"
        return {
            "session_id": row["id"], "car_id": row.get("car_id"), "name": row.get("name") or "",
            "track_id": row.get("track_id"),
            "driver": {"driver_id": driver_id, "name": name} if driver_id is not None else None,
            "laps": row.get("laps") or 0,
            "last_lap_s": _round(last_lap["lap_time"]) if last_lap else None,
            "last_lap": last_lap["lap"] if last_lap else None,
            "best_lap_s": _round(best_lap),
            "delta_s": _round(delta.get("delta")) if delta else None,
            "gap_to_best_s": _round(best_lap - team_best) if best_lap is not None and team_best is not None else None,
            "stint": stint, "limits": limits, "fuel": fuel, "pit": pit_out,
            "link": {"state": state, "age_s": _round(main_age, 1), "lora_age_s": _round(lora_age, 1)},
            "position": position,
            "alerts": alerts,
        }
