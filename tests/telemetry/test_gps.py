"""NMEA decoding, replayed from real recorded logs (see dashboard/data/PROVENANCE.md)."""
from __future__ import annotations

from pathlib import Path

import pytest

from dashboard.car.replay import BUNDLED_LOG
from dashboard.telemetry.gps import (
    NmeaDecoder,
    iter_lines,
    read_log,
    split_sentences,
    with_checksum,
)

# The raw 25 Hz recording, a copy kept in the repository with its provenance (tests/data/PROVENANCE.md).
RAW_LOG = Path(__file__).resolve().parents[1] / "data" / "okc-tillotson-plain.nmea"

GGA_NO_FIX = with_checksum("$GPGGA,165333.060,,,,,0,00,,,M,,M,,")
RMC_VOID = with_checksum("$GPRMC,165333.060,V,,,,,,,040623,,,N")


def test_bundled_log_real_figures() -> None:
    decoder = NmeaDecoder()
    readings = list(read_log(BUNDLED_LOG, decoder))
    rmc = [r for r in readings if r.sentence == "RMC"]
    gga = [r for r in readings if r.sentence == "GGA"]
    assert len(rmc) == len(gga) == 3828  # PROVENANCE: 3,828 GPRMC+GPGGA pairs
    assert decoder.counters.errors == 0 and decoder.counters.fixes == 7656
    top = max(r.values["gps_speed"] for r in rmc)
    assert top == pytest.approx(91.5, abs=0.1)  # 49.39 kn
    assert rmc[-1].time - rmc[0].time == pytest.approx(313.8, abs=0.1)
    assert rmc[0].time == pytest.approx(1685897613.06)  # 2023-06-04 16:53:33.060 UTC
    first = gga[0].values
    assert first["lat"] == pytest.approx(28.41094, abs=1e-5) and first["lon"] == pytest.approx(-81.37912, abs=1e-5)
    assert first["satellites"] == 10 and first["hdop"] == 0.85 and first["altitude"] == 28.0
    assert first["gps_fix"] == 1
    assert all(0 <= r.values["heading"] <= 360 for r in rmc if "heading" in r.values)
    # the kart stays on the track: every fix within ~1 km of the first
    assert all(abs(r.values["lat"] - first["lat"]) < 0.01 for r in readings)


def test_raw_log_with_run_on_sentences() -> None:
    decoder = NmeaDecoder()
    readings = list(read_log(RAW_LOG, decoder))
    rmc = [r for r in readings if r.sentence == "RMC"]
    assert len(rmc) == pytest.approx(15719, abs=15)  # PROVENANCE: 15,719 fixes; truncated ones are lost
    assert 13 <= decoder.counters.errors <= 20  # the 13 truncated sentences (and nothing else much)
    assert max(r.values["gps_speed"] for r in rmc) == pytest.approx(92.6, abs=0.1)


def test_run_on_line_keeps_the_complete_sentence() -> None:
    line = ("$GPRMC,170148.08,A,2824.65043,N,08122.75846,W,0"
            "$GPRMC,170148.12,A,2824.65043,N,08122.75847,W,0.181,,231125,,,A*6C")
    assert len(split_sentences(line)) == 2
    decoder = NmeaDecoder()
    readings = decoder.decode_line(line)
    assert len(readings) == 1 and decoder.counters.errors == 1
    assert readings[0].values["lat"] == pytest.approx(28.41084, abs=1e-5)


def test_bad_checksum_and_garbage_are_counted_and_skipped() -> None:
    good = "$GPRMC,165333.060,A,2824.65615,N,08122.74703,W,0.71,269.63,040623,,,*34"
    bad = good[:-2] + "35"
    decoder = NmeaDecoder()
    out = decoder.feed(f"{bad}\r\n\x00\xff garbage\r\n$GPXXX,1,2*00\r\n{good}\r\n")
    assert len(out) == 1 and out[0].values["gps_speed"] == pytest.approx(0.71 * 1.852)
    assert decoder.counters.errors == 3


def test_no_fix_gives_no_position_never_zero_zero() -> None:
    decoder = NmeaDecoder()
    readings = decoder.feed(f"{GGA_NO_FIX}\r\n{RMC_VOID}\r\n")
    assert [r.sentence for r in readings] == ["GGA", "RMC"]
    for r in readings:
        assert r.values["lat"] is None and r.values["lon"] is None and r.values["gps_fix"] == 0
        assert not r.has_fix
    assert readings[0].values["satellites"] == 0
    assert decoder.counters.no_fix == 2 and decoder.counters.fixes == 0


def test_vtg_and_split_chunks() -> None:
    vtg = with_checksum("$GPVTG,054.7,T,034.4,M,005.5,N,010.2,K,A*00")
    text = vtg + "\r\n" + RMC_VOID + "\r\n"
    chunks = [text[i:i + 7] for i in range(0, len(text), 7)]  # split anywhere, even inside a sentence
    readings = list(iter_lines(chunks))
    assert readings[0].values == {"gps_speed": 10.2, "heading": 54.7}
    assert readings[1].sentence == "RMC"


def test_gga_time_uses_the_date_of_the_last_rmc() -> None:
    decoder = NmeaDecoder()
    lines = BUNDLED_LOG.read_text().splitlines()[:2]
    rmc, gga = decoder.decode_line(lines[0])[0], decoder.decode_line(lines[1])[0]
    assert gga.time == rmc.time
    assert NmeaDecoder().decode_line(lines[1])[0].time is None  # no date seen yet
