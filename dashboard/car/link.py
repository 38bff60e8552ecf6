"""One Socket.IO connection to the server's ``/monitor`` namespace: what the uplink and the pit gateway share.

``ServerLink`` owns a python-socketio ``Client``:

- ``connect(auth)`` makes a fresh client and connects it over the websocket
  transport. The client never reconnects by itself (python-socketio does not
  retry a refused first connect): the caller retries, with its own Backoff.
- ``call(event, data)`` emits and waits for the ack. An ack with ``ok: false``
  (or no ack object at all) raises ``ServerError``, which carries the
  server's ``error`` dict; no ack in time raises socketio's ``TimeoutError``;
  a connection lost while waiting raises ``ConnectionError`` at once
  (python-socketio's own ``call`` would sit out the whole timeout).
- ``close()`` disconnects, waiting at most ``close_wait`` seconds for the
  server to close its side, so a dead server never holds up stop() or Ctrl-C.
"""
from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import requests
import socketio

MONITOR_NS = "/monitor"
CONNECT_TIMEOUT_S = 5.0  # wait this long for the namespace to be accepted
ACK_TIMEOUT_S = 10.0  # the server acks after its commit; longer means the link is dead
CLOSE_WAIT_S = 1.0  # longest close() waits for the server to close the connection
RETRY_AFTER_DEFAULT_S = 1.0  # "unavailable" without a retry_after
RETRY_AFTER_MIN_S = 0.1  # never hammer a server that said it cannot store right now
RETRY_AFTER_MAX_S = 30.0  # nor sit idle longer than this on its word: the data is waiting

ClientFactory = Callable[[], Any]


class ServerError(Exception):
    """The server answered a call with ``ok: false`` (or not with an ack object); ``error`` is its error dict."""

    def __init__(self, event: str, error: Any) -> None:
        self.event = event
        self.error: dict[str, Any] = dict(error) if isinstance(error, Mapping) else {}
        super().__init__(f"{event}: {self.code}: {self.error.get('message')}")

    @property
    def code(self) -> str | None:
        """The error's ``code`` ("unavailable", "too_large", "seq_conflict", ...)."""
        code = self.error.get("code")
        return None if code is None else str(code)

    @property
    def retry_after(self) -> float | None:
        """For ``unavailable`` (nothing wrong with the call, the server could not store right now): seconds to
        wait before making the same call again, bounded to [0.1, 30]. None for every other error."""
        if self.code != "unavailable":
            return None
        try:
            seconds = float(self.error.get("retry_after", RETRY_AFTER_DEFAULT_S))
        except (TypeError, ValueError):
            seconds = RETRY_AFTER_DEFAULT_S
        if math.isnan(seconds):
            seconds = RETRY_AFTER_DEFAULT_S
        return min(RETRY_AFTER_MAX_S, max(RETRY_AFTER_MIN_S, seconds))


def default_client(ca_cert: str | Path | None = None) -> Any:
    """A python-socketio client that leaves reconnecting to its owner.

    An ``https://`` server's certificate is always verified (python-socketio's default, never turned off
    here): against the system's trusted CAs, or only against ``ca_cert`` (a PEM bundle) for a server whose
    certificate a private CA signed.
    """
    if ca_cert is None:
        return socketio.Client(reconnection=False)
    http = requests.Session()
    http.verify = str(ca_cert)  # Engine.IO hands it to the WebSocket transport as its CA bundle
    return socketio.Client(reconnection=False, http_session=http)


def close_client(client: Any, wait: float = CLOSE_WAIT_S) -> None:
    """Disconnect a Socket.IO client that may be half-open, waiting at most ``wait`` seconds."""
    if client is None:
        return

    def disconnect() -> None:
        with contextlib.suppress(Exception):  # already gone
            client.disconnect()

    closer = threading.Thread(target=disconnect, name="server-link-close", daemon=True)
    closer.start()
    closer.join(wait)


class ServerLink:
    """A client of ``/monitor``, made afresh on every ``connect``; ``handlers`` get the server's events."""

    def __init__(
        self,
        url: str,
        *,
        client_factory: ClientFactory | None = None,
        handlers: Mapping[str, Callable[..., Any]] | None = None,
        connect_timeout: float = CONNECT_TIMEOUT_S,
        ack_timeout: float = ACK_TIMEOUT_S,
        close_wait: float = CLOSE_WAIT_S,
        ca_cert: str | Path | None = None,
    ) -> None:
        self.url = url
        self.client_factory = client_factory or (lambda: default_client(ca_cert))
        self.handlers = dict(handlers or {})
        self.connect_timeout = connect_timeout
        self.ack_timeout = ack_timeout
        self.close_wait = close_wait
        self._client: Any = None
        self._waiting: dict[threading.Event, Any] = {}  # calls waiting for an ack -> their client
        self._lock = threading.Lock()

    @property
    def connected(self) -> bool:
        """True while the client is connected to the namespace."""
        client = self._client
        return client is not None and bool(client.connected)

    def connect(self, auth: Mapping[str, Any]) -> None:
        """Connect a new client with ``auth`` (closing any previous one); raises when refused or unreachable."""
        self.close()
        client = self.client_factory()
        for event, handler in self.handlers.items():
            if event != "disconnect":
                client.on(event, handler, namespace=MONITOR_NS)
        client.on("disconnect", lambda *args: self._on_disconnect(client, *args), namespace=MONITOR_NS)
        try:
            client.connect(self.url, auth=dict(auth), namespaces=[MONITOR_NS], transports=["websocket"],
                           wait_timeout=self.connect_timeout)
        except Exception:
            close_client(client, self.close_wait)  # a refused namespace can leave the Engine.IO side open
            raise
        self._client = client

    def call(self, event: str, data: Any, timeout: float | None = None) -> dict[str, Any]:
        """Emit ``event`` and return the server's ack; ``ServerError`` for ``ok: false``."""
        client = self._client
        if client is None or not client.connected:
            raise ConnectionError("not connected")
        acked = threading.Event()
        acks: list[tuple[Any, ...]] = []

        def on_ack(*args: Any) -> None:
            acks.append(args)
            acked.set()

        with self._lock:
            self._waiting[acked] = client
        try:
            client.emit(event, data, namespace=MONITOR_NS, callback=on_ack)
            if not client.connected:  # lost before the disconnect hook could know of this call
                raise ConnectionError(f"{event}: connection lost")
            if not acked.wait(timeout or self.ack_timeout):
                raise socketio.exceptions.TimeoutError()
        finally:
            with self._lock:
                self._waiting.pop(acked, None)
        if not acks:
            raise ConnectionError(f"{event}: connection lost while waiting for the ack")
        answer = acks[0][0] if len(acks[0]) == 1 else None
        if not isinstance(answer, dict):
            raise ServerError(event, {"code": "bad_ack", "message": repr(answer)[:200]})
        if not answer.get("ok"):
            raise ServerError(event, answer.get("error"))
        return answer

    def close(self) -> None:
        """Disconnect (bounded wait); safe to call twice or when never connected."""
        client, self._client = self._client, None
        close_client(client, self.close_wait)

    def _on_disconnect(self, client: Any, *args: Any) -> None:
        with self._lock:
            waiting = [acked for acked, of in self._waiting.items() if of is client]
        for acked in waiting:  # their acks will never come: python-socketio drops its callbacks
            acked.set()
        handler = self.handlers.get("disconnect")
        if handler is not None and client is self._client:  # not for a client closed (maybe late) by close()
            handler(*args)
