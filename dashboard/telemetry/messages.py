"""Pit-to-car messages: the message, its states, the dedupe rule and the car's inbox. Pure, no I/O.

A crew sends the driver a short message ("BOX THIS LAP", "FUEL OK?"); the car's monitor
acknowledges it, the driver display shows it, the driver answers with a button. It may travel
over the main link (``/monitor``) or over LoRa (``dashboard.telemetry.downlink``), and the same
report may arrive over both, or twice after a restart. This module decides, once, what each
arrival does. No clock is read: every time is passed in.

The message
    ``id`` is a UUID4 (the server's key); ``short_id`` is a 32-bit number carried in the
    LoRa packet (``short_id_of``: the UUID's first 4 bytes, 0 excluded). The server draws a
    new UUID while the short id is already one of the car's messages (``new_message(taken=)``),
    so (car, short id) names one message for good: the odds a redraw is needed are 1 in 4
    billion per message already sent to the car. Text: at most ``MAX_TEXT_CHARS`` (40)
    characters and ``MAX_TEXT_BYTES`` (48) bytes of UTF-8 (the LoRa budget), no control
    characters, spaces collapsed. ``created_by`` is the sender's key id, never a person's name.

States
    ``queued`` → ``sent`` → ``delivered`` (the monitor acked it) → ``seen`` (on the driver
    display) → one final state: ``answered`` (``yes``/``no``; ``ok`` when the message asked
    nothing and the driver dismissed it), ``cancelled`` (by the pit), ``expired`` (its
    ``expires_t`` passed) or ``closed`` (its condition met: a ``box`` message when the car
    enters the pit lane). A ``box`` message that asks nothing cannot be dismissed: it stays
    on the display until the car is in the pit lane (or the pit cancels it, or it expires).

The dedupe rule (``transition``)
    A report moves a message forwards only. The states are ordered as above (the four final
    states share the last rank), and each (message id, state) is recorded once:

    - a state later than the current one is accepted, even if it skips some: the skipped
      states are *implied* and recorded as events marked ``implied`` with the arriving
      report's time, link and position (``answered`` over LoRa before ``delivered`` over
      the main link: delivered and seen are implied at the answer's time);
    - a state at or before the current one (the same report over the other link, a retry
      after a restart, a ``delivered`` arriving after the answer) changes nothing and
      records nothing (``duplicate``), so no message is shown twice and no answer applied twice;
    - after a final state, the same final state with the same answer is a duplicate; any
      other final state (a second, different answer; an answer after the pit cancelled)
      is refused with ``MessageStateError``: the first final state stands.

    Illegal arrivals are refused with ``MessageStateError`` (a ``Conflict``): an answer the
    message does not take, an expiry before ``expires_t``, ``closed`` for a message without
    a condition, a car-side state decided at the pit or the other way round.

The car's inbox (``Inbox``)
    What the driver display shows: the highest-priority open message (oldest first within a
    priority), then the next. It keeps, by short id, what was received, seen and answered,
    and the short ids of finished messages (the last ``INBOX_MEMORY``), so a packet repeated
    after the answer, or after a restart, is not shown again. The caller persists
    ``Inbox.to_dict()`` whenever a method returns True and restores it with ``Inbox.from_dict``.
"""
from __future__ import annotations

import math
import unicodedata
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from dashboard.errors import Conflict, InvalidInput
from dashboard.telemetry.frames import MAX_T, MIN_T
from dashboard.telemetry.pitlane import PIT_ENTRY

MAX_TEXT_CHARS = 40  # two lines of huge text on a dash screen, and the LoRa packet's budget
MAX_TEXT_BYTES = 48  # UTF-8 bytes: 40 plain letters, fewer with accents or symbols (downlink budget)
MAX_CREATED_BY = 64  # a key id
MAX_CANNED = 24  # canned messages per team: a grid of buttons on the pit page
DEFAULT_TTL_S = 600.0  # a message unanswered for 10 minutes (5-6 laps) is no longer news
MAX_TTL_S = 4 * 3600.0  # an endurance stint
INBOX_MEMORY = 256  # finished short ids the car remembers (a session sends tens of messages)

STATES: tuple[str, ...] = ("queued", "sent", "delivered", "seen", "answered", "cancelled", "expired", "closed")
FINAL_STATES = frozenset({"answered", "cancelled", "expired", "closed"})
_RANK = {"queued": 0, "sent": 1, "delivered": 2, "seen": 3, **{s: 4 for s in FINAL_STATES}}


def further_along(a: str, b: str) -> bool:
    """True when state ``a`` is later than ``b`` (the final states share the last rank)."""
    return _RANK[a] > _RANK[b]
CAR_STATES = frozenset({"delivered", "seen", "answered"})  # reported by the car, over a link
PIT_STATES = frozenset({"queued", "cancelled", "expired", "closed"})  # decided at the pit: no link
LINKS = ("main", "lora")
PRIORITIES: tuple[str, ...] = ("low", "normal", "high", "urgent")  # wire order: 0..3
ANSWERS = ("yes", "no", "ok")  # ok: a message that asks nothing, dismissed by the driver
CLOSE_CONDITIONS = ("box",)  # box: closed when the car enters the pit lane

State = Literal["queued", "sent", "delivered", "seen", "answered", "cancelled", "expired", "closed"]
Via = Literal["main", "lora"]


class MessageError(InvalidInput):
    """A message, canned message or report with a bad field (text too long, unknown priority...)."""

    code = "invalid_message"


class MessageStateError(Conflict):
    """A transition the message's state does not allow; ``state`` is where the message stays."""

    code = "message_state"

    def __init__(self, message: str, state: str, field: str | None = None) -> None:
        super().__init__(message, field=field, state=state)
        self.state = state


# ------------------------------------------------------------------ values
def clean_text(text: Any, field_name: str = "text") -> str:
    """The text as sent: spaces collapsed, checked against the limits; MessageError if it cannot be sent."""
    if not isinstance(text, str):
        raise MessageError(f"{field_name} must be a string", field=field_name)
    cleaned = " ".join(text.split())
    if not cleaned:
        raise MessageError(f"{field_name} is empty", field=field_name)
    if any(unicodedata.category(c).startswith("C") for c in cleaned):
        raise MessageError(f"{field_name} holds control or unassigned characters", field=field_name)
    if len(cleaned) > MAX_TEXT_CHARS:
        raise MessageError(f"{field_name} is {len(cleaned)} characters; at most {MAX_TEXT_CHARS}", field=field_name)
    if len(cleaned.encode("utf-8")) > MAX_TEXT_BYTES:
        raise MessageError(f"{field_name} is over {MAX_TEXT_BYTES} bytes of UTF-8 (fewer accents or symbols)",
                           field=field_name)
    return cleaned


def short_id_of(message_id: str) -> int:
    """The 32-bit id a message carries on LoRa: the first 4 bytes of its UUID (0 is never used)."""
    try:
        value = uuid.UUID(str(message_id)).int >> 96
    except ValueError:
        raise MessageError(f"message id {message_id!r} is not a UUID", field="id") from None
    return value or 1


def _time(t: Any, field_name: str = "t") -> float:
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or not MIN_T <= t <= MAX_T:
        raise MessageError(f"{field_name} {t!r} is not a time in {MIN_T:.0f}..{MAX_T:.0f}", field=field_name)
    return float(t)


def _choice(value: Any, allowed: Sequence[str], field_name: str) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise MessageError(f"{field_name} {value!r} is not one of {', '.join(allowed)}", field=field_name)
    return value


# ------------------------------------------------------------------ the message
@dataclass(frozen=True)
class Message:
    """One message from the pit to one car. Build it with ``new_message`` (which checks every field)."""

    id: str
    short_id: int
    car_id: str
    text: str
    created_by: str  # key id
    created_t: float
    expires_t: float
    asks_answer: bool = False  # yes/no buttons
    priority: str = "normal"
    close_on: str | None = None  # "box" or None

    def answers(self) -> tuple[str, ...]:
        """The answers this message takes: yes/no when it asks, else ok (none for an undismissable box)."""
        if self.asks_answer:
            return ("yes", "no")
        return () if self.close_on == "box" else ("ok",)

    def priority_rank(self) -> int:
        """0 (low) .. 3 (urgent)."""
        return PRIORITIES.index(self.priority)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"id": self.id, "short_id": self.short_id, "car_id": self.car_id, "text": self.text,
                "created_by": self.created_by, "created_t": self.created_t, "expires_t": self.expires_t,
                "asks_answer": self.asks_answer, "priority": self.priority, "close_on": self.close_on}

    @classmethod
    def from_dict(cls, raw: Any) -> Message:
        """The inverse of ``to_dict``, every field checked; MessageError naming the field otherwise."""
        if not isinstance(raw, Mapping):
            raise MessageError("a message must be an object")
        try:
            message = new_message(raw["car_id"], raw["text"], created_by=raw["created_by"], now=raw["created_t"],
                                  asks_answer=raw.get("asks_answer", False), priority=raw.get("priority", "normal"),
                                  close_on=raw.get("close_on"), expires_t=raw["expires_t"], message_id=raw["id"])
        except KeyError as exc:
            raise MessageError(f"a message needs {exc.args[0]}", field=str(exc.args[0])) from None
        if "short_id" in raw and raw["short_id"] != message.short_id:
            raise MessageError("short_id does not match the id", field="short_id")
        return message


def new_message(
    car_id: Any,
    text: Any,
    *,
    created_by: Any,
    now: Any,
    asks_answer: Any = False,
    priority: Any = "normal",
    close_on: Any = None,
    ttl_s: Any = DEFAULT_TTL_S,
    expires_t: Any = None,
    taken: Iterable[int] = (),
    message_id: str | None = None,
) -> Message:
    """A checked message; a fresh UUID4 whose short id is not in ``taken`` (the car's other messages).

    ``expires_t`` wins over ``ttl_s`` when given. ``message_id`` rebuilds a stored message.
    """
    if not isinstance(car_id, str) or not car_id or len(car_id) > 64:
        raise MessageError("car_id must be a non-empty string of at most 64 characters", field="car_id")
    if not isinstance(created_by, str) or not created_by or len(created_by) > MAX_CREATED_BY \
            or any(unicodedata.category(c).startswith("C") for c in created_by):
        raise MessageError("created_by must be a key id", field="created_by")
    created_t = _time(now, "created_t")
    if not isinstance(asks_answer, bool):
        raise MessageError("asks_answer must be true or false", field="asks_answer")
    _choice(priority, PRIORITIES, "priority")
    if close_on is not None:
        _choice(close_on, CLOSE_CONDITIONS, "close_on")
    if expires_t is None:
        if isinstance(ttl_s, bool) or not isinstance(ttl_s, (int, float)) or not 0 < ttl_s <= MAX_TTL_S:
            raise MessageError(f"ttl_s must be in (0, {MAX_TTL_S:.0f}] seconds", field="ttl_s")
        expires_t = min(created_t + ttl_s, MAX_T)
    expires = _time(expires_t, "expires_t")
    if not created_t < expires <= created_t + MAX_TTL_S:
        raise MessageError(f"expires_t must be after created_t and within {MAX_TTL_S:.0f} s", field="expires_t")
    if message_id is None:
        taken_ids = set(taken)
        message_id = str(uuid.uuid4())
        while short_id_of(message_id) in taken_ids:  # 1 in 4 billion per taken id
            message_id = str(uuid.uuid4())
    else:
        try:
            message_id = str(uuid.UUID(message_id))
        except (TypeError, ValueError, AttributeError):
            raise MessageError(f"message id {message_id!r} is not a UUID", field="id") from None
    return Message(message_id, short_id_of(message_id), car_id, clean_text(text), created_by, created_t, expires,
                   asks_answer, priority, close_on)


# ------------------------------------------------------------------ canned messages
@dataclass(frozen=True)
class CannedMessage:
    """A button on the pit page: a ready message with its options."""

    text: str
    asks_answer: bool = False
    priority: str = "normal"
    close_on: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"text": self.text, "asks_answer": self.asks_answer, "priority": self.priority,
                "close_on": self.close_on}


DEFAULT_CANNED: tuple[CannedMessage, ...] = (
    CannedMessage("BOX THIS LAP", priority="urgent", close_on="box"),
    CannedMessage("PUSH"),
    CannedMessage("FUEL OK?", asks_answer=True),
    CannedMessage("SLOW DOWN", priority="high"),
    CannedMessage("STAY OUT", priority="high"),
    CannedMessage("CAR OK?", asks_answer=True),
    CannedMessage("YELLOW FLAG AHEAD", priority="urgent"),
    CannedMessage("LAST LAP"),
)


def canned_from_list(raw: Any) -> tuple[CannedMessage, ...]:
    """A team's canned messages from their JSON list (None: the defaults); MessageError naming the entry."""
    if raw is None:
        return DEFAULT_CANNED
    if not isinstance(raw, list):
        raise MessageError("canned messages must be a list", field="canned")
    if len(raw) > MAX_CANNED:
        raise MessageError(f"at most {MAX_CANNED} canned messages", field="canned")
    result: list[CannedMessage] = []
    seen: set[str] = set()
    for i, entry in enumerate(raw):
        where = f"canned[{i}]"
        if not isinstance(entry, Mapping):
            raise MessageError(f"{where} must be an object", field=where)
        unknown = set(entry) - {"text", "asks_answer", "priority", "close_on"}
        if unknown:
            raise MessageError(f"{where} has unknown fields {sorted(unknown)}", field=where)
        text = clean_text(entry.get("text"), f"{where}.text")
        asks = entry.get("asks_answer", False)
        if not isinstance(asks, bool):
            raise MessageError(f"{where}.asks_answer must be true or false", field=f"{where}.asks_answer")
        priority = _choice(entry.get("priority", "normal"), PRIORITIES, f"{where}.priority")
        close_on = entry.get("close_on")
        if close_on is not None:
            _choice(close_on, CLOSE_CONDITIONS, f"{where}.close_on")
        if text.casefold() in seen:
            raise MessageError(f"{where}: {text!r} is already in the list", field=f"{where}.text")
        seen.add(text.casefold())
        result.append(CannedMessage(text, asks, priority, close_on))
    return tuple(result)


# ------------------------------------------------------------------ states
@dataclass(frozen=True)
class MessageEvent:
    """One state a message reached: when, over which link (None: decided at the pit), where the car was."""

    message_id: str
    state: str
    t: float
    via: str | None = None
    lap: int | None = None
    lat: float | None = None
    lon: float | None = None
    answer: str | None = None
    implied: bool = False  # not reported itself: a later state arrived first
    by: str | None = None  # key id, for the pit's own transitions

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (the session log and the exports)."""
        return {"message_id": self.message_id, "state": self.state, "t": self.t, "via": self.via, "lap": self.lap,
                "lat": self.lat, "lon": self.lon, "answer": self.answer, "implied": self.implied, "by": self.by}


@dataclass(frozen=True)
class MessageRecord:
    """A message and where it is: its state, its answer, the events so far (one per state reached)."""

    message: Message
    state: str = "queued"
    answer: str | None = None
    events: tuple[MessageEvent, ...] = ()

    @property
    def final(self) -> bool:
        """Answered, cancelled, expired or closed: nothing more will change it."""
        return self.state in FINAL_STATES

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {**self.message.to_dict(), "state": self.state, "answer": self.answer,
                "events": [e.to_dict() for e in self.events]}


@dataclass(frozen=True)
class Transition:
    """What an arrival did: the record after it, the events it added (none for a duplicate)."""

    record: MessageRecord
    events: tuple[MessageEvent, ...] = ()

    @property
    def duplicate(self) -> bool:
        """Nothing changed: the state had been reached (or passed) already."""
        return not self.events


def queue(message: Message, *, by: str | None = None) -> MessageRecord:
    """A new message's record, in ``queued`` at its creation time."""
    event = MessageEvent(message.id, "queued", message.created_t, by=by or message.created_by)
    return MessageRecord(message, "queued", None, (event,))


def transition(
    record: MessageRecord,
    state: Any,
    *,
    t: Any,
    via: Any = None,
    lap: Any = None,
    lat: Any = None,
    lon: Any = None,
    answer: Any = None,
    by: str | None = None,
) -> Transition:
    """Apply one arrival (a report from the car, or the pit's own decision) by the module's dedupe rule.

    MessageError for a malformed arrival (unknown state, bad time, link or position);
    MessageStateError for one the message's state or kind does not allow.
    """
    state = _choice(state, STATES, "state")
    event = _event(record.message, state, t, via, lap, lat, lon, answer, by)
    message = record.message
    if state in FINAL_STATES:
        _check_final(message, event)
    if record.final:
        if state == record.state and event.answer == record.answer:
            return Transition(record)
        if _RANK[state] < _RANK[record.state]:
            return Transition(record)  # an earlier state arriving late: already implied
        raise MessageStateError(
            f"message is already {record.state}{f' ({record.answer})' if record.answer else ''}; "
            f"{state}{f' ({event.answer})' if event.answer else ''} refused", record.state, field="state")
    if _RANK[state] <= _RANK[record.state]:
        return Transition(record)
    implied = tuple(replace(event, state=s, answer=None, implied=True, by=None)
                    for s in ("sent", "delivered", "seen")
                    if state in CAR_STATES and _RANK[record.state] < _RANK[s] < _RANK[state])
    added = (*implied, event)
    return Transition(replace(record, state=state, answer=event.answer if state == "answered" else None,
                              events=record.events + added), added)


def _event(message: Message, state: str, t: Any, via: Any, lap: Any, lat: Any, lon: Any, answer: Any,
           by: str | None) -> MessageEvent:
    t = _time(t)
    if state in PIT_STATES:
        if via is not None:
            raise MessageStateError(f"{state} is decided at the pit, not carried over a link", state, field="via")
    else:
        _choice(via, LINKS, "via")
    if lap is not None and (isinstance(lap, bool) or not isinstance(lap, int) or not 0 <= lap <= 0xFFFE):
        raise MessageError(f"lap {lap!r} is not a lap number", field="lap")
    if (lat is None) != (lon is None):
        raise MessageError("lat and lon come together", field="lat" if lat is None else "lon")
    for name, value, limit in (("lat", lat, 90.0), ("lon", lon, 180.0)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                  or not math.isfinite(value) or not -limit <= value <= limit):
            raise MessageError(f"{name} {value!r} is not a {name}itude", field=name)
    if answer is not None and state != "answered":
        raise MessageError(f"only answered carries an answer, not {state}", field="answer")
    if state == "answered":
        answer = _choice(answer, ANSWERS, "answer")
    return MessageEvent(message.id, state, t, via, lap, None if lat is None else float(lat),
                        None if lon is None else float(lon), answer, False, by)


def _check_final(message: Message, event: MessageEvent) -> None:
    if event.state == "answered" and event.answer not in message.answers():
        takes = ", ".join(message.answers()) or "no answer (it closes in the pit lane)"
        raise MessageStateError(f"answer {event.answer!r} refused: this message takes {takes}", "answered",
                                field="answer")
    if event.state == "expired" and event.t < message.expires_t:
        raise MessageStateError(f"the message expires at {message.expires_t}, not before", "expired", field="t")
    if event.state == "closed" and message.close_on is None:
        raise MessageStateError("closed refused: the message has no closing condition", "closed", field="state")


def due_to_expire(records: Iterable[MessageRecord], now: float) -> list[MessageRecord]:
    """The open records whose expiry has come by ``now`` (the caller applies ``expired`` to each)."""
    return [r for r in records if not r.final and r.message.expires_t <= now]


def close_on_pit_event(records: Iterable[MessageRecord], event: Any, *, lap: int | None = None,
                       lat: float | None = None, lon: float | None = None) -> list[Transition]:
    """The open ``box`` messages a ``pit.entry`` (``pitlane.PitEvent`` or its dict) closes, at the entry's time.

    Other pit events close nothing. Messages created after the entry are left open (a box call
    made while the car is already in the lane is for the next time round).
    """
    kind = event.get("type") if isinstance(event, Mapping) else getattr(event, "type", None)
    t = event.get("t") if isinstance(event, Mapping) else getattr(event, "t", None)
    if kind != PIT_ENTRY:
        return []
    return [transition(r, "closed", t=t, lap=lap, lat=lat, lon=lon)
            for r in records if not r.final and r.message.close_on == "box" and r.message.created_t <= t]


# ------------------------------------------------------------------ the car's inbox
@dataclass
class _Held:
    message: Message
    seen: bool = False


@dataclass
class Inbox:
    """The car's side: the messages held for the driver display, keyed by short id (what LoRa carries)."""

    held: dict[int, _Held] = field(default_factory=dict)
    finished: list[int] = field(default_factory=list)  # oldest first, at most INBOX_MEMORY

    def receive(self, message: Message) -> bool:
        """Hold a message for the display; False if it is held already or was finished (a repeat)."""
        if message.short_id in self.held or message.short_id in self.finished:
            return False
        self.held[message.short_id] = _Held(message)
        return True

    def current(self, now: float | None = None) -> Message | None:
        """What the display shows: the highest-priority open message, oldest first; None when none."""
        queue_ = self.pending(now)
        return queue_[0] if queue_ else None

    def pending(self, now: float | None = None) -> list[Message]:
        """Every open message in display order (not expired at ``now`` when given)."""
        open_ = [h.message for h in self.held.values() if now is None or h.message.expires_t > now]
        return sorted(open_, key=lambda m: (-m.priority_rank(), m.created_t, m.short_id))

    def is_seen(self, short_id: int) -> bool:
        """Shown to the driver already (a restart does not announce it again)."""
        held = self.held.get(short_id)
        return held is not None and held.seen

    def mark_seen(self, short_id: int) -> bool:
        """The display showed it; True the first time only (report ``seen`` then)."""
        held = self.held.get(short_id)
        if held is None or held.seen:
            return False
        held.seen = True
        return True

    def answer(self, short_id: int, value: str) -> bool:
        """The driver's answer; True when it is applied (report ``answered``), False for a repeat or unknown id.

        MessageStateError when the message does not take this answer.
        """
        held = self.held.get(short_id)
        if held is None:
            return False
        value = _choice(value, ANSWERS, "answer")
        if value not in held.message.answers():
            raise MessageStateError(f"answer {value!r} refused: this message takes "
                                    f"{', '.join(held.message.answers()) or 'no answer'}", "seen", field="answer")
        self._finish(short_id)
        return True

    def close(self, short_id: int) -> bool:
        """The pit cancelled, expired or closed it: off the display; True if it was held."""
        was_held = short_id in self.held
        self._finish(short_id)
        return was_held

    def expire(self, now: float) -> list[int]:
        """Drop the messages whose expiry has come; their short ids."""
        gone = [sid for sid, h in self.held.items() if h.message.expires_t <= now]
        for sid in gone:
            self._finish(sid)
        return gone

    def _finish(self, short_id: int) -> None:
        self.held.pop(short_id, None)
        if short_id not in self.finished:
            self.finished.append(short_id)
            del self.finished[:-INBOX_MEMORY]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready snapshot for the caller to persist."""
        return {"held": [{"message": h.message.to_dict(), "seen": h.seen} for h in self.held.values()],
                "finished": list(self.finished)}

    @classmethod
    def from_dict(cls, raw: Any) -> Inbox:
        """The inverse of ``to_dict``; MessageError for a snapshot that is not one."""
        if not isinstance(raw, Mapping) or not isinstance(raw.get("held"), list) \
                or not isinstance(raw.get("finished"), list):
            raise MessageError("not an inbox snapshot")
        inbox = cls()
        for entry in raw["held"]:
            if not isinstance(entry, Mapping) or not isinstance(entry.get("seen"), bool):
                raise MessageError("not an inbox snapshot")
            message = Message.from_dict(entry.get("message"))
            inbox.held[message.short_id] = _Held(message, entry["seen"])
        for sid in raw["finished"]:
            if isinstance(sid, bool) or not isinstance(sid, int) or not 0 < sid <= 0xFFFFFFFF:
                raise MessageError("not an inbox snapshot")
        inbox.finished = list(raw["finished"])[-INBOX_MEMORY:]
        return inbox
