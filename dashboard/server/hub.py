"""The Socket.IO hub: ``/monitor`` for in-car monitors, ``/dashboard`` for viewers, and the broadcaster.

Handlers here only translate between messages and the SessionManager; the
lifecycle rules live there. The server runs with ``async_handlers=False``,
so each connection's events are handled in order, one at a time: a monitor's
batches are validated, broadcast, written and acknowledged in the order sent.
"""
from __future__ import annotations

import hmac
import logging
import threading
import time
from typing import Any, Callable

from flask import request
from flask_socketio import Namespace, SocketIO, join_room, leave_room
from pydantic import BaseModel, ValidationError

from dashboard import schemas
from dashboard.config import Settings
from dashboard.errors import DashboardError, InvalidInput, MalformedRequest, Unauthorized
from dashboard.server.coalesce import Coalescer, Pending
from dashboard.server.metrics import Metrics
from dashboard.server.sessions import SessionManager

log = logging.getLogger(__name__)

MONITOR_NS = "/monitor"
DASHBOARD_NS = "/dashboard"
COMMIT_TIMEOUT_S = 30.0  # a batch not committed by then is nacked; the monitor resends it


def car_room(car_id: str) -> str:
    """The /monitor room of every monitor connection of one car."""
    return f"car:{car_id}"


def error_ack(error: DashboardError) -> dict[str, Any]:
    """An ack carrying an error."""
    return {"ok": False, "error": error.to_dict()}


def parse(model: type[BaseModel], data: Any) -> Any:
    """A message as ``model``, or InvalidInput naming the field."""
    if not isinstance(data, dict):
        raise MalformedRequest("message must be a JSON object", field="data")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise InvalidInput(err["msg"], field=".".join(str(p) for p in err["loc"]) or None) from None


class _AckingNamespace(Namespace):
    """Maps dotted event names to ``on_`` methods and turns every failure into an error ack.

    Events named in ``direct_events`` are the per-frame hot path: their handlers take the
    connection's sid as first argument and run without Flask's request context, which
    Flask-SocketIO builds per event (URL matching included: ~8% of the server's time in
    ``python -m bench.run --scenario 2``). They must not use ``flask.request`` or the
    context-bound helpers (``emit``, ``join_room``).
    """

    direct_events: frozenset[str] = frozenset()

    def trigger_event(self, event: str, *args: Any) -> Any:
        if event in ("connect", "disconnect"):
            return super().trigger_event(event, *args)
        handler: Callable[..., Any] | None = getattr(self, "on_" + event.replace(".", "_"), None)
        if handler is None:
            return error_ack(InvalidInput(f"unknown event {event!r}", field="event"))
        try:
            if event in self.direct_events:
                return handler(*args)
            return self.socketio._handle_event(handler, event, self.namespace, *args)
        except DashboardError as exc:
            return error_ack(exc)
        except TypeError:
            return error_ack(MalformedRequest("wrong number of arguments", field="data"))
        except Exception:  # noqa: BLE001 - one bad message must not take the connection down
            log.exception("handler for %s%s failed", self.namespace, event)
            return error_ack(DashboardError("internal server error"))


class MonitorNamespace(_AckingNamespace):
    """In-car monitors: session start/end, telemetry batches, heartbeats."""

    direct_events = frozenset({"telemetry", "heartbeat"})

    def __init__(self, hub: "Hub") -> None:
        super().__init__(MONITOR_NS)
        self.hub = hub
        self.cars: dict[str, str] = {}  # sid -> car_id
        self.sessions: dict[str, str] = {}  # sid -> session id it streams to

    def on_connect(self, auth: Any = None) -> None:
        try:
            creds = parse(schemas.MonitorAuth, auth or {})
        except DashboardError as exc:
            raise ConnectionRefusedError({"code": exc.code, "message": exc.message, "field": exc.field}) from None
        expected = self.hub.settings.api_key
        if expected and not hmac.compare_digest((creds.api_key or "").encode(), expected.encode()):
            log.warning("monitor for car %s refused: wrong api key", creds.car_id)
            raise ConnectionRefusedError(Unauthorized("wrong api_key", field="api_key").to_dict())
        self.cars[request.sid] = creds.car_id
        join_room(car_room(creds.car_id))
        self.hub.metrics.monitors.inc()
        log.info("monitor connected for car %s", creds.car_id)

    def on_disconnect(self, reason: Any = None) -> None:
        car = self.cars.pop(request.sid, None)
        session_id = self.sessions.pop(request.sid, None)
        if car is None:
            return
        self.hub.metrics.monitors.dec()
        log.info("monitor for car %s disconnected (%s)", car, reason)
        if session_id and session_id not in self.sessions.values():
            try:
                self.hub.manager.set_monitor(session_id, False)
            except DashboardError:
                pass

    def _attach(self, session_id: str, conn: str) -> None:
        """Connection ``conn`` now streams to ``session_id``: the session's monitor is online."""
        self.sessions[conn] = session_id
        self.hub.manager.set_monitor(session_id, True)

    def _own(self, session_id: str, conn: str | None = None) -> None:
        """The session exists and is this car's (cheap: no session document is built on the ingest path).

        ``conn`` is the connection's sid; by default the one of the request being handled.
        """
        conn = conn or request.sid
        sid, car_id = self.hub.manager.session_owner(session_id)
        if car_id not in (None, self.cars.get(conn)):
            raise Unauthorized("that session belongs to another car", field="session_id")
        if self.sessions.get(conn) != sid:
            self._attach(sid, conn)

    def on_session_start(self, data: Any = None) -> dict[str, Any]:
        msg = parse(schemas.MonitorSessionStart, data or {})
        session = self.hub.manager.start_for_car(
            self.cars[request.sid], msg.record_id, msg.session_id, msg.name, msg.driver, msg.track)
        self._attach(session["session_id"], request.sid)
        return {"ok": True, "session": self.hub.manager.session(session["session_id"])}

    def on_telemetry(self, conn: str, data: Any = None) -> dict[str, Any]:
        msg = parse(schemas.TelemetryBatch, data)
        limit = self.hub.settings.max_frames_per_batch
        if len(msg.frames) > limit:
            raise InvalidInput(f"at most {limit} frames per batch", field="frames")
        self._own(msg.session_id, conn)
        result = self.hub.manager.ingest(msg.session_id, msg.frames, msg.backfill)
        if result.accepted:
            self.hub.send_due()  # before waiting for the commit: viewers do not wait for the database
        metrics = self.hub.metrics
        metrics.frames_received.inc(len(result.accepted))
        metrics.frames_rejected.inc(len(result.rejected))
        metrics.frames_duplicate.inc(result.duplicates)
        if msg.backfill:
            metrics.frames_backfilled.inc(len(result.accepted))
        if result.ticket is not None and not result.ticket.wait(COMMIT_TIMEOUT_S):
            raise DashboardError("frames could not be stored; send them again")
        return {"ok": True, "acked_seq": result.acked_seq, "rejected": result.rejected}

    def on_heartbeat(self, conn: str, data: Any = None) -> dict[str, Any]:
        msg = parse(schemas.MonitorHeartbeat, data)
        self._own(msg.session_id, conn)
        info = {"backlog": msg.backlog, "rtt_ms": msg.rtt_ms, "sources": msg.sources,
                "oldest_age_s": msg.oldest_age_s, "online": True}
        self.hub.manager.heartbeat(msg.session_id, info)
        return {"ok": True, "server_time": time.time()}

    def on_event(self, data: Any = None) -> dict[str, Any]:
        """An event the car noticed (trouble code set/cleared, outbox overflow...); idempotent by record_id."""
        msg = parse(schemas.MonitorEvent, data)
        self._own(msg.session_id)
        logged = self.hub.manager.monitor_event(msg.session_id, msg.record_id, msg.event_type, msg.payload)
        return {"ok": True, "duplicate": not logged}

    def on_lora(self, data: Any = None) -> dict[str, Any]:
        """A pit gateway relays a summary received over the LoRa radio."""
        msg = parse(schemas.LoraMessage, data)
        out = self.hub.manager.merge_lora(msg.car_id, msg.car_hash, msg.session_prefix, msg.frame,
                                          msg.received_at, msg.status)
        return {"ok": True, "session_id": out["session_id"]}

    def on_session_end(self, data: Any = None) -> dict[str, Any]:
        msg = parse(schemas.MonitorSessionEnd, data)
        self._own(msg.session_id)
        return {"ok": True, "session": self.hub.manager.end(msg.session_id, msg.record_id)}


class DashboardNamespace(_AckingNamespace):
    """Viewers: join a session's room, get a snapshot, then live events."""

    def __init__(self, hub: "Hub") -> None:
        super().__init__(DASHBOARD_NS)
        self.hub = hub

    def on_connect(self, auth: Any = None) -> None:
        token = self.hub.settings.viewer_token
        if token:
            given = auth.get("token") if isinstance(auth, dict) else None
            if not isinstance(given, str) or not hmac.compare_digest(given.encode(), token.encode()):
                raise ConnectionRefusedError(Unauthorized("wrong viewer token", field="token").to_dict())
        self.hub.metrics.viewers.inc()

    def on_disconnect(self, reason: Any = None) -> None:
        self.hub.metrics.viewers.dec()

    def on_join(self, data: Any = None) -> dict[str, Any]:
        msg = parse(schemas.Join, data)
        return {"ok": True, "snapshot": self.hub.join(msg.session_id)}

    def on_leave(self, data: Any = None) -> dict[str, Any]:
        msg = parse(schemas.Join, data)
        leave_room(msg.session_id)
        return {"ok": True}


class Hub:
    """Binds the namespaces to the SocketIO server and relays SessionManager changes to the rooms."""

    def __init__(self, socketio: SocketIO, manager: SessionManager, settings: Settings, metrics: Metrics) -> None:
        self.socketio = socketio
        self.manager = manager
        self.settings = settings
        self.metrics = metrics
        self._coalescer = Coalescer(settings.broadcast_interval_s)
        self._lock = threading.Lock()
        self._emit_lock = threading.Lock()  # taking due frames and emitting them is one step: rooms stay in order
        self._wake = threading.Event()  # a room became due sooner than the broadcaster planned
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        socketio.on_namespace(MonitorNamespace(self))
        socketio.on_namespace(DashboardNamespace(self))
        manager.listeners.append(self.on_change)

    def start(self) -> None:
        """Start the broadcaster and the idle-expiry loop (safe to call twice)."""
        if self._threads:
            return
        for target, name in ((self._broadcast_loop, "broadcaster"), (self._expiry_loop, "expiry")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """Flush pending frames and stop the loops."""
        self._stop.set()
        self._wake.set()
        self.flush()

    def on_change(self, kind: str, payload: dict[str, Any]) -> None:
        """SessionManager listener: frames are coalesced, everything else goes out at once."""
        if kind == "frames":
            with self._lock:
                sooner = self._coalescer.add(payload["session_id"], payload["frames"], time.perf_counter())
            if self.settings.broadcast_interval_s <= 0:
                self.flush()
            elif sooner:
                self._wake.set()
        elif kind == "command":
            self.socketio.emit("command", {"action": payload["action"], "session_id": payload["session_id"]},
                               to=car_room(payload["car_id"]), namespace=MONITOR_NS)
        elif kind == "session":
            self.socketio.emit("session", payload, to=payload["session_id"], namespace=DASHBOARD_NS)
            self.socketio.emit("sessions", payload, namespace=DASHBOARD_NS)
        elif kind in ("setup", "event", "monitor", "lora", "lap", "sector", "timing", "laps", "alert"):
            self.socketio.emit(kind, payload, to=payload["session_id"], namespace=DASHBOARD_NS)

    def join(self, session_id: str) -> dict[str, Any]:
        """Put the caller in the session's room and return its snapshot, atomically.

        Frames still waiting for the next flush are left out of the snapshot's
        ``recent``: the flush delivers them, so no frame reaches a viewer twice.
        """
        with self.manager.lock, self._lock:
            snapshot = self.manager.snapshot(session_id)
            sid = snapshot["session"]["session_id"]
            waiting = self._coalescer.waiting_seqs(sid)
            if waiting:
                snapshot["recent"] = [f for f in snapshot["recent"] if f["seq"] not in waiting]
            join_room(sid)
        return snapshot

    def flush(self) -> None:
        """Emit every room's pending frames now."""
        self._send(self._coalescer.take_all)

    def send_due(self) -> None:
        """Emit the rooms whose frames are due.

        The monitor's handler calls this right after ingest, so a frame that finds its room's token
        leaves at once instead of waiting for the broadcaster's turn on the loop (measured with
        ``python -m bench.run --scenario 2``, where 20 cars' events arrive together: the broadcaster
        ran only after all of them).
        """
        self._send(self._coalescer.take_due)

    def _send(self, take: Callable[[float], dict[str, Pending]]) -> None:
        """Take rooms from the Coalescer and emit them, as one step: each room's messages stay in order."""
        with self._emit_lock:
            with self._lock:
                rooms = take(time.perf_counter())
            self._emit_frames(rooms)

    def _emit_frames(self, rooms: dict[str, Pending]) -> None:
        """One ``telemetry`` message per room, its frames in seq order."""
        for session_id, pending in rooms.items():
            frames = sorted(pending.frames, key=lambda f: f["seq"])
            out = [{"seq": f["seq"], "t": f["t"], "channels": f["channels"]} for f in frames]
            self.socketio.emit("telemetry", {"session_id": session_id, "frames": out},
                               to=session_id, namespace=DASHBOARD_NS)
            self.metrics.frames_broadcast.inc(len(out))
            self.metrics.broadcast_latency.observe(time.perf_counter() - pending.since)

    def _broadcast_loop(self) -> None:
        """Send each room's frames when the Coalescer says they are due; sleep until the next is."""
        idle_s = self.settings.broadcast_interval_s or 0.05
        while not self._stop.is_set():
            self._wake.clear()
            with self._lock:
                due = self._coalescer.next_due()
            now = time.perf_counter()
            if due is None or due > now:
                self._wake.wait(idle_s if due is None else due - now)
                continue
            try:
                self.send_due()
            except Exception:  # noqa: BLE001 - the broadcaster must outlive one bad emit
                log.exception("broadcast failed")

    def _expiry_loop(self) -> None:
        while not self._stop.wait(self.settings.expiry_check_s):
            try:
                for session_id in self.manager.expire_idle():
                    log.info("session %s expired after %.0f s idle", session_id, self.settings.session_idle_s)
                self.manager.tick_alerts()
            except Exception:  # noqa: BLE001
                log.exception("expiry check failed")
