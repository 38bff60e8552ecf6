"""Pit-to-car messages over LoRa at a real server: a message for a car whose main link is down (or stale) is handed
to the pit gateways (``downlink``), the gateway's ``lora.report`` goes through the dedupe rule with link ``lora``,
the same report over the main link afterwards changes nothing, and bad reports are refused naming the field."""
from __future__ import annotations

import threading
import time
import uuid

import socketio

from dashboard import schemas
from dashboard.telemetry import lora
from tests.clients import CALL_TIMEOUT_S, make_frames
from tests.server.test_messages import Car, message_of, state_is
from tests.server.test_pitwall import api, new_session
from tests.waiting import wait_for

HAND_OFF_S = 20.0  # the resend tick runs every 5 s: a hand-off is seen within a few ticks


class Gateway:
    """A pit gateway's /monitor connection: records every ``downlink`` and acks it as the real one does."""

    def __init__(self, url: str, key: str, transmitting: bool = True) -> None:
        self.got: list[dict] = []
        self.lock = threading.Lock()
        self.client = socketio.Client(reconnection=False)

        def on_downlink(data: dict) -> dict:
            schemas.Downlink.model_validate(data)
            with self.lock:
                self.got.append(data)
            return {"ok": True, "transmitting": transmitting}

        self.client.on("downlink", on_downlink, namespace="/monitor")
        self.client.connect(url, namespaces=["/monitor"], transports=["websocket"], wait_timeout=10,
                            auth={"car_id": "mesh-gateway", "api_key": key, "role": "mesh-gateway"})

    def states(self, message_id: str) -> list[str]:
        with self.lock:
            return [d["state"] for d in self.got if d["message"]["id"] == message_id]

    def call(self, event: str, data: dict) -> dict:
        return self.client.call(event, data, namespace="/monitor", timeout=CALL_TIMEOUT_S)

    def close(self) -> None:
        self.client.disconnect()


def lora_report(car: str, short_id: int, state: str, **fields) -> dict:
    return {"link": "lora", "car_id": car, "car_hash": lora.car_hash(car), "short_id": short_id, "state": state,
            "t": round(time.time(), 2), "received_at": time.time(), "lat": 28.4127, "lon": -81.3797, **fields}


def test_a_message_for_a_car_with_no_main_link_goes_through_the_gateway_and_back(live_server):
    car = f"LM-{uuid.uuid4().hex[:6]}"
    sid = new_session(live_server, car, None)  # the car's monitor is not connected: no main link
    gateway = Gateway(live_server.url, live_server.api_key)
    try:
        sent = api(live_server, "post", f"/sessions/{sid}/messages", json={"text": "FUEL OK?", "asks_answer": True})
        mid, short_id = sent.json()["id"], sent.json()["short_id"]
        wait_for(lambda: "queued" in gateway.states(mid), HAND_OFF_S, "the message handed to the gateway")
        handed = next(d for d in gateway.got if d["message"]["id"] == mid)
        assert handed["car_id"] == car and handed["car_hash"] == lora.car_hash(car) and handed["session_id"] == sid
        record = wait_for(state_is(live_server, sid, mid, "sent"), 10, "sent over lora")
        assert record["events"][-1]["via"] == "lora"

        ack = gateway.call("lora.report", lora_report(car, short_id, "delivered"))
        schemas.LoraReportAck.model_validate(ack)
        assert ack == {"ok": True, "duplicate": False, "state": "delivered", "session_id": sid, "message_id": mid}
        wait_for(lambda: "delivered" in gateway.states(mid), 10, "the gateway told to stop repeating")
        again = gateway.call("lora.report", lora_report(car, short_id, "delivered"))
        assert again["duplicate"] is True

        answered = gateway.call("lora.report", lora_report(car, short_id, "answered", answer="yes", lap=3))
        assert answered["state"] == "answered" and not answered["duplicate"]
        record = message_of(live_server, sid, mid)
        assert record["answer"] == "yes" and record["answered_lap"] == 3
        assert [(e["state"], e["via"], e["implied"]) for e in record["events"]] == [
            ("queued", None, False), ("sent", "lora", False), ("delivered", "lora", False),
            ("seen", "lora", True), ("answered", "lora", False)]

        # the main link comes back: the car's own report of the same answer (it knew the message by its short id
        # only) changes nothing; a different answer is refused
        car_key = api(live_server, "post", "/keys", json={"role": "car", "name": "lora test car", "car_id": car})
        assert car_key.status_code == 201, car_key.text
        monitor = Car(live_server.url, car, car_key.json()["key"])
        try:
            lora_id = str(uuid.UUID(int=short_id << 96))
            body = {"session_id": sid, "message_id": lora_id, "state": "answered", "answer": "yes", "t": time.time()}
            assert monitor.call("message.report", body) == {"ok": True, "duplicate": True, "state": "answered"}
            refused = monitor.call("message.report", {**body, "answer": "no"})
            assert refused["ok"] is False and refused["error"]["code"] == "message_state"
            forbidden = monitor.call("lora.report", lora_report(car, short_id, "seen"))  # a car key relays nothing
            assert forbidden["ok"] is False and forbidden["error"]["code"] == "forbidden"
        finally:
            monitor.client.disconnect()
        assert len(message_of(live_server, sid, mid)["events"]) == 5

        # bad reports from the gateway: refused, naming the field; the gateway stays connected
        for bad, field in ((lora_report(car, 0, "seen"), "short_id"),
                           (lora_report(car, short_id, "cancelled"), "state"),
                           (lora_report(car, short_id, "seen", answer="yes"), "answer"),
                           ({**lora_report(car, short_id, "seen"), "extra": 1}, "extra"),
                           (lora_report(car, 12345, "seen"), "short_id")):
            error = gateway.call("lora.report", bad)
            assert error["ok"] is False and error["error"]["field"] == field, (bad, error)
        assert gateway.call("lora.report", "garbage")["ok"] is False
        assert gateway.client.connected
    finally:
        gateway.close()


def test_a_cancel_goes_down_and_a_car_on_its_main_link_gets_nothing_over_lora(live_server):
    car = f"LC-{uuid.uuid4().hex[:6]}"
    sid = new_session(live_server, car, None)
    gateway = Gateway(live_server.url, live_server.api_key)
    try:
        first = api(live_server, "post", f"/sessions/{sid}/messages", json={"text": "PUSH"}).json()
        wait_for(lambda: "queued" in gateway.states(first["id"]), HAND_OFF_S, "the hand-off")
        api(live_server, "post", f"/sessions/{sid}/messages/{first['id']}/cancel")
        wait_for(lambda: "cancelled" in gateway.states(first["id"]), 10, "the close handed down")

        monitor = Car(live_server.url, car, live_server.api_key)  # the main link is up, with fresh frames
        try:
            started = monitor.call("session.start", {"session_id": sid})
            assert started["ok"], started
            ack = monitor.call("telemetry", {"session_id": sid, "frames": make_frames(0, 5, t0=time.time() - 1)})
            assert ack["ok"], ack
            second = api(live_server, "post", f"/sessions/{sid}/messages", json={"text": "STAY OUT"}).json()
            wait_for(state_is(live_server, sid, second["id"], "delivered"), 10, "delivered over the main link")
            assert message_of(live_server, sid, second["id"])["events"][-1]["via"] == "main"
            assert gateway.states(second["id"]) == []
        finally:
            monitor.client.disconnect()
        # the car holds it and its main link is gone: the cancel goes down over LoRa, to take it off the display
        wait_for(lambda: not api(live_server, "get", f"/sessions/{sid}").json()["monitor"]["online"], 10, "offline")
        api(live_server, "post", f"/sessions/{sid}/messages/{second['id']}/cancel")
        wait_for(lambda: gateway.states(second["id"]) == ["cancelled"], 10, "the close of a delivered message")
    finally:
        gateway.close()


def test_a_stale_main_link_uses_lora_too(server_factory):
    server = server_factory(message_lora_after_s="1")
    car = "STALE-1"
    gateway = Gateway(server.url, server.api_key)
    monitor = Car(server.url, car, server.api_key, ack=False)  # connected, but the car never acks
    try:
        sid = monitor.call("session.start", {})["session"]["session_id"]
        assert monitor.call("telemetry", {"session_id": sid, "frames": make_frames(0, 5, t0=time.time() - 1)})["ok"]
        sent = api(server, "post", f"/sessions/{sid}/messages", json={"text": "BOX THIS LAP"}).json()
        wait_for(lambda: sent["id"] in monitor.ids(), 10, "the message over the main link")
        wait_for(lambda: "sent" in gateway.states(sent["id"]), HAND_OFF_S, "the message over LoRa once stale")
        assert sent["id"] in monitor.ids()  # still emitted on the main link too
    finally:
        monitor.client.disconnect()
        gateway.close()
