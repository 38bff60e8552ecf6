"""`dashboard monitor` / `dashboard simulate` options and the settings layers (CLI > env > TOML > default)."""
from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from dashboard.car.cli import add_commands, cmd_monitor
from dashboard.car.settings import load_settings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dashboard")
    add_commands(parser.add_subparsers(dest="command", required=True))
    return parser


def test_monitor_options_map_to_settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "car.toml"
    config.write_text('[monitor]\ncar_id = "kart-7"\nrate_hz = 5\ngps_port = "/dev/ttyGPS"\nobd_protocol = "6"\n')
    monkeypatch.setenv("DASHBOARD_RATE_HZ", "8")
    args = _parser().parse_args(["monitor", "--server", "http://pit:5000", "--obd", "socket://10.0.0.5:35000",
                                 "--config", str(config), "--outbox", str(tmp_path / "o.sqlite")])
    assert args.func is cmd_monitor
    settings = load_settings(args.config, server_url=args.server_url, obd_port=args.obd_port,
                             outbox_path=args.outbox_path, rate_hz=args.rate_hz)
    assert settings.server_url == "http://pit:5000" and settings.obd_port == "socket://10.0.0.5:35000"
    assert settings.car_id == "kart-7" and settings.gps_port == "/dev/ttyGPS" and settings.obd_protocol == "6"
    assert settings.rate_hz == 8  # environment beats the file
    assert load_settings(config, rate_hz=20).rate_hz == 20  # the command line beats both


def test_monitor_track_by_name_or_id_from_the_command_line_or_the_file(tmp_path: Path) -> None:
    config = tmp_path / "car.toml"
    config.write_text('[monitor]\ntrack = "Orlando Kart Center"\ntrack_id = "0b5f1a9e-5d0f-5a8c-9d65-6a4b1e2f3c4d"\n')
    assert load_settings(config).track == "Orlando Kart Center"
    assert load_settings(config).track_id == "0b5f1a9e-5d0f-5a8c-9d65-6a4b1e2f3c4d"
    args = _parser().parse_args(["monitor", "--track", "Lydden Hill", "--track-id", "abc"])
    assert (args.track, args.track_id) == ("Lydden Hill", "abc")
    settings = load_settings(config, track=args.track, track_id=args.track_id)
    assert (settings.track, settings.track_id) == ("Lydden Hill", "abc")  # the command line beats the file


def test_monitor_without_sources_refuses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DASHBOARD_OBD_PORT", raising=False)
    monkeypatch.delenv("DASHBOARD_GPS_PORT", raising=False)
    args = _parser().parse_args(["monitor", "--server", "http://x", "--outbox", str(tmp_path / "o.sqlite")])
    assert args.func(args) == 2


def test_simulate_options() -> None:
    args = _parser().parse_args(["simulate", "--server", "http://x", "--speedup", "4", "--log", "a.nmea"])
    assert (args.server_url, args.car_id, args.speedup, args.log_path, args.once) == ("http://x", "sim-1", 4.0,
                                                                                   "a.nmea", False)
