"""Alerts end to end: rules over REST, raised and cleared from live frames, kept on screen until acknowledged."""
from __future__ import annotations

import time
import uuid

import requests

from tests.clients import CALL_TIMEOUT_S, Viewer, connect_monitor
from tests.waiting import wait_for


def frames(start: int, coolant: list[float], t0: float, hz: float = 10.0) -> list[dict]:
    return [{"seq": start + i, "t": t0 + i / hz, "channels": {"coolant_temp": c, "lat": 28.41, "lon": -81.38}}
            for i, c in enumerate(coolant)]


def test_rule_raises_clears_and_stays_until_acknowledged(live_server):
    car = f"CAR-{uuid.uuid4().hex[:6]}"
    rule = {"name": "Coolant hot", "channel": "coolant_temp", "comparison": ">", "threshold": 100.0,
            "hold_s": 0.3, "hysteresis": 2.0, "severity": "critical"}
    put = requests.put(f"{live_server.url}/api/v1/alert-rules/coolant_test?car_id={car}", json=rule,
                       headers=live_server.headers, timeout=5)
    assert put.status_code == 200, put.text
    rules = requests.get(f"{live_server.url}/api/v1/alert-rules?car_id={car}", timeout=5).json()["items"]
    assert {r["rule"]["id"]: r["source"] for r in rules}["coolant_test"] == "car"
    assert {r["rule"]["id"]: r["source"] for r in rules}["fuel_low"] == "default"
    monitor = connect_monitor(live_server.url, car, live_server.api_key)
    viewer = Viewer(live_server.url)
    try:
        sid = monitor.call("session.start", {}, namespace="/monitor", timeout=CALL_TIMEOUT_S)["session"]["session_id"]
        viewer.join(sid)
        t0 = time.time()
        # a 0.2 s spike is shorter than the hold: nothing; then 1 s hot: raised; then back down: cleared
        coolant = [90.0] * 5 + [104.0] * 2 + [90.0] * 3 + [104.0] * 10 + [99.0] * 3 + [97.0] * 3
        ack = monitor.call("telemetry", {"session_id": sid, "frames": frames(0, coolant, t0)}, namespace="/monitor",
                           timeout=CALL_TIMEOUT_S)
        assert ack["ok"]
        updates = wait_for(lambda: [a for a in viewer.of("alert") if a["cleared_t"]], 10, "raise and clear")
        raised = [a for a in viewer.of("alert") if a["cleared_t"] is None]
        assert len(raised) == 1 and raised[0]["rule_id"] == "coolant_test" and raised[0]["severity"] == "critical"
        assert abs(raised[0]["raised_t"] - (t0 + 1.3)) < 1e-6 and raised[0]["value"] == 104.0
        assert raised[0]["lat"] == 28.41 and raised[0]["on_screen"] is True
        cleared = updates[-1]
        assert abs(cleared["cleared_t"] - (t0 + 2.3)) < 1e-6 and cleared["on_screen"] is True  # until acked
        # a viewer joining now still sees it
        late = Viewer(live_server.url)
        try:
            assert [a["alert_id"] for a in late.join(sid)["snapshot"]["alerts"]] == [cleared["alert_id"]]
        finally:
            late.close()
        acked = requests.post(f"{live_server.url}/api/v1/sessions/{sid}/alerts/{cleared['alert_id']}/ack",
                              json={"by": "pit wall"}, headers=live_server.headers, timeout=5).json()
        assert acked["acked_by"] == "pit wall" and acked["on_screen"] is False and acked["acked_at"]
        wait_for(lambda: [a for a in viewer.of("alert") if a["acked_by"]], 10, "ack relayed")
    finally:
        monitor.disconnect()
        viewer.close()
    listed = requests.get(f"{live_server.url}/api/v1/sessions/{sid}/alerts", timeout=5).json()["items"]
    assert [(a["rule_id"], a["active"], a["acked_by"]) for a in listed] == [("coolant_test", False, "pit wall")]
    events = [e["event_type"] for e in requests.get(f"{live_server.url}/api/v1/sessions/{sid}/events",
                                                    timeout=5).json()["items"]]
    assert events.count("alert.raised") == 1 and events.count("alert.cleared") == 1 and "alert.acked" in events


def test_silent_link_raises_on_the_server_clock(live_server):
    car = f"CAR-{uuid.uuid4().hex[:6]}"
    rule = {"name": "Link silent", "channel": "link.silence", "comparison": ">", "threshold": 1.0,
            "severity": "critical"}
    requests.put(f"{live_server.url}/api/v1/alert-rules/link_silent?car_id={car}", json=rule,
                 headers=live_server.headers, timeout=5).raise_for_status()
    monitor = connect_monitor(live_server.url, car, live_server.api_key)
    viewer = Viewer(live_server.url)
    try:
        sid = monitor.call("session.start", {}, namespace="/monitor", timeout=CALL_TIMEOUT_S)["session"]["session_id"]
        viewer.join(sid)
        monitor.call("telemetry", {"session_id": sid, "frames": frames(0, [90.0], time.time())},
                     namespace="/monitor", timeout=CALL_TIMEOUT_S)
        [silent] = wait_for(lambda: [a for a in viewer.of("alert") if a["rule_id"] == "link_silent"], 10,
                            "link silence alert")
        assert silent["severity"] == "critical" and silent["value"] > 1.0
        monitor.call("telemetry", {"session_id": sid, "frames": frames(1, [90.0], time.time())},
                     namespace="/monitor", timeout=CALL_TIMEOUT_S)
        wait_for(lambda: [a for a in viewer.of("alert") if a["rule_id"] == "link_silent" and a["cleared_t"]], 10,
                 "link back")
    finally:
        monitor.disconnect()
        viewer.close()
    assert requests.delete(f"{live_server.url}/api/v1/alert-rules/link_silent?car_id={car}",
                           headers=live_server.headers, timeout=5).status_code == 204


def test_bad_rules_and_acks_are_refused(live_server):
    url = f"{live_server.url}/api/v1/alert-rules/r1"
    for body, field in (({"name": "x", "channel": "rpm", "comparison": "~", "threshold": 1}, "comparison"),
                        ({"name": "x", "channel": "Bad Name", "comparison": ">", "threshold": 1}, "channel"),
                        ({"name": "x", "channel": "rpm", "comparison": ">", "threshold": "high"}, "threshold"),
                        ({"name": "x", "channel": "rpm", "comparison": ">", "threshold": 1, "hold_s": -1}, "hold_s")):
        resp = requests.put(url, json=body, headers=live_server.headers, timeout=5)
        assert resp.status_code == 422 and resp.json()["error"]["field"] == field, resp.text
    sid = requests.post(f"{live_server.url}/api/v1/sessions", json={"car_id": "A1"}, headers=live_server.headers,
                        timeout=5).json()["session_id"]
    missing = requests.post(f"{live_server.url}/api/v1/sessions/{sid}/alerts/999999/ack", json={"by": "x"},
                            headers=live_server.headers, timeout=5)
    assert missing.status_code == 404 and missing.json()["error"]["field"] == "alert_id"
    assert requests.delete(f"{live_server.url}/api/v1/alert-rules/never", headers=live_server.headers,
                           timeout=5).status_code == 404


def test_session_rules_override_car_and_default_rules(live_server):
    car = f"CAR-{uuid.uuid4().hex[:6]}"
    headers = live_server.headers
    sid = requests.post(f"{live_server.url}/api/v1/sessions", json={"car_id": car}, headers=headers,
                        timeout=5).json()["session_id"]
    base = {"name": "Fuel low", "channel": "fuel_level", "comparison": "<", "hold_s": 0.0, "severity": "warning"}
    requests.put(f"{live_server.url}/api/v1/alert-rules/fuel_low?car_id={car}", json={**base, "threshold": 15.0},
                 headers=headers, timeout=5).raise_for_status()
    requests.put(f"{live_server.url}/api/v1/alert-rules/fuel_low?session_id={sid}", json={**base, "threshold": 30.0},
                 headers=headers, timeout=5).raise_for_status()
    rules = {r["rule"]["id"]: r for r in requests.get(f"{live_server.url}/api/v1/alert-rules?session_id={sid}",
                                                      timeout=5).json()["items"]}
    assert rules["fuel_low"]["source"] == "session" and rules["fuel_low"]["rule"]["threshold"] == 30.0
    car_rules = {r["rule"]["id"]: r for r in requests.get(f"{live_server.url}/api/v1/alert-rules?car_id={car}",
                                                          timeout=5).json()["items"]}
    assert car_rules["fuel_low"]["rule"]["threshold"] == 15.0 and car_rules["coolant_high"]["source"] == "default"
    monitor = connect_monitor(live_server.url, car, live_server.api_key)
    viewer = Viewer(live_server.url)
    try:
        monitor.call("session.start", {"session_id": sid}, namespace="/monitor", timeout=CALL_TIMEOUT_S)
        viewer.join(sid)
        frames = [{"seq": i, "t": time.time() + i / 10, "channels": {"fuel_level": 25.0}} for i in range(3)]
        monitor.call("telemetry", {"session_id": sid, "frames": frames}, namespace="/monitor", timeout=CALL_TIMEOUT_S)
        [alert] = wait_for(lambda: viewer.of("alert"), 10, "the session's own fuel alert")
        assert alert["rule_id"] == "fuel_low" and alert["threshold"] == 30.0  # 25 % is low only for this session
    finally:
        monitor.disconnect()
        viewer.close()
    assert requests.delete(f"{live_server.url}/api/v1/alert-rules/fuel_low?session_id={sid}", headers=headers,
                           timeout=5).status_code == 204
    rules = {r["rule"]["id"]: r for r in requests.get(f"{live_server.url}/api/v1/alert-rules?session_id={sid}",
                                                      timeout=5).json()["items"]}
    assert rules["fuel_low"]["source"] == "car" and rules["fuel_low"]["rule"]["threshold"] == 15.0
