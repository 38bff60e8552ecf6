"""The Socket.IO hub: ``/monitor`` for in-car monitors, ``/dashboard`` for viewers, and the broadcaster.

Handlers here only translate between messages and the services of the core
(``dashboard/server/core.py``); the rules live there. The server runs with ``async_handlers=False``,
so each connection's events are handled in order, one at a time: a monitor's
batches are validated, broadcast, written and acknowledged in the order sent.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

from flask import request
from flask_socketio import ConnectionRefusedError, Namespace, SocketIO, join_room, leave_room
from pydantic import BaseModel, ValidationError

from dashboard import schemas
from dashboard.config import Settings
from dashboard.errors import (
    DashboardError,
    Forbidden,
    InvalidInput,
    MalformedRequest,
    PayloadTooLarge,
    TooManyRequests,
    Unauthorized,
    Unavailable,
)
from dashboard.server.access import CAR, LORA, READ, WRITE, Principal
from dashboard.server.changes import Change
from dashboard.server.coalesce import Coalescer, Pending
from dashboard.server.core import Core
from dashboard.server.metrics import Metrics
from dashboard.server.team import team_room
from dashboard.server.throttle import AuthThrottle
from dashboard.server.wirejson import MALFORMED_EVENT
from dashboard.server.writer import RETRY_AFTER_S

log = logging.getLogger(__name__)

MONITOR_NS = "/monitor"
DASHBOARD_NS = "/dashboard"
COMMIT_TIMEOUT_S = 30.0  # a batch not committed by then is nacked; the monitor resends it
LAG_PROBE_S = 0.02  # the lag probe sleeps this long and measures how late it wakes
LAG_WEIGHT = 0.1  # exponential average of the lag over the last ~10 probes (~0.2 s)
MAX_PENDING_ACKS = 64  # message acks awaited from a car's room over the message queue (resends included)
LAG_LOADED_S = 0.005  # the loop is falling behind past this average lag: costly rooms are coalesced
TEAM_FULL_S = 10.0  # every car's whole team row is sent again this often (a viewer's clocks are set again)
# Fields that run with the clock: a change in them alone is not sent (the page advances them from generated_at).
TEAM_CLOCKS = {"link": ("age_s", "lora_age_s"), "stint": ("elapsed_s", "left_s"), "pit": ("running_s",)}
# What changes a car's team row: its session is marked, and its row is sent with the next team.update.
TEAM_CHANGES = frozenset({Change.FRAMES, Change.SESSION, Change.EVENT, Change.MONITOR, Change.LORA, Change.LAP,
                          Change.LAPS, Change.TIMING, Change.ALERT, Change.DELETED})


def car_room(car_id: str) -> str:
    """The /monitor room of every monitor connection of one car."""
    return f"car:{car_id}"


def steady(row: dict[str, Any]) -> dict[str, Any]:
    """A team row without the fields that run with the clock (TEAM_CLOCKS; a limit's used and left time)."""
    out = dict(row)
    for key, clocks in TEAM_CLOCKS.items():
        if isinstance(out.get(key), dict):
            out[key] = {k: v for k, v in out[key].items() if k not in clocks}
    out["limits"] = [{k: v for k, v in limit.items() if k not in ("used_s", "left_s")} for limit in row["limits"]]
    return out


def refusal(error: DashboardError) -> ConnectionRefusedError:
    """A refused connect; the client's ``connect_error`` gets ``{message, data: {code, message, field?, ...}}``."""
    return ConnectionRefusedError(error.message, error.to_dict())


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
        if event in ("connect", "disconnect"):  # the protocol's own packets only (wirejson.TextPacket)
            return super().trigger_event(event, *args)
        if event == MALFORMED_EVENT:
            return error_ack(MalformedRequest(str(args[-1]) if args else "malformed event", field="data"))
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
    """In-car monitors: session start/end, telemetry batches, heartbeats, car events; pit gateways: lora."""

    direct_events = frozenset({"telemetry", "heartbeat"})

    def __init__(self, hub: "Hub") -> None:
        super().__init__(MONITOR_NS)
        self.hub = hub
        self.core = hub.core
        self.cars: dict[str, str] = {}  # sid -> car_id
        self.sessions: dict[str, str] = {}  # sid -> session id it streams to
        self.principals: dict[str, Principal] = {}  # sid -> who connected: what its events may do
        self.roles: dict[str, str | None] = {}  # sid -> the role it connected as ("mesh-gateway": gets downlinks)

    def on_connect(self, auth: Any = None) -> None:
        """A car's key connects only as its own car id; a gateway's key only relays LoRa; an admin's may do both."""
        car_id = None
        try:
            creds = parse(schemas.MonitorAuth, auth or {})
            car_id = creds.car_id
            principal = self.hub.authenticate(creds.api_key, "api_key")
            if not (principal.may(CAR) or principal.may(LORA)):
                if principal.anonymous:
                    raise Unauthorized("a car's or a pit gateway's key is needed", field="api_key")
                raise Forbidden(f"a {principal.role} key cannot connect to /monitor: cars and pit gateways have "
                                "their own keys", field="api_key")
            if principal.car_id is not None and principal.car_id != creds.car_id:
                raise Forbidden("this car key is for another car id", field="car_id")
        except DashboardError as exc:
            log.warning("monitor connect refused for car %s: %s", car_id, exc.code)
            raise refusal(exc) from None
        self.cars[request.sid] = creds.car_id
        self.principals[request.sid] = principal
        self.roles[request.sid] = creds.role
        if principal.may(CAR):  # commands for this car reach it; a gateway gets none
            join_room(car_room(creds.car_id))
        self.hub.metrics.monitors.inc()
        log.info("monitor connected for car %s (key %s)", creds.car_id, principal.key_id)

    def on_disconnect(self, reason: Any = None) -> None:
        car = self.cars.pop(request.sid, None)
        session_id = self.sessions.pop(request.sid, None)
        self.principals.pop(request.sid, None)
        self.roles.pop(request.sid, None)
        if car is None:
            return
        self.hub.metrics.monitors.dec()
        log.info("monitor for car %s disconnected (%s)", car, reason)
        if session_id and session_id not in self.sessions.values():
            try:
                self.core.monitors.set_online(session_id, False)
            except DashboardError:
                pass

    def _attach(self, session_id: str, conn: str) -> None:
        """Connection ``conn`` streams to ``session_id`` (canonical id): the session's monitor is online."""
        if self.sessions.get(conn) != session_id:
            self.sessions[conn] = session_id
            self.core.monitors.set_online(session_id, True)

    def _car(self, conn: str) -> None:
        """Nothing when the connection may act as its car; Forbidden (a gateway's key) otherwise."""
        principal = self.principals.get(conn)
        if principal is None or not principal.may(CAR):
            raise Forbidden("a gateway key only relays LoRa summaries", field="event")

    def _own(self, session_id: str, conn: str) -> str:
        """The session (canonical id), which must be this connection's car's; attached to the connection."""
        self._car(conn)
        live = self.core.cache.get(session_id, fresh=False)
        if live.row["car_id"] not in (None, self.cars.get(conn)):
            raise Forbidden("that session belongs to another car", field="session_id")
        self._attach(live.id, conn)
        return live.id

    def on_session_start(self, data: Any = None) -> dict[str, Any]:
        self._car(request.sid)
        msg = parse(schemas.MonitorSessionStart, {} if data is None else data)  # no payload: {}; 0, "", [] refused
        track_id = self.core.tracks.resolve(msg.track, msg.track_id)  # a car naming a track means a stored one
        live = self.core.lifecycle.attach_car(self.cars[request.sid], msg.record_id, msg.session_id, msg.name,
                                              msg.driver, msg.track, track_id)
        self._attach(live.id, request.sid)
        answer = {"ok": True, "session": self.core.sessions.describe(live)}
        self.core.messages.car_connected(self.cars[request.sid], live.id)  # what it has not acked is sent again
        return answer

    def on_telemetry(self, conn: str, data: Any = None) -> dict[str, Any]:
        msg = parse(schemas.TelemetryBatch, data)
        limit = self.hub.settings.max_frames_per_batch
        if len(msg.frames) > limit:
            raise PayloadTooLarge(f"at most {limit} frames per batch", field="frames", max_frames=limit)
        session_id = self._own(msg.session_id, conn)
        result = self.core.ingest(session_id, msg.frames, msg.backfill, self.cars.get(conn))
        metrics = self.hub.metrics
        metrics.frames_rejected.inc(len(result.rejected))
        metrics.frames_duplicate.inc(result.duplicates)
        if result.ticket is not None:
            if not result.ticket.wait(COMMIT_TIMEOUT_S):
                error = result.ticket.error
                raise error if isinstance(error, Unavailable) else Unavailable(
                    "frames could not be stored; send them again", retry_after=RETRY_AFTER_S)
            metrics.frames_received.inc(len(result.accepted))
            if msg.backfill:
                metrics.frames_backfilled.inc(len(result.accepted))
        ack: dict[str, Any] = {"ok": True, "acked_seq": result.acked_seq, "rejected": result.rejected}
        if result.session_status != "active":
            ack["session_status"] = result.session_status
        return ack

    def on_heartbeat(self, conn: str, data: Any = None) -> dict[str, Any]:
        msg = parse(schemas.MonitorHeartbeat, data)
        session_id = self._own(msg.session_id, conn)
        info = {"backlog": msg.backlog, "rtt_ms": msg.rtt_ms, "sources": msg.sources,
                "oldest_age_s": msg.oldest_age_s, "online": True}
        self.core.monitors.heartbeat(session_id, info)
        return {"ok": True, "server_time": time.time()}

    def on_event(self, data: Any = None) -> dict[str, Any]:
        """An event the car noticed (trouble code set/cleared, outbox overflow...); idempotent by record_id."""
        msg = parse(schemas.MonitorEvent, data)
        session_id = self._own(msg.session_id, request.sid)
        logged = self.core.monitors.car_event(session_id, msg.record_id, msg.event_type, msg.payload)
        return {"ok": True, "duplicate": not logged}

    def on_lora(self, data: Any = None) -> dict[str, Any]:
        """A pit gateway relays a summary received over the LoRa radio (a gateway's key, or an admin's)."""
        principal = self.principals.get(request.sid)
        if principal is None or not principal.may(LORA):
            raise Forbidden("only a pit gateway's key may relay LoRa summaries", field="event")
        msg = parse(schemas.LoraMessage, data)
        out = self.core.lora.merge(msg.car_id, msg.car_hash, msg.session_prefix, msg.frame, msg.received_at,
                                   msg.status)
        return {"ok": True, "session_id": out["session_id"]}

    def on_lora_report(self, data: Any = None) -> dict[str, Any]:
        """A pit gateway relays a car's message report heard over LoRa; a repeat changes nothing (duplicate)."""
        principal = self.principals.get(request.sid)
        if principal is None or not principal.may(LORA):
            raise Forbidden("only a pit gateway's key may relay LoRa reports", field="event")
        msg = parse(schemas.LoraReport, data)
        return self.core.messages.lora_report(msg.model_dump())

    def on_message_report(self, data: Any = None) -> dict[str, Any]:
        """The driver saw or answered a pit-to-car message; a repeat changes nothing (duplicate)."""
        msg = parse(schemas.MessageReport, data)
        session_id = self._own(msg.session_id, request.sid)
        return self.core.messages.report(session_id, msg.model_dump())

    def on_session_end(self, data: Any = None) -> dict[str, Any]:
        msg = parse(schemas.MonitorSessionEnd, data)
        session_id = self._own(msg.session_id, request.sid)
        return {"ok": True, "session": self.core.lifecycle.apply(session_id, "end", msg.record_id)}


class DashboardNamespace(_AckingNamespace):
    """Viewers: join a session's room, get a snapshot, then live events."""

    def __init__(self, hub: "Hub") -> None:
        super().__init__(DASHBOARD_NS)
        self.hub = hub
        self.principals: dict[str, Principal] = {}  # sid -> who connected (a stored key is checked again)

    def on_connect(self, auth: Any = None) -> None:
        """Viewers give the viewer token, or a key of any role, when the server has a viewer token."""
        given = auth.get("token") if isinstance(auth, dict) else None
        try:
            principal = self.hub.authenticate(given if isinstance(given, str) else None, "token")
            self.hub.core.access.require(principal, READ, "token")
        except DashboardError as exc:
            raise refusal(exc) from None
        self.principals[request.sid] = principal
        self.hub.metrics.viewers.inc()

    def on_disconnect(self, reason: Any = None) -> None:
        self.hub.team_viewers.discard(request.sid)
        if self.principals.pop(request.sid, None) is None:
            return
        self.hub.metrics.viewers.dec()

    def on_team_join(self, data: Any = None) -> dict[str, Any]:
        """Join the team's room: the team view now, then ``team.update`` with the cars that changed."""
        msg = parse(schemas.TeamJoin, data)
        join_room(team_room(msg.team))
        self.hub.team_viewers.add(request.sid)
        return {"ok": True, "snapshot": self.hub.core.team.team_snapshot()}

    def on_driver_change(self, data: Any = None) -> dict[str, Any]:
        """A driver got in, told from the pit wall's page: needs a key that may make changes (engineer, admin)."""
        msg = parse(schemas.DriverChangeMessage, data)  # the connection reads: a bad message is said first
        principal = self.principals.get(request.sid)
        if principal is None:
            raise Unauthorized("this connection is not authenticated", field="token")
        self.hub.core.access.require(principal, WRITE, "token")
        return {"ok": True, "change": self.hub.core.team.driver_change(msg.session_id, msg.driver_id, msg.at)}

    def _writer(self) -> Principal:
        principal = self.principals.get(request.sid)
        if principal is None:
            raise Unauthorized("this connection is not authenticated", field="token")
        self.hub.core.access.require(principal, WRITE, "token")
        return principal

    def on_message_send(self, data: Any = None) -> dict[str, Any]:
        """A message to a session's car from the pit's page: needs a key that may make changes."""
        msg = parse(schemas.MessageSend, data)
        principal = self._writer()
        body = msg.model_dump(exclude={"session_id"})
        return {"ok": True, "message": self.hub.core.messages.send(msg.session_id, body, principal.key_id)}

    def on_message_cancel(self, data: Any = None) -> dict[str, Any]:
        """Take a message back from the pit's page."""
        msg = parse(schemas.MessageCancel, data)
        principal = self._writer()
        return {"ok": True, "message": self.hub.core.messages.cancel(msg.session_id, msg.message_id,
                                                                     principal.key_id)}

    def on_team_leave(self, data: Any = None) -> dict[str, Any]:
        msg = parse(schemas.TeamJoin, data)
        leave_room(team_room(msg.team))
        self.hub.team_viewers.discard(request.sid)
        return {"ok": True}

    def on_join(self, data: Any = None) -> dict[str, Any]:
        msg = parse(schemas.Join, data)
        return {"ok": True, "snapshot": self.hub.join(msg.session_id)}

    def on_leave(self, data: Any = None) -> dict[str, Any]:
        msg = parse(schemas.Join, data)
        leave_room(msg.session_id)
        return {"ok": True}


class Hub:
    """Binds the namespaces to the SocketIO server and sends what the services tell to the rooms."""

    def __init__(self, socketio: SocketIO, core: Core, settings: Settings, metrics: Metrics,
                 throttle: AuthThrottle | None = None) -> None:
        self.socketio = socketio
        self.core = core
        self.settings = settings
        self.metrics = metrics
        self.throttle = throttle
        self._coalescer = Coalescer(settings.broadcast_interval_s, share=settings.fanout_share)
        self._lock = threading.Lock()
        self._emit_lock = threading.Lock()  # taking due frames and emitting them is one step: rooms stay in order
        self._wake = threading.Event()  # a room became due sooner than the broadcaster planned
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.team_viewers: set[str] = set()  # sids in the team room
        self._team_dirty: set[str] = set()  # sessions whose team row changed since the last team.update
        self._team_lock = threading.Lock()  # the bus may tell from the writer's native thread
        self._team_rows: dict[str, dict[str, Any]] = {}  # session -> its team row as viewers have it
        # How each kind of change goes out: every Change has an entry (tests/server/test_hub_table.py).
        self.routes: dict[Change, Callable[[dict[str, Any]], None]] = {
            Change.FRAMES: self._frames,
            Change.SESSION: self._session,
            Change.DELETED: self._deleted,
            Change.COMMAND: self._command,
            **{kind: self._to_room(kind.value) for kind in (
                Change.SETUP, Change.EVENT, Change.MONITOR, Change.LORA, Change.LAP, Change.SECTOR, Change.TIMING,
                Change.LAPS, Change.ALERT)},
            Change.MESSAGE: self._message,
        }
        self.monitor_ns = MonitorNamespace(self)
        self.dashboard_ns = DashboardNamespace(self)
        socketio.on_namespace(self.monitor_ns)
        socketio.on_namespace(self.dashboard_ns)
        core.bus.listeners.append(self.on_change)
        core.messages.deliver = self.deliver_message
        core.messages.hand_down = self.hand_down
        core.messages.main_link_up = self.main_link_up

    def authenticate(self, credential: str | None, field: str) -> Principal:
        """Who a connect acts as. A presented credential that is refused counts against the address; an address
        past its failures is refused outright (dashboard/server/throttle.py)."""
        address = request.remote_addr or "unknown"
        if credential and self.throttle is not None:
            retry_after = self.throttle.retry_after(address)
            if retry_after is not None:
                raise TooManyRequests("too many failed authentications from this address: wait before trying "
                                      "again", field=field, retry_after=retry_after)
        try:
            return self.core.access.resolve(credential, field)
        except Unauthorized:
            if self.throttle is not None:
                self.throttle.failed(address)
            raise

    def drop_revoked(self) -> None:
        """Disconnect the connections whose stored key was revoked (here at once, elsewhere within the key TTL)."""
        access = self.core.access
        for namespace in (self.monitor_ns, self.dashboard_ns):
            for sid, principal in list(namespace.principals.items()):
                if not access.still_valid(principal):
                    log.info("key %s revoked: its %s connection is closed", principal.key_id, namespace.namespace)
                    self.socketio.server.disconnect(sid, namespace=namespace.namespace)

    def start(self) -> None:
        """Start the broadcaster and the housekeeping loop (safe to call twice)."""
        if self._threads:
            return
        server = self.socketio.server
        if not server.manager_initialized:  # python-socketio does it at the first connection: with a message queue
            server.manager_initialized = True  # a process no client had reached yet did not listen, so an ack
            server.manager.initialize()  # returned to it through the queue (a pit-to-car message's) was lost
        for target, name in ((self._broadcast_loop, "broadcaster"), (self._housekeeping_loop, "housekeeping"),
                             (self._lag_loop, "loop-lag"), (self._team_loop, "team")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """Flush pending frames and stop the loops."""
        self._stop.set()
        self._wake.set()
        self.flush()

    def on_change(self, kind: Change, payload: dict[str, Any]) -> None:
        """Bus listener: frames are coalesced, everything else goes out at once; the team view is marked."""
        if self.team_viewers and kind in TEAM_CHANGES:
            session_id = payload.get("session_id")
            if session_id:
                with self._team_lock:
                    self._team_dirty.add(session_id)
        self.routes[kind](payload)

    def _frames(self, payload: dict[str, Any]) -> None:
        """Stored frames: sent now if their room may be sent to now, else when the Coalescer says (broadcaster)."""
        now = time.perf_counter()
        with self._lock:
            sooner = self._coalescer.add(payload["session_id"], payload["frames"], now)
            due = self._coalescer.next_due()
        if self.settings.broadcast_interval_s <= 0:
            self.flush()
        elif due is not None and due <= now:
            self.send_due()  # as they are published: no wait for the broadcaster's turn, no switch to it
        elif sooner:
            self._wake.set()

    def _session(self, payload: dict[str, Any]) -> None:
        self.socketio.emit("session", payload, to=payload["session_id"], namespace=DASHBOARD_NS)
        self.socketio.emit("sessions", payload, namespace=DASHBOARD_NS)

    def _deleted(self, payload: dict[str, Any]) -> None:
        """To every viewer: the session's own viewers and the sessions lists."""
        with self._lock:
            self._coalescer.forget(payload["session_id"])
        self.socketio.emit("deleted", payload, namespace=DASHBOARD_NS)

    def _command(self, payload: dict[str, Any]) -> None:
        self.socketio.emit("command", {"action": payload["action"], "session_id": payload["session_id"]},
                           to=car_room(payload["car_id"]), namespace=MONITOR_NS)

    def _message(self, payload: dict[str, Any]) -> None:
        """A message's state to the session's viewers and the team's (once to a viewer in both rooms)."""
        self.socketio.emit("message", payload, to=[payload["session_id"], team_room()], namespace=DASHBOARD_NS)

    def deliver_message(self, car_id: str, payload: dict[str, Any], on_ack: Callable[..., None]) -> bool:
        """Emit a pit-to-car ``message`` to every connection of the car (not a gateway's), each with an ack.

        True when the car has a connection to this process. With a message queue the car may be connected to
        another process: the message goes to the car's room through the queue (a car's key joins it, a
        gateway's does not), and the first ack comes back to this process (python-socketio's cross-host
        callback). An ack that never comes leaves its callback behind: at most ``MAX_PENDING_ACKS`` a car.
        """
        sids = self._car_sids(car_id)
        if self.settings.message_queue is None:
            for sid in sids:
                self.socketio.emit("message", payload, to=sid, namespace=MONITOR_NS, callback=on_ack)
            return bool(sids)
        room = car_room(car_id)
        self.socketio.emit("message", payload, to=room, namespace=MONITOR_NS, callback=on_ack)
        waiting = self.socketio.server.manager.callbacks.get(room, {})  # {0: the id counter, id: callback, ...}
        for ack_id in [k for k in waiting if k != 0][:-MAX_PENDING_ACKS]:  # the oldest (dicts keep insertion order)
            del waiting[ack_id]
        return bool(sids)

    def _car_sids(self, car_id: str) -> list[str]:
        ns = self.monitor_ns
        return [sid for sid, car in list(ns.cars.items())
                if car == car_id and (p := ns.principals.get(sid)) is not None and p.may(CAR)
                and ns.roles.get(sid) != "mesh-gateway"]

    def main_link_up(self, car_id: str) -> bool:
        """The car's main link carries its messages: a /monitor connection of the car whose session had a frame
        within ``message_lora_after_s`` (or that has not started streaming yet). Reads memory only."""
        ns, now = self.monitor_ns, self.core.messages.clock()
        for sid in self._car_sids(car_id):
            session_id = ns.sessions.get(sid)
            live = self.core.cache.peek(session_id) if session_id else None
            if live is None or live.last_update is None:
                return True  # connected, not streaming yet: session.start sends its messages
            if now - live.last_update <= self.settings.message_lora_after_s:
                return True
        return False

    def hand_down(self, payload: dict[str, Any], on_ack: Callable[..., None]) -> bool:
        """Emit a ``downlink`` to every pit gateway connection (a gateway key, or one connected as mesh-gateway)."""
        ns = self.monitor_ns
        sids = [sid for sid, p in list(ns.principals.items())
                if p.may(LORA) and (not p.may(CAR) or ns.roles.get(sid) == "mesh-gateway")]
        for sid in sids:
            self.socketio.emit("downlink", payload, to=sid, namespace=MONITOR_NS, callback=on_ack)
        return bool(sids)

    def _to_room(self, event: str) -> Callable[[dict[str, Any]], None]:
        def emit(payload: dict[str, Any]) -> None:
            self.socketio.emit(event, payload, to=payload["session_id"], namespace=DASHBOARD_NS)

        return emit

    def join(self, session_id: str) -> dict[str, Any]:
        """Put the caller in the session's room and return its snapshot, atomically.

        Frames still waiting for the next flush are left out of the snapshot's ``recent``: the flush
        delivers them, so no frame reaches a viewer twice. What needs the database is read first,
        outside the locks.
        """
        core = self.core
        live = core.sessions.require(session_id)
        alerts = core.alerts.on_screen(live)
        stored = None if live.recent_complete else core.cache.recent(live, raw=True)
        with live.lock, self._lock:
            waiting = self._coalescer.waiting_seqs(live.id)
            snapshot = core.sessions.join_snapshot(live, alerts, waiting, stored)
            join_room(live.id)
        return snapshot

    def flush(self) -> None:
        """Emit every room's pending frames now."""
        self._send(self._coalescer.take_all)

    def send_due(self) -> None:
        """Emit the rooms whose frames are due.

        Called as frames are published, so a frame that finds its room's token leaves at once instead of
        waiting for the broadcaster's turn on the loop (measured with ``python -m bench.run --scenario 2``,
        where 20 cars' events arrive together: the broadcaster ran only after all of them).
        """
        self._send(self._coalescer.take_due)

    def _send(self, take: Callable[[float], dict[str, Pending]]) -> None:
        """Take rooms from the Coalescer and emit them, as one step: each room's messages stay in order."""
        with self._emit_lock:
            with self._lock:
                rooms = take(time.perf_counter())
            self._emit_frames(rooms)

    def _emit_frames(self, rooms: dict[str, Pending]) -> None:
        """One ``telemetry`` message per room, its frames in seq order; what each emit cost is recorded."""
        for session_id, pending in rooms.items():
            frames = sorted(pending.frames, key=lambda f: f["seq"])
            out = [{"seq": f["seq"], "t": f["t"], "channels": f["channels"]} for f in frames]
            started = time.perf_counter()
            self.socketio.emit("telemetry", {"session_id": session_id, "frames": out},
                               to=session_id, namespace=DASHBOARD_NS)
            done = time.perf_counter()
            with self._lock:
                self._coalescer.record(session_id, done - started, done)
            self.metrics.frames_broadcast.inc(len(out))
            self.metrics.broadcast_latency.observe(done - pending.since)

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

    def _lag_loop(self) -> None:
        """Measure how late the event loop runs a timer: rooms are coalesced only while it falls behind."""
        lag = 0.0
        while not self._stop.is_set():
            started = time.perf_counter()
            time.sleep(LAG_PROBE_S)
            late = max(0.0, time.perf_counter() - started - LAG_PROBE_S)
            lag += LAG_WEIGHT * (late - lag)
            loaded = lag > (LAG_LOADED_S if not self._coalescer.loaded else LAG_LOADED_S / 2)  # hysteresis
            if loaded != self._coalescer.loaded:
                with self._lock:
                    self._coalescer.loaded = loaded
                log.debug("event loop %s (lag %.1f ms): costly rooms are %s", "behind" if loaded else "keeping up",
                         lag * 1000, "coalesced" if loaded else "sent frame by frame")
            self.metrics.loop_lag.set(lag)

    def send_team_update(self, everything: bool = False) -> dict[str, Any] | None:
        """One ``team.update``: the fields that changed in the rows of the cars marked since the last one
        (``everything``: every car's whole row); None when nothing did.

        However many cars and frames, the team's viewers get at most one message per ``team_interval_s``, and
        a car's row only when something other than its running clocks changed (TEAM_CLOCKS).
        """
        with self._team_lock:
            dirty, self._team_dirty = self._team_dirty, set()
        if not self.team_viewers or not (dirty or everything):
            return None
        snapshot = self.core.team.team_snapshot(None if everything else dirty)
        cars, changes = [], []
        for row in snapshot["cars"]:
            last = self._team_rows.get(row["session_id"])
            self._team_rows[row["session_id"]] = row
            if everything or last is None:
                cars.append(row)
                continue
            now, before = steady(row), steady(last)
            changed = {key: row[key] for key in row if now[key] != before.get(key)}
            if changed:
                changes.append({"session_id": row["session_id"], **changed})
        shown = {car["session_id"] for car in snapshot["cars"]}
        ended = sorted(sid for sid in (set(self._team_rows) if everything else dirty)
                       if sid in self._team_rows and sid not in shown)
        for sid in ended:
            del self._team_rows[sid]
        if not cars and not changes and not ended:
            return None
        update = {"team": snapshot["team"], "generated_at": snapshot["generated_at"],
                  "team_best_lap_s": snapshot["team_best_lap_s"], "cars": cars, "changes": changes, "ended": ended}
        self.socketio.emit("team.update", update, to=team_room(), namespace=DASHBOARD_NS)
        return update

    def _team_loop(self) -> None:
        interval = self.settings.team_interval_s
        last_full = time.monotonic()
        while not self._stop.wait(interval):
            try:
                everything = time.monotonic() - last_full >= TEAM_FULL_S
                if everything:
                    last_full = time.monotonic()
                self.send_team_update(everything)
            except Exception:  # noqa: BLE001 - the loop must outlive one failed round
                log.exception("team update failed")

    def _housekeeping_loop(self) -> None:
        while not self._stop.wait(self.settings.expiry_check_s):
            try:
                for session_id in self.core.housekeeping():
                    log.info("session %s expired after %.0f s idle", session_id, self.settings.session_idle_s)
                self.drop_revoked()
            except Exception:  # noqa: BLE001 - the loop must outlive one failed round
                log.exception("housekeeping failed")
