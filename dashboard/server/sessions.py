"""SessionManager: the lifecycle rules, the latest values and the statistics of every session.

``SessionManager()`` with no arguments keeps everything in memory (an
in-memory SQLite database, so both modes share one code path);
``SessionManager(store)`` persists to that store and writes frames through
the single FrameWriter. Every public method is safe to call from many threads
or greenlets at once. Whatever changes is told to the listeners (the
Socket.IO hub), so this module does no network I/O.
"""
from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

from dashboard.errors import Conflict, FrameError, InvalidInput, NotFound
from dashboard.server.store import FrameWrite, Store
from dashboard.server.timing import SessionTiming
from dashboard.server.writer import FrameWriter, Ticket
from dashboard.telemetry.alerts import ALERT_CLEARED, ALERT_RAISED, DEFAULT_RULES, AlertRule, parse_rule
from dashboard.telemetry.channels import get_channel, stale_after
from dashboard.telemetry.frames import Frame, frame_seq, parse_frame
from dashboard.telemetry.laps import ORLANDO_KART_CENTER, Track
from dashboard.telemetry.lora import car_hash as hash_of
from dashboard.telemetry.stats import FrameStats

log = logging.getLogger(__name__)

LINK_GAP_EVENT_S = 10.0  # telemetry resuming after a silence this long is logged as a link gap
RECENT_MAX_FRAMES = 6000  # 60 s at 100 Hz: a hard cap on each session's in-memory recent history
# (it is also trimmed to recent_window_s: at 20 Hz the count cap alone kept 5 min, ~15 MB per session)
LIVE_STATUSES = ("created", "active", "stopped")
ACTIVITY_SAVE_S = 1.0  # last activity is saved this often at most: a transaction per batch halved ingest
FINAL_STATUSES = ("ended", "expired")

Listener = Callable[[str, dict[str, Any]], None]

# Tracks every installation has: the circuit of the bundled recordings (the demo laps it).
ORLANDO_TRACK_ID = str(uuid.uuid5(uuid.NAMESPACE_URL, "race-dashboard:track:orlando-kart-center"))
BUILTIN_TRACKS = {ORLANDO_TRACK_ID: ORLANDO_KART_CENTER}


def iso(ts: float | None) -> str | None:
    """Epoch seconds as ISO 8601 UTC, or None."""
    return None if ts is None else datetime.fromtimestamp(ts, timezone.utc).isoformat()


def new_session_id() -> str:
    """A fresh UUID4 session id."""
    return str(uuid.uuid4())


def check_session_id(session_id: Any) -> str:
    """The id if it is a UUID string, else NotFound naming session_id (no such session can exist)."""
    try:
        return str(uuid.UUID(str(session_id))) if isinstance(session_id, str) else _bad_id()
    except ValueError:
        return _bad_id()


def _bad_id() -> str:
    raise NotFound("no such session: session_id must be a UUID", field="session_id")


@dataclass
class _Live:
    """What the manager holds in memory for one session."""

    row: dict[str, Any]
    setup: dict[str, Any] | None = None
    latest: dict[str, tuple[float | None, float]] = field(default_factory=dict)  # name -> (value, t)
    last_update: float | None = None
    recent: deque = field(default_factory=lambda: deque(maxlen=RECENT_MAX_FRAMES))
    pending: set[int] = field(default_factory=set)
    monitor: dict[str, Any] = field(default_factory=lambda: {"online": False})
    timing: SessionTiming | None = None
    open_alerts: dict[str, int] = field(default_factory=dict)  # rule id -> id of its raised alert
    activity_saved_at: float = 0.0  # when last_activity_at was last written by _touch
    stats: FrameStats = field(default_factory=FrameStats)


@dataclass
class IngestResult:
    """What became of one telemetry batch."""

    accepted: list[dict[str, Any]]
    rejected: list[dict[str, Any]]
    duplicates: int
    acked_seq: int | None
    ticket: Ticket | None


class SessionManager:
    """Sessions keyed by UUID4: metadata, setup, latest telemetry, frame history and event log."""

    def __init__(self, store: Store | None = None, idle_s: float = 300.0, recent_window_s: float = 60.0,
                 writer_batch_max: int = 2000, clock: Callable[[], float] = time.time,
                 shared: bool = False) -> None:
        self.persistent = store is not None
        self.shared = shared  # other server processes write to the same store: re-read before answering
        self.store = store if store is not None else Store.from_url("sqlite://")
        self.idle_s = idle_s
        self.recent_window_s = recent_window_s
        self.clock = clock
        self.writer = FrameWriter(self.store, writer_batch_max) if self.persistent else None
        self.listeners: list[Listener] = []
        self.lock = threading.RLock()
        self._live: dict[str, _Live] = {}
        if self.writer is not None:
            self.writer.start()
            for row in self.store.sessions_with_status("active"):
                self._load(row["id"])

    def close(self) -> None:
        """Write what is queued and stop the writer (safe to call twice)."""
        if self.writer is not None:
            self.writer.stop()

    # ------------------------------------------------------------ plumbing
    def _notify(self, kind: str, payload: dict[str, Any]) -> None:
        for listener in list(self.listeners):
            try:
                listener(kind, payload)
            except Exception:  # noqa: BLE001 - a failing listener must not undo a stored change
                log.exception("listener failed on %s", kind)

    def _load(self, session_id: str) -> _Live | None:
        live = self._live.get(session_id)
        if live is not None:
            return live
        row = self.store.get_session(session_id)
        if row is None:
            return None
        live = _Live(row=row, setup=self.store.latest_setup(session_id), stats=FrameStats.from_dict(row.get("stats")))
        for frame in self.store.last_frames(session_id, RECENT_MAX_FRAMES):
            self._remember(live, frame)
        self._live[session_id] = live
        return live

    def _get(self, session_id: Any, fresh: bool = True) -> _Live:
        sid = check_session_id(session_id)
        live = self._load(sid)
        if live is not None and fresh and self.shared:
            live = self._refresh(live)
        if live is None:
            raise NotFound(f"no session {sid}", field="session_id")
        return live

    def _refresh(self, live: _Live) -> _Live | None:
        """Catch up with what other server processes stored: status, setup, newer frames."""
        sid = live.row["id"]
        row = self.store.get_session(sid)
        if row is None:
            self._live.pop(sid, None)
            return None
        mine = live.row["last_seq"]
        live.row.update(row)
        if mine is not None and (row["last_seq"] is None or mine > row["last_seq"]):
            live.row["last_seq"] = mine  # frames of ours still on their way to the database
        live.setup = self.store.latest_setup(sid)
        known = max((f["seq"] for f in live.recent), default=-1)
        newer = self.store.frames(sid, after_seq=known, limit=RECENT_MAX_FRAMES)
        if len(newer) == RECENT_MAX_FRAMES:  # far behind: only the latest matter
            newer = self.store.last_frames(sid, RECENT_MAX_FRAMES)
        for frame in newer:
            if frame["seq"] not in live.pending:
                self._remember(live, frame)
        return live

    def _remember(self, live: _Live, frame: dict[str, Any]) -> None:
        """Keep a frame in the recent history (the last ``recent_window_s``) and the latest values."""
        recent = live.recent
        recent.append(frame)
        while recent and recent[0]["t"] < frame["t"] - self.recent_window_s:  # bounded by time, not only count
            recent.popleft()
        for name, value in frame["channels"].items():
            old = live.latest.get(name)
            if old is None or frame["t"] >= old[1]:
                live.latest[name] = (value, frame["t"])
        live.last_update = max(live.last_update or 0.0, frame["received_at"])

    def _event(self, session_id: str, event_type: str, payload: dict[str, Any], record_id: str | None = None,
               timestamp: float | None = None) -> dict[str, Any]:
        now = self.clock()
        return {"record_id": record_id, "event_type": event_type, "timestamp": timestamp or now,
                "payload": payload, "received_at": now}

    def _log_event(self, session_id: str, event_type: str, payload: dict[str, Any],
                   record_id: str | None = None) -> dict[str, Any] | None:
        stored = self.store.add_event(session_id, self._event(session_id, event_type, payload, record_id))
        if stored is not None:
            self._notify("event", public_event(stored))
        return stored

    def public(self, live: _Live) -> dict[str, Any]:
        """A session as the API and viewers see it (the SessionOut shape)."""
        row, now = live.row, self.clock()
        start = row["started_at"] or row["created_at"]
        end = row["ended_at"] or (now if row["status"] == "active" else row["last_activity_at"] or start)
        duration = max(0.0, end - start)
        frames = row["frame_count"] or 0
        setup = live.setup
        return {
            "session_id": row["id"], "car_id": row["car_id"], "name": row["name"], "driver": row["driver"],
            "track": row["track"], "status": row["status"], "created_at": iso(row["created_at"]),
            "started_at": iso(row["started_at"]), "ended_at": iso(row["ended_at"]),
            "last_activity_at": iso(row["last_activity_at"]), "end_reason": row["end_reason"],
            "setup": setup["setup"] if setup else None,
            "setup_timestamp": iso(setup["timestamp"]) if setup else None,
            "setup_version": setup["version"] if setup else None,
            "telemetry": {name: value for name, (value, _t) in live.latest.items()},
            "last_update": iso(live.last_update or (row["last_activity_at"] if frames else None)),
            "track_id": row.get("track_id"),
            "monitor_online": bool(live.monitor.get("online")),
            "monitor": dict(live.monitor),
            "stats": {"frames": frames, "last_seq": row["last_seq"], "duration_s": round(duration, 3),
                      "update_rate_hz": round(frames / duration, 3) if duration > 0 else 0.0,
                      **live.stats.public(), **self._lap_stats(row["id"])},
        }

    # ----------------------------------------------------- the original API
    def create_session(self, car_id: str | None = None, name: str = "", driver: str | None = None,
                       track: str | None = None, track_id: str | None = None) -> str:
        """Create a session in status ``created``; returns its UUID4."""
        now = self.clock()
        row = {"id": new_session_id(), "car_id": car_id, "name": name, "driver": driver, "track": track,
               "status": "created", "created_at": now, "started_at": None, "ended_at": None,
               "last_activity_at": now, "end_reason": None, "frame_count": 0, "last_seq": None,
               "track_id": track_id}
        with self.lock:
            if track_id is not None and self.store.get_track(track_id) is None:
                raise NotFound(f"no track {track_id}", field="track_id")
            self.store.insert_session(row)
            self._live[row["id"]] = _Live(row=dict(row))
            self._log_event(row["id"], "session.created", {"car_id": car_id})
            self._notify("session", self.public(self._live[row["id"]]))
        log.info("session %s created for car %s", row["id"], car_id)
        return row["id"]

    def get_session(self, session_id: str) -> dict[str, Any] | None:
        """The session as a dict, or None for an unknown (or malformed) id."""
        with self.lock:
            try:
                return self.public(self._get(session_id))
            except (NotFound, InvalidInput):
                return None

    def session_owner(self, session_id: str) -> tuple[str, str | None]:
        """(session id, car id) of a session; NotFound for an unknown id. Reads memory only once loaded."""
        with self.lock:
            live = self._get(session_id, fresh=False)
            return live.row["id"], live.row["car_id"]

    def session(self, session_id: str) -> dict[str, Any]:
        """The session as a dict; NotFound (404) for an unknown id."""
        with self.lock:
            return self.public(self._get(session_id))

    def update_setup(self, session_id: str, setup: dict[str, Any], timestamp: float | None = None) -> dict[str, Any]:
        """Store a new setup version; returns it."""
        if not isinstance(setup, dict):
            raise InvalidInput("setup must be a JSON object", field="setup")
        with self.lock:
            live = self._get(session_id)
            now = self.clock()
            ts = float(timestamp) if timestamp is not None else now
            event = self._event(live.row["id"], "setup.changed", {"keys": sorted(setup)[:50]}, timestamp=ts)
            version = self.store.add_setup(live.row["id"], setup, ts, now, event)
            stored_event = version.pop("event")
            live.setup = version
            if live.timing is not None:
                live.timing.set_setup_version(ts, version["version"])
            out = public_setup(version)
            self._notify("setup", out)
            self._notify("event", public_event(stored_event))
        return out

    def update_telemetry(self, session_id: str, telemetry: dict[str, Any]) -> IngestResult:
        """Record one set of channel values now, as the next frame of the session."""
        with self.lock:
            live = self._get(session_id)
            seq = (live.row["last_seq"] if live.row["last_seq"] is not None else -1) + 1
            result = self.ingest(session_id, [{"seq": seq, "t": self.clock(), "channels": telemetry}])
        if result.rejected:
            err = result.rejected[0]["error"]
            raise InvalidInput(err["message"], field=err.get("field"))
        return result

    def delete_session(self, session_id: str) -> bool:
        """Delete a session with its frames, setups and events; False if unknown."""
        with self.lock:
            sid = check_session_id(session_id)
            self._live.pop(sid, None)
            deleted = self.store.delete_session(sid)
        if deleted:
            log.info("session %s deleted", sid)
            self._notify("deleted", {"session_id": sid})
        return deleted

    def get_active_sessions(self) -> list[str]:
        """Ids of every session in status active."""
        with self.lock:
            return [row["id"] for row in self.store.sessions_with_status("active")]

    # ----------------------------------------------------------- lifecycle
    def _replay(self, record_id: str | None, event_type: str, session_id: str | None = None) -> dict | None:
        if record_id is None:
            return None
        previous = self.store.event_by_record(record_id, [event_type])
        if previous is None or (session_id is not None and previous["session_id"] != session_id):
            return None
        return previous["payload"].get("response")

    def _transition(self, live: _Live, status: str, event_type: str, record_id: str | None,
                    **fields: Any) -> dict[str, Any]:
        now = self.clock()
        old_row = dict(live.row)
        old_status = live.row["status"]
        changes = {"status": status, "last_activity_at": now, **fields}
        live.row.update(changes)
        response = self.public(live)
        event = self._event(live.row["id"], event_type, {"from": old_status, "to": status,
                                                          "response": response}, record_id)
        stored = self.store.transition(live.row["id"], changes, event)
        if stored is None:  # refused by the database: undo in memory and say why
            live.row.clear()
            live.row.update(old_row)
            other = self.store.active_session_for_car(live.row["car_id"]) if live.row["car_id"] else None
            if status == "active" and other is not None and other["id"] != live.row["id"]:
                raise Conflict("car already has an active session", field="car_id", session_id=other["id"])
            raise Conflict("record_id already used for another call", field="record_id")
        self._notify("event", public_event(stored))
        self._notify("session", response)
        log.info("session %s: %s -> %s", live.row["id"], old_status, status)
        return response

    def start(self, session_id: str, record_id: str | None = None) -> dict[str, Any]:
        """created|stopped → active; 409 if the car already has another active session."""
        with self.lock:
            live = self._get(session_id)
            replay = self._replay(record_id, "session.started", live.row["id"])
            if replay is not None:
                return replay
            status = live.row["status"]
            if status == "active":
                return self.public(live)
            if status in FINAL_STATUSES:
                raise Conflict(f"session is {status}", field="status")
            car = live.row["car_id"]
            if car:
                other = self.store.active_session_for_car(car)
                if other is not None and other["id"] != live.row["id"]:
                    raise Conflict("car already has an active session", field="car_id", session_id=other["id"])
            response = self._transition(live, "active", "session.started", record_id,
                                        started_at=live.row["started_at"] or self.clock())
            if car:
                self._notify("command", {"car_id": car, "action": "start", "session_id": live.row["id"]})
            return response

    def stop(self, session_id: str, record_id: str | None = None) -> dict[str, Any]:
        """active → stopped (collection paused; may start again)."""
        with self.lock:
            live = self._get(session_id)
            replay = self._replay(record_id, "session.stopped", live.row["id"])
            if replay is not None:
                return replay
            status = live.row["status"]
            if status == "stopped":
                return self.public(live)
            if status != "active":
                raise Conflict(f"only an active session can be stopped (it is {status})", field="status")
            response = self._transition(live, "stopped", "session.stopped", record_id)
            if live.row["car_id"]:
                self._notify("command", {"car_id": live.row["car_id"], "action": "stop", "session_id": live.row["id"]})
            return response

    def end(self, session_id: str, record_id: str | None = None, reason: str = "ended") -> dict[str, Any]:
        """Any live status → ended. Idempotent: ending an ended session returns it unchanged."""
        with self.lock:
            live = self._get(session_id)
            replay = self._replay(record_id, "session.ended", live.row["id"])
            if replay is not None:
                return replay
            if live.row["status"] in FINAL_STATUSES:
                return self.public(live)
            response = self._transition(live, "ended", "session.ended", record_id,
                                        ended_at=self.clock(), end_reason=reason)
            self._on_timing(live, self._timing(live).finish())
            if live.row["car_id"]:
                self._notify("command", {"car_id": live.row["car_id"], "action": "end", "session_id": live.row["id"]})
            return response

    def heartbeat(self, session_id: str, info: dict[str, Any] | None = None) -> dict[str, Any]:
        """Note the session is alive (keeps it from expiring); ``info`` is the monitor's link health."""
        with self.lock:
            live = self._get(session_id)
            self._touch(live)
            if info:
                live.monitor.update({k: v for k, v in info.items() if v is not None})
                self._notify("monitor", {"session_id": live.row["id"], **live.monitor})
            return self.public(live)

    def start_for_car(self, car_id: str, record_id: str | None = None, session_id: str | None = None,
                      name: str = "", driver: str | None = None, track: str | None = None,
                      track_id: str | None = None) -> dict[str, Any]:
        """Resume the car's active session (or the given one), else create and start one."""
        with self.lock:
            replay = self._replay(record_id, "session.started")
            if replay is not None and replay.get("car_id") == car_id:
                return self.public(self._get(replay["session_id"]))
            if session_id is not None:
                live = self._get(session_id)
                if live.row["car_id"] not in (None, car_id):
                    raise Conflict("session belongs to another car", field="session_id")
                if live.row["status"] == "active":
                    return self.public(live)
                if live.row["status"] not in FINAL_STATUSES:
                    return self.start(live.row["id"], record_id)
            active = self.store.active_session_for_car(car_id)
            if active is not None:
                return self.public(self._get(active["id"]))
            new_id = self.create_session(car_id=car_id, name=name, driver=driver, track=track, track_id=track_id)
            return self.start(new_id, record_id)

    def _touch(self, live: _Live, persist: bool = True) -> None:
        """The session is alive now. Saved at most once a second (frames carry it to the database anyway)."""
        now = self.clock()
        last = live.row["last_activity_at"]
        if last is not None and live.row["status"] == "active" and now - last > LINK_GAP_EVENT_S:
            self._log_event(live.row["id"], "link.gap", {"gap_s": round(now - last, 3)})
        live.row["last_activity_at"] = now
        if persist and now - live.activity_saved_at >= ACTIVITY_SAVE_S:
            live.activity_saved_at = now
            self.store.update_session(live.row["id"], last_activity_at=now)

    def expire_idle(self) -> list[str]:
        """Expire every active session idle longer than ``idle_s``; returns their ids."""
        expired = []
        with self.lock:
            cutoff = self.clock() - self.idle_s
            candidates = list(self._live.values())
            if self.shared:  # another process may hold the session's activity: decide on the stored row
                candidates = [live for row in self.store.sessions_with_status("active")
                              if (live := self._load(row["id"])) is not None and self._refresh(live) is not None]
            for live in candidates:
                row = live.row
                if row["status"] == "active" and (row["last_activity_at"] or row["created_at"]) < cutoff:
                    self._transition(live, "expired", "session.expired", None,
                                     ended_at=self.clock(), end_reason="idle")
                    self._on_timing(live, self._timing(live).finish())
                    expired.append(row["id"])
        return expired

    def cleanup_stale(self) -> int:
        """Drop ended and expired sessions from memory (they stay in the store); returns how many."""
        with self.lock:
            stale = [sid for sid, live in self._live.items() if live.row["status"] in FINAL_STATUSES]
            for sid in stale:
                del self._live[sid]
        return len(stale)

    def history(self, limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
        """Ended and expired sessions, newest first."""
        items, _ = self.list_sessions(limit, offset, status=FINAL_STATUSES)
        return items

    def list_sessions(self, limit: int, offset: int, status: str | tuple[str, ...] | None = None,
                      car_id: str | None = None) -> tuple[list[dict[str, Any]], int]:
        """A page of sessions (newest first) and the total matching."""
        with self.lock:
            rows, total = self.store.list_sessions(limit, offset, status, car_id)
            items = []
            for row in rows:
                live = self._live.get(row["id"]) or _Live(row=row, setup=None,
                                                           stats=FrameStats.from_dict(row.get("stats")))
                if live.row is row and live.setup is None:
                    live.setup = self.store.latest_setup(row["id"])
                items.append(self.public(live))
            return items, total

    def monitor_event(self, session_id: str, record_id: str, event_type: str, payload: dict[str, Any]) -> bool:
        """Log an event the car reported; False (and nothing logged) if its record_id was seen before."""
        with self.lock:
            live = self._get(session_id, fresh=False)
            return self._log_event(live.row["id"], event_type, payload, record_id) is not None

    def set_monitor(self, session_id: str, online: bool) -> None:
        """Record that the car's monitor connected or went away."""
        with self.lock:
            live = self._get(session_id)
            if bool(live.monitor.get("online")) == online:
                return
            live.monitor["online"] = online
            self._log_event(live.row["id"], "monitor.online" if online else "monitor.offline", {})
            self._notify("monitor", {"session_id": live.row["id"], **live.monitor})

    # ----------------------------------------------------------- telemetry
    def ingest(self, session_id: str, raw_frames: list[Any], backfill: bool = False) -> IngestResult:
        """Validate a batch, keep the new frames (stored once), and queue them for writing and broadcast."""
        now = self.clock()
        valid: dict[int, Frame] = {}
        rejected: list[dict[str, Any]] = []
        for raw in raw_frames:
            try:
                frame = parse_frame(raw)
            except FrameError as exc:
                rejected.append({"seq": frame_seq(raw), "error": exc.to_dict()})
                continue
            valid.setdefault(frame.seq, frame)
        with self.lock:
            live = self._get(session_id, fresh=False)
            sid = live.row["id"]
            last = live.row["last_seq"]
            fresh = [f for f in valid.values() if last is None or f.seq > last]
            older = [f.seq for f in valid.values() if last is not None and f.seq <= last]
            if older:
                known = self.store.existing_seqs(sid, older) | live.pending
                fresh += [valid[s] for s in older if s not in known]
            fresh.sort(key=lambda f: f.seq)
            rows = [{"seq": f.seq, "t": f.t, "received_at": now, "channels": f.channels} for f in fresh]
            ticket = None
            if rows:
                if live.row["status"] == "active":
                    self._touch(live, persist=False)  # the frame write saves it
                top = max(rows[-1]["seq"], last if last is not None else -1)
                live.row["last_seq"] = top
                live.row["frame_count"] = (live.row["frame_count"] or 0) + len(rows)
                for row in rows:
                    self._remember(live, row)
                    live.stats.feed(row, backfill)
                write = FrameWrite(sid, rows, top, live.row["last_activity_at"] or now, live.stats.to_dict())
                if self.writer is not None:
                    live.pending.update(r["seq"] for r in rows)
                    ticket = self.writer.submit(write, self._settled)
                else:
                    self.store.write_frames([write])
                self._notify("frames", {"session_id": sid, "frames": rows})
                self._process(live, rows)
            elif valid and live.row["status"] == "active":
                self._touch(live)
        acked = max(valid) if valid else None
        return IngestResult(rows, rejected, len(valid) - len(rows), acked, ticket)

    def merge_lora(self, car_id: str | None, car_hash: int | None, prefix: str, raw_frame: Any,
                   received_at: float, status: dict[str, bool] | None = None) -> dict[str, Any]:
        """Take a frame that came over LoRa without touching the main frame sequence.

        The session is found by its id prefix (and the car's hash or id); each
        channel's latest value is replaced only when the LoRa sample is newer.
        The summary is kept in the event log, and viewers get it with its age.
        """
        frame = parse_frame(raw_frame)
        with self.lock:
            matches = [row for row in self.store.sessions_by_prefix(prefix)
                       if (car_id is None or row["car_id"] == car_id)
                       and (car_hash is None or row["car_id"] is None or hash_of(row["car_id"]) == car_hash)]
            if len(matches) != 1:
                raise NotFound(f"no single live session matches prefix {prefix}", field="session_prefix")
            live = self._get(matches[0]["id"], fresh=False)
            sid = live.row["id"]
            newer = {}
            for name, value in frame.channels.items():
                old = live.latest.get(name)
                if value is not None and (old is None or frame.t > old[1]):
                    live.latest[name] = (value, frame.t)
                    newer[name] = value
            if live.row["status"] == "active":
                self._touch(live)
            payload = {"seq": frame.seq, "t": frame.t, "channels": frame.channels, "received_at": received_at,
                       "status": status, "updated": sorted(newer)}
            self._log_event(sid, "lora.frame", payload)
            out = {"session_id": sid, "link": "lora", "frame": {"seq": frame.seq, "t": frame.t,
                                                               "channels": frame.channels},
                   "received_at": received_at, "age_s": round(max(0.0, self.clock() - frame.t), 3),
                   "status": status}
            self._notify("lora", out)
            return out

    # ---------------------------------------------------------- laps
    def _timing(self, live: _Live) -> SessionTiming:
        """The session's processors, rebuilt from the stored frames when first needed."""
        if live.timing is None:
            live.timing = self._rebuild_timing(live)
        return live.timing

    def _rebuild_timing(self, live: _Live, emit: bool = False) -> SessionTiming:
        sid = live.row["id"]
        track_row = self.store.get_track(live.row["track_id"]) if live.row.get("track_id") else None
        track = Track.from_dict(track_row["definition"]) if track_row else None
        setups = [(v["timestamp"], v["version"]) for v in self.store.setups(sid)]
        timing = SessionTiming(track, setups, self.alert_rules(live.row["car_id"], sid))
        laps: list[dict[str, Any]] = []
        if track is not None:
            for frame in self.store.iter_frames(sid):
                laps += [payload for kind, payload in timing.feed(frame, alerts=False) if kind == "lap"]
            if live.row["status"] in FINAL_STATUSES:
                laps += [payload for _kind, payload in timing.finish()]
        if emit:
            self.store.replace_laps(sid, laps)
        return timing

    def _process(self, live: _Live, rows: list[dict[str, Any]]) -> None:
        timing = self._timing(live)
        before = timing.delta
        for row in rows:
            self._on_timing(live, timing.feed(row))
        if timing.delta is not None and timing.delta is not before:
            self._notify("timing", {"session_id": live.row["id"], **timing.delta})

    def _on_timing(self, live: _Live, events: list[tuple[str, dict[str, Any]]]) -> None:
        sid = live.row["id"]
        for kind, payload in events:
            if kind == "lap":
                self.store.add_lap(sid, payload)
                self._log_event(sid, "lap.completed", payload)
                self._notify("lap", {"session_id": sid, **payload})
            elif kind == "alert":
                self._on_alert(live, payload)
            else:
                self._notify(kind, {"session_id": sid, **payload})

    def ensure_builtin_tracks(self) -> None:
        """Store the built-in tracks that are missing (never overwrites an edited one)."""
        for track_id, track in BUILTIN_TRACKS.items():
            if self.store.get_track(track_id) is None:
                self.save_track(track.to_dict(), track_id)

    # -------------------------------------------------------------- alerts
    def alert_rules(self, car_id: str | None, session_id: str | None = None) -> list[AlertRule]:
        """The rules in force: the defaults, overridden by stored rules for every car, the car's, the session's."""
        return [rule for rule, _source in self.alert_rules_with_source(car_id, session_id)]

    def alert_rules_with_source(self, car_id: str | None,
                                session_id: str | None = None) -> list[tuple[AlertRule, str]]:
        """The rules in force, each with where it comes from: default, all, car or session."""
        rules = {rule.id: (rule, "default") for rule in DEFAULT_RULES}
        rank = {"all": 0, "car": 1, "session": 2}
        stored = [(row, "session" if row["session_id"] else "car" if row["car_id"] else "all")
                  for row in self.store.alert_rules(car_id, session_id)]
        for row, source in sorted(stored, key=lambda pair: rank[pair[1]]):
            rule = parse_rule(row["rule"])
            rules[rule.id] = (rule, source)
        return list(rules.values())

    def save_alert_rule(self, rule: AlertRule, car_id: str | None, session_id: str | None = None) -> dict[str, Any]:
        """Store a rule for one session, one car or every car, and apply it to the live sessions concerned."""
        with self.lock:
            if session_id is not None:
                session_id = self._get(session_id).row["id"]
            self.store.save_alert_rule(rule_key(rule.id, car_id, session_id), None if session_id else car_id,
                                       rule.model_dump(), session_id)
            self._apply_rules(car_id, session_id)
        source = "session" if session_id else "car" if car_id else "all"
        return {"car_id": None if session_id else car_id, "session_id": session_id, "rule": rule.model_dump(),
                "source": source}

    def delete_alert_rule(self, rule_id: str, car_id: str | None, session_id: str | None = None) -> bool:
        """Forget a stored rule (the one of the wider scope, or the default, applies again)."""
        with self.lock:
            deleted = self.store.delete_alert_rule(rule_key(rule_id, car_id, session_id))
            if deleted:
                self._apply_rules(car_id, session_id)
            return deleted

    def _apply_rules(self, car_id: str | None, session_id: str | None = None) -> None:
        for live in list(self._live.values()):
            if live.timing is None:
                continue
            if session_id is not None and live.row["id"] != session_id:
                continue
            if session_id is None and car_id is not None and live.row["car_id"] != car_id:
                continue
            rules = self.alert_rules(live.row["car_id"], live.row["id"])
            self._on_timing(live, live.timing.set_rules(rules, self.clock()))

    def tick_alerts(self) -> None:
        """Let time-based rules (the silent link) fire for every active session."""
        with self.lock:
            now = self.clock()
            for live in list(self._live.values()):
                if live.row["status"] == "active" and live.timing is not None:
                    self._on_timing(live, live.timing.tick(now))

    def _on_alert(self, live: _Live, payload: dict[str, Any]) -> None:
        sid = live.row["id"]
        if payload["kind"] == ALERT_RAISED:
            timer = live.timing.timer if live.timing else None
            lat, lon = live.latest.get("lat", (None, 0))[0], live.latest.get("lon", (None, 0))[0]
            raised = {**payload, "lap": timer.current_lap if timer else None, "lat": lat, "lon": lon}
            alert_id = self.store.add_alert(sid, payload["rule_id"], raised, payload["t"])
            live.open_alerts[payload["rule_id"]] = alert_id
            self._log_event(sid, ALERT_RAISED, {**raised, "alert_id": alert_id})
        else:
            alert_id = live.open_alerts.pop(payload["rule_id"], None)
            if alert_id is None:
                return
            self.store.update_alert(alert_id, cleared_t=payload["t"])
            self._log_event(sid, ALERT_CLEARED, {**payload, "alert_id": alert_id})
        self._notify("alert", self._public_alert(sid, alert_id))

    def _public_alert(self, session_id: str, alert_id: int) -> dict[str, Any]:
        return public_alert(self.store.get_alert(session_id, alert_id))

    def alerts(self, session_id: str) -> list[dict[str, Any]]:
        """Every alert of the session, oldest first."""
        with self.lock:
            live = self._get(session_id)
            return [public_alert(row) for row in self.store.alerts(live.row["id"])]

    def ack_alert(self, session_id: str, alert_id: int, by: str) -> dict[str, Any]:
        """Someone acknowledged an alert: it may leave the screen once cleared. Acknowledging twice keeps the first."""
        with self.lock:
            live = self._get(session_id)
            sid = live.row["id"]
            row = self.store.get_alert(sid, alert_id)
            if row is None:
                raise NotFound(f"no alert {alert_id} in this session", field="alert_id")
            if row["acked_at"] is None:
                self.store.update_alert(alert_id, acked_by=by, acked_at=self.clock())
                self._log_event(sid, "alert.acked", {"alert_id": alert_id, "rule_id": row["rule_id"], "by": by})
                out = self._public_alert(sid, alert_id)
                self._notify("alert", out)
                return out
            return public_alert(row)

    def save_track(self, track: dict[str, Any], track_id: str | None = None) -> dict[str, Any]:
        """Create (or replace) a track from its definition (Track.to_dict form); laps of its sessions are redone."""
        try:
            definition = Track.from_dict(track).to_dict()  # validates the geometry
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidInput(f"bad track: {exc}", field="track") from None
        now = self.clock()
        with self.lock:
            existing = self.store.get_track(track_id) if track_id else None
            row = {"id": track_id or new_session_id(), "name": definition["name"], "definition": definition,
                   "created_at": existing["created_at"] if existing else now, "updated_at": now}
            self.store.save_track(row)
            if existing is not None and existing["definition"] != definition:
                self.retime_track(row["id"])
        return public_track(row)

    def set_track(self, session_id: str, track_id: str | None) -> dict[str, Any]:
        """Name the session's track (or none) and time every lap again from the stored frames."""
        with self.lock:
            live = self._get(session_id)
            if track_id is not None and self.store.get_track(track_id) is None:
                raise NotFound(f"no track {track_id}", field="track_id")
            live.row["track_id"] = track_id
            self.store.update_session(live.row["id"], track_id=track_id)
            live.timing = self._rebuild_timing(live, emit=True)
            out = self.laps(session_id)
            self._log_event(live.row["id"], "track.changed", {"track_id": track_id, "laps": len(out["items"])})
            self._notify("laps", {"session_id": live.row["id"], "track_id": track_id, **out})
            self._notify("session", self.public(live))
            return out

    def retime_track(self, track_id: str) -> list[str]:
        """A track's lines changed: time every session on it again; returns their ids."""
        sessions = self.store.session_ids_on_track(track_id)
        for sid in sessions:
            self.set_track(sid, track_id)
        return sessions

    def _lap_stats(self, session_id: str) -> dict[str, Any]:
        timed = [lap for lap in self.store.laps(session_id) if not (lap["out_lap"] or lap["in_lap"])]
        return {"laps": len(timed), "best_lap_s": min((lap["lap_time"] for lap in timed), default=None)}

    def laps(self, session_id: str) -> dict[str, Any]:
        """The session's laps with best lap, best sectors and theoretical best."""
        with self.lock:
            live = self._get(session_id)
            items = self.store.laps(live.row["id"])
            timed = [lap for lap in items if not (lap["out_lap"] or lap["in_lap"])]
            best = min(timed, key=lambda lap: lap["lap_time"], default=None)
            count = max((len(lap["sectors"]) for lap in timed), default=0)
            best_sectors = [min((lap["sectors"][i] for lap in timed
                                 if i < len(lap["sectors"]) and lap["sectors"][i] is not None), default=None)
                            for i in range(count)]
            theoretical = sum(best_sectors) if best_sectors and None not in best_sectors else None
            return {"items": items, "best_lap": best, "best_sectors": best_sectors, "theoretical_best": theoretical,
                    "timing": self._timing(live).delta if live.row["status"] == "active" else None}

    def _settled(self, ticket: Ticket) -> None:
        with self.lock:
            live = self._live.get(ticket.write.session_id)
            if live is not None:
                live.pending.difference_update(r["seq"] for r in ticket.write.rows)

    def telemetry(self, session_id: str) -> dict[str, Any]:
        """Latest value of each channel with its age and staleness."""
        with self.lock:
            live = self._get(session_id)
            now = self.clock()
            channels = {}
            for name, (value, t) in sorted(live.latest.items()):
                channel = get_channel(name)
                age = max(0.0, now - t)
                channels[name] = {"value": value, "t": t, "age_s": round(age, 3),
                                  "unit": channel.unit if channel else None, "stale": age > stale_after(name)}
            return {"session_id": live.row["id"], "last_update": iso(live.last_update), "channels": channels}

    def recent(self, session_id: str) -> list[dict[str, Any]]:
        """Frames of the last ``recent_window_s`` seconds (by sample time), in seq order."""
        with self.lock:
            live = self._get(session_id)
            if not live.recent:
                return []
            newest = max(f["t"] for f in live.recent)
            return [f for f in live.recent if f["t"] >= newest - self.recent_window_s]

    def frames(self, session_id: str, after_seq: int = -1, limit: int = 1000) -> list[dict[str, Any]]:
        """Stored frames in seq order."""
        with self.lock:
            live = self._get(session_id)
        return self.store.frames(live.row["id"], after_seq, limit)

    def setups(self, session_id: str) -> list[dict[str, Any]]:
        """Every setup version, oldest first."""
        with self.lock:
            live = self._get(session_id)
        return [public_setup(s) for s in self.store.setups(live.row["id"])]

    def current_setup(self, session_id: str) -> dict[str, Any] | None:
        """The current setup version, or None."""
        with self.lock:
            live = self._get(session_id)
            return public_setup(live.setup) if live.setup else None

    def events(self, session_id: str, after_id: int = 0, limit: int = 1000) -> list[dict[str, Any]]:
        """The session's event log in order."""
        with self.lock:
            live = self._get(session_id)
        return [public_event(e) for e in self.store.events(live.row["id"], after_id, limit)]

    def snapshot(self, session_id: str) -> dict[str, Any]:
        """Everything a viewer needs on join: session, setup, latest values, recent frames."""
        with self.lock:
            live = self._get(session_id)
            return {"session": self.public(live), "setup": self.current_setup(session_id),
                    "telemetry": self.telemetry(session_id), "recent": self.recent(session_id),
                    "alerts": [a for a in self.alerts(session_id) if a["on_screen"]]}


def public_setup(version: dict[str, Any]) -> dict[str, Any]:
    """A stored setup version in the SetupOut shape."""
    return {"session_id": version["session_id"], "version": version["version"],
            "timestamp": iso(version["timestamp"]), "received_at": iso(version["received_at"]),
            "setup": version["setup"]}


def rule_key(rule_id: str, car_id: str | None, session_id: str | None = None) -> str:
    """Primary key of a stored rule: one per rule id and scope (a session, a car, or ``*`` for every car)."""
    scope = f"session:{session_id}" if session_id else car_id or "*"
    return f"{scope}/{rule_id}"


def public_alert(row: dict[str, Any]) -> dict[str, Any]:
    """A stored alert in the AlertOut shape."""
    raised = row["raised"]
    return {"alert_id": row["id"], "session_id": row["session_id"], "rule_id": row["rule_id"],
            "name": raised["name"], "severity": raised["severity"], "channel": raised["channel"],
            "comparison": raised["comparison"], "threshold": raised["threshold"], "value": raised["value"],
            "raised_t": row["raised_t"], "seq": raised["seq"], "lap": raised.get("lap"), "lat": raised.get("lat"),
            "lon": raised.get("lon"), "cleared_t": row["cleared_t"], "acked_by": row["acked_by"],
            "acked_at": iso(row["acked_at"]), "active": row["cleared_t"] is None,
            "on_screen": row["cleared_t"] is None or row["acked_at"] is None}


def public_track(row: dict[str, Any]) -> dict[str, Any]:
    """A stored track in the TrackOut shape."""
    return {**row["definition"], "track_id": row["id"], "created_at": iso(row["created_at"]),
            "updated_at": iso(row["updated_at"])}


def public_event(event: dict[str, Any]) -> dict[str, Any]:
    """A stored event in the EventOut shape (the stored response copy left out)."""
    payload = {k: v for k, v in event["payload"].items() if k != "response"}
    return {"id": event["id"], "session_id": event["session_id"], "record_id": event["record_id"],
            "event_type": event["event_type"], "timestamp": iso(event["timestamp"]),
            "received_at": iso(event["received_at"]), "payload": payload}
