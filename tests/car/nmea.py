"""Recorded NMEA moved in time: a receiver replaying a recording today sends today's date and time.

The server refuses live frames more than a day old, so tests that feed a recording through a
pty as a GPS receiver shift its sentences to now (by whole seconds: lap times stay exact).
"""
from __future__ import annotations

import datetime as dt
import time

from dashboard.telemetry.gps import with_checksum


def _clock(field: str) -> tuple[int, int, int, str]:
    whole, _, fraction = field.partition(".")
    return int(whole[0:2]), int(whole[2:4]), int(whole[4:6]), fraction


class Restamper:
    """Shifts the time (and RMC's date) of GGA and RMC sentences by ``shift_s`` whole seconds; others pass."""

    def __init__(self, shift_s: int) -> None:
        self.shift = dt.timedelta(seconds=shift_s)
        self._date: dt.date | None = None  # the recording's date, from its last RMC (GGA has none)

    def line(self, line: str) -> str:
        """One line (a sentence, with or without its line end) shifted."""
        body = line.strip()
        end = line[len(line.rstrip("\r\n")):]
        kind = body[3:6] if body.startswith("$") else ""
        if kind not in ("RMC", "GGA") or "*" not in body:
            return line
        fields = body.split("*")[0].split(",")
        if not fields[1]:
            return line
        hh, mm, ss, fraction = _clock(fields[1])
        if kind == "RMC" and len(fields) > 9 and fields[9]:
            self._date = dt.date(2000 + int(fields[9][4:6]), int(fields[9][2:4]), int(fields[9][0:2]))
        if self._date is None:
            return line
        moved = dt.datetime.combine(self._date, dt.time(hh, mm, ss)) + self.shift
        fields[1] = moved.strftime("%H%M%S") + (f".{fraction}" if fraction else "")
        if kind == "RMC":
            fields[9] = moved.strftime("%d%m%y")
        return with_checksum(",".join(fields)) + end


def shift_to_now(lines: list[str], first_time: float, lead_s: float = 0.0) -> tuple[list[str], int]:
    """``lines`` shifted so the fix recorded at ``first_time`` is stamped now + ``lead_s``; and the shift."""
    shift = round(time.time() + lead_s - first_time)
    restamper = Restamper(shift)
    return [restamper.line(line) for line in lines], shift
