"""Pit-to-car messages at the server: send, deliver over ``/monitor``, the car's reports, cancel, expiry, box.

The rules are ``dashboard.telemetry.messages`` (states, the dedupe rule); this service keeps each
session's records in memory and stores every transition as an entry of the session's event log
(``message.<state>``, timestamped with the transition's time, with the lap and position of the car),
so the log and the exports tell the whole story and the records are rebuilt from it after a restart
(no table of their own: the log is the storage).

Delivery over the main link: ``deliver`` (set by the hub) emits ``message`` to the car's monitor
connections with an ack; the car's ack is ``delivered``. A message not yet delivered is sent again on
the housekeeping tick every ``RESEND_S`` and at once when the car starts (or resumes) a session.
A ``box`` message closes when the session's pit wall reports ``pit.entry`` (``on_pit``, called by the
timing service as the live frames are fed). Canned messages are a pit-wall setting (``canned/*``).

Several processes (``DASHBOARD_MESSAGE_QUEUE``): the pit may send from one process while the car is connected to
another. Delivery then goes to the car's room through the message queue, with its ack returned to the sender
(python-socketio's cross-host callbacks). Each process keeps its records as a cache of the log: before it answers
the pit or applies a car's report, and before its tick expires or resends, it takes from the log every message
that another process moved further along. The log's record ids (``message:<id>:<state>``) keep each transition
stored once whichever process made it, and a reload keeps the first final state it finds.

Delivery over LoRa: while the car's main link is down or stale (``main_link_up``, set by the hub: no
``/monitor`` connection of the car, or no frame for ``message_lora_after_s``), an undelivered message is also
handed to the connected pit gateways (``hand_down``: the ``downlink`` event, acked; a gateway that will transmit
it makes it ``sent`` over ``lora``), on the same resend tick. Once a message handed down moves on (delivered,
seen or answered over either link) the gateways are told, so they stop repeating it; its cancel, expiry or close
goes down too (a ``close`` packet), as does that of a message the car holds while its main link is down. The
gateway's reports (``lora_report``: car hash and short id) go through the same dedupe rule, with link ``lora``.
With several processes the main link's state is read from this process's connections only: a process without
the car's connection may hand a message to its gateways while another's connection carries it (the car dedupes).
"""
from __future__ import annotations

import logging
import threading
import uuid
from typing import Any, Callable

from dashboard.errors import NotFound
from dashboard.server.changes import Change
from dashboard.server.live import LiveSession
from dashboard.server.service import Service, Shared
from dashboard.server.team import setting_key
from dashboard.telemetry.lora import car_hash as hash_of
from dashboard.telemetry.messages import (
    CAR_STATES,
    FINAL_STATES,
    CannedMessage,
    Message,
    MessageError,
    MessageEvent,
    MessageRecord,
    canned_from_list,
    close_on_pit_event,
    due_to_expire,
    further_along,
    new_message,
    queue,
    transition,
)

log = logging.getLogger(__name__)

RESEND_S = 5.0  # a message the car has not acked is sent again this often while it is connected
EVENT_PREFIX = "message."
EVENT_TYPES = tuple(EVENT_PREFIX + s for s in ("queued", "sent", "delivered", "seen", "answered", "cancelled",
                                                "expired", "closed"))
UNDELIVERED = ("queued", "sent")

SHORT_ID_BITS = 96  # a message the car received over LoRa has the id UUID(int=short_id << 96) (downlink.py)

# deliver(car_id, payload, on_ack) -> True when it was emitted to at least one connection of the car
Deliver = Callable[[str, dict[str, Any], Callable[..., None]], bool]
# hand_down(payload, on_ack) -> True when it was emitted to at least one pit gateway
HandDown = Callable[[dict[str, Any], Callable[..., None]], bool]


class MessageService(Service):
    """Each session's messages; sends, reports, cancels, expiries and box closes, logged as they happen."""

    def __init__(self, shared: Shared, timing: Any) -> None:
        super().__init__(shared)
        self.timing = timing
        timing.on_pit = self.on_pit
        self.deliver: Deliver | None = None
        self.hand_down: HandDown | None = None
        self.main_link_up: Callable[[str], bool] = lambda car_id: True  # the hub's: connected and fresh frames
        self._handed: set[str] = set()  # message ids handed to the gateways and not finished
        self._lock = threading.RLock()
        self._records: dict[str, dict[str, MessageRecord]] = {}  # session -> message id -> record
        self._sent_at: dict[str, float] = {}  # message id -> when it was last emitted (monotonic-free: clock)

    # ------------------------------------------------------------ storage
    def _session(self, session_id: str, fresh: bool = False) -> tuple[LiveSession, dict[str, MessageRecord]]:
        """The session and its records; ``fresh`` in shared mode catches up with what other processes logged."""
        live = self.cache.get(session_id, fresh=False)
        with self._lock:
            records = self._records.get(live.id)
        if records is None:
            loaded = self._load(live.id)
            with self._lock:
                records = self._records.setdefault(live.id, loaded)
        elif fresh and self.cache.shared:
            self._catch_up(live.id, records)
        return live, records

    def _catch_up(self, session_id: str, records: dict[str, MessageRecord]) -> None:
        """Take from the log each message another process moved further along than this one knows."""
        stored = self._load(session_id)
        with self._lock:
            for message_id, record in stored.items():
                mine = records.get(message_id)
                if mine is None or further_along(record.state, mine.state):
                    records[message_id] = record
                    if record.final:
                        self._sent_at.pop(message_id, None)

    def _load(self, session_id: str) -> dict[str, MessageRecord]:
        """A session's records from its log (the events are stored as the transitions made them)."""
        records: dict[str, MessageRecord] = {}
        for entry in self.store.events_of_types(session_id, EVENT_TYPES):
            payload = entry["payload"]
            try:
                if entry["event_type"] == "message.queued":
                    message = Message.from_dict(payload["message"])
                    records[message.id] = queue(message)
                    continue
                record = records.get(payload["message_id"])
                if record is None or record.final:  # the first final state stands (another process's later one
                    continue  # could be logged in a race: transition would have refused it here)
                event = MessageEvent(**{k: payload.get(k) for k in MessageEvent.__dataclass_fields__})
                records[record.message.id] = MessageRecord(
                    record.message, event.state,
                    event.answer if event.state == "answered" else record.answer, record.events + (event,))
            except (KeyError, TypeError, MessageError):
                log.warning("session %s: a stored message entry could not be read; left out", session_id)
        return records

    def load_active(self, session_ids: list[str]) -> None:
        """Read the messages of these sessions (the active ones at start): expiry and resends run for them."""
        for session_id in session_ids:
            self._session(session_id)

    def _log(self, session_id: str, record: MessageRecord, events: tuple[MessageEvent, ...]) -> None:
        for event in events:
            payload = event.to_dict()
            if event.state == "queued":
                payload["message"] = record.message.to_dict()
            self.events.log(session_id, EVENT_PREFIX + event.state, payload,
                            record_id=f"message:{event.message_id}:{event.state}", timestamp=event.t)
        if record.final:
            with self._lock:
                self._sent_at.pop(record.message.id, None)
        with self._lock:
            handed = record.message.id in self._handed
        if handed and any(e.state in CAR_STATES for e in events):
            self._to_gateways(session_id, record)  # the car has it: the gateways stop repeating it
        self.bus.tell(Change.MESSAGE, self.out(session_id, record))

    @staticmethod
    def out(session_id: str, record: MessageRecord) -> dict[str, Any]:
        """MessageOut."""
        answered = next((e.lap for e in record.events if e.state == "answered"), None)
        return {**record.message.to_dict(), "session_id": session_id, "state": record.state,
                "answer": record.answer, "answered_lap": answered,
                "events": [e.to_dict() for e in record.events]}

    def _where(self, live: LiveSession) -> dict[str, Any]:
        """The car's lap and position now (the latest values the session has)."""
        timing = getattr(live, "timing", None)
        timer = getattr(timing, "timer", None)
        lap = timer.current_lap if timer is not None else None
        lat, lon = live.latest.get("lat"), live.latest.get("lon")
        if lat is None or lon is None:
            return {"lap": lap}
        return {"lap": lap, "lat": lat[0], "lon": lon[0]}

    def _apply(self, live: LiveSession, records: dict[str, MessageRecord], message_id: str, state: str,
               **kwargs: Any) -> tuple[MessageRecord, bool]:
        with self._lock:
            record = records.get(message_id)
            if record is None:
                raise NotFound(f"no message {message_id[:64]!r} in session {live.id}", field="message_id")
            where = {} if "lap" in kwargs or "lat" in kwargs else self._where(live)
            step = transition(record, state, **{**where, **kwargs})
            records[message_id] = step.record
        if not step.duplicate:
            self._log(live.id, step.record, step.events)
        return step.record, step.duplicate

    # ------------------------------------------------------------ the pit's side
    def list(self, session_id: str) -> dict[str, Any]:
        """MessageList: the session's messages, oldest first."""
        live, records = self._session(session_id, fresh=True)
        with self._lock:
            items = sorted(records.values(), key=lambda r: r.message.created_t)
        return {"items": [self.out(live.id, r) for r in items]}

    def send(self, session_id: str, body: dict[str, Any], created_by: str) -> dict[str, Any]:
        """A new message to the session's car, queued and sent at once when the car is connected."""
        live, records = self._session(session_id, fresh=True)
        car_id = live.row.get("car_id")
        if not car_id:
            raise MessageError("this session has no car to send to", field="session_id")
        text, options = body.get("text"), {}
        if body.get("canned") is not None:
            if text is not None:
                raise MessageError("give text or canned, not both", field="canned")
            canned = self.canned()
            index = body["canned"]
            if index >= len(canned):
                raise MessageError(f"canned {index} is not one of the {len(canned)} canned messages", field="canned")
            chosen = canned[index]
            text, options = chosen.text, {"asks_answer": chosen.asks_answer, "priority": chosen.priority,
                                          "close_on": chosen.close_on}
        elif text is None:
            raise MessageError("give text or canned", field="text")
        for key in ("asks_answer", "priority", "close_on"):
            if body.get(key) is not None:
                options[key] = body[key]
        with self._lock:
            taken = {r.message.short_id for r in records.values()}
            message = new_message(car_id, text, created_by=created_by, now=self.clock(), taken=taken,
                                  ttl_s=body.get("ttl_s") or 600.0, **options)
            record = queue(message, by=created_by)
            records[message.id] = record
        self._log(live.id, record, record.events)
        log.info("session %s: message %s queued for car %s (key %s)", live.id, message.id, car_id, created_by)
        self._send_to_car(live.id, record)
        with self._lock:
            return self.out(live.id, records[message.id])

    def cancel(self, session_id: str, message_id: str, by: str) -> dict[str, Any]:
        """The pit takes a message back (MessageStateError when it is final already)."""
        live, records = self._session(session_id, fresh=True)
        record, _ = self._apply(live, records, message_id, "cancelled", t=self.clock(), by=by)
        self._send_to_car(live.id, record)  # off the display
        return self.out(live.id, record)

    # ------------------------------------------------------------ delivery over /monitor
    def _send_to_car(self, session_id: str, record: MessageRecord) -> bool:
        if self.deliver is None:
            return False
        message = record.message
        payload = {**message.to_dict(), "session_id": session_id, "state": record.state}
        if not record.final:
            with self._lock:
                self._sent_at[message.id] = self.clock()

        def on_ack(*args: Any) -> None:
            ack = args[0] if args else None
            if isinstance(ack, dict) and ack.get("ok") is True and record.state not in FINAL_STATES:
                self.delivered(session_id, message.id)

        main_up = self.main_link_up(message.car_id)
        if not main_up or (record.final and message.id in self._handed):
            self._over_lora(session_id, record)
        if not self.deliver(message.car_id, payload, on_ack):
            return False
        if record.state == "queued":
            live, records = self._session(session_id)
            self._apply(live, records, message.id, "sent", t=self.clock(), via="main")
        return True

    # ------------------------------------------------------------ delivery over LoRa (pit gateways)
    def _over_lora(self, session_id: str, record: MessageRecord) -> None:
        """The main link is down or stale: an open message goes to the gateways; a final one, if the car may hold it."""
        if record.final:
            reached = {e.state for e in record.events}
            if record.message.id not in self._handed and not reached & CAR_STATES:
                return  # never on the car: nothing to take off its display
        elif record.state not in UNDELIVERED:
            return  # delivered: the car has it, and its answer comes back by itself
        self._to_gateways(session_id, record)

    def _to_gateways(self, session_id: str, record: MessageRecord) -> bool:
        """Emit ``downlink`` with the message's state to the pit gateways; their ack may make it ``sent`` (lora)."""
        if self.hand_down is None:
            return False
        message = record.message
        payload = {"car_id": message.car_id, "car_hash": hash_of(message.car_id), "session_id": session_id,
                   "message": {**message.to_dict(), "session_id": session_id, "state": record.state},
                   "state": record.state}

        def on_ack(*args: Any) -> None:
            ack = args[0] if args else None
            if isinstance(ack, dict) and ack.get("ok") is True and ack.get("transmitting") is True:
                self._sent_over_lora(session_id, message.id)

        with self._lock:
            first = message.id not in self._handed
            if record.final:
                self._handed.discard(message.id)
            else:
                self._handed.add(message.id)
        emitted = self.hand_down(payload, on_ack)
        if emitted:  # every resend tick while the main link is down: said once per message and state change
            log.log(logging.INFO if first or record.final else logging.DEBUG,
                    "session %s: message %s (%s) handed to the pit gateways", session_id, message.id, record.state)
        return emitted

    def _sent_over_lora(self, session_id: str, message_id: str) -> None:
        try:
            live, records = self._session(session_id)
            with self._lock:
                queued = records[message_id].state == "queued"
            if queued:
                self._apply(live, records, message_id, "sent", t=self.clock(), via="lora")
        except (KeyError, NotFound, MessageError) as exc:
            log.debug("gateway ack of message %s not applied: %s", message_id, exc)

    def lora_report(self, report: dict[str, Any]) -> dict[str, Any]:
        """A car's report heard over LoRa (``lora.report`` from a gateway): the message by car and short id."""
        car_id, car_hash, short_id = report.get("car_id"), report["car_hash"], report["short_id"]
        with self._lock:
            found = [(sid, r) for sid, records in self._records.items() for r in records.values()
                     if r.message.short_id == short_id and hash_of(r.message.car_id) == car_hash
                     and car_id in (None, r.message.car_id)]
        if not found:
            raise NotFound(f"no message {short_id} of car hash {car_hash}", field="short_id")
        session_id, record = max(found, key=lambda item: item[1].message.created_t)
        live, records = self._session(session_id, fresh=True)
        kwargs = {k: report.get(k) for k in ("t", "lap", "lat", "lon")}
        if kwargs["lap"] is None:
            kwargs["lap"] = self._where(live).get("lap")
        if report["state"] == "answered":
            kwargs["answer"] = report.get("answer")
        elif report.get("answer") is not None:
            raise MessageError("only answered carries an answer", field="answer")
        done, duplicate = self._apply(live, records, record.message.id, report["state"], via="lora", **kwargs)
        log.info("session %s: message %s %s over LoRa%s", live.id, record.message.id, report["state"],
                 " (duplicate)" if duplicate else "")
        return {"ok": True, "duplicate": duplicate, "state": done.state, "session_id": live.id,
                "message_id": record.message.id}

    def delivered(self, session_id: str, message_id: str) -> None:
        """The car acked a message: delivered (a repeat ack changes nothing)."""
        try:
            live, records = self._session(session_id, fresh=True)
            self._apply(live, records, message_id, "delivered", t=self.clock(), via="main")
        except (NotFound, MessageError) as exc:  # a late ack of a finished message: nothing to do
            log.debug("ack of message %s not applied: %s", message_id, exc)

    def report(self, session_id: str, report: dict[str, Any]) -> dict[str, Any]:
        """A ``message.report`` from the car: seen or answered (with the car's time, lap and position)."""
        live, records = self._session(session_id, fresh=True)
        kwargs = {k: report.get(k) for k in ("t", "lap", "lat", "lon")}
        where = self._where(live)  # what the car does not know (its lap: the server times the laps) from here
        if kwargs["lap"] is None:
            kwargs["lap"] = where.get("lap")
        if kwargs["lat"] is None and kwargs["lon"] is None:
            kwargs["lat"], kwargs["lon"] = where.get("lat"), where.get("lon")
        if report["state"] == "answered":
            kwargs["answer"] = report.get("answer")
        elif report.get("answer") is not None:
            raise MessageError("only answered carries an answer", field="answer")
        message_id = self._resolve(records, report["message_id"])
        record, duplicate = self._apply(live, records, message_id, report["state"], via="main", **kwargs)
        return {"ok": True, "duplicate": duplicate, "state": record.state}

    def _resolve(self, records: dict[str, MessageRecord], message_id: str) -> str:
        """The message's id; a message the car received over LoRa only knows it as UUID(int=short id << 96)."""
        if message_id in records:
            return message_id
        try:
            value = uuid.UUID(message_id).int
        except ValueError:
            return message_id  # NotFound, naming it, in _apply
        if value & ((1 << SHORT_ID_BITS) - 1):
            return message_id
        short_id = value >> SHORT_ID_BITS
        with self._lock:
            return next((mid for mid, r in records.items() if r.message.short_id == short_id), message_id)

    def car_connected(self, car_id: str, session_id: str | None = None) -> int:
        """The car started (or resumed) ``session_id``: every message of it not yet delivered is sent again."""
        if session_id is not None:
            self._session(session_id, fresh=True)  # loaded, and caught up with the other processes
        return self._resend(lambda record: record.message.car_id == car_id)

    def _resend(self, which: Callable[[MessageRecord], bool]) -> int:
        with self._lock:
            due = [(sid, r) for sid, records in self._records.items() for r in records.values()
                   if r.state in UNDELIVERED and which(r)]
        return sum(self._send_to_car(sid, r) for sid, r in due)

    # ------------------------------------------------------------ the tick and the pit lane
    def tick(self) -> None:
        """Housekeeping: expired messages expire (and leave the display), undelivered ones are sent again."""
        now = self.clock()
        with self._lock:
            sessions = list(self._records.items())
            sent_at = dict(self._sent_at)

        def resend_due(record: MessageRecord) -> bool:
            return now - sent_at.get(record.message.id, 0.0) >= RESEND_S

        if self.cache.shared:  # what other processes did first: answered there is not expired or resent here
            for session_id, records in sessions:
                with self._lock:  # read the log only where this tick is about to act
                    acting = due_to_expire(list(records.values()), now) or any(
                        r.state in UNDELIVERED and resend_due(r) for r in records.values())
                if acting:
                    try:
                        self._catch_up(session_id, records)
                    except Exception:  # noqa: BLE001 - the database may be away: the tick goes on with what it has
                        log.warning("session %s: messages not caught up with the log", session_id, exc_info=True)
        for session_id, records in sessions:
            with self._lock:
                due = due_to_expire(list(records.values()), now)
            for record in due:
                try:
                    live = self.cache.get(session_id, fresh=False)
                    done, _ = self._apply(live, records, record.message.id, "expired", t=now)
                except Exception:  # noqa: BLE001 - one message must not stop the tick
                    log.exception("message %s could not expire", record.message.id)
                    continue
                self._send_to_car(session_id, done)
        self._resend(resend_due)

    def on_pit(self, live: LiveSession, event: dict[str, Any]) -> None:
        """A pit event of the session's live frames (caller holds the session's lock): box messages close."""
        with self._lock:
            records = self._records.get(live.id)
            if not records:
                return
            where = self._where(live)
            steps = close_on_pit_event(list(records.values()), event, **where)
            for step in steps:
                records[step.record.message.id] = step.record
        for step in steps:
            self._log(live.id, step.record, step.events)
            self._send_to_car(live.id, step.record)

    # ------------------------------------------------------------ canned messages
    def canned(self) -> tuple[CannedMessage, ...]:
        """The team's canned messages (the defaults until the team stores its own)."""
        row = self.store.setting(setting_key("canned"))
        return canned_from_list(row["value"]["items"] if row else None)

    def canned_out(self) -> dict[str, Any]:
        """CannedList."""
        return {"items": [c.to_dict() for c in self.canned()]}

    def save_canned(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        """Replace the team's canned messages (MessageError naming the entry)."""
        canned = canned_from_list(items)
        row = {"id": setting_key("canned"), "kind": "canned", "car_id": None, "session_id": None,
               "value": {"items": [c.to_dict() for c in canned]}, "updated_at": self.clock()}
        self.writer.call(lambda conn: self.store.save_setting(row, conn=conn))
        return self.canned_out()
