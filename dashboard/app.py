"""The server application factory (Flask tutorial style: no app at import time).

``socketio`` is the module-level extension, bound to an app in ``init_app``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from flask import Flask
from flask_socketio import SocketIO

from dashboard.config import Settings

ROOT = Path(__file__).resolve().parent.parent  # the repo: templates/ and static/ live beside the package

socketio = SocketIO()
CHANNEL = "flask-socketio"  # the Redis pub/sub channel: Flask-SocketIO's default, so its other tools can emit too
log = logging.getLogger(__name__)


@dataclass
class Runtime:
    """What one app owns besides Flask: settings, the core (services), hub, metrics."""

    settings: Settings
    core: "Core"  # noqa: F821
    hub: "Hub"  # noqa: F821
    metrics: "Metrics"  # noqa: F821
    limiter: "Limiter"  # noqa: F821 - failed authentications per address (dashboard/server/throttle.py)
    connections: "Connections"  # noqa: F821 - caps and deadlines of connections (dashboard/server/connections.py)


def create_app(settings: Settings | None = None) -> Flask:
    """Build the server app: database (migrated), the core's services, REST API, Socket.IO hub, pages."""
    from dashboard.server import api, compare_api, web, wirejson
    from dashboard.server.connections import Connections
    from dashboard.server.core import Core
    from dashboard.server.fanout import Fanout
    from dashboard.server.hub import Hub
    from dashboard.server.metrics import Metrics
    from dashboard.server.throttle import AuthThrottle, build_limiter
    from dashboard.server.websocket import DeclineCompression

    settings = settings or Settings()
    app = Flask(__name__, template_folder=str(ROOT / "templates"), static_folder=str(ROOT / "static"))
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    from dashboard.server.wirejson import FlaskJSON

    app.json = FlaskJSON(app)
    settings.instance_path.mkdir(parents=True, exist_ok=True)

    core = Core.from_settings(settings)
    metrics = Metrics()
    core.writer.on_batch = metrics.on_write
    metrics.watch_core(core)
    core.start()
    core.tracks.ensure_builtin()
    fanout = Fanout(settings.slow_viewer_s) if settings.async_mode == "gevent" else None
    if fanout is not None:
        metrics.watch_fanout(fanout)
    connections = Connections(settings)
    metrics.watch_connections(connections)
    socketio.init_app(
        app,
        async_mode=settings.async_mode,
        message_queue=settings.message_queue,
        client_manager=client_manager(settings, fanout),
        async_handlers=False,  # each connection's events in order: frames stored and broadcast in seq order
        json=wirejson,  # orjson: see dashboard/server/wirejson.py
        serializer=wirejson.TextPacket,
        max_http_buffer_size=settings.max_message_bytes,
        cors_allowed_origins=None,
        # every client of ours (monitor, gateway, pages) uses the WebSocket transport only: a polling handshake
        # is answered 400 before Engine.IO makes a session for it (20,000 of them held 295 MB)
        transports=["websocket"] if settings.websocket_only else None,
    )
    connections.watch_socketio(socketio.server)
    if fanout is not None:
        fanout.install(socketio.server.eio)
    app.wsgi_app = DeclineCompression(app.wsgi_app)  # see dashboard/server/websocket.py for the measurement
    if settings.proxy_hops:  # behind Caddy or nginx: the client's address (per-address limits) from X-Forwarded-For
        from werkzeug.middleware.proxy_fix import ProxyFix

        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=settings.proxy_hops, x_proto=settings.proxy_hops,
                                x_host=settings.proxy_hops)
    limiter = build_limiter(app, settings)
    hub = Hub(socketio, core, settings, metrics, AuthThrottle(limiter, settings.auth_failures_per_minute))
    app.extensions["dashboard"] = Runtime(settings, core, hub, metrics, limiter, connections)
    app.register_blueprint(api.bp)
    app.register_blueprint(compare_api.bp)
    app.register_blueprint(web.bp)
    api.register_error_handlers(app)
    if not core.access.closed():
        log.warning("DASHBOARD_API_KEY is not set and no key exists: ANYONE can create sessions, post setups "
                    "and push telemetry")
    return app


def client_manager(settings: Settings, fanout: "Fanout | None") -> object:  # noqa: F821
    """python-socketio's room manager: in memory, or Redis (Flask-SocketIO's channel) for several processes.

    On gevent it delivers through the direct fan-out (dashboard/server/fanout.py). Always passed
    explicitly, so the module-level SocketIO never keeps a previous app's manager.
    """
    import socketio as sio

    from dashboard.server.fanout import DirectManager, DirectRedisManager

    url = settings.message_queue  # a redis:// or rediss:// URL (checked in Settings)
    if fanout is None:
        return sio.RedisManager(url, channel=CHANNEL) if url else sio.Manager()
    return DirectRedisManager(url, fanout, channel=CHANNEL) if url else DirectManager(fanout)
