"""`dashboard serve --collect`: the server sits in the car and runs the car's monitor against itself."""
from __future__ import annotations

import os
import threading
from pathlib import Path

import requests

from dashboard.car.replay import BUNDLED_LOG
from dashboard.telemetry.gps import NmeaDecoder
from tests.car.nmea import shift_to_now
from tests.servers import ServerProcess, free_port
from tests.waiting import wait_for

LINES_PER_S = 40.0  # the recording's RMC+GGA pairs at ~17 Hz, replayed a little faster


def processes_mentioning(text: str) -> list[int]:
    """Pids whose command line contains ``text``."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if text in Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                found.append(int(pid))
        except OSError:
            continue
    return found


def test_serve_collect_runs_the_monitor_against_itself(tmp_path, make_pty):
    gps = make_pty()
    outbox = tmp_path / "car-outbox.sqlite"
    stop = threading.Event()

    def feed() -> None:
        recorded = BUNDLED_LOG.read_text().splitlines()[2000:]  # on track
        lines, _ = shift_to_now(recorded, NmeaDecoder().feed(recorded[0] + "\n")[0].time)  # today's receiver
        for line in lines:
            if stop.wait(1 / LINES_PER_S):
                return
            try:
                gps.write(line + "\r\n")
            except OSError:
                return

    feeder = threading.Thread(target=feed, daemon=True)
    display = f"http://127.0.0.1:{free_port()}"
    server = ServerProcess(tmp_path / "server", extra_args=(
        "--collect", "--car-id", "PIT-CAR", "--gps", gps.path, "--outbox", str(outbox), "--rate", "10",
        "--display", display.removeprefix("http://")))
    try:
        feeder.start()
        server.start()

        def collected() -> dict | None:
            page = requests.get(f"{server.url}/api/v1/sessions?car_id=PIT-CAR&status=active", timeout=5).json()
            session = page["items"][0] if page["items"] else None
            return session if session and session["stats"]["frames"] >= 20 else None

        session = wait_for(collected, 30, "frames from the collecting monitor")
        assert 28.40 < session["telemetry"]["lat"] < 28.42 and session["monitor_online"] is True
        # the monitor's driver display, passed on by --display
        state = wait_for(lambda: requests.get(f"{display}/api/state", timeout=5).json(), 15, "the driver display")
        assert state["links"]["main_up"] is True and state["messages"] == []
        assert "/static/display.js" in requests.get(display, timeout=5).text
        monitors = processes_mentioning(str(outbox))
        assert monitors, "the monitor runs as the server's child"
        for pid in monitors:  # its key came in its environment: a command line is readable by every user
            assert server.api_key.encode() not in Path(f"/proc/{pid}/cmdline").read_bytes()
            assert f"DASHBOARD_API_KEY={server.api_key}".encode() in Path(f"/proc/{pid}/environ").read_bytes()
        server.kill()  # even killed outright, the server takes its monitor with it (it would hold the ports)
        wait_for(lambda: not processes_mentioning(str(outbox)), 15, "the monitor to stop with the server")
    finally:
        stop.set()
        server.stop()
        for pid in processes_mentioning(str(outbox)):  # never leave a monitor reading a pty behind
            os.kill(pid, 9)
