"""Replay source: an NMEA log played back at real pace or faster, for `simulate` and tests.

Readings are paced by the receiver's own timestamps (divided by ``speedup``;
``speedup=0`` means as fast as possible). Truncated and run-on lines are
handled by the decoder. Optional processors turn each reading into more
channels (the simulator's engine model).
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from dashboard.car.source import ChannelStore, Source, SourceState
from dashboard.telemetry.gps import GpsReading, NmeaDecoder, read_log

log = logging.getLogger(__name__)

BUNDLED_LOG = Path(__file__).resolve().parent.parent / "data" / "okc-2023-4laps.nmea"
MAX_GAP_S = 2.0  # a longer pause in the recording is shortened to this when replaying

Processor = Callable[[GpsReading], dict[str, float | None]]


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
    ) -> None:
        super().__init__(name, store)
        self.path = Path(path) if path is not None else BUNDLED_LOG
        if speedup < 0:
            raise ValueError("speedup must be >= 0")
        self.speedup = speedup
        self.loop = loop
        self.processors = processors or []
        self.on_loop = on_loop
        self.decoder = NmeaDecoder()
        self.loops = 0
        self.readings = 0
        self.finished = False

    def _run(self) -> None:
        if not self.path.is_file():
            self._set_status(SourceState.ERROR, f"no such log: {self.path}")
            return
        self._set_status(SourceState.CONNECTED)
        while not self._stop.is_set():
            self._play_once()
            if self._stop.is_set():
                return
            self.loops += 1
            if self.on_loop:
                self.on_loop()
            if not self.loop:
                self.finished = True
                self._set_status(SourceState.STOPPED, "end of log")
                return

    def _play_once(self) -> None:
        start_mono = time.monotonic()
        log_elapsed = 0.0
        last_t: float | None = None
        for reading in read_log(self.path, self.decoder):
            if self._stop.is_set():
                return
            if reading.time is not None:
                if last_t is not None:
                    log_elapsed += min(MAX_GAP_S, max(0.0, reading.time - last_t))
                last_t = reading.time
                if self.speedup > 0:
                    delay = start_mono + log_elapsed / self.speedup - time.monotonic()
                    if delay > 0 and self._wait(delay):
                        return
            values = dict(reading.values)
            for processor in self.processors:
                values.update(processor(reading))
            self.store.update(values)
            self.readings += 1
            if self._status.state is not SourceState.READING:
                self._set_status(SourceState.READING)
