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
3. ``DownlinkSender`` carries pit-to-car messages the other way: the server
   hands it a message (``downlink`` event) while the car's main link is down or
   stale; it transmits the packet (``dashboard.telemetry.downlink``) when the
   policy says (``dashboard.telemetry.downlink_policy``: repeats until the car
   reports, at most a few times, within each car's airtime budget). The car's
   ``report`` packets come back through ``MeshGateway`` and are forwarded as
   ``lora.report`` events (``link: "lora"``).
4. ``run_gateway`` wires a radio, a gateway, a sender and a forwarder together
   and keeps the radio open until stopped (the ``dashboard mesh-gateway`` command).

The ``lora`` message (the server's ``/monitor`` event of that name)::

    {"car_id": "car-7" | None,          # None when no --car list resolves the hash
     "car_hash": 13396,                 # 16-bit hash of the car id (lora.car_hash)
     "session_prefix": "1a2b3c4d",      # first 8 hex digits of the session UUID
     "frame": {"seq", "t", "channels"}, # a valid Frame; channels may be null
     "received_at": 1700000012.5,       # gateway clock, epoch seconds
     "link": "lora",
     "status": {"uplink": False, ...},  # the car's status flags (lora.STATUS_BITS)
     "radio": {"from": "!a1b2c3d4", "rssi": -97, "snr": 6.25, "hops": 0}}

The ``lora.report`` message (a car's report heard over LoRa)::

    {"link": "lora", "car_id": "car-7" | None, "car_hash": 13396, "short_id": 305419896,
     "state": "answered", "answer": "yes" | None, "t": 1700000012.25, "lap": None,
     "lat": 28.41 | None, "lon": -81.37 | None, "received_at": 1700000013.0,
     "radio": {...as above}}

The ``downlink`` event (server → gateway), acked ``{"ok": true, "transmitting": bool}``::

    {"car_id": "car-7", "car_hash": 13396, "message": {MessageToCar fields}, "state": "sent"}
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
    PRIVATE_APP,
    close_quietly,
    open_interface,
    radio_ready,
)
from dashboard.errors import DashboardError
from dashboard.telemetry import downlink, lora
from dashboard.telemetry.downlink_policy import DownlinkPolicy
from dashboard.telemetry.frames import parse_frame
from dashboard.telemetry.messages import CAR_STATES, FINAL_STATES, Message, MessageError

log = logging.getLogger(__name__)

# meshtastic publishes every decoded packet on f"meshtastic.receive.data.{portnum name}"
# when the port has no decoder of its own, which PRIVATE_APP never has.
RECEIVE_TOPIC = "meshtastic.receive.data.PRIVATE_APP"
DEFAULT_GATEWAY_ID = "mesh-gateway"  # the car_id the gateway authenticates with on /monitor
QUEUE_MAX = 500  # messages held while the server is unreachable: ~40 min of one car at 20 s
RADIO_CHECK_S = 1.0  # how often run_gateway looks at the radio connection
RADIO_GRACE_S = 15.0  # a radio disconnected this long is reopened (TCPInterface reconnects by itself first)
SENDER_IDLE_S = 1.0  # the downlink sender looks at its policy at least this often (budget waits, repeats)
BROADCAST = "^all"  # meshtastic's destination for every node

# forward(message, event): queue one /monitor event ("lora" for a summary, "lora.report" for a car's report)
Forward = Callable[..., None]


class MeshGateway:
    """Decodes summaries arriving on one Meshtastic interface and forwards them as ``lora`` messages."""

    def __init__(
        self,
        interface: Any,
        forward: Forward,
        *,
        cars: Iterable[str] = (),
        clock: Callable[[], float] = time.time,
        sender: DownlinkSender | None = None,
    ) -> None:
        self.interface = interface
        self.forward = forward
        self.clock = clock
        self.sender = sender  # told of the cars' reports (no more repeats) and of their radios' node ids
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
        if isinstance(payload, (bytes, bytearray)) and payload[:1] == bytes([downlink.MAGIC]):
            return self.handle_downlink(packet, bytes(payload))
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
        if self.sender is not None:
            self.sender.node_of(summary.car_hash, packet.get("from"))
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

    def handle_downlink(self, packet: dict[str, Any], payload: bytes) -> dict[str, Any] | None:
        """The ``lora.report`` of a car's report packet, or None (counted) for anything else on 0xD8."""
        try:
            decoded = downlink.decode(payload)
        except downlink.DownlinkDecodeError as exc:
            self.counts["invalid"] += 1
            self.counts[f"invalid.{exc.reason}"] += 1
            log.debug("dropped downlink payload (%s): %s", exc.reason, exc.message)
            return None
        if not isinstance(decoded, downlink.DownlinkReport):
            self.counts["downlink_heard"] += 1  # another gateway's message or close (or our own, relayed)
            return None
        car_id = self.cars.get(decoded.car_hash)
        if self.cars and car_id is None:
            self.counts["unknown_car"] += 1
            return None
        if self.sender is not None:
            self.sender.node_of(decoded.car_hash, packet.get("from"))
            self.sender.reported(decoded.car_hash, decoded.short_id)
        self.counts["reports"] += 1
        return {
            "event": "lora.report",
            "link": "lora",
            "car_id": car_id,
            "car_hash": decoded.car_hash,
            "short_id": decoded.short_id,
            "state": decoded.state,
            "answer": decoded.answer,
            "t": decoded.t,
            "lap": decoded.lap,
            "lat": decoded.lat,
            "lon": decoded.lon,
            "received_at": self.clock(),
            "radio": {"from": _node_id(packet), "rssi": packet.get("rxRssi"), "snr": packet.get("rxSnr"),
                      "hops": _hops(packet)},
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
                event = message.pop("event", "lora")
                if event == "lora":
                    self.forward(message)
                else:
                    self.forward(message, event)
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
        handlers: dict[str, Callable[..., Any]] | None = None,
    ) -> None:
        self.server_url = server_url
        self.auth = {"car_id": gateway_id, "api_key": api_key, "role": "mesh-gateway"}
        self.ack_timeout = ack_timeout
        # handlers: the server's events for the gateway (``downlink``); with any, it stays connected while idle
        self.listens = bool(handlers)
        self._link = ServerLink(server_url, client_factory=client_factory, connect_timeout=ack_timeout,
                                ack_timeout=ack_timeout, ca_cert=ca_cert, handlers=handlers)
        self._queue: collections.deque[tuple[str, dict[str, Any]]] = collections.deque(maxlen=queue_max)
        self._wake = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._backoff = Backoff(BACKOFF_INITIAL_S, BACKOFF_MAX_S)
        self.counts: collections.Counter[str] = collections.Counter()
        self.status = "stopped"

    def __call__(self, message: dict[str, Any], event: str = "lora") -> None:
        """Queue a message for ``event`` (never blocks; the oldest is dropped when the queue is full)."""
        with self._wake:
            if len(self._queue) == self._queue.maxlen:
                self.counts["dropped"] += 1
            self._queue.append((event, message))
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
                while not self._queue and not stop.is_set() and (self._link.connected or not self.listens):
                    self._wake.wait(SENDER_IDLE_S if self.listens else None)
                if stop.is_set():
                    break
                item = self._queue[0] if self._queue else None
            if not self._link.connected:
                try:
                    self._link.connect(self.auth)
                except Exception as exc:  # noqa: BLE001 - refused key, server down, DNS...
                    self.counts["connect_errors"] += 1
                    self.status = f"server unreachable: {exc}"
                    stop.wait(self._backoff.next())
                    continue
                self.status = "connected"
                self._backoff.reset()
            if item is None:
                continue  # connected to hear the server's downlink events; nothing to send
            event, message = item
            try:
                self._link.call(event, message, timeout=self.ack_timeout)
            except ServerError as exc:
                if exc.retry_after is not None:  # the server could not store it right now: same message later
                    self.counts["unavailable"] += 1
                    stop.wait(exc.retry_after)
                    continue
                self.counts["rejected"] += 1  # the server will not take it on retry either
                log.warning("server rejected a LoRa %s: %s", "frame" if event == "lora" else "report", exc.error)
            except Exception as exc:  # noqa: BLE001 - timeout, dropped link: keep the message, reconnect
                self.counts["errors"] += 1
                self.status = f"send failed: {exc}"
                self._link.close()
                stop.wait(self._backoff.next())
                continue
            else:
                self.counts["sent"] += 1
            with self._wake:
                if self._queue and self._queue[0] is item:
                    self._queue.popleft()
            self._backoff.reset()


class DownlinkSender:
    """Transmits the pit-to-car packets the server hands down, when the policy says; never raises to the caller.

    ``on_server`` is the handler of the server's ``downlink`` event (runs on the Socket.IO client's
    thread: it only updates the policy and wakes the sender's own thread, which does the radio I/O).
    """

    def __init__(self, interface: Callable[[], Any], *, policy: DownlinkPolicy | None = None,
                 clock: Callable[[], float] = time.time, channel_index: int = 0) -> None:
        self.interface = interface  # the radio now (None while it is being reopened)
        self.policy = policy or DownlinkPolicy()
        self.clock = clock
        self.channel_index = channel_index
        self.counts: collections.Counter[str] = collections.Counter()
        self._nodes: dict[int, int] = {}  # car hash -> the node number its packets come from
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def on_server(self, data: Any = None) -> dict[str, Any]:
        """A ``downlink`` event: a message to carry (state queued or sent), to stop (the car reported it) or
        to close (cancelled, expired, closed); the ack says whether it will be transmitted."""
        try:
            if not isinstance(data, dict) or not isinstance(data.get("state"), str):
                raise MessageError("a downlink needs a message and its state", field="state")
            message = Message.from_dict({k: v for k, v in (data.get("message") or {}).items()
                                         if k not in ("session_id", "state")})
            car_hash = lora.car_hash(message.car_id)
            state = data["state"]
            with self._lock:
                if state in FINAL_STATES - {"answered"}:
                    taken = self.policy.offer(downlink.DownlinkClose(car_hash, message.short_id, state), self.clock())
                elif state in CAR_STATES:  # delivered, seen or answered, over either link
                    self.policy.reported(car_hash, message.short_id)
                    taken = False
                else:
                    packet = downlink.message_packet(message, car_hash)
                    taken = self.policy.offer(packet, self.clock()) or packet in self.policy.pending()
        except DashboardError as exc:
            self.counts["refused"] += 1
            log.warning("downlink refused: %s", exc.message)
            return {"ok": False, "error": exc.to_dict()}
        self._wake.set()
        return {"ok": True, "transmitting": taken}

    def reported(self, car_hash: int, short_id: int) -> None:
        """The car's report was heard over LoRa: its message is not repeated."""
        with self._lock:
            self.policy.reported(car_hash, short_id)

    def node_of(self, car_hash: int, node: Any) -> None:
        """The car's radio is this node (from its summaries and reports): its packets go to it, not to all."""
        if isinstance(node, int) and node:
            self._nodes[car_hash] = node

    def start(self) -> None:
        """Start the sending thread; a no-op when running."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(self._stop,), name="mesh-downlink", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread; safe to call twice."""
        self._stop.set()
        self._wake.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout)

    def send_due(self) -> int:
        """Transmit what is due now; the number sent (0 while the radio is away or busy)."""
        interface = self.interface()
        if interface is None or radio_ready(interface) is not None:
            return 0
        with self._lock:
            due = self.policy.due(self.clock())
        sent = 0
        for packet in due:
            node = self._nodes.get(packet.car_hash)
            try:
                interface.sendData(downlink.encode(packet), destinationId=node if node else BROADCAST,
                                   portNum=PRIVATE_APP, wantAck=False, channelIndex=self.channel_index)
            except Exception as exc:  # noqa: BLE001 - unplugged mid-write: the packet stays due
                self.counts["failed"] += 1
                log.info("downlink send failed: %s", exc)
                break
            with self._lock:
                self.policy.sent(packet, self.clock())
            self.counts["sent"] += 1
            sent += 1
        return sent

    def _run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self._wake.clear()
            try:
                self.send_due()
            except Exception:  # noqa: BLE001 - the sender must outlive one bad round
                log.exception("downlink round failed")
            with self._lock:
                wait = self.policy.next_due_s(self.clock())
            self._wake.wait(SENDER_IDLE_S if wait is None else min(max(wait, 0.0) or SENDER_IDLE_S, SENDER_IDLE_S))


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
    policy: DownlinkPolicy | None = None,
) -> dict[str, int]:
    """Receive summaries from the radio at ``device`` and forward them to the server until stopped.

    Blocks until ``stop_event`` is set (or Ctrl-C); returns the counters. The
    radio is (re)opened with backoff; the server link is retried by the forwarder,
    which also hears the server's ``downlink`` events for the sender.
    """
    stop = stop_event or threading.Event()
    holder: list[MeshGateway] = []
    sender = DownlinkSender(lambda: holder[0].interface if holder else None, policy=policy)
    forwarder = SocketIOForwarder(server_url, api_key, gateway_id, client_factory=client_factory, ca_cert=ca_cert,
                                  handlers={"downlink": sender.on_server})
    gateway = MeshGateway(None, forwarder, cars=cars, sender=sender)
    holder.append(gateway)
    forwarder.start()
    gateway.start()
    sender.start()
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
        sender.stop()
        interface, gateway.interface = gateway.interface, None
        close_quietly(interface)
        forwarder.stop()
    return {**gateway.counts, **{f"server.{k}": v for k, v in forwarder.counts.items()},
            **{f"downlink.{k}": v for k, v in sender.counts.items()}}


def _node_id(packet: dict[str, Any]) -> str | None:
    # fromId is None until the library has seen the sender's NodeInfo: format the number as it would
    num = packet.get("from")
    return packet.get("fromId") or (f"!{num:08x}" if isinstance(num, int) and num else None)


def _hops(packet: dict[str, Any]) -> int | None:
    start, limit = packet.get("hopStart"), packet.get("hopLimit")
    if isinstance(start, int) and isinstance(limit, int) and start >= limit:
        return start - limit
    return None
