"""When a room's frames go out: each room may be sent to once per interval on average, with a burst of two.

Pure (time is passed in); the Hub calls it under its lock and does the emitting.

A fixed tick made every frame wait for the next tick: up to a whole interval (50 ms), a
quarter of the latency budget, even for a car at 20 Hz whose frames are already 50 ms
apart. A strict "at most one message per interval" limiter is no better for such a car:
its frames arrive a hair more than an interval apart, each send is pushed back by that
hair, and the lag drifts up to a whole interval (measured: 27 ms median for one car at
20 Hz, against 3 ms with no coalescing). So each room has a token bucket: a token per
interval, at most ``BURST`` kept. Frames that find a token leave at once; the rest wait
for the next token and leave together. A car at or under the display rate is never held,
a faster one is coalesced to the display rate.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

BURST = 2.0  # tokens a quiet room saves up: absorbs a car's jitter around the interval


@dataclass
class Pending:
    """A room's frames waiting to go out."""

    frames: list[dict[str, Any]] = field(default_factory=list)
    since: float = 0.0  # when the first of them arrived
    due: float = 0.0  # when they go out


class Coalescer:
    """Per-room pending frames, and per-room token buckets saying when each room may be sent to next."""

    def __init__(self, interval_s: float) -> None:
        self.interval_s = interval_s
        self.pending: dict[str, Pending] = {}
        self._buckets: dict[str, tuple[float, float]] = {}  # room -> (tokens, when counted); absent = full

    def _tokens(self, room: str, now: float) -> float:
        tokens, at = self._buckets.get(room, (BURST, now))
        return min(BURST, tokens + (now - at) / self.interval_s)

    def add(self, room: str, frames: list[dict[str, Any]], now: float) -> bool:
        """Queue ``frames`` for ``room``; True if it had none waiting (a new due time the broadcaster must learn)."""
        entry = self.pending.get(room)
        if entry is not None:
            entry.frames.extend(frames)
            return False
        tokens = self._tokens(room, now)
        due = now if tokens >= 1.0 else now + (1.0 - tokens) * self.interval_s
        self.pending[room] = Pending(list(frames), now, due)
        return True

    def next_due(self) -> float | None:
        """When the earliest room is due, or None when nothing waits."""
        return min((p.due for p in self.pending.values()), default=None)

    def take_due(self, now: float) -> dict[str, Pending]:
        """Remove and return the rooms due by ``now``; each spends a token."""
        due = {room: p for room, p in self.pending.items() if p.due <= now}
        for room in due:
            del self.pending[room]
            self._spend(room, now)
        full_since = now - BURST * self.interval_s  # a bucket untouched since then is full again: forget it
        self._buckets = {r: b for r, b in self._buckets.items() if b[1] > full_since}
        return due

    def _spend(self, room: str, now: float) -> None:
        self._buckets[room] = (max(0.0, self._tokens(room, now) - 1.0), now)

    def take_all(self, now: float) -> dict[str, Pending]:
        """Remove and return every room's frames (shutdown, or coalescing switched off)."""
        out, self.pending = self.pending, {}
        for room in out:
            self._spend(room, now)
        return out

    def waiting_seqs(self, room: str) -> set[int]:
        """The seqs of ``room``'s frames not sent yet."""
        entry = self.pending.get(room)
        return {f["seq"] for f in entry.frames} if entry else set()
