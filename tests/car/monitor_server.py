"""A real python-socketio server playing the dashboard's ``/monitor`` namespace, with answers a test scripts.

It runs ``socketio.Server(async_mode="threading")`` inside werkzeug's threaded
WSGI server on a free loopback port (WebSocket through simple-websocket, as the
car's clients insist on), handles each connection's events one at a time in
order, as the real server does, and by default follows the plan's protocol:

- ``session.start`` resumes the given session *as it is* (a stopped, ended or
  expired one is answered with its status, not restarted), else the car's
  active one, else creates one; a record_id seen before returns its session.
- ``telemetry`` stores the frames of an active session (a seq stored with other
  content is a ``seq_conflict``, nothing stored); frames for a session that is
  not active are ``rejected`` with ``session_not_active`` and the ack carries
  ``session_status``; more than ``max_frames`` frames is ``too_large``.
- ``heartbeat``, ``event``, ``lora``, ``session.end`` answer ``ok``.

A test changes that with ``script(event, answer, ...)`` (one-shot answers, in
order, before the default) or ``rule(event, fn)`` (asked on every call; None
falls through). The pit's side is ``add_session``, ``set_status`` and
``command``; ``calls`` records every event with its arrival time.
"""
from __future__ import annotations

import collections
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import socketio
from werkzeug.serving import make_server

NS = "/monitor"
Answer = dict[str, Any] | Callable[[dict[str, Any]], dict[str, Any] | None] | None


@dataclass(frozen=True)
class Call:
    """One event the server received."""

    event: str
    data: dict[str, Any]
    at: float  # time.monotonic() on arrival
    sid: str


class ScriptedMonitor:
    """The ``/monitor`` namespace of a stand-in server; ``url`` to connect, ``close()`` when done."""

    def __init__(self, api_key: str = "k3y", max_frames: int | None = None, tell_max_frames: bool = True) -> None:
        self.api_key = api_key
        self.max_frames = max_frames  # batches above this are answered too_large
        self.tell_max_frames = tell_max_frames  # ... with max_frames in the error, or without
        self.lock = threading.Lock()
        self.calls: list[Call] = []
        self.connections: list[dict[str, Any]] = []  # the auth of every connect attempt
        self.connected: dict[str, str] = {}  # sid -> car_id
        self.sessions: dict[str, dict[str, Any]] = {}
        self.frames: dict[str, dict[int, dict[str, Any]]] = {}  # session -> seq -> stored frame
        self.refused: dict[str, list[int]] = collections.defaultdict(list)  # session -> seqs refused: not active
        self.records: dict[str, str] = {}  # record_id -> session_id
        self.events: dict[str, dict[str, Any]] = {}  # record_id -> car event
        self._script: dict[str, collections.deque[Answer]] = collections.defaultdict(collections.deque)
        self._rules: dict[str, Callable[[dict[str, Any]], dict[str, Any] | None]] = {}
        self.sio = socketio.Server(async_mode="threading", async_handlers=False)
        self.sio.on("connect", self._on_connect, namespace=NS)
        self.sio.on("disconnect", self._on_disconnect, namespace=NS)
        for event in ("session.start", "session.end", "telemetry", "heartbeat", "event", "lora"):
            self.sio.on(event, self._handler(event), namespace=NS)
        self.http = make_server("127.0.0.1", 0, socketio.WSGIApp(self.sio), threaded=True)
        self.url = f"http://127.0.0.1:{self.http.server_port}"
        self._thread = threading.Thread(target=self.http.serve_forever, name="scripted-monitor", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------- test side
    def script(self, event: str, *answers: Answer) -> None:
        """Answer the next calls of ``event`` with these, in order (None, or a callable returning None: default)."""
        with self.lock:
            self._script[event].extend(answers)

    def rule(self, event: str, fn: Callable[[dict[str, Any]], dict[str, Any] | None]) -> None:
        """Ask ``fn`` on every call of ``event`` (after the one-shot script); None falls through to the default."""
        self._rules[event] = fn

    def add_session(self, car_id: str, status: str = "active", frames: list[dict[str, Any]] = ()) -> str:
        """A session the pit made (and its stored frames); returns its id."""
        session_id = str(uuid.uuid4())
        with self.lock:
            self.sessions[session_id] = {"session_id": session_id, "car_id": car_id, "status": status,
                                         "end_reason": "idle" if status == "expired" else None}
            self.frames[session_id] = {f["seq"]: f for f in frames}
        return session_id

    def set_status(self, session_id: str, status: str) -> None:
        """The pit (or the expiry loop) changed the session while the car is not told."""
        with self.lock:
            self.sessions[session_id]["status"] = status
            self.sessions[session_id]["end_reason"] = "idle" if status == "expired" else None

    def command(self, action: str, session_id: str) -> None:
        """The pit's REST start/stop/end: ``command`` to every connected monitor."""
        self.sio.emit("command", {"action": action, "session_id": session_id}, namespace=NS)

    def drop_connections(self) -> None:
        """Disconnect every monitor from the server's side."""
        for sid in list(self.connected):
            self.sio.disconnect(sid, namespace=NS)

    def calls_of(self, event: str, since: int = 0) -> list[Call]:
        """The calls of ``event`` (from index ``since`` of ``calls`` on)."""
        with self.lock:
            return [c for c in self.calls[since:] if c.event == event]

    def stored(self, session_id: str) -> list[dict[str, Any]]:
        """The session's stored frames in seq order."""
        with self.lock:
            frames = self.frames.get(session_id, {})
            return [frames[s] for s in sorted(frames)]

    def stored_seqs(self, session_id: str) -> list[int]:
        """The seqs stored for the session, in order."""
        return [f["seq"] for f in self.stored(session_id)]

    def car_sessions(self, car_id: str) -> list[str]:
        """Every session of the car, in creation order."""
        with self.lock:
            return [s["session_id"] for s in self.sessions.values() if s["car_id"] == car_id]

    def close(self) -> None:
        """Disconnect everyone and stop serving."""
        self.drop_connections()
        self.http.shutdown()
        self.http.server_close()

    # ----------------------------------------------------------- server side
    def _on_connect(self, sid: str, environ: Any, auth: Any) -> bool:
        self.connections.append(auth)
        if not isinstance(auth, dict) or auth.get("api_key") != self.api_key:
            return False
        self.connected[sid] = auth.get("car_id")
        return True

    def _on_disconnect(self, sid: str, *_reason: Any) -> None:
        self.connected.pop(sid, None)

    def _handler(self, event: str) -> Callable[[str, Any], dict[str, Any]]:
        def handle(sid: str, data: Any = None) -> dict[str, Any]:
            data = data if isinstance(data, dict) else {}
            with self.lock:
                self.calls.append(Call(event, data, time.monotonic(), sid))
                answer = self._script[event].popleft() if self._script[event] else None
            if callable(answer):
                answer = answer(data)
            if answer is None and event in self._rules:
                answer = self._rules[event](data)
            if answer is None:
                answer = getattr(self, "_default_" + event.replace(".", "_"))(sid, data)
            return answer

        return handle

    def _public(self, session_id: str) -> dict[str, Any]:
        session = dict(self.sessions[session_id])
        frames = self.frames.get(session_id) or {}
        session["stats"] = {"last_seq": max(frames) if frames else None, "frames": len(frames)}
        return session

    def _default_session_start(self, sid: str, data: dict[str, Any]) -> dict[str, Any]:
        car_id = self.connected.get(sid)
        with self.lock:
            record_id, wanted = data.get("record_id"), data.get("session_id")
            if record_id in self.records:
                session_id = self.records[record_id]
            elif wanted in self.sessions:
                if self.sessions[wanted]["car_id"] != car_id:
                    return {"ok": False, "error": {"code": "conflict", "message": "another car's",
                                                   "field": "session_id"}}
                session_id = wanted
            else:
                active = [s for s in self.sessions.values() if s["car_id"] == car_id and s["status"] == "active"]
                if active:
                    session_id = active[0]["session_id"]
                else:
                    session_id = str(uuid.uuid4())
                    self.sessions[session_id] = {"session_id": session_id, "car_id": car_id, "status": "active",
                                                 "end_reason": None, "name": data.get("name")}
                    self.frames[session_id] = {}
            if record_id:
                self.records.setdefault(record_id, session_id)
            return {"ok": True, "session": self._public(session_id)}

    def _default_telemetry(self, sid: str, data: dict[str, Any]) -> dict[str, Any]:
        frames = data.get("frames") or []
        if self.max_frames is not None and len(frames) > self.max_frames:
            error: dict[str, Any] = {"code": "too_large", "message": "too many frames", "field": "frames"}
            if self.tell_max_frames:
                error["max_frames"] = self.max_frames
            return {"ok": False, "error": error}
        with self.lock:
            session = self.sessions[data["session_id"]]
            if session["status"] != "active":
                self.refused[data["session_id"]].extend(f["seq"] for f in frames)
                rejected = [{"seq": f["seq"], "error": {"code": "session_not_active", "message": session["status"]}}
                            for f in frames]
                return {"ok": True, "acked_seq": None, "rejected": rejected, "session_status": session["status"]}
            stored = self.frames[data["session_id"]]
            if any(f["seq"] in stored and stored[f["seq"]] != f for f in frames):
                return {"ok": False, "error": {"code": "seq_conflict", "message": "seqs stored with other content",
                                               "field": "frames", "next_seq": max(stored) + 1}}
            for frame in frames:
                stored.setdefault(frame["seq"], frame)
            return {"ok": True, "acked_seq": max((f["seq"] for f in frames), default=None), "rejected": []}

    def _default_heartbeat(self, sid: str, data: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True, "server_time": time.time()}

    def _default_event(self, sid: str, data: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            duplicate = data.get("record_id") in self.events
            self.events.setdefault(data.get("record_id"), data)
        return {"ok": True, "duplicate": duplicate}

    def _default_lora(self, sid: str, data: dict[str, Any]) -> dict[str, Any]:
        return {"ok": True}

    def _default_session_end(self, sid: str, data: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            self.sessions[data["session_id"]]["status"] = "ended"
            return {"ok": True, "session": self._public(data["session_id"])}
