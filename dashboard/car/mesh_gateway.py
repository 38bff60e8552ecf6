"""The pit end of the LoRa link: receive car summaries from a Meshtastic radio and feed the server.

Three small stages, each replaceable:

1. ``MeshGateway`` listens on the library's pubsub topic for the private app
   port, keeps only packets of its own interface, decodes and validates each
   payload (``dashboard.telemetry.lora``, then ``parse_frame``), counts what it
   drops (foreign apps on the port, garbage, duplicates, unknown cars) and hands
   each good summary, as a ``lora`` message, to a ``forward`` callable.
2. ``SocketIOForwarder`` is such a callable for the real server: a bounded
   queue and one thread that sends each message as a ``lora`` event on the
   ``/monitor`` namespace (a ``ServerLink``) and waits for its ack,
   reconnecting with backoff; an ``unavailable`` answer is retried after the
   server's ``retry_after``, any other refusal drops the message.
3. ``run_gateway`` wires a radio, a gateway and a forwarder together and keeps
   the radio open until stopped (the ``dashboard mesh-gateway`` command).

The ``lora`` message (the server's ``/monitor`` event of that name)::

    {"car_id": "car-7" | None,          # None when no --car list resolves the hash
     "car_hash": 13396,                 # 16-bit hash of the car id (lora.car_hash)
     "session_prefix": "1a2b3c4d",      # first 8 hex digits of the session UUID
     "frame": {"seq", "t", "channels"}, # a valid Frame; channels may be null
     "received_at": 1700000012.5,       # gateway clock, epoch seconds
     "link": "lora",
     "status": {"uplink": False, ...},  # the car's status flags (lora.STATUS_BITS)
     "radio": {"from": "!a1b2c3d4", "rssi": -97, "snr": 6.25, "hops": 0}}
"""
from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from pubsub import pub

from dashboard.car.backoff import Backoff
from dashboard.car.link import ACK_TIMEOUT_S, ClientFactory, ServerError, ServerLink
from dashboard.car.mesh import (
    BACKOFF_INITIAL_S,
    BACKOFF_MAX_S,
    close_quietly,
    open_interface,
    radio_ready,
)
from dashboard.errors import DashboardError
from dashboard.telemetry import lora
from dashboard.telemetry.frames import parse_frame

log = logging.getLogger(__name__)

# meshtastic publishes every decoded packet on f"meshtastic.receive.data.{portnum name}"
# when the port has no decoder of its own, which PRIVATE_APP never has.
RECEIVE_TOPIC = "meshtastic.receive.data.PRIVATE_APP"
DEFAULT_GATEWAY_ID = "mesh-gateway"  # the car_id the gateway authenticates with on /monitor
QUEUE_MAX = 500  # messages held while the server is unreachable: ~40 min of one car at 20 s
RADIO_CHECK_S = 1.0  # how often run_gateway looks at the radio connection
RADIO_GRACE_S = 15.0  # a radio disconnected this long is reopened (TCPInterface reconnects by itself first)

Forward = Callable[[dict[str, Any]], None]


class MeshGateway:
    """Decodes summaries arriving on one Meshtastic interface and forwards them as ``lora`` messages."""

    def __init__(
        self,
        interface: Any,
        forward: Forward,
        *,
        cars: Iterable[str] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.interface = interface
        self.forward = forward
        self.clock = clock
        self.cars = {lora.car_hash(car_id): car_id for car_id in cars}  # empty: accept every car
        self.counts: collections.Counter[str] = collections.Counter()
        self._last: dict[tuple[int, str], tuple[int, float]] = {}  # (car, session) -> (seq, t) last forwarded
        self._subscribed = False
        self._lock = threading.Lock()

    def start(self) -> None:
        """Subscribe to the private app topic; a no-op when already subscribed."""
        if not self._subscribed:
            pub.subscribe(self._on_receive, RECEIVE_TOPIC)  # pubsub keeps a weak reference: keep self alive
            self._subscribed = True

    def stop(self) -> None:
        """Unsubscribe; safe to call twice."""
        if self._subscribed:
            pub.unsubscribe(self._on_receive, RECEIVE_TOPIC)
            self._subscribed = False

    def handle_packet(self, packet: dict[str, Any]) -> dict[str, Any] | None:
        """The ``lora`` message of a received packet dict, or None (counted) when it is dropped."""
        self.counts["received"] += 1
        payload = (packet.get("decoded") or {}).get("payload")
        try:
            summary = lora.decode(payload)
            frame = parse_frame(summary.to_frame()).model_dump()
        except lora.LoraDecodeError as exc:
            if exc.reason == "foreign":
                self.counts["foreign"] += 1  # another application on the private port
            else:
                self.counts["invalid"] += 1
                self.counts[f"invalid.{exc.reason}"] += 1
            log.debug("dropped LoRa payload (%s): %s", exc.reason, exc.message)
            return None
        except DashboardError as exc:  # decode guarantees ranges; this is a codec bug, keep counting
            self.counts["invalid"] += 1
            self.counts["invalid.frame"] += 1
            log.warning("decoded LoRa summary is not a valid frame: %s", exc.message)
            return None
        car_id = self.cars.get(summary.car_hash)
        if self.cars and car_id is None:
            self.counts["unknown_car"] += 1
            return None
        key = (summary.car_hash, summary.session_prefix)
        with self._lock:
            if self._last.get(key) == (summary.seq, summary.t):
                self.counts["duplicate"] += 1  # heard twice (relayed): the server needs it once
                return None
            self._last[key] = (summary.seq, summary.t)
        return {
            "car_id": car_id,
            "car_hash": summary.car_hash,
            "session_prefix": summary.session_prefix,
            "frame": frame,
            "received_at": self.clock(),
            "link": "lora",
            "status": summary.flags(),
            "radio": {
                "from": _node_id(packet),
                "rssi": packet.get("rxRssi"),
                "snr": packet.get("rxSnr"),
                "hops": _hops(packet),
            },
        }

    def _on_receive(self, packet: dict[str, Any], interface: Any) -> None:
        # Runs on meshtastic's single publishing thread: never raise, never block.
        # Both arguments required: pubsub infers a topic's signature from its first listener,
        # and the library always publishes (packet, interface).
        if interface is not self.interface or self.interface is None:
            return  # pubsub is process-wide: another interface's packet
        try:
            message = self.handle_packet(packet)
            if message is not None:
                self.forward(message)
                self.counts["forwarded"] += 1
        except Exception:
            self.counts["forward_errors"] += 1
            log.exception("forwarding a LoRa summary failed")


class SocketIOForwarder:
    """Sends ``lora`` messages to the server's ``/monitor`` namespace from a queue, in order."""

    def __init__(
        self,
        server_url: str,
        api_key: str | None,
        gateway_id: str = DEFAULT_GATEWAY_ID,
        *,
        client_factory: ClientFactory | None = None,
        queue_max: int = QUEUE_MAX,
        ack_timeout: float = ACK_TIMEOUT_S,
        ca_cert: str | Path | None = None,
    ) -> None:
        self.server_url = server_url
        self.auth = {"car_id": gateway_id, "api_key": api_key, "role": "mesh-gateway"}
        self.ack_timeout = ack_timeout
        self._link = ServerLink(server_url, client_factory=client_factory, connect_timeout=ack_timeout,
                                ack_timeout=ack_timeout, ca_cert=ca_cert)
        self._queue: collections.deque[dict[str, Any]] = collections.deque(maxlen=queue_max)
        self._wake = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._backoff = Backoff(BACKOFF_INITIAL_S, BACKOFF_MAX_S)
        self.counts: collections.Counter[str] = collections.Counter()
        self.status = "stopped"

    def __call__(self, message: dict[str, Any]) -> None:
        """Queue a message (never blocks; the oldest is dropped when the queue is full)."""
        with self._wake:
            if len(self._queue) == self._queue.maxlen:
                self.counts["dropped"] += 1
            self._queue.append(message)
            self._wake.notify()

    def start(self) -> None:
        """Start the sending thread; a no-op when running."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(self._stop,), name="mesh-forwarder", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread and disconnect; safe to call twice."""
        self._stop.set()
        with self._wake:
            self._wake.notify_all()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)
        self._link.close()
        self.status = "stopped"

    def backlog(self) -> int:
        """Messages waiting to be sent."""
        return len(self._queue)

    def _run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            with self._wake:
                while not self._queue and not stop.is_set():
                    self._wake.wait()
                if stop.is_set():
                    break
                message = self._queue[0]
            if not self._link.connected:
                try:
                    self._link.connect(self.auth)
                except Exception as exc:  # noqa: BLE001 - refused key, server down, DNS...
                    self.counts["connect_errors"] += 1
                    self.status = f"server unreachable: {exc}"
                    stop.wait(self._backoff.next())
                    continue
                self.status = "connected"
            try:
                self._link.call("lora", message, timeout=self.ack_timeout)
            except ServerError as exc:
                if exc.retry_after is not None:  # the server could not store it right now: same message later
                    self.counts["unavailable"] += 1
                    stop.wait(exc.retry_after)
                    continue
                self.counts["rejected"] += 1  # the server will not take it on retry either
                log.warning("server rejected a LoRa frame: %s", exc.error)
            except Exception as exc:  # noqa: BLE001 - timeout, dropped link: keep the message, reconnect
                self.counts["errors"] += 1
                self.status = f"send failed: {exc}"
                self._link.close()
                stop.wait(self._backoff.next())
                continue
            else:
                self.counts["sent"] += 1
            with self._wake:
                if self._queue and self._queue[0] is message:
                    self._queue.popleft()
            self._backoff.reset()


def run_gateway(
    device: str,
    server_url: str,
    api_key: str | None,
    *,
    gateway_id: str = DEFAULT_GATEWAY_ID,
    cars: Iterable[str] = (),
    interface_factory: Callable[[str], Any] = open_interface,
    client_factory: ClientFactory | None = None,
    stop_event: threading.Event | None = None,
    ca_cert: str | Path | None = None,
) -> dict[str, int]:
    """Receive summaries from the radio at ``device`` and forward them to the server until stopped.

    Blocks until ``stop_event`` is set (or Ctrl-C); returns the counters. The
    radio is (re)opened with backoff; the server link is retried by the forwarder.
    """
    stop = stop_event or threading.Event()
    forwarder = SocketIOForwarder(server_url, api_key, gateway_id, client_factory=client_factory, ca_cert=ca_cert)
    gateway = MeshGateway(None, forwarder, cars=cars)
    forwarder.start()
    gateway.start()
    backoff = Backoff(BACKOFF_INITIAL_S, BACKOFF_MAX_S)
    disconnected_since: float | None = None
    try:
        while not stop.is_set():
            if gateway.interface is None:
                try:
                    gateway.interface = interface_factory(device)
                except Exception as exc:  # noqa: BLE001 - absent or busy radio: retry with backoff
                    log.warning("mesh gateway: radio %s unavailable: %s", device, exc)
                    stop.wait(backoff.next())
                    continue
                log.info("mesh gateway: listening on %s, forwarding to %s", device, server_url)
                backoff.reset()
                disconnected_since = None
            elif radio_ready(gateway.interface) == "disconnected":
                now = time.monotonic()
                disconnected_since = disconnected_since or now
                if now - disconnected_since >= RADIO_GRACE_S:
                    log.warning("mesh gateway: radio %s lost, reopening", device)
                    interface, gateway.interface = gateway.interface, None
                    close_quietly(interface)
                    continue
            else:
                disconnected_since = None
            stop.wait(RADIO_CHECK_S)
    except KeyboardInterrupt:
        pass
    finally:
        gateway.stop()
        interface, gateway.interface = gateway.interface, None
        close_quietly(interface)
        forwarder.stop()
    return {**gateway.counts, **{f"server.{k}": v for k, v in forwarder.counts.items()}}


def _node_id(packet: dict[str, Any]) -> str | None:
    # fromId is None until the library has seen the sender's NodeInfo: format the number as it would
    num = packet.get("from")
    return packet.get("fromId") or (f"!{num:08x}" if isinstance(num, int) and num else None)


def _hops(packet: dict[str, Any]) -> int | None:
    start, limit = packet.get("hopStart"), packet.get("hopLimit")
    if isinstance(start, int) and isinstance(limit, int) and start >= limit:
        return start - limit
    return None
