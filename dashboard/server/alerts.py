"""Alerts of the sessions: which rules apply where, the alerts raised, cleared and acknowledged.

The rules engine is pure (``dashboard.telemetry.alerts``) and runs in each session's processors
(``timing.py``); this service scopes the rules (the defaults, overridden by stored rules for every
car, then the car's, then the session's), stores what the engine raises and clears through the
single writer without waiting for it, and tells viewers once stored.
"""
from __future__ import annotations

from typing import Any

from dashboard.errors import NotFound
from dashboard.server.changes import Change
from dashboard.server.live import LiveSession
from dashboard.server.service import Service, Shared
from dashboard.server.views import public_alert, public_event
from dashboard.server.writer import Ticket
from dashboard.telemetry.alerts import ALERT_CLEARED, ALERT_RAISED, DEFAULT_RULES, AlertRule, parse_rule

SCOPE_RANK = {"all": 0, "car": 1, "session": 2}


def rule_key(rule_id: str, car_id: str | None, session_id: str | None = None) -> str:
    """Primary key of a stored rule: one per rule id and scope (a session, a car, or ``*`` for every car)."""
    scope = f"session:{session_id}" if session_id else car_id or "*"
    return f"{scope}/{rule_id}"


class AlertService(Service):
    """Rules in force per car and session; alerts stored, told and acknowledged."""

    def __init__(self, shared: Shared) -> None:
        super().__init__(shared)
        self.timing: Any = None  # the TimingService, set once both exist (each needs the other)

    # --------------------------------------------------------------- rules
    def rules_with_source(self, car_id: str | None, session_id: str | None = None) -> list[tuple[AlertRule, str]]:
        """The rules in force, each with where it comes from: default, all, car or session."""
        rules = {rule.id: (rule, "default") for rule in DEFAULT_RULES}
        stored = [(row, "session" if row["session_id"] else "car" if row["car_id"] else "all")
                  for row in self.store.alert_rules(car_id, session_id)]
        for row, source in sorted(stored, key=lambda pair: SCOPE_RANK[pair[1]]):
            rule = parse_rule(row["rule"])
            rules[rule.id] = (rule, source)
        return list(rules.values())

    def rules(self, car_id: str | None, session_id: str | None = None) -> list[AlertRule]:
        """The rules in force for a car's session."""
        return [rule for rule, _source in self.rules_with_source(car_id, session_id)]

    def save_rule(self, rule: AlertRule, car_id: str | None, session_id: str | None = None) -> dict[str, Any]:
        """Store a rule for one session, one car or every car, and apply it to the live sessions concerned."""
        if session_id is not None:
            session_id = self.cache.get(session_id).id
            car_id = None
        key = rule_key(rule.id, car_id, session_id)
        self.writer.call(lambda conn: self.store.save_alert_rule(key, None if session_id else car_id,
                                                                 rule.model_dump(), session_id, conn=conn))
        self._apply(car_id, session_id)
        source = "session" if session_id else "car" if car_id else "all"
        return {"car_id": None if session_id else car_id, "session_id": session_id, "rule": rule.model_dump(),
                "source": source}

    def delete_rule(self, rule_id: str, car_id: str | None, session_id: str | None = None) -> bool:
        """Forget a stored rule (the one of the wider scope, or the default, applies again)."""
        if session_id is not None:
            session_id = self.cache.get(session_id).id
        key = rule_key(rule_id, car_id, session_id)
        deleted = self.writer.call(lambda conn: self.store.delete_alert_rule(key, conn=conn))
        if deleted:
            self._apply(car_id, session_id)
        return deleted

    def _apply(self, car_id: str | None, session_id: str | None) -> None:
        for live in self.cache.entries():
            if live.timing is None or (session_id is not None and live.id != session_id):
                continue
            if session_id is None and car_id is not None and live.row["car_id"] != car_id:
                continue
            rules = self.rules(live.row["car_id"], live.id)
            with live.lock:
                self.timing.set_rules(live, rules)

    def tick(self) -> None:
        """Let time-based rules (the silent link) fire for every active session in memory."""
        now = self.clock()
        for live in self.cache.entries():
            if live.status == "active" and live.timing is not None:
                with live.lock:
                    self.timing.tick(live, now)

    # -------------------------------------------------------------- alerts
    def on_alert(self, live: LiveSession, payload: dict[str, Any]) -> None:
        """The engine raised or cleared an alert (caller holds the session's lock): store it, tell once stored."""
        sid, rule_id = live.id, payload["rule_id"]
        if payload["kind"] == ALERT_RAISED:
            lat, lon = (live.latest.get(name, (None,))[0] for name in ("lat", "lon"))
            raised = {**payload, "lat": lat, "lon": lon}  # the lap it fired in comes with it (timing.py)
            alert: dict[str, Any] = {"id": None, "name": payload["name"], "severity": payload["severity"]}
            live.open_alerts[rule_id] = alert

            def store_raise(conn: Any) -> tuple[dict[str, Any], dict[str, Any] | None]:
                alert["id"] = self.store.add_alert(sid, rule_id, raised, payload["t"], conn=conn)
                event = self.events.entry(ALERT_RAISED, {**raised, "alert_id": alert["id"]})
                return (self.store.get_alert(sid, alert["id"], conn=conn),
                        self.store.add_event(sid, event, conn=conn))

            self.writer.submit(store_raise, self._told, background=True)
            return
        alert = live.open_alerts.pop(rule_id, None)
        if alert is None:
            return

        def store_clear(conn: Any) -> tuple[dict[str, Any], dict[str, Any] | None] | None:
            if alert["id"] is None:  # its raise was never stored
                return None
            self.store.update_alert(alert["id"], cleared_t=payload["t"], conn=conn)
            cleared = {k: v for k, v in payload.items() if k != "lap"}
            event = self.events.entry(ALERT_CLEARED, {**cleared, "alert_id": alert["id"]})
            return (self.store.get_alert(sid, alert["id"], conn=conn), self.store.add_event(sid, event, conn=conn))

        self.writer.submit(store_clear, self._told, background=True)

    def _told(self, ticket: Ticket) -> None:
        if ticket.error is None and ticket.result is not None:
            row, event = ticket.result
            self.bus.tell(Change.ALERT, public_alert(row))
            if event is not None:
                self.bus.tell(Change.EVENT, public_event(event))

    def alerts(self, session_id: str) -> list[dict[str, Any]]:
        """Every alert of the session, oldest first (AlertOut each)."""
        live = self.cache.get(session_id)
        return [public_alert(row) for row in self.store.alerts(live.id)]

    def on_screen(self, live: LiveSession) -> list[dict[str, Any]]:
        """The session's alerts still on screen: active, or cleared and not yet acknowledged."""
        return [a for a in map(public_alert, self.store.alerts(live.id)) if a["on_screen"]]

    def ack(self, session_id: str, alert_id: int, by: str) -> dict[str, Any]:
        """Someone acknowledged an alert: it may leave the screen once cleared. Acknowledging twice keeps the first."""
        sid = self.cache.get(session_id).id

        def acknowledge(conn: Any) -> tuple[dict[str, Any], dict[str, Any] | None]:
            row = self.store.get_alert(sid, alert_id, conn=conn)
            if row is None:
                raise NotFound(f"no alert {alert_id} in this session", field="alert_id")
            if row["acked_at"] is not None:
                return row, None
            self.store.update_alert(alert_id, acked_by=by, acked_at=self.clock(), conn=conn)
            event = self.events.entry("alert.acked", {"alert_id": alert_id, "rule_id": row["rule_id"], "by": by})
            return self.store.get_alert(sid, alert_id, conn=conn), self.store.add_event(sid, event, conn=conn)

        row, event = self.writer.call(acknowledge)
        out = public_alert(row)
        if event is not None:
            self.bus.tell(Change.ALERT, out)
            self.bus.tell(Change.EVENT, public_event(event))
        return out
