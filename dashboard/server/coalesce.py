"""When a room's frames go out: each room may be sent to once per interval on average, with a burst of two.

Pure (time is passed in); the Hub calls it under its lock and does the emitting.

Coalesce only when the load calls for it: with ``share`` given, rooms are held only while the
event loop is falling behind (``loaded``, set by the hub from its measured lag). Then a room's
interval is what its fan-out costs (the measured seconds of its last emits, ``record``) divided by
``share``, the part of the loop one room may take, capped at ``interval_s``: a room of a few viewers
costs microseconds and is still not held; a room of 500 viewers whose emit takes 4 ms is held to one
message per 20 ms at a share of 0.2. While the loop keeps up, every frame goes out as it is stored.
Without ``share`` every room has the fixed ``interval_s``.

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
COST_WEIGHT = 0.2  # how much the newest emit's cost moves a room's estimate (an exponential average)
COST_KEPT_S = 60.0  # a room not sent to for this long forgets its cost (it starts again from nothing)
PRUNE_EVERY_S = 1.0  # forgotten buckets and costs are swept this often (a sweep is a pass over every room)


@dataclass
class Pending:
    """A room's frames waiting to go out."""

    frames: list[dict[str, Any]] = field(default_factory=list)
    since: float = 0.0  # when the first of them arrived
    due: float = 0.0  # when they go out


class Coalescer:
    """Per-room pending frames, and per-room token buckets saying when each room may be sent to next."""

    def __init__(self, interval_s: float, share: float | None = None) -> None:
        self.interval_s = interval_s  # the longest a room's frames are held for
        self.share = share  # the part of the loop one room's fan-out may take; None: always interval_s
        self.loaded = False  # the loop is falling behind: hold costly rooms (with share)
        self.pending: dict[str, Pending] = {}
        self._buckets: dict[str, tuple[float, float]] = {}  # room -> (tokens, when counted); absent = full
        self._costs: dict[str, tuple[float, float]] = {}  # room -> (seconds an emit takes, on average; when)
        self._pruned_at = float("-inf")

    def interval(self, room: str) -> float:
        """The room's interval now: fixed, or from its fan-out cost and its share of the loop."""
        if self.share is None:
            return self.interval_s
        if not self.loaded:
            return 0.0
        return min(self.interval_s, self._costs.get(room, (0.0, 0.0))[0] / self.share)

    def record(self, room: str, seconds: float, now: float) -> None:
        """An emit to ``room`` took ``seconds``: the room's cost estimate moves towards it."""
        old = self._costs.get(room)
        cost = seconds if old is None else old[0] + COST_WEIGHT * (seconds - old[0])
        self._costs[room] = (cost, now)

    def _tokens(self, room: str, now: float) -> float:
        tokens, at = self._buckets.get(room, (BURST, now))
        interval = self.interval(room)
        return BURST if interval <= 0 else min(BURST, tokens + (now - at) / interval)

    def add(self, room: str, frames: list[dict[str, Any]], now: float) -> bool:
        """Queue ``frames`` for ``room``; True if it had none waiting (a new due time the broadcaster must learn)."""
        entry = self.pending.get(room)
        if entry is not None:
            entry.frames.extend(frames)
            return False
        tokens = self._tokens(room, now)
        due = now if tokens >= 1.0 else now + (1.0 - tokens) * self.interval(room)
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
        if now - self._pruned_at >= PRUNE_EVERY_S:
            self._pruned_at = now
            full_since = now - BURST * self.interval_s  # a bucket untouched since then is full again: forget it
            self._buckets = {r: b for r, b in self._buckets.items() if b[1] > full_since}
            stale = now - COST_KEPT_S
            self._costs = {r: c for r, c in self._costs.items() if c[1] > stale}
        return due

    def forget(self, room: str) -> None:
        """A room that is gone (its session deleted): its cost and bucket."""
        self._costs.pop(room, None)
        self._buckets.pop(room, None)

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
