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

Over LoRa (``from_lora``, called by the car's radio, ``dashboard/car/mesh.py``): a message packet is held the
same way (the inbox dedupes it against the same message over the main link by short id) and answered with a
``delivered`` report to send back over the radio; a repeat of it (the pit did not hear the report) is answered
with the newest state reported for it again. A close packet takes the message off the display. Every seen and
answered also goes to ``on_report`` (the monitor sends it over the radio while the main link is down), besides
the outbox as above. A message received over LoRa only has the id ``UUID(int=short_id << 96)``: the server
resolves it by short id.
"""
from __future__ import annotations

import collections
import json
import logging
import threading
import time
from typing import Any, Callable

from dashboard.car.outbox import Outbox
from dashboard.errors import DashboardError
from dashboard.telemetry import downlink
from dashboard.telemetry.messages import FINAL_STATES, Inbox, Message, MessageError

log = logging.getLogger(__name__)

META_KEY = "messages.inbox"
REPORT_EVENT = "message.report"  # an outbox event the uplink sends as /monitor `message.report`
Position = Callable[[], dict[str, Any]]  # {"lat", "lon"} of the car now (empty when unknown)
REPORTS_KEPT = 64  # the newest report of the last messages, sent again when the pit repeats one over LoRa


class CarMessages:
    """The inbox of one car, persisted in its outbox; thread-safe (the uplink's thread, the control's)."""

    def __init__(self, outbox: Outbox, position: Position | None = None, clock: Callable[[], float] = time.time,
                 on_change: Callable[[], None] | None = None) -> None:
        self.outbox = outbox
        self.position = position or dict
        self.clock = clock
        self.on_change = on_change  # the uplink's wake: a report is queued
        self.on_report: Callable[[dict[str, Any]], None] | None = None  # every seen/answered, with its short id
        self._reported: collections.OrderedDict[int, dict[str, Any]] = collections.OrderedDict()  # short id ->
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

    # ------------------------------------------------------------ from the radio
    def from_lora(self, packet: downlink.Packet, car_id: str, session_id: str | None) -> dict[str, Any] | None:
        """A message or close heard over LoRa; the report to send back over the radio (None: nothing to say)."""
        if isinstance(packet, downlink.DownlinkClose):
            with self._lock:
                if self.inbox.close(packet.short_id):
                    self.outbox.save_with_events(META_KEY, self._snapshot(), [])
                    log.info("message %d off the display (%s, over LoRa)", packet.short_id, packet.state)
            return None
        if not isinstance(packet, downlink.DownlinkMessage):
            return None
        now = self.clock()
        try:
            message = packet.to_message(car_id, now)
        except MessageError as exc:  # expired on the way
            log.info("a message over LoRa was not taken: %s", exc.message)
            return None
        with self._lock:
            if self.inbox.receive(message):
                if session_id:
                    self.sessions[message.id] = session_id
                self.outbox.save_with_events(META_KEY, self._snapshot(), [])
                report = self._report(message.id, message.short_id, "delivered", None, now)
                log.info("message %d received over LoRa", message.short_id)
            elif message.short_id in self._reported:
                report = self._reported[message.short_id]  # the pit repeats it: it did not hear this
            elif message.short_id in self.inbox.held:
                state = "seen" if self.inbox.is_seen(message.short_id) else "delivered"
                report = self._report(self.inbox.held[message.short_id].message.id, message.short_id, state, None,
                                      now)
            else:
                return None  # finished long ago or before a restart: the main link carries its answer
        return report

    def _report(self, message_id: str, short_id: int, state: str, answer: str | None, t: float) -> dict[str, Any]:
        """A report of one state (remembered as the message's newest), with the car's position."""
        report: dict[str, Any] = {"message_id": message_id, "short_id": short_id, "state": state, "t": t}
        if answer is not None:
            report["answer"] = answer
        where = self.position()
        if where.get("lat") is not None and where.get("lon") is not None:
            report.update(lat=where["lat"], lon=where["lon"])
        self._reported[short_id] = report
        self._reported.move_to_end(short_id)
        while len(self._reported) > REPORTS_KEPT:
            self._reported.popitem(last=False)
        return report

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
            radio = self._report(message_id, held.short_id, state, value, self.clock())
            report = {"session_id": session_id, **{k: v for k, v in radio.items() if k != "short_id"}}
            self.outbox.save_with_events(META_KEY, self._snapshot(), [(REPORT_EVENT, report)])
        log.info("message %s %s", message_id, state)
        if self.on_change is not None:
            self.on_change()
        if self.on_report is not None:
            try:
                self.on_report(radio)
            except Exception:  # noqa: BLE001 - the radio is a side channel: the outbox holds the report
                log.exception("the LoRa report of message %s failed", message_id)
        return True
