"""The same code on PostgreSQL, and as two server processes sharing PostgreSQL and a Redis message queue."""
from __future__ import annotations

import time

import requests

from tests.clients import CALL_TIMEOUT_S, Viewer, connect_monitor, make_frames, metric, stored_frames
from tests.waiting import wait_for

REDIS_URL = "redis://127.0.0.1:6379/0"


def push(server, car: str, batches: int, size: int = 100, record_id: str = "r1") -> str:
    monitor = connect_monitor(server.url, car, server.api_key)
    try:
        sid = monitor.call("session.start", {"record_id": record_id}, namespace="/monitor",
                           timeout=CALL_TIMEOUT_S)["session"]["session_id"]
        for b in range(batches):
            frames = make_frames(b * size, size)
            ack = monitor.call("telemetry", {"session_id": sid, "frames": frames}, namespace="/monitor",
                               timeout=CALL_TIMEOUT_S)
            assert ack["ok"] and ack["acked_seq"] == b * size + size - 1, ack
            # a resent batch is acknowledged and not stored twice, on PostgreSQL too
            assert monitor.call("telemetry", {"session_id": sid, "frames": frames[-5:]}, namespace="/monitor",
                                timeout=CALL_TIMEOUT_S)["ok"]
    finally:
        monitor.disconnect()
    return sid


def all_frames(server, sid: str) -> list[int]:
    return [f["seq"] for f in stored_frames(server.url, sid)]


def test_postgresql_keeps_every_acked_frame_across_kill_9(server_factory, pg_url):
    server = server_factory(database_url=pg_url)
    sid = push(server, "PG-1", batches=10)
    requests.post(f"{server.url}/api/v1/sessions/{sid}/setup", json={"setup": {"wing": 1}},
                  headers=server.headers, timeout=5).raise_for_status()
    server.restart()  # kill -9, then start on the same database
    assert all_frames(server, sid) == list(range(1000))
    session = requests.get(f"{server.url}/api/v1/sessions/{sid}", timeout=5).json()
    assert session["stats"]["frames"] == 1000 and session["setup"] == {"wing": 1} and session["status"] == "active"
    assert push(server, "PG-1", batches=1, record_id="r1") == sid  # same record_id: same session


def test_two_processes_share_postgresql_and_redis(server_factory, pg_url):
    a = server_factory(database_url=pg_url, message_queue=REDIS_URL)
    b = server_factory(database_url=pg_url, message_queue=REDIS_URL)
    monitor = connect_monitor(a.url, "MQ-1", a.api_key)
    viewer = None
    try:
        sid = monitor.call("session.start", {"record_id": "mq"}, namespace="/monitor",
                           timeout=CALL_TIMEOUT_S)["session"]["session_id"]
        monitor.call("telemetry", {"session_id": sid, "frames": make_frames(0, 10)}, namespace="/monitor",
                     timeout=CALL_TIMEOUT_S)
        viewer = Viewer(b.url)  # watching through the other process
        local = Viewer(a.url)  # and one on the monitor's own process
        snap = viewer.join(sid)["snapshot"]
        assert [f["seq"] for f in snap["recent"]] == list(range(10))
        assert snap["session"]["status"] == "active"
        local_recent = [f["seq"] for f in local.join(sid)["snapshot"]["recent"]]
        for start in range(10, 110, 20):
            assert monitor.call("telemetry", {"session_id": sid, "frames": make_frames(start, 20)},
                                namespace="/monitor", timeout=CALL_TIMEOUT_S)["acked_seq"] == start + 19
        assert viewer.wait_frames(100) == list(range(10, 110))  # every frame, once, in order
        assert sorted(local_recent + local.wait_frames(110 - len(local_recent))) == list(range(110))
        local.close()
        for process in (a, b):  # each process wrote its own viewers' frames through the direct fan-out
            assert metric(process.url, "dashboard_fanout_direct_total") >= 1
        # the engineer posts a setup to process B: the viewer on B and the REST view on A both see it
        requests.post(f"{b.url}/api/v1/sessions/{sid}/setup", json={"setup": {"wing": 9}}, headers=b.headers,
                      timeout=5).raise_for_status()
        wait_for(lambda: viewer.of("setup"), 10, "setup event through redis")
        assert requests.get(f"{a.url}/api/v1/sessions/{sid}", timeout=5).json()["setup"] == {"wing": 9}
        # a stop on B reaches the car's monitor, connected to A, as a command
        commands = []
        monitor.on("command", commands.append, namespace="/monitor")
        requests.post(f"{b.url}/api/v1/sessions/{sid}/stop", headers=b.headers, timeout=5).raise_for_status()
        wait_for(lambda: commands, 10, "stop command through redis")
        assert commands[0] == {"action": "stop", "session_id": sid}
        assert requests.get(f"{a.url}/api/v1/sessions/{sid}/telemetry", timeout=5).json()[
            "channels"]["rpm"]["value"] == 3109.0
        assert requests.get(f"{b.url}/api/v1/sessions/{sid}/telemetry", timeout=5).json()[
            "channels"]["rpm"]["value"] == 3109.0
    finally:
        monitor.disconnect()
        if viewer:
            viewer.close()
    assert all_frames(b, sid) == list(range(110))
    # killing the monitor's process loses nothing it acknowledged: B serves every frame
    a.kill()
    assert all_frames(b, sid) == list(range(110))
    assert requests.get(f"{b.url}/api/v1/sessions/{sid}", timeout=5).json()["stats"]["frames"] == 110


def test_one_active_session_per_car_across_processes(server_factory, pg_url):
    import concurrent.futures

    servers = [server_factory(database_url=pg_url, message_queue=REDIS_URL) for _ in range(2)]
    ids = [requests.post(f"{servers[i % 2].url}/api/v1/sessions", json={"car_id": "RACE-1"},
                         headers=servers[0].headers, timeout=5).json()["session_id"] for i in range(8)]

    def start(i: int) -> int:
        server = servers[i % 2]
        return requests.post(f"{server.url}/api/v1/sessions/{ids[i]}/start", headers=server.headers,
                             timeout=10).status_code

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(start, range(8)))
    assert sorted(codes) == [200] + [409] * 7, codes
    active = requests.get(f"{servers[1].url}/api/v1/sessions?car_id=RACE-1&status=active", timeout=5).json()
    assert active["total"] == 1
    # a track in use by a session one process created cannot be deleted through the other
    line = {"name": "shared", "a": [1.0, 1.0], "b": [1.0, 1.001]}
    track = requests.post(f"{servers[0].url}/api/v1/tracks", json=line, headers=servers[0].headers, timeout=5).json()
    used = requests.post(f"{servers[0].url}/api/v1/sessions", json={"car_id": "RACE-2", "track_id": track["track_id"]},
                         headers=servers[0].headers, timeout=5).json()["session_id"]
    refused = requests.delete(f"{servers[1].url}/api/v1/tracks/{track['track_id']}", headers=servers[1].headers,
                              timeout=5)
    assert refused.status_code == 409 and refused.json()["error"]["sessions"] == [used]


def test_a_message_sent_on_one_process_reaches_a_car_on_the_other_and_its_answer_is_seen_on_both(
        server_factory, pg_url):
    """The pit's page on B, the car's monitor on A: delivered through Redis with its ack back to B, answered on A,
    every state stored once, and both processes answer the same record."""
    import socketio

    a = server_factory(database_url=pg_url, message_queue=REDIS_URL)
    b = server_factory(database_url=pg_url, message_queue=REDIS_URL)
    got: list[dict] = []
    car = socketio.Client(reconnection=False)
    car.on("message", lambda data: (got.append(data), {"ok": True})[1], namespace="/monitor")
    car.connect(a.url, namespaces=["/monitor"], auth={"car_id": "MQ-MSG", "api_key": a.api_key},
                transports=["websocket"], wait_timeout=10)

    def record(server, sid: str, mid: str) -> dict:
        items = requests.get(f"{server.url}/api/v1/sessions/{sid}/messages", timeout=5).json()["items"]
        return next(m for m in items if m["id"] == mid)

    try:
        sid = car.call("session.start", {"record_id": "mq-msg"}, namespace="/monitor",
                       timeout=CALL_TIMEOUT_S)["session"]["session_id"]
        sent = requests.post(f"{b.url}/api/v1/sessions/{sid}/messages", headers=b.headers, timeout=5,
                             json={"text": "FUEL OK?", "asks_answer": True})
        assert sent.status_code == 201, sent.text
        mid = sent.json()["id"]
        wait_for(lambda: got, 20, "the message on the car")
        wait_for(lambda: record(b, sid, mid)["state"] == "delivered", 20, "delivered, acked through Redis to B")
        assert got[0]["id"] == mid and got[0]["text"] == "FUEL OK?"
        answered = car.call("message.report", {"session_id": sid, "message_id": mid, "state": "answered",
                                               "answer": "no", "t": time.time(), "lap": 4}, namespace="/monitor",
                            timeout=CALL_TIMEOUT_S)
        assert answered["ok"] and answered["state"] == "answered", answered
        for server in (a, b):  # B catches up from the log before it answers
            wait_for(lambda server=server: record(server, sid, mid)["state"] == "answered", 20,
                     f"answered on {server.url}")
            assert (record(server, sid, mid)["answer"], record(server, sid, mid)["answered_lap"]) == ("no", 4)
        # a cancel on B of what A saw answered is refused: the first final state stands on every process
        cancel = requests.post(f"{b.url}/api/v1/sessions/{sid}/messages/{mid}/cancel", headers=b.headers,
                               timeout=5)
        assert cancel.status_code == 409, cancel.text
        events = requests.get(f"{b.url}/api/v1/sessions/{sid}/events?limit=1000", timeout=5).json()["items"]
        states = [e["event_type"] for e in events if e["event_type"].startswith("message.")]
        assert sorted(states) == sorted(set(states))  # each transition stored once, whichever process made it
        assert {"message.queued", "message.delivered", "message.answered"} <= set(states)
    finally:
        car.disconnect()
