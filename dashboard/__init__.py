"""Live race-car telemetry: the in-car monitor, the server and the crew's dashboard.

``from dashboard import create_app, socketio`` works, but Flask is only
imported when they are first used, so ``dashboard serve`` can monkey-patch the
standard library for gevent before anything else imports it.
"""
from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name in ("create_app", "socketio"):
        from dashboard import app

        return getattr(app, name)
    raise AttributeError(f"module 'dashboard' has no attribute {name!r}")
