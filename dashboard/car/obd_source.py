"""OBD-II source through python-obd's ``Async`` watch, with trouble-code events.

A declarative table maps python-obd commands to registry channels and the
pint unit the registry wants; values are converted before they enter the
store. Commands the car does not support are skipped with one log line. An
explicit protocol (e.g. "6" for ISO 15765-4 CAN 11/500) cuts connect time from
~4 s to ~1 s. When the adapter disappears the source reconnects with capped
backoff and says so in its status. Trouble codes (GET_DTC) are read at start
and every ``dtc_interval_s``; a new or cleared code becomes an event.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

# python-obd's unit registry redefines percent, % and ppm in pint: three warnings at every start, none of them ours
logging.getLogger("pint.util").setLevel(logging.ERROR)

import obd  # noqa: E402 - after the line above, which must come first

from dashboard.car.backoff import Backoff  # noqa: E402
from dashboard.car.source import BACKOFF_INITIAL_S, BACKOFF_MAX_S, ChannelStore, Source, SourceState  # noqa: E402

log = logging.getLogger(__name__)

# python-obd command name -> (registry channel, pint unit of that channel)
OBD_CHANNELS: dict[str, tuple[str, str]] = {
    "RPM": ("rpm", "rpm"),
    "SPEED": ("speed", "kph"),
    "COOLANT_TEMP": ("coolant_temp", "degC"),
    "THROTTLE_POS": ("throttle", "percent"),
    "ENGINE_LOAD": ("engine_load", "percent"),
    "INTAKE_TEMP": ("intake_temp", "degC"),
    "FUEL_LEVEL": ("fuel_level", "percent"),
    "TIMING_ADVANCE": ("timing_advance", "degree"),
    "MAF": ("maf", "gps"),
    "CONTROL_MODULE_VOLTAGE": ("battery_voltage", "volt"),
    "OIL_TEMP": ("oil_temp", "degC"),
}
DEFAULT_COMMANDS = (
    "RPM", "SPEED", "COOLANT_TEMP", "THROTTLE_POS", "ENGINE_LOAD",
    "INTAKE_TEMP", "FUEL_LEVEL", "TIMING_ADVANCE", "MAF",
)
DTC_INTERVAL_S = 30.0  # trouble codes change rarely; reading them pauses the watch loop briefly
WATCH_DELAY_S = 0.0  # python-obd's pause between watch loops; the adapter is the bottleneck anyway
ADAPTER_TIMEOUT_S = 0.5  # python-obd's timeout for AT commands to the adapter itself
POLL_S = 0.2  # how often the supervising loop checks the connection

EventSink = Callable[[str, dict[str, Any]], None]
OBD_NOTES_KEPT = 20  # python-obd's recent warnings and errors kept for the next status reason


class ObdLogTap(logging.Handler):
    """python-obd's own warnings and errors, kept for our status line instead of printed.

    python-obd logs to its logger "obd" through a stderr handler of its own and on to ours: every failure
    came out twice in its format and once more as our status line. Its handler is taken off and its records
    stop here; the first of those since a connect attempt names the cause in our one line per failure
    ("adapter on /dev/obd: Not Connected (... could not open port ...)"). Each is still logged at DEBUG.
    """

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self._lock = threading.Lock()
        self._notes: deque[tuple[int, str]] = deque(maxlen=OBD_NOTES_KEPT)
        self._count = 0

    def emit(self, record: logging.LogRecord) -> None:
        """Keep the record's message (python-obd calls this from its own threads too)."""
        message = record.getMessage()
        with self._lock:
            self._count += 1
            self._notes.append((self._count, message))
        log.debug("python-obd %s: %s", record.name, message)

    def mark(self) -> int:
        """A point to ask ``first_since`` about later."""
        with self._lock:
            return self._count

    def first_since(self, mark: int) -> str | None:
        """python-obd's first warning or error after ``mark``, if any."""
        with self._lock:
            return next((message for count, message in self._notes if count > mark), None)


def _tap_obd_logger() -> ObdLogTap:
    obd_logger = logging.getLogger("obd")
    for handler in list(obd_logger.handlers):  # python-obd's console handler (obd.console_handler)
        obd_logger.removeHandler(handler)
    obd_logger.propagate = False
    tap = ObdLogTap()
    obd_logger.addHandler(tap)
    return tap


OBD_LOG = _tap_obd_logger()


def channel_for(command_name: str) -> tuple[str, str | None]:
    """Registry channel and unit of a python-obd command; custom commands become ``obd.<name>``."""
    if command_name in OBD_CHANNELS:
        return OBD_CHANNELS[command_name]
    return f"obd.{command_name.lower()}", None


def convert(command_name: str, value: Any) -> tuple[str, float] | None:
    """A python-obd response value as (channel, number in the registry's unit); None if not numeric."""
    channel, unit = channel_for(command_name)
    magnitude: Any = value
    if hasattr(value, "to") and hasattr(value, "magnitude"):
        magnitude = value.to(unit).magnitude if unit else value.magnitude
    if isinstance(magnitude, bool) or not isinstance(magnitude, (int, float)):
        return None
    return channel, float(magnitude)


def diff_codes(old: Iterable[str], new: Iterable[str]) -> tuple[list[str], list[str]]:
    """(codes that appeared, codes that were cleared), each sorted."""
    old_set, new_set = set(old), set(new)
    return sorted(new_set - old_set), sorted(old_set - new_set)


class ObdSource(Source):
    """python-obd Async watch of the configured commands; DTC polling; reconnect with backoff."""

    def __init__(
        self,
        port: str,
        store: ChannelStore,
        *,
        commands: Iterable[str] = DEFAULT_COMMANDS,
        protocol: str | None = None,
        baudrate: int | None = None,
        dtc_interval_s: float = DTC_INTERVAL_S,
        on_event: EventSink | None = None,
        check_voltage: bool = True,
        name: str = "obd",
    ) -> None:
        super().__init__(name, store)
        self.port = port
        self.command_names = [c.upper() for c in commands]
        unknown = [c for c in self.command_names if not obd.commands.has_name(c)]
        if unknown:
            raise ValueError(f"unknown OBD commands: {', '.join(unknown)}")
        self.protocol = protocol
        self.baudrate = baudrate
        self.dtc_interval_s = dtc_interval_s
        self.on_event = on_event
        self.check_voltage = check_voltage
        self.watched: list[str] = []
        self.unsupported: list[str] = []
        self.codes: dict[str, str] = {}  # current trouble codes -> description
        self.connects = 0
        self.responses = 0
        self._connection: obd.Async | None = None
        self._dtc_read = False

    def _run(self) -> None:
        backoff = Backoff(BACKOFF_INITIAL_S, BACKOFF_MAX_S)
        while not self._stop.is_set():
            self._set_status(SourceState.CONNECTING)
            mark = OBD_LOG.mark()
            connection = obd.Async(
                self.port, baudrate=self.baudrate, protocol=self.protocol, fast=True,
                timeout=ADAPTER_TIMEOUT_S, check_voltage=self.check_voltage, delay_cmds=WATCH_DELAY_S,
            )
            self._connection = connection
            try:
                if connection.status() != obd.OBDStatus.CAR_CONNECTED:
                    self._set_status(SourceState.ERROR, self._why(f"adapter on {self.port}: {connection.status()}",
                                                                  mark))
                else:
                    self.connects += 1
                    self._set_status(SourceState.CONNECTED)
                    backoff.reset()
                    self._watch(connection, OBD_LOG.mark())
            finally:
                connection.close()
                self._connection = None
            if self._wait(backoff.next()):
                return

    @staticmethod
    def _why(reason: str, mark: int) -> str:
        """Our reason, with python-obd's first complaint since ``mark`` when it said one."""
        note = OBD_LOG.first_since(mark)
        return f"{reason} ({note})" if note else reason

    def _watch(self, connection: obd.Async, mark: int) -> None:
        self.watched, self.unsupported = [], []
        for name in self.command_names:
            command = obd.commands[name]
            if not connection.supports(command):
                self.unsupported.append(name)
                continue
            connection.watch(command, callback=self._callback(name))
            self.watched.append(name)
        if self.unsupported:
            log.info("OBD on %s: unsupported by the car, skipped: %s", self.port, ", ".join(self.unsupported))
        if self.dtc_interval_s > 0:
            self._read_codes(connection)
        next_dtc = time.monotonic() + self.dtc_interval_s
        connection.start()
        while not self._stop.is_set():
            if not connection.is_connected() or (self.watched and not connection.running):
                self._set_status(SourceState.ERROR, self._why("adapter disconnected", mark))
                return
            if self.dtc_interval_s > 0 and time.monotonic() >= next_dtc:
                with connection.paused():
                    self._read_codes(connection)
                next_dtc = time.monotonic() + self.dtc_interval_s
            self._wait(POLL_S)

    def _callback(self, name: str) -> Callable[[Any], None]:
        def on_response(response: Any) -> None:
            if response.is_null():
                return
            converted = convert(name, response.value)
            if converted is None:
                return
            self.store.update({converted[0]: converted[1]})
            self.responses += 1
            if self._status.state is not SourceState.READING:
                self._set_status(SourceState.READING)

        return on_response

    def _read_codes(self, connection: obd.Async) -> None:
        response = obd.OBD.query(connection, obd.commands.GET_DTC, force=True)  # blocking query; the watch is paused
        if response.is_null() or not isinstance(response.value, list):
            return
        current = {code: desc for code, desc in response.value if code}
        appeared, cleared = diff_codes(self.codes, current)
        first = not self._dtc_read
        self._dtc_read = True
        self.codes = current
        for code in appeared:
            log.warning("OBD trouble code %s set", code)
            self._emit("dtc.set", {"code": code, "description": current[code], "at_start": first})
        for code in cleared:
            log.info("OBD trouble code %s cleared", code)
            self._emit("dtc.cleared", {"code": code})

    def _emit(self, event_type: str, payload: dict[str, Any]) -> None:
        if self.on_event is None:
            return
        try:
            self.on_event(event_type, payload)
        except Exception:  # the uplink's problem must not stop the OBD reader
            log.exception("OBD event %s could not be queued", event_type)
