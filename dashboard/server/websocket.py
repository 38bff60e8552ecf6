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

import base64
import hashlib
import socket
import struct
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



WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 §1.3
READ_CHUNK = 65536  # bytes asked of the socket at once
OP_CONTINUATION, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
CLOSE_NORMAL, CLOSE_PROTOCOL_ERROR, CLOSE_INVALID_DATA, CLOSE_TOO_BIG = 1000, 1002, 1007, 1009


class HandshakeError(Exception):
    """The request is not a WebSocket upgrade this server accepts."""


class ServerWebSocket:
    """The server side of one WebSocket connection, read in the caller's greenlet (RFC 6455, no extension).

    simple-websocket runs a reader greenlet per connection that parses with wsproto and hands each
    message over through an event; Engine.IO's handler greenlet then takes it. Here the handler reads
    the socket itself: one greenlet and two switches fewer per message, and no wsproto, on the path
    every monitor's batch takes (py-spy, ``python -m bench.run --scenario 2``: the reader and wsproto
    were ~10 % of the server's time). Writes go through ``write``, the owner's locked writer, so a
    pong or a close never interleaves with the direct fan-out. Permessage-deflate is never negotiated
    (``DeclineCompression``), so a frame with a reserved bit set is a protocol error.
    """

    mode = "gevent"

    def __init__(self, environ: dict[str, Any], write: Callable[[bytes], Any], max_message_size: int) -> None:
        self.sock = _wsgi_socket(environ)
        self.write = write
        self.max_message_size = max_message_size
        self.connected = False
        self._buf = bytearray()
        key = environ.get("HTTP_SEC_WEBSOCKET_KEY", "")
        if environ.get("HTTP_UPGRADE", "").lower() != "websocket" or not key:
            raise HandshakeError("not a WebSocket upgrade")
        if environ.get("HTTP_SEC_WEBSOCKET_VERSION") != "13":
            raise HandshakeError("unsupported WebSocket version")
        accept = base64.b64encode(hashlib.sha1(key.encode("latin-1") + WS_GUID).digest()).decode()
        self.sock.sendall(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                           f"Sec-WebSocket-Accept: {accept}\r\n\r\n").encode())
        self.connected = True

    def receive(self) -> str | bytes | None:
        """The next message, text or binary; None once the connection is closed (by either side, or broken)."""
        parts: list[bytes] = []
        size, kind = 0, None
        try:
            while self.connected:
                fin, opcode, payload = self._frame()
                if opcode >= OP_CLOSE:
                    if not fin or len(payload) > 125:
                        return self._fail(CLOSE_PROTOCOL_ERROR)
                    if opcode == OP_CLOSE:
                        code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else CLOSE_NORMAL
                        self.close(code if 1000 <= code < 5000 and code not in (1004, 1005, 1006, 1015)
                                   else CLOSE_PROTOCOL_ERROR)
                        return None
                    if opcode == OP_PING:
                        self.write(control_frame(OP_PONG, payload))
                    elif opcode != OP_PONG:
                        return self._fail(CLOSE_PROTOCOL_ERROR)
                    continue
                if (opcode == OP_CONTINUATION) == (kind is None) or opcode not in (OP_CONTINUATION, OP_TEXT,
                                                                                  OP_BINARY):
                    return self._fail(CLOSE_PROTOCOL_ERROR)  # a continuation of nothing, or a new message inside one
                kind = kind or opcode
                size += len(payload)
                if size > self.max_message_size:
                    return self._fail(CLOSE_TOO_BIG)
                parts.append(payload)
                if fin:
                    data = parts[0] if len(parts) == 1 else b"".join(parts)
                    if kind == OP_BINARY:
                        return data
                    try:
                        return data.decode("utf-8")
                    except UnicodeDecodeError:
                        return self._fail(CLOSE_INVALID_DATA)
        except (OSError, ValueError):
            self.connected = False
        return None

    def close(self, code: int = CLOSE_NORMAL, message: bytes = b"") -> None:
        """Send a close frame (once), stop reading and end the TCP connection.

        The server closes the TCP connection first (RFC 6455 §7.1.1) and does not wait for the client's close
        frame: a reader blocked in ``recv`` wakes with end of stream. Before, a connection the server closed (ping
        timeout, a slow viewer, a revoked key, no namespace in time) stayed open, its handler greenlet waiting,
        for as long as the client kept quiet without closing: for ever, for a dead peer or a flood.
        """
        if not self.connected:
            return
        self.connected = False
        try:
            self.write(control_frame(OP_CLOSE, struct.pack("!H", code) + message[:123]))
        except OSError:
            pass
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _fail(self, code: int) -> None:
        self.close(code)
        return None

    def _read(self, n: int) -> bytes:
        """Exactly ``n`` bytes from the socket (through the buffer); ConnectionError at the end of the stream."""
        buf = self._buf
        while len(buf) < n:
            chunk = self.sock.recv(READ_CHUNK)
            if not chunk:
                raise ConnectionError("closed by the client")
            buf += chunk
        out = bytes(buf[:n])
        del buf[:n]
        return out

    def _frame(self) -> tuple[bool, int, bytes]:
        """One frame: (final, opcode, unmasked payload). ValueError for what RFC 6455 does not allow."""
        b0, b1 = self._read(2)
        if b0 & 0x70:
            raise _Protocol(self, CLOSE_PROTOCOL_ERROR)  # a reserved bit: no extension was negotiated
        if not b1 & 0x80:
            raise _Protocol(self, CLOSE_PROTOCOL_ERROR)  # a client's frames are always masked
        n = b1 & 0x7F
        if n == 126:
            n = struct.unpack("!H", self._read(2))[0]
        elif n == 127:
            n = struct.unpack("!Q", self._read(8))[0]
        if n > self.max_message_size:
            raise _Protocol(self, CLOSE_TOO_BIG)
        mask = self._read(4)
        payload = self._read(n) if n else b""
        return bool(b0 & 0x80), b0 & 0x0F, _unmask(payload, mask)


class _Protocol(ValueError):
    """A frame RFC 6455 does not allow here: the connection is closed with ``code``."""

    def __init__(self, ws: ServerWebSocket, code: int) -> None:
        super().__init__(f"websocket protocol error {code}")
        ws.close(code)


def _unmask(payload: bytes, mask: bytes) -> bytes:
    """XOR the payload with the repeated 4-byte mask, in one big-integer operation."""
    n = len(payload)
    if not n:
        return payload
    key = (mask * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(key, "big")).to_bytes(n, "big")


def control_frame(opcode: int, payload: bytes) -> bytes:
    """A final, unmasked frame (a server's frames are never masked); control payloads are under 126 bytes."""
    return struct.pack("!BB", 0x80 | opcode, len(payload)) + payload


def _wsgi_socket(environ: dict[str, Any]) -> Any:
    """The connection's socket under gevent's WSGI server (its request is read; nothing is buffered past it)."""
    wsgi_input = environ["wsgi.input"]
    if not hasattr(wsgi_input, "raw") and hasattr(wsgi_input, "rfile"):
        wsgi_input = wsgi_input.rfile
    raw = getattr(wsgi_input, "raw", None)
    if raw is None or not hasattr(raw, "_sock"):
        raise HandshakeError("cannot reach the connection's socket (only gevent's WSGI server is supported)")
    return raw._sock
