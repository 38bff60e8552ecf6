"""The outbox: every frame on disk (SQLite, WAL) from the moment it is made until the server acks it.

It also owns the frame sequence: ``append`` allocates ``seq = last + 1`` and
stores the frame in one transaction, and the last seq is kept in a ``meta``
row that outlives deleted frames, so seq continues across monitor restarts.
``synchronous=FULL``: a car loses power without warning, and at 10 Hz the
cost of an fsync per frame is negligible.

Size cap policy: above ``max_frames`` the oldest frames are dropped (the
newest data matters most to the pit), counted in ``dropped`` (persisted) and
logged; the uplink reports the count to the server as an ``outbox.overflow``
event.

Session events (trouble codes, overflow) wait here too, each with a
record_id that makes its delivery idempotent.
"""
from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_MAX_FRAMES = 3_600_000  # 100 h at 10 Hz, ~0.5-1 GB: more than any outage a race weekend sees
BUSY_TIMEOUT_S = 10.0  # another connection (a test, an inspector) may hold the lock briefly

_SCHEMA = """
CREATE TABLE IF NOT EXISTS frames (seq INTEGER PRIMARY KEY, t REAL NOT NULL, channels TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    record_id TEXT NOT NULL UNIQUE,
    event_type TEXT NOT NULL,
    payload TEXT NOT NULL,
    created REAL NOT NULL
);
"""


@dataclass(frozen=True)
class QueuedEvent:
    """A session event waiting for the server's ack."""

    id: int
    record_id: str
    event_type: str
    payload: dict[str, Any]
    created: float


class Outbox:
    """Durable frame queue; thread-safe (one connection behind a lock)."""

    def __init__(self, path: str | Path, max_frames: int = DEFAULT_MAX_FRAMES) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_frames = max_frames
        self._lock = threading.Lock()
        self._db = sqlite3.connect(
            str(self.path), timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False
        )
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)
        self._count = self._db.execute("SELECT count(*) FROM frames").fetchone()[0]
        max_stored = self._db.execute("SELECT max(seq) FROM frames").fetchone()[0] or 0
        self._last_seq = max(int(self.get_meta("last_seq") or 0), max_stored)
        self.dropped = int(self.get_meta("dropped") or 0)

    # ------------------------------------------------------------------ frames
    @property
    def last_seq(self) -> int:
        """The highest seq ever allocated (0 before the first frame)."""
        return self._last_seq

    def count(self) -> int:
        """Frames waiting for an ack."""
        return self._count

    def append(self, t: float, channels: Mapping[str, float | None]) -> int:
        """Store a new frame durably and return its seq."""
        return self.append_many([(t, channels)])[-1]

    def append_many(self, frames: list[tuple[float, Mapping[str, float | None]]]) -> list[int]:
        """Store new frames durably in one transaction (one sync); their seqs, in order."""
        if not frames:
            return []
        bodies = [(t, json.dumps(dict(channels), separators=(",", ":"), allow_nan=False)) for t, channels in frames]
        with self._lock:
            first = self._last_seq + 1
            seqs = list(range(first, first + len(bodies)))
            seq = seqs[-1]
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany("INSERT INTO frames (seq, t, channels) VALUES (?, ?, ?)",
                                     [(s, t, body) for s, (t, body) in zip(seqs, bodies, strict=True)])
                self._set_meta("last_seq", str(seq))
                overflow = self._count + len(seqs) - self.max_frames
                if overflow > 0:
                    self._db.execute(
                        "DELETE FROM frames WHERE seq IN (SELECT seq FROM frames ORDER BY seq LIMIT ?)", (overflow,)
                    )
                    self._set_meta("dropped", str(self.dropped + overflow))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._last_seq = seq
            self._count += len(seqs)
            if overflow > 0:
                self._count -= overflow
                self.dropped += overflow
                log.warning("outbox full (%d frames): dropped the %d oldest", self.max_frames, overflow)
            return seqs

    def bump_seq(self, at_least: int) -> None:
        """Make the next seq greater than ``at_least`` (the server already holds seqs up to it)."""
        with self._lock:
            if at_least > self._last_seq:
                self._set_meta("last_seq", str(at_least))
                self._last_seq = at_least

    def renumber(self, first_seq: int) -> int:
        """Give the waiting frames the seqs ``first_seq``, ``first_seq + 1``, ... in their order; returns how many.

        One transaction; the next frame appended gets the seq after them (``first_seq`` when none
        waited). For a seq conflict: the server already holds these seqs with other content, because
        this outbox started again at 1 (a reinstalled monitor) in a session that goes on.
        """
        if first_seq < 0:
            raise ValueError("first_seq must be >= 0")
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                seqs = [row[0] for row in self._db.execute("SELECT seq FROM frames ORDER BY seq")]
                self._db.execute("UPDATE frames SET seq = -seq")  # out of the way: no clash with the new seqs
                self._db.executemany("UPDATE frames SET seq = ? WHERE seq = ?",
                                     [(first_seq + i, -old) for i, old in enumerate(seqs)])
                last = first_seq + len(seqs) - 1
                self._set_meta("last_seq", str(last))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._last_seq = last
            return len(seqs)

    def oldest(self, limit: int, upto: int | None = None) -> list[dict[str, Any]]:
        """Up to ``limit`` frames oldest first, optionally only seq <= ``upto``."""
        query = "SELECT seq, t, channels FROM frames"
        args: list[Any] = []
        if upto is not None:
            query += " WHERE seq <= ?"
            args.append(upto)
        return self._frames(query + " ORDER BY seq LIMIT ?", [*args, limit])

    def after(self, seq: int, limit: int) -> list[dict[str, Any]]:
        """Up to ``limit`` frames with seq > ``seq``, oldest first."""
        return self._frames("SELECT seq, t, channels FROM frames WHERE seq > ? ORDER BY seq LIMIT ?", [seq, limit])

    def oldest_t(self) -> float | None:
        """Sample time of the oldest waiting frame."""
        with self._lock:
            row = self._db.execute("SELECT t FROM frames ORDER BY seq LIMIT 1").fetchone()
        return None if row is None else row[0]

    def delete(self, seqs: Iterable[int]) -> int:
        """Remove acknowledged frames; returns how many were removed."""
        seqs = list(seqs)
        if not seqs:
            return 0
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                before = self._db.total_changes
                self._db.executemany("DELETE FROM frames WHERE seq = ?", [(s,) for s in seqs])
                removed = self._db.total_changes - before
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._count -= removed
            return removed

    def _frames(self, query: str, args: list[Any]) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(query, args).fetchall()
        return [{"seq": seq, "t": t, "channels": json.loads(body)} for seq, t, body in rows]

    # ------------------------------------------------------------------ events
    def add_event(self, event_type: str, payload: Mapping[str, Any], record_id: str | None = None) -> str:
        """Queue a session event durably; returns its record_id."""
        record_id = record_id or uuid.uuid4().hex
        with self._lock:
            self._db.execute(
                "INSERT OR IGNORE INTO events (record_id, event_type, payload, created) VALUES (?, ?, ?, ?)",
                (record_id, event_type, json.dumps(dict(payload)), time.time()),
            )
        return record_id

    def events(self, limit: int = 20) -> list[QueuedEvent]:
        """Queued events, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id, record_id, event_type, payload, created FROM events ORDER BY id LIMIT ?", (limit,)
            ).fetchall()
        return [QueuedEvent(i, r, e, json.loads(p), c) for i, r, e, p, c in rows]

    def delete_event(self, record_id: str) -> None:
        """Remove an acknowledged event."""
        with self._lock:
            self._db.execute("DELETE FROM events WHERE record_id = ?", (record_id,))

    # -------------------------------------------------------------------- meta
    def get_meta(self, key: str) -> str | None:
        """A persisted monitor setting (record_id, session_id, last_seq...)."""
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def set_meta(self, key: str, value: str | None) -> None:
        """Persist (or, with None, forget) a monitor setting."""
        with self._lock:
            if value is None:
                self._db.execute("DELETE FROM meta WHERE key = ?", (key,))
            else:
                self._set_meta(key, value)

    def _set_meta(self, key: str, value: str) -> None:
        self._db.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def close(self) -> None:
        """Close the database (safe to call twice)."""
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None  # type: ignore[assignment]
