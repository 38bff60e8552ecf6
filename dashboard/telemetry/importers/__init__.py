"""Other loggers' files as frames: RaceCapture/Pro logs, RaceChrono CSV v3, NMEA, GPX and plain CSV. Pure.

Each format is a module with ``frames(lines, report) -> Iterator[ImportFrame]``: a generator over a
text stream (any iterable of lines), one frame at a time, so a file of a million rows is never held
whole. Values are mapped to the registry's channels and converted to its units (``units.py``);
other columns become custom channels under a well-formed name.

Error policy (pynmea2's, for a file): a file that is not of its format, or whose header is broken,
raises :class:`BadImportFile` naming the line; a bad row (a cell that is no number, a time that
does not parse) is skipped and counted in the :class:`ImportReport`, with the first few lines and
reasons kept to be said. A file with no frame at all is a bad file.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Sequence

from dashboard.errors import InvalidInput
from dashboard.telemetry.channels import CHANNEL_NAME_RE, MAX_CHANNELS_PER_FRAME
from dashboard.telemetry.frames import MAX_T, MIN_T

FORMATS = ("racecapture", "racechrono", "nmea", "gpx", "csv")
EXAMPLES_KEPT = 5  # bad rows whose line and reason are kept to be said
SNIFF_CHARS = 4096  # the start of a file looked at to tell its format


class BadImportFile(InvalidInput):
    """A file that cannot be imported: not of its format, a broken header, no frame (422, code bad_file)."""

    code = "bad_file"

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(f"line {line}: {message}" if line is not None else message, field="file",
                         **({"line": line} if line is not None else {}))
        self.line = line


@dataclass(frozen=True)
class ImportFrame:
    """One frame of a file: its time (epoch seconds), channels in the registry's units, and its line."""

    t: float
    channels: dict[str, float | None]
    line: int


@dataclass
class ImportReport:
    """What a parser met: rows read, rows skipped (with the first few reasons), notes on columns."""

    rows: int = 0
    skipped: int = 0
    examples: list[tuple[int, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    meta: dict[str, str] = field(default_factory=dict)  # what the file says of itself (title, track...)

    def skip(self, line: int, reason: str) -> None:
        """Count a bad row; keep its line and reason while few are kept."""
        self.skipped += 1
        if len(self.examples) < EXAMPLES_KEPT:
            self.examples.append((line, reason))

    def summary(self) -> str:
        """The skipped rows in one sentence (empty when none was)."""
        if not self.skipped:
            return ""
        shown = "; ".join(f"line {line}: {reason}" for line, reason in self.examples)
        more = "; ..." if self.skipped > len(self.examples) else ""
        return f"{self.skipped} bad row{'s' if self.skipped > 1 else ''} skipped ({shown}{more})"


def channel_name(raw: str) -> str:
    """A column's name as a custom channel name: lower case, ``[a-z0-9_.]``, starting with a letter."""
    name = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", raw.strip())  # AccelX -> Accel_X
    name = re.sub(r"[^a-z0-9_.]+", "_", name.lower()).strip("_.")
    if not name or not name[0].isalpha():
        name = f"c_{name}" if name else "c"
    return name[:64]


def valid_time(t: float | None) -> bool:
    """True for a sample time a frame may carry (2000..2100)."""
    return t is not None and MIN_T <= t <= MAX_T


def number(cell: str) -> float | None:
    """A cell as a finite float, None when empty; ValueError when it is something else."""
    cell = cell.strip()
    if not cell:
        return None
    value = float(cell)
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"{cell!r} is not a finite number")
    return value


def row_values(cells: Sequence[str], channels: Sequence[str | None],
               converters: Sequence[Callable[[float], float] | None]) -> dict[str, float | None]:
    """A row's cells as channel values in the registry's units: empty cells and unnamed columns left out;
    ValueError (from ``number``) when a cell is no number."""
    values: dict[str, float | None] = {}
    for cell, channel, convert in zip(cells, channels, converters, strict=True):
        if channel is None or not cell:
            continue
        value = number(cell)
        if value is not None and convert is not None:
            values[channel] = convert(value)
    return values


def unique_channels(names: list[str | None], line: int, report: ImportReport) -> list[str | None]:
    """Column channel names made unique (a second ``speed`` becomes ``speed_2``) and at most the frame's limit."""
    seen: set[str] = set()
    out: list[str | None] = []
    kept = 0
    for name in names:
        if name is None:
            out.append(None)
            continue
        base, n = name, 2
        while name in seen:
            name = f"{base[:60]}_{n}"
            n += 1
        if not CHANNEL_NAME_RE.fullmatch(name):
            raise BadImportFile(f"column {base!r} gives no usable channel name", line)
        if kept >= MAX_CHANNELS_PER_FRAME:
            report.notes.append(f"column {name!r} dropped: a frame carries at most {MAX_CHANNELS_PER_FRAME} channels")
            out.append(None)
            continue
        seen.add(name)
        kept += 1
        out.append(name)
    return out


Parser = Callable[[Iterable[str], ImportReport], Iterator[ImportFrame]]


def parser(fmt: str) -> Parser:
    """The frames generator of a format; InvalidInput naming ``format`` for an unknown one."""
    from dashboard.telemetry.importers import csvlog, gpx, nmea, racecapture, racechrono

    parsers: dict[str, Parser] = {"racecapture": racecapture.frames, "racechrono": racechrono.frames,
                                  "nmea": nmea.frames, "gpx": gpx.frames, "csv": csvlog.frames}
    if fmt not in parsers:
        raise InvalidInput(f"unknown import format {fmt!r}; one of {', '.join(FORMATS)}", field="format")
    return parsers[fmt]


def detect_format(head: str, filename: str = "") -> str:
    """The format of a file from its first characters (and its name's ending when they say nothing)."""
    text = head.lstrip("\ufeff").lstrip()
    first = text.split("\n", 1)[0]
    if text.startswith("<?xml") or text.startswith("<gpx") or "<gpx" in text[:SNIFF_CHARS]:
        return "gpx"
    if text.startswith("$") or re.match(r"^\$?G[PNLA][A-Z]{3},", first):
        return "nmea"
    if "racechrono" in first.lower() or first.startswith("Format,3"):
        return "racechrono"
    if re.match(r'^"[^"]*"\|"[^"]*"\|', first):
        return "racecapture"
    lower = filename.lower()
    if lower.endswith((".nmea", ".nma", ".txt")) and "$GP" in text[:SNIFF_CHARS]:
        return "nmea"
    if lower.endswith(".gpx"):
        return "gpx"
    return "csv"


def iter_frames(fmt: str, lines: Iterable[str], report: ImportReport) -> Iterator[ImportFrame]:
    """The file's frames; BadImportFile when it holds none (naming the first bad row, if any)."""
    count = 0
    for frame in parser(fmt)(lines, report):
        count += 1
        yield frame
    if count == 0:
        why = f" ({report.summary()})" if report.skipped else ""
        raise BadImportFile(f"no frame found in this {fmt} file{why}")


def merged(channels: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``channels`` with the values of ``extra`` it does not have yet."""
    for name, value in extra.items():
        if channels.get(name) is None:
            channels[name] = value
    return channels
