"""Running the server with a companion process: the simulated car (demo) or the car's own monitor (serve --collect).

The companion runs in its own process: its serial reads and threads would otherwise block the server's gevent
loop. It starts once the server listens and stops with it, even when the server is killed.
"""
from __future__ import annotations

import gc
import os
import signal
import socket
import subprocess
import sys
import time
from typing import Any

from dashboard.config import Settings

LISTEN_WAIT_S = 30.0  # how long the simulator may wait for the server to listen


def _wait_listening(host: str, port: int) -> bool:
    deadline = time.monotonic() + LISTEN_WAIT_S
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.1)
    return False


def _freeze_startup_heap() -> None:
    """Keep the objects built at startup out of every later cycle collection.

    Modules, SQLAlchemy's tables and Pydantic's validators live as long as the process; a full
    (generation 2) collection walks every tracked object, and while it runs the gevent loop stops.
    Measured with ``python -m bench.run --scenario 1 --viewers 500``: full collections took 150-210 ms
    and put the only latency spikes into the run (see RACE_DASHBOARD_PLAN.md, "Garbage collection").
    """
    gc.collect()
    gc.freeze()


def _server_options(runtime: Any) -> dict[str, Any]:
    """Options for gevent's WSGI server: the bounded handler, the counting spawn (server/connections.py)."""
    if runtime.settings.async_mode != "gevent":
        return {}
    return runtime.connections.server_options()


def serve_with_companion(app: Any, settings: Settings, companion: list[str] | None,
                         banner: str = "", env: dict[str, str] | None = None, listener: socket.socket | None = None
                         ) -> int:
    """Run the server; once it listens, start ``companion`` (a ``dashboard`` command) as a child process.

    ``env`` is added to the child's environment: the way its key reaches it (never its command line).
    ``listener``: the socket bound beforehand (``dashboard/listener.py``); ``banner`` is printed once the
    server accepts on it, never before.

    The companion (a simulated car, or the car's own monitor with ``serve --collect``) runs in its own process:
    its serial reads and threads would otherwise block the server's gevent loop.
    """
    from dashboard import socketio

    runtime = app.extensions["dashboard"]
    runtime.hub.start()
    runtime.connections.start()
    child: dict[str, subprocess.Popen] = {}

    def start_companion() -> None:
        if not _wait_listening(settings.host, settings.port):
            print("server did not start listening; companion not started", file=sys.stderr, flush=True)
            return
        child["proc"] = subprocess.Popen([sys.executable, "-m", "dashboard", *companion],
                                         env={**os.environ, **(env or {})},
                                         preexec_fn=_die_with_parent if sys.platform == "linux" else None)

    if companion:
        socketio.start_background_task(start_companion)
    _stop_on_sigterm(socketio, settings)
    _freeze_startup_heap()
    try:
        _serve(socketio, app, settings, runtime, listener, banner)
    except KeyboardInterrupt:
        pass
    finally:
        if "proc" in child:
            child["proc"].terminate()
            child["proc"].wait(10)
        runtime.connections.stop()
        runtime.hub.stop()
        runtime.core.close()
    return 0


def _serve(socketio: Any, app: Any, settings: Settings, runtime: Any, listener: socket.socket | None,
           banner: str) -> None:
    """Serve until stopped; the banner (the URL to open) goes out once connections are accepted.

    Under gevent the server is the one Flask-SocketIO's ``run`` makes (a ``pywsgi.WSGIServer``, no access log),
    on the socket bound beforehand, so a taken port was already said in one line and nothing else ran.
    """
    if listener is not None and settings.async_mode == "gevent":
        from gevent import pywsgi

        server = pywsgi.WSGIServer(listener, app, log=None, **_server_options(runtime))
        socketio.wsgi_server = server  # what SIGTERM stops
        server.start()
        if banner:
            print(banner, flush=True)
        server.serve_forever()
        return
    if listener is not None:
        listener.close()  # another async mode binds by itself, on the port this one proved free
    if banner:
        print(banner, flush=True)
    socketio.run(app, host=settings.host, port=settings.port, log_output=False, use_reloader=False,
                 **_server_options(runtime))


def _die_with_parent() -> None:
    """In the companion, before exec: the kernel sends it SIGTERM when the server dies, even by SIGKILL.

    Otherwise a killed server leaves its monitor running, holding the car's serial ports.
    """
    import ctypes

    PR_SET_PDEATHSIG = 1  # noqa: N806 - the name in <sys/prctl.h>
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _stop_on_sigterm(socketio: Any, settings: Settings) -> None:
    """SIGTERM (a service manager, a container stop) shuts the server down cleanly, companion included."""
    if settings.async_mode != "gevent":
        return
    import gevent

    def stop() -> None:
        server = getattr(socketio, "wsgi_server", None)
        if server is not None:
            server.stop(timeout=5)

    gevent.signal_handler(signal.SIGTERM, stop)
