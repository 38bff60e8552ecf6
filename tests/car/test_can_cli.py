"""`dashboard monitor --can`: options and TOML settings, and every mistake a clear error with exit 2 before starting."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import pytest

from dashboard.car.cli import add_commands
from dashboard.car.settings import load_settings
from tests.car.test_can_decoder import DBC, SAMPLE_MAP


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dashboard")
    add_commands(parser.add_subparsers(dest="command", required=True))
    return parser


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OBD_PORT", "GPS_PORT", "CAN_BUS", "CAN_DBC", "CAN_MAP", "CAN_BITRATE"):
        monkeypatch.delenv(f"DASHBOARD_{name}", raising=False)


def test_can_options_and_the_toml_file(tmp_path: Path) -> None:
    config = tmp_path / "car.toml"
    config.write_text(f'[monitor]\ncan_bus = "socketcan:can0"\ncan_dbc = "{DBC}"\ncan_map = "{SAMPLE_MAP}"\n'
                      'can_bitrate = 500000\n')
    settings = load_settings(config)
    assert (settings.can_bus, settings.can_dbc, settings.can_map, settings.can_bitrate) == (
        "socketcan:can0", DBC, SAMPLE_MAP, 500000)
    args = _parser().parse_args(["monitor", "--can", "slcan:/dev/ttyACM0", "--dbc", "ecu.dbc", "--can-map", "m.toml",
                                 "--can-bitrate", "1000000"])
    assert (args.can_bus, args.can_dbc, args.can_map, args.can_bitrate) == (
        "slcan:/dev/ttyACM0", "ecu.dbc", "m.toml", 1000000)
    settings = load_settings(config, can_bus=args.can_bus, can_bitrate=args.can_bitrate)
    assert settings.can_bus == "slcan:/dev/ttyACM0" and settings.can_bitrate == 1000000  # the command line wins


@pytest.mark.parametrize(("extra", "error"), [
    ([], "--can needs the bus's DBC file: --dbc FILE.dbc"),
    (["--dbc", str(DBC), "--can-map", "missing.toml"], "cannot read the CAN map missing.toml"),
    (["--dbc", "missing.dbc"], "cannot read the DBC missing.dbc"),
])
def test_can_mistakes_refuse_to_start(tmp_path: Path, caplog: pytest.LogCaptureFixture, extra: list[str],
                                      error: str) -> None:
    args = _parser().parse_args(["monitor", "--can", "socketcan:can0", "--outbox", str(tmp_path / "o.sqlite"),
                                 *extra])
    with caplog.at_level(logging.ERROR):
        assert args.func(args) == 2
    assert error in caplog.text
    assert not (tmp_path / "o.sqlite").exists()  # nothing started


@pytest.mark.parametrize(("bus", "error"), [
    ("can0", "expected INTERFACE:CHANNEL"),
    ("sockcan:can0", "'sockcan' is not one python-can knows"),
])
def test_bad_bus_names_refuse_to_start(tmp_path: Path, caplog: pytest.LogCaptureFixture, bus: str,
                                       error: str) -> None:
    args = _parser().parse_args(["monitor", "--can", bus, "--dbc", str(DBC), "--outbox", str(tmp_path / "o.sqlite")])
    with caplog.at_level(logging.ERROR):
        assert args.func(args) == 2
    assert error in caplog.text


def test_a_map_mistake_names_the_entry(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    bad = tmp_path / "map.toml"
    bad.write_text('[signals.whlspeed_FL]\nchannel = "speed"\n[signals.P_FA]\nchannel = "rpm"\n')
    args = _parser().parse_args(["monitor", "--can", "socketcan:can0", "--dbc", str(DBC), "--can-map", str(bad),
                                 "--outbox", str(tmp_path / "o.sqlite")])
    with caplog.at_level(logging.ERROR):
        assert args.func(args) == 2
    assert f"CAN map {bad}, [signals.P_FA]: P_FA in 'bar' cannot become rpm in 'rpm'" in caplog.text
