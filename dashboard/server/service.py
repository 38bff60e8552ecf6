"""What every service of a core works with, given once: the live cache, the store, the single writer,
the bus to the hub, the session log and the clock (``core.py`` builds it)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from dashboard.server.changes import Bus
from dashboard.server.eventlog import EventLog
from dashboard.server.live import LiveCache
from dashboard.server.store import Store
from dashboard.server.writer import Writer


@dataclass(frozen=True)
class Shared:
    """The parts one core's services share."""

    cache: LiveCache
    store: Store
    writer: Writer
    bus: Bus
    events: EventLog
    clock: Callable[[], float]


class Service:
    """Base of the core's services: the shared parts as attributes."""

    def __init__(self, shared: Shared) -> None:
        self.cache = shared.cache
        self.store = shared.store
        self.writer = shared.writer
        self.bus = shared.bus
        self.events = shared.events
        self.clock = shared.clock
