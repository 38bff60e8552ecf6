"""GPS receiver source: pyserial → NmeaDecoder → ChannelStore, reopening the port with backoff.

PORT is a device or pseudo-terminal path, or any pyserial URL such as
``socket://host:port``. Bad sentences are counted (``decoder.counters``) and
skipped. When the receiver has a fix its time sets the frame clock, and the
fix goes to the store whole (``ChannelStore.add_fix``) with its own GPS time:
the assembler frames every fix, whatever its rate and however long the
process stalled, not just the latest one at each tick.
"""
from __future__ import annotations

import logging
import time

import serial

from dashboard.car.backoff import Backoff
from dashboard.car.source import BACKOFF_INITIAL_S, BACKOFF_MAX_S, ChannelStore, Source, SourceState
from dashboard.telemetry.gps import GpsReading, NmeaDecoder, split_fix

log = logging.getLogger(__name__)

DEFAULT_BAUDRATE = 9600  # NMEA 0183's standard rate; most 10-25 Hz modules are set to 115200
READ_TIMEOUT_S = 0.2  # bounds how long stop() waits for the reader
NO_DATA_TIMEOUT_S = 5.0  # an open port silent this long is reported as an error (and reopened)


class FixSink:
    """Decoded sentences into the store: each fix whole, at its own time; everything else as latest values.

    ``take(reading, t, now)``: ``t`` is the reading's time as frames carry it (the receiver's GPS
    time, or a replay's shifted time). A sentence without time (VTG) belongs to the epoch of the
    newest fix. The frame clock (``observe``) is told each fix's time first, so a tick frame made
    in between is never stamped with another clock.
    """

    def __init__(self, store: ChannelStore, clock: object | None = None) -> None:
        self.store = store
        self.clock = clock
        self._epoch_t: float | None = None  # time of the newest fix: an untimed sentence belongs to it

    def take(self, reading: GpsReading, t: float | None, now: float,
             extra: dict[str, float | None] | None = None) -> None:
        """One reading (and ``extra`` values derived from it) into the store, received at monotonic ``now``."""
        if reading.time is not None:
            self._epoch_t = t if reading.has_fix else None
            if reading.has_fix and t is not None and self.clock is not None:
                self.clock.observe(t, now)  # type: ignore[attr-defined]
        rest: dict[str, float | None] = dict(reading.values)
        if self._epoch_t is not None and (reading.has_fix or reading.time is None):
            fix, rest = split_fix(reading.values)
            self.store.add_fix(self._epoch_t, fix, now)
        if extra:
            rest.update(extra)
        if rest:
            self.store.update(rest, now)


class GpsSource(Source):
    """Reads NMEA from a serial port or URL; status connected → reading; reopens when unplugged."""

    def __init__(
        self,
        port: str,
        store: ChannelStore,
        *,
        baudrate: int = DEFAULT_BAUDRATE,
        clock: object | None = None,
        name: str = "gps",
    ) -> None:
        super().__init__(name, store)
        self.port = port
        self.baudrate = baudrate
        self.clock = clock  # a GpsClock (assembler) fed with the receiver's time on each fix
        self.decoder = NmeaDecoder()
        self.opens = 0
        self._serial: serial.SerialBase | None = None
        self.sink = FixSink(store, clock)

    def _run(self) -> None:
        backoff = Backoff(BACKOFF_INITIAL_S, BACKOFF_MAX_S)
        while not self._stop.is_set():
            self._set_status(SourceState.CONNECTING)
            try:
                self._serial = serial.serial_for_url(self.port, baudrate=self.baudrate, timeout=READ_TIMEOUT_S)
            except (serial.SerialException, OSError, ValueError) as exc:
                self._set_status(SourceState.ERROR, f"cannot open {self.port}: {exc}")
                if self._wait(backoff.next()):
                    return
                continue
            self.opens += 1
            self._set_status(SourceState.CONNECTED)
            try:
                self._read_until_lost(backoff)
            finally:
                self._close()
            if not self._stop.is_set() and self._wait(backoff.next()):
                return

    def _read_until_lost(self, backoff: Backoff) -> None:
        port = self._serial
        assert port is not None
        silent_since: float | None = None
        while not self._stop.is_set():
            try:
                data = port.read(port.in_waiting or 1)
            except (serial.SerialException, OSError, TypeError, AttributeError) as exc:
                if not self._stop.is_set():
                    self._set_status(SourceState.ERROR, f"device lost: {exc}")
                return
            now = time.monotonic()
            if not data:
                silent_since = silent_since or now
                if now - silent_since > NO_DATA_TIMEOUT_S:
                    self._set_status(SourceState.ERROR, f"no data for {NO_DATA_TIMEOUT_S:.0f} s")
                continue
            silent_since = None
            for reading in self.decoder.feed(data.decode("ascii", errors="replace")):
                self.sink.take(reading, reading.time, now)
                if self._status.state is not SourceState.READING:
                    self._set_status(SourceState.READING)
                    backoff.reset()

    def _close(self) -> None:
        port, self._serial = self._serial, None
        if port is not None:
            try:
                port.close()
            except (serial.SerialException, OSError):
                pass

    def _interrupt(self) -> None:
        port = self._serial
        if port is not None and hasattr(port, "cancel_read"):
            try:
                port.cancel_read()
            except (serial.SerialException, OSError):
                pass
