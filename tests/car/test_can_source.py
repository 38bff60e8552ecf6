"""The CAN source against a real python-can bus: a peer process sends frames made from abs.dbc on udp_multicast.

vcan is not available in this container's kernel (``ip link add dev vcan0 type vcan``: "Unknown device type"),
so the bus between the processes is python-can's udp_multicast interface on loopback, each test on its own
port. Unplugging is the peer going away (silence: error status; back: reading) and the source's own bus
closed under it (recv fails: error, reopened with backoff, reading again).
"""
from __future__ import annotations

import random
from collections.abc import Iterator

import cantools
import pytest

from dashboard.car.can_decoder import load_decoder
from dashboard.car.can_source import NO_DATA_TIMEOUT_S, CanSource, CanSpecError, check_interface, parse_bus
from dashboard.car.source import ChannelStore, SourceState
from tests.car.can_peer import CanPeer, decoded_values
from tests.car.test_can_decoder import DBC, SAMPLE_MAP
from tests.waiting import wait_for

TIMEOUT_S = 20.0  # generous: two busy cores
DB = cantools.database.load_file(str(DBC), strict=False)
WHEEL_FL = DB.get_message_by_name("BREMSE_33").get_signal_by_name("whlspeed_FL")
SPEEDS_KMH = {round(v * 3.6, 6) for v in decoded_values(WHEEL_FL)}  # every speed the peer's frames carry


@pytest.fixture
def bus(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, int]]:
    """A udp_multicast group and port of this test's own; python-can in this process reads the port too."""
    port = random.randint(43200, 43999)
    monkeypatch.setenv("CAN_CONFIG", f'{{"port": {port}}}')
    yield f"udp_multicast:239.74.{random.randint(0, 255)}.{random.randint(1, 254)}", port


@pytest.fixture
def peers() -> Iterator:
    made: list[CanPeer] = []

    def make(spec: str, port: int, *args: str) -> CanPeer:
        peer = CanPeer(spec, str(DBC), *args, port=port)
        made.append(peer)
        return peer.start()

    yield make
    for peer in made:
        peer.stop()


@pytest.fixture
def source(bus: tuple[str, int]) -> Iterator[CanSource]:
    src = CanSource(bus[0], ChannelStore(), load_decoder(DBC, SAMPLE_MAP))
    yield src
    src.stop()


def speed(src: CanSource) -> float | None:
    return src.store.snapshot().get("speed")


def test_decoded_values_reach_the_store_and_garbage_is_counted(source: CanSource, bus, peers) -> None:
    source.start()
    wait_for(lambda: source.status.state is SourceState.CONNECTED, TIMEOUT_S, "the bus opened")
    peers(*bus, "--rate", "100", "--garbage")
    wait_for(lambda: source.status.state is SourceState.READING, TIMEOUT_S, "reading")
    wait_for(lambda: source.decoder.decoded > 200, TIMEOUT_S, "frames decoded")
    values = source.store.snapshot()
    assert round(values["speed"], 6) in SPEEDS_KMH  # m/s on the bus, km/h in the store
    assert set(source.decoder.channels) <= set(values)  # every mapped signal of the sent messages arrived
    counters = source.decoder.counters()
    assert counters["decode_errors"] > 0 and counters["unknown_ids"] == 1  # a short frame, an id not in the DBC
    assert counters["unmapped_signals"] > 0
    assert source.status.state is SourceState.READING and source.crashes == 0


def test_the_peer_unplugged_is_an_error_and_back_it_reads_again(source: CanSource, bus, peers) -> None:
    source.start()
    peer = peers(*bus, "--rate", "50", "--message", "BREMSE_33")
    wait_for(lambda: source.status.state is SourceState.READING, TIMEOUT_S, "reading")
    peer.stop()
    wait_for(lambda: source.status.state is SourceState.ERROR, TIMEOUT_S + NO_DATA_TIMEOUT_S, "silence noticed")
    assert source.status.reason == f"no CAN frames for {NO_DATA_TIMEOUT_S:.0f} s"
    before = source.decoder.decoded
    peers(*bus, "--rate", "50", "--message", "BREMSE_33")
    wait_for(lambda: source.status.state is SourceState.READING and source.decoder.decoded > before + 20,
             TIMEOUT_S, "reading again")
    assert source.opens == 1 and round(speed(source), 6) in SPEEDS_KMH


def test_the_adapter_failing_is_an_error_and_the_bus_is_reopened(source: CanSource, bus, peers) -> None:
    source.start()
    peers(*bus, "--rate", "50", "--message", "BREMSE_33")
    wait_for(lambda: source.status.state is SourceState.READING, TIMEOUT_S, "reading")
    seen: list[str] = []
    source.bus.shutdown()  # the adapter goes away under the reader: python-can's recv fails
    wait_for(lambda: (seen.append(str(source.status)) or source.opens == 2), TIMEOUT_S, "the bus reopened")
    assert any(s.startswith(f"error: bus {bus[0]} lost") for s in seen), seen
    before = source.decoder.decoded
    wait_for(lambda: source.status.state is SourceState.READING and source.decoder.decoded > before,
             TIMEOUT_S, "reading again")
    assert source.crashes == 0


def test_a_bus_that_cannot_open_is_retried_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    src = CanSource("socketcan:nosuchcan0", ChannelStore(), load_decoder(DBC, SAMPLE_MAP))
    attempts: list[float] = []
    opener = src._open

    def counted():
        attempts.append(0.0)
        return opener()

    monkeypatch.setattr(src, "_open", counted)
    src.start()
    try:
        wait_for(lambda: len(attempts) >= 2, TIMEOUT_S, "a second attempt")
        assert src.status.state is SourceState.ERROR
        assert src.status.reason.startswith("cannot open socketcan:nosuchcan0: ")
        assert src.crashes == 0 and src.running
    finally:
        src.stop()
    assert src.status.state is SourceState.STOPPED


def test_bus_names() -> None:
    assert parse_bus("socketcan:can0") == ("socketcan", "can0")
    assert parse_bus("slcan:/dev/ttyACM0@115200") == ("slcan", "/dev/ttyACM0@115200")
    for bad in ("can0", "socketcan:", ":can0", ""):
        with pytest.raises(CanSpecError, match="expected INTERFACE:CHANNEL"):
            parse_bus(bad)
    for known in ("socketcan", "slcan", "gs_usb", "pcan", "udp_multicast"):
        check_interface(known)
    with pytest.raises(CanSpecError, match="'sockecan' is not one python-can knows"):
        check_interface("sockecan")
