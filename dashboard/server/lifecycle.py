"""The session lifecycle: status transitions as a table, applied by one service.

    created ──start──► active ──stop──► stopped ──start──► active …
    created | active | stopped ──end──► ended          active ──(idle)──► expired

One active session per car (the database's partial unique index decides across processes).
A transition may carry a client ``record_id``: the same record_id again answers the first answer
and logs nothing. The car's monitor is told (``command``) when the pit starts, stops or ends its
session; a monitor that reconnects learns the status from its ``session.start`` ack: the pit's
decision stands (a stopped session is not started again by the car).
"""
from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import Any, Callable

from sqlalchemy import Connection

from dashboard.errors import Conflict, NotFound, Unauthorized
from dashboard.server.changes import Change
from dashboard.server.live import FINAL_STATUSES, LiveSession
from dashboard.server.service import Service, Shared
from dashboard.server.timing import TimingService
from dashboard.server.tracks import check_track_id, track_named

log = logging.getLogger(__name__)

LINK_GAP_EVENT_S = 10.0  # activity resuming after a silence this long is logged as a link gap
ACTIVITY_SAVE_S = 1.0  # last activity is saved this often at most (frames carry it anyway)


@dataclass(frozen=True)
class Transition:
    """One action: the statuses it applies to, the status it leads to, its event, its command to the car."""

    action: str
    allowed_from: frozenset[str]
    to: str
    event_type: str
    command: str | None  # what the car's monitor is told
    unchanged_in: frozenset[str]  # already there: the answer is the session as it is, nothing logged


TRANSITIONS: dict[str, Transition] = {t.action: t for t in (
    Transition("start", frozenset({"created", "stopped"}), "active", "session.started", "start",
               frozenset({"active"})),
    Transition("stop", frozenset({"active"}), "stopped", "session.stopped", "stop", frozenset({"stopped"})),
    Transition("end", frozenset({"created", "active", "stopped"}), "ended", "session.ended", "end",
               frozenset(FINAL_STATUSES)),
    Transition("expire", frozenset({"active"}), "expired", "session.expired", None, frozenset(FINAL_STATUSES)),
)}


def plan(action: str, status: str) -> Transition | None:
    """The transition ``action`` makes from ``status``; None when already there; Conflict when not allowed."""
    transition = TRANSITIONS[action]
    if status in transition.unchanged_in:
        return None
    if status not in transition.allowed_from:
        raise Conflict(f"cannot {action} a session that is {status}", field="status", status=status)
    return transition


def changed_fields(transition: Transition, row: dict[str, Any], now: float, reason: str) -> dict[str, Any]:
    """The columns a transition sets besides the status."""
    fields: dict[str, Any] = {"status": transition.to, "last_activity_at": now}
    if transition.to == "active":
        fields.update(started_at=row["started_at"] or now, stopped_at=None)
    elif transition.to == "stopped":
        fields["stopped_at"] = now
    else:
        fields.update(ended_at=now, end_reason=reason)
    return fields


class LifecycleService(Service):
    """Creates sessions, moves them through the table above, keeps them alive, expires the idle ones."""

    def __init__(self, shared: Shared, timing: TimingService, describe: Callable[..., dict[str, Any]],
                 idle_s: float = 300.0) -> None:
        super().__init__(shared)
        self.timing = timing
        self.describe = describe  # (live, row=None) -> SessionOut
        self.idle_s = idle_s

    # ---------------------------------------------------------------- create
    def create(self, car_id: str | None = None, name: str = "", driver: str | None = None,
               track: str | None = None, track_id: str | None = None) -> LiveSession:
        """A new session in status ``created``; timed on ``track_id``, or on the stored track named ``track``.

        A ``track`` no stored track is called stays free text (the session is not timed until one is set).
        """
        if track_id is not None:
            track_id = check_track_id(track_id)
            stored = self.store.get_track(track_id)
            if stored is None:
                raise NotFound(f"no track {track_id}", field="track_id")
            track = track or stored["name"]
        elif track:
            named = track_named(self.store.tracks(), track)
            track_id = named["id"] if named is not None else None
        now = self.clock()
        row = {"id": str(uuid.uuid4()), "car_id": car_id, "name": name, "driver": driver, "track": track,
               "status": "created", "created_at": now, "started_at": None, "ended_at": None,
               "last_activity_at": now, "end_reason": None, "frame_count": 0, "last_seq": None,
               "track_id": track_id, "stopped_at": None, "laps": 0, "best_lap_s": None}
        event = self.events.entry("session.created", {"car_id": car_id})

        def insert(conn: Connection) -> dict[str, Any] | None:
            self.store.insert_session(row, conn=conn)
            return self.store.add_event(row["id"], event, conn=conn)

        stored = self.writer.call(insert)
        live = self.cache.add(row)
        self.events.tell(stored)
        self.bus.tell(Change.SESSION, self.describe(live))
        log.info("session %s created for car %s", row["id"], car_id)
        return live

    # ----------------------------------------------------------- transitions
    def apply(self, session_id: str, action: str, record_id: str | None = None, reason: str = "ended",
              live: LiveSession | None = None) -> dict[str, Any]:
        """Make a transition; the session as it is afterwards (SessionOut)."""
        live = live or self.cache.get(session_id)
        with live.changing:
            replay = self._replay(record_id, TRANSITIONS[action].event_type, live.id)
            if replay is not None:
                return replay
            with live.lock:
                transition = plan(action, live.status)
                if transition is None:
                    return self.describe(live)
                now = self.clock()
                before = live.status
                fields = changed_fields(transition, live.row, now, reason)
                after = {**live.row, **fields}
            car = after["car_id"]
            if transition.to == "active" and car:
                self._check_one_active(car, live.id)
            response = self.describe(live, row=after)
            event = self.events.entry(transition.event_type, {"from": before, "to": transition.to,
                                                              "response": response}, record_id)
            stored = self.writer.call(lambda conn: self.store.transition(live.id, fields, event, conn=conn))
            if stored is None:  # refused by the database: say why
                if transition.to == "active" and car:
                    self._check_one_active(car, live.id)
                raise Conflict("record_id already used for another call", field="record_id")
            with live.lock:
                live.row.update(fields)
                if transition.to in FINAL_STATUSES:
                    self.timing.finish(live)
            if transition.to in FINAL_STATUSES:
                self.writer.barrier()  # the in-lap is stored when the caller reads the laps
            self.events.tell(stored)
            self.bus.tell(Change.SESSION, response)
            if transition.command and car:
                self.bus.tell(Change.COMMAND, {"car_id": car, "action": transition.command, "session_id": live.id})
            log.info("session %s: %s -> %s", live.id, before, transition.to)
            return response

    def _check_one_active(self, car_id: str, session_id: str) -> None:
        other = self.store.active_session_for_car(car_id)
        if other is not None and other["id"] != session_id:
            raise Conflict("car already has an active session", field="car_id", session_id=other["id"])

    def _replay(self, record_id: str | None, event_type: str, session_id: str | None = None) -> dict[str, Any] | None:
        """The first answer to a call with this record_id, if there was one (for this session)."""
        if record_id is None:
            return None
        previous = self.store.event_by_record(record_id, [event_type])
        if previous is None or (session_id is not None and previous["session_id"] != session_id):
            return None
        return previous["payload"].get("response")

    # ------------------------------------------------------------- the car
    def attach_car(self, car_id: str, record_id: str | None = None, session_id: str | None = None,
                   name: str = "", driver: str | None = None, track: str | None = None,
                   track_id: str | None = None) -> LiveSession:
        """The session a car's monitor streams to; its processors are made ready now, not on its first frame."""
        live = self._attach_car(car_id, record_id, session_id, name, driver, track, track_id)
        with live.lock:
            self.timing.processors(live)
        return live

    def _attach_car(self, car_id: str, record_id: str | None = None, session_id: str | None = None,
                    name: str = "", driver: str | None = None, track: str | None = None,
                    track_id: str | None = None) -> LiveSession:
        """The session a car's monitor streams to (its ``session.start``), as the lifecycle has it.

        The record_id's session, or the given one, or the car's active one, or its stopped one, else
        a new session, started. A stopped session stays stopped (the car pauses until the pit starts it);
        a created one is started. When the given (or record_id's) session has ended and the pit has
        since started another for the car, that one is the answer: the start the car missed while
        away. Otherwise an ended or expired session is answered as it is (the car decides).
        """
        replay = self._replay(record_id, "session.started")
        if replay is not None and replay.get("car_id") == car_id:
            session_id = replay["session_id"]
        if session_id is not None:
            live = self.cache.get(session_id)
            if live.row["car_id"] not in (None, car_id):
                raise Unauthorized("that session belongs to another car", field="session_id")
            if live.status == "created":
                self.apply(live.id, "start", record_id, live=live)
            if live.status not in FINAL_STATUSES:
                return live
            return self._current_for_car(car_id) or live
        current = self._current_for_car(car_id)
        if current is not None:
            return current
        live = self.create(car_id=car_id, name=name, driver=driver, track=track, track_id=track_id)
        self.apply(live.id, "start", record_id, live=live)
        return live

    def _current_for_car(self, car_id: str) -> LiveSession | None:
        """The car's active session, else its stopped one, else None."""
        for status in ("active", "stopped"):
            row = self.store.session_for_car(car_id, (status,))
            if row is not None:
                return self.cache.get(row["id"])
        return None

    def legacy_start(self, car_id: str, record_id: str | None = None, name: str = "", driver: str | None = None,
                     track: str | None = None) -> dict[str, Any]:
        """``POST /session_manager/sessions.start``: a new session for the car, started.

        The same record_id again answers the first answer; another record_id while the car has an
        active session is a Conflict naming it (the original design: no duplicate active session).
        """
        replay = self._replay(record_id, "session.started")
        if replay is not None and replay.get("car_id") == car_id:
            return replay
        self._check_one_active(car_id, "")
        live = self.create(car_id=car_id, name=name, driver=driver, track=track)
        return self.apply(live.id, "start", record_id, live=live)

    # ------------------------------------------------------------ activity
    def touch(self, live: LiveSession, persist: bool = True) -> None:
        """The session is alive now (caller holds its lock); saved at most once a second."""
        now = self.clock()
        last = live.row["last_activity_at"]
        if last is not None and live.status == "active" and now - last > LINK_GAP_EVENT_S:
            self.events.log(live.id, "link.gap", {"gap_s": round(now - last, 3)})
        live.row["last_activity_at"] = now
        if persist and now - live.activity_saved_at >= ACTIVITY_SAVE_S:
            live.activity_saved_at = now
            sid = live.id
            self.writer.submit(lambda conn: self.store.update_session(sid, last_activity_at=now, conn=conn),
                               background=True)

    def heartbeat(self, session_id: str) -> dict[str, Any]:
        """``POST .../heartbeat``: the session is alive (keeps it from expiring); the session (SessionOut)."""
        live = self.cache.get(session_id)
        with live.lock:
            self.touch(live)
        return self.describe(live)

    def expire_idle(self) -> list[str]:
        """Expire every active session idle longer than ``idle_s``; their ids."""
        cutoff = self.clock() - self.idle_s
        if self.cache.shared:  # another process may hold the session's activity: decide on the stored rows
            candidates = [self.cache.get(row["id"]) for row in self.store.sessions_with_status("active")]
        else:
            candidates = [live for live in self.cache.entries() if live.status == "active"]
        expired = []
        for live in candidates:
            if live.status == "active" and (live.row["last_activity_at"] or live.row["created_at"]) < cutoff:
                try:
                    self.apply(live.id, "expire", reason="idle", live=live)
                except Conflict:
                    continue  # changed meanwhile (another process, the pit)
                expired.append(live.id)
        return expired
