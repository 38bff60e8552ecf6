"""RaceChrono's CSV export, format 3 (RaceChrono and RaceChrono Pro, "Export > CSV v3"), as frames. Pure.

Layout (as RaceChrono Pro 7-10 writes it; checked against several open-source readers of real
exports, not against a specification, which RaceChrono does not publish)::

    This file is created using RaceChrono Pro v9.1.3 ( http://racechrono.com/ ).
    Format,3
    Session title,"..."            Track name,"..."   Driver name,...   Created,dd/mm/yyyy,hh:mm  Note,...
    (empty line)
    timestamp,fragment_id,lap_number,elapsed_time,distance_traveled,...,latitude,longitude,...,speed,...
    unix time,,,s,m,...,deg,deg,...,m/s,...            <- units
    ,,,,,100: gps,...,calc,...,200: obd,...            <- source of each column
    1767150797.44,0,8,1149.08,17834.748,...

Sensors are sampled at their own rates, so a row carries only some cells. A row is a frame at its
``timestamp`` (unix seconds). A name repeats across sources (``speed`` from the GPS, computed, and
the OBD): the GPS's is ``gps_speed``, the car's (OBD, CAN) ``speed``, others custom channels named
with their source. RaceChrono's own lap numbering and bookkeeping columns are not imported: our
lap timer times the laps.
"""
from __future__ import annotations

import csv
from typing import Iterable, Iterator

from dashboard.telemetry.importers import (
    BadImportFile,
    ImportFrame,
    ImportReport,
    channel_name,
    number,
    row_values,
    unique_channels,
    valid_time,
)
from dashboard.telemetry.importers.units import Convert, column, registered

SKIPPED_COLUMNS = {"timestamp", "fragment_id", "lap_number", "elapsed_time", "device_update_rate",
                   "device_battery_level"}
PREAMBLE_MAX = 50  # lines before the column names; more is not a RaceChrono export
META_KEYS = {"session title": "title", "track name": "track", "driver name": "driver", "created": "created"}


def _channel(name: str, unit: str, source: str, notes: list[str]) -> tuple[str, Convert]:
    src = source.lower()
    if name == "speed":
        if "gps" in src:
            return column("gps_speed", unit, notes)
        if "obd" in src or "can" in src:
            return column("speed", unit, notes)
    if registered(name) is not None and src and not any(k in src for k in ("gps", "obd", "can")):
        return channel_name(f"{name}_{src.split(':')[-1]}"), column(name, unit, notes)[1]
    return column(name, unit, notes)


def frames(lines: Iterable[str], report: ImportReport) -> Iterator[ImportFrame]:
    """Frames of a RaceChrono CSV v3 export, one per data row, at its timestamp."""
    rows = csv.reader(lines)
    header: list[str] | None = None
    version_seen = False
    for row in rows:
        line_no = rows.line_num
        if line_no > PREAMBLE_MAX:
            raise BadImportFile("no column names (a row starting with 'timestamp') in the first "
                                f"{PREAMBLE_MAX} lines: not a RaceChrono CSV v3 export", line_no)
        if not row or not any(cell.strip() for cell in row):
            continue
        key = row[0].strip().lstrip("\ufeff")
        if key.lower() == "format":
            version = row[1].strip() if len(row) > 1 else ""
            if version != "3":
                raise BadImportFile(f"RaceChrono CSV format {version or '?'}: only format 3 (Export > CSV v3) "
                                    "is read", line_no)
            version_seen = True
        elif key.lower() in META_KEYS and len(row) > 1 and row[1].strip():
            report.meta[META_KEYS[key.lower()]] = ",".join(row[1:]).strip()
        elif key == "timestamp":
            header = row
            break
    if header is None:
        raise BadImportFile("no column names (a row starting with 'timestamp'): not a RaceChrono CSV v3 export")
    if not version_seen:
        report.notes.append("no 'Format,3' line: read as RaceChrono CSV v3")
    header_line = rows.line_num
    units = next(rows, [])
    sources = next(rows, [])
    if units[:1] != ["unix time"]:
        raise BadImportFile(f"the units row should start with 'unix time', not {(units or [''])[0][:20]!r}",
                            header_line + 1)
    width = len(header)
    units += [""] * (width - len(units))
    sources += [""] * (width - len(sources))
    names: list[str | None] = []
    converters: list[Convert | None] = []
    for name, unit, source in zip(header, units, sources, strict=False):
        if name in SKIPPED_COLUMNS or not name.strip():
            names.append(None)
            converters.append(None)
            continue
        channel, convert = _channel(name.strip(), unit, source, report.notes)
        names.append(channel)
        converters.append(convert)
    names = unique_channels(names, header_line, report)
    previous: tuple[str, ...] | None = None
    for row in rows:
        line_no = rows.line_num
        if not row or not any(cell.strip() for cell in row):
            continue
        report.rows += 1
        if len(row) != width:
            report.skip(line_no, f"{len(row)} cells where the header has {width}")
            continue
        key = tuple(row)
        if key == previous:  # RaceChrono writes some rows twice
            continue
        previous = key
        try:
            t = number(row[0])
            values = row_values(row, names, converters)
        except ValueError as exc:
            report.skip(line_no, str(exc))
            continue
        if not valid_time(t):
            report.skip(line_no, f"timestamp {row[0][:20]!r} is not unix seconds between 2000 and 2100")
            continue
        if values:
            yield ImportFrame(t, values, line_no)  # type: ignore[arg-type]
