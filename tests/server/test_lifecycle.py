"""The lifecycle decides: frames for a stopped or ended session, a car reconnecting to a stopped session,
the transition table, and the contract points of the original designs."""
from __future__ import annotations

import time
import uuid
from datetime import datetime, timezone

import pytest
import requests

from dashboard.errors import Conflict, InvalidInput
from dashboard.server.lifecycle import TRANSITIONS, plan
from dashboard.sessions import SEED_METHODS, SessionManager
from tests.clients import CALL_TIMEOUT_S, connect_monitor, make_frames


def call(monitor, event, data):
    return monitor.call(event, data, namespace="/monitor", timeout=CALL_TIMEOUT_S)


def test_the_transition_table():
    assert plan("start", "created").to == "active" and plan("start", "stopped").to == "active"
    assert plan("start", "active") is None and plan("stop", "stopped") is None and plan("end", "expired") is None
    assert plan("end", "stopped").command == "end" and plan("expire", "active").command is None
    for action, status in (("start", "ended"), ("stop", "created"), ("expire", "stopped"), ("stop", "ended")):
        with pytest.raises(Conflict) as exc:
            plan(action, status)
        assert exc.value.field == "status" and exc.value.extra["status"] == status
    for transition in TRANSITIONS.values():  # every status is either a move, already there, or refused: no gap
        assert not transition.allowed_from & transition.unchanged_in


def test_frames_after_a_stop_are_refused_and_the_car_is_told(live_server):
    car = f"CAR-{uuid.uuid4().hex[:8]}"
    monitor = connect_monitor(live_server.url, car, live_server.api_key)
    try:
        sid = call(monitor, "session.start", {"record_id": str(uuid.uuid4())})["session"]["session_id"]
        now = time.time()
        before = make_frames(0, 10, t0=now - 5)
        assert call(monitor, "telemetry", {"session_id": sid, "frames": before})["acked_seq"] == 9
        requests.post(f"{live_server.url}/api/v1/sessions/{sid}/stop", headers=live_server.headers,
                      timeout=10).raise_for_status()
        # the backlog sampled while the session was active is still taken; what came after the stop is not
        late = make_frames(10, 5, t0=now - 1) + make_frames(15, 5, t0=time.time() + 1)
        ack = call(monitor, "telemetry", {"session_id": sid, "frames": late})
        assert ack["ok"] and ack["session_status"] == "stopped" and ack["acked_seq"] == 14
        assert [r["seq"] for r in ack["rejected"]] == [15, 16, 17, 18, 19]
        assert {r["error"]["code"] for r in ack["rejected"]} == {"session_not_active"}
        # reconnecting does not start it again: the pit decided
        again = call(monitor, "session.start", {"session_id": sid})
        assert again["session"]["status"] == "stopped"
        assert call(monitor, "session.start", {})["session"]["session_id"] == sid  # the car's stopped session
        requests.post(f"{live_server.url}/api/v1/sessions/{sid}/end", headers=live_server.headers,
                      timeout=10).raise_for_status()
        ended = call(monitor, "telemetry", {"session_id": sid, "frames": make_frames(20, 2, t0=time.time())})
        assert ended["session_status"] == "ended" and len(ended["rejected"]) == 2
        assert call(monitor, "session.start", {"session_id": sid})["session"]["status"] == "ended"
    finally:
        monitor.disconnect()
    stored = requests.get(f"{live_server.url}/api/v1/sessions/{sid}/frames", timeout=10).json()["items"]
    assert [f["seq"] for f in stored] == list(range(15))


def test_a_seq_stored_with_other_values_is_a_conflict_naming_where_to_continue(live_server):
    monitor = connect_monitor(live_server.url, f"CAR-{uuid.uuid4().hex[:8]}", live_server.api_key)
    try:
        sid = call(monitor, "session.start", {})["session"]["session_id"]
        first = make_frames(0, 20)
        assert call(monitor, "telemetry", {"session_id": sid, "frames": first})["acked_seq"] == 19
        assert call(monitor, "telemetry", {"session_id": sid, "frames": first[5:]})["ok"]  # a resend: fine
        reinstalled = make_frames(0, 5, t0=time.time())  # a monitor counting from 0 again: other values
        nack = call(monitor, "telemetry", {"session_id": sid, "frames": reinstalled})
        assert nack["ok"] is False and nack["error"]["code"] == "seq_conflict" and nack["error"]["next_seq"] == 20
        renumbered = [{**f, "seq": f["seq"] + 20} for f in reinstalled]
        assert call(monitor, "telemetry", {"session_id": sid, "frames": renumbered})["acked_seq"] == 24
    finally:
        monitor.disconnect()
    stored = requests.get(f"{live_server.url}/api/v1/sessions/{sid}/frames", timeout=10).json()["items"]
    assert [f["seq"] for f in stored] == list(range(25))
    assert [f["t"] for f in stored[:20]] == [f["t"] for f in first]


def test_frames_far_ahead_of_the_server_clock_are_refused_and_latest_follows_seq(live_server):
    monitor = connect_monitor(live_server.url, f"CAR-{uuid.uuid4().hex[:8]}", live_server.api_key)
    try:
        sid = call(monitor, "session.start", {})["session"]["session_id"]
        now = time.time()
        year_2099 = datetime(2099, 1, 1, tzinfo=timezone.utc).timestamp()
        batch = [{"seq": 0, "t": year_2099, "channels": {"rpm": 9999.0}},
                 {"seq": 1, "t": now, "channels": {"rpm": 3000.0}},
                 {"seq": 2, "t": now - 1, "channels": {"rpm": 3100.0}}]  # an older sample, a later seq
        ack = call(monitor, "telemetry", {"session_id": sid, "frames": batch})
        assert [r["seq"] for r in ack["rejected"]] == [0] and ack["rejected"][0]["error"]["field"] == "t"
    finally:
        monitor.disconnect()
    latest = requests.get(f"{live_server.url}/api/v1/sessions/{sid}/telemetry", timeout=10).json()
    assert latest["channels"]["rpm"]["value"] == 3100.0


def test_live_frames_far_behind_the_server_clock_are_refused_and_backfill_is_taken(server_factory):
    server = server_factory(max_clock_behind_s="60")  # DASHBOARD_MAX_CLOCK_BEHIND_S
    monitor = connect_monitor(server.url, f"CAR-{uuid.uuid4().hex[:8]}", server.api_key)
    try:
        sid = call(monitor, "session.start", {})["session"]["session_id"]
        now = time.time()
        live = [{"seq": 0, "t": now - 120, "channels": {"rpm": 1000.0}},  # a car clock two minutes slow
                {"seq": 1, "t": now - 30, "channels": {"rpm": 2000.0}}]
        ack = call(monitor, "telemetry", {"session_id": sid, "frames": live})
        refused = [(r["seq"], r["error"]["code"], r["error"]["field"]) for r in ack["rejected"]]
        assert refused == [(0, "clock_behind", "t")]
        assert "s behind the server's clock" in ack["rejected"][0]["error"]["message"]
        old = [{"seq": 2, "t": now - 3 * 86_400, "channels": {"rpm": 3000.0}}]  # from the outbox, after a weekend
        ack = call(monitor, "telemetry", {"session_id": sid, "frames": old, "backfill": True})
        assert ack["ok"] and not ack["rejected"] and ack["acked_seq"] == 2
    finally:
        monitor.disconnect()
    stored = requests.get(f"{server.url}/api/v1/sessions/{sid}/frames", timeout=10).json()["items"]
    assert [f["seq"] for f in stored] == [1, 2]


def test_legacy_start_refuses_a_second_active_session_for_the_car(live_server):
    car = f"CAR-{uuid.uuid4().hex[:8]}"
    url, headers = f"{live_server.url}/session_manager/sessions.start", live_server.headers
    first = requests.post(url, json={"car_id": car, "record_id": "a"}, headers=headers, timeout=10)
    assert first.status_code == 200
    again = requests.post(url, json={"car_id": car, "record_id": "a"}, headers=headers, timeout=10)
    assert again.json() == first.json()  # the same record_id: the first answer
    other = requests.post(url, json={"car_id": car, "record_id": "b"}, headers=headers, timeout=10)
    assert other.status_code == 409
    assert other.json()["error"]["session_id"] == first.json()["session_id"]


def test_setup_is_the_body_and_its_timestamp_is_iso_datetime_or_epoch(live_server):
    sid = requests.post(f"{live_server.url}/api/v1/sessions", json={"car_id": "SETUP-1"},
                        headers=live_server.headers, timeout=10).json()["session_id"]
    raw = requests.post(f"{live_server.url}/api/v1/sessions/{sid}/setup",
                        json={"front_wing": 3, "tyre_pressure_fl": 1.9}, headers=live_server.headers, timeout=10)
    assert raw.status_code == 201 and raw.json()["setup"] == {"front_wing": 3, "tyre_pressure_fl": 1.9}
    iso = requests.post(f"{live_server.url}/api/v1/sessions/{sid}/setup",
                        json={"setup": {"front_wing": 4}, "timestamp": "2026-11-29T10:00:00+00:00"},
                        headers=live_server.headers, timeout=10)
    assert iso.status_code == 201 and iso.json()["timestamp"] == "2026-11-29T10:00:00+00:00"
    manager = SessionManager()
    try:
        own = manager.create_session(car_id="SETUP-2")
        at = datetime(2026, 11, 29, 10, 0, tzinfo=timezone.utc)
        for stamp in (at.isoformat(), at, at.timestamp()):
            assert manager.update_setup(own, {"wing": 1}, stamp)["timestamp"] == at.isoformat()
        for bad in (at.timestamp() * 1000, float("inf"), -1e20, "10000-01-01T00:00:00+00:00", "2026-11-29T10:00"):
            with pytest.raises(InvalidInput) as exc:
                manager.update_setup(own, {"wing": 1}, bad)
            assert exc.value.field == "timestamp"
        assert manager.get_session(own)["setup_timestamp"] == at.isoformat()
    finally:
        manager.close()


def test_the_facade_keeps_exactly_the_original_methods():
    public = {name for name in dir(SessionManager)
              if not name.startswith("_") and callable(getattr(SessionManager, name))}
    assert public == SEED_METHODS


def test_a_car_back_from_offline_finds_the_session_the_pit_started_meanwhile(live_server):
    car = f"CAR-{uuid.uuid4().hex[:8]}"
    url, headers = live_server.url, live_server.headers
    monitor = connect_monitor(url, car, live_server.api_key)
    try:
        old = call(monitor, "session.start", {"record_id": "first"})["session"]["session_id"]
    finally:
        monitor.disconnect()
    # while the car is away the pit ends its session and starts a new one for it: the car misses both commands
    requests.post(f"{url}/api/v1/sessions/{old}/end", headers=headers, timeout=10).raise_for_status()
    new = requests.post(f"{url}/api/v1/sessions", json={"car_id": car}, headers=headers, timeout=10).json()
    requests.post(f"{url}/api/v1/sessions/{new['session_id']}/start", headers=headers, timeout=10).raise_for_status()
    monitor = connect_monitor(url, car, live_server.api_key)
    try:
        back = call(monitor, "session.start", {"record_id": "first", "session_id": old})["session"]
        assert back["session_id"] == new["session_id"] and back["status"] == "active"
    finally:
        monitor.disconnect()
    # with no session started meanwhile, the ended one is the answer: the car waits for the pit
    requests.post(f"{url}/api/v1/sessions/{new['session_id']}/end", headers=headers, timeout=10).raise_for_status()
    monitor = connect_monitor(url, car, live_server.api_key)
    try:
        assert call(monitor, "session.start", {"session_id": new["session_id"]})["session"]["status"] == "ended"
    finally:
        monitor.disconnect()
