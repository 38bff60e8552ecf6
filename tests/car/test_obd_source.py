"""OBD source against the ELM327-emulator (a real peer on a pty), python-obd connecting for real."""
from __future__ import annotations

import logging
import re

import obd
import pytest

from dashboard.car.obd_source import OBD_LOG, ObdSource, convert, diff_codes
from dashboard.car.source import ChannelStore, SourceState
from tests.waiting import wait_for

CAN_11_500 = "6"  # ISO 15765-4 CAN 11-bit 500 kbaud: the emulator's car scenario


def test_convert_to_registry_units() -> None:
    q = obd.Unit.Quantity
    assert convert("SPEED", q(100, obd.Unit.mph)) == ("speed", pytest.approx(160.934, abs=1e-3))
    assert convert("COOLANT_TEMP", q(212, obd.Unit.degF)) == ("coolant_temp", pytest.approx(100.0))
    assert convert("MAF", q(61.75, obd.Unit.gps)) == ("maf", 61.75)
    assert convert("THROTTLE_POS", q(16.86, obd.Unit.percent)) == ("throttle", pytest.approx(16.86))
    assert convert("FUEL_TYPE", "Gasoline") is None
    assert diff_codes(["P0301", "P0420"], ["P0420", "C0300"]) == (["C0300"], ["P0301"])


def test_watch_values_skip_unsupported_and_dtc_events(elm_emulator) -> None:
    from elm import obd_message

    # the emulator leaves out the DTC count byte that ISO 15765 answers carry: give it as the first "code"
    obd_message.DTC_STORED[:] = ["01", "0143"]
    events: list[tuple[str, dict]] = []
    store = ChannelStore()
    commands = ["RPM", "SPEED", "COOLANT_TEMP", "THROTTLE_POS", "ENGINE_LOAD", "INTAKE_TEMP", "FUEL_LEVEL",
                "TIMING_ADVANCE", "MAF", "OIL_TEMP"]
    source = ObdSource(elm_emulator.get_pty(), store, commands=commands, protocol=CAN_11_500,
                       dtc_interval_s=0.3, on_event=lambda kind, payload: events.append((kind, payload)))
    source.start()
    source.start()  # safe twice
    try:
        wait_for(lambda: source.status.state is SourceState.READING, 15, "reading")
        assert source.unsupported == ["OIL_TEMP"]  # the car scenario has no oil temperature PID
        assert set(source.watched) == set(commands) - {"OIL_TEMP"}
        wait_for(lambda: all(v is not None for v in store.snapshot().values()) and len(store.snapshot()) == 9,
                 10, "all nine channels")
        rpms = set()
        wait_for(lambda: rpms.add(store.snapshot()["rpm"]) or len(rpms) >= 3, 10, "changing rpm")
        values = store.snapshot()
        assert 0 <= values["rpm"] < 10000 and 0 <= values["throttle"] <= 100 and -40 <= values["coolant_temp"] < 215
        assert "oil_temp" not in values
        wait_for(lambda: events, 10, "trouble code event")
        assert events[0] == ("dtc.set", {"code": "P0143", "description": "O2 Sensor Circuit Low Voltage",
                                         "at_start": True})
        obd_message.DTC_STORED[:] = []  # the mechanic clears the code
        wait_for(lambda: len(events) >= 2, 10, "cleared event")
        assert events[1] == ("dtc.cleared", {"code": "P0143"})
        assert source.status.state is SourceState.READING  # reading DTCs paused the watch only briefly
    finally:
        source.stop()
        source.stop()
    assert source.status.state is SourceState.STOPPED and not source.running


def test_adapter_gone_is_an_error_status_and_the_source_keeps_retrying(elm_emulator) -> None:
    store = ChannelStore()
    source = ObdSource(elm_emulator.get_pty(), store, commands=["RPM"], protocol=CAN_11_500, dtc_interval_s=0)
    source.start()
    try:
        wait_for(lambda: source.status.state is SourceState.READING, 15, "reading")
        elm_emulator.terminate()  # the adapter is unplugged
        wait_for(lambda: source.status.state is SourceState.ERROR, 20, "error status")
        assert source.running and not source.crashed  # it retries with backoff, it did not die
    finally:
        source.stop()


def test_a_failure_is_one_log_line_with_python_obds_reason_in_it(elm_emulator, caplog, capfd) -> None:
    caplog.set_level(logging.INFO)
    store = ChannelStore()
    source = ObdSource(elm_emulator.get_pty(), store, commands=["RPM"], protocol=CAN_11_500, dtc_interval_s=0)
    source.start()
    try:
        wait_for(lambda: source.status.state is SourceState.READING, 15, "reading")
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
        elm_emulator.terminate()  # the adapter is unplugged: python-obd complains, and so do we
        wait_for(lambda: source.status.state is SourceState.ERROR, 20, "error status")
        first_failure = source.status.reason
        wait_for(lambda: source.status.state is SourceState.CONNECTING or source.status.reason != first_failure,
                 20, "a reconnect attempt")
        wait_for(lambda: source.status.state is SourceState.ERROR, 20, "the reconnect failing")
    finally:
        source.stop()
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert not [r for r in warnings if r.name.split(".")[0] == "obd"]  # python-obd's records stop at its logger
    failures = [r.getMessage() for r in warnings]
    assert failures and all(m.startswith("source obd: error:") for m in failures), failures
    # python-obd's cause: the unplug meets its reader or its writer first, whichever was busy
    assert re.fullmatch(r"source obd: error: adapter disconnected \(Device disconnected while (reading|writing)\)",
                        failures[0]), failures[0]
    assert "could not open port" in failures[-1]  # the reconnect's cause, as python-obd said it, in our line
    said = [r.getMessage() for r in caplog.records]  # INFO and up: what a crew's journal shows
    assert sum(re.search("Device disconnected while (reading|writing)", m) is not None for m in said) == 1  # once
    assert "[obd" not in capfd.readouterr().err  # python-obd's own stderr handler is gone


def test_python_obds_own_handler_is_off_and_its_records_feed_the_tap() -> None:
    obd_logger = logging.getLogger("obd")
    assert obd_logger.handlers == [OBD_LOG] and not obd_logger.propagate
    mark = OBD_LOG.mark()
    logging.getLogger("obd.elm327").error("Adapter connected, but the ignition is off")
    assert OBD_LOG.first_since(mark) == "Adapter connected, but the ignition is off"
    assert OBD_LOG.first_since(OBD_LOG.mark()) is None
