"""The CAN mapping file: which DBC signal becomes which channel, and how its value is converted. No I/O but reading.

A small TOML file, one table per signal (a signal name, or ``Message.Signal`` where two messages share
the name)::

    [signals.whlspeed_FL]          # a registry channel: converted from the signal's unit to the registry's
    channel = "speed"              # (the DBC's unit, or `unit` here when the DBC has none or a wrong one)

    [signals.P_FA]                 # any other well-formed name is a custom channel, carried as decoded...
    channel = "brake_front"
    scale = 1.0                    # ...or as value * scale + offset (given: no unit conversion, for any channel)
    offset = 0.0

Signals not in the file are ignored (counted once, ``CanDecoder.unmapped``). Without a file every signal
is taken, as a channel named after it (lower case, other characters as ``_``): one whose name is a
registry channel's is converted to its unit, the rest are custom channels. Every mistake in the file
(an unknown signal, two signals on one channel, a unit that cannot become the channel's) is a
``CanMapError`` naming it, raised when the monitor starts.
"""
from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dashboard.telemetry.channels import MAX_CHANNELS_PER_FRAME, get_channel, is_valid_name
from dashboard.telemetry.units import Linear, UnitError, conversion

NO_UNIT = frozenset(("", "-", "none", "n/a"))  # how DBC files say "unitless": taken as the channel's own unit
MAP_KEYS = frozenset(("channel", "unit", "scale", "offset"))


class CanMapError(ValueError):
    """A DBC or mapping file the monitor cannot use; the message names the file and the entry."""


@dataclass(frozen=True)
class SignalRoute:
    """Where one decoded signal goes: its channel and the conversion into the channel's unit."""

    signal: str
    channel: str
    convert: Linear


@dataclass(frozen=True)
class MessageRoutes:
    """The mapped signals of one DBC message (frame id), and its signals that are ignored."""

    name: str
    routes: tuple[SignalRoute, ...]
    ignored: tuple[str, ...]


def channel_name_of(signal: str) -> str:
    """A signal's name as a channel name (without a map file): lower case, other characters as ``_``."""
    name = re.sub(r"[^a-z0-9_.]", "_", signal.lower())
    return name if name[:1].isalpha() else f"can_{name}"


def read_map(path: str | Path) -> dict[str, dict[str, Any]]:
    """The ``[signals]`` tables of a mapping file, checked for shape (not yet against a DBC)."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise CanMapError(f"cannot read the CAN map {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise CanMapError(f"CAN map {path} is not valid TOML: {exc}") from None
    signals = data.get("signals")
    if not isinstance(signals, dict) or not signals:
        raise CanMapError(f"CAN map {path}: no [signals.NAME] table (each says channel = \"...\")")
    out: dict[str, dict[str, Any]] = {}
    for key, entry in signals.items():
        where = f"CAN map {path}, [signals.{key}]"
        if not isinstance(entry, dict):
            raise CanMapError(f"{where}: expected a table with channel = \"...\"")
        unknown = set(entry) - MAP_KEYS
        if unknown:
            raise CanMapError(f"{where}: unknown key {', '.join(sorted(unknown))} "
                              f"(known: {', '.join(sorted(MAP_KEYS))})")
        channel = entry.get("channel")
        if not is_valid_name(channel):
            raise CanMapError(f"{where}: channel {channel!r} is not a channel name "
                              "(a lower-case letter, then letters, digits, _ or ., at most 64)")
        for number in ("scale", "offset"):
            value = entry.get(number)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))
                                      or not math.isfinite(value)):
                raise CanMapError(f"{where}: {number} must be a number, not {value!r}")
        if "unit" in entry and not isinstance(entry["unit"], str):
            raise CanMapError(f"{where}: unit must be a string such as \"m/s\"")
        out[key] = entry
    return out


def _route(signal: Any, channel: str, entry: dict[str, Any], where: str) -> SignalRoute:
    if "scale" in entry or "offset" in entry:
        linear = Linear(float(entry.get("scale", 1.0)), float(entry.get("offset", 0.0)))
        return SignalRoute(signal.name, channel, linear)
    registered = get_channel(channel)
    if registered is None:
        return SignalRoute(signal.name, channel, Linear())
    unit = entry.get("unit", signal.unit or "")
    if unit.strip().lower() in NO_UNIT:
        return SignalRoute(signal.name, channel, Linear())
    try:
        return SignalRoute(signal.name, channel, conversion(unit, registered.unit))
    except UnitError as exc:
        raise CanMapError(f"{where}: {signal.name} in {unit!r} cannot become {channel} in {registered.unit!r}: "
                          f"{exc} (say the signal's unit with unit = \"...\", or give scale/offset)") from None


def build_routes(db: Any, mapping: dict[str, dict[str, Any]] | None, source: str = "the CAN map"
                 ) -> dict[tuple[int, bool], MessageRoutes]:
    """Routes of every DBC message, keyed by (frame id, extended id), from a cantools database and a map.

    ``mapping`` None: every signal, as a channel named after it.
    """
    by_name: dict[str, list[tuple[Any, Any]]] = {}
    for message in db.messages:
        for signal in message.signals:
            by_name.setdefault(signal.name, []).append((message, signal))
            by_name.setdefault(f"{message.name}.{signal.name}", []).append((message, signal))
    chosen: dict[tuple[str, str], SignalRoute] = {}  # (message, signal) -> route
    channels: dict[str, str] = {}
    if mapping is None:
        mapping = {f"{m.name}.{s.name}": {"channel": channel_name_of(s.name)} for m in db.messages for s in m.signals}
        if len(mapping) > MAX_CHANNELS_PER_FRAME:
            raise CanMapError(f"the DBC has {len(mapping)} signals, more than a frame carries "
                              f"({MAX_CHANNELS_PER_FRAME}): give a map file (--can-map) choosing the ones to send")
    for key, entry in mapping.items():
        where = f"{source}, [signals.{key}]"
        found = by_name.get(key, [])
        if not found:
            raise CanMapError(f"{where}: the DBC has no signal {key!r}")
        if len(found) > 1:
            raise CanMapError(f"{where}: {len(found)} messages of the DBC have a signal {key!r} "
                              f"({', '.join(m.name for m, _ in found)}): write it as [signals.\"MESSAGE.{key}\"]")
        message, signal = found[0]
        channel = entry["channel"]
        if channel in channels:
            raise CanMapError(f"{where}: channel {channel} is already {channels[channel]}'s (one signal a channel)")
        channels[channel] = key
        chosen[(message.name, signal.name)] = _route(signal, channel, entry, where)
    routes: dict[tuple[int, bool], MessageRoutes] = {}
    for message in db.messages:
        mine = tuple(chosen[(message.name, s.name)] for s in message.signals if (message.name, s.name) in chosen)
        ignored = tuple(s.name for s in message.signals if (message.name, s.name) not in chosen)
        routes[(message.frame_id, bool(message.is_extended_frame))] = MessageRoutes(message.name, mine, ignored)
    return routes
