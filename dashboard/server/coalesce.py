"""When a room's frames go out: at once if the room heard nothing for an interval, else one interval after its last.

Pure (time is passed in); the Hub calls it under its lock and does the emitting.

A fixed tick made every frame wait for the next tick: up to a whole interval (50 ms), a
quarter of the latency budget, even for a car at 20 Hz whose frames are already 50 ms apart.
Here the first frame after a quiet interval leaves at once (leading edge); frames that
follow within the interval are held and leave together when it ends (trailing edge). A
room therefore never gets more than one message per interval, and a car at or under the
display rate is never held.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Pending:
    """A room's frames waiting to go out."""

    frames: list[dict[str, Any]] = field(default_factory=list)
    since: float = 0.0  # when the first of them arrived
    due: float = 0.0  # when they go out


class Coalescer:
    """Per-room pending frames and when each room may be sent to next."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self.pending: dict[str, Pending] = {}
        self._last_sent: dict[str, float] = {}

    def add(self, room: str, frames: list[dict[str, Any]], now: float) -> bool:
        """Queue ``frames`` for ``room``; True if the room became due earlier than anything queued before."""
        entry = self.pending.get(room)
        if entry is not None:
            entry.frames.extend(frames)
            return False
        due = max(now, self._last_sent.get(room, float("-inf")) + self.interval_s)
        self.pending[room] = Pending(list(frames), now, due)
        return True

    def next_due(self) -> float | None:
        """When the earliest room is due, or None when nothing waits."""
        return min((p.due for p in self.pending.values()), default=None)

    def take_due(self, now: float) -> dict[str, Pending]:
        """Remove and return the rooms due by ``now``; they may be sent to again one interval from now."""
        due = {room: p for room, p in self.pending.items() if p.due <= now}
        for room in due:
            del self.pending[room]
            self._last_sent[room] = now
        horizon = now - self.interval_s  # a room last sent to before this is due at once: forget it
        self._last_sent = {r: t for r, t in self._last_sent.items() if t > horizon}
        return due

    def take_all(self, now: float) -> dict[str, Pending]:
        """Remove and return every room's frames (shutdown, or coalescing switched off)."""
        out, self.pending = self.pending, {}
        for room in out:
            self._last_sent[room] = now
        return out

    def waiting_seqs(self, room: str) -> set[int]:
        """The seqs of ``room``'s frames not sent yet."""
        entry = self.pending.get(room)
        return {f["seq"] for f in entry.frames} if entry else set()
