"""A plain CSV log as frames: a header row naming a time column and channels, one row per sample. Pure.

The time column is the first called ``time``, ``timestamp``, ``t``, ``utc``, ``epoch`` or
``datetime`` (any case, with a unit or not): epoch seconds, epoch milliseconds (a number past
year 5000 in seconds is taken as ms) or an ISO 8601 date and time (UTC unless it says its zone).
Other columns are channels: a name the registry knows (``speed``, ``rpm``, ``Coolant Temp``...)
becomes that channel, converted from the unit its header gives in parentheses or brackets
(``Speed (mph)``, ``oil_temp [F]``); any other name a custom channel. The delimiter is sniffed
(comma, semicolon or tab).
"""
from __future__ import annotations

import csv
import datetime as dt
import itertools
import re
from typing import Iterable, Iterator

from dashboard.telemetry.importers import (
    BadImportFile,
    ImportFrame,
    ImportReport,
    row_values,
    unique_channels,
    valid_time,
)
from dashboard.telemetry.importers.units import Convert, column

TIME_NAMES = ("time", "timestamp", "t", "utc", "epoch", "datetime", "date_time", "gps_time", "unix_time")
MS_AFTER = 1e11  # as seconds, year 5138: a number this large is epoch milliseconds
UNIT_IN_NAME = re.compile(r"^(.*?)\s*[\(\[]([^\)\]]*)[\)\]]\s*$")


def split_unit(header: str) -> tuple[str, str]:
    """``"Speed (mph)"`` -> ("Speed", "mph"); a name without a unit -> (name, "")."""
    match = UNIT_IN_NAME.match(header.strip())
    return (match.group(1).strip(), match.group(2).strip()) if match else (header.strip(), "")


def parse_time(cell: str) -> float:
    """Epoch seconds of a time cell; ValueError when it is none of the accepted forms."""
    cell = cell.strip()
    try:
        value = float(cell)
    except ValueError:
        try:
            when = dt.datetime.fromisoformat(cell.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError(f"time {cell[:30]!r} is neither epoch seconds nor an ISO 8601 date") from None
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        return when.timestamp()
    return value / 1000.0 if value > MS_AFTER else value


def frames(lines: Iterable[str], report: ImportReport) -> Iterator[ImportFrame]:
    """Frames of a plain CSV log, one per row, at its time column's time."""
    it = iter(lines)
    head = list(itertools.islice(it, 1))
    if not head or not head[0].strip():
        raise BadImportFile("the file is empty or its first line is: a CSV log starts with its column names", 1)
    try:
        dialect: type[csv.Dialect] | csv.Dialect = csv.Sniffer().sniff(head[0], delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    rows = csv.reader(itertools.chain(head, it), dialect)
    header = next(rows)
    parts = [split_unit(cell.lstrip("\ufeff")) for cell in header]
    keys = [name.lower().replace(" ", "_") for name, _unit in parts]
    time_i = next((i for i, key in enumerate(keys) if key in TIME_NAMES), None)
    if time_i is None:
        raise BadImportFile(f"no time column among {', '.join(repr(h) for h in header[:8])}: name one "
                            f"{', '.join(TIME_NAMES[:6])} (epoch seconds or ISO 8601)", 1)
    names: list[str | None] = []
    converters: list[Convert | None] = []
    for i, (name, unit) in enumerate(parts):
        if i == time_i or not name:
            names.append(None)
            converters.append(None)
            continue
        channel, convert = column(name, unit, report.notes)
        names.append(channel)
        converters.append(convert)
    names = unique_channels(names, 1, report)
    width = len(header)
    for row in rows:
        line_no = rows.line_num
        if not row or not any(cell.strip() for cell in row):
            continue
        report.rows += 1
        if len(row) != width:
            report.skip(line_no, f"{len(row)} cells where the header has {width}")
            continue
        try:
            t = parse_time(row[time_i])
            values = row_values(row, names, converters)
        except ValueError as exc:
            report.skip(line_no, str(exc))
            continue
        if not valid_time(t):
            report.skip(line_no, f"time {row[time_i][:30]!r} is not between 2000 and 2100 (relative times "
                        "cannot be placed: give epoch seconds or dates)")
            continue
        if values:
            yield ImportFrame(t, values, line_no)
