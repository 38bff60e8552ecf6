"""REST API v1 against a real server process: the original design's calls, lifecycle rules, errors, auth."""
from __future__ import annotations

import json
import uuid

import pytest
import requests

from tests.clients import connect_monitor, make_frames
from tests.waiting import wait_for


def post(server, path, body=None, key=True, **kwargs):
    headers = server.headers if key else {}
    if body is not None and not isinstance(body, (str, bytes)):
        return requests.post(server.url + path, json=body, headers=headers, timeout=10, **kwargs)
    return requests.post(server.url + path, data=body, headers={**headers, "Content-Type": "application/json"},
                         timeout=10, **kwargs)


def get(server, path):
    return requests.get(server.url + path, timeout=10)


def new_session(server, car_id=None, **fields):
    body = {"name": "Test Session", "car_id": car_id or f"CAR-{uuid.uuid4().hex[:8]}", "driver": "Test Driver",
            "track": "Test Track", **fields}
    resp = post(server, "/api/v1/sessions", body)
    assert resp.status_code == 201, resp.text
    return resp.json()


def assert_error(resp, status, field=None, code=None):
    assert resp.status_code == status, resp.text
    assert resp.headers["Content-Type"].startswith("application/json")
    error = resp.json()["error"]
    assert error["message"]
    if field is not None:
        assert error.get("field") == field, error
    if code is not None:
        assert error["code"] == code, error
    return error


def test_original_design_calls_work_as_written(live_server):
    created = new_session(live_server, car_id="CAR001")
    assert str(uuid.UUID(created["session_id"], version=4)) == created["session_id"]
    assert created["status"] == "created" and created["driver"] == "Test Driver"
    started = post(live_server, f"/api/v1/sessions/{created['session_id']}/start")
    assert started.status_code == 200 and started.json()["status"] == "active"
    page = get(live_server, "/api/v1/sessions?limit=10&offset=0").json()
    assert page["limit"] == 10 and page["offset"] == 0 and page["total"] >= 1
    assert created["session_id"] in [s["session_id"] for s in page["items"]]
    assert post(live_server, f"/api/v1/sessions/{created['session_id']}/end").json()["status"] == "ended"


def test_list_filters_and_pagination(live_server):
    car = f"CAR-{uuid.uuid4().hex[:8]}"
    ids = [new_session(live_server, car_id=car)["session_id"] for _ in range(3)]
    post(live_server, f"/api/v1/sessions/{ids[0]}/start")
    page = get(live_server, f"/api/v1/sessions?car_id={car}&limit=2&offset=0").json()
    assert page["total"] == 3 and len(page["items"]) == 2
    rest = get(live_server, f"/api/v1/sessions?car_id={car}&limit=2&offset=2").json()
    assert {s["session_id"] for s in page["items"] + rest["items"]} == set(ids)
    active = get(live_server, f"/api/v1/sessions?car_id={car}&status=active").json()
    assert [s["session_id"] for s in active["items"]] == [ids[0]]
    for bad, field in (("limit=0", "limit"), ("limit=101", "limit"), ("limit=x", "limit"),
                       ("offset=-1", "offset"), ("status=flying", "status")):
        assert_error(get(live_server, f"/api/v1/sessions?{bad}"), 422, field)


def test_one_active_session_per_car(live_server):
    car = f"CAR-{uuid.uuid4().hex[:8]}"
    first, second = new_session(live_server, car_id=car), new_session(live_server, car_id=car)
    assert post(live_server, f"/api/v1/sessions/{first['session_id']}/start").status_code == 200
    error = assert_error(post(live_server, f"/api/v1/sessions/{second['session_id']}/start"), 409, code="conflict")
    assert error["session_id"] == first["session_id"]
    post(live_server, f"/api/v1/sessions/{first['session_id']}/stop")
    assert post(live_server, f"/api/v1/sessions/{second['session_id']}/start").json()["status"] == "active"


def test_lifecycle_transitions_and_events(live_server):
    sid = new_session(live_server)["session_id"]
    assert_error(post(live_server, f"/api/v1/sessions/{sid}/stop"), 409, "status")
    assert post(live_server, f"/api/v1/sessions/{sid}/start").json()["status"] == "active"
    assert post(live_server, f"/api/v1/sessions/{sid}/stop").json()["status"] == "stopped"
    assert post(live_server, f"/api/v1/sessions/{sid}/start").json()["status"] == "active"
    assert post(live_server, f"/api/v1/sessions/{sid}/heartbeat").status_code == 200
    ended = post(live_server, f"/api/v1/sessions/{sid}/end").json()
    assert ended["status"] == "ended" and ended["end_reason"] == "ended" and ended["ended_at"]
    again = post(live_server, f"/api/v1/sessions/{sid}/end")
    assert again.status_code == 200 and again.json()["ended_at"] == ended["ended_at"]
    assert_error(post(live_server, f"/api/v1/sessions/{sid}/start"), 409, "status")
    types = [e["event_type"] for e in get(live_server, f"/api/v1/sessions/{sid}/events").json()["items"]]
    assert types == ["session.created", "session.started", "session.stopped", "session.started", "session.ended"]


def test_record_id_makes_start_and_end_idempotent(live_server):
    sid = new_session(live_server)["session_id"]
    first = post(live_server, f"/api/v1/sessions/{sid}/start", {"record_id": "start-1"}).json()
    post(live_server, f"/api/v1/sessions/{sid}/stop")
    again = post(live_server, f"/api/v1/sessions/{sid}/start", {"record_id": "start-1"})
    assert again.status_code == 200 and again.json() == first  # the first answer, unchanged
    end1 = post(live_server, f"/api/v1/sessions/{sid}/end", {"record_id": "end-1"}).json()
    end2 = post(live_server, f"/api/v1/sessions/{sid}/end", {"record_id": "end-1"}).json()
    assert end1 == end2
    events = get(live_server, f"/api/v1/sessions/{sid}/events").json()["items"]
    assert [e["record_id"] for e in events if e["event_type"] == "session.started"] == ["start-1"]
    assert [e["record_id"] for e in events if e["event_type"] == "session.ended"] == ["end-1"]


def test_continuity_aliases(live_server):
    car = f"CAR-{uuid.uuid4().hex[:8]}"
    started = post(live_server, "/session_manager/sessions.start", {"user_id": car, "record_id": "r-1"}).json()
    assert started["status"] == "active" and started["car_id"] == car
    same = post(live_server, "/session_manager/sessions.start", {"car_id": car, "record_id": "r-1"}).json()
    assert same["session_id"] == started["session_id"]
    beat = post(live_server, "/session_manager/sessions.heartbeat", {"session_id": started["session_id"]})
    assert beat.status_code == 200
    ended = post(live_server, "/session_manager/sessions.end", {"session_id": started["session_id"],
                                                                 "record_id": "e-1"}).json()
    assert ended["status"] == "ended"
    assert_error(post(live_server, "/session_manager/sessions.start", {"record_id": "x"}), 422, "car_id")


def test_setup_versions_history_and_current(live_server):
    sid = new_session(live_server)["session_id"]
    assert_error(get(live_server, f"/api/v1/sessions/{sid}/setup"), 404, "setup")
    v1 = post(live_server, f"/api/v1/sessions/{sid}/setup", {"setup": {"front_wing": 3, "tyres": "soft"},
                                                              "timestamp": 1.8e9})
    assert v1.status_code == 201 and v1.json()["version"] == 1
    assert v1.json()["timestamp"].startswith("2027-01-15")
    v2 = post(live_server, f"/api/v1/sessions/{sid}/setup", {"setup": {"front_wing": 4, "tyres": "soft"}}).json()
    assert v2["version"] == 2
    assert get(live_server, f"/api/v1/sessions/{sid}/setup").json()["setup"] == {"front_wing": 4, "tyres": "soft"}
    history = get(live_server, f"/api/v1/sessions/{sid}/setups").json()["items"]
    assert [h["version"] for h in history] == [1, 2] and history[0]["setup"]["front_wing"] == 3
    session = get(live_server, f"/api/v1/sessions/{sid}").json()
    assert session["setup"]["front_wing"] == 4 and session["setup_version"] == 2 and session["setup_timestamp"]


def test_telemetry_and_frames_endpoints(live_server):
    car = f"CAR-{uuid.uuid4().hex[:8]}"
    monitor = connect_monitor(live_server.url, car, live_server.api_key)
    try:
        sid = monitor.call("session.start", {}, namespace="/monitor", timeout=10)["session"]["session_id"]
        frames = make_frames(0, 30)
        frames[-1]["channels"]["fuel_level"] = 41.5
        assert monitor.call("telemetry", {"session_id": sid, "frames": frames}, namespace="/monitor",
                            timeout=10)["acked_seq"] == 29
    finally:
        monitor.disconnect()
    telemetry = get(live_server, f"/api/v1/sessions/{sid}/telemetry").json()
    assert telemetry["channels"]["rpm"]["value"] == 3029.0 and telemetry["channels"]["rpm"]["unit"] == "rpm"
    assert telemetry["channels"]["fuel_level"]["value"] == 41.5 and telemetry["channels"]["rpm"]["age_s"] >= 0
    page = get(live_server, f"/api/v1/sessions/{sid}/frames?after_seq=9&limit=10").json()
    assert [f["seq"] for f in page["items"]] == list(range(10, 20)) and page["next_after_seq"] == 19
    tail = get(live_server, f"/api/v1/sessions/{sid}/frames?after_seq=19&limit=100").json()
    assert [f["seq"] for f in tail["items"]] == list(range(20, 30)) and tail["next_after_seq"] is None
    session = get(live_server, f"/api/v1/sessions/{sid}").json()
    assert session["stats"]["frames"] == 30 and session["telemetry"]["rpm"] == 3029.0


@pytest.mark.parametrize("path,body,status,field", [
    ("/api/v1/sessions", "{not json", 400, "body"),
    ("/api/v1/sessions", "[1, 2]", 400, "body"),
    ("/api/v1/sessions", "", 400, "body"),
    ("/api/v1/sessions", {"name": "x"}, 422, "car_id"),
    ("/api/v1/sessions", {"car_id": 5}, 422, "car_id"),
    ("/api/v1/sessions", {"car_id": "has space"}, 422, "car_id"),
    ("/api/v1/sessions", {"car_id": "C1", "driver": "x" * 201}, 422, "driver"),
    ("/api/v1/sessions", {"car_id": "C1", "surprise": 1}, 422, "surprise"),
])
def test_bad_session_bodies(live_server, path, body, status, field):
    assert_error(post(live_server, path, body), status, field)


def test_bad_ids_and_setups(live_server):
    sid = new_session(live_server)["session_id"]
    unknown = str(uuid.uuid4())
    for path in (f"/api/v1/sessions/{unknown}", "/api/v1/sessions/not-a-uuid", f"/api/v1/sessions/{unknown}/frames",
                 f"/api/v1/sessions/{unknown}/telemetry", f"/api/v1/sessions/{unknown}/events"):
        assert_error(get(live_server, path), 404, "session_id")
    assert_error(post(live_server, f"/api/v1/sessions/{unknown}/start"), 404, "session_id")
    assert_error(post(live_server, f"/api/v1/sessions/{sid}/start", {"record_id": 7}), 422, "record_id")
    assert_error(post(live_server, f"/api/v1/sessions/{sid}/setup", {"setup": [1, 2]}), 422, "setup")
    for timestamp in (1795942141000, 1e300, -1e20, "10000-01-01T00:00:00+00:00", "soon"):
        assert_error(post(live_server, f"/api/v1/sessions/{sid}/setup", {"setup": {"wing": 1}, "timestamp": timestamp}),
                     422, "timestamp")
    for raw in ('{"setup": {"wing": 1}, "timestamp": Infinity}', '{"setup": {"wing": NaN}}'):
        assert_error(post(live_server, f"/api/v1/sessions/{sid}/setup", raw), 400, "body")  # not JSON
    assert_error(post(live_server, f"/api/v1/sessions/{sid}/setup", {"setup": {"k": "v" * 70000}}), 413, "setup")
    assert_error(post(live_server, f"/api/v1/sessions/{sid}/setup", json.dumps({"setup": {"k": "v" * 1_100_000}})),
                 413, "body")
    assert_error(get(live_server, f"/api/v1/sessions/{sid}/frames?after_seq=abc"), 422, "after_seq")
    assert_error(get(live_server, "/api/v1/nowhere"), 404)
    health = get(live_server, "/healthz").json()
    assert health["ok"] is True and health["database"] is True and health["writer_backlog"] >= 0


def test_mutations_need_the_api_key(live_server):
    sid = new_session(live_server)["session_id"]
    for path in ("/api/v1/sessions", f"/api/v1/sessions/{sid}/start", f"/api/v1/sessions/{sid}/setup",
                 "/session_manager/sessions.start"):
        assert_error(post(live_server, path, {"car_id": "C1"}, key=False), 401, "X-API-Key")
    wrong = requests.post(f"{live_server.url}/api/v1/sessions/{sid}/start", headers={"X-API-Key": "nope"}, timeout=5)
    assert_error(wrong, 401)
    assert_error(requests.delete(f"{live_server.url}/api/v1/sessions/{sid}", timeout=5), 401)
    assert get(live_server, f"/api/v1/sessions/{sid}").status_code == 200  # reads stay open


def test_delete_session(live_server):
    sid = new_session(live_server)["session_id"]
    post(live_server, f"/api/v1/sessions/{sid}/setup", {"setup": {"a": 1}})
    assert requests.delete(f"{live_server.url}/api/v1/sessions/{sid}", headers=live_server.headers,
                           timeout=5).status_code == 204
    assert_error(get(live_server, f"/api/v1/sessions/{sid}"), 404)
    assert_error(requests.delete(f"{live_server.url}/api/v1/sessions/{sid}", headers=live_server.headers,
                                 timeout=5), 404)


def test_metrics_and_openapi(live_server):
    text = get(live_server, "/metrics").text
    for name in ("dashboard_frames_received_total", "dashboard_frames_broadcast_total",
                 "dashboard_monitors_connected", "dashboard_viewers_connected",
                 "dashboard_ingest_to_broadcast_seconds_bucket", "dashboard_db_write_batch_frames_bucket"):
        assert name in text
    doc = get(live_server, "/api/v1/openapi.json").json()
    assert doc["openapi"].startswith("3.1") and "/api/v1/sessions/{session_id}/setup" in doc["paths"]


def test_open_server_without_key_says_so(server_factory):
    server = server_factory(api_key=None)
    wait_for(lambda: "DASHBOARD_API_KEY is not set" in server.log_text(), 10, "the loud warning")
    assert requests.post(server.url + "/api/v1/sessions", json={"car_id": "C1"}, timeout=5).status_code == 201


def test_export_csv_has_every_frame_and_channel_with_units(live_server):
    import csv
    import io

    car = f"CAR-{uuid.uuid4().hex[:8]}"
    monitor = connect_monitor(live_server.url, car, live_server.api_key)
    try:
        sid = monitor.call("session.start", {}, namespace="/monitor", timeout=10)["session"]["session_id"]
        frames = make_frames(0, 12)
        frames[3]["channels"]["rpm"] = None
        frames[5]["channels"]["oil_temp"] = 121.5
        monitor.call("telemetry", {"session_id": sid, "frames": frames}, namespace="/monitor", timeout=10)
    finally:
        monitor.disconnect()
    resp = get(live_server, f"/api/v1/sessions/{sid}/export.csv")
    assert resp.status_code == 200 and resp.headers["Content-Type"].startswith("text/csv")
    assert f"session-{sid}.csv" in resp.headers["Content-Disposition"]
    rows = list(csv.DictReader(io.StringIO(resp.text)))
    assert [int(r["seq"]) for r in rows] == list(range(12))
    assert rows[0]["rpm (rpm)"] == "3000.0" and rows[3]["rpm (rpm)"] == ""
    assert rows[5]["oil_temp (°C)"] == "121.5" and rows[4]["oil_temp (°C)"] == ""
    assert rows[0]["time_utc"].endswith("+00:00") and float(rows[1]["t"]) > float(rows[0]["t"])
    assert_error(get(live_server, f"/api/v1/sessions/{uuid.uuid4()}/export.csv"), 404)


def test_export_formats_whole_session_and_one_lap(live_server):
    import xml.etree.ElementTree as ET

    from dashboard.telemetry.export import read_jsonl
    from tests.server.test_laps import recorded_frames, stream

    frames = recorded_frames()
    sid = stream(live_server, f"CAR-{uuid.uuid4().hex[:8]}", frames, track_id=None)
    lines = read_jsonl(get(live_server, f"/api/v1/sessions/{sid}/export?format=jsonl").text)
    assert [f["seq"] for f in lines] == [f["seq"] for f in frames] and lines[100]["channels"] == frames[100]["channels"]
    gpx = ET.fromstring(get(live_server, f"/api/v1/sessions/{sid}/export?format=gpx").content)
    points = gpx.findall(".//{http://www.topografix.com/GPX/1/1}trkpt")
    assert len(points) == len(frames) and abs(float(points[0].get("lat")) - frames[0]["channels"]["lat"]) < 1e-7
    assert_error(get(live_server, f"/api/v1/sessions/{sid}/export?format=xls"), 422, "format")
    assert_error(get(live_server, f"/api/v1/sessions/{sid}/export?lap=1"), 404, "lap")  # no track, no laps
    from dashboard.server.tracks import ORLANDO_TRACK_ID

    requests.put(f"{live_server.url}/api/v1/sessions/{sid}/track", json={"track_id": ORLANDO_TRACK_ID},
                 headers=live_server.headers, timeout=30).raise_for_status()
    lap2 = read_jsonl(get(live_server, f"/api/v1/sessions/{sid}/export?format=jsonl&lap=2").text)
    laps = get(live_server, f"/api/v1/sessions/{sid}/laps").json()["items"]
    window = next(lap for lap in laps if lap["lap"] == 2)
    assert lap2 and all(window["start_t"] <= f["t"] <= window["end_t"] for f in lap2)
    assert 50 < lap2[-1]["t"] - lap2[0]["t"] <= window["lap_time"]
