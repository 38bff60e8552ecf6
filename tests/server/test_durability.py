"""Nothing acknowledged is lost: kill -9 the server after acks, restart it on the same database."""
from __future__ import annotations

import time
import uuid

import requests

from tests.clients import CALL_TIMEOUT_S, Viewer, connect_monitor, make_frames, stored_frames
from tests.waiting import wait_for


def test_acked_frames_survive_kill_9(server_factory):
    server = server_factory()
    car = f"CAR-{uuid.uuid4().hex[:8]}"
    monitor = connect_monitor(server.url, car, server.api_key)
    sid = monitor.call("session.start", {"record_id": "boot-1"}, namespace="/monitor",
                       timeout=CALL_TIMEOUT_S)["session"]["session_id"]
    requests.post(f"{server.url}/api/v1/sessions/{sid}/setup", json={"setup": {"wing": 2}},
                  headers=server.headers, timeout=5).raise_for_status()
    acked, sent = -1, []
    for start in range(0, 2000, 200):
        sent += make_frames(start, 200)
        ack = monitor.call("telemetry", {"session_id": sid, "frames": sent[-200:]},
                           namespace="/monitor", timeout=CALL_TIMEOUT_S)
        acked = ack["acked_seq"]
    assert acked == 1999
    server.kill()  # SIGKILL straight after the last ack: no flush, no goodbye
    monitor.disconnect()
    server.start()
    assert [f["seq"] for f in stored_frames(server.url, sid)] == list(range(2000))
    session = requests.get(f"{server.url}/api/v1/sessions/{sid}", timeout=5).json()
    assert session["status"] == "active" and session["setup"] == {"wing": 2}
    assert session["stats"]["frames"] == 2000 and session["stats"]["last_seq"] == 1999
    assert session["telemetry"]["rpm"] == 3000.0 + 1999
    # the monitor comes back: same record_id resumes the same session, resent frames are not duplicated
    monitor = connect_monitor(server.url, car, server.api_key)
    try:
        again = monitor.call("session.start", {"record_id": "boot-1"}, namespace="/monitor", timeout=CALL_TIMEOUT_S)
        assert again["session"]["session_id"] == sid
        resent = sent[1990:] + make_frames(2000, 10)  # the last 10 again, exactly as sent, and 10 new
        ack = monitor.call("telemetry", {"session_id": sid, "frames": resent}, namespace="/monitor",
                           timeout=CALL_TIMEOUT_S)
        assert ack["acked_seq"] == 2009
    finally:
        monitor.disconnect()
    session = requests.get(f"{server.url}/api/v1/sessions/{sid}", timeout=5).json()
    assert session["stats"]["frames"] == 2010
    events = [e["event_type"] for e in requests.get(f"{server.url}/api/v1/sessions/{sid}/events", timeout=5)
              .json()["items"]]
    assert events.count("session.started") == 1 and "setup.changed" in events


def test_idle_session_expires_and_viewers_are_told(server_factory):
    server = server_factory(session_idle_s="1.5", expiry_check_s="0.2")
    created = requests.post(f"{server.url}/api/v1/sessions", json={"car_id": "IDLE1"}, headers=server.headers,
                            timeout=5).json()
    sid = created["session_id"]
    requests.post(f"{server.url}/api/v1/sessions/{sid}/start", headers=server.headers, timeout=5).raise_for_status()
    viewer = Viewer(server.url)
    try:
        viewer.join(sid)
        status = wait_for(lambda: [s for s in viewer.of("session") if s["status"] == "expired"], 10,
                          "expired status at the viewer")
        assert status[0]["end_reason"] == "idle"
    finally:
        viewer.close()
    session = requests.get(f"{server.url}/api/v1/sessions/{sid}", timeout=5).json()
    assert session["status"] == "expired" and session["end_reason"] == "idle"
    events = requests.get(f"{server.url}/api/v1/sessions/{sid}/events", timeout=5).json()["items"]
    assert events[-1]["event_type"] == "session.expired"
    # a heartbeat keeps another session alive past the idle limit
    other = requests.post(f"{server.url}/api/v1/sessions", json={"car_id": "IDLE2"}, headers=server.headers,
                          timeout=5).json()["session_id"]
    requests.post(f"{server.url}/api/v1/sessions/{other}/start", headers=server.headers, timeout=5)

    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:  # beat for twice the idle limit
        requests.post(f"{server.url}/api/v1/sessions/{other}/heartbeat", headers=server.headers, timeout=5)
        assert requests.get(f"{server.url}/api/v1/sessions/{other}", timeout=5).json()["status"] == "active"
        time.sleep(0.3)  # pacing the heartbeats, not waiting for a condition
