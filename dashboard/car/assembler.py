"""The frame assembler: every GPS fix as its own frame, and the other channels sampled at a fixed rate.

Each tick makes a group of frames and appends it to the outbox in one
transaction (the outbox allocates the seqs):

* first every fix the GPS handed the store since the last tick, in GPS-time
  order, each a frame at the fix's own GPS time with the position channels it
  carried (so live lap timing sees every fix, at its true time, whatever
  ``rate_hz`` is and however long the process stalled);
* then the tick frame: a ChannelStore snapshot of the other channels (stale
  ones become null; a position channel appears only as null, when stale),
  stamped with the frame clock (GPS time while the receiver has a fix, else
  the system clock).

Ticks are scheduled on a fixed grid; when the process falls behind, missed
ticks are skipped rather than bunched (the fixes of that time are not: they
wait in the store).
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from dashboard.car.clock import GpsClock
from dashboard.car.outbox import Outbox
from dashboard.car.source import ChannelStore, Fix
from dashboard.car.worker import Worker

log = logging.getLogger(__name__)

DEFAULT_RATE_HZ = 10.0  # the dashboard's refresh; OBD over ELM327 delivers ~5-20 values/s in total
class FrameAssembler(Worker):
    """Turns the store into frames at ``rate_hz``; start()/stop() safe to call twice."""

    def __init__(
        self,
        store: ChannelStore,
        outbox: Outbox,
        *,
        rate_hz: float = DEFAULT_RATE_HZ,
        clock: GpsClock | None = None,
        on_frame: Callable[[int], None] | None = None,
    ) -> None:
        if rate_hz <= 0:
            raise ValueError("rate_hz must be > 0")
        super().__init__("assembler")
        self.store = store
        self.outbox = outbox
        self.period = 1.0 / rate_hz
        self.clock = clock or GpsClock()
        self.on_frame = on_frame
        self.frames = 0
        self.fix_frames = 0  # of which GPS fixes
        self.skipped_ticks = 0
        self.errors = 0
        # the newest state for the LoRa link: the last seq and time, every channel's latest value (position too)
        self.last_frame: dict[str, Any] | None = None

    def sample(self) -> dict[str, Any] | None:
        """The tick frame's body for now ({t, channels}), or None while it would carry no channel."""
        channels = self.store.tick_channels()
        if not channels:
            return None
        return {"t": round(self.clock.now(), 3), "channels": channels}

    def group(self, fixes: list[Fix]) -> list[tuple[float, dict[str, Any]]]:
        """The frames of one tick as (t, channels): ``fixes`` (in time order), then the tick frame."""
        frames = [(round(t, 3), channels) for t, channels in fixes]
        body = self.sample()
        if body is not None:
            frames.append((body["t"], body["channels"]))
        return frames

    def tick(self) -> int | None:
        """Make this tick's frames and put them in the outbox; returns the last seq (None: no frame).

        When the outbox fails (a full disk), the fixes go back to the store for the next tick.
        """
        fixes = self.store.take_fixes()
        frames = self.group(fixes)
        if not frames:
            return None
        try:
            seq = self.outbox.append_many(frames)[-1]
        except BaseException:
            self.store.put_back(fixes)
            raise
        self.frames += len(frames)
        self.fix_frames += len(fixes)
        self.last_frame = {"seq": seq, "t": frames[-1][0], "channels": self.store.snapshot()}
        if self.on_frame is not None:
            self.on_frame(seq)
        return seq

    def _run(self) -> None:
        next_tick = time.monotonic()
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:  # a full disk or a bad value must not end sampling: log, count, go on
                self.errors += 1
                log.exception("assembler tick failed")
            next_tick += self.period
            now = time.monotonic()
            if now - next_tick > self.period:
                missed = int((now - next_tick) / self.period)
                self.skipped_ticks += missed
                next_tick += missed * self.period
            self._stop.wait(max(0.0, next_tick - time.monotonic()))
