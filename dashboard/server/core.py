"""The server's core, wired in one place: the store, the single writer, the live cache and the services.

    REST routes ─┐                                   ┌─► Bus ─► Socket.IO hub ─► viewers, monitors
    Socket.IO  ──┼─► services ─► LiveCache (memory) ─┤
    handlers     │   (sessions, lifecycle, ingest,   └─► Writer (one native thread) ─► Store ─► database
                 │    timing, alerts, tracks,
                 │    monitors, lora)                 reads: Store, off the event loop
Routes and handlers call services, never the store. ``create_app`` builds one Core per app; the
original in-process API (``dashboard.sessions.SessionManager``) is a thin facade over one.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Callable

from dashboard.config import Settings
from dashboard.server.access import Access
from dashboard.server.alerts import AlertService
from dashboard.server.changes import Bus
from dashboard.server.comparing import CompareService
from dashboard.server.eventlog import EventLog
from dashboard.server.exporting import EXPORTS_MAX, ExportService
from dashboard.server.importing import ImportService
from dashboard.server.ingest import Ingest
from dashboard.server.keys import KeyService
from dashboard.server.lifecycle import LifecycleService
from dashboard.server.live import LiveCache
from dashboard.server.lora import LoraService
from dashboard.server.messages import MessageService
from dashboard.server.monitors import MonitorService
from dashboard.server.service import Shared
from dashboard.server.sessions import SessionService
from dashboard.server.store import Store
from dashboard.server.team import TeamService
from dashboard.server.timing import TimingService
from dashboard.server.tracks import TrackService
from dashboard.server.writer import Writer

log = logging.getLogger(__name__)
HEALTH_TIMEOUT_S = 2.0  # a write the writer has not committed by then: unhealthy
HEALTH_FAILURE_S = 5.0  # a write that failed this recently: unhealthy
HEALTH_STALLED_S = 1.0  # a transaction under way this long (a lock held elsewhere): unhealthy at once


class Core:
    """Every service of one server process, sharing one store, writer, live cache and bus."""

    def __init__(self, store: Store, *, idle_s: float = 300.0, recent_window_s: float = 60.0,
                 writer_batch_max: int = 2000, clock: Callable[[], float] = time.time, shared: bool = False,
                 max_ahead_s: float = 300.0, max_behind_s: float | None = None, max_setup_bytes: int = 65_536,
                 max_exports: int = EXPORTS_MAX,
                 api_key: str | None = None, viewer_token: str | None = None, metrics_token: str | None = None,
                 keys_ttl_s: float = 5.0) -> None:
        self.store = store
        self.clock = clock
        self.bus = Bus()
        self.writer = Writer(store, writer_batch_max)
        self.cache = LiveCache(store, recent_window_s, shared)
        self.events = EventLog(store, self.writer, self.bus, clock)
        parts = Shared(self.cache, store, self.writer, self.bus, self.events, clock)
        self.alerts = AlertService(parts)
        self.timing = TimingService(parts, self.alerts.rules, self.alerts.on_alert)
        self.alerts.timing = self.timing
        self.sessions = SessionService(parts, self.timing, max_setup_bytes)
        self.lifecycle = LifecycleService(parts, self.timing, self.sessions.describe, idle_s)
        self.tracks = TrackService(parts, self.timing, self.sessions.describe)
        self.team = TeamService(parts, self.timing)
        self.messages = MessageService(parts, self.timing)
        self.monitors = MonitorService(parts, self.lifecycle)
        self.lora = LoraService(parts, self.lifecycle)
        self.ingest = Ingest(parts, self.lifecycle, self.timing, max_ahead_s, max_behind_s)
        self.exports = ExportService(store, max_exports)
        self.imports = ImportService(store)
        self.compare = CompareService(store)
        self.keys = KeyService(parts, keys_ttl_s)
        self.access = Access(self.keys, api_key, viewer_token, metrics_token)

    @classmethod
    def from_settings(cls, settings: Settings) -> "Core":
        """A core on the configured database (migrated), not yet started."""
        return cls(Store.from_url(settings.resolved_database_url()), idle_s=settings.session_idle_s,
                   recent_window_s=settings.recent_window_s, writer_batch_max=settings.writer_batch_max,
                   shared=settings.message_queue is not None, max_ahead_s=settings.max_clock_ahead_s,
                   max_behind_s=settings.max_clock_behind_s,
                   max_setup_bytes=settings.max_setup_bytes, max_exports=settings.max_exports,
                   api_key=settings.api_key, viewer_token=settings.viewer_token,
                   metrics_token=settings.metrics_token, keys_ttl_s=settings.keys_ttl_s)

    def start(self) -> "Core":
        """Start the writer and load the active sessions (frames may arrive for them at once).

        Their lap timers are rebuilt from the stored frames now, in the background (timing.py).
        """
        self.writer.start()
        active = self.store.sessions_with_status("active")
        for row in active:
            live = self.cache.get(row["id"])
            with live.lock:
                self.timing.processors(live)
        self.messages.load_active([row["id"] for row in active])
        return self

    def housekeeping(self) -> list[str]:
        """What runs every second: idle sessions expire, time-based alerts fire, unused entries are evicted."""
        expired = self.lifecycle.expire_idle()
        self.alerts.tick()
        self.messages.tick()
        self.cache.evict()
        return expired

    def health(self, timeout_s: float = HEALTH_TIMEOUT_S) -> dict[str, Any]:
        """Whether the database takes a write through the single writer within ``timeout_s``, and no write
        failed in the last ``HEALTH_FAILURE_S`` (Health).

        A full disk (a tiny write may still fit where a batch of frames does not), a database locked past
        its busy timeout, or a writer that does not keep up all fail it. A write that failed lately, or a
        transaction under way for longer than ``HEALTH_STALLED_S`` (a lock held elsewhere), fails it at once
        without queueing a check behind it.
        """
        started = time.monotonic()
        failed_at, busy_s = self.writer.failed_at, self.writer.busy_s
        if failed_at is not None and started - failed_at <= HEALTH_FAILURE_S:
            database = False
        elif busy_s > HEALTH_STALLED_S:
            database = False
        else:
            try:
                self.writer.call(self.store.write_check, timeout=timeout_s)
                failed_at = self.writer.failed_at
                database = failed_at is None or time.monotonic() - failed_at > HEALTH_FAILURE_S
            except Exception as exc:  # noqa: BLE001 - health reports, never raises
                log.warning("health check: the database did not take a write: %s", exc)
                database = False
        return {"ok": database, "database": database, "writer_backlog": self.writer.backlog,
                "write_ms": round((time.monotonic() - started) * 1000, 1)}

    def close(self) -> None:
        """Write what is queued and stop the writer (safe to call twice)."""
        self.writer.stop()
        self.imports.close()
        self.compare.close()
