"""Sessions as clients see them: one session, a page of them, their setups, values, frames and snapshot.

Reads come from the live cache where the session is in memory and from the store otherwise; a
page of the sessions list costs a constant number of queries, whatever its length.
"""
from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Connection

from dashboard.errors import InvalidInput, NotFound
from dashboard.server.changes import Change
from dashboard.server.live import FINAL_STATUSES, LiveSession, latest_from_row, stats_from_row
from dashboard.server.service import Service, Shared
from dashboard.server.timing import TimingService
from dashboard.server.views import decimate, public_setup, session_out, stored_frame, telemetry_out
from dashboard.telemetry.frames import MAX_T, MIN_T

log = logging.getLogger(__name__)


def setup_timestamp(value: Any, now: float) -> float:
    """When a setup took effect, as epoch seconds: ISO 8601 text, a ``datetime`` or a number; default now.

    Bounded like a frame's time (2000-2100): a time in milliseconds, a non-finite number or a far
    year is refused with InvalidInput naming ``timestamp``, instead of being stored and breaking reads.
    """
    if value is None:
        return now
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise InvalidInput("timestamp must be ISO 8601 or epoch seconds", field="timestamp") from None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise InvalidInput("an ISO 8601 timestamp needs its UTC offset", field="timestamp")
        value = value.timestamp()
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidInput("timestamp must be a finite number of epoch seconds", field="timestamp")
    if not MIN_T <= value <= MAX_T:
        raise InvalidInput("timestamp must be epoch seconds between 2000 and 2100 (not milliseconds)",
                           field="timestamp")
    return float(value)


HISTORY_REUSE_S = 1.0  # a join snapshot's older history is encoded again after this long
SNAPSHOT_OLDER_FRAMES = 1000  # frames of that older part (decimated); the frames sent since come whole


@dataclass
class JoinHistory:
    """A session's history as joining viewers get it: decimated, encoded, up to a seq already sent to the room."""

    built_at: float
    upto: int
    encoded: bytes  # the JSON array's items, without the brackets


class SessionService(Service):
    """One session, pages of sessions, deletion, setups, latest values, stored frames, the join snapshot."""

    def __init__(self, shared: Shared, timing: TimingService, max_setup_bytes: int = 65_536) -> None:
        super().__init__(shared)
        self.timing = timing
        self.max_setup_bytes = max_setup_bytes

    def describe(self, live: LiveSession, row: dict[str, Any] | None = None) -> dict[str, Any]:
        """A session in memory as clients see it (SessionOut); ``row``: as it will be after a change."""
        return session_out(row or live.row, live.setup, live.latest, live.stats, live.monitor, self.clock(),
                           live.last_update)

    def view(self, session_id: str) -> dict[str, Any]:
        """The session (SessionOut); NotFound for an unknown id."""
        return self.describe(self.cache.get(session_id))

    def page(self, limit: int, offset: int, status: str | tuple[str, ...] | None = None,
             car_id: str | None = None) -> tuple[list[dict[str, Any]], int]:
        """A page of sessions (newest first) and the total matching: three queries, whatever the page size."""
        rows, total = self.store.list_sessions(limit, offset, status, car_id)
        setups = self.store.latest_setups([row["id"] for row in rows if self.cache.peek(row["id"]) is None])
        now, items = self.clock(), []
        for row in rows:
            live = self.cache.peek(row["id"])
            if live is not None:
                items.append(self.describe(live))
            else:
                items.append(session_out(row, setups.get(row["id"]), latest_from_row(row.get("latest")),
                                         stats_from_row(row), {"online": False}, now))
        return items, total

    def delete(self, session_id: str) -> bool:
        """Delete a session with its frames, setups, events, laps and alerts; False if unknown."""
        deleted = self.writer.call(lambda conn: self.store.delete_session(session_id, conn=conn))
        self.cache.drop(session_id)
        if deleted:
            log.info("session %s deleted", session_id)
            self.bus.tell(Change.DELETED, {"session_id": session_id})
        return deleted

    # -------------------------------------------------------------- setups
    def update_setup(self, session_id: str, setup: dict[str, Any], timestamp: Any = None) -> dict[str, Any]:
        """Store a new setup version (SetupOut); ``timestamp``: ISO 8601, datetime or epoch seconds."""
        if not isinstance(setup, dict):
            raise InvalidInput("setup must be a JSON object", field="setup")
        try:
            size = len(json.dumps(setup, allow_nan=False))
        except ValueError:
            raise InvalidInput("setup values must be finite numbers, text, booleans, lists or objects",
                               field="setup") from None
        if size > self.max_setup_bytes:
            from dashboard.errors import PayloadTooLarge

            raise PayloadTooLarge(f"setup is over {self.max_setup_bytes} bytes of JSON", field="setup")
        live = self.cache.get(session_id)
        now = self.clock()
        ts = setup_timestamp(timestamp, now)
        event = self.events.entry("setup.changed", {"keys": sorted(setup)[:50]}, timestamp=ts)

        def store_setup(conn: Connection) -> dict[str, Any]:
            return self.store.add_setup(live.id, setup, ts, now, event, conn=conn)

        version = self.writer.call(store_setup)
        stored_event = version.pop("event")
        with live.lock:
            live.setup = version
            self.timing.set_setup_version(live, ts, version["version"])
        out = public_setup(version)
        self.bus.tell(Change.SETUP, out)
        self.events.tell(stored_event)
        return out

    def setups(self, session_id: str) -> list[dict[str, Any]]:
        """Every setup version, oldest first (SetupOut each)."""
        return [public_setup(s) for s in self.store.setups(self.cache.get(session_id).id)]

    def current_setup(self, session_id: str) -> dict[str, Any] | None:
        """The current setup version (SetupOut), or None."""
        live = self.cache.get(session_id)
        return public_setup(live.setup) if live.setup else None

    # ----------------------------------------------------- values and frames
    def telemetry(self, session_id: str) -> dict[str, Any]:
        """Latest value of each channel with its age and staleness (TelemetryOut)."""
        live = self.cache.get(session_id)
        return telemetry_out(live.id, live.latest, self.clock(), live.last_update)

    def recent(self, session_id: str) -> list[dict[str, Any]]:
        """Frames of the last ``recent_window_s`` seconds (by sample time), in seq order."""
        return self.cache.recent(self.cache.get(session_id))

    def frames(self, session_id: str, after_seq: int = -1, limit: int = 1000) -> list[dict[str, Any]]:
        """Stored frames in seq order."""
        return self.store.frames(self.cache.get(session_id).id, after_seq, limit)

    def snapshot(self, live: LiveSession, alerts: list[dict[str, Any]], exclude: set[int] = frozenset(),
                 recent: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """Everything a viewer needs on join (Snapshot); frames in ``exclude`` are on their way live.

        ``recent``: the history if already read (from the store, for a session no frames arrive at).
        """
        if recent is None:
            recent = self.cache.recent(live, exclude)
        return {"session": self.describe(live), "setup": public_setup(live.setup) if live.setup else None,
                "telemetry": telemetry_out(live.id, live.latest, self.clock(), live.last_update),
                "recent": decimate([f for f in recent if f["seq"] not in exclude]), "alerts": alerts}

    def join_snapshot(self, live: LiveSession, alerts: list[dict[str, Any]], waiting: set[int],
                      stored: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """The snapshot for a viewer joining now (caller holds the session's lock): its history encoded once.

        200 viewers joining a busy session at once (a Wi-Fi blip in the pit) each had their history
        filtered, decimated and encoded: seconds of the loop, every car's acks waiting. Here the decimated
        older part is kept, encoded, for ``HISTORY_REUSE_S``; a join adds only the frames sent since.
        Frames waiting for the room's next message are left out: that message delivers them.
        """
        snapshot = self.snapshot(live, alerts, waiting, [] if stored is None else stored)
        if stored is None:
            snapshot["recent"] = self._history(live, waiting)
        return snapshot

    def _history(self, live: LiveSession, waiting: set[int]) -> orjson.Fragment:
        now = time.monotonic()
        history = live.history
        if history is None or now - history.built_at > HISTORY_REUSE_S:
            frames = self.cache.recent(live, waiting)
            older = decimate(frames, SNAPSHOT_OLDER_FRAMES)
            history = live.history = JoinHistory(now, frames[-1]["seq"] if frames else -1,
                                                 orjson.dumps([stored_frame(f) for f in older])[1:-1])
        tail = []
        for frame in reversed(live.recent):  # what was sent since: a few frames, newest first
            if frame["seq"] <= history.upto:
                break
            if frame["seq"] not in waiting and frame["seq"] not in live.pending:
                tail.append(stored_frame(frame))
        tail.reverse()
        items = [part for part in (history.encoded, orjson.dumps(tail)[1:-1] if tail else b"") if part]
        return orjson.Fragment(b"[" + b",".join(items) + b"]")

    def is_final(self, live: LiveSession) -> bool:
        """True for an ended or expired session."""
        return live.status in FINAL_STATUSES

    def require(self, session_id: str) -> LiveSession:
        """The session's entry; NotFound naming session_id."""
        try:
            return self.cache.get(session_id)
        except NotFound:
            raise NotFound(f"no session {session_id}", field="session_id") from None
