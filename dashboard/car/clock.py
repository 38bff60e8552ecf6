"""The car's frame clock: real time from GPS fixes (else a synchronized system clock), run on between them.

A Raspberry Pi has no real-time clock: it boots in 1970 or at its last
shutdown time, and its system clock is only right once NTP has synchronized
it. So the frame clock takes real time from an *anchor* (an epoch time and
the monotonic time it was true at) and runs on from it with the monotonic
clock:

- every GPS fix is an anchor (the receiver's time of the fix);
- before the first fix, the system clock is an anchor only while the kernel
  says it is synchronized (``system_clock_synced``: adjtimex(2), or
  systemd-timesyncd's flag file), checked at most once a second;
- before either, the time is unknown: ``now()`` is None and the frame is
  stored with its monotonic time, to be re-stamped when real time is known
  (``offset()`` is epoch minus monotonic; see ``Outbox.restamp``).

Losing the fix does not switch to the system clock: the time runs on from
the last fix (the monotonic clock drifts by parts per million, a few
milliseconds over a lost minute). When a fix comes back with a time that
disagrees with ours, frame times never go backwards: a fix *ahead* of us is a
step forward at once; a fix *behind* us is slewed, our time running at
``1 - SLEW_RATE`` of real speed until it agrees. A correction over
``LOG_CORRECTION_S`` is logged.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

from dashboard.telemetry.frames import MAX_T, MIN_T

log = logging.getLogger(__name__)

SYNC_CHECK_S = 1.0  # how often the system clock's synchronization is asked for (before the first fix)
SLEW_RATE = 0.1  # a fix behind our time: our time runs 10% slow until it agrees (3 s are absorbed in 30 s)
LOG_CORRECTION_S = 0.5  # a fix disagreeing with our running time by more than this is logged
TIMESYNCD_FLAG = Path("/run/systemd/timesync/synchronized")  # systemd-timesyncd touches it once synchronized
BOOT_ID_FILE = Path("/proc/sys/kernel/random/boot_id")  # a new id every boot: monotonic time restarts at boot
TIME_ERROR = 5  # adjtimex(2) returns this while the clock is not synchronized (STA_UNSYNC)
_TIMEX_SIZE = 512  # struct timex is 208 bytes on 64-bit Linux; room to spare, only read

GPS = "gps"
SYSTEM = "system"


@functools.cache
def _libc() -> ctypes.CDLL | None:
    """The C library, loaded once (find_library may run ldconfig: never on every frame)."""
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None


def _adjtimex_state() -> int | None:
    """adjtimex(2)'s clock state (read only: modes 0), or None where it cannot be asked."""
    libc = _libc()
    if libc is None or not hasattr(libc, "adjtimex"):
        return None
    buf = ctypes.create_string_buffer(_TIMEX_SIZE)  # modes = 0: nothing is set
    state = libc.adjtimex(buf)
    return None if state < 0 else int(state)


def system_clock_synced() -> bool:
    """True when the system clock is known to be right: NTP-synchronized by the kernel's word or timesyncd's."""
    if TIMESYNCD_FLAG.exists():
        return True
    state = _adjtimex_state()
    return state is not None and state != TIME_ERROR


def trusted() -> bool:
    """A system clock taken as right without asking (simulate, tests, a car with a battery-backed clock)."""
    return True


def boot_id() -> str:
    """This boot's id (monotonic times are only comparable within one boot)."""
    try:
        return BOOT_ID_FILE.read_text().strip() or "unknown"
    except OSError:
        return "unknown"


class GpsClock:
    """Frame timestamps: GPS time run on with the monotonic clock; None while real time is unknown."""

    def __init__(
        self,
        wall: Callable[[], float] = time.time,
        mono: Callable[[], float] = time.monotonic,
        synced: Callable[[], bool] = system_clock_synced,
    ) -> None:
        self._wall, self._mono, self._synced = wall, mono, synced
        self._anchor: tuple[float, float] | None = None  # (epoch, monotonic when it was true)
        self._source: str | None = None  # GPS or SYSTEM once real time is known
        self._lag = 0.0  # seconds our time is still ahead of the anchor's (being slewed away)
        self._lag_at = 0.0  # monotonic time the lag was measured
        self._next_sync_check = float("-inf")
        self._last: float | None = None  # the last time handed out: never handed out smaller
        self.corrections = 0  # anchors that disagreed by more than LOG_CORRECTION_S
        self._lock = threading.Lock()  # fixes come from the GPS thread, frames are stamped on the assembler's

    @property
    def source(self) -> str | None:
        """Where real time comes from: "gps", "system", or None while unknown."""
        return self._source

    @property
    def using_gps(self) -> bool:
        """True once frame times come from GPS fixes (run on between them)."""
        return self._source == GPS

    def mono(self) -> float:
        """The monotonic time this clock runs on (frames keep it while real time is unknown)."""
        return self._mono()

    def observe(self, gps_epoch: float, at_mono: float | None = None) -> None:
        """Record the receiver's time of a fix, received at monotonic ``at_mono``."""
        if MIN_T <= gps_epoch <= MAX_T:
            with self._lock:
                self._set_anchor(gps_epoch, self._mono() if at_mono is None else at_mono, GPS)

    def offset(self) -> float | None:
        """Epoch minus monotonic time (epoch = mono + offset), or None while real time is unknown."""
        with self._lock:
            self._check_system_clock()
            if self._anchor is None:
                return None
            epoch, at = self._anchor
            return epoch - at

    def now(self) -> float | None:
        """Epoch seconds for a frame made now, or None while real time is unknown."""
        return self.at(self._mono())

    def at(self, mono: float) -> float | None:
        """Epoch seconds at monotonic time ``mono`` (not before the last time handed out), or None if unknown."""
        with self._lock:
            self._check_system_clock()
            if self._anchor is None:
                return None
            value = self._running(mono)
            if self._last is not None and value < self._last:
                value = self._last  # a fix that came in just behind a frame stamped after it: never backwards
            self._last = value
            return value

    def _running(self, mono: float) -> float:
        """Our time at ``mono``: the anchor run on, plus what is left of a lag being slewed away."""
        assert self._anchor is not None
        epoch, at = self._anchor
        lag = max(0.0, self._lag - SLEW_RATE * max(0.0, mono - self._lag_at))
        return epoch + (mono - at) + lag

    def _check_system_clock(self) -> None:
        if self._source == GPS:
            return
        mono = self._mono()
        if mono < self._next_sync_check:
            return
        self._next_sync_check = mono + SYNC_CHECK_S
        if self._synced():
            wall = self._wall()
            if MIN_T <= wall <= MAX_T:
                self._set_anchor(wall, mono, SYSTEM)

    def _set_anchor(self, epoch: float, at: float, source: str) -> None:
        if self._anchor is None:
            log.info("real time known from the %s clock", source)
            self._anchor, self._source, self._lag = (epoch, at), source, 0.0
            return
        ours = self._running(at)
        error = epoch - ours  # > 0: the new anchor is ahead of us
        if abs(error) > LOG_CORRECTION_S:
            self.corrections += 1
            log.warning("frame clock corrected by %+.3f s (%s time); %s", error, source,
                        "stepped forward" if error > 0 else f"slewed over {-error / SLEW_RATE:.0f} s, never backwards")
        if source == GPS and self._source != GPS:
            log.info("frame clock now on GPS time")
        self._anchor, self._source = (epoch, at), source
        self._lag, self._lag_at = (0.0, at) if error >= 0 else (-error, at)
