"""The session event log: every entry written by the single writer, told to viewers once stored."""
from __future__ import annotations

from typing import Any, Callable

from dashboard.server.changes import Bus, Change
from dashboard.server.store import Store
from dashboard.server.views import public_event
from dashboard.server.writer import Ticket, Writer


class EventLog:
    """Entries of sessions' logs: status changes, setups, laps, alerts, what the car reported."""

    def __init__(self, store: Store, writer: Writer, bus: Bus, clock: Callable[[], float]) -> None:
        self.store = store
        self.writer = writer
        self.bus = bus
        self.clock = clock

    def entry(self, event_type: str, payload: dict[str, Any], record_id: str | None = None,
              timestamp: float | None = None) -> dict[str, Any]:
        """An entry not yet stored: type, payload, when it happened and when the server learnt it."""
        now = self.clock()
        return {"record_id": record_id, "event_type": event_type, "timestamp": timestamp or now,
                "payload": payload, "received_at": now}

    def log(self, session_id: str, event_type: str, payload: dict[str, Any], record_id: str | None = None,
            timestamp: float | None = None, background: bool = True) -> Ticket:
        """Queue an entry; it is told to the session's viewers once stored. The ticket's result is the
        stored entry, or None when its record_id was logged before. ``background``: kept and retried while
        the database refuses writes (the server's own entries); a car's entry is not (the car sends again)."""
        event = self.entry(event_type, payload, record_id, timestamp)
        return self.writer.submit(lambda conn: self.store.add_event(session_id, event, conn=conn), self._stored,
                                  background=background)

    def record(self, session_id: str, record_id: str, event_type: str, payload: dict[str, Any]) -> bool:
        """Log an entry the car reported and wait for it; False (nothing logged) if its record_id was seen."""
        return self.log(session_id, event_type, payload, record_id, background=False).get() is not None

    def tell(self, stored: dict[str, Any] | None) -> None:
        """Tell viewers about an entry stored by another job (a status change, a setup)."""
        if stored is not None:
            self.bus.tell(Change.EVENT, public_event(stored))

    def _stored(self, ticket: Ticket) -> None:
        if ticket.error is None:
            self.tell(ticket.result)

    def events(self, session_id: str, after_id: int = 0, limit: int = 1000) -> list[dict[str, Any]]:
        """A session's log in order (EventOut each)."""
        return [public_event(e) for e in self.store.events(session_id, after_id, limit)]
