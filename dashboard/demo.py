"""``dashboard demo``: the server on embedded defaults with a simulated car feeding it.

The simulated car is a separate ``dashboard simulate`` process (as a real
car's monitor would be), replaying the bundled recording of a kart lapping
Orlando Kart Center through the real ``/monitor`` protocol.

Started again on the same instance folder (after Ctrl-C, a kill, a crash), the demo ends the
session the previous run left and starts a new one: resuming it would join two runs minutes
apart into one session. The simulated car's outbox lives in the instance folder and starts empty
with each run (what it held belongs to the ended session).
"""
from __future__ import annotations

import argparse
import logging
import secrets
import shlex
import socket
import sys
from pathlib import Path
from typing import Any

from dashboard.companion import serve_with_companion
from dashboard.config import Settings
from dashboard.listener import port_number

log = logging.getLogger(__name__)

DEMO_CAR = "SIM-1"
DEMO_SESSION_NAME = "Demo: kart at Orlando Kart Center"
RESTART_REASON = "demo_restarted"  # end_reason of the session a previous demo run left
LIVE_STATUSES = ("created", "active", "stopped")  # a session in one of these would be resumed by the car


def demo_outbox(settings: Settings) -> Path:
    """The simulated car's outbox: in the demo's instance folder, so two instance folders never share one."""
    return settings.instance_path / f"demo-{DEMO_CAR}.outbox.sqlite"


def clear_outbox(path: Path) -> None:
    """Remove the simulated car's outbox of an earlier run (and its WAL files)."""
    for part in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        part.unlink(missing_ok=True)


def end_previous_runs(core: Any) -> list[str]:
    """End every session of the demo car a previous run left live; their ids."""
    rows, _total = core.store.list_sessions(100, 0, LIVE_STATUSES, DEMO_CAR)
    for row in rows:
        core.lifecycle.apply(row["id"], "end", reason=RESTART_REASON)
    return [row["id"] for row in rows]


def banner(url: str, session_id: str, api_key: str, key_made: bool, display_url: str | None = None) -> str:
    """What the demo prints once it listens: the page to open and the key, as a line to paste (stdout only)."""
    key_line = (f"export DASHBOARD_API_KEY={shlex.quote(api_key)}   # this run's key: paste it to use curl (README)"
                if key_made else "API key: the DASHBOARD_API_KEY you set")
    display_line = f"The driver's display in the simulated car: {display_url}\n" if display_url else ""
    return (f"\nRace dashboard demo: open {url}/sessions/{session_id}\n"
            f"All sessions: {url}/   API: {url}/api/v1/\n"
            f"{display_line}{key_line}\n")


def cmd_demo(args: argparse.Namespace) -> int:
    """Serve on embedded defaults, start a simulated car, print the URL to open and the key once listening."""
    from dashboard import create_app
    from dashboard.cli import _setup_logging
    from dashboard.listener import ListenError, bound_port, open_listener
    from dashboard.server.tracks import ORLANDO_TRACK_ID

    overrides = {k: v for k, v in {"host": args.host, "port": args.port}.items() if v is not None}
    settings = Settings(**overrides)
    key_made = not settings.api_key
    if key_made:  # never run the demo open: make a key and tell the user (stdout, once; never the log)
        settings.api_key = secrets.token_urlsafe(24)
    _setup_logging(settings)
    try:  # first: a taken port is one line, before the database is touched or a session started
        listener = open_listener(settings.host, settings.port)
    except ListenError as exc:
        print(f"dashboard demo: {exc}", file=sys.stderr)
        return 2
    settings.port = bound_port(listener)
    app = create_app(settings)
    core = app.extensions["dashboard"].core
    ended = end_previous_runs(core)
    if ended:
        log.info("demo restarted: ended the previous run's session %s", ", ".join(ended))
    session = core.lifecycle.attach_car(DEMO_CAR, name=DEMO_SESSION_NAME, track="Orlando Kart Center",
                                        track_id=ORLANDO_TRACK_ID)
    outbox = demo_outbox(settings)
    outbox.parent.mkdir(parents=True, exist_ok=True)
    clear_outbox(outbox)
    url = f"http://{settings.host}:{settings.port}"
    car = ["simulate", "--server", url, "--car-id", DEMO_CAR, "--speedup", str(args.speedup), "--outbox", str(outbox)]
    display_url = None
    if args.display_port != -1:  # the driver display of the simulated car: send a message from the page, answer it
        display_port = args.display_port or free_port(settings.host)
        car += ["--display", f"{settings.host}:{display_port}"]
        display_url = f"http://{settings.host}:{display_port}/"
    # the simulated car's key travels in its environment, never on its command line (any user can read that)
    return serve_with_companion(app, settings, car, banner(url, session.id, settings.api_key, key_made, display_url),
                                env={"DASHBOARD_API_KEY": settings.api_key}, listener=listener)


def free_port(host: str) -> int:
    """A port nobody listens on at ``host`` now (the simulated car binds it a moment later)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register ``demo``."""
    demo = subparsers.add_parser("demo", help="server + simulated car on embedded defaults",
                                 description="Run the server on embedded defaults with a simulated car replaying "
                                 "the bundled Orlando Kart Center laps; prints the URL to open.")
    demo.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    demo.add_argument("--port", type=port_number, help="port (default 5000; 0: any free port, printed)")
    demo.add_argument("--speedup", type=float, default=1.0, help="replay speed of the recorded laps")
    demo.add_argument("--display-port", type=int, default=0, metavar="PORT",
                      help="port of the simulated car's driver display (default: a free one, printed; -1: none)")
    demo.set_defaults(func=cmd_demo)
