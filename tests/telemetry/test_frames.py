"""Frame validation: good frames pass unchanged, each bad one names its field."""
from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dashboard.errors import FrameError
from dashboard.telemetry.channels import REGISTRY, is_valid_name, stale_after
from dashboard.telemetry.frames import parse_frame, parse_frames

names = st.from_regex(r"[a-z][a-z0-9_.]{0,20}", fullmatch=True)
values = st.one_of(st.none(), st.floats(allow_nan=False, allow_infinity=False), st.integers(-10**9, 10**9))


@given(seq=st.integers(0, 2**53), t=st.floats(946684800.0, 4102444800.0),
       channels=st.dictionaries(names, values, max_size=30))
def test_valid_frames_round_trip(seq, t, channels):
    frame = parse_frame({"seq": seq, "t": t, "channels": channels})
    assert frame.seq == seq and frame.t == t
    assert frame.channels == {k: (None if v is None else float(v)) for k, v in channels.items()}


@pytest.mark.parametrize("raw,field", [
    ({"seq": 1.5, "t": 1.8e9, "channels": {}}, "seq"),
    ({"seq": True, "t": 1.8e9, "channels": {}}, "seq"),
    ({"seq": -1, "t": 1.8e9, "channels": {}}, "seq"),
    ({"seq": 1, "t": math.inf, "channels": {}}, "t"),
    ({"seq": 1, "t": 12.0, "channels": {}}, "t"),
    ({"seq": 1, "t": 1.8e9, "channels": []}, "channels"),
    ({"seq": 1, "t": 1.8e9, "channels": {"rpm": math.nan}}, "channels.rpm"),
    ({"seq": 1, "t": 1.8e9, "channels": {"rpm": True}}, "channels.rpm"),
    ({"seq": 1, "t": 1.8e9, "channels": {"rpm": "1"}}, "channels.rpm"),
    ({"seq": 1, "t": "1.8e9", "channels": {}}, "t"),
    ({"seq": 1, "t": 1.8e9, "channels": {"RPM": 1}}, "channels.RPM.[key]"),
    ({"seq": 1, "t": 1.8e9, "channels": {f"c{i}": 1 for i in range(200)}}, "channels"),
    ({"seq": 1, "t": 1.8e9}, "channels"),
    ({"seq": 1, "t": 1.8e9, "channels": {}, "extra": 1}, "extra"),
    ("frame", "frame"),
])
def test_bad_frames_name_the_field(raw, field):
    with pytest.raises(FrameError) as exc:
        parse_frame(raw)
    assert exc.value.field == field and exc.value.code == "invalid_frame"


def test_registry_names_are_valid_and_staleness_defined():
    assert all(is_valid_name(name) for name in REGISTRY)
    assert REGISTRY["rpm"].unit == "rpm" and REGISTRY["coolant_temp"].unit == "°C"
    assert stale_after("lat") < stale_after("fuel_level")
    assert stale_after("my_sensor") > 0 and not is_valid_name("Bad Name")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**60, 2**60) | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=5)
maybe_frames = st.one_of(
    st.fixed_dictionaries({"seq": st.integers(-5, 2**54) | json_values, "t": st.floats(9e8, 4.2e9) | json_values,
                           "channels": st.dictionaries(names | st.text(max_size=4), values | json_values,
                                                       max_size=5) | json_values},
                          optional={"extra": json_values}),
    json_values)


@given(st.lists(maybe_frames, max_size=6))
def test_the_batch_decoder_answers_as_the_frame_model(raws):
    good, bad = parse_frames(raws)
    model_good, model_bad = [], []
    for raw in raws:
        try:
            model_good.append(parse_frame(raw).model_dump())
        except FrameError as exc:
            model_bad.append((raw, exc.field))
    assert good == model_good
    assert [(raw, exc.field) for raw, exc in bad] == model_bad
