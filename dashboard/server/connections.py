"""Connections bounded (issue 12): how many, from where, how long before a request, how long before a namespace.

Measured on the server before these bounds (from outside): 9,000 idle WebSockets took RSS from 203 to 670 MB;
3,000 slowloris clients were held 65 s; 20,000 bare TCP sockets used up the file descriptors and /healthz
failed for 45 s; 20,000 long-polling handshakes held 295 MB. Now:

- :class:`Gate` counts connections where gevent accepts them (the ``spawn`` of its ``WSGIServer``), so a bare
  TCP socket counts as much as a viewer. Past ``max_connections`` in total or ``max_connections_per_address``
  from one address, a connection is answered ``503`` with ``Retry-After`` (one non-blocking send) and closed
  in the accept callback itself: no greenlet, no read buffer, no Engine.IO session is made for it. A few
  connections past the total cap (``HEALTH_RESERVE``) may ask for ``/healthz`` or ``/metrics`` only, so a prober and a
  scraper keep their answers while a flood sits at the cap. A socket past the cap that has sent nothing yet waits
  ``UNDECIDED_S`` (no greenlet: a list and one timer) for its first bytes: a probe sends its request at once, a
  flood's silent socket is refused then, so silent sockets never hold the reserve.
- :func:`bounded_handler_class`: gevent's WSGI handler has no timeout for a request's line and headers; a
  deadline (a ``gevent.Timeout``) runs from the connection opening, or from the previous response, until the
  headers are parsed, and is cancelled before the body or the WebSocket phase. A kept-alive connection with no
  next request is closed after the same time (counted apart: every browser does that).
- :class:`NamespaceDeadline`: python-socketio has no counterpart of socket.io's ``connectTimeout``; Engine.IO
  answers pings for a client library that never connects to a namespace (or whose auth was refused) for ever.
  Such a connection is closed once ``auth_timeout_s`` has passed.
- :func:`fit_fd_limit`: the soft ``RLIMIT_NOFILE`` is raised towards the hard limit at startup, and the cap is
  lowered (logged) when cap + reserves would not fit, so accept() never fails for want of descriptors.
- :class:`MemoryTrim`: after many connections close, glibc keeps the freed memory in its arenas; ``malloc_trim``
  hands it back (measured by ``python -m bench.floods``).
"""
from __future__ import annotations

import ctypes
import gc
import logging
import resource
import time
from collections import deque
from typing import Any, Callable

log = logging.getLogger(__name__)

TOTAL_CAP, ADDRESS_CAP, HEADER_TIMEOUT, AUTH_TIMEOUT = "total_cap", "address_cap", "header_timeout", "auth_timeout"
REASONS = (TOTAL_CAP, ADDRESS_CAP, HEADER_TIMEOUT, AUTH_TIMEOUT)
HEALTH_PATHS = ("/healthz", "/metrics")  # what a connection over the cap may still ask: the prober and the scraper
HEALTH_RESERVE = 16  # connections past the cap for HEALTH_PATHS only: a prober's one request at a time, with room
# for a few slow ones; a flood's silent sockets that take these hold each for at most HEALTH_HEADER_TIMEOUT_S, and a
# request already sent for anything else is refused at accept without taking one
HEALTH_HEADER_TIMEOUT_S = 1.0  # a reserve connection's request must come at once (a prober sends it on connect)
MAX_ACCEPT = 1  # connections gevent's server accepts per loop iteration (its default: 100). Each accepted one is a
# greenlet run before a car's ready socket gets its turn: a wave of 100 WebSocket handshakes (~1.5 ms each) held a
# car's ack ~150 ms per iteration. Measured with python -m bench.floods (9,000 WebSockets / 20,000 polling requests):
# car ack p99 514 / 946 ms at 100, 136 ms at 10, 45 / 36 ms at 4, 34 / 28 ms at 1. New connections wait in the
# kernel's backlog instead: /healthz from a fresh connection took up to 2.4-3.6 s during those floods (all 200).
UNDECIDED_S = 0.01  # a socket past the cap with nothing sent yet gets this long to show a health probe's first bytes
# (a client sends its request with the handshake's last ACK: well under a millisecond on loopback or from a proxy)
UNDECIDED_MAX = 64  # such sockets waiting at once (5,000 accepts a second fill 50); beyond, refused at once
FD_RESERVE = 256  # descriptors for everything but client connections: the listening socket, epoll, the companion's
# pipes, logs, SQLite (database, WAL and shm for the writer, 8 readers and 4 exports: ~40), PostgreSQL's pool, Redis
RETRY_AFTER_S = 5  # what a refused client is told to wait: long enough for a flood's sockets to time out in part
REFUSAL = (b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: %d\r\nContent-Type: text/plain\r\nContent-Length: 21\r\n"
           b"Connection: close\r\n\r\ntoo many connections\n" % RETRY_AFTER_S)
TRIM_AFTER_DROP = 500  # connections closed since the highest count that make returning memory worth a trim
RELEASE_S = 30.0  # Engine.IO's ping task holds a closed connection's socket up to ping_interval (25 s)
SWEEP_S = 1.0  # how often namespace deadlines and memory are looked at
NAMESPACES = ("/monitor", "/dashboard")


class Gate:
    """Counts open connections at accept and refuses those over the caps before anything is made for them."""

    def __init__(self, cap: int, per_address: int) -> None:
        self.cap = cap
        self.per_address = per_address  # 0: no per-address cap
        self.open = 0
        self.peak = 0
        self.by_address: dict[str, int] = {}
        self.refused = dict.fromkeys(REASONS, 0)
        self.idle_closed = 0  # kept-alive connections closed for want of a next request (not a refusal)
        self.gone_before_answer = 0  # refused requests whose client hung up before the refusal could be sent
        self.refused_polling = 0  # long-polling requests refused by a WebSocket-only server
        self.reserved: set[int] = set()  # descriptors of connections let in on the health reserve
        self.undecided: deque[tuple[float, tuple[Any, ...]]] = deque()  # past the cap, nothing sent yet
        self._deciding = False
        self._spawn: Callable[..., Any] | None = None

    def spawn(self, run: Callable[..., Any], handle: Callable[..., Any], close: Callable[..., Any],
              args: tuple[Any, ...]) -> Any:
        """gevent's ``spawn`` for its server: runs in the accept callback, so it never blocks."""
        sock, address = args[0], args[1]
        peer = address[0] if isinstance(address, tuple) else ""
        held = self.by_address.get(peer, 0)
        if self.per_address and held >= self.per_address:
            return self.refuse(sock, ADDRESS_CAP)
        reserved = self.open >= self.cap
        if reserved:
            probe = None if self.open >= self.cap + HEALTH_RESERVE else _health_probe(sock)
            if probe is None and self.open < self.cap + HEALTH_RESERVE and len(self.undecided) < UNDECIDED_MAX:
                self.undecided.append((time.monotonic() + UNDECIDED_S, (run, handle, close, args)))
                self._decide_later()
                return None
            if not probe:
                return self.refuse(sock, TOTAL_CAP)
        return self._admit(run, handle, close, args, reserved)

    def _admit(self, run: Callable[..., Any], handle: Callable[..., Any], close: Callable[..., Any],
               args: tuple[Any, ...], reserved: bool) -> Any:
        sock, address = args[0], args[1]
        peer = address[0] if isinstance(address, tuple) else ""
        held = self.by_address.get(peer, 0)
        if self._spawn is None:
            from gevent import Greenlet

            self._spawn = Greenlet.spawn
        fd = sock.fileno()
        if reserved:
            self.reserved.add(fd)
        self.open += 1
        self.peak = max(self.peak, self.open)
        self.by_address[peer] = held + 1
        return self._spawn(self._run, run, handle, close, args, peer, fd if reserved else -1)

    def _decide_later(self) -> None:
        if self._deciding:
            return
        self._deciding = True
        import gevent

        gevent.spawn_later(UNDECIDED_S, self.decide)

    def decide(self, now: float | None = None) -> None:
        """The sockets past the cap whose wait is over: a health probe's first bytes let in on the reserve, else 503."""
        self._deciding = False
        now = time.monotonic() if now is None else now
        while self.undecided and self.undecided[0][0] <= now:
            _due, (run, handle, close, args) = self.undecided.popleft()
            if self.open < self.cap:  # room again: an ordinary connection
                self._admit(run, handle, close, args, False)
            elif self.open < self.cap + HEALTH_RESERVE and _health_probe(args[0]):
                self._admit(run, handle, close, args, True)
            else:
                self.refuse(args[0], TOTAL_CAP)
        if self.undecided:
            self._decide_later()

    def _run(self, run: Callable[..., Any], handle: Callable[..., Any], close: Callable[..., Any],
             args: tuple[Any, ...], peer: str, reserved_fd: int) -> Any:
        try:
            return run(handle, close, args)
        finally:
            self.open -= 1
            left = self.by_address.get(peer, 1) - 1
            if left > 0:
                self.by_address[peer] = left
            else:
                self.by_address.pop(peer, None)
            if reserved_fd >= 0:
                self.reserved.discard(reserved_fd)

    def refuse(self, sock: Any, reason: str) -> None:
        """Answer 503 with what the socket can take at once and close it (in the accept callback: nothing waits)."""
        self.refused[reason] += 1
        raw = getattr(sock, "_sock", sock)  # gevent's socket wraps a non-blocking one
        try:
            raw.recv(4096)  # what the request sent already: unread bytes would make the close a reset
        except OSError:
            pass
        try:
            raw.send(REFUSAL)
        except OSError:
            pass
        sock.close()
        return None

    def fit_fd_limit(self) -> int:
        """Raise the soft RLIMIT_NOFILE towards the hard one; lower the cap if cap + reserves still do not fit."""
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        wanted = self.cap + HEALTH_RESERVE + FD_RESERVE
        if soft != resource.RLIM_INFINITY and soft < wanted:
            new = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
            if new > soft:
                try:
                    resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
                    soft = new
                except (OSError, ValueError) as exc:
                    log.warning("could not raise the file descriptor limit from %d to %d: %s", soft, new, exc)
        if soft != resource.RLIM_INFINITY and soft - HEALTH_RESERVE - FD_RESERVE < self.cap:
            room = max(1, soft - HEALTH_RESERVE - FD_RESERVE)
            log.warning("file descriptor limit %d (hard %s) leaves room for %d connections: max_connections %d is "
                        "lowered to %d (raise the hard limit: ulimit -Hn, systemd LimitNOFILE=)", soft, hard, room,
                        self.cap, room)
            self.cap = room
        return soft


def _health_probe(sock: Any) -> bool | None:
    """Whether the request already sent (peeked, not read) is a health probe; None while nothing came to tell."""
    import socket

    try:
        start = getattr(sock, "_sock", sock).recv(16, socket.MSG_PEEK)
    except BlockingIOError:
        return None
    except OSError:
        return False
    return bool(start) and any(start.startswith(b"GET " + path.encode()) or (b"GET " + path.encode()).startswith(start)
                               for path in HEALTH_PATHS)


_POLLING_BODY = b'{"error": {"code": "bad_transport", "message": "WebSocket only", "field": "transport"}}'
POLLING_REFUSAL = (b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
                   b"Connection: close\r\n\r\n%s" % (len(_POLLING_BODY), _POLLING_BODY))


def _polling(path: str) -> bool:
    """Whether a request is an Engine.IO long-polling request (``/socket.io/?...transport=polling``)."""
    route, _, query = path.partition("?")
    return route.rstrip("/") == "/socket.io" and "transport=polling" in query


def bounded_handler_class(gate: Gate, header_timeout_s: float, websocket_only: bool = False) -> type:
    """The compact WSGI handler (dashboard/server/websocket.py) with a deadline on each request's line and headers.

    The deadline covers reading the request line and headers only (``read_requestline`` and ``read_request`` of
    gevent's ``WSGIHandler``); it is cancelled once the headers are parsed, so a long upload or a WebSocket is never
    cut by it. A connection let in on the health reserve must ask for ``/healthz`` or ``/metrics`` within
    ``HEALTH_HEADER_TIMEOUT_S`` (anything else: 503) and is closed after its answer; ``/metrics`` still needs
    its token.
    """
    from gevent import Timeout

    from dashboard.server.websocket import compact_handler_class

    class _OverCap(ValueError):
        """A reserve connection asked for something other than /healthz."""

    class _Polling(ValueError):
        """A long-polling request to a WebSocket-only server."""

    class BoundedHandler(compact_handler_class()):
        _deadline: Any = None
        _served = False

        def __init__(self, sock, address, server, rfile=None):  # noqa: ANN001 - gevent's signature
            super().__init__(sock, address, server, rfile)
            self.reserved = bool(gate.reserved) and sock.fileno() in gate.reserved

        def handle(self):  # noqa: ANN202 - gevent's entry point for a connection
            try:
                super().handle()
            except (BrokenPipeError, ConnectionResetError):
                # gevent sends a refused request's answer (polling, malformed, over the cap) from here, outside
                # any handler of ours; a client that hung up first made that send raise out of the greenlet
                gate.gone_before_answer += 1

        def handle_one_request(self):  # noqa: ANN202 - gevent's protocol (None, True or (status, body))
            if self._served and not self._wait_next_request():
                return None
            self._served = True
            deadline = Timeout(HEALTH_HEADER_TIMEOUT_S if self.reserved else header_timeout_s)
            self._deadline = deadline
            deadline.start()
            try:
                return super().handle_one_request()
            except Timeout as exc:
                if exc is not deadline:
                    raise
                gate.refused[HEADER_TIMEOUT] += 1
                return None
            finally:
                deadline.close()
                self._deadline = None

        def _wait_next_request(self) -> bool:
            """On a kept-alive connection: whether a next request starts within the timeout (else it is closed)."""
            idle = Timeout(header_timeout_s)
            idle.start()
            try:
                return bool(self.rfile.peek(1))
            except Timeout as exc:
                if exc is not idle:
                    raise
                gate.idle_closed += 1
                return False
            except (OSError, ValueError):
                return False
            finally:
                idle.close()

        def read_request(self, raw_requestline):  # noqa: ANN001, ANN202 - gevent's signature
            parsed = super().read_request(raw_requestline)
            self._deadline.close()  # the headers are in: the body and a WebSocket take their own time
            self._deadline = None
            if self.reserved:
                self.close_connection = True
                if self.command != "GET" or self.path.partition("?")[0] not in HEALTH_PATHS:
                    raise _OverCap("over the connection cap")
            if websocket_only and _polling(self.path):
                # refused here, before the WSGI stack: a polling flood at ~1,400 requests/s went through
                # Flask-SocketIO and Engine.IO to the same 400, and filled the loop (bench.floods: ack p99 1.4 s)
                self.close_connection = True
                raise _Polling("long-polling on a WebSocket-only server")
            return parsed

        def _handle_client_error(self, ex):  # noqa: ANN001, ANN202 - gevent's hook for a refused request
            if isinstance(ex, _OverCap):
                gate.refused[TOTAL_CAP] += 1
                return ("503", REFUSAL)
            if isinstance(ex, _Polling):
                gate.refused_polling += 1
                return ("400", POLLING_REFUSAL)
            return super()._handle_client_error(ex)

    return BoundedHandler


class NamespaceDeadline:
    """Closes Engine.IO connections that have not connected to a namespace within ``timeout_s`` of opening.

    Each opening is queued with its deadline (the queue stays in deadline order, the timeout being one), and
    :meth:`sweep` looks only at the connections whose deadline passed: nothing per message, nothing per
    connection that authenticated in time but a queue entry.
    """

    def __init__(self, server: Any, timeout_s: float, gate: Gate | None = None) -> None:
        self.server = server  # python-socketio's Server
        self.timeout_s = timeout_s
        self.gate = gate
        self.closed = 0
        self.pending: deque[tuple[float, str]] = deque()
        eio = server.eio
        opened = eio.handlers["connect"]  # python-socketio's own handler, kept

        def on_open(eio_sid: str, environ: dict[str, Any]) -> Any:
            self.pending.append((time.monotonic() + self.timeout_s, eio_sid))
            return opened(eio_sid, environ)

        eio.on("connect", on_open)

    def sweep(self, now: float | None = None) -> int:
        """Close the connections past their deadline without a namespace; how many were closed."""
        now = time.monotonic() if now is None else now
        closed = 0
        eio, manager = self.server.eio, self.server.manager
        while self.pending and self.pending[0][0] <= now:
            _deadline, eio_sid = self.pending.popleft()
            if eio_sid not in eio.sockets:
                continue
            if any(manager.sid_from_eio_sid(eio_sid, namespace) for namespace in NAMESPACES):
                continue
            eio.disconnect(eio_sid)
            closed += 1
        if closed:
            self.closed += closed
            if self.gate is not None:
                self.gate.refused[AUTH_TIMEOUT] += closed
        return closed


class MemoryTrim:
    """Hands memory back to the system once many connections have closed: a full collection, then ``malloc_trim``.

    Engine.IO's ping task keeps each closed connection's socket for up to ``ping_interval`` (25 s), so the trim
    waits ``RELEASE_S`` after the count fell; without it glibc kept the freed memory in its arenas (measured by
    ``python -m bench.floods``). A collection then is cheap: the connections are gone.
    """

    def __init__(self, drop: int = TRIM_AFTER_DROP, release_s: float = RELEASE_S) -> None:
        self.drop = drop
        self.release_s = release_s
        self.high = 0
        self.due: float | None = None
        self.trims = 0
        try:
            self._trim: Callable[[int], int] | None = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):  # not glibc
            self._trim = None

    def check(self, open_now: int, now: float | None = None) -> bool:
        """Note the count; trim when it fell ``drop`` below its high ``release_s`` ago. True when it trimmed."""
        now = time.monotonic() if now is None else now
        self.high = max(self.high, open_now)
        if self.high - open_now >= self.drop:
            self.high = open_now
            self.due = now + self.release_s
        if self.due is None or now < self.due or self._trim is None:
            return False
        self.due = None
        rss_before, started = _rss_mb(), time.perf_counter()
        gc.collect()
        self._trim(0)
        self.trims += 1
        log.info("memory handed back after connections closed: RSS %.0f -> %.0f MB in %.0f ms", rss_before,
                 _rss_mb(), (time.perf_counter() - started) * 1000)
        return True


def _rss_mb() -> float:
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * resource.getpagesize() / 2**20
    except OSError:
        return 0.0


class Connections:
    """What one server process bounds about its connections; the metrics read it (dashboard/server/metrics.py)."""

    def __init__(self, settings: Any) -> None:
        per_address = settings.max_connections_per_address
        if settings.proxy_hops and per_address:
            log.info("behind %d proxy hop(s) every connection comes from the proxy: the per-address cap (%d) is "
                     "not applied here (limit per client in the proxy: nginx limit_conn)", settings.proxy_hops,
                     per_address)
            per_address = 0
        self.settings = settings
        self.gate = Gate(settings.max_connections, per_address)
        self.namespaces: NamespaceDeadline | None = None
        self.memory = MemoryTrim()
        self._stop = False

    def watch_socketio(self, server: Any) -> None:
        """Give Socket.IO connections ``auth_timeout_s`` to connect to a namespace."""
        self.namespaces = NamespaceDeadline(server, self.settings.auth_timeout_s, self.gate)

    def server_options(self) -> dict[str, Any]:
        """Options for gevent's WSGIServer: the bounded handler and the counting spawn (after fitting the fd limit)."""
        self.gate.fit_fd_limit()
        from gevent import pywsgi

        pywsgi.WSGIServer.max_accept = MAX_ACCEPT  # one server per process: see MAX_ACCEPT
        log.info("connections: at most %d (%s per address), headers within %.0f s, a namespace within %.0f s",
                 self.gate.cap, self.gate.per_address or "no cap", self.settings.header_timeout_s,
                 self.settings.auth_timeout_s)
        return {"handler_class": bounded_handler_class(self.gate, self.settings.header_timeout_s,
                                                       self.settings.websocket_only),
                "spawn": self.gate.spawn}

    def start(self) -> None:
        """The sweeper: namespace deadlines and memory trims, once a second (a greenlet under gevent)."""
        import threading

        threading.Thread(target=self._sweep_loop, name="connections", daemon=True).start()

    def stop(self) -> None:
        """Stop the sweeper (safe twice)."""
        self._stop = True

    def _sweep_loop(self) -> None:
        while not self._stop:
            time.sleep(SWEEP_S)
            try:
                if self.namespaces is not None:
                    self.namespaces.sweep()
                self.memory.check(self.gate.open)
            except Exception:  # noqa: BLE001 - the sweeper must outlive one failed round
                log.exception("connection sweep failed")
