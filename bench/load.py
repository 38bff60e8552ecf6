"""The load generator: simulated monitors and viewers, each kind in its own processes.

Both speak the real wire protocol (RACE_DASHBOARD_PLAN.md) through python-socketio's
``AsyncClient`` over the websocket transport, many clients per process:

- a monitor connects to ``/monitor``, calls ``session.start``, then pushes frames of
  20 channels with ``telemetry`` and awaits each ack before the next emit (as the
  car's uplink does). At a rate, frames are sampled on a fixed clock into a queue
  and each emit carries whatever queued up while the last ack was awaited; at full
  speed each emit carries ``batch`` fresh frames.
- a viewer connects to ``/dashboard`` offering permessage-deflate as Chromium does
  (aiohttp's ``compress=15``), calls ``join``, and records for every frame it
  receives the latency ``receipt - frame t`` (``t`` is set when the monitor samples
  the frame, on this same machine's clock) into a histogram.

Processes talk to the orchestrator (bench.run) through multiprocessing queues and
events only; each reports the CPU it used itself.
"""
from __future__ import annotations

import asyncio
import math
import random
import time
from array import array
from collections import deque
from typing import Any

MONITOR_NS = "/monitor"
DASHBOARD_NS = "/dashboard"
BIN_S = 0.0001  # histogram resolution: 0.1 ms
BINS = 200_000  # up to 20 s; slower frames land in the last bin (max is kept exactly)
CONNECT_PARALLEL = 25  # viewer connections opened at once per process (a crowd arriving, not a stampede)
CALL_TIMEOUT_S = 30.0
REPORT_EVERY_S = 0.1  # how often a viewer process publishes its received count


# ------------------------------------------------------------------ latency histogram
class Histogram:
    """Latencies in 0.1 ms bins; mergeable across processes, exact max."""

    def __init__(self) -> None:
        self.bins = array("L", bytes(array("L").itemsize * BINS))
        self.count = 0
        self.max = 0.0

    def add(self, seconds: float) -> None:
        """Record one latency."""
        i = int(seconds / BIN_S)
        self.bins[0 if i < 0 else (i if i < BINS else BINS - 1)] += 1
        self.count += 1
        if seconds > self.max:
            self.max = seconds

    def merge(self, other: "Histogram") -> None:
        """Add another histogram's counts."""
        for i, n in enumerate(other.bins):
            if n:
                self.bins[i] += n
        self.count += other.count
        self.max = max(self.max, other.max)

    def quantile(self, q: float) -> float | None:
        """The q-quantile in seconds (upper edge of its bin), or None when empty."""
        if not self.count:
            return None
        rank, seen = math.ceil(q * self.count), 0
        for i, n in enumerate(self.bins):
            seen += n
            if seen >= rank:
                return (i + 1) * BIN_S
        return self.max

    def sparse(self) -> dict[int, int]:
        """The non-empty bins, to send between processes."""
        return {i: n for i, n in enumerate(self.bins) if n}

    @classmethod
    def from_sparse(cls, bins: dict[int, int], count: int, maximum: float) -> "Histogram":
        """A histogram back from ``sparse()``."""
        h = cls()
        for i, n in bins.items():
            h.bins[i] = n
        h.count, h.max = count, maximum
        return h


# ------------------------------------------------------------------ frames
CHANNELS = (  # 20 standard channels, as an OBD + GPS car sends them
    "speed", "rpm", "throttle", "engine_load", "coolant_temp", "intake_temp", "fuel_level", "timing_advance",
    "maf", "lat", "lon", "gps_speed", "heading", "altitude", "gps_fix", "satellites", "hdop",
    "battery_voltage", "oil_temp", "gear",
)


def make_frame(seq: int, rng: random.Random) -> dict[str, Any]:
    """One frame of 20 channels, ``t`` = now (the latency reference)."""
    speed = round(rng.uniform(40, 180), 1)
    return {"seq": seq, "t": time.time(), "channels": {
        "speed": speed, "rpm": round(rng.uniform(3000, 9000)), "throttle": round(rng.uniform(0, 100), 1),
        "engine_load": round(rng.uniform(10, 90), 1), "coolant_temp": 92.0, "intake_temp": 31.0,
        "fuel_level": 63.5, "timing_advance": 12.5, "maf": round(rng.uniform(5, 60), 2),
        "lat": round(28.4125 + rng.uniform(-1e-3, 1e-3), 7), "lon": round(-81.3792 + rng.uniform(-1e-3, 1e-3), 7),
        "gps_speed": speed, "heading": round(rng.uniform(0, 360), 1), "altitude": 31.2, "gps_fix": 1,
        "satellites": 11, "hdop": 0.8, "battery_voltage": 13.8, "oil_temp": 104.0, "gear": 4}}


def _cpu_seconds() -> float:
    import psutil

    t = psutil.Process().cpu_times()
    return t.user + t.system


# ------------------------------------------------------------------ clients
try:
    import orjson

    loads, _dumps = orjson.loads, orjson.dumps

    def dumps(value: Any) -> str:
        return _dumps(value).decode()
except ImportError:  # pragma: no cover - orjson only makes the generator lighter
    import json

    loads = json.loads

    def dumps(value: Any) -> str:
        return json.dumps(value, separators=(",", ":"))


class LeanClient:
    """A minimal Socket.IO client (protocol 5 over Engine.IO 4, websocket transport, one namespace).

    Speaks exactly what socket.io-client in a browser sends and reads on the wire,
    without python-socketio's layers (a task and three decodes per message): at
    tens of thousands of messages a second on 2 cores, those would make the
    generator, not the server, the bottleneck. ``--client socketio`` uses
    python-socketio's AsyncClient instead, for a cross-check.
    """

    def __init__(self, http: Any, url: str, namespace: str, on_event: Any = None) -> None:
        self.http, self.namespace, self.on_event = http, namespace, on_event
        self.ws_url = url.replace("http", "ws", 1) + "/socket.io/?EIO=4&transport=websocket"
        self.ws: Any = None
        self._event_prefix = f"42{namespace},"
        self._ack_prefix = f"43{namespace},"
        self._connected: asyncio.Future | None = None
        self._acks: dict[int, asyncio.Future] = {}
        self._next_id = 0
        self._reader: asyncio.Task | None = None

    @property
    def compressed(self) -> bool:
        """Whether the server accepted permessage-deflate."""
        return bool(self.ws is not None and self.ws.compress)

    async def connect(self, auth: dict[str, Any] | None, compress: bool) -> None:
        """Open the websocket and the namespace (with ``auth``); raise if refused."""
        self.ws = await self.http.ws_connect(self.ws_url, compress=15 if compress else 0, max_msg_size=0)
        opening = await self.ws.receive_str()
        if not opening.startswith("0"):
            raise ConnectionError(f"no Engine.IO open packet: {opening[:80]!r}")
        self._connected = asyncio.get_running_loop().create_future()
        self._reader = asyncio.ensure_future(self._read())
        await self.ws.send_str(f"40{self.namespace}," + (dumps(auth) if auth else ""))
        await asyncio.wait_for(self._connected, CALL_TIMEOUT_S)

    async def call(self, event: str, data: Any, timeout: float = CALL_TIMEOUT_S) -> Any:
        """Emit ``event`` with an ack id and return the ack's first argument."""
        self._next_id += 1
        ack_id = self._next_id
        future = asyncio.get_running_loop().create_future()
        self._acks[ack_id] = future
        await self.ws.send_str(f"42{self.namespace},{ack_id}" + dumps([event, data]))
        try:
            return await asyncio.wait_for(future, timeout)
        finally:
            self._acks.pop(ack_id, None)

    async def close(self) -> None:
        """Close the websocket."""
        if self.ws is not None:
            await self.ws.close()
        if self._reader is not None:
            self._reader.cancel()

    async def _read(self) -> None:
        ws, event_prefix, ack_prefix = self.ws, self._event_prefix, self._ack_prefix
        n_event, n_ack = len(event_prefix), len(ack_prefix)
        while True:
            msg = await ws.receive()
            if msg.type != 1:  # aiohttp.WSMsgType.TEXT; anything else is the end (close, error)
                break
            text = msg.data
            if text.startswith(event_prefix):
                if self.on_event is not None:
                    self.on_event(loads(text[n_event:]))
            elif text == "2":  # Engine.IO ping
                await ws.send_str("3")
            elif text.startswith(ack_prefix):
                body = text[n_ack:]
                i = 0
                while body[i].isdigit():
                    i += 1
                future = self._acks.get(int(body[:i]))
                if future is not None and not future.done():
                    future.set_result(loads(body[i:])[0])
            elif text.startswith(f"40{self.namespace}"):
                if not self._connected.done():
                    self._connected.set_result(True)
            elif text.startswith(f"44{self.namespace}"):
                if not self._connected.done():
                    self._connected.set_exception(ConnectionRefusedError(text))
        for future in [self._connected, *self._acks.values()]:
            if future is not None and not future.done():
                future.set_exception(ConnectionError("connection closed"))


class SocketIOClient:
    """The same interface on python-socketio's AsyncClient (``--client socketio``)."""

    def __init__(self, http: Any, url: str, namespace: str, on_event: Any = None) -> None:
        import socketio

        self.url, self.namespace, self.on_event = url, namespace, on_event
        self.sio: Any = None
        self._socketio = socketio

    @property
    def compressed(self) -> bool:
        ws = getattr(self.sio.eio, "ws", None) if self.sio else None
        return bool(ws is not None and ws.compress)

    async def connect(self, auth: dict[str, Any] | None, compress: bool) -> None:
        self.sio = self._socketio.AsyncClient(reconnection=False,
                                              websocket_extra_options={"compress": 15} if compress else {})
        if self.on_event is not None:
            handler = self.on_event
            self.sio.on("*", lambda event, data: handler([event, data]), namespace=self.namespace)
        await self.sio.connect(self.url, namespaces=[self.namespace], transports=["websocket"], auth=auth,
                               wait_timeout=CALL_TIMEOUT_S)

    async def call(self, event: str, data: Any, timeout: float = CALL_TIMEOUT_S) -> Any:
        return await self.sio.call(event, data, namespace=self.namespace, timeout=timeout)

    async def close(self) -> None:
        await self.sio.disconnect()


CLIENTS = {"lean": LeanClient, "socketio": SocketIOClient}


def _http_session() -> Any:
    import aiohttp

    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))


# ------------------------------------------------------------------ monitors
async def _monitor(http: Any, client_kind: str, url: str, car_id: str, api_key: str, rate_hz: float | None,
                   batch: int, duration_s: float, started: asyncio.Future, sessions_out: dict[str, str]
                   ) -> dict[str, Any]:
    client = CLIENTS[client_kind](http, url, MONITOR_NS)
    await client.connect({"car_id": car_id, "api_key": api_key}, compress=False)
    ack = await client.call("session.start", {"name": f"bench {car_id}"})
    if not ack.get("ok"):
        raise RuntimeError(f"session.start refused: {ack}")
    session_id = ack["session"]["session_id"]
    sessions_out[car_id] = session_id
    start_at = await started  # the orchestrator's go, the same instant for every monitor of the process
    end_at = start_at + duration_s
    rng = random.Random(car_id)
    queue: deque[dict[str, Any]] = deque()
    more = asyncio.Event()
    stats = {"car_id": car_id, "session_id": session_id, "sent": 0, "acked": 0, "rejected": 0, "errors": 0,
             "emits": 0, "ack_hist": Histogram()}

    async def sample() -> None:
        seq, period, next_at = 0, 1.0 / rate_hz, start_at
        while next_at < end_at:
            delay = next_at - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            queue.append(make_frame(seq, rng))
            seq += 1
            next_at += period
            more.set()

    sampler = asyncio.ensure_future(sample()) if rate_hz else None
    seq = 0
    while True:
        if sampler is not None:  # at a rate: send whatever queued up while the last ack was awaited
            if not queue:
                if sampler.done():
                    break
                more.clear()
                await more.wait()
                continue
            frames = [queue.popleft() for _ in range(min(batch, len(queue)))]
        else:  # as fast as acks allow
            if time.time() >= end_at:
                break
            frames = [make_frame(seq + i, rng) for i in range(batch)]
            seq += batch
        sent_at = time.perf_counter()
        try:
            ack = await client.call("telemetry", {"session_id": session_id, "frames": frames})
        except Exception:  # noqa: BLE001 - a timeout counts as lost frames, the run goes on
            stats["errors"] += 1
            continue
        stats["ack_hist"].add(time.perf_counter() - sent_at)
        stats["emits"] += 1
        stats["sent"] += len(frames)
        if ack.get("ok"):
            rejected = len(ack.get("rejected") or ())
            stats["rejected"] += rejected
            stats["acked"] += len(frames) - rejected
        else:
            stats["errors"] += 1
    stats["finished_at"] = time.time()
    await client.close()
    return stats


def monitor_process(url: str, api_key: str, car_ids: list[str], rate_hz: float | None, batch: int,
                    duration_s: float, client_kind: str, go: Any, out: Any) -> None:
    """Entry point: run these cars' monitors; report session ids, then results, on ``out``."""
    async def main() -> None:
        loop = asyncio.get_running_loop()
        started: asyncio.Future = loop.create_future()
        sessions: dict[str, str] = {}
        async with _http_session() as http:
            tasks = [asyncio.ensure_future(_monitor(http, client_kind, url, car, api_key, rate_hz, batch, duration_s,
                                                    started, sessions)) for car in car_ids]
            while len(sessions) < len(car_ids):
                for t in tasks:
                    if t.done() and t.exception():
                        raise t.exception()
                await asyncio.sleep(0.05)
            out.put(("sessions", sessions))
            await loop.run_in_executor(None, go.wait)
            cpu0, wall0 = _cpu_seconds(), time.time()
            started.set_result(wall0)
            results = await asyncio.gather(*tasks)
            cpu = _cpu_seconds() - cpu0
        wall = max(r["finished_at"] for r in results) - wall0
        for r in results:
            h = r.pop("ack_hist")
            r["ack_hist"] = (h.sparse(), h.count, h.max)
        out.put(("monitors", {"cars": results, "cpu_s": cpu, "wall_s": wall}))

    try:
        asyncio.run(main())
    except BaseException as exc:  # noqa: BLE001 - tell the orchestrator instead of hanging it
        out.put(("error", f"monitor process: {exc!r}"))
        raise


# ------------------------------------------------------------------ viewers
class _ViewerTally:
    """What one viewer saw."""

    __slots__ = ("last_seq", "received", "duplicates", "out_of_order", "messages")

    def __init__(self) -> None:
        self.last_seq = -1
        self.messages = 0  # telemetry messages: frames arrive coalesced, several per message
        self.received = 0
        self.duplicates = 0
        self.out_of_order = 0


def viewer_process(url: str, session_ids: list[str], compress: bool, client_kind: str, stop: Any, counter: Any,
                   out: Any) -> None:
    """Entry point: one viewer per entry of ``session_ids``; report readiness, then results, on ``out``."""
    hist = Histogram()
    tallies = [_ViewerTally() for _ in session_ids]
    clients: list[Any] = []
    negotiated = {"offered": compress, "accepted": 0, "declined": 0}
    worst: dict[int, float] = {}  # epoch second of receipt -> worst latency in it (stalls show up here)

    def handler(tally: _ViewerTally) -> Any:
        now, add = time.time, hist.add

        def on_event(packet: list[Any]) -> None:
            if packet[0] != "telemetry":
                return
            received_at = now()
            second = int(received_at)
            tally.messages += 1
            for frame in packet[1]["frames"]:
                latency = received_at - frame["t"]
                add(latency)
                if latency > worst.get(second, 0.0):
                    worst[second] = latency
                seq = frame["seq"]
                if seq > tally.last_seq:
                    tally.last_seq = seq
                    tally.received += 1
                elif seq == tally.last_seq:
                    tally.duplicates += 1
                else:
                    tally.out_of_order += 1
                    tally.received += 1

        return on_event

    async def open_one(http: Any, session_id: str, tally: _ViewerTally, gate: asyncio.Semaphore) -> bool:
        client = CLIENTS[client_kind](http, url, DASHBOARD_NS, handler(tally))
        async with gate:
            try:
                await client.connect(None, compress)
                ack = await client.call("join", {"session_id": session_id})
            except Exception:  # noqa: BLE001 - counted, reported as failed viewers
                return False
        negotiated["accepted" if client.compressed else "declined"] += 1
        clients.append(client)
        return bool(ack.get("ok"))

    async def main() -> None:
        loop = asyncio.get_running_loop()
        gate = asyncio.Semaphore(CONNECT_PARALLEL)
        async with _http_session() as http:
            pairs = zip(session_ids, tallies, strict=True)
            joined = await asyncio.gather(*(open_one(http, s, t, gate) for s, t in pairs))
            out.put(("viewers", {"joined": sum(joined), "failed": len(joined) - sum(joined), **negotiated}))
            cpu0 = _cpu_seconds()
            stopping = loop.run_in_executor(None, stop.wait)
            while not stopping.done():
                counter.value = sum(t.received for t in tallies)
                await asyncio.sleep(REPORT_EVERY_S)
            counter.value = sum(t.received for t in tallies)
            cpu = _cpu_seconds() - cpu0
            out.put(("viewers_done", {
                "received": sum(t.received for t in tallies), "duplicates": sum(t.duplicates for t in tallies),
                "messages": sum(t.messages for t in tallies),
                "out_of_order": sum(t.out_of_order for t in tallies),
                "hist": (hist.sparse(), hist.count, hist.max), "cpu_s": cpu, "worst_by_second": worst}))
            await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)

    try:
        asyncio.run(main())
    except BaseException as exc:  # noqa: BLE001
        out.put(("error", f"viewer process: {exc!r}"))
        raise
