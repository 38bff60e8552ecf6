"""MeshLink, the in-car LoRa sender, through the real meshtastic library with the radio replaced.

``CaptureRadio`` is the library's own ``MeshInterface`` with only the wire
swapped: what the library would write to the device (``ToRadio`` protobufs)
is captured in ``_sendToRadioImpl``, and what a device would answer
(``FromRadio``: the config handshake, queue status, received packets) is fed
to ``_handleFromRadio``, which dispatches packets to
``_handlePacketFromRadio`` and the library's pubsub topics. Written against
meshtastic 2.7.11: these are internal methods, keep the version pinned.
"""
from __future__ import annotations

import threading
import time

import pytest
import serial
from meshtastic import BROADCAST_NUM
from meshtastic.mesh_interface import MeshInterface
from meshtastic.protobuf import config_pb2, mesh_pb2, portnums_pb2

from dashboard.car import mesh
from dashboard.errors import SourceError
from dashboard.telemetry import lora
from tests.waiting import wait_for

CAR_NODE = 0x0A0B0C0D
PIT_NODE = 0x01020304
SESSION_ID = "1a2b3c4d-5e6f-4a0b-8c0d-0e0f10111213"
FRAME = {"seq": 1200, "t": 1700000000.25, "channels": {
    "lat": 52.0720, "lon": -1.0160, "speed": 212.3, "rpm": 7300, "coolant_temp": 97.5, "fuel_level": 41.0,
    "gps_fix": 1, "throttle": 100,
}}


class CaptureRadio(MeshInterface):
    """A Meshtastic node without hardware: the real MeshInterface, its wire replaced by a list."""

    def __init__(self, node_num: int = CAR_NODE, fail_with: BaseException | None = None) -> None:
        self.sent: list[mesh_pb2.ToRadio] = []
        self.fail_with = fail_with
        self.closed = False
        super().__init__(noProto=False, timeout=5)
        # The handshake StreamInterface.connect() runs against a real device:
        self._startConfig()  # -> ToRadio(want_config_id)
        self.from_radio(my_info=mesh_pb2.MyNodeInfo(my_node_num=node_num))
        lora_config = config_pb2.Config.LoRaConfig(
            hop_limit=3, region=config_pb2.Config.LoRaConfig.RegionCode.EU_868,
            modem_preset=config_pb2.Config.LoRaConfig.ModemPreset.LONG_FAST,
        )
        self.from_radio(config=config_pb2.Config(lora=lora_config))
        self.from_radio(config_complete_id=self.configId)  # -> isConnected, like a real radio

    def _sendToRadioImpl(self, toRadio: mesh_pb2.ToRadio) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        copy = mesh_pb2.ToRadio()
        copy.CopyFrom(toRadio)
        self.sent.append(copy)

    def _startHeartbeat(self) -> None:
        # The library's keep-alive is a non-daemon 300 s Timer: a test failing before close()
        # would keep pytest alive for five minutes. The heartbeat is not what is under test.
        pass

    def close(self) -> None:
        self.closed = True
        super().close()

    def from_radio(self, **fields) -> None:
        """Feed the library one FromRadio message, as serialized bytes from the device."""
        self._handleFromRadio(mesh_pb2.FromRadio(**fields).SerializeToString())

    def packets(self) -> list[mesh_pb2.MeshPacket]:
        """The MeshPackets the library handed to the radio."""
        return [m.packet for m in self.sent if m.HasField("packet")]

    def receive(self, packet: mesh_pb2.MeshPacket) -> None:
        """A packet heard over the air arrives from this radio."""
        self.from_radio(packet=packet)


def as_received(sent: mesh_pb2.MeshPacket, from_node: int = CAR_NODE, rssi: int = -97, snr: float = 6.25):
    """What the pit radio delivers for a packet another radio transmitted: sender, signal, hops filled in."""
    packet = mesh_pb2.MeshPacket()
    packet.CopyFrom(sent)
    setattr(packet, "from", from_node)  # `from` is a Python keyword
    packet.rx_rssi, packet.rx_snr, packet.rx_time = rssi, snr, 1700000001
    packet.hop_start, packet.hop_limit = 3, 3
    return packet


@pytest.fixture
def radio():
    radio = CaptureRadio()
    yield radio
    radio.fail_with = None
    radio.close()


def make_link(radio, **kwargs) -> mesh.MeshLink:
    return mesh.MeshLink("/dev/ttyFAKE", "car-7", interface_factory=lambda port: radio, **kwargs)


# -------------------------------------------------------------------- tests
def test_capture_radio_runs_the_librarys_handshake(radio):
    assert radio.isConnected.is_set()
    assert radio.myInfo.my_node_num == CAR_NODE
    assert radio.sent[0].want_config_id == radio.configId


def test_summary_goes_out_as_an_unacked_private_app_broadcast(radio):
    link = make_link(radio)
    link.update(SESSION_ID, FRAME, status=lora.make_status(gps=True))
    assert link.send_now() is True
    [packet] = radio.packets()
    assert packet.decoded.portnum == portnums_pb2.PortNum.PRIVATE_APP == 256
    assert packet.to == BROADCAST_NUM
    assert packet.want_ack is False
    assert packet.hop_limit == 3  # the radio's configured hop limit
    expected = lora.quantize(lora.summary_from_frame("car-7", SESSION_ID, FRAME, lora.make_status(gps=True)))
    assert lora.decode(packet.decoded.payload) == expected
    assert link.counts["sent"] == 1 and link.status == "connected"


def test_nothing_new_means_no_second_packet(radio):
    link = make_link(radio)
    link.update(SESSION_ID, FRAME)
    assert link.send_now() is True
    assert link.send_now() is False
    link.update(SESSION_ID, {**FRAME, "seq": FRAME["seq"] + 10})
    assert link.send_now() is True
    assert [lora.decode(p.decoded.payload).seq for p in radio.packets()] == [1200, 1210]


def test_no_session_yet_sends_nothing(radio):
    link = make_link(radio)
    link.update(None, FRAME)
    assert link.send_now() is False
    assert link.status == "waiting" and radio.packets() == []


def test_thread_sends_and_start_stop_are_safe_twice(radio):
    link = make_link(radio, interval_s=mesh.MIN_INTERVAL_S)
    link.stop()  # before start: harmless
    link.update(SESSION_ID, FRAME)
    link.start()
    link.start()
    wait_for(lambda: radio.packets(), timeout=5, message="a summary on the radio")
    link.stop()
    link.stop()
    assert radio.closed and link.status == "stopped"
    assert sum(1 for m in radio.sent if m.disconnect) >= 1  # the library told the radio goodbye
    assert len(radio.packets()) == 1


@pytest.mark.parametrize("error", [serial.SerialException("device disconnected"), OSError(5, "I/O error")])
def test_radio_failing_on_send_never_reaches_the_caller(radio, error):
    radios = [radio, CaptureRadio()]
    link = mesh.MeshLink("/dev/ttyFAKE", "car-7", interface_factory=lambda port: radios[link.counts["connects"]])
    link.update(SESSION_ID, FRAME)
    radio.fail_with = error
    assert link.send_now() is False  # no exception
    assert link.status == "send failed" and str(error) in link.last_error
    assert link.counts["failed"] == 1 and radio.closed  # dropped, to be reopened
    assert link.send_now() is True  # the next attempt reconnects (second radio)
    assert len(radios[1].packets()) == 1
    radios[1].close()


def test_absent_radio_is_a_status_not_an_exception():
    def absent(port):
        raise serial.SerialException(f"could not open port {port}: No such file or directory")

    link = mesh.MeshLink("/dev/ttyUSB9", "car-7", interval_s=mesh.MIN_INTERVAL_S, interface_factory=absent)
    link.update(SESSION_ID, FRAME)
    assert link.send_now() is False
    assert link.status == "no radio" and "No such file" in link.last_error
    link.start()
    wait_for(lambda: link.counts["failed"] >= 2, timeout=5, message="a second connect attempt")
    link.stop()
    assert link.status == "stopped"


def test_busy_radio_is_skipped_without_blocking(radio):
    link = make_link(radio)
    link.update(SESSION_ID, FRAME)
    radio.from_radio(queueStatus=mesh_pb2.QueueStatus(free=0, maxlen=16))  # the radio's TX queue is full
    started = time.monotonic()
    assert link.send_now() is False
    assert time.monotonic() - started < 0.5  # the library would sleep until space appears
    assert link.status == "busy" and link.counts["skipped_busy"] == 1
    radio.from_radio(queueStatus=mesh_pb2.QueueStatus(free=16, maxlen=16))
    assert link.send_now() is True


def test_disconnected_radio_is_dropped_without_waiting(radio):
    link = make_link(radio)
    link.update(SESSION_ID, FRAME)
    assert link.connect()
    radio.from_radio(rebooted=True)  # the library clears isConnected and restarts its config download
    started = time.monotonic()
    assert link.send_now() is False
    assert time.monotonic() - started < 0.5  # sendData would wait 30 s for the connection
    assert link.status == "radio disconnected" and radio.closed


def test_bad_frame_upstream_is_counted_not_raised(radio):
    link = make_link(radio)
    link.update("not-a-uuid", FRAME)
    assert link.send_now() is False
    assert link.counts["encode_errors"] == 1 and "encode" in link.last_error
    assert radio.packets() == []


def test_update_is_thread_safe_with_the_sender(radio):
    link = make_link(radio)
    done = threading.Event()

    def produce():
        for seq in range(2000):
            link.update(SESSION_ID, {**FRAME, "seq": seq})
        done.set()

    producer = threading.Thread(target=produce)
    producer.start()
    while not done.is_set():
        link.send_now()
    producer.join()
    link.send_now()
    seqs = [lora.decode(p.decoded.payload).seq for p in radio.packets()]
    assert seqs == sorted(set(seqs)) and seqs[-1] == 1999


@pytest.mark.parametrize(
    "port, expected",
    [("/dev/ttyUSB0", ("serial", "/dev/ttyUSB0", 0)), ("tcp://meshnode.local", ("tcp", "meshnode.local", 4403)),
     ("tcp://10.0.0.5:4404", ("tcp", "10.0.0.5", 4404))],
)
def test_parse_port(port, expected):
    assert mesh.parse_port(port) == expected


@pytest.mark.parametrize("port", ["", "tcp://", "tcp://host:notaport"])
def test_parse_port_rejects(port):
    with pytest.raises(SourceError):
        mesh.parse_port(port)


def test_open_interface_on_a_missing_device_raises_for_the_link_to_catch():
    with pytest.raises(Exception):  # noqa: B017 - whatever pyserial raises; MeshLink catches all
        mesh.open_interface("/dev/does-not-exist-mesh", timeout=1)
