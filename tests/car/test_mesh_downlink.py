"""Pit-to-car messages over LoRa, stage by stage, through the real meshtastic library (``CaptureRadio``).

Gateway → radio (``DownlinkSender``), radio → car (``MeshLink`` listening, ``CarMessages.from_lora``),
car → radio (``MeshLink.send_report``), radio → gateway (``MeshGateway`` forwarding ``lora.report``).
"""
from __future__ import annotations

import time
import uuid

import pytest
from meshtastic import BROADCAST_NUM
from meshtastic.protobuf import mesh_pb2, portnums_pb2

from dashboard.car.mesh import MeshLink
from dashboard.car.mesh_gateway import DownlinkSender, MeshGateway
from dashboard.car.messages import REPORT_EVENT, CarMessages
from dashboard.car.monitor import wire_lora_messages
from dashboard.car.outbox import Outbox
from dashboard.telemetry import downlink, lora
from dashboard.telemetry.downlink_policy import DownlinkPolicy
from dashboard.telemetry.messages import new_message
from tests.car.test_mesh import CAR_NODE, PIT_NODE, SESSION_ID, CaptureRadio, as_received
from tests.waiting import wait_for

CAR = "car-7"
NOW = 1_700_000_000.0


class Forwarded:
    """A forward callable recording (event, message)."""

    def __init__(self) -> None:
        self.items: list[tuple[str, dict]] = []

    def __call__(self, message: dict, event: str = "lora") -> None:
        self.items.append((event, message))


def a_message(text: str = "FUEL OK?", car: str = CAR, **options):
    return new_message(car, text, created_by="key-1", now=time.time(), asks_answer=True, **options)


def downlink_event(message, state: str = "queued") -> dict:
    return {"car_id": message.car_id, "car_hash": lora.car_hash(message.car_id), "session_id": SESSION_ID,
            "message": {**message.to_dict(), "session_id": SESSION_ID, "state": state}, "state": state}


def private(payload: bytes, from_node: int, portnum=portnums_pb2.PortNum.PRIVATE_APP) -> mesh_pb2.MeshPacket:
    packet = mesh_pb2.MeshPacket(to=0xFFFFFFFF, id=7)
    packet.decoded.portnum = portnum
    packet.decoded.payload = payload
    return as_received(packet, from_node=from_node)


def decoded(radio: CaptureRadio) -> list:
    return [downlink.decode(p.decoded.payload) for p in radio.packets()]


# -------------------------------------------------------------------- gateway → radio
def test_the_sender_transmits_a_handed_message_then_stops_on_the_report(pit_radio):
    sender = DownlinkSender(lambda: pit_radio, policy=DownlinkPolicy(repeat_s=3600))
    message = a_message()
    assert sender.on_server(downlink_event(message)) == {"ok": True, "transmitting": True}
    assert sender.send_due() == 1
    [packet] = pit_radio.packets()
    assert packet.decoded.portnum == portnums_pb2.PortNum.PRIVATE_APP and packet.to == BROADCAST_NUM
    assert packet.want_ack is False
    [sent] = decoded(pit_radio)
    assert sent == downlink.message_packet(message, lora.car_hash(CAR))
    assert sender.on_server(downlink_event(message, "sent")) == {"ok": True, "transmitting": True}  # still pending
    assert sender.send_due() == 0  # its repeat is not due yet: no second packet
    assert sender.on_server(downlink_event(message, "delivered")) == {"ok": True, "transmitting": False}
    assert sender.policy.pending() == []


def test_a_cancel_goes_down_as_a_close_to_the_cars_node_once_known(pit_radio):
    sender = DownlinkSender(lambda: pit_radio)
    message = a_message()
    sender.node_of(lora.car_hash(CAR), CAR_NODE)  # heard from its summaries
    sender.on_server(downlink_event(message))
    assert sender.on_server(downlink_event(message, "cancelled"))["transmitting"] is True
    assert sender.send_due() == 1
    [packet] = pit_radio.packets()
    assert packet.to == CAR_NODE
    assert decoded(pit_radio) == [downlink.DownlinkClose(lora.car_hash(CAR), message.short_id, "cancelled")]


@pytest.mark.parametrize("bad", [None, [], {"state": "queued"}, {"state": 3, "message": {}},
                                 {"state": "queued", "message": {"car_id": CAR, "text": "x" * 80}}])
def test_a_bad_downlink_event_is_refused_in_the_ack(pit_radio, bad):
    sender = DownlinkSender(lambda: pit_radio)
    ack = sender.on_server(bad)
    assert ack["ok"] is False and ack["error"]["code"] == "invalid_message"
    assert sender.send_due() == 0 and sender.counts["refused"] == 1


def test_no_radio_means_nothing_sent_and_the_packet_waits(pit_radio):
    radio = [None]
    sender = DownlinkSender(lambda: radio[0])
    sender.on_server(downlink_event(a_message()))
    assert sender.send_due() == 0
    radio[0] = pit_radio
    assert sender.send_due() == 1


# -------------------------------------------------------------------- radio → car, car → radio
@pytest.fixture
def car(car_radio, tmp_path):
    """A car's MeshLink and inbox wired as the monitor wires them, main link down."""
    outbox = Outbox(tmp_path / "outbox.sqlite")
    messages = CarMessages(outbox, position=lambda: {"lat": 28.41, "lon": -81.38})
    link = MeshLink("/dev/ttyCAR", CAR, interface_factory=lambda port: car_radio)
    main = {"up": False}
    wire_lora_messages(link, messages, CAR, main_link_up=lambda: main["up"], session_of=lambda: SESSION_ID)
    link.start()
    wait_for(lambda: link.status == "waiting", 5, "the car's radio open")
    link.main = main
    link.messages = messages
    link.outbox = outbox
    yield link
    link.stop()
    outbox.close()


def reports(radio: CaptureRadio) -> list[downlink.DownlinkReport]:
    return [p for p in decoded(radio) if isinstance(p, downlink.DownlinkReport)]


def test_the_car_holds_a_message_heard_over_lora_once_and_reports_it(car, car_radio, pit_radio):
    message = a_message()
    sender = DownlinkSender(lambda: pit_radio)
    sender.on_server(downlink_event(message))
    sender.send_due()
    heard = as_received(pit_radio.packets()[-1], from_node=PIT_NODE)
    car_radio.receive(heard)
    [delivered] = wait_for(lambda: reports(car_radio), 5, "the delivered report on the car's radio")
    assert (delivered.car_hash, delivered.short_id, delivered.state) == (lora.car_hash(CAR), message.short_id,
                                                                          "delivered")
    assert (delivered.lat, delivered.lon) == pytest.approx((28.41, -81.38))
    [held] = car.messages.pending()
    assert (held["text"], held["short_id"], held["asks_answer"]) == ("FUEL OK?", message.short_id, True)
    assert uuid.UUID(held["id"]).int >> 96 == message.short_id

    car_radio.receive(heard)  # the pit repeats it (it did not hear the report): held once, reported again
    wait_for(lambda: len(reports(car_radio)) == 2, 5, "the report sent again")
    assert reports(car_radio)[1] == delivered and len(car.messages.pending()) == 1

    assert car.messages.answer(held["id"], "no")  # main link down: the answer goes over the radio too
    answered = wait_for(lambda: [r for r in reports(car_radio) if r.state == "answered"], 5, "the answer")
    assert answered[0].answer == "no" and answered[0].short_id == message.short_id
    queued = [e.payload for e in car.outbox.events() if e.event_type == REPORT_EVENT]
    assert [(q["state"], q["session_id"], q["message_id"]) for q in queued] == [
        ("answered", SESSION_ID, held["id"])]  # and for the main link (seen is implied by the answer)
    car_radio.receive(heard)  # repeated after the answer: not shown again, the answer sent again
    wait_for(lambda: [r.state for r in reports(car_radio)][-1:] == ["answered"]
             and len(reports(car_radio)) == 4, 5, "the answer again")
    assert car.messages.pending() == []


def test_a_close_over_lora_takes_the_message_off_and_the_main_link_up_keeps_reports_off_the_air(car, car_radio):
    message = a_message(text="PUSH")
    car_hash = lora.car_hash(CAR)
    car_radio.receive(private(downlink.encode(downlink.message_packet(message, car_hash)), PIT_NODE))
    wait_for(lambda: car.messages.pending(), 5, "the message held")
    car.main["up"] = True
    assert car.messages.mark_seen(car.messages.pending()[0]["id"])
    car_radio.receive(private(downlink.encode(downlink.DownlinkClose(car_hash, message.short_id, "expired")),
                              PIT_NODE))
    wait_for(lambda: car.messages.pending() == [], 5, "the message off the display")
    assert [r.state for r in reports(car_radio)] == ["delivered"]  # seen went by the main link only


def test_garbage_other_cars_and_other_apps_do_not_reach_the_inbox(car, car_radio):
    other = a_message(car="car-12")
    good = downlink.encode(downlink.message_packet(a_message(text="LAST LAP"), lora.car_hash(CAR)))
    car_radio.receive(private(downlink.encode(downlink.message_packet(other, lora.car_hash("car-12"))), PIT_NODE))
    car_radio.receive(private(good[:-1] + bytes([good[-1] ^ 0x01]), PIT_NODE))  # bad checksum
    car_radio.receive(private(b"\xd8", PIT_NODE))
    car_radio.receive(private(b"\xd8\x07" + good[2:], PIT_NODE))  # a future version
    car_radio.receive(private(lora.encode(lora.summary_from_frame("car-12", SESSION_ID, {
        "seq": 1, "t": NOW, "channels": {}})), PIT_NODE))  # another car's summary
    car_radio.receive(private(good, PIT_NODE, portnum=portnums_pb2.PortNum.TEXT_MESSAGE_APP))  # not our port
    car_radio.receive(private(good, PIT_NODE))
    wait_for(lambda: car.messages.pending(), 5, "the good message")
    assert [m["text"] for m in car.messages.pending()] == ["LAST LAP"]
    assert car.counts["downlink_invalid"] == 3 and car.counts["downlink_other_car"] == 1
    assert car.counts["downlink_received"] == 1 and car.status == "waiting"


def test_a_report_that_cannot_be_encoded_is_counted(car):
    assert not car.send_report({"short_id": 0, "state": "seen", "t": NOW})
    assert not car.send_report({"state": "seen"})
    assert car.counts["encode_errors"] == 2


# -------------------------------------------------------------------- radio → gateway
def test_the_gateway_forwards_a_cars_report_and_stops_repeating(car_radio, pit_radio):
    forwarded = Forwarded()
    sender = DownlinkSender(lambda: pit_radio)
    gateway = MeshGateway(pit_radio, forwarded, cars=[CAR], clock=lambda: NOW + 1, sender=sender)
    gateway.start()
    try:
        message = a_message()
        sender.on_server(downlink_event(message))
        link = MeshLink("/dev/ttyCAR", CAR, interface_factory=lambda port: car_radio)
        assert link.connect()
        link.send_report({"short_id": message.short_id, "state": "answered", "answer": "yes", "t": NOW + 0.25,
                          "lat": 28.41, "lon": -81.38})
        assert link.send_reports() == 1
        pit_radio.receive(private(downlink.encode(downlink.message_packet(message, 1)), 0x0BADBEEF))  # a gateway's
        pit_radio.receive(private(b"\xd8\x01\x03", 0x0BADBEEF))  # garbage on our magic
        pit_radio.receive(as_received(car_radio.packets()[-1], from_node=CAR_NODE))
        [(event, report)] = wait_for(lambda: forwarded.items, 5, "the forwarded report")
        assert event == "lora.report"
        assert report == {
            "link": "lora", "car_id": CAR, "car_hash": lora.car_hash(CAR), "short_id": message.short_id,
            "state": "answered", "answer": "yes", "t": NOW + 0.25, "lap": None, "lat": pytest.approx(28.41),
            "lon": pytest.approx(-81.38), "received_at": NOW + 1,
            "radio": {"from": f"!{CAR_NODE:08x}", "rssi": -97, "snr": 6.25, "hops": 0}}
        assert sender.policy.finished(downlink.message_packet(message, lora.car_hash(CAR))) == "reported"
        assert sender.send_due() == 0  # reported before it was ever due: never transmitted
        assert gateway.counts["downlink_heard"] == 1 and gateway.counts["invalid"] == 1
        assert gateway.counts["reports"] == 1 and gateway.counts["forwarded"] == 1
    finally:
        gateway.stop()
