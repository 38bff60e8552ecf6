"""What a connection costs at the WSGI layer: no compression, a small read buffer, no Nagle delay.

Browsers offer permessage-deflate and simple-websocket accepts it whenever it
is offered; the server then compresses every message once per viewer (one
encoding per room no longer helps) and keeps a compressor per connection.
Measured with ``python -m bench.run --scenario 1 --viewers 500``: 54% of the
server's time went to deflate, p99 latency ~400 ms against ~170 ms without it,
and 178 KB of memory per viewer against 71 KB. Telemetry frames are small JSON;
declining the extension costs a few kB/s of bandwidth per viewer on a LAN.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable

READ_BUFFER = 1024  # bytes of gevent's per-connection buffered reader (its default is 8 KB)

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class DeclineCompression:
    """Removes ``Sec-WebSocket-Extensions`` from WebSocket upgrade requests, so none is negotiated."""

    def __init__(self, app: WsgiApp) -> None:
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        environ.pop("HTTP_SEC_WEBSOCKET_EXTENSIONS", None)
        return self.app(environ, start_response)


def compact_handler_class() -> type:
    """gevent's WSGI handler with a 1 KB read buffer instead of 8 KB, on a socket with TCP_NODELAY.

    TCP_NODELAY: gevent writes a response's headers and body in two sends; with Nagle's algorithm on,
    the body waits for the client's delayed ACK of the headers. Every request on a kept-alive connection
    (every browser's) took ~44 ms instead of ~2 ms (measured: GET /healthz, 100 requests).

    A WebSocket keeps its handler, and so its buffered reader, for the connection's whole life,
    though after the upgrade the reader is never used again: simple-websocket reads the socket
    itself. Measured with ``python -m bench.run --scenario 1 --viewers 500``: 71 -> 66-67 KB of
    server memory per viewer. HTTP works with any request size; the reader refills more often,
    and large bodies are read past the buffer.
    """
    import socket

    from gevent import pywsgi

    class CompactHandler(pywsgi.WSGIHandler):
        def __init__(self, sock, address, server, rfile=None):  # noqa: ANN001 - gevent's signature
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            super().__init__(sock, address, server, rfile if rfile is not None else sock.makefile("rb", READ_BUFFER))

    return CompactHandler

