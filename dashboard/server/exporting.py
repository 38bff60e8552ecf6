"""Exports of a stored session as streamed text: CSV, JSON Lines or GPX, whole or one lap; or its event log.

Used by the REST API (``GET /api/v1/sessions/{id}/export``) and by ``dashboard export``;
frames are read a page at a time, so memory stays bounded however long the session.

In the server an export never holds the event loop: :class:`ExportService` runs each step of the
export (reading a page, formatting its text) in a native thread of its own pool, and at most
``EXPORTS_MAX`` run at once (more answer 429). One CSV export of a 196,000-frame session used to
hold the loop for 7.4 s, and every car's ack with it.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Iterator

from dashboard.errors import NotFound, TooManyRequests
from dashboard.server.blocking import Offload
from dashboard.server.store import FRAME_PAGE, Store
from dashboard.telemetry.export import (
    FORMATS,
    MEDIA_TYPES,
    MESSAGE_EVENT_PREFIX,
    SUFFIXES,
    channel_names,
    csv_chunks,
    events_csv_chunks,
    gpx_chunks,
    jsonl_chunks,
    message_waypoints,
)
from dashboard.telemetry.messages import STATES as MESSAGE_STATES

EVENT_PAGE = 1000  # log entries read at a time


def session_frames(store: Store, session_id: str, start_t: float | None = None, end_t: float | None = None,
                   page: int = FRAME_PAGE) -> Iterator[dict[str, Any]]:
    """A session's stored frames in seq order, read ``page`` at a time; only ``start_t <= t <= end_t`` if given."""
    for frame in store.iter_frames(session_id, page):
        if (start_t is None or frame["t"] >= start_t) and (end_t is None or frame["t"] <= end_t):
            yield frame


def session_events(store: Store, session_id: str, start_t: float | None = None, end_t: float | None = None,
                   page: int = EVENT_PAGE) -> Iterator[dict[str, Any]]:
    """A session's event log in order, read ``page`` entries at a time; only ``start_t <= t <= end_t`` if given."""
    after = 0
    while batch := store.events(session_id, after, page):
        for event in batch:
            if (start_t is None or event["timestamp"] >= start_t) and (end_t is None or event["timestamp"] <= end_t):
                yield event
        after = batch[-1]["id"]


def lap_window(store: Store, session_id: str, lap: int) -> tuple[float, float]:
    """``(start_t, end_t)`` of a stored lap; NotFound (field ``lap``) when the session has no such lap."""
    for row in store.laps(session_id):
        if row["lap"] == lap:
            return row["start_t"], row["end_t"]
    raise NotFound(f"session {session_id} has no lap {lap}", field="lap")


@dataclass
class Export:
    """A lazy export: iterate ``chunks`` to produce it; ``frames`` counts the frames read into it so far."""

    chunks: Iterator[str]
    media_type: str
    filename: str
    frames: int = 0


def open_export(store: Store, session_id: str, fmt: str, lap: int | None = None,
                page: int = FRAME_PAGE) -> Export:
    """Check the session (and lap) now, and return the export to stream; NotFound for an unknown one."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; one of {', '.join(FORMATS)}")
    session = store.get_session(session_id)
    if session is None:
        raise NotFound(f"no session {session_id}", field="session_id")
    start_t, end_t = lap_window(store, session_id, lap) if lap is not None else (None, None)
    suffix = f"-lap{lap}" if lap is not None else ""
    export = Export(iter(()), MEDIA_TYPES[fmt], f"session-{session_id}{suffix}.{SUFFIXES[fmt]}")

    def frames() -> Iterator[dict[str, Any]]:
        for frame in session_frames(store, session_id, start_t, end_t, page):
            export.frames += 1
            yield frame

    def chunks() -> Iterator[str]:
        if fmt == "csv":
            columns = channel_names(session_frames(store, session_id, start_t, end_t, page))
            yield from csv_chunks(frames(), columns)
        elif fmt == "jsonl":
            yield from jsonl_chunks(frames())
        elif fmt == "events":
            yield from events_csv_chunks(session_events(store, session_id, start_t, end_t, page))
        else:
            name = session.get("name") or session_id
            # a message's text is in its queued entry, which may precede the lap: read them all, mark the lap's
            logged = store.events_of_types(session_id, [MESSAGE_EVENT_PREFIX + s for s in MESSAGE_STATES])
            yield from gpx_chunks(frames(), f"{name} lap {lap}" if lap is not None else name,
                                  waypoints=message_waypoints(logged, start_t, end_t))

    export.chunks = chunks()
    return export


EXPORTS_MAX = 4  # exports streaming at once by default; each holds a native thread and a database connection
EXPORT_RETRY_AFTER_S = 5  # what a refused export is told to wait


class ExportService:
    """Exports streamed off the event loop, at most ``limit`` at once."""

    def __init__(self, store: Store, limit: int = EXPORTS_MAX) -> None:
        self.store = store
        self.limit = limit
        self._run = Offload(limit, "exports")
        self._slots = threading.BoundedSemaphore(limit)
        self.running = 0

    def open(self, session_id: str, fmt: str, lap: int | None = None) -> Export:
        """Check the session (and lap) now and take a slot; the export's chunks are made in native threads."""
        if not self._slots.acquire(blocking=False):
            raise TooManyRequests(f"{self.limit} exports are running: try again shortly", field="export",
                                  retry_after=EXPORT_RETRY_AFTER_S)
        try:
            export = self._run(open_export, self.store, session_id, fmt, lap)
        except BaseException:
            self._slots.release()
            raise
        self.running += 1
        export.chunks = self._stream(export.chunks)
        return export

    def _stream(self, chunks: Iterator[str]) -> Iterator[str]:
        try:
            while (chunk := self._run(next, chunks, None)) is not None:
                yield chunk
        finally:
            self.running -= 1
            self._slots.release()
            chunks.close()


# ------------------------------------------------------------ the command
