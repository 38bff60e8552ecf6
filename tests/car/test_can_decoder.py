"""The CAN map and decoder on the real abs.dbc: frames made with cantools, decoded into converted channels."""
from __future__ import annotations

from pathlib import Path

import cantools
import pytest

from dashboard.car.can_decoder import CanDecoder, load_dbc, load_decoder
from dashboard.car.can_map import CanMapError, build_routes, channel_name_of, read_map
from dashboard.telemetry.channels import is_valid_name
from tests.servers import REPO

DBC = REPO / "tests" / "data" / "can" / "abs.dbc"
SAMPLE_MAP = REPO / "tests" / "data" / "can" / "abs-map.toml"
DB = cantools.database.load_file(str(DBC), strict=False)


def frame(name: str, **values: float) -> tuple[int, bool, bytes]:
    """A frame of a DBC message with these signal values (the others 0)."""
    message = DB.get_message_by_name(name)
    full = {s.name: 0 for s in message.signals} | values
    return message.frame_id, message.is_extended_frame, message.encode(full, strict=False)


def write_map(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "map.toml"
    path.write_text(text)
    return path


def test_the_sample_map_decodes_and_converts() -> None:
    decoder = load_decoder(DBC, SAMPLE_MAP)
    assert "speed" in decoder.channels and "brake_front" in decoder.channels
    values = decoder.decode(*frame("BREMSE_33", whlspeed_FL=10.0, whlspeed_FR=20.0, whlspeed_RL=5.0, whlspeed_RR=1.0))
    # m/s in the DBC: the registry's speed in km/h (converted), the custom channels scaled by the map
    assert values == pytest.approx({"speed": 36.0, "wheel_speed_fr": 72.0, "wheel_speed_rl": 18.0,
                                    "wheel_speed_rr": 3.6})
    brakes = decoder.decode(*frame("BREMSE_53", P_FA=42.0, P_RA=21.0, ABS_Active=1))
    assert brakes["brake_front"] == pytest.approx(42.0, abs=0.02) and brakes["abs_active"] == 1.0
    assert decoder.counters() == {"frames": 2, "decoded": 2, "decode_errors": 0, "unknown_ids": 0,
                                  "unmapped_signals": 17}  # BREMSE_53's other 17 signals, counted once


def test_what_is_skipped_is_counted_never_raised() -> None:
    decoder = load_decoder(DBC, SAMPLE_MAP)
    frame_id, extended, _data = frame("BREMSE_33", whlspeed_FL=1.0)
    for _ in range(3):
        assert decoder.decode(0x7FF, False, b"\x00" * 8) == {}  # an id the DBC lacks
        assert decoder.decode(frame_id, extended, b"\x01\x02") == {}  # too short
    assert decoder.decode(*frame("BREMSE_31", Idle_Time=5)) == {}  # a message with nothing mapped
    assert decoder.decode(*frame("BREMSE_31", Idle_Time=6)) == {}
    counters = decoder.counters()
    assert counters["unknown_ids"] == 1 and counters["decode_errors"] == 3 and counters["decoded"] == 0
    assert counters["unmapped_signals"] == 1  # Idle_Time, once however often it comes
    assert "Wrong data size" in decoder.last_error and "BREMSE_33" in decoder.last_error


def test_without_a_map_every_signal_is_a_channel_named_after_it() -> None:
    decoder = load_decoder(DBC)
    assert len(decoder.channels) == 89 and all(is_valid_name(c) for c in decoder.channels)
    values = decoder.decode(*frame("MM5_10_TX1", Yaw_Rate=12.5, AY1=0.5))
    assert values == pytest.approx({"yaw_rate": 12.5, "ay1": 0.5}, abs=0.01)
    assert channel_name_of("Brake_bal_pct") == "brake_bal_pct" and channel_name_of("2nd-Gear") == "can_2nd_gear"


def test_a_signal_named_as_a_registry_channel_gets_its_unit() -> None:
    text = DBC.read_text(encoding="latin-1").replace(" whlspeed_FL :", " speed :").replace(" 835 whlspeed_FL ",
                                                                                            " 835 speed ")
    dbc = Path(__file__).parent / "_never_written.dbc"
    db = cantools.database.load_string(text, database_format="dbc", strict=False)
    decoder = CanDecoder(db, build_routes(db, None, str(dbc)))
    message = db.get_message_by_name("BREMSE_33")
    data = message.encode({s.name: 10.0 for s in message.signals})
    assert decoder.decode(message.frame_id, False, data)["speed"] == pytest.approx(36.0)


@pytest.mark.parametrize(("text", "error"), [
    ('[signals.Nope]\nchannel = "speed"\n', "the DBC has no signal 'Nope'"),
    ('[signals.whlspeed_FL]\nchannel = "speed"\n[signals.whlspeed_FR]\nchannel = "speed"\n',
     "channel speed is already whlspeed_FL's"),
    ('[signals.P_FA]\nchannel = "speed"\n', "P_FA in 'bar' cannot become speed in 'km/h'"),
    ('[signals.P_FA]\nchannel = "Brake Front"\n', "is not a channel name"),
    ('[signals.P_FA]\nchanel = "brake"\n', "unknown key chanel"),
    ('[signals.P_FA]\nchannel = "brake"\nscale = "x"\n', "scale must be a number"),
    ('[signals.P_FA]\nchannel = "brake"\nunit = 3\n', "unit must be a string"),
    ('signals = 3\n', "no [signals.NAME] table"),
    ('[signals\n', "is not valid TOML"),
])
def test_map_mistakes_are_named(tmp_path: Path, text: str, error: str) -> None:
    with pytest.raises(CanMapError) as caught:
        load_decoder(DBC, write_map(tmp_path, text))
    assert error in str(caught.value)


def test_a_unit_in_the_map_and_scale_offset_win(tmp_path: Path) -> None:
    path = write_map(tmp_path, '[signals.P_FA]\nchannel = "coolant_temp"\nunit = "degF"\n'
                               '[signals.P_RA]\nchannel = "oil_temp"\nscale = 2.0\noffset = -1.0\n')
    decoder = load_decoder(DBC, path)
    values = decoder.decode(*frame("BREMSE_53", P_FA=212.0, P_RA=50.0))
    assert values["coolant_temp"] == pytest.approx(100.0, abs=0.01)  # °F said in the map, °C in the registry
    assert values["oil_temp"] == pytest.approx(99.0, abs=0.05)


def test_a_shared_signal_name_needs_its_message(tmp_path: Path) -> None:
    text = DBC.read_text(encoding="latin-1").replace("whlspeed_FL_Bremse2", "whlspeed_FL")
    dbc = tmp_path / "twice.dbc"
    dbc.write_text(text, encoding="latin-1")
    with pytest.raises(CanMapError, match=r'write it as \[signals."MESSAGE.whlspeed_FL"\]'):
        load_decoder(dbc, write_map(tmp_path, '[signals.whlspeed_FL]\nchannel = "speed"\n'))
    decoder = load_decoder(dbc, write_map(tmp_path, '[signals."BREMSE_2.whlspeed_FL"]\nchannel = "speed"\n'))
    message = DB.get_message_by_name("BREMSE_2")
    data = message.encode({s.name: 2.0 for s in message.signals})
    assert decoder.decode(message.frame_id, False, data) == pytest.approx({"speed": 7.2})


def test_bad_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(CanMapError, match="cannot read the DBC"):
        load_dbc(tmp_path / "missing.dbc")
    broken = tmp_path / "broken.dbc"
    broken.write_text('VERSION ""\nBO_ twelve X: 8 ECU\n')
    with pytest.raises(CanMapError, match="cannot be parsed"):
        load_dbc(broken)
    with pytest.raises(CanMapError, match="cannot read the CAN map"):
        read_map(tmp_path / "missing.toml")
    empty = tmp_path / "empty.dbc"
    empty.write_text('VERSION ""\n')
    with pytest.raises(CanMapError, match="describes no message"):
        load_decoder(empty)


def test_a_multiplexed_signal_comes_only_with_its_multiplexer_value(tmp_path: Path) -> None:
    decoder = load_decoder(DBC, write_map(tmp_path, '[signals.SW_version_High_upper]\nchannel = "sw_high"\n'
                                                    '[signals.HU_date_year]\nchannel = "hu_year"\n'))
    message = DB.get_message_by_name("BREMSE_52")
    version = message.encode({"Mplx_SW_Info": 1, "SW_version_High_upper": 3, "SW_version_High_lower": 4,
                              "SW_version_Mid_upper": 0, "SW_version_Mid_lower": 0, "SW_version_Low_upper": 0,
                              "SW_version_Low_lower": 0}, strict=False)
    assert decoder.decode(message.frame_id, False, version) == {"sw_high": 3.0}
    unknown_mux = bytes([0x0F]) + version[1:]  # a multiplexer value the DBC does not describe
    assert decoder.decode(message.frame_id, False, unknown_mux) == {}
    assert decoder.decode_errors == 1
