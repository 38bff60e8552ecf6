"""CAN bus source: python-can reads the bus, a CanDecoder turns frames into channel values, the store keeps the latest.

The bus is named ``INTERFACE:CHANNEL`` as python-can names them: ``socketcan:can0`` (Linux, with the common
USB adapters: candleLight/gs_usb, PEAK, Kvaser, CANable with the kernel's drivers, after ``ip link set can0 up
type can bitrate 500000``), ``slcan:/dev/ttyACM0`` (serial-line adapters; give the bitrate), ``gs_usb:0``,
``pcan:PCAN_USBBUS1``, ``udp_multicast:239.74.163.2`` (the tests' bus between processes)...

Every frame's values go into the store as they arrive, so a frame the assembler makes carries the latest
value of each mapped signal; the bus may run far faster than the assembler (a 100 Hz ECU, 1,000+ frames
a second). An adapter that fails (unplugged: python-can raises on recv) is closed and reopened with
capped backoff; a bus silent for ``NO_DATA_TIMEOUT_S`` is an error in the status until frames come back.
"""
from __future__ import annotations

import logging
import time
from typing import Any

from dashboard.car.backoff import Backoff
from dashboard.car.can_decoder import CanDecoder
from dashboard.car.source import BACKOFF_INITIAL_S, BACKOFF_MAX_S, ChannelStore, Source, SourceState

log = logging.getLogger(__name__)

READ_TIMEOUT_S = 0.2  # bounds how long stop() waits for the reader
NO_DATA_TIMEOUT_S = 2.0  # an ECU broadcasts at 10-100 Hz: silent this long, the bus is unplugged or the car is off


class CanSpecError(ValueError):
    """A bus name that is not ``INTERFACE:CHANNEL`` with an interface python-can knows."""


def parse_bus(spec: str) -> tuple[str, str]:
    """``INTERFACE:CHANNEL`` as (interface, channel); the channel may hold colons (``slcan:COM3@115200``)."""
    interface, sep, channel = spec.partition(":")
    if not sep or not interface or not channel:
        raise CanSpecError(f"CAN bus {spec!r}: expected INTERFACE:CHANNEL, e.g. socketcan:can0 or slcan:/dev/ttyACM0")
    return interface.strip(), channel.strip()


def check_interface(interface: str) -> None:
    """Raise ``CanSpecError`` unless python-can has an interface of that name."""
    from can.interfaces import VALID_INTERFACES  # only with --can (the [can] extra)

    if interface not in VALID_INTERFACES:
        raise CanSpecError(f"CAN interface {interface!r} is not one python-can knows "
                           f"(known: {', '.join(sorted(VALID_INTERFACES))})")


class CanSource(Source):
    """Reads a CAN bus; status connected → reading; reopens the bus with backoff when the adapter fails."""

    def __init__(self, bus: str, store: ChannelStore, decoder: CanDecoder, *, bitrate: int | None = None,
                 name: str = "can") -> None:
        super().__init__(name, store)
        self.spec = bus
        self.interface, self.channel = parse_bus(bus)
        self.bitrate = bitrate
        self.decoder = decoder
        self.opens = 0
        self.bus: Any = None  # the open python-can bus, while there is one

    def _open(self) -> Any:
        import can  # only with --can (the [can] extra)

        kwargs: dict[str, Any] = {"interface": self.interface, "channel": self.channel}
        if self.bitrate is not None:
            kwargs["bitrate"] = self.bitrate
        return can.Bus(**kwargs)

    def _run(self) -> None:
        import can

        backoff = Backoff(BACKOFF_INITIAL_S, BACKOFF_MAX_S)
        while not self._stop.is_set():
            self._set_status(SourceState.CONNECTING)
            try:
                self.bus = self._open()
            except (can.CanError, OSError, ValueError, ImportError) as exc:
                self._set_status(SourceState.ERROR, f"cannot open {self.spec}: {type(exc).__name__}: {exc}")
                if self._wait(backoff.next()):
                    return
                continue
            self.opens += 1
            self._set_status(SourceState.CONNECTED)
            try:
                self._read_until_lost(self.bus, backoff)
            finally:
                self._close()
            if not self._stop.is_set() and self._wait(backoff.next()):
                return

    def _read_until_lost(self, bus: Any, backoff: Backoff) -> None:
        import can

        decode, update = self.decoder.decode, self.store.update
        silent_since: float | None = None
        while not self._stop.is_set():
            try:
                message = bus.recv(READ_TIMEOUT_S)
            except (can.CanError, OSError, ValueError, AttributeError) as exc:
                if not self._stop.is_set():
                    self._set_status(SourceState.ERROR, f"bus {self.spec} lost: {type(exc).__name__}: {exc}")
                return
            now = time.monotonic()
            if message is None:
                silent_since = silent_since or now
                if now - silent_since > NO_DATA_TIMEOUT_S:
                    self._set_status(SourceState.ERROR, f"no CAN frames for {NO_DATA_TIMEOUT_S:.0f} s")
                continue
            silent_since = None
            if message.is_error_frame or message.is_remote_frame:
                continue
            values = decode(message.arbitration_id, message.is_extended_id, message.data)
            if values:
                update(values, now)
            if self._status.state is not SourceState.READING:
                self._set_status(SourceState.READING)
                backoff.reset()

    def _close(self) -> None:
        bus, self.bus = self.bus, None
        if bus is not None:
            try:
                bus.shutdown()
            except Exception:  # noqa: BLE001 - an adapter already gone may fail to close in any way
                log.debug("closing %s failed", self.spec, exc_info=True)
