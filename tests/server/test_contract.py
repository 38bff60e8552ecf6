"""The contract: one whole session through a real server; every message and answer checked against its model.

Every REST answer is parsed with a strict JSON parser (no NaN or Infinity) and validated against the
model the OpenAPI document names for its route (errors against ErrorBody); every Socket.IO message a
viewer, the car's monitor or a pit gateway receives is validated against ``SOCKET_MESSAGES``. The
session is built to make every kind of message happen at least once, and the test checks it did.
"""
from __future__ import annotations

import json
import math
import re
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests
import socketio
from pydantic import BaseModel

from dashboard import schemas
from dashboard.server.changes import Change
from dashboard.server.openapi import ROUTES, openapi_document
from dashboard.server.tracks import ORLANDO_TRACK_ID
from dashboard.telemetry.gps import read_log
from dashboard.telemetry.lora import car_hash
from tests.clients import CALL_TIMEOUT_S, Viewer
from tests.waiting import wait_for

RECORDING = Path(__file__).resolve().parents[2] / "dashboard" / "data" / "okc-2023-4laps.nmea"
BATCH = 200


def strict_json(text: str) -> Any:
    """JSON as the standard says: NaN, Infinity and -Infinity are not JSON."""
    def refuse(constant: str) -> Any:
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def route_model(method: str, path: str) -> tuple[int, type[BaseModel] | None]:
    """The documented success status and model of a REST call."""
    for m, pattern, _summary, _req, status, model, *_ in ROUTES:
        regex = "^/api/v1" + re.sub(r"\{[a-z_]+\}", "[^/]+", pattern) + "$"
        if m == method and re.match(regex, path):
            return status, model
    aliases = {f"/session_manager/sessions.{action}" for action in ("start", "end", "heartbeat")}
    if method == "post" and path in aliases:
        return 200, schemas.SessionOut
    if path == "/healthz":
        return 200, schemas.Health
    raise AssertionError(f"{method.upper()} {path} is not in the OpenAPI document")


class Api:
    """REST calls through one helper that checks every answer against the documented model."""

    def __init__(self, server: Any) -> None:
        self.server = server
        self.calls = 0

    def __call__(self, method: str, path: str, body: Any = None, status: int | None = None,
                 **params: Any) -> Any:
        url = self.server.url + path
        headers = self.server.headers if method != "get" else {}
        if isinstance(body, str):
            resp = requests.request(method, url, data=body, params=params, timeout=30,
                                    headers={**headers, "Content-Type": "application/json"})
        else:
            resp = requests.request(method, url, json=body, params=params, timeout=30, headers=headers)
        self.calls += 1
        ok_status, model = route_model(method, path.split("?")[0])
        expected = status or ok_status
        assert resp.status_code == expected, f"{method.upper()} {path}: {resp.status_code} {resp.text[:300]}"
        if resp.status_code >= 400:
            return schemas.ErrorBody.model_validate(strict_json(resp.text)).error
        if model is None:  # 204, or a streamed export
            return resp.text
        data = strict_json(resp.text)
        model.model_validate(data)
        return data


class Recorder:
    """A Socket.IO client on one namespace that keeps every event it receives."""

    def __init__(self, url: str, namespace: str, auth: dict[str, Any]) -> None:
        self.namespace = namespace
        self.events: list[tuple[str, Any]] = []
        self.acks: list[tuple[str, Any]] = []
        self._lock = threading.Lock()
        self.client = socketio.Client(reconnection=False)
        self.client.on("*", self._record, namespace=namespace)
        self.client.connect(url, namespaces=[namespace], auth=auth, transports=["websocket"], wait_timeout=10)

    def _record(self, event: str, data: Any = None) -> None:
        with self._lock:
            self.events.append((event, data))

    def call(self, event: str, data: Any) -> Any:
        ack = self.client.call(event, data, namespace=self.namespace, timeout=CALL_TIMEOUT_S)
        with self._lock:
            self.acks.append((event, ack))
        return ack

    def of(self, event: str) -> list[Any]:
        with self._lock:
            return [d for e, d in self.events if e == event]


def check_messages(prefix: str, recorder: Recorder) -> set[str]:
    """Every event and ack the recorder got, validated; the set of event names seen."""
    seen = set()
    for event, data in recorder.events:
        model = schemas.SOCKET_MESSAGES.get(f"{prefix}.{event}")
        assert model is not None, f"{prefix} event {event!r} has no model in SOCKET_MESSAGES"
        model.model_validate(data)
        json.dumps(data, allow_nan=False)
        seen.add(event)
    for event, ack in recorder.acks:
        model = schemas.SOCKET_MESSAGES["error.ack" if not ack.get("ok") else f"{prefix}.{event}.ack"]
        model.model_validate(ack)
        json.dumps(ack, allow_nan=False)
    return seen


def okc_frames() -> list[dict[str, Any]]:
    """The bundled 4-lap recording as frames, with coolant running hot for a while in the second lap.

    Shifted to end a few seconds ago, as a car sending it live would have stamped it (live frames
    more than a day old are refused).
    """
    readings = [r for r in read_log(RECORDING) if r.sentence == "RMC"]
    shift = round(time.time() - 5.0 - readings[-1].time)  # whole seconds: the recording's own times, shifted
    frames = []
    for seq, r in enumerate(readings):
        channels = {k: v for k, v in r.values.items() if v is not None}
        channels["coolant_temp"] = 110.0 if 1500 <= seq < 1600 else 92.0
        frames.append({"seq": seq, "t": r.time + shift, "channels": channels})
    return frames


def sector_line(frames: list[dict[str, Any]], index: int, half_width_m: float = 15.0) -> dict[str, Any]:
    """A sector line across the path at frame ``index``: perpendicular to the direction of travel."""
    a, b = frames[index - 2]["channels"], frames[index + 2]["channels"]
    here = frames[index]["channels"]
    lat0 = math.radians(here["lat"])
    dy = (b["lat"] - a["lat"]) * 111_320.0
    dx = (b["lon"] - a["lon"]) * 111_320.0 * math.cos(lat0)
    norm = math.hypot(dx, dy)
    px, py = -dy / norm * half_width_m, dx / norm * half_width_m  # left of travel
    to_lat = 1 / 111_320.0
    to_lon = 1 / (111_320.0 * math.cos(lat0))
    return {"a": [here["lat"] + py * to_lat, here["lon"] + px * to_lon],
            "b": [here["lat"] - py * to_lat, here["lon"] - px * to_lon], "direction": "a_left"}


def test_a_whole_session_every_message_matches_its_model(live_server):
    api = Api(live_server)
    frames = okc_frames()
    car = f"KART-{uuid.uuid4().hex[:6]}"
    assert api("get", "/api/v1/tracks")["items"]
    track = api("get", f"/api/v1/tracks/{ORLANDO_TRACK_ID}")
    body = {k: track[k] for k in ("name", "a", "b", "direction", "min_lap_time_s", "max_speed_kmh")}
    sectors = api("post", "/api/v1/tracks", {**body, "name": f"OKC sectors {car}",
                                             "sectors": [sector_line(frames, 1000)]})
    api("get", f"/api/v1/tracks/{sectors['track_id']}")
    session = api("post", "/api/v1/sessions", {"car_id": car, "name": "contract", "track_id": sectors["track_id"]})
    sid = session["session_id"]
    api("post", f"/api/v1/sessions/{sid}/setup", {"rear_sprocket": 84})  # the setup itself as the body
    api("post", f"/api/v1/sessions/{sid}/setup", {"setup": {"rear_sprocket": 85}, "timestamp": frames[0]["t"]})
    viewer = Recorder(live_server.url, "/dashboard", {})
    monitor = Recorder(live_server.url, "/monitor", {"car_id": car, "api_key": live_server.api_key})
    gateway = Recorder(live_server.url, "/monitor", {"car_id": "mesh-gateway", "api_key": live_server.api_key})
    try:
        viewer.call("join", {"session_id": sid})
        api("post", f"/api/v1/sessions/{sid}/setup", {"setup": {"rear_sprocket": 86}, "timestamp": frames[0]["t"]})
        assert monitor.call("session.start", {"session_id": sid})["session"]["status"] == "active"
        monitor.call("heartbeat", {"session_id": sid, "backlog": 3, "rtt_ms": 12.5, "sources": {"gps": "reading"}})
        monitor.call("event", {"session_id": sid, "record_id": "dtc-1", "event_type": "dtc.set",
                               "payload": {"code": "P0217"}})
        for i in range(0, len(frames), BATCH):
            ack = monitor.call("telemetry", {"session_id": sid, "frames": frames[i:i + BATCH]})
            assert ack["ok"] and not ack["rejected"], ack
        monitor.call("telemetry", {"session_id": sid, "frames": frames[:5] + [{"seq": "x"}]})  # resent, and a bad one
        days_old = {"seq": len(frames), "t": frames[0]["t"] - 3 * 86_400, "channels": {"rpm": 1.0}}
        ahead = {"seq": len(frames) + 1, "t": time.time() + 3_600, "channels": {"rpm": 2.0}}
        late = monitor.call("telemetry", {"session_id": sid, "frames": [days_old, ahead]})
        assert [(r["seq"], r["error"]["code"], r["error"]["field"]) for r in late["rejected"]] == [
            (days_old["seq"], "clock_behind", "t"), (ahead["seq"], "clock_ahead", "t")]
        backfill = monitor.call("telemetry", {"session_id": sid, "frames": [days_old], "backfill": True})
        assert backfill["ok"] and not backfill["rejected"]  # from the car's backlog: taken at any age
        monitor.call("telemetry", {"session_id": str(uuid.uuid4()), "frames": []})  # an error ack
        last = frames[-1]
        gateway.call("lora", {"car_id": car, "car_hash": car_hash(car), "session_prefix": sid.replace("-", "")[:8],
                              "frame": {**last, "seq": last["seq"] + 1, "t": last["t"] + 1}, "received_at": last["t"],
                              "status": {"uplink": False}})
        wait_for(lambda: viewer.of("lap") and viewer.of("sector") and viewer.of("timing")
                 and [a for a in viewer.of("alert") if a["cleared_t"]], 15, "laps, sectors, timing, alert cleared")
        message = api("post", f"/api/v1/sessions/{sid}/messages", {"text": "FUEL OK?", "asks_answer": True})
        wait_for(lambda: monitor.of("message"), 10, "the message to the car")
        monitor.call("message.report", {"session_id": sid, "message_id": message["id"], "state": "answered",
                                        "answer": "yes", "t": time.time(), "lap": 2})
        boxed = api("post", f"/api/v1/sessions/{sid}/messages", {"canned": 0})
        api("post", f"/api/v1/sessions/{sid}/messages/{boxed['id']}/cancel")
        api("get", f"/api/v1/sessions/{sid}/messages")
        api("put", "/api/v1/messages/canned", api("get", "/api/v1/messages/canned"))
        viewer.call("message.send", {"session_id": sid, "text": "PUSH"})
        wait_for(lambda: viewer.of("message"), 10, "a message state told to the viewers")
        alert = viewer.of("alert")[0]
        api("post", f"/api/v1/sessions/{sid}/alerts/{alert['alert_id']}/ack", {"by": "engineer"})
        for path in ("", "/telemetry", "/setup", "/setups", "/events", "/laps", "/alerts"):
            api("get", f"/api/v1/sessions/{sid}{path}")
        api("get", f"/api/v1/sessions/{sid}/frames", after_seq=10, limit=50)
        api("get", f"/api/v1/sessions/{sid}/export", format="jsonl")
        api("get", "/api/v1/sessions", limit=5)
        api("get", "/api/v1/alert-rules", car_id=car)
        rule = api("put", "/api/v1/alert-rules/contract_rpm", {"name": "rpm", "channel": "rpm", "comparison": ">",
                                                               "threshold": 9000.0}, car_id=car)
        assert rule["source"] == "car"
        api("delete", "/api/v1/alert-rules/contract_rpm", car_id=car)
        api("put", f"/api/v1/sessions/{sid}/track", {"track_id": sectors["track_id"]})  # timed again: `laps`
        for action in ("stop", "start", "heartbeat", "end"):
            api("post", f"/api/v1/sessions/{sid}/{action}")
        wait_for(lambda: len(monitor.of("command")) == 4, 10, "start, stop, start and end commands at the monitor")
        assert [c["action"] for c in monitor.of("command")] == ["start", "stop", "start", "end"]
        monitor.call("session.end", {"session_id": sid})
        viewer.call("leave", {"session_id": sid})
        legacy = api("post", "/session_manager/sessions.start", {"car_id": car, "record_id": f"r-{car}"})
        api("post", "/session_manager/sessions.heartbeat", {"session_id": legacy["session_id"]})
        api("post", "/session_manager/sessions.end", {"session_id": legacy["session_id"]})
        api("delete", f"/api/v1/sessions/{sid}")
        api("get", f"/api/v1/sessions/{sid}", status=404)
        api("post", "/api/v1/sessions", {"car_id": ""}, status=422)
        api("delete", f"/api/v1/tracks/{uuid.uuid4()}", status=404)
        api("get", "/healthz")
        wait_for(lambda: viewer.of("deleted"), 10, "the deletion told to viewers")
    finally:
        for client in (viewer, monitor, gateway):
            client.client.disconnect()
    seen = check_messages("dashboard", viewer) | check_messages("monitor", monitor) | check_messages("monitor", gateway)
    broadcast = {"telemetry", "sessions", "deleted", *(kind.value for kind in Change if kind not in (
        Change.FRAMES, Change.COMMAND, Change.DELETED))}
    assert broadcast - seen == set(), f"never seen in this session: {broadcast - seen}"
    assert "command" in seen
    assert api.calls >= 30


def test_socket_messages_cover_every_change_and_the_documents_say_the_same():
    names = set(schemas.SOCKET_MESSAGES)
    for kind in Change:
        event = {Change.FRAMES: "dashboard.telemetry", Change.COMMAND: "monitor.command"}.get(
            kind, f"dashboard.{kind.value}")
        assert event in names, f"{kind} is sent as {event}, which has no model"
    document = openapi_document()
    for _m, _p, _s, req, _st, resp, *_ in ROUTES:
        for model in (req, resp):
            if model is not None:
                assert model.__name__ in document["components"]["schemas"]
    on_disk = {p.name for p in (Path(__file__).resolve().parents[2] / "schemas").glob("*.schema.json")}
    assert {f"{name}.schema.json" for name in names} <= on_disk


def test_viewers_of_a_session_are_told_when_it_is_deleted(live_server):
    api = Api(live_server)
    sid = api("post", "/api/v1/sessions", {"car_id": f"DEL-{uuid.uuid4().hex[:6]}"})["session_id"]
    viewer = Viewer(live_server.url)
    try:
        assert viewer.join(sid)["ok"]
        api("delete", f"/api/v1/sessions/{sid}")
        wait_for(lambda: viewer.of("deleted"), 10, "deleted at the viewer")
        assert viewer.of("deleted") == [{"session_id": sid}]
    finally:
        viewer.close()


def test_the_hub_has_a_route_for_every_kind_of_change(tmp_path):
    from dashboard.app import create_app
    from dashboard.config import Settings

    app = create_app(Settings(instance_path=tmp_path, async_mode="threading"))
    try:
        hub = app.extensions["dashboard"].hub
        assert set(hub.routes) == set(Change)
        with pytest.raises(TypeError):
            hub.core.bus.tell("frames", {})  # a bare string is not a Change
    finally:
        app.extensions["dashboard"].core.close()
