"""A local control of the car's inbox: a UNIX socket, one JSON request per line, one JSON answer per line.

What a script of the car's own (a display of another kind, a button box's daemon) and the end-to-end
tests use to read the inbox and to mark a message seen or answer it, from outside the monitor's process
(the driver display, ``car/display/``, runs inside it and calls ``CarMessages`` directly). Local only:
the socket file is made readable and writable by its owner alone (mode 0600); nothing else is reachable
through it.

Requests: ``{"op": "pending"}`` → ``{"ok": true, "messages": [...]}`` (display order, each with ``seen``);
``{"op": "seen", "message_id"}`` and ``{"op": "answer", "message_id", "answer": "yes"|"no"|"ok"}`` →
``{"ok": true, "applied": bool}`` (false: a repeat or an unknown message). A bad request gets
``{"ok": false, "error": {...}}``; the connection stays open.
"""
from __future__ import annotations

import json
import logging
import os
import socketserver
import threading
from pathlib import Path
from typing import Any

from dashboard.car.messages import CarMessages
from dashboard.errors import DashboardError, InvalidInput

log = logging.getLogger(__name__)
MAX_LINE = 4096  # a request is a few dozen bytes


def handle(messages: CarMessages, line: bytes) -> dict[str, Any]:
    """One request's answer (pure but for the inbox it acts on)."""
    try:
        try:
            request = json.loads(line)
        except ValueError:
            raise InvalidInput("not a JSON line", field="request") from None
        if not isinstance(request, dict):
            raise InvalidInput("a request is a JSON object", field="request")
        op = request.get("op")
        if op == "pending":
            return {"ok": True, "messages": messages.pending()}
        message_id = request.get("message_id")
        if not isinstance(message_id, str):
            raise InvalidInput("message_id must be a string", field="message_id")
        if op == "seen":
            return {"ok": True, "applied": messages.mark_seen(message_id)}
        if op == "answer":
            return {"ok": True, "applied": messages.answer(message_id, request.get("answer"))}
        raise InvalidInput(f"op {op!r} is not one of pending, seen, answer", field="op")
    except DashboardError as exc:
        return {"ok": False, "error": exc.to_dict()}


class InboxControl:
    """The socket server, in a daemon thread; start()/stop() safe to call twice."""

    def __init__(self, path: str | Path, messages: CarMessages) -> None:
        self.path = Path(path)
        self.messages = messages
        self._server: socketserver.ThreadingUnixStreamServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._server is not None:
            return
        messages = self.messages

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                while True:
                    line = self.rfile.readline(MAX_LINE + 1)
                    if not line:
                        return
                    answer = handle(messages, line) if len(line) <= MAX_LINE else \
                        {"ok": False, "error": InvalidInput("request too long", field="request").to_dict()}
                    self.wfile.write(json.dumps(answer).encode() + b"\n")

        if self.path.is_socket():
            self.path.unlink()  # left by a monitor that was killed
        old = os.umask(0o177)
        try:
            self._server = socketserver.ThreadingUnixStreamServer(str(self.path), Handler)
        finally:
            os.umask(old)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="inbox-control", daemon=True)
        self._thread.start()
        log.info("inbox control on %s", self.path)

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        try:
            self.path.unlink()
        except OSError:
            pass
