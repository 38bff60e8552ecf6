"""What every in-car source shares: a latest-value store, a status, and a Worker thread.

A source runs in its own thread and writes converted channel values into the
ChannelStore; the assembler samples the store. A source handles the failures
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
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from dashboard.car.worker import Worker
from dashboard.telemetry.channels import stale_after

log = logging.getLogger(__name__)

STOP_JOIN_TIMEOUT_S = 15.0  # python-obd's serial read can block up to its 10 s port timeout
BACKOFF_INITIAL_S = 0.5  # first retry soon: a loose USB plug is often back at once
BACKOFF_MAX_S = 10.0  # never wait longer than this for a device to come back


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
    """Latest value of every channel with the monotonic time it arrived; thread-safe."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._values: dict[str, tuple[float | None, float]] = {}

    def update(self, values: Mapping[str, float | None], at: float | None = None) -> None:
        """Record new values (None = known to be unknown, e.g. no GPS fix)."""
        at = self._clock() if at is None else at
        with self._lock:
            for name, value in values.items():
                self._values[name] = (value, at)

    def snapshot(self, now: float | None = None) -> dict[str, float | None]:
        """Every channel seen so far; a value older than its staleness limit is None."""
        now = self._clock() if now is None else now
        with self._lock:
            items = list(self._values.items())
        return {
            name: (value if now - at <= stale_after(name) else None)
            for name, (value, at) in items
        }

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
