"""Pit-to-car messages end to end with real processes: `dashboard serve`, a `dashboard monitor` fed NMEA through a
pty and OBD by the ELM327 emulator, messages sent over REST, seen and answered through the monitor's local inbox
control (its UNIX socket: what the driver display will use), and a kill -9 with a message pending."""
from __future__ import annotations

import json
import shutil
import socket
import tempfile
import uuid
from pathlib import Path
from typing import Any

import pytest
import requests

from dashboard.server.tracks import ORLANDO_TRACK_ID
from tests.car.test_monitor_process_e2e import (
    ON_TRACK,
    TIMEOUT_S,
    GpsFeed,
    MonitorProcess,
    car_session,
)
from tests.waiting import wait_for


class Control:
    """A client of the monitor's inbox control socket (one JSON line each way)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __call__(self, **request: Any) -> dict[str, Any]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(10)
            sock.connect(str(self.path))
            sock.sendall(json.dumps(request).encode() + b"\n")
            answer = sock.makefile("rb").readline()
        return json.loads(answer)

    def pending(self) -> list[dict[str, Any]]:
        return self(op="pending")["messages"]


def api(server: Any, method: str, path: str, **kwargs: Any) -> Any:
    answer = requests.request(method, f"{server.url}/api/v1{path}", headers=server.headers, timeout=10, **kwargs)
    answer.raise_for_status()
    return answer.json()


def message(server: Any, sid: str, mid: str) -> dict[str, Any]:
    return next(m for m in api(server, "get", f"/sessions/{sid}/messages")["items"] if m["id"] == mid)


def reaches(server: Any, sid: str, mid: str, state: str, monitor: MonitorProcess) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        monitor.check_alive()
        record = message(server, sid, mid)
        return record if record["state"] == state else None

    return wait_for(check, TIMEOUT_S, f"message {state}")


@pytest.fixture
def short_dir():
    """A short directory for the socket (a UNIX socket path is at most 107 bytes; tmp_path can be longer)."""
    path = Path(tempfile.mkdtemp(prefix="inbox-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_a_message_reaches_the_car_is_answered_and_survives_a_kill_9(live_server, elm_emulator, tmp_path: Path,
                                                                      short_dir: Path) -> None:
    car = "msg-e2e"
    gps = GpsFeed(tmp_path / "gps")
    monitor = MonitorProcess(live_server, car, elm_emulator.get_pty(), gps.link, tmp_path / "outbox.sqlite",
                             tmp_path / "monitor.log")
    sock = short_dir / "inbox.sock"
    monitor.args += ["--inbox-socket", str(sock), "--track-id", ORLANDO_TRACK_ID]  # timed: answers carry a lap
    control = Control(sock)
    try:
        monitor.start()
        sid = car_session(live_server, car, monitor)["session_id"]
        asked = api(live_server, "post", f"/sessions/{sid}/messages", json={"text": "FUEL OK?", "asks_answer": True})
        reaches(live_server, sid, asked["id"], "delivered", monitor)
        shown = wait_for(lambda: sock.exists() and control.pending(), TIMEOUT_S, "the inbox control")
        wait_for(lambda: api(live_server, "get", f"/sessions/{sid}")["stats"]["distance_m"] > 10, TIMEOUT_S, "frames")
        assert [(m["id"], m["text"], m["seen"]) for m in shown] == [(asked["id"], "FUEL OK?", False)]
        assert control(op="seen", message_id=asked["id"]) == {"ok": True, "applied": True}
        assert control(op="seen", message_id=asked["id"]) == {"ok": True, "applied": False}
        refused = control(op="answer", message_id=asked["id"], answer="maybe")
        assert not refused["ok"] and refused["error"]["field"] == "answer"
        assert control(op="answer", message_id=asked["id"], answer="yes") == {"ok": True, "applied": True}
        assert control(op="answer", message_id=asked["id"], answer="yes") == {"ok": True, "applied": False}
        answered = reaches(live_server, sid, asked["id"], "answered", monitor)
        assert answered["answer"] == "yes" and isinstance(answered["answered_lap"], int)
        assert [e["state"] for e in answered["events"]] == ["queued", "sent", "delivered", "seen", "answered"]
        assert answered["events"][-1]["lat"] is not None  # where the car was
        assert control.pending() == []

        # delivered, then the monitor is killed with it pending: after the restart it is held once, not twice
        pending = api(live_server, "post", f"/sessions/{sid}/messages", json={"text": "PUSH"})
        reaches(live_server, sid, pending["id"], "delivered", monitor)
        monitor.kill()
        # sent while the monitor is down: queued, delivered when it is back
        later = api(live_server, "post", f"/sessions/{sid}/messages", json={"text": "STAY OUT", "priority": "high"})
        assert message(live_server, sid, later["id"])["state"] in ("queued", "sent")
        monitor.start()
        reaches(live_server, sid, later["id"], "delivered", monitor)
        held = wait_for(lambda: len(control.pending()) == 2 and control.pending(), TIMEOUT_S, "both held")
        assert [m["id"] for m in held] == [later["id"], pending["id"]]  # high priority first
        assert control(op="answer", message_id=pending["id"], answer="ok")["applied"]
        done = reaches(live_server, sid, pending["id"], "answered", monitor)
        assert [e["state"] for e in done["events"]].count("delivered") == 1
        assert [e["state"] for e in done["events"]].count("answered") == 1
        assert [m["id"] for m in control.pending()] == [later["id"]]

        # killed again right after an answer: the answer is applied once, the answered message never shown again
        assert control(op="answer", message_id=later["id"], answer="ok")["applied"]
        monitor.kill()
        monitor.start()
        final = reaches(live_server, sid, later["id"], "answered", monitor)
        assert [e["state"] for e in final["events"]].count("answered") == 1
        wait_for(lambda: sock.exists() and control.pending() == [], TIMEOUT_S, "the inbox control after restart")
        assert message(live_server, sid, asked["id"])["state"] == "answered"
        assert monitor.stop() == 0, monitor.log_text()[-3000:]
    finally:
        monitor.kill()
        gps.close()


def test_a_box_message_closes_when_the_recorded_car_enters_the_drawn_pit_lane(live_server, elm_emulator,
                                                                               tmp_path: Path, short_dir: Path):
    """A real monitor fed the recorded laps through a pty, on a track whose pit lane is drawn across the kart's
    path: the BOX message is delivered, shown, and closes (off the car's display) when the car next crosses
    the lane's entry, at the car's place there."""
    from tests.server.test_pitwall import orlando_with_lane
    from tests.telemetry.test_pitlane import line_across, recording

    fixes = recording()  # the bundled log's fixes; the feed starts at fix ON_TRACK // 2 and loops the laps
    lane_in = ON_TRACK // 2 + 150  # ~9 s into the feed, and once a lap after
    track = api(live_server, "post", "/tracks", json=orlando_with_lane(
        line_across(fixes, lane_in), line_across(fixes, lane_in + 40), name=f"OKC box {uuid.uuid4().hex[:6]}"))
    car = f"box-{uuid.uuid4().hex[:6]}"
    gps = GpsFeed(tmp_path / "gps")
    monitor = MonitorProcess(live_server, car, elm_emulator.get_pty(), gps.link, tmp_path / "outbox.sqlite",
                             tmp_path / "monitor.log")
    sock = short_dir / "inbox.sock"
    monitor.args += ["--inbox-socket", str(sock), "--track-id", track["track_id"]]
    control = Control(sock)
    try:
        monitor.start()
        sid = car_session(live_server, car, monitor)["session_id"]
        box = api(live_server, "post", f"/sessions/{sid}/messages", json={"canned": 0})  # BOX THIS LAP
        assert box["close_on"] == "box" and box["text"] == "BOX THIS LAP"
        reaches(live_server, sid, box["id"], "delivered", monitor)
        shown = wait_for(lambda: sock.exists() and control.pending(), TIMEOUT_S, "the box message on the car")
        assert [m["id"] for m in shown] == [box["id"]]
        # a box message that asks nothing cannot be dismissed by the driver: only the pit lane closes it
        refused = control(op="answer", message_id=box["id"], answer="ok")
        assert not refused["ok"] and refused["error"]["code"] == "message_state"
        lap_s = (fixes[-1]["t"] - fixes[ON_TRACK // 2]["t"]) / 4 + TIMEOUT_S  # a recorded lap (the feed is faster)
        closed = wait_for(lambda: (monitor.check_alive(), message(live_server, sid, box["id"]))[1]["state"]
                          == "closed" and message(live_server, sid, box["id"]), lap_s, "closed at the pit entry")
        entries = [e for e in api(live_server, "get", f"/sessions/{sid}/events", params={"limit": 1000})["items"]
                   if e["event_type"] == "pit.entry"]
        assert entries, "no pit.entry logged"
        last = closed["events"][-1]
        assert last["state"] == "closed" and last["lat"] is not None and last["lon"] is not None
        entry_fix = fixes[lane_in]["channels"]
        assert abs(last["lat"] - entry_fix["lat"]) < 5e-4 and abs(last["lon"] - entry_fix["lon"]) < 5e-4  # ~50 m
        wait_for(lambda: control.pending() == [], TIMEOUT_S, "the box message off the car's display")
        assert monitor.stop() == 0, monitor.log_text()[-3000:]
    finally:
        monitor.kill()
        gps.close()
