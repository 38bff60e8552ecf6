"""An NMEA 0183 log (as the bundled recordings, or a logger's ``.nmea``) as frames. Pure.

Decoded by the monitor's own :class:`~dashboard.telemetry.gps.NmeaDecoder`, so an import and a live
receiver agree on every value. One frame per GPS epoch (a receiver's sentences that share a time):
the position of its first sentence with a fix, as the car frames it live, and what the epoch's
other sentences add (GGA's altitude, satellites, HDOP). Sentences before the first date (a GGA
before any RMC) cannot be placed in time and are skipped; a bad sentence is a skipped row.
"""
from __future__ import annotations

from typing import Iterable, Iterator

from dashboard.telemetry.gps import NmeaDecoder
from dashboard.telemetry.importers import ImportFrame, ImportReport, merged, valid_time


def frames(lines: Iterable[str], report: ImportReport) -> Iterator[ImportFrame]:
    """Frames of an NMEA log, one per GPS epoch with a time."""
    decoder = NmeaDecoder()
    counters = decoder.counters
    current: tuple[float, dict[str, float | None], int] | None = None
    undated = 0
    for line_no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        report.rows += 1
        errors = counters.errors
        readings = decoder.decode_line(line)
        if counters.errors > errors:
            report.skip(line_no, f"not a valid NMEA sentence: {line.strip()[:40]!r}")
        for reading in readings:
            values = {k: v for k, v in reading.values.items() if v is not None}
            if reading.time is None:
                if reading.sentence == "VTG" and current is not None:
                    merged(current[1], values)  # VTG carries no time: it belongs to the epoch it follows
                elif reading.sentence != "VTG":
                    undated += 1
                continue
            if current is not None and reading.time == current[0]:
                if reading.has_fix and current[1].get("lat") is None:
                    current[1].update(values)
                else:
                    merged(current[1], values)
                continue
            if current is not None and current[1]:
                yield ImportFrame(*current)
            if not valid_time(reading.time):
                report.skip(line_no, "GPS time not between 2000 and 2100")
                current = None
                continue
            current = (reading.time, values, line_no)
    if current is not None and current[1]:
        yield ImportFrame(*current)
    if undated:
        report.notes.append(f"{undated} sentences before the first date (RMC) could not be placed in time")
