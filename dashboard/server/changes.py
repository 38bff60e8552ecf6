"""What the services tell the Socket.IO hub: one typed change per kind, never a bare string.

The hub keeps a table from every :class:`Change` to how it goes out; a test fails when a kind
has no entry, so a new kind cannot be silently dropped. ``Change`` is a ``str`` enum: a listener
may still compare it with the plain name (``kind == "frames"``).
"""
from __future__ import annotations

import enum
import logging
from typing import Any, Callable

log = logging.getLogger(__name__)


class Change(str, enum.Enum):
    """Kinds of change, each with the payload it carries (the model in ``dashboard.schemas``)."""

    FRAMES = "frames"  # {session_id, frames: [stored rows]}: coalesced into `telemetry` for the room
    SESSION = "session"  # SessionOut: a status or metadata change
    DELETED = "deleted"  # {session_id}: the session and its data are gone
    SETUP = "setup"  # SetupOut
    EVENT = "event"  # EventOut: an entry of the session's log
    MONITOR = "monitor"  # MonitorPresence: the car's monitor came, went, or reported its health
    LORA = "lora"  # LoraBroadcast: values that came over the LoRa radio
    LAP = "lap"  # a completed lap
    SECTOR = "sector"  # a completed sector
    TIMING = "timing"  # the live delta to the best lap
    LAPS = "laps"  # every lap, after the track was set or changed
    ALERT = "alert"  # AlertOut: raised, cleared or acknowledged
    COMMAND = "command"  # {car_id, action, session_id}: to the car's monitor
    MESSAGE = "message"  # MessageOut: a pit-to-car message changed state


Listener = Callable[[Change, dict[str, Any]], None]


class Bus:
    """The listeners of one server's services (the hub, tests); a failing listener never undoes a change."""

    def __init__(self) -> None:
        self.listeners: list[Listener] = []

    def tell(self, kind: Change, payload: dict[str, Any]) -> None:
        """Tell every listener about one change."""
        if not isinstance(kind, Change):
            raise TypeError(f"not a Change: {kind!r}")
        for listener in list(self.listeners):
            try:
                listener(kind, payload)
            except Exception:  # noqa: BLE001 - a stored change stays stored
                log.exception("listener failed on %s", kind.value)
