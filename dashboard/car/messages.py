"""The car's side of pit-to-car messages: the inbox the driver display reads, persisted in the outbox.

The uplink hands every ``message`` from the server to ``CarMessages.receive``, whose answer is the
ack (``{"ok": true}``: the server marks the message delivered). The inbox (``telemetry.messages.Inbox``)
is saved in the outbox's meta table before the ack, so a monitor killed after acking still holds the
message, and one killed before acking gets it again (the inbox does not take a repeat: not shown twice).

The driver display (``car/display/``) and the local control (``car/inbox_control.py``) call ``pending``,
``mark_seen`` and ``answer``. A seen or answered message queues a ``message.report`` in the outbox's
events table in the same transaction that saves the inbox (``Outbox.save_with_events``): after a
kill -9 the answer is either applied and queued, or neither; the uplink sends the queued reports
like other events until the server acks them (the server applies each state once).
"""
from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any, Callable

from dashboard.car.outbox import Outbox
from dashboard.errors import DashboardError
from dashboard.telemetry.messages import FINAL_STATES, Inbox, Message, MessageError

log = logging.getLogger(__name__)

META_KEY = "messages.inbox"
REPORT_EVENT = "message.report"  # an outbox event the uplink sends as /monitor `message.report`
Position = Callable[[], dict[str, Any]]  # {"lat", "lon"} of the car now (empty when unknown)


class CarMessages:
    """The inbox of one car, persisted in its outbox; thread-safe (the uplink's thread, the control's)."""

    def __init__(self, outbox: Outbox, position: Position | None = None, clock: Callable[[], float] = time.time,
                 on_change: Callable[[], None] | None = None) -> None:
        self.outbox = outbox
        self.position = position or dict
        self.clock = clock
        self.on_change = on_change  # the uplink's wake: a report is queued
        self._lock = threading.Lock()
        self.inbox, self.sessions = self._restore()

    def _restore(self) -> tuple[Inbox, dict[str, str]]:
        raw = self.outbox.get_meta(META_KEY)
        if raw is None:
            return Inbox(), {}
        try:
            data = json.loads(raw)
            return Inbox.from_dict(data["inbox"]), {str(k): str(v) for k, v in data["sessions"].items()}
        except (ValueError, KeyError, TypeError, AttributeError, MessageError) as exc:
            log.warning("the stored inbox could not be read (%s): starting empty", exc)
            return Inbox(), {}

    def _snapshot(self) -> str:
        held = {h.message.id for h in self.inbox.held.values()}
        self.sessions = {mid: sid for mid, sid in self.sessions.items() if mid in held}
        return json.dumps({"inbox": self.inbox.to_dict(), "sessions": self.sessions})

    # ------------------------------------------------------------ from the server
    def receive(self, data: Any) -> dict[str, Any]:
        """A ``message`` from the server: held (once) and saved; the answer is the ack."""
        try:
            if not isinstance(data, dict) or not isinstance(data.get("session_id"), str):
                raise MessageError("a message needs its session_id", field="session_id")
            fields = {k: v for k, v in data.items() if k not in ("session_id", "state")}
            message = Message.from_dict(fields)
        except DashboardError as exc:
            log.warning("a message from the server was refused: %s", exc.message)
            return {"ok": False, "error": exc.to_dict()}
        with self._lock:
            if data.get("state") in FINAL_STATES:
                changed = self.inbox.close(message.short_id)
            else:
                changed = self.inbox.receive(message)
                if changed:
                    self.sessions[message.id] = data["session_id"]
            if changed:
                self.outbox.save_with_events(META_KEY, self._snapshot(), [])
        if changed:
            log.info("message %s %s", message.id, "off the display" if data.get("state") in FINAL_STATES
                     else "received")
        return {"ok": True}

    # ------------------------------------------------------------ for the driver display
    def pending(self) -> list[dict[str, Any]]:
        """The open messages in display order (the first is what the display shows), with ``seen``."""
        now = self.clock()
        with self._lock:
            if self.inbox.expire(now):  # past their expiry: finished here too (the server expires them as well)
                self.outbox.save_with_events(META_KEY, self._snapshot(), [])
            return [{**m.to_dict(), "seen": self.inbox.is_seen(m.short_id)} for m in self.inbox.pending(now)]

    def mark_seen(self, message_id: str) -> bool:
        """The display showed it: True (and ``seen`` reported) the first time only."""
        return self._act(message_id, "seen", None)

    def answer(self, message_id: str, value: str) -> bool:
        """The driver's answer: True (and reported) when applied; False for a repeat or an unknown message.

        MessageStateError when the message does not take this answer.
        """
        return self._act(message_id, "answered", value)

    def _act(self, message_id: str, state: str, value: str | None) -> bool:
        with self._lock:
            held = next((h.message for h in self.inbox.held.values() if h.message.id == message_id), None)
            if held is None:
                return False
            session_id = self.sessions.get(message_id)
            if state == "seen":
                changed = self.inbox.mark_seen(held.short_id)
            else:
                if not self.inbox.is_seen(held.short_id):
                    self.inbox.mark_seen(held.short_id)  # answering it shows it was seen
                changed = self.inbox.answer(held.short_id, value or "")
            if not changed:
                return False
            report: dict[str, Any] = {"session_id": session_id, "message_id": message_id, "state": state,
                                      "t": self.clock()}
            if value is not None:
                report["answer"] = value
            where = self.position()
            if where.get("lat") is not None and where.get("lon") is not None:
                report.update(lat=where["lat"], lon=where["lon"])
            self.outbox.save_with_events(META_KEY, self._snapshot(), [(REPORT_EVENT, report)])
        log.info("message %s %s", message_id, state)
        if self.on_change is not None:
            self.on_change()
        return True
