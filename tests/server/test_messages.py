"""Pit-to-car messages on a real server: REST, /dashboard message.send/cancel, delivery and reports over /monitor,
expiry on the housekeeping tick, a box message closed by a pit entry."""
from __future__ import annotations

import csv
import io
import json
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from datetime import datetime
from typing import Any

import pytest
import requests
import socketio

from dashboard import schemas
from tests.clients import CALL_TIMEOUT_S
from tests.server.test_pitwall import anonymous_and_engineer, api, events_of, new_session, orlando_with_lane
from tests.telemetry.test_pitlane import HOLD_FIX, HOLD_S, PIT_IN_FIX, PIT_OUT_FIX, line_across, recording, with_hold
from tests.waiting import wait_for


def message_of(server, sid: str, mid: str) -> dict:
    body = api(server, "get", f"/sessions/{sid}/messages").json()
    schemas.MessageList.model_validate(body)
    return next(m for m in body["items"] if m["id"] == mid)


def state_is(server, sid: str, mid: str, state: str) -> Any:
    return lambda: (m := message_of(server, sid, mid))["state"] == state and m


class Car:
    """A monitor connection that acks every ``message`` and keeps what it got."""

    def __init__(self, url: str, car: str, key: str, ack: bool = True) -> None:
        self.got: list[dict] = []
        self.lock = threading.Lock()
        self.client = socketio.Client(reconnection=False)

        def on_message(data: dict) -> dict:
            with self.lock:
                self.got.append(data)
            return {"ok": True} if ack else {"ok": False}

        self.client.on("message", on_message, namespace="/monitor")
        self.client.connect(url, namespaces=["/monitor"], auth={"car_id": car, "api_key": key},
                            transports=["websocket"], wait_timeout=10)

    def call(self, event: str, data: dict) -> dict:
        return self.client.call(event, data, namespace="/monitor", timeout=CALL_TIMEOUT_S)

    def ids(self) -> list[str]:
        with self.lock:
            return [m["id"] for m in self.got]


def test_send_list_cancel_canned_and_bad_input(live_server):
    car = f"MSG-{uuid.uuid4().hex[:6]}"
    sid = new_session(live_server, car, None)
    canned = api(live_server, "get", "/messages/canned").json()
    schemas.CannedList.model_validate(canned)
    assert canned["items"][0]["text"] == "BOX THIS LAP" and canned["items"][0]["close_on"] == "box"

    sent = api(live_server, "post", f"/sessions/{sid}/messages", json={"text": "  PUSH   NOW ", "asks_answer": True})
    assert sent.status_code == 201, sent.text
    message = schemas.MessageOut.model_validate(sent.json())
    assert message.text == "PUSH NOW" and message.state == "queued" and message.asks_answer  # no car connected
    assert message.events[0].by == "bootstrap"

    boxed = api(live_server, "post", f"/sessions/{sid}/messages", json={"canned": 0}).json()
    assert (boxed["text"], boxed["priority"], boxed["close_on"]) == ("BOX THIS LAP", "urgent", "box")
    assert [m["id"] for m in api(live_server, "get", f"/sessions/{sid}/messages").json()["items"]] == \
        [message.id, boxed["id"]]

    cancelled = api(live_server, "post", f"/sessions/{sid}/messages/{message.id}/cancel")
    assert cancelled.status_code == 200 and cancelled.json()["state"] == "cancelled"
    again = api(live_server, "post", f"/sessions/{sid}/messages/{message.id}/cancel")
    assert again.status_code == 200 and again.json()["state"] == "cancelled"  # the same final state: a no-op
    logged = wait_for(lambda: [e["event_type"] for e in api(live_server, "get", f"/sessions/{sid}/events").json()
                               ["items"] if e["event_type"].startswith("message.")] or None, 15, "message events")
    assert logged.count("message.queued") == 2 and logged.count("message.cancelled") == 1

    for body, field in (({"text": "x" * 41}, "text"), ({"text": "A", "canned": 1}, "canned"), ({}, "text"),
                        ({"canned": 23}, "canned"), ({"text": "A", "priority": "max"}, "priority"),
                        ({"text": "A", "colour": "red"}, "colour"), ({"text": "A", "ttl_s": 0}, "ttl_s"),
                        ({"text": "ÉÉÉÉÉÉÉÉÉÉÉÉÉÉÉÉÉÉÉÉÉÉÉÉÉ"}, "text")):
        refused = api(live_server, "post", f"/sessions/{sid}/messages", json=body)
        assert refused.status_code == 422 and refused.json()["error"]["field"] == field, (body, refused.text)
    assert api(live_server, "post", f"/sessions/{uuid.uuid4()}/messages", json={"text": "A"}).status_code == 404
    assert api(live_server, "post", f"/sessions/{sid}/messages/{uuid.uuid4()}/cancel").status_code == 404
    assert api(live_server, "post", f"/sessions/{sid}/messages/nope/cancel").status_code == 404

    bad = api(live_server, "put", "/messages/canned", json={"items": [{"text": "GO"}, {"text": "go"}]})
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "canned[1].text"
    mine = {"items": [{"text": "GO GO", "asks_answer": False, "priority": "high", "close_on": None}]}
    assert api(live_server, "put", "/messages/canned", json=mine).json() == mine
    assert api(live_server, "get", "/messages/canned").json() == mine
    assert api(live_server, "post", f"/sessions/{sid}/messages", json={"canned": 0}).json()["priority"] == "high"
    api(live_server, "put", "/messages/canned", json={"items": [c for c in canned["items"]]}).raise_for_status()


def test_delivered_seen_answered_over_the_monitor_link(live_server):
    car = f"MSG-{uuid.uuid4().hex[:6]}"
    sid = new_session(live_server, car, None)
    viewer = socketio.Client(reconnection=False)
    told: list[dict] = []
    viewer.on("message", told.append, namespace="/dashboard")
    viewer.connect(live_server.url, namespaces=["/dashboard"], transports=["websocket"], wait_timeout=10)
    assert viewer.call("join", {"session_id": sid}, namespace="/dashboard", timeout=CALL_TIMEOUT_S)["ok"]
    assert viewer.call("team.join", {"team": "default"}, namespace="/dashboard", timeout=CALL_TIMEOUT_S)["ok"]
    team_viewer = socketio.Client(reconnection=False)
    team_told: list[dict] = []
    team_viewer.on("message", team_told.append, namespace="/dashboard")
    team_viewer.connect(live_server.url, namespaces=["/dashboard"], transports=["websocket"], wait_timeout=10)
    assert team_viewer.call("team.join", {"team": "default"}, namespace="/dashboard", timeout=CALL_TIMEOUT_S)["ok"]
    # sent while the car is away: queued, then sent and delivered when the car starts its session
    early = api(live_server, "post", f"/sessions/{sid}/messages", json={"text": "FUEL OK?", "asks_answer": True})
    mid = early.json()["id"]
    monitor = Car(live_server.url, car, live_server.api_key)
    try:
        assert monitor.call("session.start", {"session_id": sid})["ok"]
        wait_for(state_is(live_server, sid, mid, "delivered"), 15, "delivered")
        got = monitor.got[0]
        schemas.MessageToCar.model_validate(got)
        assert got["session_id"] == sid and got["text"] == "FUEL OK?"

        report = {"session_id": sid, "message_id": mid, "t": time.time(), "lap": 3, "lat": 28.41, "lon": -81.38}
        seen = monitor.call("message.report", {**report, "state": "seen"})
        assert seen == {"ok": True, "duplicate": False, "state": "seen"}
        answered = monitor.call("message.report", {**report, "state": "answered", "answer": "yes"})
        schemas.MessageReportAck.model_validate(answered)
        assert answered["state"] == "answered" and not answered["duplicate"]
        again = monitor.call("message.report", {**report, "state": "answered", "answer": "yes"})
        assert again["duplicate"]
        other = monitor.call("message.report", {**report, "state": "answered", "answer": "no"})
        assert not other["ok"] and other["error"]["code"] == "message_state"
        bad = monitor.call("message.report", {**report, "state": "seen", "lap": -1})
        assert not bad["ok"] and bad["error"]["field"] == "lap"
        record = message_of(live_server, sid, mid)
        assert (record["state"], record["answer"], record["answered_lap"]) == ("answered", "yes", 3)
        assert [e["state"] for e in record["events"]] == ["queued", "sent", "delivered", "seen", "answered"]
        wait_for(lambda: any(m["state"] == "answered" for m in told), 15, "the viewer told of the answer")
        schemas.MessageOut.model_validate(told[-1])
        assert [m["state"] for m in told].count("answered") == 1  # the session's room and the team's: told once
        wait_for(lambda: any(m["id"] == mid and m["state"] == "answered" for m in team_told), 15, "the team told")

        # in the exports: every transition a row of the event log, the car's positions as GPX waypoints
        logged = requests.get(f"{live_server.url}/api/v1/sessions/{sid}/export?format=events", timeout=10)
        assert logged.status_code == 200 and logged.headers["content-type"].startswith("text/csv")
        assert logged.headers["content-disposition"].endswith('.events.csv"')
        rows = [r for r in csv.DictReader(io.StringIO(logged.text)) if r["type"].startswith("message.")]
        assert [r["type"] for r in rows] == [f"message.{s}" for s in ("queued", "sent", "delivered", "seen",
                                                                        "answered")]
        answered_row = rows[-1]
        assert (answered_row["lap"], float(answered_row["lat"]), float(answered_row["lon"])) == ("3", 28.41, -81.38)
        assert json.loads(answered_row["data"])["answer"] == "yes"
        gpx = requests.get(f"{live_server.url}/api/v1/sessions/{sid}/export?format=gpx", timeout=10)
        points = ET.fromstring(gpx.content).findall("{http://www.topografix.com/GPX/1/1}wpt")
        names = [p.findtext("{http://www.topografix.com/GPX/1/1}name") for p in points]
        assert names == ["FUEL OK?: seen", "FUEL OK?: answered yes"]
        assert all((p.get("lat"), p.get("lon")) == ("28.4100000", "-81.3800000") for p in points)

        # sent while connected: at once; a message for another car never reaches this one
        other_sid = new_session(live_server, car + "-B", None)
        api(live_server, "post", f"/sessions/{other_sid}/messages", json={"text": "NOT YOURS"}).raise_for_status()
        now = api(live_server, "post", f"/sessions/{sid}/messages", json={"text": "PUSH"}).json()["id"]
        wait_for(state_is(live_server, sid, now, "delivered"), 15, "delivered at once")
        assert all(m["text"] != "NOT YOURS" for m in monitor.got)
    finally:
        monitor.client.disconnect()
        viewer.disconnect()
        team_viewer.disconnect()


def test_unacked_messages_are_sent_again_and_expire(live_server):
    car = f"MSG-{uuid.uuid4().hex[:6]}"
    sid = new_session(live_server, car, None)
    monitor = Car(live_server.url, car, live_server.api_key, ack=False)
    try:
        assert monitor.call("session.start", {"session_id": sid})["ok"]
        mid = api(live_server, "post", f"/sessions/{sid}/messages", json={"text": "PUSH", "ttl_s": 8}).json()["id"]
        wait_for(lambda: monitor.ids().count(mid) >= 2, 20, "the message sent again while not acked")
        expired = wait_for(state_is(live_server, sid, mid, "expired"), 20, "expired")
        assert "delivered" not in [e["state"] for e in expired["events"]]
        wait_for(lambda: monitor.got[-1]["state"] == "expired", 10, "the car told it expired")
    finally:
        monitor.client.disconnect()


def test_message_send_and_cancel_over_socketio_need_a_write_key(live_server):
    car = f"MSG-{uuid.uuid4().hex[:6]}"
    sid = new_session(live_server, car, None)
    with anonymous_and_engineer(live_server) as (anonymous, engineer):
        body = {"session_id": sid, "text": "STAY OUT"}
        refused = anonymous.call("message.send", body, namespace="/dashboard", timeout=CALL_TIMEOUT_S)
        assert not refused["ok"] and refused["error"]["code"] == "unauthorized", refused
        ack = engineer.call("message.send", body, namespace="/dashboard", timeout=CALL_TIMEOUT_S)
        schemas.MessageAck.model_validate(ack)
        mid = ack["message"]["id"]
        bad = engineer.call("message.send", {**body, "text": "y" * 41}, namespace="/dashboard",
                            timeout=CALL_TIMEOUT_S)
        assert bad["error"]["field"] == "text"
        gone = engineer.call("message.cancel", {"session_id": sid, "message_id": mid}, namespace="/dashboard",
                             timeout=CALL_TIMEOUT_S)
        assert gone["ok"] and gone["message"]["state"] == "cancelled"


def test_a_box_message_closes_at_the_pit_entry(server_factory):
    server = server_factory()
    original = recording()
    lane_in, lane_out = line_across(original, PIT_IN_FIX), line_across(original, PIT_OUT_FIX)
    track = api(server, "post", "/tracks", json=orlando_with_lane(lane_in, lane_out)).json()
    car = f"BOX-{uuid.uuid4().hex[:6]}"
    sid = new_session(server, car, track["track_id"])
    monitor = Car(server.url, car, server.api_key)
    try:
        assert monitor.call("session.start", {"session_id": sid})["ok"]
        mid = api(server, "post", f"/sessions/{sid}/messages", json={"canned": 0}).json()["id"]
        wait_for(state_is(server, sid, mid, "delivered"), 15, "delivered")
        # the recording from now on (the entry is 4 s in): the car enters the pit lane after the call
        held = with_hold(original, HOLD_FIX, HOLD_S)[:HOLD_FIX + 20]
        shift = time.time() + 1.0 - held[0]["t"]
        frames = [{**f, "t": f["t"] + shift, "channels": {k: v for k, v in f["channels"].items() if v is not None}}
                  for f in held]
        ack = monitor.call("telemetry", {"session_id": sid, "frames": frames})
        assert ack["ok"] and not ack["rejected"], ack
        closed = wait_for(state_is(server, sid, mid, "closed"), 20, "closed at the pit entry")
        entry = wait_for(lambda: events_of(server, sid, "pit.entry"), 15, "the pit entry")
        assert closed["events"][-1]["t"] == pytest.approx(
            datetime.fromisoformat(entry[0]["timestamp"]).timestamp(), abs=0.01)
        assert closed["events"][-1]["lat"] is not None
        wait_for(lambda: monitor.got[-1]["state"] == "closed", 10, "the car told it closed")
        # a box message made after the entry stays open (it is for the next time round)
        later = api(server, "post", f"/sessions/{sid}/messages", json={"canned": 0}).json()["id"]
        wait_for(state_is(server, sid, later, "delivered"), 15, "the later one delivered")
    finally:
        monitor.client.disconnect()
    # the records are rebuilt from the session's log after a kill -9
    server.restart()
    assert message_of(server, sid, mid)["state"] == "closed"
    assert message_of(server, sid, later)["state"] == "delivered"


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_messages_and_canned_survive_a_restart(server_factory, request, database):
    settings = {"database_url": request.getfixturevalue("pg_url")} if database == "postgresql" else {}
    server = server_factory(**settings)
    car = f"DB-{uuid.uuid4().hex[:6]}"
    sid = new_session(server, car, None)
    mine = {"items": [{"text": "PIT NEXT LAP", "asks_answer": False, "priority": "urgent", "close_on": "box"}]}
    assert api(server, "put", "/messages/canned", json=mine).status_code == 200
    first = api(server, "post", f"/sessions/{sid}/messages", json={"canned": 0}).json()
    second = api(server, "post", f"/sessions/{sid}/messages", json={"text": "CAR OK?", "asks_answer": True}).json()
    api(server, "post", f"/sessions/{sid}/messages/{first['id']}/cancel").raise_for_status()
    wait_for(lambda: len(events_of(server, sid, "message.cancelled")) == 1, 15, "the cancel stored")
    server.restart()
    after = {m["id"]: m for m in api(server, "get", f"/sessions/{sid}/messages").json()["items"]}
    assert (after[first["id"]]["state"], after[first["id"]]["text"]) == ("cancelled", "PIT NEXT LAP")
    assert after[second["id"]]["state"] == "queued" and after[second["id"]]["asks_answer"]
    assert [e["state"] for e in after[first["id"]]["events"]] == ["queued", "cancelled"]
    assert api(server, "get", "/messages/canned").json() == mine
