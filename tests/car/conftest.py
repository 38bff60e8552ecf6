"""Fixtures of the in-car tests: a real ELM327 emulator on a pseudo-terminal, pty pairs for GPS."""
from __future__ import annotations

import os
import tty
from collections.abc import Iterator

import pytest

from tests.waiting import wait_for

__all__ = ["wait_for"]


class Pty:
    """A pseudo-terminal: write to ``master`` what a device would send; ``path`` is the device."""

    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        self.path = os.ttyname(self.slave)

    def write(self, text: str) -> None:
        """Send text as the device would."""
        data = text.encode("ascii")
        while data:
            data = data[os.write(self.master, data):]

    def close(self) -> None:
        """Unplug: close both ends (safe twice)."""
        for fd in (self.master, self.slave):
            try:
                os.close(fd)
            except OSError:
                pass
        self.master = self.slave = -1


@pytest.fixture
def make_pty() -> Iterator:
    """Factory of pseudo-terminals, all closed at the end of the test."""
    made: list[Pty] = []

    def make() -> Pty:
        pty = Pty()
        made.append(pty)
        return pty

    yield make
    for pty in made:
        pty.close()


@pytest.fixture
def elm_emulator(monkeypatch: pytest.MonkeyPatch) -> Iterator:
    """ELM327-emulator (test-only dependency) running in-process on a pty, scenario ``car``."""
    import elm  # the ELM327-emulator package (requirements-test.txt): a missing one fails, never skips
    import elm.elm as elm_core
    from elm import obd_message

    # its run() calls logging.config.dictConfig with a file handler: keep our logging as it is
    monkeypatch.setattr(elm_core, "setup_logging", lambda *a, **k: None)
    monkeypatch.setattr(obd_message, "DTC_STORED", obd_message.DTC_STORED)  # restored after the test
    saved_dtcs = list(obd_message.DTC_STORED)
    emulator = elm.Elm(batch_mode=True)
    emulator.__enter__()
    try:
        wait_for(lambda: emulator.threadState == emulator.THREAD.ACTIVE and emulator.get_pty(), 5, "emulator")
        emulator.set_sorted_obd_msg("car")
        yield emulator
    finally:
        obd_message.DTC_STORED[:] = saved_dtcs
        emulator.terminate()


@pytest.fixture
def monitor_server() -> Iterator:
    """A scripted stand-in for the server's /monitor namespace on a free loopback port (API key ``k3y``)."""
    from tests.car.monitor_server import ScriptedMonitor

    server = ScriptedMonitor()
    yield server
    server.close()


@pytest.fixture
def car_radio():
    """The car's Meshtastic radio: the real library's MeshInterface, its packets captured (tests/car/test_mesh.py)."""
    from tests.car.test_mesh import CAR_NODE, CaptureRadio

    radio = CaptureRadio(CAR_NODE)
    yield radio
    radio.close()


@pytest.fixture
def pit_radio():
    """The pit gateway's radio, as car_radio."""
    from tests.car.test_mesh import PIT_NODE, CaptureRadio

    radio = CaptureRadio(PIT_NODE)
    yield radio
    radio.close()
