"""The ``dashboard export`` command: a stored session, or one lap of it, as CSV, JSON Lines or GPX.

    dashboard export SESSION_ID --format csv|jsonl|gpx|events [--lap N] [-o FILE]

Frames are read from the store a page at a time and written as the pure
writers of ``dashboard.telemetry.export`` yield them, so memory stays bounded
however long the session; a CSV reads the frames twice (its columns first).
``open_export`` does the lookups and returns the lazy stream, for the REST
route as well as this command.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, BinaryIO, Iterator, Sequence

from dashboard.errors import DashboardError
from dashboard.telemetry.export import FORMATS


def add_commands(subparsers: Any) -> None:
    """Register ``export`` on the ``dashboard`` command's subparsers; it sets ``func(args) -> int``."""
    parser = subparsers.add_parser(
        "export",
        help="write a stored session (or one lap) as CSV, JSON Lines or GPX",
        description="Export a session's stored frames from the database of the settings "
        "(DASHBOARD_DATABASE_URL, else DASHBOARD_INSTANCE_PATH/dashboard.db). CSV has one column per "
        "channel with its unit; JSON Lines one frame a line; GPX the track of the frames with a GPS fix.",
    )
    parser.add_argument("session_id", metavar="SESSION", help="the session's id")
    parser.add_argument("--format", "-f", choices=FORMATS, default="csv", help="output format (default csv)")
    parser.add_argument("--lap", type=int, metavar="N", help="only the frames of lap N (start_t <= t <= end_t)")
    parser.add_argument("-o", "--output", metavar="FILE", default="-", help="file to write (default: stdout)")
    parser.set_defaults(func=export_command)


def export_command(args: argparse.Namespace) -> int:
    """Run ``dashboard export``: 0 on success, 1 when the database, session or lap is not there."""
    from dashboard.config import Settings
    from dashboard.server.exporting import open_export  # here: `dashboard --help` runs where no server is installed
    from dashboard.server.store import Store

    url = Settings().resolved_database_url()
    missing = _missing_sqlite_file(url)
    if missing is not None:
        print(f"error: no database at {missing} (set DASHBOARD_INSTANCE_PATH or DASHBOARD_DATABASE_URL)",
              file=sys.stderr)
        return 1
    store = Store.from_url(url, migrate=False)
    try:
        export = open_export(store, args.session_id, args.format, args.lap)
        if args.output == "-":
            _write(export.chunks, sys.stdout.buffer)
            sys.stdout.buffer.flush()
            where = "stdout"
        else:
            _write_file(export.chunks, Path(args.output))
            where = args.output
    except DashboardError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `dashboard export ... | head`: the reader left, that is no error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    finally:
        store.engine.dispose()
    part = f"lap {args.lap} of session" if args.lap is not None else "session"
    what = "the event log" if args.format == "events" else f"{export.frames} frames"
    print(f"exported {what} of {part} {args.session_id} as {args.format} to {where}", file=sys.stderr)
    return 0


def _missing_sqlite_file(url: str) -> str | None:
    """The path of a SQLite database file that does not exist (opening it would create an empty one)."""
    if not url.startswith("sqlite:///"):
        return None
    path = url.split(":///", 1)[1]
    if not path or path == ":memory:" or Path(path).exists():
        return None
    return path


def _write(chunks: Iterator[str], out: BinaryIO) -> None:
    for chunk in chunks:
        out.write(chunk.encode("utf-8"))


def _write_file(chunks: Iterator[str], path: Path) -> None:
    """Write beside ``path`` and rename, so a failed export never leaves half a file under the name."""
    part = path.with_name(f".{path.name}.part")
    try:
        with part.open("wb") as out:
            _write(chunks, out)
        os.replace(part, path)
    except BaseException:
        part.unlink(missing_ok=True)
        raise


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m dashboard.export_cli export SESSION ...``: the command before cli.py registers it."""
    parser = argparse.ArgumentParser(prog="dashboard")
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
