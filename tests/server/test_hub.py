"""End to end through a real server process: monitors push frames, viewers receive them, nothing acked is lost."""
from __future__ import annotations

import uuid

import pytest
import requests
import socketio

from tests.clients import CALL_TIMEOUT_S, Viewer, connect_monitor, make_frames, metric
from tests.waiting import wait_for


def start_session(monitor: socketio.Client) -> str:
    ack = monitor.call("session.start", {"record_id": str(uuid.uuid4())}, namespace="/monitor",
                       timeout=CALL_TIMEOUT_S)
    assert ack["ok"], ack
    return ack["session"]["session_id"]


def send(monitor: socketio.Client, session_id: str, frames: list) -> dict:
    return monitor.call("telemetry", {"session_id": session_id, "frames": frames}, namespace="/monitor",
                        timeout=CALL_TIMEOUT_S)


@pytest.fixture
def car_id() -> str:
    return f"CAR-{uuid.uuid4().hex[:8]}"


def test_frames_reach_two_viewers_in_order_and_complete(live_server, car_id):
    monitor = connect_monitor(live_server.url, car_id, live_server.api_key)
    session_id = start_session(monitor)
    viewers = [Viewer(live_server.url), Viewer(live_server.url)]
    try:
        for viewer in viewers:
            assert viewer.join(session_id)["ok"]
        sent = []
        for start in range(0, 500, 50):
            batch = make_frames(start, 50)
            ack = send(monitor, session_id, batch)
            assert ack == {"ok": True, "acked_seq": start + 49, "rejected": []}
            sent.extend(f["seq"] for f in batch)
        for viewer in viewers:
            assert viewer.wait_frames(len(sent)) == sent
        # the values arrive exactly as sent
        last = viewers[0].frames[-1]
        assert last["channels"]["rpm"] == 3000.0 + 499
    finally:
        monitor.disconnect()
        for viewer in viewers:
            viewer.close()
    stored = requests.get(f"{live_server.url}/api/v1/sessions/{session_id}/frames?limit=1000", timeout=5).json()
    assert [f["seq"] for f in stored["items"]] == sent


def test_resent_batch_is_acked_but_not_stored_or_broadcast_twice(live_server, car_id):
    monitor = connect_monitor(live_server.url, car_id, live_server.api_key)
    session_id = start_session(monitor)
    viewer = Viewer(live_server.url)
    try:
        viewer.join(session_id)
        batch = make_frames(0, 20)
        assert send(monitor, session_id, batch)["acked_seq"] == 19
        assert send(monitor, session_id, batch)["acked_seq"] == 19  # the link dropped before the ack: resent
        assert send(monitor, session_id, batch[5:10] + make_frames(20, 5))["acked_seq"] == 24
        assert viewer.wait_frames(25) == list(range(25))
        # a late marker batch proves nothing more was coming
        send(monitor, session_id, make_frames(25, 1))
        assert viewer.wait_frames(26) == list(range(26))
    finally:
        monitor.disconnect()
        viewer.close()
    session = requests.get(f"{live_server.url}/api/v1/sessions/{session_id}", timeout=5).json()
    assert session["stats"]["frames"] == 26
    frames = requests.get(f"{live_server.url}/api/v1/sessions/{session_id}/frames", timeout=5).json()["items"]
    assert [f["seq"] for f in frames] == list(range(26))


def test_bad_frames_rejected_one_by_one_and_the_rest_kept(live_server, car_id):
    monitor = connect_monitor(live_server.url, car_id, live_server.api_key)
    session_id = start_session(monitor)
    good = make_frames(0, 3)
    bad = [
        {"seq": 100, "t": 1.7e9, "channels": {"rpm": "fast"}},
        {"seq": 101, "t": 1.7e9, "channels": {"Bad Name": 1}},
        {"seq": 102, "t": "now", "channels": {}},
        {"seq": -1, "t": 1.7e9, "channels": {}},
        "not a frame",
        {"t": 1.7e9, "channels": {}},
    ]
    try:
        ack = send(monitor, session_id, [good[0], *bad, good[1], good[2]])
        assert ack["ok"] is True and ack["acked_seq"] == 2
        assert [r["seq"] for r in ack["rejected"]] == [100, 101, 102, -1, None, None]
        assert all(r["error"]["code"] == "invalid_frame" and r["error"]["field"] for r in ack["rejected"])
        assert ack["rejected"][2]["error"]["field"] == "t"
        # a malformed envelope gets an error ack, and the connection goes on
        for payload, field in (("junk", "data"), ({"frames": []}, "session_id"),
                               ({"session_id": session_id, "frames": "x"}, "frames")):
            nack = monitor.call("telemetry", payload, namespace="/monitor", timeout=CALL_TIMEOUT_S)
            assert nack["ok"] is False and nack["error"]["field"] == field, nack
        nack = monitor.call("telemetry", {"session_id": str(uuid.uuid4()), "frames": good},
                            namespace="/monitor", timeout=CALL_TIMEOUT_S)
        assert nack["error"]["code"] == "not_found"
        nack = monitor.call("no.such.event", {}, namespace="/monitor", timeout=CALL_TIMEOUT_S)
        assert nack["error"]["field"] == "event"
        assert send(monitor, session_id, make_frames(3, 1))["acked_seq"] == 3
    finally:
        monitor.disconnect()
    frames = requests.get(f"{live_server.url}/api/v1/sessions/{session_id}/frames", timeout=5).json()["items"]
    assert [f["seq"] for f in frames] == [0, 1, 2, 3]
    assert requests.get(live_server.url + "/healthz", timeout=5).json()["ok"]


def test_wrong_api_key_is_refused_at_connect(live_server, car_id):
    with pytest.raises(socketio.exceptions.ConnectionError):
        connect_monitor(live_server.url, car_id, "wrong-key")
    with pytest.raises(socketio.exceptions.ConnectionError):
        connect_monitor(live_server.url, "", live_server.api_key)


def test_viewer_snapshot_on_join_then_live(live_server, car_id):
    monitor = connect_monitor(live_server.url, car_id, live_server.api_key)
    session_id = start_session(monitor)
    requests.post(f"{live_server.url}/api/v1/sessions/{session_id}/setup", json={"setup": {"wing": 4}},
                  headers=live_server.headers, timeout=5).raise_for_status()
    send(monitor, session_id, make_frames(0, 30))
    viewer = Viewer(live_server.url)
    try:
        ack = viewer.join(session_id)
        snap = ack["snapshot"]
        recent = [f["seq"] for f in snap["recent"]]
        assert snap["setup"]["setup"] == {"wing": 4}
        assert snap["session"]["monitor_online"] is True
        assert snap["telemetry"]["channels"]["rpm"]["value"] == 3029.0
        send(monitor, session_id, make_frames(30, 5))
        # frames not yet flushed at join come live instead of in the snapshot: each exactly once
        live = viewer.wait_frames(35 - len(recent))
        assert sorted(recent + live) == list(range(35)) and live == sorted(live)
        requests.post(f"{live_server.url}/api/v1/sessions/{session_id}/setup", json={"setup": {"wing": 5}},
                      headers=live_server.headers, timeout=5).raise_for_status()
        wait_for(lambda: viewer.of("setup"), 10, "live setup event")
        assert viewer.of("setup")[-1]["setup"] == {"wing": 5} and viewer.of("setup")[-1]["version"] == 2
        monitor.disconnect()
        wait_for(lambda: any(m["online"] is False for m in viewer.of("monitor")), 10, "monitor offline")
    finally:
        viewer.close()


def test_rest_start_stop_sends_commands_to_the_cars_monitor(live_server, car_id):
    created = requests.post(f"{live_server.url}/api/v1/sessions", json={"car_id": car_id, "name": "cmd"},
                            headers=live_server.headers, timeout=5).json()
    commands = []
    monitor = socketio.Client(reconnection=False)
    monitor.on("command", commands.append, namespace="/monitor")
    monitor.connect(live_server.url, namespaces=["/monitor"], auth={"car_id": car_id, "api_key": live_server.api_key},
                    transports=["websocket"], wait_timeout=10)
    try:
        sid = created["session_id"]
        for action in ("start", "stop", "end"):
            requests.post(f"{live_server.url}/api/v1/sessions/{sid}/{action}", headers=live_server.headers,
                          timeout=5).raise_for_status()
        wait_for(lambda: len(commands) == 3, 10, "three commands")
        assert [c["action"] for c in commands] == ["start", "stop", "end"]
        assert {c["session_id"] for c in commands} == {sid}
    finally:
        monitor.disconnect()


def test_viewer_token_required_when_configured(server_factory):
    server = server_factory(viewer_token="crew-secret")
    with pytest.raises(socketio.exceptions.ConnectionError):
        Viewer(server.url)
    with pytest.raises(socketio.exceptions.ConnectionError):
        Viewer(server.url, token="wrong")
    viewer = Viewer(server.url, token="crew-secret")
    viewer.close()


def test_bad_lora_messages_get_error_acks(live_server, car_id):
    gateway = connect_monitor(live_server.url, "mesh-gateway", live_server.api_key)
    try:
        frame = {"seq": 1, "t": 1.8e9, "channels": {"rpm": 1.0}}
        for payload, field in (({"session_prefix": "zz", "frame": frame, "received_at": 1.8e9}, "session_prefix"),
                               ({"session_prefix": "00000000", "frame": frame, "received_at": 1.8e9},
                                "session_prefix"),
                               ({"session_prefix": "00000000", "frame": {"seq": "x"}, "received_at": 1.8e9}, "seq")):
            ack = gateway.call("lora", payload, namespace="/monitor", timeout=CALL_TIMEOUT_S)
            assert ack["ok"] is False and ack["error"]["field"] == field, ack
    finally:
        gateway.disconnect()


def test_monitor_events_are_logged_once_and_heartbeat_health_is_kept(live_server, car_id):
    monitor = connect_monitor(live_server.url, car_id, live_server.api_key)
    session_id = start_session(monitor)
    viewer = Viewer(live_server.url)
    try:
        viewer.join(session_id)
        body = {"session_id": session_id, "record_id": "dtc-1", "event_type": "dtc.set",
                "payload": {"code": "P0217", "description": "Engine overtemperature"}}
        assert monitor.call("event", body, namespace="/monitor", timeout=CALL_TIMEOUT_S) == {
            "ok": True, "duplicate": False}
        assert monitor.call("event", body, namespace="/monitor", timeout=CALL_TIMEOUT_S)["duplicate"] is True
        bad = monitor.call("event", {**body, "event_type": "Bad Type"}, namespace="/monitor", timeout=CALL_TIMEOUT_S)
        assert bad["ok"] is False and bad["error"]["field"] == "event_type"
        wait_for(lambda: [e for e in viewer.of("event") if e["event_type"] == "dtc.set"], 10, "live dtc event")
        beat = {"session_id": session_id, "backlog": 12, "rtt_ms": 35.5, "oldest_age_s": 4.2,
                "sources": {"obd": "reading", "gps": "error: unplugged"}}
        assert monitor.call("heartbeat", beat, namespace="/monitor", timeout=CALL_TIMEOUT_S)["ok"]
        health = wait_for(lambda: [m for m in viewer.of("monitor") if m.get("backlog") == 12], 10, "health")[0]
        assert health["rtt_ms"] == 35.5 and health["oldest_age_s"] == 4.2 and health["online"] is True
        before = metric(live_server.url, "dashboard_frames_backfilled_total")
        ack = monitor.call(
            "telemetry", {"session_id": session_id, "frames": make_frames(0, 3), "backfill": True},
            namespace="/monitor", timeout=CALL_TIMEOUT_S)
        assert ack["acked_seq"] == 2
    finally:
        monitor.disconnect()
        viewer.close()
    session = requests.get(f"{live_server.url}/api/v1/sessions/{session_id}", timeout=5).json()
    assert session["monitor"]["backlog"] == 12 and session["monitor"]["sources"]["obd"] == "reading"
    events = requests.get(f"{live_server.url}/api/v1/sessions/{session_id}/events", timeout=5).json()["items"]
    dtc = [e for e in events if e["event_type"] == "dtc.set"]
    assert len(dtc) == 1 and dtc[0]["payload"]["code"] == "P0217" and dtc[0]["record_id"] == "dtc-1"
    assert metric(live_server.url, "dashboard_frames_backfilled_total") - before == 3
