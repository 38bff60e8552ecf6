"""The ``dashboard import`` command: another logger's file becomes an ended session with timed laps.

    dashboard import FILE [--format racecapture|racechrono|nmea|gpx|csv] [--car-id ID] [--track TRACK]

Runs against the database of the settings directly (like ``dashboard export``), in one transaction:
a bad file or an interrupted import leaves nothing. Progress goes to stderr, a line every
``--progress-every`` frames with the share of the file read; the result is one line on stdout.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Iterator, Sequence, TextIO

from dashboard.errors import DashboardError
from dashboard.telemetry.importers import FORMATS, SNIFF_CHARS, detect_format

PROGRESS_EVERY = 100_000  # frames between two progress lines: ~every few seconds on a Pi-class machine


def add_commands(subparsers: Any) -> None:
    """Register ``import`` on the ``dashboard`` command's subparsers; it sets ``func(args) -> int``."""
    parser = subparsers.add_parser(
        "import",
        help="import another logger's file (RaceCapture, RaceChrono, NMEA, GPX, CSV) as a session",
        description="Import a log file as an ended session in the database of the settings (DASHBOARD_DATABASE_URL, "
        "else DASHBOARD_INSTANCE_PATH/dashboard.db): its frames at their original times, channels mapped to the "
        "registry and converted to its units, laps timed on the track given or on the first stored track whose "
        "start/finish line the path crosses. One transaction: a failure leaves nothing behind.",
    )
    parser.add_argument("file", metavar="FILE", help="the log file")
    parser.add_argument("--format", "-f", choices=FORMATS, help="the file's format (default: told from its content)")
    parser.add_argument("--car-id", metavar="ID", help="the car the session belongs to (default 'imported')")
    parser.add_argument("--track", metavar="TRACK", help="a stored track's name (case-insensitive) or id to time "
                        "the laps on (default: the first stored track the path crosses the line of)")
    parser.add_argument("--name", metavar="NAME", help="the session's name (default: the file's title, else its "
                        "name)")
    parser.add_argument("--progress-every", type=int, default=PROGRESS_EVERY, metavar="N",
                        help="frames between two progress lines on stderr (default %(default)s)")
    parser.set_defaults(func=import_command)


class _Reading:
    """The file's lines, counting the characters read (the progress's share of the file)."""

    def __init__(self, f: TextIO, size: int) -> None:
        self.f, self.size, self.read = f, max(size, 1), 0

    def __iter__(self) -> Iterator[str]:
        for line in self.f:
            self.read += len(line)
            yield line


def import_command(args: argparse.Namespace) -> int:
    """Run ``dashboard import``: 0 on success, 1 when the file, its content or the track is wrong."""
    from dashboard.config import Settings
    from dashboard.server.importing import import_lines  # here: `dashboard --help` runs where no server is installed
    from dashboard.server.store import Store

    path = Path(args.file)
    try:
        f = path.open(encoding="utf-8", errors="replace", newline="")
        size = os.fstat(f.fileno()).st_size
    except OSError as exc:
        print(f"error: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
        return 1
    with f:
        fmt = args.format or detect_format(f.read(SNIFF_CHARS), path.name)
        f.seek(0)
        reading = _Reading(f, size)

        def progress(frames: int, rows: int) -> None:
            share = min(100.0, 100.0 * reading.read / reading.size)
            print(f"import: {frames} frames from {rows} rows ({share:.0f}% of the file)", file=sys.stderr, flush=True)

        settings = Settings()
        settings.instance_path.mkdir(parents=True, exist_ok=True)
        store = Store.from_url(settings.resolved_database_url())
        try:
            result = import_lines(store, reading, fmt, car_id=args.car_id, track=args.track,
                                  name=args.name or "", filename=path.name, progress=progress,
                                   progress_every=max(1, args.progress_every))
        except DashboardError as exc:
            print(f"error: {path.name}: {exc.message}", file=sys.stderr)
            return 1
        finally:
            store.close()
    laps = (f"{result.laps} laps timed on {result.track}, best {result.best_lap_s:.3f} s"
            if result.laps else f"no lap timed{' on ' + result.track if result.track else ' (no track crossed)'}")
    print(f"imported {path.name} ({fmt}) as session {result.session_id}: {result.frames} frames; {laps}")
    if result.summary:
        print(f"warning: {result.summary}", file=sys.stderr)
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m dashboard.import_cli import FILE ...``."""
    parser = argparse.ArgumentParser(prog="dashboard")
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
