"""The in-car end of the LoRa link: a Meshtastic radio that sends the car's summary every N seconds.

``MeshLink`` keeps the newest frame it is given (``update``, cheap, called at
the frame rate) and, on its own thread, broadcasts a summary of it
(``dashboard.telemetry.lora``) on the private application port with no ack.
The radio is a side channel: absent, unplugged or busy, it only changes
``MeshLink.status`` and is retried with capped exponential backoff; nothing
here ever raises into the caller or blocks the sources and the main uplink.

It also listens: the pit gateway's downlink packets (``dashboard.telemetry.downlink``,
magic 0xD8 on the same port) for this car (its hash) go to ``on_downlink`` (the
monitor hands them to ``CarMessages.from_lora``); an undecodable one is counted,
never raised. ``send_report`` queues a report packet (delivered, seen, answered),
sent by the link's thread at once, before the next summary.

Relies on meshtastic 2.7.x (``SerialInterface``, ``TCPInterface``,
``MeshInterface.sendData``; ``isConnected`` and ``queueStatus`` are read to
avoid the library's blocking waits).
"""
from __future__ import annotations

import collections
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from dashboard.car.backoff import Backoff
from dashboard.errors import SourceError
from dashboard.telemetry import downlink, lora

log = logging.getLogger(__name__)

# Meshtastic's port for private applications (portnums_pb2.PortNum.PRIVATE_APP; tests/car/test_mesh.py checks it).
# A number here, not an import: meshtastic is imported only when a radio is opened, so a car without one
# installs none of it (the [mesh] extra).
PRIVATE_APP = 256
DEFAULT_TCP_PORT = 4403  # a networked Meshtastic node's API port

# Airtime budget. One summary is ~60 bytes on air (37 + ~23 of Meshtastic header and
# Data wrapper), ~0.68 s with LongFast (SF11, 250 kHz, CR 4/5: ~1 kbps), see
# lora.SUMMARY_AIRTIME_S. EU868 allows a 10% duty cycle (360 s of transmission an
# hour) and the firmware spends only half of that (5%) on routine traffic; it also
# holds back polite traffic while channel utilisation is above 25%. Every 20 s is
# 0.68 / 20 = 3.4% of the hour: under the 5% share with room for the node's own
# NodeInfo/telemetry, and about six cars (three, if each packet is relayed once) can
# share one channel before the 25% hold-back. Pit values are then at most ~20 s old.
# The pit's messages (downlink) take at most 1% of the hour per car (telemetry/downlink_policy.py), the car's
# reports of them 0.64 s each, a few per message.
DEFAULT_INTERVAL_S = 20.0
MIN_INTERVAL_S = 1.0  # below this the radio's TX queue fills and packets are dropped anyway
CONNECT_TIMEOUT_S = 20  # meshtastic waits this long for the radio's configuration on connect
BACKOFF_INITIAL_S = 2.0  # first retry after the radio failed
BACKOFF_MAX_S = 60.0  # a radio unplugged for long is retried once a minute
# meshtastic publishes every decoded packet on f"meshtastic.receive.data.{portnum name}" when the port has no
# decoder of its own, which PRIVATE_APP never has (the gateway listens on the same topic).
RECEIVE_TOPIC = "meshtastic.receive.data.PRIVATE_APP"
REPORTS_MAX = 16  # report packets waiting for the radio; the oldest is dropped (the pit repeats, the car re-reports)

InterfaceFactory = Callable[[str], Any]


def parse_port(port: str) -> tuple[str, str, int]:
    """Split PORT into ``("tcp", host, port)`` for ``tcp://host[:4403]``, else ``("serial", path, 0)``."""
    if not port:
        raise SourceError("no Meshtastic port given", field="mesh")
    if port.startswith("tcp://"):
        url = urlsplit(port)
        if not url.hostname:
            raise SourceError(f"no host in {port!r}", field="mesh")
        try:
            number = url.port or DEFAULT_TCP_PORT
        except ValueError:
            raise SourceError(f"bad port number in {port!r}", field="mesh") from None
        return "tcp", url.hostname, number
    return "serial", port, 0


def open_interface(port: str, timeout: int = CONNECT_TIMEOUT_S) -> Any:
    """Connect to a Meshtastic radio (blocks until its configuration arrives); raises on failure."""
    kind, where, number = parse_port(port)
    if kind == "tcp":
        from meshtastic.tcp_interface import TCPInterface

        return TCPInterface(where, portNumber=number, timeout=timeout)
    from meshtastic.serial_interface import SerialInterface

    return SerialInterface(devPath=where, timeout=timeout)  # devPath given: never probes


def close_quietly(interface: Any) -> None:
    """Close an interface whose radio may already be gone."""
    if interface is not None:
        with contextlib.suppress(Exception):  # the device may be gone mid-close
            interface.close()


def radio_ready(interface: Any) -> str | None:
    """None when a packet can go out now, else why not ("disconnected", "busy")."""
    connected = getattr(interface, "isConnected", None)
    if connected is not None and not connected.is_set():
        return "disconnected"  # sendData would block up to 30 s in _waitConnected
    queue = getattr(interface, "queueStatus", None)
    if queue is not None and queue.free <= 0:
        return "busy"  # sendData would sleep until the radio reports free TX slots
    return None


class MeshLink:
    """Sends a summary of the newest frame over a Meshtastic radio every ``interval_s``."""

    def __init__(
        self,
        port: str,
        car_id: str,
        *,
        interval_s: float = DEFAULT_INTERVAL_S,
        hop_limit: int | None = None,
        channel_index: int = 0,
        interface_factory: InterfaceFactory = open_interface,
    ) -> None:
        if interval_s < MIN_INTERVAL_S:
            raise ValueError(f"interval_s must be at least {MIN_INTERVAL_S}")
        if interval_s < lora.SUMMARY_AIRTIME_S / 0.10:
            log.warning("mesh interval %.1f s exceeds the EU868 10%% duty cycle on LongFast", interval_s)
        self.port = port
        self.car_id = car_id
        self.interval_s = interval_s
        self.hop_limit = hop_limit  # None: the radio's configured hop limit
        self.channel_index = channel_index
        self._factory = interface_factory
        self._lock = threading.Lock()
        self._latest: tuple[str, Any, int] | None = None  # (session_id, frame, status)
        self._last_sent_seq: int | None = None
        self._interface: Any = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._backoff = Backoff(BACKOFF_INITIAL_S, BACKOFF_MAX_S)  # jitter: cars restarted together don't collide
        self.status = "stopped"
        self.last_error: str | None = None
        self.counts = {"sent": 0, "failed": 0, "skipped_busy": 0, "encode_errors": 0, "connects": 0,
                       "downlink_received": 0, "downlink_invalid": 0, "downlink_other_car": 0,
                       "downlink_errors": 0, "reports_sent": 0, "reports_dropped": 0}
        self.car_hash = lora.car_hash(car_id)
        self.on_downlink: Callable[[downlink.Packet], None] | None = None  # a message or close for this car
        self._reports: collections.deque[downlink.DownlinkReport] = collections.deque()
        self._wake = threading.Event()  # a report to send now
        self._subscribed = False

    # ------------------------------------------------------------ caller side
    def update(self, session_id: str | None, frame: Any, status: int = 0) -> None:
        """Remember the newest frame (a Frame or ``{seq, t, channels}``) of the session; never raises."""
        with self._lock:
            self._latest = (session_id, frame, status) if session_id else None

    def send_report(self, report: dict[str, Any]) -> bool:
        """Queue a message report (``{short_id, state, t, answer?, lat?, lon?}``) for the radio; never raises.

        False when it cannot be encoded (counted). Sent by the link's thread as soon as the radio is there.
        """
        try:
            packet = downlink.DownlinkReport(self.car_hash, report["short_id"], report["state"], report["t"],
                                             report.get("answer"), report.get("lap"), report.get("lat"),
                                             report.get("lon"))
            downlink.encode(packet)
        except Exception as exc:  # noqa: BLE001 - a bad field from upstream: report, go on
            self.counts["encode_errors"] += 1
            self.last_error = f"report encode: {exc}"
            return False
        with self._lock:
            if len(self._reports) >= REPORTS_MAX:
                self._reports.popleft()
                self.counts["reports_dropped"] += 1
            self._reports.append(packet)
        self._wake.set()
        return True

    def start(self) -> None:
        """Start the sender thread (and listen for downlink packets); a no-op when already running."""
        self._listen()
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop = threading.Event()
        self._backoff.reset()
        self.status = "connecting"
        self._thread = threading.Thread(target=self._run, args=(self._stop,), name="mesh-link", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the thread and close the radio; safe to call twice or before start."""
        self._stop.set()
        self._wake.set()
        self._unlisten()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)  # a connect in progress may outlive this; it closes its radio itself
        self._drop_interface()
        self.status = "stopped"

    def snapshot(self) -> dict[str, Any]:
        """Status and counters, for the monitor's heartbeat ``sources``."""
        return {"status": self.status, "last_error": self.last_error, **self.counts}

    # ----------------------------------------------------------- listening
    def _listen(self) -> None:
        if self._subscribed:
            return
        try:
            from pubsub import pub  # meshtastic's dependency: present whenever a radio can be opened
        except ImportError:
            return
        pub.subscribe(self._on_receive, RECEIVE_TOPIC)  # a weak reference: the monitor keeps this link alive
        self._subscribed = True

    def _unlisten(self) -> None:
        if self._subscribed:
            from pubsub import pub

            pub.unsubscribe(self._on_receive, RECEIVE_TOPIC)
            self._subscribed = False

    def _on_receive(self, packet: dict[str, Any], interface: Any) -> None:
        # Runs on meshtastic's publishing thread: never raise, never block. Both arguments required (pubsub
        # infers the topic's signature from its first listener; the library publishes (packet, interface)).
        if interface is None or interface is not self._interface:
            return  # pubsub is process-wide: another radio's packet
        payload = (packet.get("decoded") or {}).get("payload")
        if not isinstance(payload, (bytes, bytearray)) or payload[:1] != bytes([downlink.MAGIC]):
            return  # summaries (ours relayed, other cars') and other apps on the port
        self.handle_downlink(bytes(payload))

    def handle_downlink(self, payload: bytes) -> downlink.Packet | None:
        """Decode a downlink payload and hand a message or close of this car to ``on_downlink``; never raises."""
        try:
            packet = downlink.decode(payload)
        except downlink.DownlinkDecodeError as exc:
            self.counts["downlink_invalid"] += 1
            log.debug("dropped downlink payload (%s): %s", exc.reason, exc.message)
            return None
        if packet.car_hash != self.car_hash or isinstance(packet, downlink.DownlinkReport):
            self.counts["downlink_other_car"] += 1  # another car's, or a car's report on its way to the pit
            return None
        self.counts["downlink_received"] += 1
        if self.on_downlink is not None:
            try:
                self.on_downlink(packet)
            except Exception:  # noqa: BLE001 - the radio must outlive one bad handler
                self.counts["downlink_errors"] += 1
                log.exception("a downlink packet could not be handled")
        return packet

    # ----------------------------------------------------------- radio side
    def connect(self) -> bool:
        """Open the radio if it is not open; False (status set, never raises) when it cannot be."""
        if self._interface is not None:
            return True
        if self._stop.is_set():
            return False  # stopped: don't open the device again
        try:
            interface = self._factory(self.port)
        except Exception as exc:  # noqa: BLE001 - absent device, refused TCP, config timeout, permissions
            self._failed("no radio", exc)
            return False
        if self._stop.is_set():  # stopped while we were connecting
            close_quietly(interface)
            return False
        self._interface = interface
        self.counts["connects"] += 1
        self._backoff.reset()
        self.status = "connected"
        self.last_error = None
        return True

    def send_now(self) -> bool:
        """Send one summary of the newest frame if there is something new; never raises."""
        with self._lock:
            latest = self._latest
        if latest is None:
            self.status = "waiting"  # no session or no frame yet
            return False
        session_id, frame, status = latest
        try:
            summary = lora.summary_from_frame(self.car_id, session_id, frame, status)
            payload = lora.encode(summary)
        except Exception as exc:  # noqa: BLE001 - a bad seq/time/session from upstream: report, go on
            self.counts["encode_errors"] += 1
            self.last_error = f"encode: {exc}"
            return False
        if summary.seq == self._last_sent_seq:
            return False  # nothing new since the last summary: save the airtime
        if not self.connect():
            return False
        why_not = radio_ready(self._interface)
        if why_not == "busy":
            self.counts["skipped_busy"] += 1
            self.status = "busy"
            return False
        if why_not is not None:
            self._failed("radio " + why_not, None)
            self._drop_interface()
            return False
        try:
            self._interface.sendData(
                payload,
                portNum=PRIVATE_APP,
                wantAck=False,
                hopLimit=self.hop_limit,
                channelIndex=self.channel_index,
            )
        except Exception as exc:  # noqa: BLE001 - unplugged mid-write (SerialException, OSError)...
            self._failed("send failed", exc)
            self._drop_interface()
            return False
        self._last_sent_seq = summary.seq
        self.counts["sent"] += 1
        self.status = "connected"
        return True

    # -------------------------------------------------------------- internals
    def send_reports(self) -> int:
        """Send the queued report packets (no ack: the pit repeats a message it did not hear about); how many."""
        sent = 0
        while not self._stop.is_set():
            with self._lock:
                packet = self._reports[0] if self._reports else None
            if packet is None or self._interface is None or radio_ready(self._interface) is not None:
                break
            try:
                self._interface.sendData(downlink.encode(packet), portNum=PRIVATE_APP, wantAck=False,
                                         hopLimit=self.hop_limit, channelIndex=self.channel_index)
            except Exception as exc:  # noqa: BLE001 - unplugged mid-write: the report waits for the radio
                self._failed("send failed", exc)
                self._drop_interface()
                break
            with self._lock:
                if self._reports and self._reports[0] is packet:
                    self._reports.popleft()
            self.counts["reports_sent"] += 1
            sent += 1
        return sent

    def _run(self, stop: threading.Event) -> None:
        next_summary = 0.0  # monotonic time of the next summary: a report does not bring it forward
        while not stop.is_set():
            self._wake.clear()
            if not self.connect():
                stop.wait(self._backoff.next())
                continue
            self.send_reports()
            now = time.monotonic()
            if now >= next_summary:
                sent_or_idle = self.send_now() or self._interface is not None
                next_summary = now + (self.interval_s if sent_or_idle else self._backoff.next())
            self._wake.wait(max(0.0, next_summary - time.monotonic()))
        self._drop_interface()

    def _failed(self, what: str, exc: BaseException | None) -> None:
        self.counts["failed"] += 1
        self.status = what
        self.last_error = f"{what}: {exc}" if exc is not None else what
        log.info("mesh link: %s", self.last_error)

    def _drop_interface(self) -> None:
        interface, self._interface = self._interface, None
        close_quietly(interface)
