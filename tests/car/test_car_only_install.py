"""`pip install '.[car]'` is enough for the car: the monitor runs for real with nothing else importable.

A sitecustomize (tests/car_only/) refuses, in the monitor's process, every module of the installed
distributions that the base dependencies and the [car] extra do not bring (Flask, SQLAlchemy, gevent,
meshtastic... and the test tools). The monitor then streams the emulator's OBD values and a pty GPS to a
real server, and what it imported is compared with the extra: each pinned car package is used, nothing
outside the extra's closure is.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from packaging.utils import canonicalize_name

from dashboard.server.tracks import ORLANDO_TRACK_ID
from tests.car.test_monitor_process_e2e import TIMEOUT_S, GpsFeed, MonitorProcess
from tests.clients import stored_frames
from tests.installs import closure, extra, modules_outside, owners_of
from tests.servers import REPO, free_port
from tests.waiting import wait_for

CAR_ONLY = REPO / "tests" / "car_only"
SERVER_AND_RADIO = ("flask", "flask_socketio", "sqlalchemy", "alembic", "psycopg", "redis", "meshtastic", "gevent",
                    "prometheus_client", "flask_limiter", "orjson", "werkzeug", "pubsub")


def car_requirements() -> list:
    """What `pip install '.[car]'` asks for: the base dependencies and the car's extra."""
    return extra("") + extra("car")


@pytest.fixture(scope="module")
def blocked() -> set[str]:
    """Top-level modules a car-only install would not have."""
    return modules_outside(closure(car_requirements()))


def car_env(blocked: set[str], report: Path) -> dict[str, str]:
    """The environment of a process that can import only what the car installs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DASHBOARD_")}
    env.update({"CAR_ONLY_BLOCK": ",".join(sorted(blocked)), "CAR_ONLY_REPORT": str(report),
                "PYTHONPATH": os.pathsep.join([str(CAR_ONLY), str(REPO), os.environ.get("PYTHONPATH", "")])})
    return env


def test_the_split_is_real(blocked: set[str]) -> None:
    assert set(SERVER_AND_RADIO) <= blocked  # none of these comes with [car]
    assert {"socketio", "obd", "serial", "pynmea2", "pydantic_settings"}.isdisjoint(blocked)


def test_help_and_a_server_command_on_a_car(blocked: set[str], tmp_path: Path) -> None:
    report = tmp_path / "imports.json"

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "dashboard", *args], cwd=tmp_path, capture_output=True,
                              text=True, timeout=60, env=car_env(blocked, report))

    overview = run("--help")
    assert overview.returncode == 0, overview.stderr
    for command in ("serve", "monitor", "simulate", "mesh-gateway", "demo", "export", "import", "keys", "db",
                    "schemas"):
        assert f"    {command}" in overview.stdout
    assert not set(json.loads(report.read_text())["imported"]) & set(SERVER_AND_RADIO)
    monitor = run("monitor", "--help")
    assert monitor.returncode == 0 and "--api-key-file" in monitor.stdout, monitor.stderr
    serve = run("serve")
    assert serve.returncode == 2
    assert "pip install 'race-dashboard[server,car]'" in serve.stderr and "Traceback" not in serve.stderr
    radio = run("monitor", "--gps", "/dev/null", "--mesh", "/dev/ttyACM0", "--outbox", str(tmp_path / "o.sqlite"))
    assert radio.returncode == 2 and "race-dashboard[mesh]" in radio.stderr, radio.stderr
    bus = run("monitor", "--can", "socketcan:can0", "--dbc", "ecu.dbc", "--outbox", str(tmp_path / "o.sqlite"))
    assert bus.returncode == 2 and "race-dashboard[can]" in bus.stderr and "Traceback" not in bus.stderr, bus.stderr


def test_the_monitor_streams_with_only_the_cars_packages(live_server, elm_emulator, blocked: set[str],
                                                         tmp_path: Path) -> None:
    report = tmp_path / "imports.json"
    gps = GpsFeed(tmp_path / "gps")
    monitor = MonitorProcess(live_server, "car-only", elm_emulator.get_pty(), gps.link, tmp_path / "outbox.sqlite",
                             tmp_path / "monitor.log")
    monitor.env.update({k: v for k, v in car_env(blocked, report).items() if not k.startswith("DASHBOARD_")})
    key = tmp_path / "car.key"  # the key from a 0600 file, as systemd's LoadCredential= hands it over
    key.write_text(live_server.api_key + "\n")
    key.chmod(0o600)
    del monitor.env["DASHBOARD_API_KEY"]
    display = f"http://127.0.0.1:{free_port()}"  # the driver display too: served with the standard library
    monitor.args += ["--api-key-file", str(key), "--display", display.removeprefix("http://"),
                     "--track-id", ORLANDO_TRACK_ID]
    monitor.start()
    try:
        def streaming() -> bool:
            monitor.check_alive()
            sessions = requests.get(f"{live_server.url}/api/v1/sessions", params={"car_id": "car-only"},
                                    timeout=5).json()["items"]
            if not sessions:
                return False
            frames = stored_frames(live_server.url, sessions[0]["session_id"])
            # every GPS fix is a frame of its own: the emulator's rpm and the positions come in different frames
            return (any(f["channels"].get("rpm") is not None for f in frames)
                    and any(f["channels"].get("lat") is not None for f in frames))

        wait_for(streaming, TIMEOUT_S, "the car-only monitor's rpm and position on the server")
        timed = wait_for(lambda: requests.get(f"{display}/api/state", timeout=5).json()["timing"]["track"],
                         TIMEOUT_S, "the display's track, fetched by the car")
        assert timed == "Orlando Kart Center" and "display.js" in requests.get(display, timeout=5).text
        assert monitor.stop() == 0, monitor.log_text()[-3000:]
    finally:
        if monitor.proc is not None:
            monitor.proc.kill()
        gps.close()
    seen = json.loads(report.read_text())
    used = owners_of(seen["imported"])
    wanted = {canonicalize_name(r.name) for r in car_requirements()}
    assert wanted <= used, f"in the [car] extra but never imported: {wanted - used}"
    assert used <= closure(car_requirements()), f"imported from outside the extra: {used - closure(car_requirements())}"
    assert not set(seen["imported"]) & set(SERVER_AND_RADIO)
    assert "Traceback" not in monitor.log_text(), monitor.log_text()[-3000:]
    assert live_server.api_key not in monitor.log_text()
