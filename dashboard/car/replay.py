"""Replay source: an NMEA log played back at real pace or faster, for `simulate` and tests.

Readings are paced by the receiver's own timestamps (divided by ``speedup``;
``speedup=0`` means as fast as possible). Truncated and run-on lines are
handled by the decoder. Optional processors turn each reading into more
channels (the simulator's engine model).

The recording's time base is kept, shifted: each fix is stamped with its
recorded time plus an offset (``ReplayTimeline``), and the tick frames with a
``ReplayClock`` that runs at ``speedup`` times the wall clock from the newest
fix. So a lap lasts in the frames what it lasted on the track, at any
speed-up, and the lap timer sees the steps between fixes as they were
driven. Pauses in the recording longer than ``MAX_GAP_S`` are shortened to
it, and each new pass of the log starts ``LOOP_PAUSE_S`` after the last fix
of the one before: time only moves forward.

Where that time sits against the wall clock: the first pass is placed so that
it ends "now" (at 1× it starts now; at N× it starts in the recent past, by
(1 − 1/N) of the pass's length), so a single pass (``simulate --once``) never
stamps a frame ahead of the wall clock. Later passes continue forward and,
above 1×, run ahead of the wall clock; the replay never lets them get more
than ``max_ahead_s`` ahead (default 240 s, under the server's
``DASHBOARD_MAX_CLOCK_AHEAD_S`` of 300 s): once there it plays at real pace.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from dashboard.car.gps_source import FixSink
from dashboard.car.source import ChannelStore, Source, SourceState
from dashboard.telemetry.gps import GpsReading, NmeaDecoder, read_log

log = logging.getLogger(__name__)

BUNDLED_LOG = Path(__file__).resolve().parent.parent / "data" / "okc-2023-4laps.nmea"
# A longer pause in the recording is shortened to this when replaying. Still longer than the lap
# timer's gap limit (3 s): a lap across a pause in the data is not timed, shortened or not.
MAX_GAP_S = 5.0
LOOP_PAUSE_S = MAX_GAP_S  # between the last fix of a pass and the first of the next: a gap, never a lap
MAX_AHEAD_S = 240.0  # frames never stamped further ahead of the wall clock (the server refuses > 300 s by default)

Processor = Callable[[GpsReading], dict[str, float | None]]


class ReplayTimeline:
    """Recorded times → replayed times: shifted by an offset, long pauses shortened, passes end to end. Pure."""

    def __init__(self, times: list[float], start: float, speedup: float) -> None:
        self.length = replay_length(times)  # replayed seconds of one pass
        # how far before ``start`` a pass begins so that it ends at ``start`` + its own playing time
        self._lead = self.length * (1.0 - 1.0 / speedup) if speedup >= 1.0 else self.length if speedup == 0 else 0.0
        self.first = start - self._lead  # replayed time of the first fix of the first pass
        self._start: float | None = self.first  # where the next pass starts (None: after the last one, a seam)
        self._offset: float | None = None
        self._last_recorded: float | None = None
        self.last: float | None = None  # the newest replayed time

    def new_pass(self) -> None:
        """The log starts again: its first fix comes ``LOOP_PAUSE_S`` after the last one replayed."""
        self._offset = None
        self._last_recorded = None
        self._start = None

    def restart(self, now: float) -> None:
        """The replay was stopped and starts the log again at ``now``: placed as the first pass was (it ends
        "now"), but never before the last fix replayed (plus the seam's pause)."""
        self.new_pass()
        if self.last is not None:
            self._start = max(self.last + LOOP_PAUSE_S, now - self._lead)

    def replayed(self, recorded: float) -> float:
        """The replayed time of a reading recorded at ``recorded`` (readings in log order)."""
        if self._offset is None:
            at = self._start if self._start is not None else (self.last or self.first) + LOOP_PAUSE_S
            self._offset = round(at - recorded, 3)  # whole ms: recorded ms times stay exact when shifted
        elif self._last_recorded is not None and recorded - self._last_recorded > MAX_GAP_S:
            self._offset = round(self._offset - (recorded - self._last_recorded - MAX_GAP_S), 3)  # shortened
        if self._last_recorded is None or recorded > self._last_recorded:
            self._last_recorded = recorded
        t = round(recorded + self._offset, 3)
        if self.last is None or t > self.last:
            self.last = t
        return t


def replay_length(times: list[float]) -> float:
    """Replayed seconds from the first to the last of ``times`` (pauses over ``MAX_GAP_S`` shortened to it)."""
    total, last = 0.0, None
    for t in times:
        if last is not None and t > last:
            total += min(MAX_GAP_S, t - last)
        if last is None or t > last:
            last = t
    return total


class ReplayClock:
    """The tick frames' clock of a replay: the newest fix's replayed time, run on at ``speedup``× the monotonic clock.

    Never ahead of the wall clock by more than ``max_ahead_s``. Before the first fix: the wall clock.
    """

    def __init__(self, speedup: float, max_ahead_s: float = MAX_AHEAD_S, wall: Callable[[], float] = time.time,
                 mono: Callable[[], float] = time.monotonic) -> None:
        self.speedup = speedup
        self.max_ahead_s = max_ahead_s
        self._wall, self._mono = wall, mono
        self._anchor: tuple[float, float] | None = None  # (replayed time, monotonic when replayed)

    def observe(self, t: float, at_mono: float | None = None) -> None:
        """A fix was replayed at replayed time ``t``."""
        self._anchor = (t, self._mono() if at_mono is None else at_mono)

    def forget(self) -> None:
        """The replay starts again elsewhere in time: the wall clock until its next fix."""
        self._anchor = None

    @property
    def using_gps(self) -> bool:
        """True once a fix was replayed (the frames' time is the recording's)."""
        return self._anchor is not None

    def mono(self) -> float:
        """The monotonic time this clock runs on (the assembler's interface, as GpsClock's)."""
        return self._mono()

    def offset(self) -> float:
        """Replayed time minus monotonic time now: a replay always knows its time."""
        mono = self._mono()
        return self.at(mono) - mono

    def now(self) -> float:
        """Replayed time now, for a tick frame."""
        return self.at(self._mono())

    def at(self, mono: float) -> float:
        """Replayed time at monotonic ``mono``."""
        if self._anchor is None:
            return self._wall()
        t, at = self._anchor
        return min(t + (mono - at) * self.speedup, max(t, self._wall() + self.max_ahead_s))


class ReplaySource(Source):
    """Plays an NMEA log into the store; ``loops`` counts completed passes."""

    def __init__(
        self,
        store: ChannelStore,
        path: str | Path | None = None,
        *,
        speedup: float = 1.0,
        loop: bool = True,
        processors: list[Processor] | None = None,
        on_loop: Callable[[], None] | None = None,
        name: str = "replay",
        clock: ReplayClock | None = None,
        max_ahead_s: float = MAX_AHEAD_S,
        wall: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(name, store)
        self.path = Path(path) if path is not None else BUNDLED_LOG
        if speedup < 0:
            raise ValueError("speedup must be >= 0")
        self.speedup = speedup
        self.loop = loop
        self.processors = processors or []
        self.on_loop = on_loop
        self.clock = clock if clock is not None else ReplayClock(speedup, max_ahead_s, wall)
        self.max_ahead_s = max_ahead_s
        self._wall = wall
        self.decoder = NmeaDecoder()
        self.sink = FixSink(store, self.clock)
        self.timeline: ReplayTimeline | None = None
        self._pace: tuple[float, float] | None = None  # (monotonic, replayed time) the pacing counts from
        self.loops = 0
        self.readings = 0
        self.finished = False

    def _run(self) -> None:
        if not self.path.is_file():
            self._set_status(SourceState.ERROR, f"no such log: {self.path}")
            return
        self._set_status(SourceState.CONNECTED)
        readings = list(read_log(self.path, self.decoder))  # decoded once (a few MB at most), played every pass
        if self.timeline is None:
            self.timeline = ReplayTimeline([r.time for r in readings if r.time is not None], self._wall(),
                                           self.speedup)
        else:  # started again after a stop (a paused session): a new pass from now on, paced from now
            self.timeline.restart(self._wall())
            self.clock.forget()
        self._pace = None
        while not self._stop.is_set():
            self._play_once(readings, self.timeline)
            if self._stop.is_set():
                return
            self.loops += 1
            self.timeline.new_pass()
            if self.on_loop:
                self.on_loop()
            if not self.loop:
                self.finished = True
                self._set_status(SourceState.STOPPED, "end of log")
                return

    def _play_once(self, readings: list[GpsReading], timeline: ReplayTimeline) -> None:
        for reading in readings:
            if self._stop.is_set():
                return
            t = None
            if reading.time is not None:
                t = timeline.replayed(reading.time)
                if self._wait(self._delay(t)):
                    return
            extra: dict[str, float | None] = {}
            for processor in self.processors:
                extra.update(processor(reading))
            self.sink.take(reading, t, time.monotonic(), extra)
            self.readings += 1
            if self._status.state is not SourceState.READING:
                self._set_status(SourceState.READING)

    def _delay(self, t: float) -> float:
        """Seconds to wait before replaying time ``t``: its pace (one pacing across passes, so the seam's
        pause is kept too), and never more than ``max_ahead_s`` ahead of the wall clock."""
        if self._pace is None:
            self._pace = (time.monotonic(), t)
        delay = 0.0
        if self.speedup > 0:
            start_mono, start_t = self._pace
            delay = start_mono + (t - start_t) / self.speedup - time.monotonic()
        return max(0.0, delay, t - self.max_ahead_s - self._wall())
