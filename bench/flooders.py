"""Flooding clients for bench.floods and tests/server/test_connections.py, each flood in a process of its own.

Standard library only (asyncio streams), one task per connection, and the process raises its own
RLIMIT_NOFILE. The kinds:

- ``websocket``: an idle viewer: WebSocket upgrade, Engine.IO open, Socket.IO connect to ``/dashboard``, then
  nothing but answering pings;
- ``unauthenticated``: WebSocket upgrade and Engine.IO open, never a namespace (``bad_key``: a ``/monitor``
  connect with a wrong key, refused, and the connection kept);
- ``slowloris``: a request line, then a header byte every ``drip_s``, never the end of the headers;
- ``tcp``: a bare TCP connection that never sends a byte;
- ``polling``: an Engine.IO long-polling handshake (``GET /socket.io/?EIO=4&transport=polling``), its answer
  read, the connection closed.

Connections come from several loopback source addresses (``127.1.x.y``: Linux routes all of 127/8 to lo), so
the per-address cap and the total cap can each be what binds. :func:`flood_process` reports to a queue:
``("ready", stats)`` once every connection was tried, ``("done", stats)`` after ``stop`` closed them all.
"""
from __future__ import annotations

import asyncio
import json
import os
import resource
import struct
import time
from dataclasses import asdict, dataclass, field
from typing import Any

CONNECT_PARALLEL = 256  # connection attempts in flight at once per process
SETTLE_S = 0.5  # after the last attempt, time for the server's refusals of the last ones to arrive
READ_TIMEOUT_S = 10.0  # how long an answer (101, 503, 400) may take before the attempt counts as failed
PING, PONG = "2", "3"


def source_address(index: int) -> str:
    """The ``index``-th flood source address (never 127.0.0.1, which the car and the prober use)."""
    return f"127.1.{index // 250}.{index % 250 + 1}"


@dataclass
class FloodStats:
    """What one flood process saw."""

    kind: str
    tried: int = 0
    held: int = 0  # the server took it as the kind wants: a viewer connected, a socket left open
    refused: int = 0  # answered 503 or closed/reset at once
    answered: dict[str, int] = field(default_factory=dict)  # HTTP status -> count (polling, slowloris)
    errors: int = 0
    closed_by_server: int = 0  # held connections the server closed before ``stop``
    held_s: list[float] = field(default_factory=list)  # per connection closed by the server: how long it was held
    seconds: float = 0.0


def _raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _masked(text: str, opcode: int = 0x1) -> bytes:
    payload = text.encode()
    mask = os.urandom(4)
    n = len(payload)
    head = struct.pack("!BB", 0x80 | opcode, 0x80 | n) if n < 126 else struct.pack("!BBH", 0x80 | opcode, 0xFE, n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def _frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    b0, b1 = await reader.readexactly(2)
    n = b1 & 0x7F
    if n == 126:
        n = struct.unpack("!H", await reader.readexactly(2))[0]
    elif n == 127:
        n = struct.unpack("!Q", await reader.readexactly(8))[0]
    return b0 & 0x0F, await reader.readexactly(n)


async def _status(reader: asyncio.StreamReader) -> str:
    """The status code of an HTTP answer, its headers consumed; '' when the server closed or reset at once."""
    try:
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT_S)
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
        return ""
    return head.split(b" ", 2)[1].decode()


class Flood:
    """``count`` connections of one ``kind`` against ``host:port`` from ``sources`` source addresses."""

    def __init__(self, kind: str, host: str, port: int, count: int, sources: list[str], drip_s: float = 1.0,
                 bad_key: bool = False) -> None:
        self.kind, self.host, self.port, self.count = kind, host, port, count
        self.sources, self.drip_s, self.bad_key = sources, drip_s, bad_key
        self.stats = FloodStats(kind)
        self.writers: list[asyncio.StreamWriter] = []
        self.tasks: list[asyncio.Task] = []
        self.stopping = False
        self.open = 0  # connections held now

    async def run(self, ready: Any, stop: Any) -> None:
        """Open every connection, report ready, hold until ``stop`` is set, then close everything."""
        started = time.monotonic()
        gate = asyncio.Semaphore(CONNECT_PARALLEL)

        async def one(i: int) -> None:
            async with gate:
                await self._open(i)

        await asyncio.gather(*(one(i) for i in range(self.count)))
        self.stats.seconds = time.monotonic() - started
        await asyncio.sleep(SETTLE_S)  # refusals of the last ones arrive
        self.stats.held = self.open
        ready(self.stats)
        while not stop():
            await asyncio.sleep(0.05)
        self.stopping = True
        for writer in self.writers:
            writer.close()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    async def _open(self, i: int) -> None:
        stats = self.stats
        stats.tried += 1
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(
                self.host, self.port, local_addr=(self.sources[i % len(self.sources)], 0)), READ_TIMEOUT_S)
        except (OSError, asyncio.TimeoutError):
            stats.errors += 1
            return
        self.writers.append(writer)
        opened = time.monotonic()
        try:
            held = await getattr(self, "_" + self.kind)(reader, writer)
        except (OSError, asyncio.IncompleteReadError, asyncio.TimeoutError, ValueError):
            held = False
        if held:
            self.open += 1
            self.tasks.append(asyncio.ensure_future(self._watch(reader, writer, opened)))
        else:
            writer.close()

    def _refused(self, status: str) -> bool:
        self.stats.answered[status or "closed"] = self.stats.answered.get(status or "closed", 0) + 1
        if status in ("", "503"):
            self.stats.refused += 1
        return False

    async def _tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        return True  # whether it was refused (a 503, or closed at once) shows in _watch

    async def _slowloris(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"GET /api/v1/sessions HTTP/1.1\r\nHost: flood\r\n")
        await writer.drain()
        return True

    async def _polling(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(b"GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: flood\r\nConnection: close\r\n\r\n")
        await writer.drain()
        status = await _status(reader)
        self._refused(status)
        return status == "200"  # an Engine.IO session was made for it: held (until its ping timeout)

    async def _upgrade(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        key = "dGhlIHNhbXBsZSBub25jZQ=="
        writer.write(("GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: flood\r\nUpgrade: websocket\r\n"
                      f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        await writer.drain()
        status = await _status(reader)
        if status != "101":
            return self._refused(status)
        _op, opened = await asyncio.wait_for(_frame(reader), READ_TIMEOUT_S)
        return opened.startswith(b"0{")

    async def _websocket(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        if not await self._upgrade(reader, writer):
            return False
        writer.write(_masked("40/dashboard,{}"))
        while True:
            _op, payload = await asyncio.wait_for(_frame(reader), READ_TIMEOUT_S)
            if payload.startswith(b"40/dashboard,"):
                return b'"sid"' in payload
            if payload == PING.encode():
                writer.write(_masked(PONG))

    async def _unauthenticated(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        if not await self._upgrade(reader, writer):
            return False
        if self.bad_key:
            writer.write(_masked("40/monitor," + json.dumps({"car_id": "FLOOD", "api_key": "rdk_000000000000.x"})))
        return True

    async def _watch(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, opened: float) -> None:
        """Keep a held connection: drip slowloris bytes, answer pings; note when and how the server closes it."""
        first = b""
        try:
            if self.kind == "slowloris":
                while True:
                    try:
                        data = await asyncio.wait_for(reader.read(64), self.drip_s)
                    except asyncio.TimeoutError:
                        writer.write(b"X")
                        await writer.drain()
                        continue
                    first = first or data
                    if not data:
                        break
            elif self.kind in ("websocket", "unauthenticated"):
                while True:
                    op, payload = await _frame(reader)
                    if op == 0x8:
                        break
                    if payload == PING.encode():
                        writer.write(_masked(PONG))
            else:
                while data := await reader.read(4096):
                    first = first or data
        except (OSError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            return
        if self.stopping:
            return
        self.open -= 1
        if first.startswith(b"HTTP/1.1 503") or (not first and time.monotonic() - opened < SETTLE_S):
            self._refused("503" if first else "")
            return
        self.stats.closed_by_server += 1
        self.stats.held_s.append(time.monotonic() - opened)


def flood_process(kind: str, host: str, port: int, count: int, sources: list[str], ready_event: Any, stop_event: Any,
                  out: Any, drip_s: float = 1.0, bad_key: bool = False, go_event: Any = None) -> None:
    """Entry of a flood process: put ``("ready", stats)`` then ``("done", stats)`` (dicts) on ``out``.

    With ``go_event``, it first puts ``("started", None)`` and waits for it: the process's own start (an
    interpreter and its imports, a few hundred ms of CPU) is not part of what the flood measures.
    """
    _raise_fd_limit()
    flood = Flood(kind, host, port, count, sources, drip_s, bad_key)
    if go_event is not None:
        out.put(("started", None))
        go_event.wait()

    def ready(stats: FloodStats) -> None:
        out.put(("ready", asdict(stats)))
        ready_event.set()

    try:
        asyncio.run(flood.run(ready, stop_event.is_set))
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which fails with it
        out.put(("error", repr(exc)))
        ready_event.set()
        return
    out.put(("done", asdict(flood.stats)))
