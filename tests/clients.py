"""Real python-socketio clients for tests: a scripted monitor and a recording viewer."""
from __future__ import annotations

import json
import re
import threading
import time
import uuid
from typing import Any

import requests
import socketio
import websocket

from tests.waiting import wait_for

CALL_TIMEOUT_S = 15.0
CLOSE_WAIT_S = 0.2

# websocket-client waits up to 3 s for the server's close frame on disconnect, but engineio's read
# loop often consumed that frame already (a client-side race), so every disconnect would cost 3 s.
_close = websocket.WebSocket.close


def _close_quickly(self: websocket.WebSocket, status: int = websocket.STATUS_NORMAL, reason: bytes = b"",
                   timeout: float = CLOSE_WAIT_S) -> None:
    _close(self, status, reason, min(timeout, CLOSE_WAIT_S))


websocket.WebSocket.close = _close_quickly


def connect_monitor(url: str, car_id: str, api_key: str | None) -> socketio.Client:
    """A monitor connected to /monitor (websocket transport)."""
    client = socketio.Client(reconnection=False)
    client.connect(url, namespaces=["/monitor"], auth={"car_id": car_id, "api_key": api_key},
                   transports=["websocket"], wait_timeout=10)
    return client


def send_frames(server: Any, car_id: str, session_id: str, frames: list[dict[str, Any]], batch: int = 250) -> None:
    """Stream ``frames`` into a session as the car's monitor: ``session.start`` on it, then ``telemetry`` batches,
    each acknowledged with nothing rejected."""
    monitor = connect_monitor(server.url, car_id, server.api_key)
    try:
        assert monitor.call("session.start", {"session_id": session_id}, namespace="/monitor",
                            timeout=CALL_TIMEOUT_S)["ok"]
        for i in range(0, len(frames), batch):
            ack = monitor.call("telemetry", {"session_id": session_id, "frames": frames[i:i + batch]},
                               namespace="/monitor", timeout=CALL_TIMEOUT_S)
            assert ack["ok"] and not ack["rejected"], ack
    finally:
        monitor.disconnect()


FRAMES_EPOCH = time.time() - 600.0  # sample time of seq 0: a seq always gets the same frame, so a resend is one


def make_frames(start: int, count: int, t0: float | None = None, hz: float = 50.0) -> list[dict[str, Any]]:
    """``count`` plausible frames from seq ``start``, sampled at ``hz``; by default the same frames for the same seqs
    in the whole test run (a monitor resending its outbox sends exactly what it sent before)."""
    t0 = t0 if t0 is not None else FRAMES_EPOCH + start / hz
    return [{"seq": s, "t": t0 + (s - start) / hz,
             "channels": {"rpm": 3000.0 + s, "speed": float(s % 200), "throttle": float(s % 100),
                          "coolant_temp": 90.0, "lat": 28.4127 + s * 1e-6, "lon": -81.3797}}
            for s in range(start, start + count)]


class Viewer:
    """A /dashboard client that records every event it receives."""

    def __init__(self, url: str, token: str | None = None) -> None:
        self.client = socketio.Client(reconnection=False)
        self.events: list[tuple[str, Any]] = []
        self.frames: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self.client.on("*", self._record, namespace="/dashboard")
        auth = {"token": token} if token else None
        self.client.connect(url, namespaces=["/dashboard"], auth=auth, transports=["websocket"], wait_timeout=10)

    def _record(self, event: str, data: Any = None) -> None:
        with self._lock:
            self.events.append((event, data))
            if event == "telemetry":
                self.frames.extend(data["frames"])

    def join(self, session_id: str) -> dict[str, Any]:
        """Join a session's room; returns the ack."""
        return self.client.call("join", {"session_id": session_id}, namespace="/dashboard", timeout=CALL_TIMEOUT_S)

    def seqs(self) -> list[int]:
        """The seq of every frame received, in arrival order."""
        with self._lock:
            return [f["seq"] for f in self.frames]

    def of(self, event: str) -> list[Any]:
        """Payloads of every ``event`` received."""
        with self._lock:
            return [d for e, d in self.events if e == event]

    def wait_frames(self, count: int, timeout: float = 15.0) -> list[int]:
        """Wait until ``count`` frames arrived; returns their seqs."""
        wait_for(lambda: len(self.seqs()) >= count, timeout, f"{count} frames at the viewer")
        return self.seqs()

    def close(self) -> None:
        """Disconnect."""
        self.client.disconnect()


def metric(url: str, name: str) -> float:
    """One unlabelled series of the server's ``/metrics``."""
    return metrics(url, name)[0]


def metrics(url: str, *names: str) -> list[float]:
    """Several unlabelled series of the server's ``/metrics``, from one scrape (consistent with each other)."""
    text = requests.get(url + "/metrics", timeout=5).text
    values = []
    for name in names:
        found = re.search(rf"^{name} ([0-9.e+]+)$", text, re.M)
        assert found, f"{name} not in /metrics"
        values.append(float(found.group(1)))
    return values


def stored_frames(url: str, session_id: str) -> list[dict[str, Any]]:
    """Every stored frame of a session through ``GET /frames``, following its pagination."""
    out: list[dict[str, Any]] = []
    after = -1
    while True:
        page = requests.get(f"{url}/api/v1/sessions/{session_id}/frames", params={"after_seq": after, "limit": 1000},
                            timeout=10)
        page.raise_for_status()
        body = page.json()
        out += body["items"]
        if not body["items"] or body["next_after_seq"] is None:
            return out
        after = body["next_after_seq"]


class RawSocketIO:
    """A Socket.IO client that writes the wire protocol itself (Engine.IO 4 over websocket, Socket.IO 5 packets).

    For what a well-behaved library never sends: broken JSON, events named like the protocol's own.
    """

    def __init__(self, url: str, namespace: str, auth: dict[str, Any] | None = None) -> None:
        self.namespace = namespace
        self.ws = websocket.create_connection(url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket",
                                              timeout=CALL_TIMEOUT_S)
        opened = self.ws.recv()
        assert opened.startswith("0{"), opened
        self.ws.send(f"40{namespace}," + json.dumps(auth or {}))
        connected = self.packet()
        assert connected.startswith(f"0{namespace},"), connected

    def packet(self) -> str:
        """The next Socket.IO packet (Engine.IO pings answered on the way)."""
        while True:
            message = self.ws.recv()
            if message == "2":
                self.ws.send("3")
                continue
            assert message.startswith("4"), message
            return message[1:]

    def send(self, packet: str) -> None:
        """Send one Socket.IO packet as written (the Engine.IO message prefix is added)."""
        self.ws.send("4" + packet)

    def ack(self, packet_id: int) -> Any:
        """Wait for the ack of ``packet_id`` and return its payload (other packets are skipped)."""
        prefix = f"3{self.namespace},{packet_id}"
        while True:
            packet = self.packet()
            if packet.startswith(prefix) and packet[len(prefix):len(prefix) + 1] == "[":
                return json.loads(packet[len(prefix):])[0]

    def call(self, packet_id: int, event_json: str) -> Any:
        """Send ``42<namespace>,<id><event_json>`` and return its ack."""
        self.send(f"2{self.namespace},{packet_id}{event_json}")
        return self.ack(packet_id)

    def close(self) -> None:
        """Close the connection."""
        self.ws.close()


class Car:
    """A monitor streaming 10-frame batches as fast as its acks come, resending on `unavailable` as the car does."""

    def __init__(self, url: str, api_key: str) -> None:
        self.client = connect_monitor(url, f"CAR-{uuid.uuid4().hex[:6]}", api_key)
        self.session_id = self.client.call("session.start", {}, namespace="/monitor",
                                           timeout=CALL_TIMEOUT_S)["session"]["session_id"]
        self.acked: list[int] = []
        self.latencies: list[float] = []
        self.unavailable = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> "Car":
        self._thread.start()
        return self

    def _run(self) -> None:
        seq = 0
        while not self._stop.is_set():
            frames = make_frames(seq, 10, t0=time.time(), hz=1000.0)
            while not self._stop.is_set():
                started = time.monotonic()
                ack = self.client.call("telemetry", {"session_id": self.session_id, "frames": frames},
                                       namespace="/monitor", timeout=CALL_TIMEOUT_S)
                self.latencies.append(time.monotonic() - started)
                if ack["ok"]:
                    self.acked += [f["seq"] for f in frames]
                    break
                assert ack["error"]["code"] == "unavailable", ack
                self.unavailable += 1
                self._stop.wait(min(ack["error"]["retry_after"], 1.0))
            seq += 10
            self._stop.wait(0.02)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(CALL_TIMEOUT_S + 5)
        self.client.disconnect()
