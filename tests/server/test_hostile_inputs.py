"""Hostile and unlucky inputs through a real server: every one gets a clear 4xx or error ack, never a 500,
never silence, and nothing stored that breaks later reads."""
from __future__ import annotations

import json
import socket
import sqlite3
import time
import uuid

import pytest
import requests

from tests.clients import CALL_TIMEOUT_S, RawSocketIO, Viewer, connect_monitor, make_frames, metric
from tests.server.test_contract import strict_json


def start(server, car: str) -> tuple[object, str]:
    monitor = connect_monitor(server.url, car, server.api_key)
    sid = monitor.call("session.start", {}, namespace="/monitor", timeout=CALL_TIMEOUT_S)["session"]["session_id"]
    return monitor, sid


def error_of(resp: requests.Response, status: int) -> dict:
    assert resp.status_code == status, f"{resp.status_code} {resp.text[:300]}"
    return strict_json(resp.text)["error"]


def test_malformed_and_reserved_events_get_error_acks_and_change_nothing(live_server):
    car = f"CAR-{uuid.uuid4().hex[:6]}"
    monitor, sid = start(live_server, car)
    raw = RawSocketIO(live_server.url, "/monitor", {"car_id": car, "api_key": live_server.api_key})
    viewer_raw = RawSocketIO(live_server.url, "/dashboard")
    try:
        for packet_id, event in enumerate(['["telemetry",{"session_id":', '{"a":1}', '[1,2]',
                                           '["heartbeat",{"session_id":"x","rtt_ms":Infinity}]',
                                           '["heartbeat",{"session_id":"x","rtt_ms":1e400}]'], start=1):
            ack = raw.call(packet_id, event)
            assert ack["ok"] is False and ack["error"]["code"] == "malformed", (event, ack)
        viewers = metric(live_server.url, "dashboard_viewers_connected")
        for packet_id, name in enumerate(["connect", "disconnect", "connect_error"], start=10):
            ack = viewer_raw.call(packet_id, json.dumps([name, {}]))
            assert ack["ok"] is False and "reserved" in ack["error"]["message"]
            ack = raw.call(packet_id, json.dumps([name, {"car_id": car}]))
            assert ack["ok"] is False
        assert metric(live_server.url, "dashboard_viewers_connected") == viewers  # not decremented
        session = requests.get(f"{live_server.url}/api/v1/sessions/{sid}", timeout=10).json()
        assert session["monitor_online"] is True  # a `disconnect` event did not mark the car offline
        # and the stream goes on on the same connection
        ack = raw.call(20, json.dumps(["telemetry", {"session_id": sid, "frames": make_frames(0, 3)}]))
        assert ack["ok"] and ack["acked_seq"] == 2
    finally:
        raw.close()
        viewer_raw.close()
        monitor.disconnect()


def test_the_batch_limits_agree_end_to_end(live_server):
    car = f"CAR-{uuid.uuid4().hex[:6]}"
    monitor, sid = start(live_server, car)
    try:
        wide = [{"seq": f["seq"], "t": f["t"], "channels": {f"sensor_{i:02d}": 1234.567891 + i for i in range(50)}}
                for f in make_frames(0, 1000, hz=1000.0)]
        assert len(json.dumps(wide)) > 1_048_576  # over the REST body limit, within the message limit
        ack = monitor.call("telemetry", {"session_id": sid, "frames": wide}, namespace="/monitor",
                           timeout=CALL_TIMEOUT_S)
        assert ack["ok"] and ack["acked_seq"] == 999 and not ack["rejected"]
        over = make_frames(1000, 1001, hz=1000.0)
        nack = monitor.call("telemetry", {"session_id": sid, "frames": over}, namespace="/monitor",
                            timeout=CALL_TIMEOUT_S)
        assert nack["ok"] is False and nack["error"]["code"] == "too_large" and nack["error"]["max_frames"] == 1000
        assert monitor.call("telemetry", {"session_id": sid, "frames": over[:500]}, namespace="/monitor",
                            timeout=CALL_TIMEOUT_S)["acked_seq"] == 1499
    finally:
        monitor.disconnect()


def test_rest_inputs_out_of_range_are_4xx_naming_the_field(live_server):
    url, headers = live_server.url, live_server.headers
    sid = requests.post(f"{url}/api/v1/sessions", json={"car_id": "HOSTILE-1"}, headers=headers,
                        timeout=10).json()["session_id"]
    deep = "[" * 100_000 + "]" * 100_000
    assert error_of(requests.post(f"{url}/api/v1/sessions", data=deep, headers={**headers, "Content-Type":
                                  "application/json"}, timeout=10), 400)["field"] == "body"
    for path, field in ((f"/api/v1/sessions?offset={2**63}", "offset"),
                        (f"/api/v1/sessions/{sid}/frames?after_seq={2**63}", "after_seq"),
                        (f"/api/v1/sessions/{sid}/events?after_id={2**64}", "after_id"),
                        ("/api/v1/sessions?limit=0", "limit"),
                        ("/api/v1/sessions?car_id=a%00b", "car_id"),
                        (f"/api/v1/sessions/{sid}/export?format=xlsx", "format")):
        assert error_of(requests.get(url + path, timeout=10), 422)["field"] == field, path
    assert error_of(requests.post(f"{url}/api/v1/sessions/{sid}/alerts/{2**63}/ack", json={"by": "x"},
                                  headers=headers, timeout=10), 404)["field"] == "alert_id"
    assert error_of(requests.post(f"{url}/api/v1/sessions", json={"car_id": "C", "name": "a\x00b"},
                                  headers=headers, timeout=10), 422)["field"] == "name"
    assert error_of(requests.get(f"{url}/api/v1/tracks/a%00b", timeout=10), 404)["field"] == "track_id"
    not_allowed = requests.patch(f"{url}/api/v1/sessions/{sid}", headers=headers, timeout=10)
    assert not_allowed.status_code == 405 and "GET" in not_allowed.headers["Allow"]
    assert strict_json(not_allowed.text)["error"]["code"] == "method_not_allowed"


def test_a_chunked_body_over_the_limit_is_413(live_server):
    host, port = "127.0.0.1", int(live_server.url.rsplit(":", 1)[1])
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(b"POST /api/v1/sessions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"X-API-Key: " + live_server.api_key.encode() + b"\r\nTransfer-Encoding: chunked\r\n\r\n")
        chunk = b'{"pad": "' + b"x" * 65_536
        try:
            for _ in range(40):  # 2.6 MB, over the 1 MiB limit
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            sock.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # the server may stop reading once it answered
        answer = sock.recv(65536).decode(errors="replace")
    assert answer.startswith("HTTP/1.1 413"), answer[:200]


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_text_the_database_cannot_store_is_refused_and_long_keys_fit(server_factory, database, request):
    settings = {} if database == "sqlite" else {"database_url": request.getfixturevalue("pg_url")}
    server = server_factory(**settings)
    url, headers = server.url, server.headers
    for body in ({"car_id": "C1", "driver": "\x00"}, {"car_id": "C1", "track": "a\x00"}):
        assert error_of(requests.post(f"{url}/api/v1/sessions", json=body, headers=headers, timeout=10), 422)
    car, rule = "C" * 64, "r" * 64
    put = requests.put(f"{url}/api/v1/alert-rules/{rule}?car_id={car}", headers=headers, timeout=10,
                       json={"name": "hot", "channel": "coolant_temp", "comparison": ">", "threshold": 100.0})
    assert put.status_code == 200, put.text
    assert requests.delete(f"{url}/api/v1/alert-rules/{rule}?car_id={car}", headers=headers,
                           timeout=10).status_code == 204
    monitor = connect_monitor(url, "NUL-CAR", server.api_key)
    try:
        sid = monitor.call("session.start", {}, namespace="/monitor", timeout=CALL_TIMEOUT_S)["session"]["session_id"]
        nack = monitor.call("event", {"session_id": sid, "record_id": "r\x00", "event_type": "dtc.set",
                                      "payload": {}}, namespace="/monitor", timeout=CALL_TIMEOUT_S)
        assert nack["ok"] is False and nack["error"]["field"] == "record_id"
    finally:
        monitor.disconnect()


def test_reads_survive_what_was_stored_before_inputs_were_bounded(server_factory):
    server = server_factory()
    url, headers = server.url, server.headers
    sid = requests.post(f"{url}/api/v1/sessions", json={"car_id": "OLD-1"}, headers=headers,
                        timeout=10).json()["session_id"]
    requests.post(f"{url}/api/v1/sessions/{sid}/setup", json={"wing": 1}, headers=headers,
                  timeout=10).raise_for_status()
    server.stop()
    with sqlite3.connect(server.instance / "dashboard.db") as db:  # what an earlier version let in
        db.execute("UPDATE setups SET timestamp = 1795942141000 WHERE session_id = ?", (sid,))
        db.execute("UPDATE session_events SET timestamp = 1e300 WHERE session_id = ?", (sid,))
        db.execute("UPDATE sessions SET stats = ?, latest = ?, started_at = 1e300 WHERE id = ?",
                   ('{"distance_m": Infinity, "max_speed": NaN}', '{"rpm": [Infinity, 1.0, 1]}', sid))
    server.start()
    for path in ("/api/v1/sessions", f"/api/v1/sessions/{sid}", f"/api/v1/sessions/{sid}/setups",
                 f"/api/v1/sessions/{sid}/setup", f"/api/v1/sessions/{sid}/events", f"/api/v1/sessions/{sid}/telemetry",
                 f"/api/v1/sessions/{sid}/export?format=jsonl"):
        resp = requests.get(url + path, timeout=10)
        assert resp.status_code == 200, (path, resp.text[:300])
        if path.endswith("jsonl"):
            continue
        strict_json(resp.text)  # valid JSON: no NaN, no Infinity
    started = requests.post(f"{url}/api/v1/sessions/{sid}/start", headers=headers, timeout=10)
    assert started.status_code == 200, started.text
    viewer = Viewer(url)
    try:
        assert viewer.join(sid)["ok"]
    finally:
        viewer.close()
    assert time.time()  # the server is still up
    assert requests.get(f"{url}/healthz", timeout=10).status_code == 200
