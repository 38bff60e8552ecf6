"""RaceCapture/Pro's SD card log (``RC_XX.LOG``) as frames. Pure.

The format (Autosport Labs' wiki, "RaceCapturePro2 logfile reference"): a CSV whose first line
describes each column as ``"Name"|"units"|min|max|Hz`` (older firmware: no ``|Hz``); then one row
per sample at the fastest channel's rate, a channel logged slower leaving its cell empty between
its samples. ``Interval`` is the logger's uptime in ms, ``Utc`` GPS time in ms (0 without a lock).

A row becomes a frame at its ``Utc`` time carrying the cells it has (a row with a GPS sample is a
fix frame with its own time). Rows before the first GPS lock are placed by ``Interval`` from the
first row that has one (kept meanwhile, at most ``PENDING_MAX``). ``Speed`` is RaceCapture's GPS
speed (``gps_speed``); units are converted as the header says (mph or km/h, °F or °C...).
"""
from __future__ import annotations

import re
from typing import Iterable, Iterator

from dashboard.telemetry.importers import (
    BadImportFile,
    ImportFrame,
    ImportReport,
    number,
    row_values,
    unique_channels,
    valid_time,
)
from dashboard.telemetry.importers.units import Convert, column

HEADER_CELL = re.compile(r'^"([^"]*)"\|"([^"]*)"\|([^|]*)\|([^|]*)(?:\|([^|]*))?$')
PENDING_MAX = 100_000  # rows before the first GPS lock kept to be placed in time (~a minute at 1 kHz... rarely)
# RaceCapture's own names whose meaning differs from the registry alias of the same word
RACECAPTURE_NAMES = {"speed": "gps_speed", "gpsqual": "gps_fix"}
TIME_COLUMNS = ("interval", "utc")


def parse_header(line: str, line_no: int = 1) -> list[tuple[str, str]]:
    """[(name, units)] of a RaceCapture header line; BadImportFile naming the line and column otherwise."""
    cells = line.strip().lstrip("\ufeff").split(",")
    out = []
    for i, cell in enumerate(cells, 1):
        match = HEADER_CELL.match(cell.strip())
        if match is None:
            raise BadImportFile(f'column {i} ({cell[:40]!r}) is not "Name"|"units"|min|max|Hz: '
                                "not a RaceCapture/Pro log header", line_no)
        out.append((match.group(1), match.group(2)))
    names = [name.lower() for name, _unit in out]
    if "utc" not in names:
        raise BadImportFile("no Utc column: a RaceCapture/Pro log has Interval and Utc first", line_no)
    return out


def frames(lines: Iterable[str], report: ImportReport) -> Iterator[ImportFrame]:
    """Frames of a RaceCapture/Pro log, one per row, at each row's UTC time."""
    it = iter(lines)
    header = next(it, None)
    if header is None:
        raise BadImportFile("the file is empty", 1)
    columns = parse_header(header)
    names = [name.lower() for name, _unit in columns]
    utc_i = names.index("utc")
    interval_i = names.index("interval") if "interval" in names else None
    channels: list[str | None] = []
    converters: list[Convert | None] = []
    for name, unit in columns:
        if name.lower() in TIME_COLUMNS:
            channels.append(None)
            converters.append(None)
            continue
        target = RACECAPTURE_NAMES.get(name.lower())
        channel, convert = column(target or name, unit, report.notes)
        channels.append(channel)
        converters.append(convert)
    channels = unique_channels(channels, 1, report)
    width = len(columns)
    pending: list[tuple[int, float, dict[str, float | None]]] = []  # rows before the first lock: (line, interval)
    base: tuple[float, float] | None = None  # (interval ms, utc ms) of the first locked row
    for line_no, line in enumerate(it, 2):
        if not line.strip():
            continue
        report.rows += 1
        cells = line.rstrip("\r\n").split(",")
        if len(cells) != width:
            report.skip(line_no, f"{len(cells)} cells where the header has {width}")
            continue
        try:
            utc = number(cells[utc_i])
            interval = number(cells[interval_i]) if interval_i is not None else None
            values = row_values(cells, channels, converters)
        except ValueError as exc:
            report.skip(line_no, str(exc))
            continue
        if utc:
            t = utc / 1000.0
            if base is None:
                base = (interval if interval is not None else 0.0, utc)
                for p_line, p_interval, p_values in pending:
                    p_t = (base[1] + p_interval - base[0]) / 1000.0
                    if valid_time(p_t):
                        yield ImportFrame(p_t, p_values, p_line)
                    else:
                        report.skip(p_line, "its Interval places it before 2000")
                pending = []
        elif base is not None and interval is not None:
            t = (base[1] + interval - base[0]) / 1000.0  # a lost lock: placed by the logger's uptime
        elif interval is not None:
            if len(pending) >= PENDING_MAX:
                raise BadImportFile(f"no GPS time (Utc) in the first {PENDING_MAX} rows: the log cannot be "
                                    "placed in time", line_no)
            if values:
                pending.append((line_no, interval, values))
            continue
        else:
            report.skip(line_no, "no Utc and no Interval time")
            continue
        if not valid_time(t):
            report.skip(line_no, f"time {t:.3f} is not between 2000 and 2100")
            continue
        if values:
            yield ImportFrame(t, values, line_no)
    if base is None and pending:
        raise BadImportFile("no row has a GPS time (Utc is 0 throughout): the log cannot be placed in time")
