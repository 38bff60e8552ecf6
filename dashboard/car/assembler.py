"""The frame assembler: samples the latest value of every channel at a fixed rate into frames.

Each tick takes a ChannelStore snapshot (stale channels become null), stamps it
with the frame clock (GPS time while the receiver has a fix, else the system
clock) and appends it to the outbox, which allocates the seq. Ticks are
scheduled on a fixed grid; when the process falls behind, missed ticks are
skipped rather than bunched.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from dashboard.car.clock import GpsClock
from dashboard.car.outbox import Outbox
from dashboard.car.source import ChannelStore
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
        self.skipped_ticks = 0
        self.errors = 0
        self.last_frame: dict[str, Any] | None = None  # the newest frame made, for the LoRa link

    def sample(self) -> dict[str, Any] | None:
        """The frame body for now ({t, channels}), or None while no channel was ever seen."""
        channels = self.store.snapshot()
        if not channels:
            return None
        return {"t": round(self.clock.now(), 3), "channels": channels}

    def tick(self) -> int | None:
        """Make one frame and put it in the outbox; returns its seq."""
        body = self.sample()
        if body is None:
            return None
        seq = self.outbox.append_many([(body["t"], body["channels"])])[-1]
        self.frames += 1
        self.last_frame = {"seq": seq, **body}
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
