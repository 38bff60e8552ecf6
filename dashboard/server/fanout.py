"""Fan-out with one encoding per room: a message is framed once and written to each viewer's socket.

Measured with ``python -m bench.run --scenario 1 --viewers 500`` (py-spy): with the stock path
each viewer costs ~85 µs per message: a gevent queue put and get (with a timeout object), a
switch to that viewer's writer greenlet, and wsproto framing the same payload again. Half the
server's time went there, and a 500-viewer round took ~40 ms, during which acks and ingest
waited. This module keeps python-socketio's rooms and packets and replaces only the last hop:

* :class:`DirectWebSocket` is Engine.IO's gevent WebSocket wrapper, reading with our own
  :class:`dashboard.server.websocket.ServerWebSocket` (no reader greenlet, no wsproto) and writing
  whole frames under a per-connection lock (the Engine.IO writer greenlet, the reader's pongs and
  close frames, and the direct path below all go through it), so frames never interleave.
* :class:`Fanout` keeps the open WebSockets by Engine.IO sid. For a viewer whose writer is idle
  (nothing queued, lock free) the pre-built frame is written with one non-blocking ``send``;
  otherwise the packet goes through Engine.IO's queue as before, so order is kept. A partial
  write holds the lock while a greenlet sends the rest; a viewer that cannot take it within
  ``slow_viewer_s`` (a setting) is disconnected (it rejoins with a fresh snapshot) instead of stalling the rest.
* :class:`DirectManager` / :class:`DirectRedisManager` are python-socketio client managers whose
  local emit uses :class:`Fanout`; with Redis every process does so for its own viewers.
* Packets to one client (a monitor's acks, commands) take the same direct path: the Engine.IO
  queue and writer greenlet cost a queue put, a timed get and two switches per ack.

Only engineio's gevent driver is supported (``async_mode`` is set explicitly); ``Fanout.install``
refuses anything else rather than silently running the slow path.
"""
from __future__ import annotations

import logging
import socket
import struct
from typing import Any

import gevent
import gevent.lock
import socketio
from engineio import packet as eio_packet
from engineio.async_drivers.gevent import WebSocketWSGI
from socketio import packet as sio_packet

from dashboard.server.websocket import HandshakeError, ServerWebSocket

log = logging.getLogger(__name__)


def text_frame(payload: str | bytes) -> bytes:
    """One unmasked, final WebSocket frame (RFC 6455 §5.2): text for ``str``, binary for ``bytes``."""
    if isinstance(payload, str):
        data, opcode = payload.encode("utf-8"), 0x81
    else:
        data, opcode = bytes(payload), 0x82
    n = len(data)
    if n < 126:
        header = struct.pack("!BB", opcode, n)
    elif n < 65536:
        header = struct.pack("!BBH", opcode, 126, n)
    else:
        header = struct.pack("!BBQ", opcode, 127, n)
    return header + data


class DirectWebSocket(WebSocketWSGI):
    """Engine.IO's gevent WebSocket wrapper on our own reader (ServerWebSocket), registered with a Fanout while open."""

    fanout: "Fanout"  # set on the subclass that Fanout.install builds

    def __init__(self, handler: Any, server: Any) -> None:
        super().__init__(handler, server)
        self.eio_socket = getattr(handler, "__self__", None)  # handler is Socket._websocket_handler
        self.max_message_size = server.max_http_buffer_size
        self.lock = gevent.lock.Semaphore()
        self.writers = 0  # greenlets in send/_write_locked: holding the lock or about to (see try_direct)
        self.raw: Any = None

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        try:
            self.ws = ServerWebSocket(environ, self._write_locked, self.max_message_size)
        except HandshakeError as exc:
            start_response("400 Bad Request", [("Content-Type", "text/plain")])
            return [str(exc).encode()]
        self.raw = self.ws.sock
        sid = getattr(self.eio_socket, "sid", None)
        if sid is not None:
            self.fanout.sockets[sid] = self
        try:
            return self.app(self)
        finally:
            if sid is not None and self.fanout.sockets.get(sid) is self:
                del self.fanout.sockets[sid]
            try:  # the WSGI server must not read what follows (the client's close frame) as a next request
                self.raw.shutdown(socket.SHUT_RD)
            except OSError:
                pass

    def wait(self) -> str | bytes | None:
        """Engine.IO's handler greenlet: the next message, read from the socket in this greenlet."""
        return self.ws.receive()

    def close(self) -> None:
        """Engine.IO closes the connection: a close frame, if it is still open."""
        self.ws.close()

    def _write_locked(self, data: bytes) -> None:
        """The reader's own frames (pong, close): whole, under the connection's lock."""
        self._write_in_turn(data)

    def send(self, message: str | bytes) -> None:
        """Engine.IO's writer greenlet: frame the packet and write it whole."""
        if not self.ws.connected:
            raise OSError("websocket closed")
        self._write_in_turn(text_frame(message))

    def _write_in_turn(self, frame: bytes) -> None:
        """Write under the lock, counted in ``writers`` from before the wait for it.

        The writer greenlet holds packets it took from Engine.IO's queue while it waits for the lock, and a
        gevent Semaphore released by another greenlet looks free until the waiter runs: without the count a
        direct write could take the lock in that gap and overtake the packets already taken from the queue
        (CI saw a viewer get frames 150-199 before 100-149).
        """
        self.writers += 1
        try:
            with self.lock:
                if not self._write_or_drop(frame):
                    raise OSError("websocket closed")
        finally:
            self.writers -= 1

    def try_direct(self, frame: bytes) -> bool:
        """Write ``frame`` now if nothing is queued, being written or waiting to be written on this connection;
        False: use the queue.

        Engine.IO's own ``send`` also checks the client's ping timeout; its service task does that for
        every socket anyway, so a client that went silent is still closed.
        """
        eio = self.eio_socket
        if (self.raw is None or self.writers or self.lock.locked() or not self.ws.connected or eio is None
                or eio.closed or not eio.upgraded or eio.queue.qsize()):
            return False
        self.lock.acquire()
        try:
            sent = self.raw.send(frame, 0, timeout=0.0)
        except BlockingIOError:
            sent = 0
        except OSError:
            self.lock.release()
            return True  # the connection is gone; its reader notices and disconnects it
        if sent == len(frame):
            self.lock.release()
        else:
            gevent.spawn(self._finish, memoryview(frame)[sent:])
        return True

    def _finish(self, rest: memoryview) -> None:
        """Send the rest of a partly written frame; the lock, taken by ``try_direct``, is held until then."""
        try:
            self._write_or_drop(rest)
        finally:
            self.lock.release()

    def _write_or_drop(self, data: bytes | memoryview) -> bool:
        """Write all of ``data`` (caller holds the lock); False if the connection is gone or was cut off.

        A viewer that cannot take one message within ``slow_viewer_s`` has stopped reading: its
        socket is shut down, so it reconnects and rejoins with a fresh snapshot.
        """
        try:
            with gevent.Timeout(self.fanout.slow_viewer_s):
                self.raw.sendall(data)
            return True
        except OSError:
            return False
        except gevent.Timeout:
            self.fanout.slow_viewers += 1
            log.warning("viewer %s took no message for %.0f s: disconnected", getattr(self.eio_socket, "sid", "?"),
                        self.fanout.slow_viewer_s)
            try:
                self.raw.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return False


class Fanout:
    """The open WebSockets of one server process, by Engine.IO sid, and counters of how frames left."""

    def __init__(self, slow_viewer_s: float = 10.0) -> None:
        self.slow_viewer_s = slow_viewer_s  # a viewer that cannot take a message this long is disconnected
        self.sockets: dict[str, DirectWebSocket] = {}
        self.direct = 0  # frames written straight to a socket
        self.queued = 0  # frames that went through Engine.IO's queue (busy writer, polling transport)
        self.slow_viewers = 0  # viewers disconnected because they stopped reading

    def install(self, eio_server: Any) -> None:
        """Make ``eio_server`` open its WebSockets through :class:`DirectWebSocket` bound to this Fanout."""
        drivers = getattr(eio_server, "_async", None)
        if not drivers or drivers.get("websocket") is None or not issubclass(drivers["websocket"], WebSocketWSGI):
            raise RuntimeError("the direct fan-out needs engineio's gevent driver with simple-websocket")
        bound = type("BoundDirectWebSocket", (DirectWebSocket,), {"fanout": self})
        eio_server._async = {**drivers, "websocket": bound}
        queued_send = eio_server.send_packet

        def send_packet(sid: str, pkt: eio_packet.Packet) -> None:
            """One packet to one client (an ack, a command): straight to its socket when idle, as room emits."""
            ws = self.sockets.get(sid)
            if ws is not None and ws.try_direct(text_frame(pkt.encode())):
                self.direct += 1
                return
            self.queued += 1
            queued_send(sid, pkt)

        eio_server.send_packet = send_packet

    def send(self, eio_server: Any, participants: Any, eio_pkt: eio_packet.Packet, skip: Any) -> None:
        """Send one Engine.IO packet to every participant: the frame is built once, lazily."""
        frame: bytes | None = None
        direct = queued = 0
        sockets = self.sockets
        for sid, eio_sid in participants:
            if sid in skip:
                continue
            ws = sockets.get(eio_sid)
            if ws is not None:
                if frame is None:
                    frame = text_frame(eio_pkt.encode())
                if ws.try_direct(frame):
                    direct += 1
                    continue
            queued += 1
            eio_server.send_packet(eio_sid, eio_pkt)
        self.direct += direct
        self.queued += queued


class DirectManager(socketio.Manager):
    """python-socketio's in-memory client manager; emits without an ack callback go through :class:`Fanout`."""

    def __init__(self, fanout: Fanout | None = None) -> None:
        super().__init__()  # PubSubManager's __init__ reaches here without arguments; the subclass sets fanout
        self.fanout = fanout or Fanout()

    def emit(self, event: str, data: Any, namespace: str, room: Any = None, skip_sid: Any = None,
             callback: Any = None, to: Any = None, **kwargs: Any) -> Any:
        room = to or room
        if callback is not None or namespace not in self.rooms:
            return super().emit(event, data, namespace, room=room, skip_sid=skip_sid, callback=callback, **kwargs)
        args = list(data) if isinstance(data, tuple) else [] if data is None else [data]
        encoded = self.server.packet_class(sio_packet.EVENT, namespace=namespace, data=[event] + args).encode()
        if isinstance(encoded, list):  # binary attachments: several Engine.IO packets per message
            return super().emit(event, data, namespace, room=room, skip_sid=skip_sid, callback=None, **kwargs)
        skip = skip_sid if isinstance(skip_sid, list) else [skip_sid]
        self.fanout.send(self.server.eio, self.get_participants(namespace, room),
                         eio_packet.Packet(eio_packet.MESSAGE, encoded), skip)
        return None


class DirectRedisManager(socketio.RedisManager, DirectManager):
    """Redis message queue (Flask-SocketIO's channel) whose local delivery is :class:`DirectManager`'s."""

    def __init__(self, url: str, fanout: Fanout, channel: str = "flask-socketio") -> None:
        socketio.RedisManager.__init__(self, url, channel=channel, write_only=False)
        self.fanout = fanout
