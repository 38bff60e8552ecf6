"""The driver display's HTTP server: the standard library's ThreadingHTTPServer in a daemon thread.

Local only by default (127.0.0.1): a screen on the car's own computer. ``--display 0.0.0.0:PORT``
opens it to the car's Wi-Fi for a phone on the dash (anyone on that network may then answer: keep
the Wi-Fi the car's own, with a passphrase).
"""
from __future__ import annotations

import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

from dashboard.car.display.routes import MAX_BODY, Inbox, Reply, Routes
from dashboard.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"  # the car's own screen; a phone on the car's Wi-Fi needs 0.0.0.0 (or the Wi-Fi address)
REQUEST_TIMEOUT_S = 10.0  # a client that stops sending mid-request frees its thread after this


def parse_address(spec: Any) -> tuple[str, int]:
    """``PORT`` or ``HOST:PORT`` (``[v6]:PORT``) as (host, port); ConfigError naming ``display`` otherwise."""
    text = str(spec).strip()
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host = DEFAULT_HOST
    host = host.strip("[]") or DEFAULT_HOST
    try:
        port = int(port_text)
    except ValueError:
        raise ConfigError(f"display {text!r}: give PORT or HOST:PORT", field="display") from None
    if not 0 <= port <= 65535:
        raise ConfigError(f"display {text!r}: the port must be 0..65535", field="display")
    return host, port


class DriverDisplay:
    """The page and its API on ``host:port``; start()/stop() safe to call twice. ``port`` is the bound one."""

    def __init__(self, host: str, port: int, inbox: Inbox, timing: Callable[[], dict[str, Any]],
                 links: Callable[[], dict[str, Any]] = dict, clock: Callable[[], float] = time.time) -> None:
        self.host = host
        self.port = port
        self.routes = Routes(inbox, timing, links, clock)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        """Where the page is."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def start(self) -> None:
        """Listen and serve in a daemon thread; no-op when serving. OSError when the address cannot be bound."""
        with self._lock:
            if self._server is not None:
                return
            server = _Server((self.host, self.port), _handler(self.routes))
            self.port = server.server_address[1]
            self._server = server
            self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                                            name="driver-display", daemon=True)
            self._thread.start()
        log.info("driver display on %s", self.url)

    def stop(self) -> None:
        """Stop serving and close the socket; no-op when stopped."""
        with self._lock:
            server, self._server = self._server, None
            thread, self._thread = self._thread, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(5)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler]) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, handler)


def _handler(routes: Routes) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "race-dashboard-display"
        sys_version = ""
        timeout = REQUEST_TIMEOUT_S

        def do_GET(self) -> None:  # noqa: N802 - http.server's names
            self._answer(routes.handle("GET", self.path, dict(self.headers), None))

        def do_POST(self) -> None:  # noqa: N802
            self._answer(routes.handle("POST", self.path, dict(self.headers), self._body()))

        def do_PUT(self) -> None:  # noqa: N802
            self._answer(routes.handle("PUT", self.path, dict(self.headers), None))

        def do_DELETE(self) -> None:  # noqa: N802
            self._answer(routes.handle("DELETE", self.path, dict(self.headers), None))

        def _body(self) -> bytes | None:
            length = self.headers.get("Content-Length")
            try:
                size = int(length) if length is not None else None
            except ValueError:
                size = None
            if size is None or size < 0:
                self.close_connection = True
                return None
            if size > MAX_BODY:
                self.close_connection = True  # not read: the connection is not reused
                return b" " * (MAX_BODY + 1)
            return self.rfile.read(size)

        def _answer(self, reply: Reply) -> None:
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - http.server's signature
            log.debug("display %s: " + format, self.address_string(), *args)

    return Handler
