"""The frame assembler: every GPS fix as its own frame, and the other channels sampled at a fixed rate.

Each tick makes its frames and holds them for the next commit:

* first every fix the GPS handed the store since the last tick, in GPS-time
  order, each a frame at the fix's own GPS time with the position channels it
  carried (so live lap timing sees every fix, at its true time, whatever
  ``rate_hz`` is and however long the process stalled);
* then the tick frame: a ChannelStore snapshot of the other channels (stale
  ones become null; a position channel appears only as null, when stale),
  stamped with the frame clock (clock.py: GPS time run on between fixes; None
  while real time is unknown, the frame then keeps its monotonic time).

Held frames are committed to the outbox in groups, one transaction per
``max(tick period, FLUSH_S)``: at 100 Hz that is 10 commits a second instead
of 100 on an SD card. The outbox allocates the seqs at the commit; only then
do the uplink and the LoRa link hear of the frames (``on_frame``), so nothing
is ever sent that a power cut could take back. A power cut loses at most the
group not yet committed (at most ``FLUSH_S`` of frames, or one tick's);
``stop()`` commits what is held, so a clean stop loses nothing; a commit that
fails (a full card) keeps its group for the next one. Before a group is
committed, frames still waiting for real time are re-stamped once the clock
knows it. Ticks are scheduled on a fixed grid; when the process falls behind,
missed ticks are skipped rather than bunched (the fixes of that time are not:
they wait in the store).
"""
from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from typing import Any

from dashboard.car.clock import GpsClock, trusted
from dashboard.car.outbox import Outbox
from dashboard.car.source import ChannelStore
from dashboard.car.worker import Worker

log = logging.getLogger(__name__)

DEFAULT_RATE_HZ = 10.0  # the dashboard's refresh; OBD over ELM327 delivers ~5-20 values/s in total
FLUSH_S = 0.1  # one outbox commit (one fsync on the card) per this long at most: 10 a second at any rate

T_RESOLUTION_S = 0.001  # frame times are stored to the ms: two frames closer than this would share a time
MAX_HELD = 6000  # frames held while commits fail (a minute at 100 Hz), then the oldest are dropped

# a frame held for the next commit: (t or None while real time is unknown, channels, monotonic time made)
HeldFrame = tuple[float | None, dict[str, float | None], float]


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
        self.group_ticks = max(1, math.ceil(FLUSH_S / self.period - 1e-9))  # ticks per commit
        # no clock given (simulate, tests): the system clock is taken as right; the car's monitor checks it
        self.clock = clock or GpsClock(synced=trusted)
        self.on_frame = on_frame
        self.frames = 0  # frames committed
        self.fix_frames = 0  # of which GPS fixes
        self.commits = 0
        self.lost_frames = 0  # held frames dropped because commits kept failing
        self.skipped_ticks = 0
        self.errors = 0
        # the newest state for the LoRa link: the last seq and time, every channel's latest value (position too)
        self.last_frame: dict[str, Any] | None = None
        self.last_committed: list[dict[str, Any]] = []
        self._held: list[HeldFrame] = []
        self._held_ticks = 0
        self._warned_no_time = False
        self._last_made: tuple[float, float | None] | None = None  # (mono, t) of the last frame made
        self._flush_lock = threading.Lock()

    def sample(self) -> dict[str, Any] | None:
        """The tick frame for now ({t, channels, mono}; t None while real time is unknown); None while it would
        carry no channel (positions go in fix frames)."""
        channels = self.store.tick_channels()
        if not channels:
            return None
        mono = self.clock.mono()
        t = self.clock.at(mono)
        return {"t": None if t is None else round(t, 3), "channels": channels, "mono": mono}

    def _bunched(self, body: dict[str, Any]) -> bool:
        """True when this frame would not be later than the last one made (times are stored to the ms)."""
        if self._last_made is None:
            return False
        mono, t = self._last_made
        return body["mono"] - mono < T_RESOLUTION_S or (t is not None and body["t"] is not None and body["t"] <= t)

    def hold(self, frames: list[HeldFrame]) -> None:
        """Add frames made elsewhere (GPS fixes) to the group the next commit stores."""
        with self._flush_lock:
            self._held.extend(frames)
            excess = len(self._held) - MAX_HELD
            if excess > 0:  # commits keep failing (a full card): memory stays bounded, the oldest go
                del self._held[:excess]
                self.lost_frames += excess

    def tick(self) -> int | None:
        """Hold this tick's frames (its GPS fixes, then the tick frame); commit the held group when it is due.

        Returns the last seq committed now, or None.
        """
        fixes = self.store.take_fixes()
        if fixes:
            mono = self.clock.mono()
            self.hold([(round(t, 3), channels, mono) for t, channels in fixes])
            self.fix_frames += len(fixes)
        body = self.sample()
        if body is not None and self._bunched(body):
            self.skipped_ticks += 1  # a late tick's catch-up within the same millisecond: the same instant again
            body = None
        if body is not None:
            self._last_made = (body["mono"], body["t"])
            self.hold([(body["t"], body["channels"], body["mono"])])
        self._held_ticks += 1
        if self._held_ticks < self.group_ticks:
            return None
        return self.flush()

    def flush(self) -> int | None:
        """Commit every held frame in one outbox transaction; returns the last seq, or None when none was held."""
        with self._flush_lock:
            self._held_ticks = 0
            held, self._held = self._held, []
            if not held:
                return None
            offset = self.clock.offset()
            if offset is not None and self.outbox.unstamped():
                self.outbox.restamp(offset)  # first, so stamped frames never precede unstamped ones in seq
            rows = [(round(mono + offset, 3) if t is None and offset is not None else t, channels, mono)
                    for t, channels, mono in held]
            if offset is None and not self._warned_no_time:
                self._warned_no_time = True
                log.warning("real time unknown (no GPS fix yet, system clock not synchronized): frames wait in the "
                            "outbox without a date and are stamped once it is known")
            try:
                seqs = self.outbox.append_many([(t, channels) if t is not None else (None, channels, mono)
                                                for t, channels, mono in rows])
            except BaseException:
                self._held = held + self._held  # not stored: kept for the next try
                raise
        self.frames += len(seqs)
        self.commits += 1
        if log.isEnabledFor(logging.DEBUG):
            log.debug("committed seq %d..%d", seqs[0], seqs[-1])
        self.last_frame = {"seq": seqs[-1], "t": rows[-1][0], "channels": self.store.snapshot()}
        # the frames of this commit as the server will get them (the car's own lap timing is fed these)
        self.last_committed = [{"seq": seq, "t": t, "channels": channels}
                               for seq, (t, channels, _mono) in zip(seqs, rows, strict=True)]
        if self.on_frame is not None:
            self.on_frame(seqs[-1])
        return seqs[-1]

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

    def stop(self, timeout: float | None = None) -> None:
        """Stop ticking and commit what is held (a clean stop loses nothing); safe to call twice."""
        super().stop(timeout)
        try:
            self.flush()
        except Exception:
            self.errors += 1
            log.exception("assembler: the last group could not be committed")
