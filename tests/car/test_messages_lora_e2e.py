"""A pit-to-car message over LoRa end to end: a real server process, the real pit gateway (``run_gateway``) and the
car's ``MeshLink`` and inbox (wired as the monitor wires them), each on the meshtastic ``MeshInterface`` subclass the
mesh tests use, with an "air" thread carrying each radio's packets to the other. The car's main link is cut (its
uplink stopped: no /monitor connection): the message sent over REST reaches the car's inbox over LoRa, the answer
comes back over LoRa and the server shows it answered with link "lora"; when the main link comes back, the same
report over it changes nothing. Garbage on the port crashes neither end."""
from __future__ import annotations

import logging
import threading
from typing import Any

from meshtastic.protobuf import mesh_pb2, portnums_pb2

from dashboard.car.mesh import MeshLink
from dashboard.car.mesh_gateway import run_gateway
from dashboard.car.messages import REPORT_EVENT, CarMessages
from dashboard.car.monitor import wire_lora_messages
from dashboard.car.outbox import Outbox
from dashboard.car.uplink import LinkState, Uplink
from tests.car.test_mesh import CAR_NODE, PIT_NODE, CaptureRadio, as_received
from tests.server.test_pitwall import api
from tests.waiting import wait_for

TIMEOUT_S = 30.0
AIR_TICK_S = 0.02  # how often the air looks for new packets


class Air:
    """Carries every packet one radio transmits to the other, as heard (sender, signal filled in)."""

    def __init__(self, car: CaptureRadio, pit: CaptureRadio) -> None:
        self.links = ((car, pit, CAR_NODE), (pit, car, PIT_NODE))
        self.carried = {id(car): 0, id(pit): 0}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="air", daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(AIR_TICK_S):
            for sender, receiver, node in self.links:
                packets = sender.packets()
                for packet in packets[self.carried[id(sender)]:]:
                    receiver.receive(as_received(packet, from_node=node))
                self.carried[id(sender)] = len(packets)


def garbage(payload: bytes) -> mesh_pb2.MeshPacket:
    packet = mesh_pb2.MeshPacket(to=0xFFFFFFFF, id=5)
    packet.decoded.portnum = portnums_pb2.PortNum.PRIVATE_APP
    packet.decoded.payload = payload
    return as_received(packet, from_node=0x0BADBEEF)


def record_of(server: Any, sid: str, mid: str) -> dict[str, Any]:
    return next(m for m in api(server, "get", f"/sessions/{sid}/messages").json()["items"] if m["id"] == mid)


def reaches(server: Any, sid: str, mid: str, state: str) -> dict[str, Any]:
    return wait_for(lambda: (r := record_of(server, sid, mid))["state"] == state and r, TIMEOUT_S, f"{state}")


def test_a_message_and_its_answer_travel_over_lora_while_the_main_link_is_down(live_server, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="dashboard.car.uplink")
    car = "LORA-MSG-1"
    outbox = Outbox(tmp_path / "outbox.sqlite")
    messages = CarMessages(outbox, position=lambda: {"lat": 28.4127, "lon": -81.3797})
    uplinks: list[Uplink] = []

    def uplink() -> Uplink:
        made = Uplink(live_server.url, car, outbox, api_key=live_server.api_key, messages=messages)
        messages.on_change = made.wake
        uplinks.append(made)
        made.start()
        return made

    car_radio, pit_radio = CaptureRadio(CAR_NODE), CaptureRadio(PIT_NODE)
    link = MeshLink("/dev/ttyCAR", car, interface_factory=lambda port: car_radio)
    wire_lora_messages(link, messages, car, main_link_up=lambda: uplinks[-1].state is LinkState.CONNECTED,
                       session_of=lambda: uplinks[-1].session_id)
    air = Air(car_radio, pit_radio)
    stop = threading.Event()
    counts: dict[str, int] = {}
    gateway = threading.Thread(
        target=lambda: counts.update(run_gateway("/dev/ttyPIT", live_server.url, live_server.api_key, cars=[car],
                                                 interface_factory=lambda device: pit_radio, stop_event=stop)),
        daemon=True)
    try:
        first = uplink()  # the car starts its session over the main link...
        wait_for(lambda: first.state is LinkState.CONNECTED and first.session_id, TIMEOUT_S, "the main link")
        sid = first.session_id
        first.stop()  # ...then the main link is cut
        assert first.state is LinkState.STOPPED

        link.start()
        gateway.start()
        air.thread.start()
        wait_for(lambda: link.status == "waiting", TIMEOUT_S, "the car's radio")
        car_radio.receive(garbage(b"\xd8" + bytes(20)))
        car_radio.receive(garbage(b"hello from another app"))

        sent = api(live_server, "post", f"/sessions/{sid}/messages", json={"text": "FUEL OK?", "asks_answer": True})
        assert sent.status_code == 201, sent.text
        mid = sent.json()["id"]
        held = wait_for(lambda: messages.pending(), TIMEOUT_S, "the message in the car's inbox, over LoRa")
        assert [(m["text"], m["short_id"], m["seen"]) for m in held] == [("FUEL OK?", sent.json()["short_id"], False)]
        delivered = reaches(live_server, sid, mid, "delivered")
        assert [(e["state"], e["via"]) for e in delivered["events"]] == [
            ("queued", None), ("sent", "lora"), ("delivered", "lora")]
        pit_radio.receive(garbage(b"\xd8\x01\x01 not a packet"))  # garbage at the gateway, which listens by now

        assert messages.mark_seen(held[0]["id"])  # the driver display shows it, the driver presses yes
        assert messages.answer(held[0]["id"], "yes")
        answered = reaches(live_server, sid, mid, "answered")
        assert answered["answer"] == "yes"
        assert [(e["state"], e["via"]) for e in answered["events"]] == [
            ("queued", None), ("sent", "lora"), ("delivered", "lora"), ("seen", "lora"), ("answered", "lora")]
        assert answered["events"][-1]["lat"] == 28.4127
        assert messages.pending() == []
        assert link.counts["downlink_invalid"] == 1 and link.counts["downlink_received"] >= 1
        queued = [e.payload for e in outbox.events() if e.event_type == REPORT_EVENT]
        assert [q["state"] for q in queued] == ["seen", "answered"]  # waiting for the main link as well

        # the main link comes back: the same reports over it change nothing (duplicates, not applied twice)
        second = uplink()
        wait_for(lambda: second.state is LinkState.CONNECTED, TIMEOUT_S, "the main link back")
        wait_for(lambda: not [e for e in outbox.events() if e.event_type == REPORT_EVENT], TIMEOUT_S,
                 "the queued reports sent over the main link")
        after = record_of(live_server, sid, mid)
        assert after["events"] == answered["events"] and after["answer"] == "yes"
        uplink_said = [r.getMessage() for r in caplog.records if r.name == "dashboard.car.uplink"]
        assert [m for m in uplink_said if "was known to the server" in m] == [
            f"message {held[0]['id']}: seen was known to the server",
            f"message {held[0]['id']}: answered was known to the server"]  # the server acked both as duplicates
        assert not [m for m in uplink_said if "refused" in m]
        assert link.status == "waiting" and gateway.is_alive()
    finally:
        for made in uplinks:
            made.stop()
        stop.set()
        gateway.join(15)
        air.stop.set()
        air.thread.join(5)
        link.stop()
        car_radio.close()
        pit_radio.close()
        outbox.close()
    assert counts["invalid"] == 1 and counts["reports"] >= 2 and counts["downlink.sent"] >= 1, counts
