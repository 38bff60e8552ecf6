"""ServerLink against a real python-socketio server: auth, acks, the one error type, a bounded close."""
from __future__ import annotations

import threading
import time

import pytest
import socketio

from dashboard.car.link import ServerError, ServerLink
from tests.waiting import wait_for

AUTH = {"car_id": "car-7", "api_key": "k3y"}


def test_connect_call_and_close(monitor_server) -> None:
    commands: list[dict] = []
    link = ServerLink(monitor_server.url, handlers={"command": commands.append})
    assert not link.connected
    link.connect(AUTH)
    try:
        assert link.connected and monitor_server.connections == [AUTH]
        answer = link.call("session.start", {"record_id": "r1"})
        assert answer["ok"] and answer["session"]["car_id"] == "car-7"
        monitor_server.command("stop", answer["session"]["session_id"])
        wait_for(lambda: commands, 5, "the command at the handler")
        assert commands == [{"action": "stop", "session_id": answer["session"]["session_id"]}]
    finally:
        link.close()
    assert not link.connected
    wait_for(lambda: not monitor_server.connected, 5, "the server to see the disconnect")
    link.close()  # safe twice
    with pytest.raises(ConnectionError):
        link.call("heartbeat", {})


def test_a_refused_connect_raises_and_leaves_nothing_open(monitor_server) -> None:
    link = ServerLink(monitor_server.url)
    with pytest.raises(socketio.exceptions.ConnectionError):
        link.connect({"car_id": "car-7", "api_key": "wrong"})
    assert not link.connected and not monitor_server.connected


def test_ok_false_and_a_missing_ack_object_raise_server_error(monitor_server) -> None:
    error = {"code": "invalid", "message": "bad frame", "field": "frames"}
    monitor_server.script("telemetry", {"ok": False, "error": error})
    monitor_server.script("heartbeat", lambda data: "yes")
    link = ServerLink(monitor_server.url)
    link.connect(AUTH)
    try:
        with pytest.raises(ServerError) as refused:
            link.call("telemetry", {"session_id": "s", "frames": []})
        assert refused.value.error == error and refused.value.code == "invalid" and refused.value.event == "telemetry"
        assert refused.value.retry_after is None
        with pytest.raises(ServerError) as odd:
            link.call("heartbeat", {"session_id": "s"})
        assert odd.value.code == "bad_ack"
        assert link.connected  # a refusal is an answer, not a broken link
    finally:
        link.close()


def test_a_call_in_flight_when_the_connection_drops_fails_at_once(monitor_server) -> None:
    released = threading.Event()

    def drop_and_never_answer(data: dict) -> dict:
        monitor_server.drop_connections()
        released.wait(10)  # the ack would come too late anyway: the connection is gone
        return {"ok": True}

    monitor_server.script("heartbeat", drop_and_never_answer)
    dropped: list = []
    link = ServerLink(monitor_server.url, handlers={"disconnect": lambda *args: dropped.append(args)})
    link.connect(AUTH)
    try:
        started = time.monotonic()
        with pytest.raises(ConnectionError):
            link.call("heartbeat", {"session_id": "s"}, timeout=10)
        assert time.monotonic() - started < 5  # not the 10 s ack timeout python-socketio's call() would wait
        assert dropped and not link.connected  # the owner's disconnect handler was told too
    finally:
        released.set()
        link.close()
    assert len(dropped) == 1  # ... but not again by its own close()


@pytest.mark.parametrize("given, waited", [(2.5, 2.5), (0.0, 0.1), (3600, 30.0), (None, 1.0), ("soon", 1.0)])
def test_unavailable_says_how_long_to_wait_within_bounds(given, waited) -> None:
    error = {"code": "unavailable", "message": "database is locked"}
    if given is not None:
        error["retry_after"] = given
    assert ServerError("telemetry", error).retry_after == waited


class SlowToClose(socketio.Client):
    """A client whose disconnect hangs, like one talking to a server that never closes its side."""

    release = threading.Event()

    def disconnect(self) -> None:
        self.release.wait(10)
        super().disconnect()


def test_close_waits_at_most_close_wait(monitor_server) -> None:
    link = ServerLink(monitor_server.url, client_factory=lambda: SlowToClose(reconnection=False), close_wait=0.2)
    link.connect(AUTH)
    started = time.monotonic()
    link.close()
    assert time.monotonic() - started < 2.0 and not link.connected
    SlowToClose.release.set()
    wait_for(lambda: not monitor_server.connected, 5, "the late disconnect")
