"""The outbox: every frame on disk (SQLite, WAL) from the moment it is made until the server acks it.

It also owns the frame sequence: ``append_many`` allocates ``seq = last + 1``
onwards and stores the group in one transaction, and the last seq is kept in
a ``meta`` row that outlives deleted frames, so seq continues across monitor
restarts. ``synchronous=FULL``: a group is on the card once its commit
returns (the assembler commits one group per 100 ms at most, see
assembler.py; a power cut loses at most the group not yet committed).

Frames made before real time was known (no GPS fix, no NTP) are stored with
``t`` NULL, their monotonic time and this boot's id; ``restamp(offset)`` gives
this boot's such frames ``t = mono + offset`` in one transaction once the
clock knows the offset. They are never handed to the uplink while ``t`` is
NULL. Such frames of an earlier boot can never be stamped (monotonic time
restarts at boot): on open they are moved to the ``unstamped`` table (kept,
never sent) and counted for an ``outbox.unstamped`` event.

A file SQLite cannot read (not a database, malformed, a table of ours
missing or with the wrong columns) is moved aside with its -wal/-shm to
``<name>.corrupt-<UTC time>`` and a fresh outbox is opened in its place,
logged at ERROR; its seqs start again at 1.

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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from dashboard.car.clock import boot_id as current_boot_id

log = logging.getLogger(__name__)

DEFAULT_MAX_FRAMES = 3_600_000  # 100 h at 10 Hz, ~0.5-1 GB: more than any outage a race weekend sees
BUSY_TIMEOUT_S = 10.0  # another connection (a test, an inspector) may hold the lock briefly

SQLITE_CORRUPT = 11  # primary result codes that mean the file itself is damaged (not busy, not full)
SQLITE_NOTADB = 26

_FRAMES_COLUMNS = "seq INTEGER PRIMARY KEY, t REAL, channels TEXT NOT NULL, mono REAL, boot TEXT"
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS frames ({_FRAMES_COLUMNS});
CREATE TABLE IF NOT EXISTS unstamped ({_FRAMES_COLUMNS});
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    record_id TEXT NOT NULL UNIQUE,
    event_type TEXT NOT NULL,
    payload TEXT NOT NULL,
    created REAL NOT NULL
);
"""


# columns the outbox reads: a table of ours without them is not our outbox
_REQUIRED_COLUMNS = {"frames": {"seq", "t", "channels"}, "meta": {"key", "value"},
                     "events": {"id", "record_id", "event_type", "payload", "created"}}

# (t, channels) or, for a frame made while real time was unknown, (None, channels, monotonic time)
FrameRow = tuple[float | None, Mapping[str, float | None]] | tuple[float | None, Mapping[str, float | None], float]


class CorruptOutbox(sqlite3.DatabaseError):
    """The outbox file is not a usable outbox (its tables are not ours)."""


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

    def __init__(self, path: str | Path, max_frames: int = DEFAULT_MAX_FRAMES, boot_id: str | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_frames = max_frames
        self.boot_id = boot_id or current_boot_id()
        self.moved_aside: Path | None = None  # where a corrupt file went, when this open found one
        self.unstamped_moved = 0  # frames of earlier boots that never learnt real time, moved out on open
        self.restamped_through = 0  # the highest seq re-stamped by this process: the uplink sends up to it as backlog
        self._lock = threading.Lock()
        try:
            self._db = self._open()
        except sqlite3.DatabaseError as exc:
            if not _is_corruption(exc):
                raise  # locked by another process, unreadable directory...: not ours to move
            self.moved_aside = self._move_aside()
            log.error("outbox %s is unreadable (%s): moved aside to %s; a fresh outbox starts in its place "
                      "(seq from 1, a new session)", self.path, exc, self.moved_aside)
            self._db = self._open()
        self._count = self._db.execute("SELECT count(*) FROM frames").fetchone()[0]
        max_stored = self._db.execute("SELECT max(seq) FROM frames").fetchone()[0] or 0
        self._last_seq = max(int(self.get_meta("last_seq") or 0), max_stored)
        self.dropped = int(self.get_meta("dropped") or 0)
        self._unstamped = self._db.execute("SELECT count(*) FROM frames WHERE t IS NULL").fetchone()[0]

    def _open(self) -> sqlite3.Connection:
        """Connect, check the file is a sound outbox, create or upgrade the tables; raises DatabaseError."""
        db = sqlite3.connect(str(self.path), timeout=BUSY_TIMEOUT_S, isolation_level=None, check_same_thread=False)
        try:
            problem = db.execute("PRAGMA quick_check").fetchone()[0]  # checked before anything is written
            if problem != "ok":
                raise CorruptOutbox(f"quick_check: {problem}")
            _check_tables(db)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.executescript(_SCHEMA)
            _upgrade_frames(db)
            self._set_unstamped_aside(db)
        except BaseException:
            db.close()
            raise
        return db

    def _set_unstamped_aside(self, db: sqlite3.Connection) -> None:
        """Frames of an earlier boot still without a time can never get one: out of the frames, kept aside."""
        db.execute("BEGIN IMMEDIATE")
        try:
            moved = db.execute("INSERT INTO unstamped SELECT * FROM frames WHERE t IS NULL AND boot IS NOT ?",
                               (self.boot_id,)).rowcount
            db.execute("DELETE FROM frames WHERE t IS NULL AND boot IS NOT ?", (self.boot_id,))
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        if moved:
            self.unstamped_moved = moved
            log.warning("outbox %s: %d frames of an earlier boot never learnt real time (no GPS fix, no NTP): "
                        "kept aside in its unstamped table, not sent", self.path, moved)

    def _move_aside(self) -> Path:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        n = 1
        while aside.exists():
            n += 1
            aside = self.path.with_name(f"{self.path.name}.corrupt-{stamp}-{n}")
        for suffix in ("-wal", "-shm", "-journal", ""):  # the main file last: its name marks the set
            part = Path(str(self.path) + suffix)
            if part.exists():
                part.rename(str(aside) + suffix)
        return aside

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

    def unstamped(self) -> int:
        """Frames of this boot waiting for real time (``t`` NULL)."""
        return self._unstamped

    def append_many(self, frames: Sequence[FrameRow]) -> list[int]:
        """Store new frames durably in one transaction (one sync); their seqs, in order.

        Each is ``(t, channels)``, or ``(None, channels, mono)`` for a frame made before real time was known.
        """
        if not frames:
            return []
        rows = []
        for frame in frames:
            t, channels = frame[0], frame[1]
            mono = frame[2] if len(frame) > 2 else None  # type: ignore[misc]
            if t is None and mono is None:
                raise ValueError("a frame without t needs its monotonic time")
            body = json.dumps(dict(channels), separators=(",", ":"), allow_nan=False)
            rows.append((t, body, mono if t is None else None, self.boot_id if t is None else None))
        untimed = sum(1 for row in rows if row[0] is None)
        with self._lock:
            first = self._last_seq + 1
            seqs = list(range(first, first + len(rows)))
            seq = seqs[-1]
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.executemany("INSERT INTO frames (seq, t, channels, mono, boot) VALUES (?, ?, ?, ?, ?)",
                                     [(s, *row) for s, row in zip(seqs, rows, strict=True)])
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
            self._unstamped += untimed
            if overflow > 0:
                self._unstamped = self._db.execute("SELECT count(*) FROM frames WHERE t IS NULL").fetchone()[0]
                self._count -= overflow
                self.dropped += overflow
                log.warning("outbox full (%d frames): dropped the %d oldest", self.max_frames, overflow)
            return seqs

    def restamp(self, offset: float) -> int:
        """Give this boot's frames without a time ``t = mono + offset``, in one transaction; returns how many."""
        with self._lock:
            if not self._unstamped:
                return 0
            self._db.execute("BEGIN IMMEDIATE")
            try:
                last = self._db.execute("SELECT max(seq) FROM frames WHERE t IS NULL AND boot = ?",
                                        (self.boot_id,)).fetchone()[0]
                cursor = self._db.execute(
                    "UPDATE frames SET t = round(mono + ?, 3), mono = NULL, boot = NULL WHERE t IS NULL AND boot = ?",
                    (offset, self.boot_id))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._unstamped = 0
            self.restamped_through = max(self.restamped_through, last or 0)
        if cursor.rowcount:
            log.info("outbox: %d frames made before real time was known re-stamped (offset %.3f s)",
                     cursor.rowcount, offset)
        return cursor.rowcount

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
        """Up to ``limit`` frames with a time, oldest first, optionally only seq <= ``upto``."""
        query = "SELECT seq, t, channels FROM frames WHERE t IS NOT NULL"
        args: list[Any] = []
        if upto is not None:
            query += " AND seq <= ?"
            args.append(upto)
        return self._frames(query + " ORDER BY seq LIMIT ?", [*args, limit])

    def after(self, seq: int, limit: int) -> list[dict[str, Any]]:
        """Up to ``limit`` frames with a time and seq > ``seq``, oldest first."""
        return self._frames("SELECT seq, t, channels FROM frames WHERE seq > ? AND t IS NOT NULL ORDER BY seq LIMIT ?",
                            [seq, limit])

    def oldest_t(self) -> float | None:
        """Sample time of the oldest waiting frame with a time."""
        with self._lock:
            row = self._db.execute("SELECT t FROM frames WHERE t IS NOT NULL ORDER BY seq LIMIT 1").fetchone()
        return None if row is None else row[0]

    def delete(self, seqs: Iterable[int]) -> int:
        """Remove acknowledged frames; returns how many were removed.

        Without an fsync of its own (``synchronous=NORMAL`` for this transaction): the next frame commit
        syncs the WAL and this delete with it. A power cut before that brings the frames back, and they are
        sent again; the server already holds them, the same seq with the same content, and ignores them.
        Halves the syncs of a car streaming live (bench/outbox.py).
        """
        seqs = list(seqs)
        if not seqs:
            return 0
        with self._lock:
            self._db.execute("PRAGMA synchronous=NORMAL")
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    before = self._db.total_changes
                    self._db.executemany("DELETE FROM frames WHERE seq = ?", [(s,) for s in seqs])
                    removed = self._db.total_changes - before
                    self._db.execute("COMMIT")
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
            finally:
                self._db.execute("PRAGMA synchronous=FULL")
            self._count -= removed
            if self._unstamped:
                self._unstamped = self._db.execute("SELECT count(*) FROM frames WHERE t IS NULL").fetchone()[0]
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

    def save_with_events(self, key: str, value: str, events: Sequence[tuple[str, Mapping[str, Any]]]) -> list[str]:
        """Persist a monitor setting and queue events in one transaction (the car's inbox and its reports: a
        kill -9 keeps both or neither); the events' record_ids."""
        ids = [uuid.uuid4().hex for _ in events]
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._set_meta(key, value)
                for record_id, (event_type, payload) in zip(ids, events, strict=True):
                    self._db.execute("INSERT INTO events (record_id, event_type, payload, created) VALUES (?, ?, ?, ?)",
                                     (record_id, event_type, json.dumps(dict(payload)), time.time()))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return ids

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


def _is_corruption(exc: sqlite3.DatabaseError) -> bool:
    """True when ``exc`` says the file is damaged or not ours, not that it is busy, full or out of reach."""
    if isinstance(exc, CorruptOutbox):
        return True
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (SQLITE_CORRUPT, SQLITE_NOTADB)
    text = str(exc).lower()
    return "not a database" in text or "malformed" in text


def _check_tables(db: sqlite3.Connection) -> None:
    """A file with tables but not ours (or ours without the columns we read) is not an outbox."""
    tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    tables.discard("sqlite_sequence")
    if not tables:
        return  # a new file
    if "frames" not in tables or "meta" not in tables:
        raise CorruptOutbox(f"not an outbox: tables {sorted(tables)}")
    for table, needed in _REQUIRED_COLUMNS.items():
        if table in tables:
            have = {row[1] for row in db.execute(f"PRAGMA table_info({table})")}
            if not needed <= have:
                raise CorruptOutbox(f"table {table} lacks {sorted(needed - have)}")


def _upgrade_frames(db: sqlite3.Connection) -> None:
    """An outbox from before unstamped frames (t NOT NULL, no mono/boot): rebuilt in one transaction."""
    columns = {row[1]: row for row in db.execute("PRAGMA table_info(frames)")}
    if "mono" in columns and "boot" in columns and not columns["t"][3]:
        return
    db.execute("BEGIN IMMEDIATE")
    try:
        db.execute(f"CREATE TABLE frames_new ({_FRAMES_COLUMNS})")
        db.execute("INSERT INTO frames_new (seq, t, channels) SELECT seq, t, channels FROM frames")
        db.execute("DROP TABLE frames")
        db.execute("ALTER TABLE frames_new RENAME TO frames")
        db.execute("COMMIT")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    log.info("outbox upgraded: frames may now wait for real time")
