"""Another logger's file as an ended session: its frames, its original times, laps timed by our lap timer.

Used by ``dashboard import`` (against the database directly) and by ``POST /api/v1/imports`` (in a
native thread of the server). The file is read as a stream (``dashboard.telemetry.importers``) and
written in chunks of ``CHUNK_ROWS`` frames (one ``executemany`` each), so memory stays bounded
however many rows it has.

One transaction
    The session row, every frame, its laps and its ``session.imported`` event are written in ONE
    transaction on a writer connection (SQLite: ``BEGIN IMMEDIATE``): a bad file, an error at the
    last row or a process killed midway leaves nothing behind, on SQLite and PostgreSQL alike.
    The price, on SQLite only: the import holds the database's write lock while it runs (~a
    million rows in tens of seconds: ``python -m bench.imports``), and a server writing to the same
    file waits for it (its cars' frames are acknowledged retryable, and sent again). On PostgreSQL
    nothing waits.

Laps
    Every frame is fed, as it is written, to a :class:`LapTimer` on the track given (``track``: a
    stored track's name, case-insensitive, or id) or, when none is given, on every stored track
    (and the built-in ones): the session is timed on the first of them, by name, whose start/finish
    line the path crosses forwards. The laps are those the live server would store: the same timer
    fed the same frames, the last lap closed as the in-lap since the session is over.
"""
from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from dashboard.errors import NotFound, TooManyRequests
from dashboard.server.blocking import Offload
from dashboard.server.store import FrameWrite, Store
from dashboard.server.tracks import BUILTIN_TRACKS, track_named
from dashboard.telemetry.importers import SNIFF_CHARS, ImportReport, detect_format, iter_frames
from dashboard.telemetry.laps import LAP_COMPLETED, LapTimer, Track
from dashboard.telemetry.stats import FrameStats

CHUNK_ROWS = 5000  # frames per executemany: ~1-2 MB of rows in flight, a few hundred statements a million
IMPORTED = "imported"  # end_reason of an imported session
DEFAULT_CAR_ID = "imported"
Progress = Callable[[int, int], None]  # (frames written so far, rows read so far)


@dataclass
class Candidate:
    """A track the import is timed on (or may be), with its timer and the laps it has completed."""

    track_id: str
    name: str
    row: dict[str, Any] | None  # the stored row; None for a built-in track not stored yet
    timer: LapTimer
    laps: list[dict[str, Any]] = field(default_factory=list)

    def feed(self, frame: dict[str, Any]) -> None:
        """One frame through the timer; its completed laps kept."""
        self.laps += [e.payload for e in self.timer.feed(frame) if e.type == LAP_COMPLETED]

    @property
    def crossed(self) -> bool:
        """True once the path crossed the start/finish line forwards (lap 1 began)."""
        return self.timer.current_lap >= 1 or any(not lap["out_lap"] for lap in self.laps)


@dataclass
class ImportResult:
    """What an import made: the session, its frames and laps, and what was skipped."""

    session_id: str
    format: str
    frames: int
    rows: int
    skipped: int
    track_id: str | None
    track: str | None
    laps: int  # timed laps (out- and in-laps not counted)
    best_lap_s: float | None
    started_at: float
    ended_at: float
    skipped_examples: list[tuple[int, str]]
    notes: list[str]
    summary: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The ImportOut body."""
        return {"session_id": self.session_id, "format": self.format, "frames": self.frames, "rows": self.rows,
                "skipped": self.skipped, "skipped_examples": [{"line": line, "reason": reason}
                                                             for line, reason in self.skipped_examples],
                "track_id": self.track_id, "track": self.track, "laps": self.laps, "best_lap_s": self.best_lap_s,
                "started_at": self.started_at, "ended_at": self.ended_at, "notes": self.notes}


def candidates(store: Store, track: str | None) -> list[Candidate]:
    """The tracks to time on: the one named (NotFound when none is), else every stored and built-in one, by name."""
    rows = store.tracks()
    stored = {row["id"] for row in rows}
    builtin = [{"id": tid, "name": t.name, "definition": t.to_dict(), "created_at": None, "updated_at": 0.0}
               for tid, t in BUILTIN_TRACKS.items() if tid not in stored]
    every = rows + builtin
    if track is not None and track.strip():
        chosen = next((row for row in every if row["id"] == track.strip()), None) or track_named(every, track)
        if chosen is None:
            known = ", ".join(sorted({r["name"] for r in every})[:10]) or "none"
            raise NotFound(f"no track named {track[:64]!r} (known: {known})", field="track")
        every = [chosen]
    every.sort(key=lambda row: (row["name"].casefold(), row["id"]))
    return [Candidate(row["id"], row["name"], row if row["id"] in stored else None,
                      LapTimer(Track.from_dict(row["definition"]))) for row in every]


def import_lines(store: Store, lines: Iterable[str], fmt: str, *, car_id: str | None = None,
                 track: str | None = None, name: str = "", filename: str = "", progress: Progress | None = None,
                 progress_every: int = 50_000, clock: Callable[[], float] = time.time) -> ImportResult:
    """Import a file's lines (any iterable of text lines) as one ended session, in one transaction.

    The session is called ``name``, else the title the file gives itself, else ``filename``.

    BadImportFile (naming the line) for a file that is not of ``fmt`` or holds no frame; NotFound for an
    unknown ``track``. Either way, and on any other failure, nothing is stored.
    """
    timers = candidates(store, track)
    report = ImportReport()
    now = clock()
    session_id = str(uuid.uuid4())
    stats = FrameStats()
    latest: dict[str, list[Any]] = {}
    rows: list[dict[str, Any]] = []
    seq = -1
    first_t = last_t = None
    conn = store.writer_connection()
    try:
        with conn.begin():
            for frame in iter_frames(fmt, lines, report):
                seq += 1
                row = {"seq": seq, "t": frame.t, "received_at": now, "channels": frame.channels}
                if seq == 0:
                    first_t = frame.t
                    store.insert_session(_session_row(session_id, car_id, name or report.meta.get("title") or filename,
                                                      report.meta.get("driver"), now, frame.t), conn=conn)
                last_t = frame.t if last_t is None else max(last_t, frame.t)
                stats.feed(row)
                for channel, value in frame.channels.items():
                    latest[channel] = [value, frame.t, seq]
                for candidate in timers:
                    candidate.feed(row)
                rows.append(row)
                if len(rows) >= CHUNK_ROWS:
                    _write(store, conn, session_id, rows, now, stats, latest)
                    rows = []
                if progress is not None and seq % progress_every == progress_every - 1:
                    progress(seq + 1, report.rows)
            _write(store, conn, session_id, rows, now, stats, latest)
            assert first_t is not None and last_t is not None  # iter_frames raises on a file without frames
            chosen = _chosen(timers, track)
            laps: list[dict[str, Any]] = []
            if chosen is not None:
                chosen.laps += [e.payload for e in chosen.timer.finish() if e.type == LAP_COMPLETED]
                laps = chosen.laps
                if chosen.row is None:  # a built-in track the server has not stored yet (it would at start)
                    store.save_track({"id": chosen.track_id, "name": chosen.name,
                                      "definition": BUILTIN_TRACKS[chosen.track_id].to_dict(),
                                      "created_at": now, "updated_at": now}, conn=conn)
            store.update_session(session_id, conn=conn, status="ended", started_at=first_t, ended_at=last_t,
                                 end_reason=IMPORTED, last_activity_at=now,
                                 track_id=chosen.track_id if chosen else None,
                                 track=chosen.name if chosen else (track or report.meta.get("track")))
            store.replace_laps(session_id, laps, conn=conn)
            timed = [lap["lap_time"] for lap in laps if not (lap["out_lap"] or lap["in_lap"])]
            result = ImportResult(session_id, fmt, seq + 1, report.rows, report.skipped,
                                  chosen.track_id if chosen else None, chosen.name if chosen else None,
                                  len(timed), min(timed, default=None), first_t, last_t, list(report.examples),
                                  list(report.notes), report.summary())
            store.add_event(session_id, {"record_id": None, "event_type": "session.imported", "timestamp": now,
                                         "received_at": now,
                                         "payload": {k: v for k, v in result.to_dict().items()
                                                     if k in ("format", "frames", "rows", "skipped", "laps")}},
                            conn=conn)
    finally:
        conn.close()
    if progress is not None:
        progress(result.frames, report.rows)
    return result


def _session_row(session_id: str, car_id: str | None, name: str, driver: str | None, now: float,
                 first_t: float) -> dict[str, Any]:
    return {"id": session_id, "car_id": car_id or DEFAULT_CAR_ID, "name": name[:200], "driver": driver,
            "track": None, "status": "ended", "created_at": now, "started_at": first_t, "ended_at": first_t,
            "last_activity_at": now, "end_reason": IMPORTED, "frame_count": 0, "last_seq": None,
            "track_id": None, "stopped_at": None, "laps": 0, "best_lap_s": None}


def _write(store: Store, conn: Any, session_id: str, rows: list[dict[str, Any]], now: float, stats: FrameStats,
           latest: dict[str, list[Any]]) -> None:
    if rows:
        store.write_frames([FrameWrite(session_id, rows, rows[-1]["seq"], now, stats.to_dict(), latest)], conn)


def _chosen(timers: list[Candidate], track: str | None) -> Candidate | None:
    if track is not None and track.strip():
        return timers[0]
    return next((c for c in timers if c.crossed), None)


def import_file(store: Store, path: str | Path, fmt: str | None = None, **options: Any) -> ImportResult:
    """Import the file at ``path`` (format told from its content when ``fmt`` is None); see ``import_lines``."""
    with open(path, encoding="utf-8", errors="replace", newline="") as f:
        fmt = fmt or detect_format(f.read(SNIFF_CHARS), str(options.get("filename") or path))
        f.seek(0)
        return import_lines(store, f, fmt, **options)


IMPORTS_MAX = 1  # imports running at once in a server: each holds the write transaction (SQLite: the file's lock)
IMPORT_RETRY_AFTER_S = 10  # what a refused import is told to wait


class ImportService:
    """Uploaded files imported in a native thread, never on the event loop; one at a time (more answer 429)."""

    def __init__(self, store: Store, limit: int = IMPORTS_MAX) -> None:
        self.store = store
        self.limit = limit
        self._run = Offload(limit, "imports")
        self._slots = threading.BoundedSemaphore(limit)
        self.running = 0

    def run(self, path: str | Path, fmt: str | None = None, **options: Any) -> ImportResult:
        """Import the file at ``path`` (``import_file``'s options); TooManyRequests while another one runs."""
        if not self._slots.acquire(blocking=False):
            raise TooManyRequests(f"{self.limit} import(s) running: try again shortly", field="file",
                                  retry_after=IMPORT_RETRY_AFTER_S)
        self.running += 1
        try:
            return self._run(import_file, self.store, path, fmt, **options)
        finally:
            self.running -= 1
            self._slots.release()

    def close(self) -> None:
        """Stop the import thread (safe twice)."""
        self._run.close()
