"""The LoRa summary codec: golden bytes, round trip, size, range policy, and hostile payloads."""
from __future__ import annotations

import binascii
import math
import struct
import uuid

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from meshtastic.protobuf import mesh_pb2

from dashboard.errors import DashboardError, InvalidInput
from dashboard.telemetry import lora
from dashboard.telemetry.channels import REGISTRY
from dashboard.telemetry.frames import MAX_T, MIN_T, Frame, parse_frame

# The layout as RACE_DASHBOARD_PLAN.md ("LoRa link") writes it, restated here so that a change of
# the codec that the document does not follow fails a test.
SPEC_BODY = struct.Struct(">BBH4sIIBiiHHhBBH")

GOLDEN = lora.LoraSummary(
    car_hash=lora.car_hash("car-7"),
    session_prefix="1a2b3c4d",
    seq=42,
    t=1700000000.12,
    lat=51.5,
    lon=-0.12,
    speed=123.4,
    rpm=6500,
    coolant_temp=91.2,
    fuel_level=37.5,
    gps_fix=1,
    status=lora.make_status(uplink=True, gps=True),
)
GOLDEN_HEX = "d70134541a2b3c4d0000002a6553f1000c1eb246c0ffedb08004d2196403904b0100110d47"

PROPERTY = settings(max_examples=100, deadline=None)  # local, not a global profile: other suites keep theirs


def channel_value(name: str, wild: bool) -> st.SearchStrategy[float | None]:
    """Values of one channel: in its registry range, or anything at all when ``wild``."""
    channel = REGISTRY[name]
    if wild:
        return st.none() | st.floats(allow_nan=True, allow_infinity=True) | st.integers(-(10**12), 10**12)
    return st.none() | st.floats(channel.minimum, channel.maximum)


def summaries(wild: bool = False) -> st.SearchStrategy[lora.LoraSummary]:
    return st.builds(
        lora.LoraSummary,
        car_hash=st.integers(0, 0xFFFF),
        session_prefix=st.binary(min_size=4, max_size=4).map(bytes.hex),
        seq=st.integers(0, lora.MAX_SEQ),
        t=st.floats(MIN_T, MAX_T),
        status=st.integers(0, 0xFFFF),
        **{f.channel: channel_value(f.channel, wild) for f in lora.CHANNEL_FIELDS},
    )


def with_crc(body: bytes) -> bytes:
    return body + struct.pack(">H", binascii.crc_hqx(body, 0xFFFF))


def spec_payload(**overrides: object) -> bytes:
    """A payload packed straight from the spec table, with raw field values overridden."""
    fields = {
        "magic": 0xD7, "version": 1, "car": 1, "session": b"\x01\x02\x03\x04", "seq": 1,
        "t_s": 1_700_000_000, "t_cs": 0, "lat": 0, "lon": 0, "speed": 0, "rpm": 0, "coolant": 0,
        "fuel": 0, "fix": 0, "status": 0,
    }
    fields.update(overrides)
    return with_crc(SPEC_BODY.pack(*fields.values()))


# ------------------------------------------------------------------ the format
def test_golden_bytes_freeze_the_wire_format():
    assert lora.encode(GOLDEN).hex() == GOLDEN_HEX
    assert lora.decode(bytes.fromhex(GOLDEN_HEX)) == lora.quantize(GOLDEN)


def test_codec_matches_the_spec_table():
    payload = lora.encode(GOLDEN)
    magic, version, car, session, seq, t_s, t_cs, lat, lon, speed, rpm, coolant, fuel, fix, status = (
        SPEC_BODY.unpack(payload[: SPEC_BODY.size])
    )
    assert (magic, version, car, session.hex(), seq) == (0xD7, 1, lora.car_hash("car-7"), "1a2b3c4d", 42)
    assert (t_s, t_cs) == (1700000000, 12)
    assert (lat, lon, speed, rpm, coolant, fuel, fix) == (515000000, -1200000, 1234, 6500, 912, 75, 1)
    assert status == 0b10001
    assert lora.SUMMARY_SIZE == SPEC_BODY.size + 2 == 37


def test_size_is_under_our_ceiling_and_meshtastics_limit():
    assert lora.SUMMARY_SIZE <= lora.MAX_PAYLOAD < mesh_pb2.Constants.DATA_PAYLOAD_LEN


def test_every_registry_range_fits_its_raw_type_without_hitting_null():
    for f in lora.CHANNEL_FIELDS:
        bits = struct.calcsize(f.fmt) * 8
        lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if f.fmt.islower() else (0, 2**bits - 1)
        assert lo <= f.raw_min <= f.raw_max <= hi, f.channel
        assert not f.raw_min <= f.null_raw <= f.raw_max, f.channel


def test_car_hash_and_session_prefix():
    assert lora.car_hash("car-7") == 13396  # frozen: the pit resolves cars by it
    assert lora.car_hash("car-7") != lora.car_hash("car-8")
    sid = str(uuid.UUID("1A2B3C4D-0000-4000-8000-000000000000"))
    assert lora.session_prefix(sid) == "1a2b3c4d"
    with pytest.raises(lora.LoraEncodeError):
        lora.session_prefix("not-a-uuid")


def test_status_flags():
    status = lora.make_status(uplink=True, mil=True)
    assert lora.status_flags(status) == {
        "uplink": True, "backlog": False, "recording": False, "obd": False, "gps": False, "mil": True,
    }
    with pytest.raises(ValueError, match="unknown status flag"):
        lora.make_status(turbo=True)


def test_summary_from_frame_takes_frames_and_dicts():
    frame = {"seq": 7, "t": 1700000000.0, "channels": {"gps_speed": 88.0, "rpm": 4000, "lat": None, "oil_temp": 99}}
    sid = "1a2b3c4d-0000-4000-8000-000000000000"
    from_dict = lora.summary_from_frame("car-7", sid, frame, status=3)
    assert from_dict.speed == 88.0  # speed falls back to gps_speed
    assert (from_dict.rpm, from_dict.lat, from_dict.coolant_temp, from_dict.status) == (4000.0, None, None, 3)
    assert lora.summary_from_frame("car-7", sid, Frame(**frame), status=3) == from_dict
    assert lora.summary_from_frame("car-7", sid, {**frame, "channels": {"speed": 5.0, "gps_speed": 9.0}}).speed == 5.0


def test_errors_belong_to_the_tree():
    assert issubclass(lora.LoraDecodeError, InvalidInput)
    assert issubclass(lora.LoraEncodeError, DashboardError)
    with pytest.raises(lora.LoraDecodeError) as info:
        lora.decode(b"\xd7\x01garbage")
    assert info.value.payload == b"\xd7\x01garbage"
    assert info.value.to_dict()["code"] == "invalid_lora"


def test_airtime_matches_the_semtech_calculator():
    # SF7 / 125 kHz / CR 4/5 / 8-symbol preamble / 10 bytes: 41.2 ms in Semtech's LoRa calculator.
    assert lora.airtime_s(10, sf=7, bw_hz=125_000, cr=5, preamble=8) == pytest.approx(0.041216)
    assert 0.5 < lora.SUMMARY_AIRTIME_S < 0.8  # a summary on LongFast


# --------------------------------------------------------------- properties
@PROPERTY
@given(summaries())
def test_round_trip(summary):
    decoded = lora.decode(lora.encode(summary))
    assert decoded == lora.quantize(summary)
    assert abs(decoded.t - summary.t) <= 0.005 + 1e-6
    for f in lora.CHANNEL_FIELDS:
        original, back = getattr(summary, f.channel), getattr(decoded, f.channel)
        assert (original is None) == (back is None)
        if original is not None:
            assert abs(back - original) <= 0.5 / f.scale + 1e-9, f.channel
    assert lora.encode(decoded) == lora.encode(summary)  # decoding loses nothing the wire carries


@PROPERTY
@given(summaries(wild=True))
def test_any_measured_value_encodes_clamped_or_null(summary):
    payload = lora.encode(summary)
    assert len(payload) == lora.SUMMARY_SIZE
    decoded = lora.decode(payload)
    parse_frame(decoded.to_frame())  # always a valid frame
    for f in lora.CHANNEL_FIELDS:
        value, back = getattr(summary, f.channel), getattr(decoded, f.channel)
        finite = isinstance(value, (int, float)) and math.isfinite(value)
        if not finite:
            assert back is None
        elif value >= f.maximum:
            assert back == f.raw_max / f.scale
        elif value <= f.minimum:
            assert back == f.raw_min / f.scale
        else:
            assert f.minimum <= back <= f.maximum


def test_extreme_values_clamp_instead_of_overflowing():
    huge = lora.LoraSummary(1, "00000000", 0, MIN_T, lat=1e308, lon=-1e308, speed=1.7e308, rpm=-5,
                            coolant_temp=float("inf"), fuel_level=100.2, gps_fix=True)
    back = lora.decode(lora.encode(huge))
    assert (back.lat, back.lon, back.speed, back.rpm) == (90.0, -180.0, 500.0, 0.0)
    assert (back.coolant_temp, back.fuel_level, back.gps_fix) == (None, 100.0, None)  # a bool is not a number


@pytest.mark.parametrize(
    "field, value",
    [("seq", -1), ("seq", 2**32), ("seq", 1.5), ("t", MIN_T - 1), ("t", MAX_T + 1), ("t", math.nan),
     ("car_hash", 0x10000), ("session_prefix", "1A2B3C4D"), ("session_prefix", "1a2b3c"), ("status", -1),
     ("version", 2)],
)
def test_identity_out_of_range_is_rejected_on_encode(field, value):
    with pytest.raises(lora.LoraEncodeError) as info:
        lora.encode(GOLDEN.__class__(**{**GOLDEN.__dict__, field: value}))
    assert info.value.field == field


@PROPERTY
@given(summaries(), st.data())
def test_truncated_or_extended_payload_raises(summary, data):
    payload = lora.encode(summary)
    cut = data.draw(st.integers(0, len(payload) - 1))
    with pytest.raises(lora.LoraDecodeError):
        lora.decode(payload[:cut])
    with pytest.raises(lora.LoraDecodeError) as info:
        lora.decode(payload + data.draw(st.binary(min_size=1, max_size=200)))
    assert info.value.reason == "size"


@PROPERTY
@given(summaries(), st.data())
def test_any_corrupted_byte_raises(summary, data):
    payload = bytearray(lora.encode(summary))
    at = data.draw(st.integers(0, len(payload) - 1))
    payload[at] ^= data.draw(st.integers(1, 255))  # one byte changed: a burst the CRC always catches
    with pytest.raises(lora.LoraDecodeError) as info:
        lora.decode(bytes(payload))
    expected = {0: "foreign", 1: "version"}.get(at, "checksum")
    assert info.value.reason == expected


@PROPERTY
@given(st.binary(max_size=120) | st.binary(min_size=35, max_size=35).map(lambda b: with_crc(b"\xd7\x01" + b[2:])))
def test_arbitrary_bytes_raise_decode_error_or_give_a_valid_frame(payload):
    try:
        summary = lora.decode(payload)
    except lora.LoraDecodeError as exc:
        assert exc.reason in {"foreign", "version", "size", "checksum", "range"}
    else:
        parse_frame(summary.to_frame())


@pytest.mark.parametrize("payload", [None, "d701", 1234, [0xD7, 1], b""])
def test_non_bytes_and_empty_raise_decode_error(payload):
    with pytest.raises(lora.LoraDecodeError):
        lora.decode(payload)


@PROPERTY
@given(st.sampled_from(lora.CHANNEL_FIELDS), st.data())
def test_raw_value_out_of_range_with_valid_crc_raises(f, data):
    keys = {"lat": "lat", "lon": "lon", "speed": "speed", "rpm": "rpm", "coolant_temp": "coolant",
            "fuel_level": "fuel", "gps_fix": "fix"}
    bits = struct.calcsize(f.fmt) * 8
    lo, hi = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if f.fmt.islower() else (0, 2**bits - 1)
    outside = st.integers(lo, f.raw_min - 1) if f.raw_min > lo else st.nothing()
    outside = outside | st.integers(f.raw_max + 1, hi)
    raw = data.draw(outside.filter(lambda r: r != f.null_raw))
    with pytest.raises(lora.LoraDecodeError) as info:
        lora.decode(spec_payload(**{keys[f.channel]: raw}))
    assert (info.value.reason, info.value.field) == ("range", f.channel)
    lora.decode(spec_payload(**{keys[f.channel]: f.null_raw}))  # the null marker itself is fine


@PROPERTY
@given(st.integers(100, 255) | st.just(None), st.integers(0, 2**32 - 1))
def test_time_out_of_range_with_valid_crc_raises(t_cs, t_s):
    assume(t_cs is not None or not MIN_T <= t_s <= MAX_T)
    with pytest.raises(lora.LoraDecodeError) as info:
        lora.decode(spec_payload(t_s=t_s, t_cs=t_cs or 0))
    assert (info.value.reason, info.value.field) == ("range", "t")


def test_unknown_version_and_foreign_magic():
    with pytest.raises(lora.LoraDecodeError) as info:
        lora.decode(spec_payload(version=2))
    assert info.value.reason == "version"
    with pytest.raises(lora.LoraDecodeError) as info:
        lora.decode(b"hello mesh")
    assert info.value.reason == "foreign"
