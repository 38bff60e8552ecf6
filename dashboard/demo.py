"""``dashboard demo``: the server on embedded defaults with a simulated car feeding it.

The simulated car is a separate ``dashboard simulate`` process (as a real
car's monitor would be), replaying the bundled recording of a kart lapping
Orlando Kart Center through the real ``/monitor`` protocol.
"""
from __future__ import annotations

import argparse
import secrets

from dashboard.companion import serve_with_companion
from dashboard.config import Settings

DEMO_CAR = "SIM-1"


def cmd_demo(args: argparse.Namespace) -> int:
    """Serve on embedded defaults, start a simulated car, print the URL to open."""
    from dashboard import create_app
    from dashboard.cli import _setup_logging
    from dashboard.server.tracks import ORLANDO_TRACK_ID

    overrides = {k: v for k, v in {"host": args.host, "port": args.port}.items() if v is not None}
    settings = Settings(**overrides)
    if not settings.api_key:  # never run the demo open: make a key and tell the user
        settings.api_key = secrets.token_urlsafe(12)
    _setup_logging(settings)
    app = create_app(settings)
    session = app.extensions["dashboard"].core.lifecycle.attach_car(
        DEMO_CAR, name="Demo: kart at Orlando Kart Center", track="Orlando Kart Center", track_id=ORLANDO_TRACK_ID)
    url = f"http://{settings.host}:{settings.port}"
    car = ["simulate", "--server", url, "--car-id", DEMO_CAR, "--speedup", str(args.speedup)]
    banner = (f"\nRace dashboard demo: open {url}/sessions/{session.id}\n"
              f"(all sessions: {url}/ ; API key for setups and controls: {settings.api_key})\n")
    # the simulated car's key travels in its environment, never on its command line (any user can read that)
    return serve_with_companion(app, settings, car, banner, env={"DASHBOARD_API_KEY": settings.api_key})


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register ``demo``."""
    demo = subparsers.add_parser("demo", help="server + simulated car on embedded defaults",
                                 description="Run the server on embedded defaults with a simulated car replaying "
                                 "the bundled Orlando Kart Center laps; prints the URL to open.")
    demo.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    demo.add_argument("--port", type=int, help="port (default 5000)")
    demo.add_argument("--speedup", type=float, default=1.0, help="replay speed of the recorded laps")
    demo.set_defaults(func=cmd_demo)
