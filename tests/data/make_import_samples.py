"""Writes the import test files in tests/data/imports/ from the bundled OKC recording (GPL-3.0, see PROVENANCE.md).

    python3 tests/data/make_import_samples.py

Every file holds the same excerpt of ``okc-tillotson-plain.nmea`` (lines EXCERPT: from the pits' exit over
two whole laps), one GPS epoch per row as ``dashboard.telemetry.importers.nmea`` frames it (the position of
the epoch's first sentence, as the car's monitor frames it live), written in each logger's format. The
recording holds GPS only: the engine channels (RPM, engine temperature, battery) are made up from the
speed, deterministically, to exercise sparse columns and unit conversion. Positions are written with every
digit of the double (``repr``): the loggers themselves write 6 to 7 decimals, which would move a lap's
crossing by up to ~2 ms; the files are meant to time exactly like the recording.
"""
from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # run as a script from anywhere in the checkout

from dashboard.telemetry.importers import ImportReport  # noqa: E402
from dashboard.telemetry.importers.nmea import frames as nmea_frames  # noqa: E402

HERE = Path(__file__).resolve().parent
RECORDING = HERE / "okc-tillotson-plain.nmea"
OUT = HERE / "imports"
EXCERPT = slice(1700, 4700)  # the lines tests/car/test_fix_frames_e2e.py streams live
KMH_TO_MPH = 1 / 1.609344
KMH_TO_MS = 1 / 3.6
M_TO_FT = 1 / 0.3048
ENGINE_EVERY = 5  # engine channels in one row of 5 (5 Hz against the GPS's 25 Hz)
BATTERY_EVERY = 25  # battery once a second


def epochs() -> list[dict]:
    """The excerpt's GPS epochs as {t, lat, lon, speed (km/h), altitude, satellites, hdop}: None where unsaid."""
    lines = RECORDING.read_text().splitlines(keepends=True)[EXCERPT]
    out = []
    for frame in nmea_frames(lines, ImportReport()):
        c = frame.channels
        if c.get("lat") is None:
            continue
        out.append({"t": round(frame.t, 3), "lat": c["lat"], "lon": c["lon"], "speed": c.get("gps_speed"),
                    "altitude": c.get("altitude"), "satellites": c.get("satellites"), "hdop": c.get("hdop")})
    return out


def rpm(speed_kmh: float) -> float:
    """A kart's engine speed, made up: idle 1800, ~95 rpm per km/h."""
    return round(1800 + 95 * speed_kmh)


def engine_temp_c(i: int) -> float:
    """Warming up from 60 °C by a degree every 250 rows, made up."""
    return 60.0 + i // 250


def _times(value: float | None, factor: float) -> float | None:
    return None if value is None else value * factor


def _num(value: float | None, fmt: str = "") -> str:
    return "" if value is None else (format(value, fmt) if fmt else repr(value))


def racecapture(rows: list[dict]) -> str:
    """RaceCapture/Pro's log: Interval and Utc in ms, GPS at 25 Hz, engine at 5 Hz, battery at 1 Hz."""
    header = ['"Interval"|"ms"|0|0|1', '"Utc"|"ms"|0|0|1', '"Battery"|"Volts"|0.0|20.0|1',
              '"Latitude"|"Degrees"|-180.0|180.0|25', '"Longitude"|"Degrees"|-180.0|180.0|25',
              '"Speed"|"mph"|0.0|150.0|25', '"Altitude"|"ft"|0.0|4000.0|25', '"GPSSats"|""|0|20|25',
              '"RPM"|""|0|20000|5', '"EngineTemp"|"F"|0|300|5']
    out = [",".join(header)]
    start = rows[0]["t"]
    for i, r in enumerate(rows):
        engine = i % ENGINE_EVERY == 0
        cells = [str(round((r["t"] - start) * 1000) + 61_000), str(round(r["t"] * 1000)),
                 "13.8" if i % BATTERY_EVERY == 0 else "", repr(r["lat"]), repr(r["lon"]),
                 _num(_times(r["speed"], KMH_TO_MPH), ".2f"),
                 _num(None if r["altitude"] is None else r["altitude"] * M_TO_FT, ".1f"),
                 _num(r["satellites"], ".0f"),
                 str(rpm(r["speed"] or 0.0)) if engine else "",
                 _num(engine_temp_c(i) * 9 / 5 + 32, ".1f") if engine else ""]
        out.append(",".join(cells))
    return "\n".join(out) + "\n"


def racechrono(rows: list[dict]) -> str:
    """RaceChrono's CSV v3: preamble, names, units and sources rows; GPS at 25 Hz, OBD rpm at 5 Hz."""
    out = ["This file is created using RaceChrono Pro v9.1.3 ( http://racechrono.com/ ).", "Format,3",
           'Session title,"OKC practice"', "Session type,Lap timing", 'Track name,"Orlando Kart Center"',
           "Driver name,", "Created,23/11/2025,17:01", "Note,", "",
           "timestamp,fragment_id,lap_number,elapsed_time,distance_traveled,altitude,bearing,device_update_rate,"
           "latitude,longitude,satellites,speed,speed,rpm,engine_coolant_temperature",
           "unix time,,,s,m,m,deg,Hz,deg,deg,sats,m/s,m/s,rpm,.C",
           ",,,,,100: gps,100: gps,100: gps,100: gps,100: gps,100: gps,100: gps,calc,200: obd,200: obd"]
    start = rows[0]["t"]
    for i, r in enumerate(rows):
        engine = i % ENGINE_EVERY == 0
        cells = [f"{r['t']:.3f}", "0", "", f"{r['t'] - start:.3f}", "", _num(r["altitude"], ".1f"), "", "25.0",
                 repr(r["lat"]), repr(r["lon"]), _num(r["satellites"], ".0f"),
                 _num(_times(r["speed"], KMH_TO_MS), ".3f"), _num(_times(r["speed"], KMH_TO_MS), ".3f"),
                 str(rpm(r["speed"] or 0.0)) if engine else "",
                 _num(engine_temp_c(i), ".1f") if engine else ""]
        out.append(",".join(cells))
    return "\n".join(out) + "\n"


def _iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def gpx(rows: list[dict]) -> str:
    """A GPX 1.1 track: one point per epoch with its time and elevation."""
    out = ['<?xml version="1.0" encoding="UTF-8"?>',
           '<gpx version="1.1" creator="make_import_samples.py" xmlns="http://www.topografix.com/GPX/1/1">',
           "  <trk>", "    <name>OKC practice</name>", "    <trkseg>"]
    for r in rows:
        ele = f"<ele>{r['altitude']:.1f}</ele>" if r["altitude"] is not None else ""
        out.append(f'      <trkpt lat="{r["lat"]!r}" lon="{r["lon"]!r}">{ele}<time>{_iso(r["t"])}</time></trkpt>')
    out += ["    </trkseg>", "  </trk>", "</gpx>"]
    return "\n".join(out) + "\n"


def plain_csv(rows: list[dict]) -> str:
    """A plain CSV: ISO 8601 time, position, speed in mph, coolant in °F, rpm."""
    out = ["Time,Latitude,Longitude,Speed (mph),Coolant Temp (F),RPM"]
    for i, r in enumerate(rows):
        out.append(f"{_iso(r['t'])},{r['lat']!r},{r['lon']!r},{_num(_times(r['speed'], KMH_TO_MPH), '.2f')},"
                   f"{engine_temp_c(i) * 9 / 5 + 32:.1f},{rpm(r['speed'] or 0.0)}")
    return "\n".join(out) + "\n"


def main() -> None:
    """Write every sample file."""
    OUT.mkdir(exist_ok=True)
    rows = epochs()
    lines = RECORDING.read_text().splitlines(keepends=True)[EXCERPT]
    files = {"okc.log": racecapture(rows), "okc-racechrono.csv": racechrono(rows), "okc.gpx": gpx(rows),
             "okc-plain.csv": plain_csv(rows), "okc.nmea": "".join(lines)}
    for name, text in files.items():
        (OUT / name).write_text(text)
        print(f"wrote {OUT / name} ({len(text)} bytes)")


if __name__ == "__main__":
    main()
