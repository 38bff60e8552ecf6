"""Compact binary summary of a car for the Meshtastic LoRa link: a pure codec.

When the main uplink is down, the in-car monitor sends one small summary over
LoRa every few tens of seconds and a pit gateway feeds it to the server. LoRa
airtime is the scarce resource, so the summary is a fixed 37-byte big-endian
record (layout in RACE_DASHBOARD_PLAN.md ("LoRa link") and in ``LAYOUT`` below), far under
Meshtastic's 233-byte payload limit.

Policy on values, decided once here:

- ``encode`` never fails on a measured value: non-finite values become null,
  values outside a channel's registry range are clamped to it (a glitching
  sensor still tells the pit "pegged high"). It raises ``LoraEncodeError`` only
  for identity fields the caller got wrong (seq, time, car hash, session).
- ``decode`` is strict: wrong magic, version, size, checksum or any field
  outside its range raises ``LoraDecodeError`` (and nothing else), so a
  decoded summary always makes a valid frame.
"""
from __future__ import annotations

import binascii
import hashlib
import math
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from dashboard.errors import InvalidInput
from dashboard.telemetry.channels import REGISTRY
from dashboard.telemetry.frames import MAX_T, MIN_T

MAGIC = 0xD7  # first byte of every summary: tells ours from other apps sharing PRIVATE_APP (256)
FORMAT_VERSION = 1  # bumped on any change of layout or meaning; decoders reject versions they don't know
MAX_SEQ = 2**32 - 1  # seq travels as uint32: 13 years of frames at 10 Hz
SESSION_PREFIX_LEN = 4  # bytes of the session UUID carried: 1 in 4 billion to collide between two sessions

# Status bitfield (uint16). Unknown bits are carried through and ignored, so a newer
# monitor may add flags without a version bump; a changed meaning needs a new version.
STATUS_BITS: dict[str, int] = {
    "uplink": 0,  # main (Socket.IO) uplink connected when the summary was made
    "backlog": 1,  # the outbox holds frames the server has not acknowledged
    "recording": 2,  # the session is active on the car (not stopped)
    "obd": 3,  # OBD source delivering
    "gps": 4,  # GPS source delivering
    "mil": 5,  # engine warning lamp (OBD MIL) on
}


@dataclass(frozen=True)
class ScaledField:
    """One channel carried as a scaled integer: ``raw = round(value * scale)``; ``null_raw`` means null."""

    channel: str
    fmt: str  # struct code of the raw integer
    scale: float
    null_raw: int

    @property
    def minimum(self) -> float:
        return REGISTRY[self.channel].minimum  # type: ignore[return-value]

    @property
    def maximum(self) -> float:
        return REGISTRY[self.channel].maximum  # type: ignore[return-value]

    @property
    def raw_min(self) -> int:
        return round(self.minimum * self.scale)

    @property
    def raw_max(self) -> int:
        return round(self.maximum * self.scale)


# The channels a summary carries, in wire order; ranges come from the channel registry.
CHANNEL_FIELDS: tuple[ScaledField, ...] = (
    ScaledField("lat", "i", 1e7, -(2**31)),  # 1e-7 deg (~1 cm)
    ScaledField("lon", "i", 1e7, -(2**31)),
    ScaledField("speed", "H", 10, 0xFFFF),  # 0.1 km/h
    ScaledField("rpm", "H", 1, 0xFFFF),  # 1 rpm
    ScaledField("coolant_temp", "h", 10, -(2**15)),  # 0.1 degC
    ScaledField("fuel_level", "B", 2, 0xFF),  # 0.5 %
    ScaledField("gps_fix", "B", 1, 0xFF),  # fix quality 0..8
)

# magic, version, car hash, session prefix, seq, time s, time cs, channels..., status; then CRC-16.
_BODY = struct.Struct(">BBH4sIIB" + "".join(f.fmt for f in CHANNEL_FIELDS) + "H")
_CRC = struct.Struct(">H")
_TYPE_NAMES = {"B": "u8", "H": "u16", "h": "i16", "i": "i32"}
SUMMARY_SIZE = _BODY.size + _CRC.size  # 37 bytes
MAX_PAYLOAD = 48  # our own ceiling (Meshtastic allows 233); a test keeps SUMMARY_SIZE under it

LAYOUT: tuple[tuple[str, str, str], ...] = (
    ("magic", "u8", f"0x{MAGIC:02X}"),
    ("version", "u8", str(FORMAT_VERSION)),
    ("car_hash", "u16", "first 2 bytes of BLAKE2b(car_id, digest_size=2)"),
    ("session_prefix", "4 bytes", "first 4 bytes of the session UUID"),
    ("seq", "u32", "seq of the newest frame summarised"),
    ("t_s", "u32", "epoch seconds"),
    ("t_cs", "u8", "hundredths of a second, 0..99"),
    *((f.channel, _TYPE_NAMES[f.fmt], f"value x {f.scale:g}; null = {f.null_raw}") for f in CHANNEL_FIELDS),
    ("status", "u16", "bitfield, see STATUS_BITS"),
    ("crc", "u16", "CRC-16/CCITT-FALSE of all bytes before it"),
)

_HEX8 = re.compile(r"^[0-9a-f]{8}$")
_CHANNEL_NAMES = tuple(f.channel for f in CHANNEL_FIELDS)


class LoraDecodeError(InvalidInput):
    """A LoRa payload is not a valid summary; ``reason`` says why, ``payload`` keeps the raw bytes.

    Reasons: ``foreign`` (not our magic: another app on the port), ``version``
    (a format this decoder does not know), ``size``, ``checksum``, ``range``.
    """

    code = "invalid_lora"

    def __init__(self, message: str, reason: str, payload: bytes = b"", field: str | None = None) -> None:
        super().__init__(message, field=field)
        self.reason = reason
        self.payload = payload


class LoraEncodeError(InvalidInput):
    """A summary cannot be encoded: an identity field (seq, t, car, session) is out of range."""

    code = "invalid_lora_summary"


@dataclass(frozen=True)
class LoraSummary:
    """What the car tells the pit over LoRa: identity, time and a few key channels (null = unknown)."""

    car_hash: int
    session_prefix: str  # 8 lowercase hex digits
    seq: int
    t: float
    lat: float | None = None
    lon: float | None = None
    speed: float | None = None
    rpm: float | None = None
    coolant_temp: float | None = None
    fuel_level: float | None = None
    gps_fix: float | None = None
    status: int = 0
    version: int = FORMAT_VERSION

    def channels(self) -> dict[str, float | None]:
        """The summary's channels by registry name."""
        return {name: getattr(self, name) for name in _CHANNEL_NAMES}

    def to_frame(self) -> dict[str, Any]:
        """The summary as a frame ``{seq, t, channels}`` (see dashboard.telemetry.frames)."""
        return {"seq": self.seq, "t": self.t, "channels": self.channels()}

    def flags(self) -> dict[str, bool]:
        """The known status bits by name."""
        return status_flags(self.status)


def car_hash(car_id: str) -> int:
    """16-bit hash of a car id, as carried in the summary (BLAKE2b, 2-byte digest, big-endian)."""
    return int.from_bytes(hashlib.blake2b(car_id.encode("utf-8"), digest_size=2).digest(), "big")


def session_prefix(session_id: str) -> str:
    """The first 4 bytes of a session UUID as 8 lowercase hex digits; LoraEncodeError if not hex."""
    prefix = str(session_id).replace("-", "").lower()[: 2 * SESSION_PREFIX_LEN]
    if not _HEX8.fullmatch(prefix):
        raise LoraEncodeError(f"session id {session_id!r} does not start with 8 hex digits", field="session_id")
    return prefix


def make_status(**flags: bool) -> int:
    """A status bitfield from named flags, e.g. ``make_status(uplink=True, gps=True)``."""
    value = 0
    for name, on in flags.items():
        if name not in STATUS_BITS:
            raise ValueError(f"unknown status flag {name!r}")
        if on:
            value |= 1 << STATUS_BITS[name]
    return value


def status_flags(status: int) -> dict[str, bool]:
    """The named flags of a status bitfield."""
    return {name: bool(status >> bit & 1) for name, bit in STATUS_BITS.items()}


def summary_from_frame(
    car_id: str, session_id: str, frame: Any, status: int = 0
) -> LoraSummary:
    """Summarise a frame (a Frame or ``{seq, t, channels}``); speed falls back to gps_speed."""
    if isinstance(frame, Mapping):
        seq, t, channels = frame.get("seq"), frame.get("t"), frame.get("channels") or {}
    else:
        seq, t, channels = frame.seq, frame.t, frame.channels
    values = {name: _number_or_none(channels.get(name)) for name in _CHANNEL_NAMES}
    if values["speed"] is None:
        values["speed"] = _number_or_none(channels.get("gps_speed"))
    return LoraSummary(car_hash(car_id), session_prefix(session_id), seq, t, status=status, **values)


def quantize(summary: LoraSummary) -> LoraSummary:
    """The summary as it will decode: values clamped, nulled when not finite, rounded to the wire's resolution."""
    raws = _channel_raws(summary)
    values = {f.channel: (None if raw == f.null_raw else raw / f.scale)
              for f, raw in zip(CHANNEL_FIELDS, raws, strict=True)}
    t_s, t_cs = _split_time(summary.t)
    return replace(summary, t=t_s + t_cs / 100, **values)


def encode(summary: LoraSummary) -> bytes:
    """Encode a summary into its 37-byte payload (see the module docstring for the value policy)."""
    _check_identity(summary)
    t_s, t_cs = _split_time(summary.t)
    body = _BODY.pack(
        MAGIC,
        FORMAT_VERSION,
        summary.car_hash,
        bytes.fromhex(summary.session_prefix),
        summary.seq,
        t_s,
        t_cs,
        *_channel_raws(summary),
        summary.status,
    )
    return seal(body)


def seal(data: bytes) -> bytes:
    """``data`` with its CRC-16/CCITT-FALSE appended: the last two bytes of every packet of ours (uplink, downlink)."""
    return data + _CRC.pack(binascii.crc_hqx(data, 0xFFFF))


def unsealed(payload: bytes) -> bytes | None:
    """The bytes before a packet's CRC, or None when the CRC does not match them."""
    data, (crc,) = payload[:-_CRC.size], _CRC.unpack(payload[-_CRC.size:])
    return data if binascii.crc_hqx(data, 0xFFFF) == crc else None


def decode(payload: bytes) -> LoraSummary:
    """Decode a payload; raise LoraDecodeError (never anything else) unless it is a valid summary."""
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise LoraDecodeError(f"payload must be bytes, not {type(payload).__name__}", "size")
    payload = bytes(payload)
    if not payload or payload[0] != MAGIC:
        raise LoraDecodeError("not a race-dashboard summary (magic)", "foreign", payload)
    if len(payload) < 2 or payload[1] != FORMAT_VERSION:
        version = payload[1] if len(payload) > 1 else None
        raise LoraDecodeError(f"unsupported summary version {version}", "version", payload, field="version")
    if len(payload) != SUMMARY_SIZE:
        raise LoraDecodeError(f"summary is {len(payload)} bytes, expected {SUMMARY_SIZE}", "size", payload)
    body = unsealed(payload)  # the size is checked: the body is _BODY.size bytes
    if body is None:
        raise LoraDecodeError("summary checksum mismatch", "checksum", payload)
    _magic, version, car, session, seq, t_s, t_cs, *raws, status = _BODY.unpack(body)
    if t_cs > 99:
        raise LoraDecodeError(f"hundredths {t_cs} out of range", "range", payload, field="t")
    t = t_s + t_cs / 100
    if not MIN_T <= t <= MAX_T:
        raise LoraDecodeError(f"time {t} out of range", "range", payload, field="t")
    values: dict[str, float | None] = {}
    for f, raw in zip(CHANNEL_FIELDS, raws, strict=True):
        if raw == f.null_raw:
            values[f.channel] = None
        elif f.raw_min <= raw <= f.raw_max:
            values[f.channel] = raw / f.scale
        else:
            raise LoraDecodeError(f"{f.channel} raw value {raw} out of range", "range", payload, field=f.channel)
    return LoraSummary(car, session.hex(), seq, t, status=status, version=version, **values)


def airtime_s(payload_len: int, sf: int = 11, bw_hz: float = 250_000, cr: int = 5, preamble: int = 16) -> float:
    """Seconds on air of one LoRa packet (Semtech AN1200.13 formula; defaults are Meshtastic LongFast)."""
    t_sym = 2**sf / bw_hz
    low_rate = 1 if t_sym > 0.016 else 0  # low data rate optimisation, mandated above 16 ms symbols
    n = math.ceil(max(8 * payload_len - 4 * sf + 28 + 16, 0) / (4 * (sf - 2 * low_rate)))
    return (preamble + 4.25) * t_sym + (8 + n * cr) * t_sym


# Meshtastic adds a 16-byte packet header and wraps our bytes in a Data protobuf
# (portnum 256: 3 bytes, payload tag + length: 2, bitfield: 2) -> about 23 bytes.
MESH_OVERHEAD_BYTES = 23
SUMMARY_AIRTIME_S = airtime_s(SUMMARY_SIZE + MESH_OVERHEAD_BYTES)  # ~0.68 s on LongFast


# ----------------------------------------------------------------- internals
def _number_or_none(value: Any) -> float | None:
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _split_time(t: float) -> tuple[int, int]:
    t_s = math.floor(t)
    t_cs = round((t - t_s) * 100)
    if t_cs == 100:
        t_s, t_cs = t_s + 1, 0
    return t_s, t_cs


def _check_identity(s: LoraSummary) -> None:
    def bad(field: str, message: str) -> LoraEncodeError:
        return LoraEncodeError(message, field=field)

    if not _is_int(s.car_hash) or not 0 <= s.car_hash <= 0xFFFF:
        raise bad("car_hash", f"car hash {s.car_hash!r} is not a 16-bit integer")
    if not isinstance(s.session_prefix, str) or not _HEX8.fullmatch(s.session_prefix):
        raise bad("session_prefix", f"session prefix {s.session_prefix!r} is not 8 lowercase hex digits")
    if not _is_int(s.seq) or not 0 <= s.seq <= MAX_SEQ:
        raise bad("seq", f"seq {s.seq!r} does not fit 32 bits")
    if isinstance(s.t, bool) or not isinstance(s.t, (int, float)) or not MIN_T <= s.t <= MAX_T:
        raise bad("t", f"time {s.t!r} is outside {MIN_T:.0f}..{MAX_T:.0f}")
    if not _is_int(s.status) or not 0 <= s.status <= 0xFFFF:
        raise bad("status", f"status {s.status!r} is not a 16-bit integer")
    if s.version != FORMAT_VERSION:
        raise bad("version", f"this encoder writes version {FORMAT_VERSION} only")


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _channel_raws(s: LoraSummary) -> list[int]:
    raws = []
    for f in CHANNEL_FIELDS:
        value = _number_or_none(getattr(s, f.channel))
        if value is None:
            raws.append(f.null_raw)
        else:
            clamped = min(max(value, f.minimum), f.maximum)  # before scaling: 1e308 * 1e7 would overflow
            raws.append(min(max(round(clamped * f.scale), f.raw_min), f.raw_max))
    return raws
