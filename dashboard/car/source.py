"""What every in-car source shares: a latest-value store, a status, and a Worker thread.

A source runs in its own thread and writes converted channel values into the
ChannelStore; the assembler samples the store. A GPS fix is also handed over
whole (``add_fix``): the assembler makes it a frame of its own, at the fix's
own GPS time, so no fix is lost to sampling. A source handles the failures
it expects (device unplugged, adapter silent) by itself, reconnecting with
capped backoff and saying so in its status; anything unexpected escapes its
thread and is counted by the ServiceManager, which restarts it (crash
isolation: one failing source never stops the others).
"""
from __future__ import annotations

import enum
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from dashboard.car.worker import Worker
from dashboard.telemetry.channels import stale_after

log = logging.getLogger(__name__)

STOP_JOIN_TIMEOUT_S = 15.0  # python-obd's serial read can block up to its 10 s port timeout
BACKOFF_INITIAL_S = 0.5  # first retry soon: a loose USB plug is often back at once
BACKOFF_MAX_S = 10.0  # never wait longer than this for a device to come back
MAX_PENDING_FIXES = 3000  # 2 min of a 25 Hz receiver: the assembler drains every tick, so only a stuck one fills it

FIX_POSITION = frozenset(("lat", "lon"))  # what makes a frame a fix to the lap timer: only ever in fix frames
DROP_LOG_EVERY = 1000  # a stuck assembler is logged at its first dropped fix, then every this many
REORDER_S = 1.0  # a fix older than the newest by less than this arrived late; by more, the receiver's time jumped
Fix = tuple[float, dict[str, float | None]]  # (GPS epoch seconds of the fix, its position channels)


class SourceState(str, enum.Enum):
    """Lifecycle of a source as shown to the crew."""

    STOPPED = "stopped"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    READING = "reading"
    ERROR = "error"


@dataclass(frozen=True)
class SourceStatus:
    """A source's state, the reason for an error, and since when."""

    state: SourceState
    reason: str | None = None
    since: float = 0.0

    def __str__(self) -> str:
        return self.state.value if self.reason is None else f"{self.state.value}: {self.reason}"


class ChannelStore:
    """Latest value of every channel with the monotonic time it arrived, and the fixes not yet framed; thread-safe.

    A value that came with a fix (``add_fix``) travels in that fix's own frame, so the tick
    frames leave it out while it is fresh (``tick_channels``); once stale it is sent as null
    there, as every stale channel is.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic, max_fixes: int = MAX_PENDING_FIXES) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._values: dict[str, tuple[float | None, float]] = {}
        self._framed: set[str] = set()  # channels whose latest value came with a fix (in a fix frame)
        self._fixes: deque[Fix] = deque()
        self._max_fixes = max_fixes
        self._taken_t: float | None = None  # time of the newest fix the assembler took
        self._newest_t: float | None = None  # time of the newest fix seen: an older one is framed, not "latest"
        self.fixes_dropped = 0  # fixes lost because nobody drained the store (overflow, counted)

    def update(self, values: Mapping[str, float | None], at: float | None = None) -> None:
        """Record new values (None = known to be unknown, e.g. no GPS fix)."""
        at = self._clock() if at is None else at
        with self._lock:
            for name, value in values.items():
                self._values[name] = (value, at)
                self._framed.discard(name)

    def add_fix(self, t: float, values: Mapping[str, float | None], at: float | None = None) -> None:
        """A position fix at GPS time ``t``: its values become latest values and it waits to be framed.

        Sentences of one epoch share ``t``: a later one merges into the fix while it waits; once the
        assembler took that fix, the later values are ordinary latest values (the next tick frame's).
        """
        at = self._clock() if at is None else at
        values = {name: value for name, value in values.items() if value is not None}
        if not values:
            return
        with self._lock:
            if self._newest_t is None or t >= self._newest_t or self._newest_t - t > REORDER_S:
                self._newest_t = t
                for name, value in values.items():
                    self._values[name] = (value, at)
            if self._fixes and self._fixes[-1][0] == t:
                self._fixes[-1][1].update(values)
                self._framed.update(values)
                return
            if t == self._taken_t:  # the epoch's fix is framed already: the rest go with the next tick frame,
                self._framed.difference_update(values.keys() - FIX_POSITION)  # its position never does
                return
            self._framed.update(values)
            self._fixes.append((t, dict(values)))
            if len(self._fixes) > self._max_fixes:
                self._fixes.popleft()
                self.fixes_dropped += 1
                if self.fixes_dropped % DROP_LOG_EVERY == 1:
                    log.warning("GPS fixes are not being framed: %d dropped (%d waiting)", self.fixes_dropped,
                                len(self._fixes))

    def take_fixes(self) -> list[Fix]:
        """The fixes not yet framed, in GPS-time order, and forget them."""
        with self._lock:
            fixes = sorted(self._fixes, key=lambda fix: fix[0])
            self._fixes.clear()
            if fixes:
                self._taken_t = fixes[-1][0]
        return fixes

    def put_back(self, fixes: list[Fix]) -> None:
        """Fixes taken but not stored (the outbox failed): first in line again, for the next tick."""
        with self._lock:
            self._fixes.extendleft(reversed(fixes))
            while len(self._fixes) > self._max_fixes:
                self._fixes.pop()  # the newest go first here: the put-back ones are older and owed first
                self.fixes_dropped += 1

    @property
    def pending_fixes(self) -> int:
        """Fixes waiting to be framed."""
        return len(self._fixes)

    def snapshot(self, now: float | None = None) -> dict[str, float | None]:
        """Every channel seen so far; a value older than its staleness limit is None."""
        now = self._clock() if now is None else now
        with self._lock:
            items = list(self._values.items())
        return {
            name: (value if now - at <= stale_after(name) else None)
            for name, (value, at) in items
        }

    def tick_channels(self, now: float | None = None) -> dict[str, float | None]:
        """The snapshot without the fresh values that travel in fix frames (stale ones stay, as null)."""
        now = self._clock() if now is None else now
        with self._lock:
            items = list(self._values.items())
            framed = set(self._framed)
        out: dict[str, float | None] = {}
        for name, (value, at) in items:
            fresh = now - at <= stale_after(name)
            if name in framed and fresh:
                continue
            out[name] = value if fresh else None
        return out

    def age(self, name: str, now: float | None = None) -> float | None:
        """Seconds since the channel was last updated, or None if never."""
        now = self._clock() if now is None else now
        with self._lock:
            entry = self._values.get(name)
        return None if entry is None else now - entry[1]


class Source(Worker):
    """Base of the in-car sources: a Worker running ``_run``, with a status and crash accounting."""

    def __init__(self, name: str, store: ChannelStore) -> None:
        super().__init__(f"source-{name}")
        self.name = name
        self.store = store
        self._status = SourceStatus(SourceState.STOPPED, since=time.time())
        self.crashes = 0  # unexpected exceptions that escaped _run
        self.crash_reason: str | None = None

    @property
    def status(self) -> SourceStatus:
        """The current status (connected, reading, error with reason...)."""
        return self._status

    @property
    def crashed(self) -> bool:
        """True when the thread ended by itself (an unexpected exception) and was not stopped."""
        thread = self._thread
        return thread is not None and not thread.is_alive() and not self._stop.is_set()

    def stop(self, timeout: float | None = STOP_JOIN_TIMEOUT_S) -> None:
        """Stop and wait for the thread (a warning when it outlives ``timeout``); no-op when not running."""
        super().stop(timeout)

    def _stopping(self) -> None:
        self._interrupt()

    def _stopped(self) -> None:
        self._set_status(SourceState.STOPPED)

    def _crashed(self, exc: Exception) -> None:
        # crash isolation: count and report, the ServiceManager restarts us
        self.crashes += 1
        self.crash_reason = f"{type(exc).__name__}: {exc}"
        log.exception("source %s crashed", self.name)
        self._set_status(SourceState.ERROR, self.crash_reason)

    def _interrupt(self) -> None:
        """Wake the thread from a blocking read; sources override when they can."""

    def _set_status(self, state: SourceState, reason: str | None = None) -> None:
        old = self._status
        if old.state != state or old.reason != reason:
            self._status = SourceStatus(state, reason, time.time())
            level = logging.WARNING if state is SourceState.ERROR else logging.INFO
            log.log(level, "source %s: %s", self.name, self._status)

    def _wait(self, seconds: float) -> bool:
        """Sleep unless stopped; True when a stop was asked."""
        return self._stop.wait(seconds)
