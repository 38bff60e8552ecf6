"""GPS source through a real pseudo-terminal: real log lines, a corrupted line, no fix, unplug/replug."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from dashboard.car.clock import GpsClock
from dashboard.car.gps_source import GpsSource
from dashboard.car.replay import BUNDLED_LOG
from dashboard.car.source import ChannelStore, SourceState
from dashboard.telemetry.gps import NmeaDecoder, split_fix, with_checksum
from tests.waiting import wait_for

LINES = BUNDLED_LOG.read_text().splitlines(keepends=True)


def test_reads_real_sentences_skips_bad_ones_and_no_fix_clears_position(make_pty, tmp_path: Path) -> None:
    pty = make_pty()
    store = ChannelStore()
    clock = GpsClock()
    source = GpsSource(pty.path, store, clock=clock)
    source.start()
    source.start()  # safe twice
    try:
        wait_for(lambda: source.status.state is SourceState.CONNECTED, 5, "port open")
        corrupted = LINES[2][:20] + "X" + LINES[2][21:]  # checksum no longer matches
        pty.write("".join(LINES[:2]) + corrupted + "\x07\x00garbage\r\n" + "".join(LINES[3:40]))
        wait_for(lambda: source.decoder.counters.sentences >= 39, 5, "39 sentences")
        assert source.status.state is SourceState.READING
        assert source.decoder.counters.errors == 2
        values = store.snapshot()
        assert values["lat"] == pytest.approx(28.4109, abs=1e-3) and values["satellites"] == 10
        assert clock.using_gps and abs(clock.now() - 1685897614.2) < 1.0  # the log's time, not ours
        pty.write(with_checksum("GPGGA,165335.000,,,,,0,03,,,M,,M,,") + "\r\n"
                  + with_checksum("GPRMC,165335.000,V,,,,,,,040623,,,N") + "\r\n")
        wait_for(lambda: store.snapshot()["gps_fix"] == 0, 5, "no-fix sentences")
        values = store.snapshot()
        assert values["lat"] is None and values["lon"] is None and values["gps_speed"] is None
        assert values["satellites"] == 3
    finally:
        source.stop()
        source.stop()
    assert source.status.state is SourceState.STOPPED


def test_unplug_reports_error_and_replug_reopens(make_pty, tmp_path: Path) -> None:
    link = tmp_path / "ttyGPS"  # like a udev symlink: the device comes back under the same name
    first = make_pty()
    os.symlink(first.path, link)
    store = ChannelStore()
    source = GpsSource(str(link), store)
    source.start()
    try:
        wait_for(lambda: source.status.state is SourceState.CONNECTED, 5, "port open")
        first.write("".join(LINES[:4]))
        wait_for(lambda: source.status.state is SourceState.READING, 5, "reading")
        first.close()  # unplugged
        wait_for(lambda: source.status.state is SourceState.ERROR, 5, "error after unplug")
        assert source.status.reason
        second = make_pty()
        link.unlink()
        os.symlink(second.path, link)
        wait_for(lambda: source.status.state is SourceState.CONNECTED and source.opens == 2, 15, "reopened")
        second.write("".join(LINES[4:8]))
        wait_for(lambda: source.decoder.counters.sentences >= 8, 5, "reading again")
        assert source.status.state is SourceState.READING
    finally:
        source.stop()


def test_missing_port_is_an_error_with_reason_not_a_crash(tmp_path: Path) -> None:
    source = GpsSource(str(tmp_path / "nothing"), ChannelStore())
    source.start()
    try:
        wait_for(lambda: source.status.state is SourceState.ERROR, 5, "error status")
        assert "cannot open" in (source.status.reason or "") and source.running and not source.crashed
    finally:
        source.stop()


def test_a_burst_of_25hz_sentences_gives_every_fix_whole_at_its_gps_time(make_pty) -> None:
    pty = make_pty()
    store = ChannelStore()
    source = GpsSource(pty.path, store, clock=GpsClock())
    recorded = (Path(__file__).resolve().parents[1] / "data" / "okc-tillotson-plain.nmea").read_text()
    lines = recorded.splitlines(keepends=True)[2000:2500]  # 20 s at 25 Hz, RMC and some GGA, all in one burst
    vtg = with_checksum("GPVTG,123.4,T,,M,10.0,N,18.5,K,A") + "\r\n"  # no time: belongs to the fix before it
    expected: dict[float, dict] = {}
    for reading in NmeaDecoder().feed("".join(lines)):
        if reading.has_fix and reading.time is not None:
            expected.setdefault(reading.time, {}).update(split_fix(reading.values)[0])
    last = max(expected)
    expected[last].update({"gps_speed": 18.5, "heading": 123.4})
    source.start()
    try:
        wait_for(lambda: source.status.state is SourceState.CONNECTED, 5, "port open")
        pty.write("".join(lines) + vtg)
        wait_for(lambda: source.decoder.counters.sentences >= len(lines) + 1, 10, "every sentence read")
    finally:
        source.stop()
    fixes = store.take_fixes()
    assert len(fixes) == len(expected) > 450  # nothing sampled away: one per epoch
    assert fixes == sorted(expected.items())  # each at its own GPS time, with that epoch's position channels
    assert store.fixes_dropped == 0
