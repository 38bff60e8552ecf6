"""The importers of other loggers' files: real sample files (tests/data/imports, made from the OKC recording by
tests/data/make_import_samples.py) give the recording's fixes, in the registry's units; bad files are refused naming
the line; bad rows are skipped and counted."""
from __future__ import annotations

import io
from pathlib import Path

import pytest

from dashboard.telemetry.importers import (
    BadImportFile,
    ImportReport,
    channel_name,
    detect_format,
    iter_frames,
)
from dashboard.telemetry.importers.nmea import frames as nmea_frames
from dashboard.telemetry.importers.units import column

DATA = Path(__file__).resolve().parents[1] / "data"
SAMPLES = DATA / "imports"
EPOCHS = 2736  # GPS epochs in the excerpt every sample holds
FILES = {"racecapture": "okc.log", "racechrono": "okc-racechrono.csv", "gpx": "okc.gpx", "csv": "okc-plain.csv",
         "nmea": "okc.nmea"}


def frames_of(fmt: str, text: str) -> tuple[list, ImportReport]:
    report = ImportReport()
    return list(iter_frames(fmt, io.StringIO(text), report)), report


def recording_fixes() -> list:
    """The excerpt's fixes as the NMEA importer frames them (what every sample was written from)."""
    lines = (DATA / "okc-tillotson-plain.nmea").read_text().splitlines(keepends=True)[1700:4700]
    return [f for f in nmea_frames(lines, ImportReport()) if f.channels.get("lat") is not None]


@pytest.mark.parametrize("fmt", list(FILES))
def test_every_sample_gives_the_recordings_fixes_at_their_times(fmt: str) -> None:
    text = (SAMPLES / FILES[fmt]).read_text()
    assert detect_format(text[:4096], FILES[fmt]) == fmt
    frames, report = frames_of(fmt, text)
    fixes = [f for f in frames if f.channels.get("lat") is not None]
    expected = recording_fixes()
    assert len(fixes) == len(expected) == EPOCHS
    assert [round(f.t, 3) for f in fixes] == [round(f.t, 3) for f in expected]
    assert [(f.channels["lat"], f.channels["lon"]) for f in fixes] == [
        (f.channels["lat"], f.channels["lon"]) for f in expected]
    assert report.skipped == (1 if fmt == "nmea" else 0)  # the recording's one truncated sentence


def test_racecapture_units_are_converted_and_sparse_channels_carried_only_where_sampled() -> None:
    frames, report = frames_of("racecapture", (SAMPLES / "okc.log").read_text())
    expected = recording_fixes()
    first = frames[0].channels
    assert first["gps_speed"] == pytest.approx(expected[0].channels["gps_speed"], abs=0.01)  # mph -> km/h
    assert first["coolant_temp"] == pytest.approx(60.0)  # EngineTemp 140.0 F -> 60 °C
    assert first["battery_voltage"] == 13.8 and first["rpm"] == 6829.0
    assert "rpm" not in frames[1].channels and "battery_voltage" not in frames[1].channels  # 5 Hz and 1 Hz
    assert "rpm" in frames[5].channels and "battery_voltage" in frames[25].channels
    by_t = {f.t: f.channels for f in expected}
    with_altitude = [f for f in frames if "altitude" in f.channels]
    assert len(with_altitude) > 100
    assert all(f.channels["altitude"] == pytest.approx(by_t[f.t]["altitude"], abs=0.03) for f in with_altitude)
    assert report.notes == []


def test_racechrono_maps_each_source_and_reads_its_preamble() -> None:
    frames, report = frames_of("racechrono", (SAMPLES / "okc-racechrono.csv").read_text())
    first = frames[0].channels
    assert first["gps_speed"] == pytest.approx(14.705 * 3.6)  # the GPS's speed, m/s -> km/h
    assert first["speed_calc"] == pytest.approx(14.705 * 3.6)  # RaceChrono's computed one stays apart
    assert first["rpm"] == 6829.0 and first["coolant_temp"] == 60.0
    assert "lap_number" not in first and "elapsed_time" not in first  # RaceChrono's own timing is not imported
    assert report.meta["title"] == "OKC practice" and report.meta["track"] == "Orlando Kart Center"


def test_plain_csv_reads_units_in_the_header() -> None:
    frames, _ = frames_of("csv", (SAMPLES / "okc-plain.csv").read_text())
    assert frames[0].channels["speed"] == pytest.approx(32.90 * 1.609344)
    assert frames[0].channels["coolant_temp"] == pytest.approx(60.0)
    text = "timestamp;Oil Temp [F];boost\n1763917364.5;212;1.2\n1763917364500;32;1.3\n"
    frames, _ = frames_of("csv", text)  # semicolons, epoch seconds and milliseconds, a custom channel
    assert [(f.t, f.channels) for f in frames] == [(1763917364.5, {"oil_temp": 100.0, "boost": 1.2}),
                                                   (1763917364.5, {"oil_temp": 0.0, "boost": 1.3})]


def test_a_unit_that_does_not_convert_keeps_the_column_as_its_own_channel() -> None:
    notes: list[str] = []
    assert column("Speed", "furlongs", notes)[0] == "speed_furlongs"
    assert "does not convert" in notes[0]
    assert channel_name("AccelX") == "accel_x" and channel_name("2nd gear") == "c_2nd_gear"


@pytest.mark.parametrize(("fmt", "text", "line", "words"), [
    ("racecapture", '"Interval"|"ms"|0|0|1,"Utc"|"ms"|0|0|1,Battery\n1,2,3\n', 1, "column 3"),
    ("racecapture", '"Interval"|"ms"|0|0|1,"Battery"|"V"|0|20|1\n', 1, "no Utc column"),
    ("racechrono", "This file is created using RaceChrono v7\nFormat,2\n", 2, "only format 3"),
    ("racechrono", "Format,3\n\ntimestamp,latitude\ndeg,deg\n", 4, "unix time"),
    ("csv", "when,speed\n1,2\n", 1, "no time column"),
    ("gpx", '<?xml version="1.0"?>\n<gpx>\n<trk><trkseg>\n<trkpt lat="1" lon="2"></trk>\n', 4, "not well-formed"),
    ("gpx", '<?xml version="1.0"?>\n<kml>\n</kml>\n', 2, "not <gpx>"),
])
def test_a_bad_file_is_refused_naming_its_line(fmt: str, text: str, line: int, words: str) -> None:
    with pytest.raises(BadImportFile) as caught:
        frames_of(fmt, text)
    assert caught.value.line == line and words in caught.value.message
    assert caught.value.message.startswith(f"line {line}: ")


def test_bad_rows_are_skipped_counted_and_named_the_rest_imported() -> None:
    lines = (SAMPLES / "okc.log").read_text().splitlines(keepends=True)[:101]
    lines[10] = lines[10].replace(",", ",x", 1)  # a cell that is no number
    lines[20] = "1,2,3\n"  # a row cut short
    lines[30] = lines[30].replace(",", ",nan", 1)  # not finite
    frames, report = frames_of("racecapture", "".join(lines))
    assert len(frames) == 97 and report.rows == 100
    assert report.skipped == 3 and [line for line, _ in report.examples] == [11, 21, 31]
    assert report.summary().startswith("3 bad rows skipped (line 11: ")


def test_a_file_of_bad_rows_only_is_a_bad_file_saying_why() -> None:
    with pytest.raises(BadImportFile) as caught:
        frames_of("csv", "time,speed\nyesterday,1\n")
    assert "no frame" in caught.value.message and "line 2" in caught.value.message


def test_racecapture_rows_before_the_first_gps_lock_are_placed_by_interval() -> None:
    text = ('"Interval"|"ms"|0|0|1,"Utc"|"ms"|0|0|1,"RPM"|""|0|9000|10\n'
            "1000,0,900\n1100,0,950\n1200,1763917364000,1000\n1300,0,1100\n")
    frames, _ = frames_of("racecapture", text)
    assert [(round(f.t, 3), f.channels["rpm"], f.line) for f in frames] == [
        (1763917363.8, 900.0, 2), (1763917363.9, 950.0, 3), (1763917364.0, 1000.0, 4), (1763917364.1, 1100.0, 5)]
    with pytest.raises(BadImportFile, match="no row has a GPS time"):
        frames_of("racecapture", '"Interval"|"ms"|0|0|1,"Utc"|"ms"|0|0|1,"RPM"|""|0|9000|10\n1000,0,900\n')
