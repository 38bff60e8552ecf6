"""The pit wall in the server, end to end: pit lane, pit stops, drivers, series rules, fuel, the team view."""
from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import socketio

from dashboard import schemas
from dashboard.server.tracks import ORLANDO_TRACK_ID
from dashboard.telemetry.laps import ORLANDO_KART_CENTER
from tests.clients import CALL_TIMEOUT_S, make_frames, metric, send_frames
from tests.server.test_laps import BATCH, REFERENCE_LAPS, recorded_frames
from tests.telemetry.test_pitlane import (
    HOLD_FIX,
    HOLD_S,
    PIT_IN_FIX,
    PIT_OUT_FIX,
    crossing_t,
    line_across,
    recording,
    with_hold,
)
from tests.waiting import wait_for

TOLERANCE_S = 0.1


def api(server, method: str, path: str, **kwargs: Any) -> requests.Response:
    return requests.request(method, f"{server.url}/api/v1{path}", headers=server.headers, timeout=30, **kwargs)


def new_session(server, car: str, track_id: str | None = ORLANDO_TRACK_ID) -> str:
    created = api(server, "post", "/sessions", json={"car_id": car, "track_id": track_id})
    assert created.status_code == 201, created.text
    return created.json()["session_id"]


def send(server, car: str, sid: str, frames: list[dict]) -> None:
    send_frames(server, car, sid, frames, BATCH)


def events_of(server, sid: str, kind: str) -> list[dict]:
    items = api(server, "get", f"/sessions/{sid}/events", params={"limit": 10000}).json()["items"]
    return [e for e in items if e["event_type"] == kind]


def line(points: Any) -> dict:
    return {"a": list(points.a), "b": list(points.b), "direction": points.direction}


def orlando_with_lane(lane_in: Any, lane_out: Any, name: str = "OKC with pits") -> dict:
    track = ORLANDO_KART_CENTER.to_dict()
    track["name"] = name
    track["pit_lane"] = {"pit_in": line(lane_in), "pit_out": line(lane_out)}
    return track


def shifted(frames: list[dict]) -> list[dict]:
    """Frames moved by whole seconds to end now (live frames far in the past are refused)."""
    shift = round(time.time() - frames[-1]["t"])
    return [{**f, "t": f["t"] + shift} for f in frames]


# ------------------------------------------------------------------ pit lane CRUD
@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_a_track_carries_a_pit_lane(server_factory, request, database):
    settings = {"database_url": request.getfixturevalue("pg_url")} if database == "postgresql" else {}
    server = server_factory(**settings)  # migrations run on start: 0009 on SQLite and on PostgreSQL
    original = recording()
    body = orlando_with_lane(line_across(original, PIT_IN_FIX), line_across(original, PIT_OUT_FIX))
    created = api(server, "post", "/tracks", json=body)
    assert created.status_code == 201, created.text
    track = created.json()
    assert track["pit_lane"]["pit_in"]["a"] == pytest.approx(body["pit_lane"]["pit_in"]["a"])
    assert api(server, "get", f"/tracks/{track['track_id']}").json()["pit_lane"] == track["pit_lane"]
    assert api(server, "get", f"/tracks/{ORLANDO_TRACK_ID}").json()["pit_lane"] is None

    bad = {**body, "pit_lane": {"pit_in": {"a": [28.4, -81.3], "b": [28.4, -81.3]},
                                "pit_out": body["pit_lane"]["pit_out"]}}
    refused = api(server, "put", f"/tracks/{track['track_id']}", json=bad)
    assert refused.status_code == 422 and refused.json()["error"]["field"] == "pit_lane.pit_in.b"

    without = {k: v for k, v in body.items() if k != "pit_lane"}
    assert api(server, "put", f"/tracks/{track['track_id']}", json=without).json()["pit_lane"] is None

    # the settings table of 0009: a roster survives a restart on either database
    assert api(server, "post", "/cars/PG-1/drivers", json={"driver_id": "d1", "name": "Ann"}).status_code == 201
    server.restart()
    assert [d["driver_id"] for d in api(server, "get", "/cars/PG-1/drivers").json()["items"]] == ["d1"]


# ------------------------------------------------------------------ pit stops
def test_a_pit_stop_from_the_recording_with_a_held_position(server_factory):
    live_server = server_factory()
    original = recording()
    lane_in, lane_out = line_across(original, PIT_IN_FIX), line_across(original, PIT_OUT_FIX)
    track = api(live_server, "post", "/tracks", json=orlando_with_lane(lane_in, lane_out)).json()
    frames = shifted([{**f, "channels": {k: v for k, v in f["channels"].items() if v is not None}}
                      for f in with_hold(original, HOLD_FIX, HOLD_S)])
    shift = frames[0]["t"] - original[0]["t"]
    expected_lane = crossing_t(original, PIT_OUT_FIX) - crossing_t(original, PIT_IN_FIX) + HOLD_S
    car = f"PIT-{uuid.uuid4().hex[:6]}"
    sid = new_session(live_server, car, track["track_id"])
    send(live_server, car, sid, frames)

    stops = wait_for(lambda: events_of(live_server, sid, "pit.stop"), 15, "the pit.stop event")
    assert len(stops) == 1
    stop = stops[0]["payload"]
    assert stop["lane_time"] == pytest.approx(expected_lane, abs=TOLERANCE_S)
    assert stop["stationary_time"] == pytest.approx(HOLD_S, abs=TOLERANCE_S)
    assert stop["entry_t"] == pytest.approx(crossing_t(original, PIT_IN_FIX) + shift, abs=TOLERANCE_S)
    assert [e["payload"]["stop"] for e in events_of(live_server, sid, "pit.entry")] == [1]

    def laps() -> list[dict]:
        items = api(live_server, "get", f"/sessions/{sid}/laps").json()["items"]
        return items if len(items) >= len(REFERENCE_LAPS) + 1 else []

    before = wait_for(laps, 15, "the laps")
    schemas.LapList.model_validate(api(live_server, "get", f"/sessions/{sid}/laps").json())
    pit_laps = [lap for lap in before if lap["pit_in"] or lap["pit_out"]]
    # the lane is on the path out of the pits at the start: the out-lap (lap 0) holds entry and exit
    assert [(lap["lap"], lap["pit_in"], lap["pit_out"], lap["in_lap"]) for lap in pit_laps] == [(0, True, True, True)]

    # timed again from the stored frames (as after a restart or a track change): the same stop, logged once
    retimed = api(live_server, "put", f"/sessions/{sid}/track", json={"track_id": track["track_id"]}).json()
    assert [(lap["lap"], lap["pit_in"], lap["pit_out"]) for lap in retimed["items"]] == \
        [(lap["lap"], lap["pit_in"], lap["pit_out"]) for lap in before]
    assert len(events_of(live_server, sid, "pit.stop")) == 1

    # after a kill -9 the active session is timed again from its stored frames: the same laps and stop
    live_server.restart()
    wait_for(lambda: metric(live_server.url, "dashboard_lap_replays_total") >= 1, 30, "the replay after restart")
    after = api(live_server, "get", f"/sessions/{sid}/laps").json()["items"]
    assert [(lap["lap"], lap["pit_in"], lap["pit_out"], lap["lap_time"]) for lap in after] == \
        [(lap["lap"], lap["pit_in"], lap["pit_out"], lap["lap_time"]) for lap in before]
    assert [e["payload"]["stationary_time"] for e in events_of(live_server, sid, "pit.stop")] == \
        [stop["stationary_time"]]


# ------------------------------------------------------------------ drivers
def test_a_driver_change_is_stamped_on_the_following_laps(live_server):
    car = f"DRV-{uuid.uuid4().hex[:6]}"
    for driver_id, name in (("ann", "Ann Example"), ("bob", "Bob Example")):
        added = api(live_server, "post", f"/cars/{car}/drivers", json={"driver_id": driver_id, "name": name})
        assert added.status_code == 201, added.text
    assert api(live_server, "post", f"/cars/{car}/drivers", json={"driver_id": "ann", "name": "A"}).status_code == 409
    changed = api(live_server, "put", f"/cars/{car}/drivers/bob", json={"name": "Bob", "max_stint_s": 3600})
    assert changed.json()["max_stint_s"] == 3600
    assert api(live_server, "put", f"/cars/{car}/drivers/nobody", json={"name": "X"}).status_code == 404

    frames = recorded_frames()
    sid = new_session(live_server, car)
    first = api(live_server, "post", f"/sessions/{sid}/driver-change",
                json={"driver_id": "ann", "at": frames[0]["t"]})
    assert first.status_code == 201, first.text
    half = len(frames) // 2
    send(live_server, car, sid, frames[:half])
    at = frames[half]["t"]  # bob gets in here: every lap started after it is his
    assert api(live_server, "post", f"/sessions/{sid}/driver-change",
               json={"driver_id": "bob", "at": at}).status_code == 201
    assert api(live_server, "post", f"/sessions/{sid}/driver-change",
               json={"driver_id": "carl"}).json()["error"]["field"] == "driver_id"
    send(live_server, car, sid, frames[half:])

    def laps() -> list[dict]:
        items = api(live_server, "get", f"/sessions/{sid}/laps").json()["items"]
        return items if len([lap for lap in items if not lap["out_lap"]]) >= len(REFERENCE_LAPS) else []

    items = wait_for(laps, 15, "every lap")
    expected = [("bob" if lap["start_t"] >= at else "ann") for lap in items]
    assert [lap["driver_id"] for lap in items] == expected
    assert "ann" in expected and "bob" in expected
    changes = events_of(live_server, sid, "driver.change")
    assert [(e["payload"]["driver_id"], e["payload"]["at"]) for e in changes] == [("ann", frames[0]["t"]),
                                                                                    ("bob", at)]
    # timed again from the stored frames: the changes come from the event log, the stamps are the same
    retimed = api(live_server, "put", f"/sessions/{sid}/track", json={"track_id": ORLANDO_TRACK_ID}).json()
    assert [lap["driver_id"] for lap in retimed["items"]] == expected
    stints = schemas.StintList.model_validate(api(live_server, "get", f"/sessions/{sid}/stints").json()).items
    assert [(st.driver_id, st.start_t) for st in stints] == [("ann", frames[0]["t"]), ("bob", at)]
    assert sum(st.laps for st in stints) == len(items)
    bob_timed = [lap["lap_time"] for lap in items
                 if lap["driver_id"] == "bob" and not (lap["out_lap"] or lap["in_lap"])]
    assert stints[1].best == pytest.approx(min(bob_timed))
    assert "Ann Example" not in live_server.log_text() and "Bob Example" not in live_server.log_text()
    assert api(live_server, "delete", f"/cars/{car}/drivers/bob").status_code == 204
    assert [d["driver_id"] for d in api(live_server, "get", f"/cars/{car}/drivers").json()["items"]] == ["ann"]


# ------------------------------------------------------------------ series rules
def test_a_stint_limit_alert_at_the_right_time(server_factory):
    server = server_factory(expiry_check_s="0.2")
    car = f"RULE-{uuid.uuid4().hex[:6]}"
    api(server, "post", f"/cars/{car}/drivers", json={"driver_id": "ann", "name": "Ann"}).raise_for_status()
    sid = new_session(server, car, None)
    api(server, "post", f"/sessions/{sid}/start").raise_for_status()
    put = api(server, "put", "/series-rules", params={"session_id": sid},
              json={"max_stint_s": 20, "warn_lead_s": 10})
    assert put.status_code == 200 and put.json()["source"] == "session", put.text
    assert api(server, "get", "/series-rules", params={"car_id": car}).json()["source"] == "none"
    change_at = time.time()
    api(server, "post", f"/sessions/{sid}/driver-change", json={"driver_id": "ann", "at": change_at}).raise_for_status()

    def alerts(severity: str) -> list[dict]:
        return [a for a in api(server, "get", f"/sessions/{sid}/alerts").json()["items"]
                if a["rule_id"] == "series.max_stint" and a["severity"] == severity]

    warned = wait_for(lambda: alerts("warning"), 20, "the stint warning")[0]
    seen_warn = time.time()
    assert warned["raised_t"] == pytest.approx(change_at + 10, abs=0.01)
    assert change_at + 10 <= seen_warn <= change_at + 10 + 5  # raised when due, not long after
    assert "Maximum stint" in warned["name"]
    breached = wait_for(lambda: alerts("critical"), 20, "the stint limit broken")[0]
    assert breached["raised_t"] == pytest.approx(change_at + 20, abs=0.01)
    assert time.time() >= change_at + 20
    assert not [a for a in alerts("warning") if a["active"]]  # the warning gave way to the breach
    logged = [e["payload"]["rule_id"] for e in events_of(server, sid, "alert.raised")]
    assert logged == ["series.max_stint", "series.max_stint"]
    team = api(server, "get", "/team").json()
    row = next(c for c in team["cars"] if c["session_id"] == sid)
    assert row["stint"]["limit_s"] == 20 and row["stint"]["left_s"] < 0
    assert row["driver"] == {"driver_id": "ann", "name": "Ann"}


# ------------------------------------------------------------------ fuel
def test_fuel_model_laps_left_and_the_low_fuel_alert(live_server):
    car = f"FUEL-{uuid.uuid4().hex[:6]}"
    sid = new_session(live_server, car)
    assert api(live_server, "put", f"/sessions/{sid}/fuel", json={"tank_l": 40}).status_code == 422
    configured = api(live_server, "put", f"/sessions/{sid}/fuel",
                     json={"tank_l": 40, "use_per_lap_l": 2, "alert_laps_left": 17.5})
    assert configured.status_code == 200, configured.text
    assert configured.json()["estimate"]["laps_left"] == 20
    send(live_server, car, sid, recorded_frames())

    def settled() -> dict:
        laps = api(live_server, "get", f"/sessions/{sid}/laps").json()["items"]
        return laps if len([lap for lap in laps if not lap["out_lap"]]) >= len(REFERENCE_LAPS) else []

    laps = wait_for(settled, 15, "every lap")
    fuel = schemas.FuelOut.model_validate(api(live_server, "get", f"/sessions/{sid}/fuel").json()).model_dump()
    assert fuel["source"] == "session" and fuel["estimate"]["unit"] == "l"
    assert fuel["estimate"]["level"] == pytest.approx(40 - 2 * len(laps))
    assert fuel["estimate"]["laps_left"] == pytest.approx(20 - len(laps))
    assert all(lap["fuel_used"] == 2 for lap in laps)
    low = wait_for(lambda: [a for a in api(live_server, "get", f"/sessions/{sid}/alerts").json()["items"]
                            if a["rule_id"] == "fuel.low"], 10, "the low-fuel alert")
    assert len(low) == 1 and low[0]["value"] <= 17.5 and low[0]["lap"] is not None

    refilled = api(live_server, "post", f"/sessions/{sid}/fuel/refill", json={"added": 10})
    assert refilled.json()["estimate"]["level"] == pytest.approx(min(40, 40 - 2 * len(laps) + 10))
    assert api(live_server, "post", f"/sessions/{sid}/fuel/refill", json={}).status_code == 422
    wait_for(lambda: not [a for a in api(live_server, "get", f"/sessions/{sid}/alerts").json()["items"]
                          if a["rule_id"] == "fuel.low" and a["active"]], 10, "the low-fuel alert cleared")
    assert [e["payload"]["added"] for e in events_of(live_server, sid, "fuel.crew")] == [10]


# ------------------------------------------------------------------ the team view
class TeamViewer:
    def __init__(self, url: str) -> None:
        self.client = socketio.Client(reconnection=False)
        self.updates: list[dict] = []
        self.rows: dict[str, dict] = {}
        self.client.on("team.update", self.updates.append, namespace="/dashboard")
        self.client.connect(url, namespaces=["/dashboard"], transports=["websocket"], wait_timeout=10)

    def join(self) -> dict:
        ack = self.client.call("team.join", {}, namespace="/dashboard", timeout=CALL_TIMEOUT_S)
        self.rows = {car["session_id"]: car for car in ack["snapshot"]["cars"]}
        return ack

    def row(self, sid: str) -> dict | None:
        """The car's row as a page has it: the join snapshot's, with every update merged in."""
        row = self.rows.get(sid)
        for update in list(self.updates):
            for car in update["cars"]:
                if car["session_id"] == sid:
                    row = dict(car)
            for change in update["changes"]:
                if change["session_id"] == sid and row is not None:
                    row = {**row, **change}
            if sid in update["ended"]:
                row = None
        return row


def test_the_team_snapshot_and_team_updates_for_two_cars(server_factory):
    server = server_factory()
    car_a, car_b = "TEAM-A", "TEAM-B"
    api(server, "post", f"/cars/{car_a}/drivers", json={"driver_id": "ann", "name": "Ann"}).raise_for_status()
    sid_a, sid_b = new_session(server, car_a), new_session(server, car_b, None)
    frames_a = recorded_frames()
    api(server, "post", f"/sessions/{sid_a}/driver-change",
        json={"driver_id": "ann", "at": frames_a[0]["t"]}).raise_for_status()
    send(server, car_a, sid_a, frames_a)
    api(server, "post", f"/sessions/{sid_b}/start").raise_for_status()  # active, nothing sent yet
    viewer = TeamViewer(server.url)
    try:
        ack = viewer.join()
        assert ack["ok"], ack
        schemas.TeamJoinAck.model_validate(ack)
        rows = {car["session_id"]: car for car in ack["snapshot"]["cars"]}
        assert set(rows) == {sid_a, sid_b}
        a = wait_for(lambda: next(c for c in api(server, "get", "/team").json()["cars"]
                                  if c["session_id"] == sid_a and c["laps"] == len(REFERENCE_LAPS)), 15, "A's laps")
        assert a["best_lap_s"] == pytest.approx(min(REFERENCE_LAPS), abs=0.01)
        assert a["last_lap_s"] is not None and a["gap_to_best_s"] == 0
        assert a["driver"] == {"driver_id": "ann", "name": "Ann"}
        assert a["pit"]["status"] == "on_track" and a["pit"]["lane"] is False
        assert a["link"]["state"] == "live" or a["link"]["age_s"] is not None
        assert rows[sid_b]["laps"] == 0 and rows[sid_b]["driver"] is None and rows[sid_b]["best_lap_s"] is None
        last_fix = next(f for f in reversed(frames_a) if "lat" in f["channels"] and "lon" in f["channels"])
        assert a["position"]["lat"] == pytest.approx(last_fix["channels"]["lat"], abs=1e-6)  # the team map's marker
        assert a["position"]["lon"] == pytest.approx(last_fix["channels"]["lon"], abs=1e-6)
        assert a["position"]["lag_s"] == pytest.approx(frames_a[-1]["t"] - last_fix["t"], abs=0.11)
        assert rows[sid_b]["position"] is None  # nothing sent: no marker

        # B streams now: its row comes in a team.update, with what it sent
        t0 = time.time() - 2
        send(server, car_b, sid_b, make_frames(0, 100, t0=t0, hz=50))
        b = wait_for(lambda: (r := viewer.row(sid_b)) and r["link"]["state"] == "live" and r, 10, "B's team.update")
        assert b["car_id"] == car_b and b["link"]["age_s"] < 3 and b["fuel"]["unit"] == "%"
        assert all(len(u["cars"]) + len(u["changes"]) <= 2 for u in viewer.updates)
        for update in list(viewer.updates):
            schemas.TeamUpdate.model_validate(update)
        schemas.TeamOut.model_validate(api(server, "get", "/team").json())
        only_b = api(server, "get", "/team", params={"session_id": sid_b}).json()  # the live page's read
        assert [c["session_id"] for c in only_b["cars"]] == [sid_b] and only_b["cars"][0]["car_id"] == car_b
        assert api(server, "get", "/team", params={"session_id": str(uuid.uuid4())}).json()["cars"] == []

        api(server, "post", f"/sessions/{sid_b}/end").raise_for_status()
        wait_for(lambda: any(sid_b in u["ended"] for u in viewer.updates), 10, "B leaves the team view")
        assert [c["session_id"] for c in api(server, "get", "/team").json()["cars"]] == [sid_a]
    finally:
        viewer.client.disconnect()


@contextlib.contextmanager
def anonymous_and_engineer(server) -> Iterator[tuple[socketio.Client, socketio.Client]]:
    """Two /dashboard clients of ``server``: one without a credential, one with its key (may make changes)."""
    anonymous = socketio.Client(reconnection=False)
    engineer = socketio.Client(reconnection=False)
    try:
        anonymous.connect(server.url, namespaces=["/dashboard"], transports=["websocket"], wait_timeout=10)
        engineer.connect(server.url, namespaces=["/dashboard"], auth={"token": server.api_key},
                         transports=["websocket"], wait_timeout=10)
        yield anonymous, engineer
    finally:
        anonymous.disconnect()
        engineer.disconnect()


def test_a_driver_change_over_socketio_needs_a_key_that_may_make_changes(live_server):
    car = f"SIO-{uuid.uuid4().hex[:6]}"
    api(live_server, "post", f"/cars/{car}/drivers", json={"driver_id": "ann", "name": "Ann"}).raise_for_status()
    sid = new_session(live_server, car, None)
    with anonymous_and_engineer(live_server) as (anonymous, engineer):
        message = {"session_id": sid, "driver_id": "ann", "at": 1_800_000_000.0}
        refused = anonymous.call("driver.change", message, namespace="/dashboard", timeout=CALL_TIMEOUT_S)
        assert not refused["ok"] and refused["error"]["code"] == "unauthorized", refused
        ack = engineer.call("driver.change", message, namespace="/dashboard", timeout=CALL_TIMEOUT_S)
        assert ack["ok"] and ack["change"]["driver_id"] == "ann", ack
        schemas.DriverChangeAck.model_validate(ack)
        unknown = engineer.call("driver.change", {**message, "driver_id": "nobody"}, namespace="/dashboard",
                                timeout=CALL_TIMEOUT_S)
        assert unknown["error"]["field"] == "driver_id"
    assert [e["payload"]["at"] for e in events_of(live_server, sid, "driver.change")] == [1_800_000_000.0]
