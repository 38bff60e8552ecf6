"""CAN frames → channel values: cantools decodes with the DBC, the map's routes name and convert. No I/O.

``load_decoder(dbc, map)`` reads both files once (every mistake a ``CanMapError`` at start);
``CanDecoder.decode(frame_id, extended, data)`` is called for every frame on the bus and never raises:
a frame the DBC does not describe, or whose message has no mapped signal, costs a dict lookup; one
that fails to decode (wrong length, a multiplexer value the DBC lacks, a NaN) is counted in
``decode_errors``. What is ignored is counted once: ``unknown_ids`` and ``unmapped`` are sets.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

from dashboard.car.can_map import CanMapError, MessageRoutes, build_routes, read_map

log = logging.getLogger(__name__)

ERROR_LOG_EVERY = 1000  # a decoding error is logged the first time, then every this many


def load_dbc(path: str | Path) -> Any:
    """A cantools database from a DBC file; a ``CanMapError`` naming the file when it cannot be used."""
    import cantools  # only with --can (the [can] extra)

    try:
        return cantools.database.load_file(str(path), database_format="dbc", strict=False)
    except OSError as exc:
        raise CanMapError(f"cannot read the DBC {path}: {exc.strerror or exc}") from None
    except Exception as exc:  # noqa: BLE001 - cantools raises its own ParseError and plain ValueErrors
        raise CanMapError(f"DBC {path} cannot be parsed: {type(exc).__name__}: {exc}") from None


class CanDecoder:
    """Decodes frames of the DBC's messages into the mapped channels' values, counting what it skips."""

    def __init__(self, db: Any, routes: dict[tuple[int, bool], MessageRoutes]) -> None:
        self._messages: dict[tuple[int, bool], tuple[Any, MessageRoutes]] = {}
        for message in db.messages:
            key = (message.frame_id, bool(message.is_extended_frame))
            self._messages[key] = (message, routes[key])
        self.channels = sorted(r.channel for _m, mr in self._messages.values() for r in mr.routes)
        self.frames = 0  # frames seen
        self.decoded = 0  # frames that gave values
        self.decode_errors = 0
        self.unknown_ids: set[int] = set()  # ids the DBC does not describe
        self.unmapped: set[str] = set()  # "Message.Signal" seen on the bus and not mapped
        self.last_error: str | None = None
        self._reported: set[str] = set()  # messages whose unmapped signals were counted and logged

    def decode(self, frame_id: int, extended: bool, data: bytes | bytearray) -> dict[str, float]:
        """The mapped channels' values in one frame ({} when none); never raises."""
        self.frames += 1
        found = self._messages.get((frame_id, extended))
        if found is None:
            if frame_id not in self.unknown_ids:
                self.unknown_ids.add(frame_id)
                log.info("CAN id 0x%X is not in the DBC: ignored (%d such ids so far)", frame_id,
                         len(self.unknown_ids))
            return {}
        message, routes = found
        if routes.ignored and message.name not in self._reported:
            self._reported.add(message.name)
            self.unmapped.update(f"{message.name}.{name}" for name in routes.ignored)
            log.info("CAN message %s: %d signal(s) not mapped, ignored: %s", message.name, len(routes.ignored),
                     ", ".join(routes.ignored[:10]) + (" ..." if len(routes.ignored) > 10 else ""))
        if not routes.routes:
            return {}
        try:
            decoded = message.decode(bytes(data), decode_choices=False)
            out: dict[str, float] = {}
            for route in routes.routes:
                raw = decoded.get(route.signal)
                if raw is None:  # a multiplexed signal this frame does not carry
                    continue
                value = route.convert(float(raw))
                if not math.isfinite(value):
                    raise ValueError(f"{route.signal} is {value}")
                out[route.channel] = value
        except Exception as exc:  # noqa: BLE001 - whatever the bus sends, decoding must never stop the source
            self.decode_errors += 1
            self.last_error = f"{message.name} (0x{frame_id:X}): {type(exc).__name__}: {exc}"
            if self.decode_errors % ERROR_LOG_EVERY == 1:
                log.warning("CAN frame not decoded (%d so far): %s", self.decode_errors, self.last_error)
            return {}
        self.decoded += 1
        return out

    def counters(self) -> dict[str, int]:
        """What was seen and skipped so far."""
        return {"frames": self.frames, "decoded": self.decoded, "decode_errors": self.decode_errors,
                "unknown_ids": len(self.unknown_ids), "unmapped_signals": len(self.unmapped)}


def load_decoder(dbc: str | Path, map_file: str | Path | None = None) -> CanDecoder:
    """A decoder from a DBC file and a mapping file (None: every signal, named after it)."""
    db = load_dbc(dbc)
    if not db.messages:
        raise CanMapError(f"DBC {dbc} describes no message")
    mapping = read_map(map_file) if map_file is not None else None
    return CanDecoder(db, build_routes(db, mapping, f"CAN map {map_file}" if map_file else f"DBC {dbc}"))
