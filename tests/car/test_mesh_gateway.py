"""The pit gateway: packets captured from a car's radio, injected into the pit radio, forwarded.

Packets travel through the real meshtastic library (``CaptureRadio``, see
test_mesh.py): the car's ``MeshLink`` makes the ``ToRadio`` packet, the pit
radio receives it as ``FromRadio`` and the library publishes it on pubsub,
where the gateway listens.
"""
from __future__ import annotations

import argparse
import threading

import pytest
from meshtastic.protobuf import mesh_pb2, portnums_pb2
from pubsub import pub

from dashboard.car import mesh_cli, mesh_gateway
from dashboard.car.mesh import MeshLink
from dashboard.telemetry import lora
from dashboard.telemetry.frames import parse_frame
from tests.car.test_mesh import (
    CAR_NODE,
    FRAME,
    SESSION_ID,
    CaptureRadio,
    as_received,
)
from tests.waiting import wait_for


class Inbox:
    """A forward callable that records messages (optionally failing the first ones)."""

    def __init__(self, fail_first: int = 0) -> None:
        self.messages: list[dict] = []
        self.fail_first = fail_first

    def __call__(self, message: dict) -> None:
        if self.fail_first:
            self.fail_first -= 1
            raise ConnectionError("server away")
        self.messages.append(message)


def car_packet(car_radio, frame=FRAME, car_id="car-7", session_id=SESSION_ID) -> mesh_pb2.MeshPacket:
    """The packet a car's MeshLink puts on the air for this frame."""
    link = MeshLink("/dev/ttyFAKE", car_id, interface_factory=lambda port: car_radio)
    link.update(session_id, frame, status=lora.make_status(gps=True, backlog=True))
    assert link.send_now()
    return car_radio.packets()[-1]


def private_packet(payload: bytes, portnum=portnums_pb2.PortNum.PRIVATE_APP) -> mesh_pb2.MeshPacket:
    packet = mesh_pb2.MeshPacket(to=0xFFFFFFFF, id=99)
    packet.decoded.portnum = portnum
    packet.decoded.payload = payload
    return as_received(packet, from_node=0x0BADBEEF)


@pytest.fixture
def gateway(pit_radio):
    inbox = Inbox()
    gw = mesh_gateway.MeshGateway(pit_radio, inbox, cars=["car-7", "car-12"], clock=lambda: 1700000012.5)
    gw.inbox = inbox
    gw.start()
    yield gw
    gw.stop()


# -------------------------------------------------------------------- tests
def test_summary_from_a_car_reaches_the_forward_callable(car_radio, pit_radio, gateway):
    pit_radio.receive(as_received(car_packet(car_radio)))
    wait_for(lambda: gateway.inbox.messages, timeout=5, message="the forwarded summary")
    [message] = gateway.inbox.messages
    expected = lora.quantize(lora.summary_from_frame("car-7", SESSION_ID, FRAME))
    assert message["car_id"] == "car-7"
    assert message["car_hash"] == lora.car_hash("car-7")
    assert message["session_prefix"] == "1a2b3c4d" and SESSION_ID.replace("-", "").startswith("1a2b3c4d")
    assert message["frame"] == expected.to_frame()
    assert parse_frame(message["frame"]).seq == FRAME["seq"]
    assert message["received_at"] == 1700000012.5 and message["link"] == "lora"
    assert message["status"]["gps"] and message["status"]["backlog"] and not message["status"]["uplink"]
    assert message["radio"] == {"from": f"!{CAR_NODE:08x}", "rssi": -97, "snr": 6.25, "hops": 0}
    assert gateway.counts["forwarded"] == 1


def test_garbage_and_foreign_packets_are_counted_and_dropped(car_radio, pit_radio, gateway):
    good = lora.encode(lora.summary_from_frame("car-7", SESSION_ID, FRAME))
    pit_radio.receive(private_packet(b"hello from another app"))  # foreign: not our magic
    pit_radio.receive(private_packet(good[:-3]))  # truncated
    pit_radio.receive(private_packet(good[:10] + bytes([good[10] ^ 0xFF]) + good[11:]))  # corrupted
    pit_radio.receive(private_packet(b"\xd7\x09" + good[2:]))  # a future format version
    pit_radio.receive(private_packet(b"hi pit", portnum=portnums_pb2.PortNum.TEXT_MESSAGE_APP))  # not our port
    pit_radio.receive(as_received(car_packet(car_radio)))  # then a good one, in order behind the rest
    wait_for(lambda: gateway.inbox.messages, timeout=5, message="the good summary")
    assert gateway.counts["received"] == 5  # the text message never reaches the private-port topic
    assert gateway.counts["foreign"] == 1
    assert gateway.counts["invalid"] == 3
    assert (gateway.counts["invalid.size"], gateway.counts["invalid.checksum"], gateway.counts["invalid.version"]) == (
        1, 1, 1,
    )
    assert gateway.counts["forwarded"] == 1 and len(gateway.inbox.messages) == 1


def test_duplicates_and_unknown_cars_are_dropped(car_radio, pit_radio, gateway):
    packet = as_received(car_packet(car_radio))
    pit_radio.receive(packet)
    pit_radio.receive(packet)  # heard again through a relay
    pit_radio.receive(as_received(car_packet(car_radio, car_id="car-99")))  # not in --car
    pit_radio.receive(as_received(car_packet(car_radio, frame={**FRAME, "seq": 1300})))
    wait_for(lambda: len(gateway.inbox.messages) == 2, timeout=5, message="two summaries")
    assert [m["frame"]["seq"] for m in gateway.inbox.messages] == [1200, 1300]
    assert gateway.counts["duplicate"] == 1 and gateway.counts["unknown_car"] == 1


def test_without_a_car_list_every_car_is_forwarded_with_its_hash(car_radio, pit_radio):
    inbox = Inbox()
    gw = mesh_gateway.MeshGateway(pit_radio, inbox)
    gw.start()
    try:
        pit_radio.receive(as_received(car_packet(car_radio, car_id="car-99")))
        wait_for(lambda: inbox.messages, timeout=5, message="the summary")
    finally:
        gw.stop()
    assert inbox.messages[0]["car_id"] is None
    assert inbox.messages[0]["car_hash"] == lora.car_hash("car-99")


def test_packets_of_another_interface_are_ignored(car_radio, pit_radio, gateway):
    other = CaptureRadio(0x05050505)
    try:
        other.receive(as_received(car_packet(car_radio)))
        pit_radio.receive(as_received(car_packet(car_radio, frame={**FRAME, "seq": 1201})))
        wait_for(lambda: gateway.inbox.messages, timeout=5, message="the pit radio's summary")
    finally:
        other.close()
    assert [m["frame"]["seq"] for m in gateway.inbox.messages] == [1201]
    assert gateway.counts["received"] == 1


def test_a_failing_forward_is_counted_and_the_stream_goes_on(car_radio, pit_radio, gateway):
    gateway.inbox.fail_first = 1
    pit_radio.receive(as_received(car_packet(car_radio)))
    pit_radio.receive(as_received(car_packet(car_radio, frame={**FRAME, "seq": 1201})))
    wait_for(lambda: gateway.inbox.messages, timeout=5, message="the second summary")
    assert gateway.counts["forward_errors"] == 1
    assert [m["frame"]["seq"] for m in gateway.inbox.messages] == [1201]


def test_stop_unsubscribes_and_start_stop_are_safe_twice(car_radio, pit_radio, gateway):
    heard = []

    def probe(packet, interface):
        heard.append(packet)

    pub.subscribe(probe, mesh_gateway.RECEIVE_TOPIC)
    gateway.stop()
    gateway.stop()
    pit_radio.receive(as_received(car_packet(car_radio)))
    wait_for(lambda: heard, timeout=5, message="the library publishing the packet")  # dispatch is deferred
    pub.unsubscribe(probe, mesh_gateway.RECEIVE_TOPIC)
    gateway.start()
    gateway.start()
    pit_radio.receive(as_received(car_packet(car_radio, frame={**FRAME, "seq": 1201})))
    wait_for(lambda: gateway.inbox.messages, timeout=5, message="the summary after restart")
    assert [m["frame"]["seq"] for m in gateway.inbox.messages] == [1201]  # one listener, not two


# ------------------------------------------------- run_gateway, real Socket.IO
def test_run_gateway_forwards_lora_events_to_the_monitor_namespace(car_radio, pit_radio, monitor_server):
    monitor_server.rule("lora", lambda data: {"ok": False, "error": {"code": "invalid", "message": "no such session"}}
                        if data["frame"]["seq"] == 1201 else None)
    stop = threading.Event()
    result: dict = {}
    runner = threading.Thread(
        target=lambda: result.update(
            mesh_gateway.run_gateway(
                "/dev/ttyPIT", monitor_server.url, "k3y", cars=["car-7"], stop_event=stop,
                interface_factory=lambda device: pit_radio,
            )
        )
    )
    runner.start()
    try:
        wait_for(lambda: pit_radio.isConnected.is_set() and subscribed(pit_radio), timeout=5, message="gateway up")
        pit_radio.receive(as_received(car_packet(car_radio)))
        pit_radio.receive(as_received(car_packet(car_radio, frame={**FRAME, "seq": 1201})))  # rejected
        pit_radio.receive(as_received(car_packet(car_radio, frame={**FRAME, "seq": 1202})))
        wait_for(lambda: len(monitor_server.calls_of("lora")) == 3, timeout=10, message="three lora events")
    finally:
        stop.set()
        runner.join(10)
    assert not runner.is_alive()
    assert monitor_server.connections[0] == {"car_id": "mesh-gateway", "api_key": "k3y", "role": "mesh-gateway"}
    events = [c.data for c in monitor_server.calls_of("lora")]
    assert events[0]["car_id"] == "car-7" and events[0]["session_prefix"] == "1a2b3c4d" and events[0]["link"] == "lora"
    assert [e["frame"]["seq"] for e in events] == [1200, 1201, 1202]
    assert result["forwarded"] == 3
    assert (result["server.sent"], result["server.rejected"]) == (2, 1)
    assert pit_radio.closed


def test_forwarder_retries_an_unavailable_server_on_the_same_connection(monitor_server):
    monitor_server.script("lora", {"ok": False, "error": {"code": "unavailable", "message": "database is locked",
                                                          "retry_after": 0.3}})
    forwarder = mesh_gateway.SocketIOForwarder(monitor_server.url, "k3y")
    forwarder.start()
    try:
        forwarder({"frame": {"seq": 1}})
        wait_for(lambda: forwarder.counts["sent"] == 1, timeout=10, message="the message accepted on retry")
    finally:
        forwarder.stop()
    first, second = monitor_server.calls_of("lora")
    assert first.data == second.data and first.sid == second.sid  # the same message, not a reconnect
    assert second.at - first.at >= 0.3  # after the server's retry_after
    assert (forwarder.counts["unavailable"], forwarder.counts["rejected"], forwarder.backlog()) == (1, 0, 0)


def subscribed(radio) -> bool:
    """A gateway on this radio listens (not any listener: a car's MeshLink listens on the same topic)."""
    topic = pub.getDefaultTopicMgr().getTopic(mesh_gateway.RECEIVE_TOPIC, okIfNone=True)
    if topic is None:
        return False
    owners = [getattr(listener.getCallable(), "__self__", None) for listener in topic.getListeners()]
    return any(isinstance(o, mesh_gateway.MeshGateway) and o.interface is radio for o in owners)


def test_forwarder_keeps_messages_while_the_server_is_down():
    forwarder = mesh_gateway.SocketIOForwarder("http://127.0.0.1:9", "k", queue_max=2)  # nothing listens on 9
    forwarder.start()
    try:
        for seq in range(3):
            forwarder({"frame": {"seq": seq}})
        wait_for(lambda: forwarder.counts["connect_errors"] >= 1, timeout=10, message="a refused connect")
        assert forwarder.backlog() == 2 and forwarder.counts["dropped"] == 1  # oldest dropped, none lost silently
        assert forwarder.status.startswith("server unreachable")
    finally:
        forwarder.stop()
        forwarder.stop()


# ------------------------------------------------------------------ the CLI
def test_mesh_gateway_command_line(monkeypatch):
    calls = []
    monkeypatch.setattr(mesh_gateway, "run_gateway", lambda *a, **kw: calls.append((a, kw)) or {"forwarded": 0})
    parser = argparse.ArgumentParser(prog="dashboard")
    mesh_cli.add_commands(parser.add_subparsers(dest="command", required=True))
    monkeypatch.setenv("DASHBOARD_API_KEY", "KEY")  # the gateway's key: its environment or its TOML file
    args = parser.parse_args(
        ["mesh-gateway", "--device", "tcp://pitnode", "--server", "http://pit:5000", "--car", "car-7",
         "--car", "car-12"]
    )
    assert args.func(args) == 0
    assert calls == [(("tcp://pitnode", "http://pit:5000", "KEY"), {"gateway_id": "mesh-gateway",
                                                                    "cars": ["car-7", "car-12"], "ca_cert": None})]
    with pytest.raises(SystemExit):
        parser.parse_args(["mesh-gateway", "--server", "http://pit:5000"])  # --device is required
    with pytest.raises(SystemExit):  # never a key on the command line
        parser.parse_args(["mesh-gateway", "--device", "x", "--server", "http://pit:5000", "--api-key", "KEY"])
