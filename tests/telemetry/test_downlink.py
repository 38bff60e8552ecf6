"""The LoRa downlink codec: golden bytes, sizes and airtime, round trips, and hostile payloads."""
from __future__ import annotations

import binascii
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dashboard.errors import DashboardError, InvalidInput
from dashboard.telemetry import downlink as d
from dashboard.telemetry import lora
from dashboard.telemetry import messages as m
from dashboard.telemetry.frames import MAX_T, MIN_T

# The layouts as RACE_DASHBOARD_PLAN.md ("Pit-to-car messages") writes them, restated here so that a
# change of the codec that the document does not follow fails a test.
SPEC_HEADER = struct.Struct(">BBBHI")
SPEC_MESSAGE = struct.Struct(">BIB")
SPEC_CLOSE = struct.Struct(">B")
SPEC_REPORT = struct.Struct(">BBIBHii")

CAR = lora.car_hash("car-7")  # 13396
GOLDEN = {
    "d8010134541a2b3c4d0e6553f3580c424f582054484953204c41501bf0":
        d.DownlinkMessage(CAR, 0x1A2B3C4D, "BOX THIS LAP", 1_700_000_600.0, False, "urgent", "box"),
    "d8010234541a2b3c4d05d365": d.DownlinkClose(CAR, 0x1A2B3C4D, "cancelled"),
    "d8010334541a2b3c4d04016553f17b2d000c1eb246c0ffedb0805caf":
        d.DownlinkReport(CAR, 0x1A2B3C4D, "answered", 1_700_000_123.45, "yes", 12, 51.5, -0.12),
}
PROPERTY = settings(max_examples=200, deadline=None)

T0 = 1_700_000_000.0
TEXT_CHARS = st.characters(codec="utf-8", exclude_categories=("C", "Z")) | st.just(" ")


def with_crc(data: bytes) -> bytes:
    return data + struct.pack(">H", binascii.crc_hqx(data, 0xFFFF))


def texts() -> st.SearchStrategy[str]:
    def fits(text: str) -> bool:
        try:
            return m.clean_text(text) == text
        except m.MessageError:
            return False
    return st.text(TEXT_CHARS, min_size=1, max_size=m.MAX_TEXT_CHARS).map(lambda s: " ".join(s.split())).filter(fits)


def message_packets() -> st.SearchStrategy[d.DownlinkMessage]:
    return st.builds(d.DownlinkMessage, car_hash=st.integers(0, 0xFFFF), short_id=st.integers(1, 2**32 - 1),
                     text=texts(), expires_t=st.integers(int(MIN_T), int(MAX_T)).map(float),
                     asks_answer=st.booleans(), priority=st.sampled_from(m.PRIORITIES),
                     close_on=st.sampled_from([None, "box"]))


def close_packets() -> st.SearchStrategy[d.DownlinkClose]:
    return st.builds(d.DownlinkClose, car_hash=st.integers(0, 0xFFFF), short_id=st.integers(1, 2**32 - 1),
                     state=st.sampled_from(d.CLOSE_STATES))


@st.composite
def report_packets(draw: st.DrawFn) -> d.DownlinkReport:
    state = draw(st.sampled_from(d.REPORT_STATES))
    position = draw(st.none() | st.tuples(st.floats(-90, 90), st.floats(-180, 180)))
    lat, lon = position if position else (None, None)
    return d.DownlinkReport(
        draw(st.integers(0, 0xFFFF)), draw(st.integers(1, 2**32 - 1)), state, draw(st.floats(MIN_T, MAX_T - 1)),
        draw(st.sampled_from(sorted(d.ANSWER_CODES))) if state == "answered" else None,
        draw(st.none() | st.integers(0, 0xFFFE)), lat, lon)


def packets() -> st.SearchStrategy[d.Packet]:
    return message_packets() | close_packets() | report_packets()


# ------------------------------------------------------------------ the format
@pytest.mark.parametrize("hex_, packet", GOLDEN.items())
def test_golden_bytes_freeze_the_wire_format(hex_: str, packet: d.Packet):
    assert d.encode(packet).hex() == hex_
    assert d.decode(bytes.fromhex(hex_)) == packet


def test_the_layouts_are_the_documented_ones():
    msg, close, report = (bytes.fromhex(h) for h in GOLDEN)
    assert SPEC_HEADER.unpack_from(msg) == (0xD8, 1, 1, CAR, 0x1A2B3C4D)
    assert SPEC_MESSAGE.unpack_from(msg, 9) == (0b1110, 1_700_000_600, 12)  # urgent (3 << 1) | box (8)
    assert msg[15:-2] == b"BOX THIS LAP"
    assert SPEC_CLOSE.unpack_from(close, 9) == (5,)
    assert SPEC_REPORT.unpack_from(report, 9) == (4, 1, 1_700_000_123, 45, 12, 515_000_000, -1_200_000)
    for payload in (msg, close, report):
        assert payload[-2:] == struct.pack(">H", binascii.crc_hqx(payload[:-2], 0xFFFF))
    assert (d.MESSAGE_BASE_SIZE, d.MAX_MESSAGE_SIZE, d.CLOSE_SIZE, d.REPORT_SIZE) == (17, 65, 12, 28)
    assert d.MAGIC != lora.MAGIC  # both share the port: a gateway tells them apart by the first byte


def test_every_packet_fits_the_payload_and_airtime_budget():
    longest = d.DownlinkMessage(CAR, 1, "É" * 24, T0, True, "urgent", "box")
    assert len(d.encode(longest)) == d.MAX_MESSAGE_SIZE <= d.MAX_PAYLOAD
    assert d.MAX_PAYLOAD + lora.MESH_OVERHEAD_BYTES <= 233 + 16  # Meshtastic's Data payload limit, plus its header
    # On LongFast: the longest message under 0.9 s, a report under the summary's 0.68 s.
    assert 0.8 < d.MAX_MESSAGE_AIRTIME_S < 0.9
    assert d.CLOSE_AIRTIME_S < d.REPORT_AIRTIME_S < lora.SUMMARY_AIRTIME_S


# ------------------------------------------------------------------ properties
@PROPERTY
@given(packets())
def test_every_valid_packet_round_trips(packet: d.Packet):
    payload = d.encode(packet)
    decoded = d.decode(payload)
    assert d.encode(decoded) == payload
    if isinstance(packet, d.DownlinkReport):
        assert abs(decoded.t - packet.t) <= 0.005 + 1e-6
        if packet.lat is not None:
            assert abs(decoded.lat - packet.lat) <= 0.5e-7 + 1e-9 and abs(decoded.lon - packet.lon) <= 0.5e-7 + 1e-9
        assert (decoded.state, decoded.answer, decoded.lap) == (packet.state, packet.answer, packet.lap)
    else:
        assert decoded == packet


@PROPERTY
@given(packets(), st.data())
def test_any_single_bit_flip_is_detected(packet: d.Packet, data: st.DataObject):
    payload = bytearray(d.encode(packet))
    bit = data.draw(st.integers(0, 8 * len(payload) - 1))
    payload[bit // 8] ^= 1 << (bit % 8)
    with pytest.raises(d.DownlinkDecodeError):
        d.decode(bytes(payload))


@PROPERTY
@given(packets(), st.data())
def test_any_truncation_is_detected(packet: d.Packet, data: st.DataObject):
    payload = d.encode(packet)
    cut = data.draw(st.integers(0, len(payload) - 1))
    with pytest.raises(d.DownlinkDecodeError):
        d.decode(payload[:cut])
    with pytest.raises(d.DownlinkDecodeError, match="bytes, expected"):
        d.decode(payload + b"\x00")


@PROPERTY
@given(st.binary(max_size=100) | st.binary(max_size=80).map(lambda b: bytes([0xD8, 1, b[0] % 4 if b else 1]) + b)
       | st.binary(max_size=80).map(lambda b: with_crc(bytes([0xD8, 1, 1 + (b[0] % 3 if b else 0)]) + b)))
def test_random_bytes_never_crash_the_decoder(payload: bytes):
    try:
        packet = d.decode(payload)
    except d.DownlinkDecodeError as exc:
        assert exc.reason in {"foreign", "version", "kind", "size", "checksum", "range"}
        assert exc.payload == payload
    else:
        assert d.decode(d.encode(packet)) == packet  # anything accepted is a valid packet


# ------------------------------------------------------------------ refusals, each with its reason
def header(kind: int, short_id: int = 7) -> bytes:
    return SPEC_HEADER.pack(0xD8, 1, kind, CAR, short_id)


@pytest.mark.parametrize("payload, reason, field", [
    (b"", "foreign", None),
    (bytes.fromhex(lora.encode(lora.LoraSummary(1, "01020304", 1, T0)).hex()), "foreign", None),
    (b"\xd8", "version", "version"),
    (b"\xd8\x02" + bytes(20), "version", "version"),
    (b"\xd8\x01", "kind", "kind"),
    (b"\xd8\x01\x09" + bytes(20), "kind", "kind"),
    (header(2) + b"\x05", "size", None),
    (header(2) + b"\x05\x00\x00", "checksum", None),
    (with_crc(header(2, short_id=0) + b"\x05"), "range", "short_id"),
    (with_crc(header(2) + b"\x02"), "range", "state"),  # delivered is not a close
    (with_crc(header(2) + b"\x63"), "range", "state"),
    (with_crc(header(1) + SPEC_MESSAGE.pack(0x10, int(T0), 4) + b"PUSH"), "range", "flags"),
    (with_crc(header(1) + SPEC_MESSAGE.pack(0, 12, 4) + b"PUSH"), "range", "expires_t"),
    (with_crc(header(1) + SPEC_MESSAGE.pack(0, int(T0), 4) + b"PU\xffH"), "range", "text"),
    (with_crc(header(1) + SPEC_MESSAGE.pack(0, int(T0), 4) + b" PUS"), "range", "text"),
    (with_crc(header(1) + SPEC_MESSAGE.pack(0, int(T0), 4) + b"PU\x07H"), "range", "text"),
    (with_crc(header(1) + SPEC_MESSAGE.pack(0, int(T0), 0)), "range", "text"),
    (with_crc(header(1) + SPEC_MESSAGE.pack(0, int(T0), 41) + b"X" * 41), "range", "text"),
    (with_crc(header(3) + SPEC_REPORT.pack(6, 0, int(T0), 0, 1, 0, 0)), "range", "state"),
    (with_crc(header(3) + SPEC_REPORT.pack(4, 0, int(T0), 0, 1, 0, 0)), "range", "answer"),
    (with_crc(header(3) + SPEC_REPORT.pack(3, 1, int(T0), 0, 1, 0, 0)), "range", "answer"),
    (with_crc(header(3) + SPEC_REPORT.pack(4, 9, int(T0), 0, 1, 0, 0)), "range", "answer"),
    (with_crc(header(3) + SPEC_REPORT.pack(2, 0, int(T0), 100, 1, 0, 0)), "range", "t"),
    (with_crc(header(3) + SPEC_REPORT.pack(2, 0, 5, 0, 1, 0, 0)), "range", "t"),
    (with_crc(header(3) + SPEC_REPORT.pack(2, 0, int(T0), 0, 1, -(2**31), 0)), "range", "lat"),
    (with_crc(header(3) + SPEC_REPORT.pack(2, 0, int(T0), 0, 1, 900_000_001, 0)), "range", "lat"),
])
def test_a_bad_packet_is_refused_with_its_reason(payload: bytes, reason: str, field: str | None):
    with pytest.raises(d.DownlinkDecodeError) as info:
        d.decode(payload)
    assert (info.value.reason, info.value.field) == (reason, field)
    assert isinstance(info.value, InvalidInput) and info.value.to_dict()["code"] == "invalid_downlink"


@pytest.mark.parametrize("not_bytes", [None, "d801", 12, [0xD8, 1]])
def test_a_payload_that_is_not_bytes_is_refused(not_bytes: object):
    with pytest.raises(d.DownlinkDecodeError):
        d.decode(not_bytes)


@pytest.mark.parametrize("packet, field", [
    (d.DownlinkClose(CAR, 0, "cancelled"), "short_id"),
    (d.DownlinkClose(CAR, 2**32, "cancelled"), "short_id"),
    (d.DownlinkClose(-1, 1, "cancelled"), "car_hash"),
    (d.DownlinkClose(CAR, 1, "answered"), "state"),
    (d.DownlinkMessage(CAR, 1, "X" * 41, T0), "text"),
    (d.DownlinkMessage(CAR, 1, " PUSH", T0), "text"),
    (d.DownlinkMessage(CAR, 1, "PUSH", T0, priority="asap"), "priority"),
    (d.DownlinkMessage(CAR, 1, "PUSH", T0, close_on="pit"), "close_on"),
    (d.DownlinkMessage(CAR, 1, "PUSH", float("nan")), "expires_t"),
    (d.DownlinkMessage(CAR, 1, "PUSH", T0, asks_answer=1), "asks_answer"),  # type: ignore[arg-type]
    (d.DownlinkReport(CAR, 1, "queued", T0), "state"),
    (d.DownlinkReport(CAR, 1, "answered", T0), "answer"),
    (d.DownlinkReport(CAR, 1, "seen", T0, answer="yes"), "answer"),
    (d.DownlinkReport(CAR, 1, "seen", 1.0), "t"),
    (d.DownlinkReport(CAR, 1, "seen", T0, lap=0xFFFF), "lap"),
    (d.DownlinkReport(CAR, 1, "seen", T0, lat=1.0), "lat"),
    (d.DownlinkReport(CAR, 1, "seen", T0, lat=1.0, lon=181.0), "lon"),
])
def test_a_packet_the_format_cannot_carry_is_refused_by_the_encoder(packet: d.Packet, field: str):
    with pytest.raises(d.DownlinkEncodeError) as info:
        d.encode(packet)
    assert info.value.field == field and isinstance(info.value, DashboardError)
    with pytest.raises(d.DownlinkEncodeError):
        d.encode("not a packet")  # type: ignore[arg-type]


# ------------------------------------------------------------------ with the message model
def test_a_message_over_lora_and_over_the_main_link_is_shown_once_and_answered_once():
    msg = m.new_message("car-7", "FUEL OK?", created_by="k7f3a", now=T0, asks_answer=True, priority="high")
    record = m.transition(m.queue(msg), "sent", t=T0 + 1, via="lora").record
    packet = d.decode(d.encode(d.message_packet(msg, lora.car_hash("car-7"))))
    assert packet.expires_t == msg.expires_t and packet.short_id == msg.short_id
    on_car = packet.to_message("car-7", received_t=T0 + 2)
    assert (on_car.short_id, on_car.text, on_car.asks_answer, on_car.priority) == (msg.short_id, "FUEL OK?", True,
                                                                                   "high")
    inbox = m.Inbox()
    assert inbox.receive(on_car) and not inbox.receive(msg)  # the main link's copy: the same message
    assert inbox.mark_seen(msg.short_id) and inbox.answer(msg.short_id, "yes")
    answered = m.MessageEvent(on_car.id, "answered", T0 + 5.25, "lora", 3, 28.41, -81.38, "yes")
    report = d.decode(d.encode(d.report_packet(answered, on_car.short_id, lora.car_hash("car-7"))))
    assert isinstance(report, d.DownlinkReport) and report.short_id == msg.short_id
    result = m.transition(record, report.state, t=report.t, via="lora", lap=report.lap, lat=report.lat,
                          lon=report.lon, answer=report.answer)
    assert result.record.state == "answered" and result.record.answer == "yes"
    assert [e.state for e in result.events] == ["delivered", "seen", "answered"]
    assert result.events[-1].t == pytest.approx(T0 + 5.25) and result.events[-1].lap == 3
    with pytest.raises(m.MessageError):  # a packet received after its expiry: the car drops it
        packet.to_message("car-7", received_t=msg.expires_t)
