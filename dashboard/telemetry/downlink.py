"""Compact binary packets for pit-to-car messages over Meshtastic LoRa: a pure codec.

When the main link is down or stale, the pit gateway sends the car a message over LoRa and the
car answers the same way. Three kinds of packet, all big-endian, all sharing one 9-byte header
(layout in RACE_DASHBOARD_PLAN.md, "Pit-to-car messages", and in ``LAYOUTS`` below):

- ``message`` (pit → car): the text and its options, 17 bytes + the text (at most 65);
- ``close`` (pit → car): the pit cancelled it, it expired, or its condition closed it: off the display (12);
- ``report`` (car → pit): delivered, seen or answered, with the time, lap and position (28).

Conventions as in the uplink summary (``lora.py``): a magic byte of our own (``0xD8``, the
summary's is ``0xD7``, so one port carries both), a version, the car as the summary's 16-bit
hash, a CRC-16/CCITT-FALSE last. The message is named by its 32-bit short id
(``messages.short_id_of``), unique per car.

``encode`` raises ``DownlinkEncodeError`` for a packet it cannot represent (a caller's bug).
``decode`` is strict: a foreign magic, unknown version or kind, wrong size, bad checksum or any
field out of range raises ``DownlinkDecodeError`` (and nothing else), so a decoded packet always
makes a valid message or report.
"""
from __future__ import annotations

import math
import struct
import uuid
from dataclasses import dataclass
from typing import Any

from dashboard.errors import InvalidInput
from dashboard.telemetry import lora, messages
from dashboard.telemetry.frames import MAX_T, MIN_T
from dashboard.telemetry.lora import MESH_OVERHEAD_BYTES, airtime_s

MAGIC = 0xD8  # our downlink packets; the uplink summary is 0xD7 on the same port (PRIVATE_APP, 256)
FORMAT_VERSION = 1  # bumped on any change of layout or meaning; decoders reject versions they don't know

KIND_MESSAGE = 1
KIND_CLOSE = 2
KIND_REPORT = 3
KIND_NAMES = {KIND_MESSAGE: "message", KIND_CLOSE: "close", KIND_REPORT: "report"}

# State and answer codes on the wire: a state's index in messages.STATES; answers 1..3, 0 = none.
STATE_CODES: dict[str, int] = {state: i for i, state in enumerate(messages.STATES)}
CLOSE_STATES = ("cancelled", "expired", "closed")
REPORT_STATES = ("delivered", "seen", "answered")
ANSWER_CODES: dict[str, int] = {"yes": 1, "no": 2, "ok": 3}

# Flags of a message (u8). Bits not listed must be 0: a new flag changes what the car shows, so it needs a version.
FLAG_ASKS_ANSWER = 0x01
PRIORITY_SHIFT, PRIORITY_MASK = 1, 0x06  # bits 1-2: index in messages.PRIORITIES
FLAG_CLOSE_ON_BOX = 0x08
_KNOWN_FLAGS = FLAG_ASKS_ANSWER | PRIORITY_MASK | FLAG_CLOSE_ON_BOX

NULL_LAP = 0xFFFF
NULL_COORD = -(2**31)
COORD_SCALE = 1e7  # 1e-7 degree (~1 cm), as the summary

_HEADER = struct.Struct(">BBBHI")  # magic, version, kind, car hash, short id
_MESSAGE = struct.Struct(">BIB")  # flags, expires (epoch s), text length; then the text
_CLOSE = struct.Struct(">B")  # state
_REPORT = struct.Struct(">BBIBHii")  # state, answer, t_s, t_cs, lap, lat, lon
_CRC = struct.Struct(">H")

HEADER_SIZE = _HEADER.size  # 9
MESSAGE_BASE_SIZE = HEADER_SIZE + _MESSAGE.size + _CRC.size  # 17, plus the text
MAX_MESSAGE_SIZE = MESSAGE_BASE_SIZE + messages.MAX_TEXT_BYTES  # 65
CLOSE_SIZE = HEADER_SIZE + _CLOSE.size + _CRC.size  # 12
REPORT_SIZE = HEADER_SIZE + _REPORT.size + _CRC.size  # 28
MAX_PAYLOAD = 80  # our own ceiling (Meshtastic allows 233); a test keeps every packet under it

MAX_MESSAGE_AIRTIME_S = airtime_s(MAX_MESSAGE_SIZE + MESH_OVERHEAD_BYTES)  # ~0.87 s on LongFast
CLOSE_AIRTIME_S = airtime_s(CLOSE_SIZE + MESH_OVERHEAD_BYTES)
REPORT_AIRTIME_S = airtime_s(REPORT_SIZE + MESH_OVERHEAD_BYTES)

_HEADER_ROWS = (
    ("magic", "u8", f"0x{MAGIC:02X}"),
    ("version", "u8", str(FORMAT_VERSION)),
    ("kind", "u8", "1 message, 2 close, 3 report"),
    ("car_hash", "u16", "lora.car_hash(car_id)"),
    ("short_id", "u32", "the message's short id, never 0"),
)
LAYOUTS: dict[str, tuple[tuple[str, str, str], ...]] = {
    "message": (*_HEADER_ROWS,
                ("flags", "u8", "bit 0 asks yes/no, bits 1-2 priority, bit 3 closes in the pit lane"),
                ("expires_s", "u32", "epoch seconds, rounded up"),
                ("text_len", "u8", f"1..{messages.MAX_TEXT_BYTES}"),
                ("text", "text_len bytes", "UTF-8"),
                ("crc", "u16", "CRC-16/CCITT-FALSE of all bytes before it")),
    "close": (*_HEADER_ROWS,
              ("state", "u8", "5 cancelled, 6 expired, 7 closed"),
              ("crc", "u16", "CRC-16/CCITT-FALSE of all bytes before it")),
    "report": (*_HEADER_ROWS,
               ("state", "u8", "2 delivered, 3 seen, 4 answered"),
               ("answer", "u8", "0 none, 1 yes, 2 no, 3 ok"),
               ("t_s", "u32", "epoch seconds"),
               ("t_cs", "u8", "hundredths of a second, 0..99"),
               ("lap", "u16", f"lap number; null = 0x{NULL_LAP:04X}"),
               ("lat", "i32", f"degrees x 1e7; null = {NULL_COORD}"),
               ("lon", "i32", f"degrees x 1e7; null = {NULL_COORD}"),
               ("crc", "u16", "CRC-16/CCITT-FALSE of all bytes before it")),
}


class DownlinkDecodeError(lora.LoraDecodeError):
    """A LoRa payload is not a valid downlink packet; ``reason`` says why, ``payload`` keeps the raw bytes.

    Reasons: ``foreign`` (not our magic), ``version``, ``kind``, ``size``, ``checksum``, ``range``.
    """

    code = "invalid_downlink"


class DownlinkEncodeError(InvalidInput):
    """A packet cannot be encoded: a field is out of what the format carries."""

    code = "invalid_downlink_packet"


@dataclass(frozen=True)
class DownlinkMessage:
    """Pit → car: show this message."""

    car_hash: int
    short_id: int
    text: str
    expires_t: float
    asks_answer: bool = False
    priority: str = "normal"
    close_on: str | None = None

    def to_message(self, car_id: str, received_t: float) -> messages.Message:
        """The message for the car's inbox (``created_by`` "lora", created when received).

        Its id is a UUID holding the short id, so the inbox dedupes it against the same message
        received over the main link. MessageError if it has expired by ``received_t``.
        """
        message_id = str(uuid.UUID(int=self.short_id << 96))
        return messages.new_message(car_id, self.text, created_by="lora", now=received_t,
                                    asks_answer=self.asks_answer, priority=self.priority, close_on=self.close_on,
                                    expires_t=self.expires_t, message_id=message_id)


@dataclass(frozen=True)
class DownlinkClose:
    """Pit → car: the message is over (``cancelled``, ``expired`` or ``closed``): take it off the display."""

    car_hash: int
    short_id: int
    state: str


@dataclass(frozen=True)
class DownlinkReport:
    """Car → pit: the message reached ``delivered``, ``seen`` or ``answered`` at ``t``, lap and place."""

    car_hash: int
    short_id: int
    state: str
    t: float
    answer: str | None = None
    lap: int | None = None
    lat: float | None = None
    lon: float | None = None


Packet = DownlinkMessage | DownlinkClose | DownlinkReport


def message_packet(message: messages.Message, car_hash: int) -> DownlinkMessage:
    """The packet that carries a message to its car."""
    return DownlinkMessage(car_hash, message.short_id, message.text, float(math.ceil(message.expires_t)),
                           message.asks_answer, message.priority, message.close_on)


def report_packet(event: messages.MessageEvent, short_id: int, car_hash: int) -> DownlinkReport:
    """The packet that reports a car-side event (delivered, seen, answered) to the pit."""
    return DownlinkReport(car_hash, short_id, event.state, event.t, event.answer, event.lap, event.lat, event.lon)


def quantize(packet: Packet) -> Packet:
    """The packet as it will decode (times and positions at the wire's resolution)."""
    return decode(encode(packet))


# ------------------------------------------------------------------ encode
def encode(packet: Packet) -> bytes:
    """The packet's bytes; DownlinkEncodeError for a field the format cannot carry."""
    if isinstance(packet, DownlinkMessage):
        kind, body = KIND_MESSAGE, _encode_message(packet)
    elif isinstance(packet, DownlinkClose):
        kind, body = KIND_CLOSE, _encode_close(packet)
    elif isinstance(packet, DownlinkReport):
        kind, body = KIND_REPORT, _encode_report(packet)
    else:
        raise DownlinkEncodeError(f"not a downlink packet: {type(packet).__name__}")
    _check_uint("car_hash", packet.car_hash, 0xFFFF)
    _check_uint("short_id", packet.short_id, 0xFFFFFFFF, minimum=1)
    data = _HEADER.pack(MAGIC, FORMAT_VERSION, kind, packet.car_hash, packet.short_id) + body
    return lora.seal(data)


def _encode_message(p: DownlinkMessage) -> bytes:
    try:
        text = messages.clean_text(p.text)
    except messages.MessageError as exc:
        raise DownlinkEncodeError(exc.message, field="text") from None
    if text != p.text:
        raise DownlinkEncodeError("text is not clean (spaces to collapse): use messages.clean_text", field="text")
    if not isinstance(p.asks_answer, bool):
        raise DownlinkEncodeError("asks_answer must be a bool", field="asks_answer")
    if p.priority not in messages.PRIORITIES:
        raise DownlinkEncodeError(f"unknown priority {p.priority!r}", field="priority")
    if p.close_on not in (None, *messages.CLOSE_CONDITIONS):
        raise DownlinkEncodeError(f"unknown close_on {p.close_on!r}", field="close_on")
    if not _is_time(p.expires_t):
        raise DownlinkEncodeError(f"expires_t {p.expires_t!r} is outside {MIN_T:.0f}..{MAX_T:.0f}", field="expires_t")
    flags = (FLAG_ASKS_ANSWER if p.asks_answer else 0) | messages.PRIORITIES.index(p.priority) << PRIORITY_SHIFT \
        | (FLAG_CLOSE_ON_BOX if p.close_on == "box" else 0)
    raw = text.encode("utf-8")
    return _MESSAGE.pack(flags, math.ceil(p.expires_t), len(raw)) + raw


def _encode_close(p: DownlinkClose) -> bytes:
    if p.state not in CLOSE_STATES:
        raise DownlinkEncodeError(f"a close carries {', '.join(CLOSE_STATES)}, not {p.state!r}", field="state")
    return _CLOSE.pack(STATE_CODES[p.state])


def _encode_report(p: DownlinkReport) -> bytes:
    if p.state not in REPORT_STATES:
        raise DownlinkEncodeError(f"a report carries {', '.join(REPORT_STATES)}, not {p.state!r}", field="state")
    if (p.state == "answered") != (p.answer is not None) or (p.answer is not None and p.answer not in ANSWER_CODES):
        raise DownlinkEncodeError("answered carries yes, no or ok; other states no answer", field="answer")
    if not _is_time(p.t):
        raise DownlinkEncodeError(f"t {p.t!r} is outside {MIN_T:.0f}..{MAX_T:.0f}", field="t")
    if p.lap is not None:
        _check_uint("lap", p.lap, NULL_LAP - 1)
    if (p.lat is None) != (p.lon is None):
        raise DownlinkEncodeError("lat and lon come together", field="lat")
    for name, value, limit in (("lat", p.lat, 90.0), ("lon", p.lon, 180.0)):
        if value is not None and not (_is_number(value) and -limit <= value <= limit):
            raise DownlinkEncodeError(f"{name} {value!r} out of range", field=name)
    t_s = math.floor(p.t)
    t_cs = round((p.t - t_s) * 100)
    if t_cs == 100:
        t_s, t_cs = t_s + 1, 0
    return _REPORT.pack(STATE_CODES[p.state], ANSWER_CODES.get(p.answer or "", 0), t_s, t_cs,
                        NULL_LAP if p.lap is None else p.lap, _coord(p.lat), _coord(p.lon))


def _coord(value: float | None) -> int:
    return NULL_COORD if value is None else round(value * COORD_SCALE)


def _check_uint(name: str, value: Any, maximum: int, minimum: int = 0) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise DownlinkEncodeError(f"{name} {value!r} is not an integer in {minimum}..{maximum}", field=name)


def _is_number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)


def _is_time(value: Any) -> bool:
    return _is_number(value) and MIN_T <= value <= MAX_T


# ------------------------------------------------------------------ decode
def decode(payload: Any) -> Packet:
    """Decode a payload; raise DownlinkDecodeError (never anything else) unless it is a valid packet."""
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise DownlinkDecodeError(f"payload must be bytes, not {type(payload).__name__}", "size")
    payload = bytes(payload)
    if not payload or payload[0] != MAGIC:
        raise DownlinkDecodeError("not a race-dashboard downlink packet (magic)", "foreign", payload)
    if len(payload) < 2 or payload[1] != FORMAT_VERSION:
        version = payload[1] if len(payload) > 1 else None
        raise DownlinkDecodeError(f"unsupported downlink version {version}", "version", payload, field="version")
    if len(payload) < 3 or payload[2] not in KIND_NAMES:
        kind = payload[2] if len(payload) > 2 else None
        raise DownlinkDecodeError(f"unknown downlink packet kind {kind}", "kind", payload, field="kind")
    kind = payload[2]
    expected = _expected_size(kind, payload)
    if len(payload) != expected:
        raise DownlinkDecodeError(f"{KIND_NAMES[kind]} packet is {len(payload)} bytes, expected {expected}",
                                  "size", payload)
    data = lora.unsealed(payload)
    if data is None:
        raise DownlinkDecodeError("downlink packet checksum mismatch", "checksum", payload)
    _magic, _version, _kind, car, short_id = _HEADER.unpack_from(data)
    if short_id == 0:
        raise DownlinkDecodeError("short id 0 is never used", "range", payload, field="short_id")
    body = data[HEADER_SIZE:]
    if kind == KIND_MESSAGE:
        return _decode_message(car, short_id, body, payload)
    if kind == KIND_CLOSE:
        return _decode_close(car, short_id, body, payload)
    return _decode_report(car, short_id, body, payload)


def _expected_size(kind: int, payload: bytes) -> int:
    if kind == KIND_CLOSE:
        return CLOSE_SIZE
    if kind == KIND_REPORT:
        return REPORT_SIZE
    text_len_at = HEADER_SIZE + _MESSAGE.size - 1
    if len(payload) <= text_len_at:
        return MESSAGE_BASE_SIZE
    return MESSAGE_BASE_SIZE + payload[text_len_at]


def _decode_message(car: int, short_id: int, body: bytes, payload: bytes) -> DownlinkMessage:
    flags, expires_s, _length = _MESSAGE.unpack_from(body)
    if flags & ~_KNOWN_FLAGS:
        raise DownlinkDecodeError(f"unknown message flags 0x{flags:02x}", "range", payload, field="flags")
    if not MIN_T <= expires_s <= MAX_T:
        raise DownlinkDecodeError(f"expiry {expires_s} out of range", "range", payload, field="expires_t")
    try:
        text = body[_MESSAGE.size:].decode("utf-8")
        if messages.clean_text(text) != text:
            raise ValueError("text not clean")
    except (UnicodeDecodeError, ValueError, messages.MessageError):
        raise DownlinkDecodeError("message text is not valid", "range", payload, field="text") from None
    return DownlinkMessage(car, short_id, text, float(expires_s), bool(flags & FLAG_ASKS_ANSWER),
                           messages.PRIORITIES[(flags & PRIORITY_MASK) >> PRIORITY_SHIFT],
                           "box" if flags & FLAG_CLOSE_ON_BOX else None)


def _decode_close(car: int, short_id: int, body: bytes, payload: bytes) -> DownlinkClose:
    (code,) = _CLOSE.unpack(body)
    state = _state(code)
    if state not in CLOSE_STATES:
        raise DownlinkDecodeError(f"state code {code} is not a close", "range", payload, field="state")
    return DownlinkClose(car, short_id, state)


def _decode_report(car: int, short_id: int, body: bytes, payload: bytes) -> DownlinkReport:
    code, answer_code, t_s, t_cs, lap, lat, lon = _REPORT.unpack(body)
    state = _state(code)
    if state not in REPORT_STATES:
        raise DownlinkDecodeError(f"state code {code} is not a report", "range", payload, field="state")
    answers = {v: k for k, v in ANSWER_CODES.items()}
    if (state == "answered") != (answer_code != 0) or (answer_code and answer_code not in answers):
        raise DownlinkDecodeError(f"answer code {answer_code} does not go with {state}", "range", payload,
                                  field="answer")
    if t_cs > 99:
        raise DownlinkDecodeError(f"hundredths {t_cs} out of range", "range", payload, field="t")
    t = t_s + t_cs / 100
    if not MIN_T <= t <= MAX_T:
        raise DownlinkDecodeError(f"time {t} out of range", "range", payload, field="t")
    if (lat == NULL_COORD) != (lon == NULL_COORD):
        raise DownlinkDecodeError("lat and lon come together", "range", payload, field="lat")
    if lat != NULL_COORD and not (abs(lat) <= 90 * COORD_SCALE and abs(lon) <= 180 * COORD_SCALE):
        raise DownlinkDecodeError("position out of range", "range", payload, field="lat")
    return DownlinkReport(car, short_id, state, t, answers.get(answer_code), None if lap == NULL_LAP else lap,
                          None if lat == NULL_COORD else lat / COORD_SCALE,
                          None if lon == NULL_COORD else lon / COORD_SCALE)


def _state(code: int) -> str | None:
    return messages.STATES[code] if code < len(messages.STATES) else None
