"""``from dashboard.sessions import SessionManager``: the original in-process API, a facade over the core.

It keeps exactly the methods of the original design (``SEED_METHODS``; a test holds it to them);
everything else lives in the services of ``dashboard.server`` (see ``dashboard/server/core.py``).
``SessionManager()`` with no store keeps its data in a temporary SQLite file, through the same
single writer and services as the server, so both modes share one code path.
"""
from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from dashboard.errors import InvalidInput, NotFound
from dashboard.server.changes import Listener
from dashboard.server.core import Core
from dashboard.server.ingest import IngestResult
from dashboard.server.live import FINAL_STATUSES, check_session_id
from dashboard.server.store import Store

__all__ = ["IngestResult", "SessionManager", "SEED_METHODS"]

# The public methods of the original SessionManager, and no others.
SEED_METHODS = frozenset({
    "close", "public", "create_session", "get_session", "session", "update_setup", "update_telemetry",
    "delete_session", "get_active_sessions", "start", "stop", "end", "heartbeat", "start_for_car", "expire_idle",
    "cleanup_stale", "history", "list_sessions", "set_monitor", "ingest", "telemetry", "recent", "frames",
    "setups", "current_setup", "events", "snapshot",
})


class SessionManager:
    """Sessions keyed by UUID4: metadata, setup, latest telemetry, frame history and event log."""

    def __init__(self, store: Store | None = None, idle_s: float = 300.0, recent_window_s: float = 60.0,
                 writer_batch_max: int = 2000, clock: Callable[[], float] = time.time,
                 shared: bool = False) -> None:
        self._tmp: str | None = None
        if store is None:
            self._tmp = tempfile.mkdtemp(prefix="dashboard-")
            store = Store.from_url(f"sqlite:///{Path(self._tmp) / 'sessions.db'}")
        self.core = Core(store, idle_s=idle_s, recent_window_s=recent_window_s, writer_batch_max=writer_batch_max,
                         clock=clock, shared=shared).start()
        self.store = store
        self.listeners: list[Listener] = self.core.bus.listeners

    def close(self) -> None:
        """Write what is queued and stop the writer (safe to call twice)."""
        self.core.close()
        if self._tmp is not None:
            self.store.close()
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def public(self, session_id: str) -> dict[str, Any]:
        """A session as the API and viewers see it (the SessionOut shape)."""
        return self.session(session_id)

    def create_session(self, car_id: str | None = None, name: str = "", driver: str | None = None,
                       track: str | None = None, track_id: str | None = None) -> str:
        """Create a session in status ``created``; returns its UUID4."""
        return self.core.lifecycle.create(car_id, name, driver, track, track_id).id

    def get_session(self, session_id: str) -> dict[str, Any] | None:
        """The session as a dict, or None for an unknown (or malformed) id."""
        try:
            return self.session(session_id)
        except (NotFound, InvalidInput):
            return None

    def session(self, session_id: str) -> dict[str, Any]:
        """The session as a dict; NotFound (404) for an unknown id."""
        return self.core.sessions.view(session_id)

    def update_setup(self, session_id: str, setup: dict[str, Any], timestamp: Any = None) -> dict[str, Any]:
        """Store a new setup version; ``timestamp`` as ISO 8601 text, a datetime or epoch seconds (default now)."""
        return self.core.sessions.update_setup(session_id, setup, timestamp)

    def update_telemetry(self, session_id: str, telemetry: dict[str, Any]) -> IngestResult:
        """Record one set of channel values now, as the next frame of the session (stored when this returns)."""
        live = self.core.cache.get(session_id)
        with live.lock:  # the seq and its frame are taken together
            seq = (live.row["last_seq"] if live.row["last_seq"] is not None else -1) + 1
            result = self.core.ingest(live.id, [{"seq": seq, "t": self.core.clock(), "channels": telemetry}])
        if result.rejected:
            err = result.rejected[0]["error"]
            raise InvalidInput(err["message"], field=err.get("field"))
        if result.ticket is not None:
            result.ticket.get()
        return result

    def delete_session(self, session_id: str) -> bool:
        """Delete a session with its frames, setups and events; False if unknown."""
        try:
            return self.core.sessions.delete(check_session_id(session_id))
        except NotFound:
            return False

    def get_active_sessions(self) -> list[str]:
        """Ids of every session in status active."""
        return [row["id"] for row in self.store.sessions_with_status("active")]

    def start(self, session_id: str, record_id: str | None = None) -> dict[str, Any]:
        """created|stopped → active; 409 if the car already has another active session."""
        return self.core.lifecycle.apply(session_id, "start", record_id)

    def stop(self, session_id: str, record_id: str | None = None) -> dict[str, Any]:
        """active → stopped (collection paused; may start again)."""
        return self.core.lifecycle.apply(session_id, "stop", record_id)

    def end(self, session_id: str, record_id: str | None = None, reason: str = "ended") -> dict[str, Any]:
        """Any live status → ended. Idempotent: ending an ended session returns it unchanged."""
        return self.core.lifecycle.apply(session_id, "end", record_id, reason)

    def heartbeat(self, session_id: str, info: dict[str, Any] | None = None) -> dict[str, Any]:
        """Note the session is alive (keeps it from expiring); ``info`` is the monitor's link health."""
        if info:
            self.core.monitors.heartbeat(session_id, info)
        return self.core.lifecycle.heartbeat(session_id)

    def start_for_car(self, car_id: str, record_id: str | None = None, session_id: str | None = None,
                      name: str = "", driver: str | None = None, track: str | None = None) -> dict[str, Any]:
        """Resume the car's active session (or the given one), else create and start one."""
        live = self.core.lifecycle.attach_car(car_id, record_id, session_id, name, driver, track)
        return self.core.sessions.describe(live)

    def expire_idle(self) -> list[str]:
        """Expire every active session idle longer than ``idle_s``; returns their ids."""
        return self.core.lifecycle.expire_idle()

    def cleanup_stale(self) -> int:
        """Drop ended and expired sessions from memory (they stay in the store); returns how many."""
        stale = [live.id for live in self.core.cache.entries() if live.status in FINAL_STATUSES]
        for session_id in stale:
            self.core.cache.drop(session_id)
        return len(stale)

    def history(self, limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
        """Ended and expired sessions, newest first."""
        items, _ = self.list_sessions(limit, offset, status=FINAL_STATUSES)
        return items

    def list_sessions(self, limit: int, offset: int, status: str | tuple[str, ...] | None = None,
                      car_id: str | None = None) -> tuple[list[dict[str, Any]], int]:
        """A page of sessions (newest first) and the total matching."""
        return self.core.sessions.page(limit, offset, status, car_id)

    def set_monitor(self, session_id: str, online: bool) -> None:
        """Record that the car's monitor connected or went away."""
        self.core.monitors.set_online(session_id, online)

    def ingest(self, session_id: str, raw_frames: list[Any], backfill: bool = False) -> IngestResult:
        """Validate a batch, keep the new frames (stored once), and broadcast them; stored when this returns."""
        result = self.core.ingest(session_id, raw_frames, backfill)
        if result.ticket is not None:
            result.ticket.wait()
        return result

    def telemetry(self, session_id: str) -> dict[str, Any]:
        """Latest value of each channel with its age and staleness."""
        return self.core.sessions.telemetry(session_id)

    def recent(self, session_id: str) -> list[dict[str, Any]]:
        """Frames of the last ``recent_window_s`` seconds (by sample time), in seq order."""
        return self.core.sessions.recent(session_id)

    def frames(self, session_id: str, after_seq: int = -1, limit: int = 1000) -> list[dict[str, Any]]:
        """Stored frames in seq order."""
        return self.core.sessions.frames(session_id, after_seq, limit)

    def setups(self, session_id: str) -> list[dict[str, Any]]:
        """Every setup version, oldest first."""
        return self.core.sessions.setups(session_id)

    def current_setup(self, session_id: str) -> dict[str, Any] | None:
        """The current setup version, or None."""
        return self.core.sessions.current_setup(session_id)

    def events(self, session_id: str, after_id: int = 0, limit: int = 1000) -> list[dict[str, Any]]:
        """The session's event log in order."""
        return self.core.events.events(self.core.cache.get(session_id).id, after_id, limit)

    def snapshot(self, session_id: str) -> dict[str, Any]:
        """Everything a viewer needs on join: session, setup, latest values, recent frames, alerts on screen."""
        live = self.core.cache.get(session_id)
        return self.core.sessions.snapshot(live, self.core.alerts.on_screen(live))
