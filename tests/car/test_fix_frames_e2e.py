"""Every GPS fix counts: a real monitor process fed a 25 Hz recording through a pty at ``--rate 5``.

The server times the laps live from what the monitor sends; a LapTimer fed the recording's own
fixes times them directly. They must agree to the millisecond, lap for lap, and a monitor stopped
(SIGSTOP) for 2 s in the middle of a lap must lose no fix: every fix's GPS time is stored.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

import requests

from dashboard.server.tracks import ORLANDO_TRACK_ID
from dashboard.telemetry.gps import NmeaDecoder
from dashboard.telemetry.laps import LAP_COMPLETED, ORLANDO_KART_CENTER, LapTimer
from tests.car.nmea import shift_to_now
from tests.clients import stored_frames
from tests.servers import REPO
from tests.waiting import wait_for

RECORDING = REPO / "tests" / "data" / "okc-tillotson-plain.nmea"  # 25 Hz, RMC and GGA per fix
FIRST_LINE, LAST_LINE = 1700, 4700  # from the pits' exit over two whole laps (lines 1936, 3273, 4563 cross)
SPEEDUP = 5.0  # the recording is written 5x faster than it was recorded: 125 fixes a second
LINES_PER_WRITE = 12  # written together, as a receiver's burst
RATE_HZ = "5"  # tick frames: 5 a second, far fewer than the fixes
STALL_S = 2.0
TIMEOUT_S = 60.0


def fixes_of(lines: list[str]) -> list[dict[str, Any]]:
    """The fixes in these lines as the recording has them: one per GPS time, position of its first sentence."""
    fixes: dict[float, dict[str, Any]] = {}
    for reading in NmeaDecoder().feed("".join(lines)):
        if reading.has_fix and reading.time is not None and reading.time not in fixes:
            fixes[reading.time] = {"seq": len(fixes), "t": reading.time, "channels": dict(reading.values)}
    return list(fixes.values())


def timed_directly(fixes: list[dict[str, Any]]) -> list[float]:
    """Lap times of a LapTimer fed the fixes themselves (completed laps, out-lap excluded)."""
    timer = LapTimer(ORLANDO_KART_CENTER)
    return [e.payload["lap_time"] for f in fixes for e in timer.feed(f)
            if e.type == LAP_COMPLETED and not e.payload["out_lap"]]


class Feed(threading.Thread):
    """Writes the lines into the pty (blocking: while the monitor is stopped, the writer waits, as a UART would)."""

    def __init__(self, pty: Any, lines: list[str], span_s: float) -> None:
        super().__init__(name="nmea-feed", daemon=True)
        self.pty, self.lines = pty, lines
        self.period = LINES_PER_WRITE * span_s / len(lines) / SPEEDUP  # the recording's pace, SPEEDUP times
        self.written = 0
        self.stop = threading.Event()

    def run(self) -> None:
        for i in range(0, len(self.lines), LINES_PER_WRITE):
            if self.stop.wait(self.period):
                return
            self.pty.write("".join(self.lines[i:i + LINES_PER_WRITE]))
            self.written = i + LINES_PER_WRITE


def test_live_laps_equal_the_recordings_and_a_stall_loses_no_fix(live_server, make_pty, tmp_path: Path) -> None:
    recorded = RECORDING.read_text().splitlines(keepends=True)[FIRST_LINE:LAST_LINE]
    first = fixes_of(recorded)[0]["t"]
    span = fixes_of(recorded)[-1]["t"] - first
    # written 5x faster than recorded: stamped so the last fix lands about now (never ahead of the server's clock)
    lines, _shift = shift_to_now(recorded, first, lead_s=-span + span / SPEEDUP - 5.0)
    expected = fixes_of(lines)
    reference = timed_directly(expected)
    assert len(reference) == 2  # two whole laps in the excerpt

    car = f"FIX-{uuid.uuid4().hex[:6]}"
    headers = live_server.headers
    created = requests.post(f"{live_server.url}/api/v1/sessions", json={"car_id": car, "track_id": ORLANDO_TRACK_ID},
                            headers=headers, timeout=10).json()
    sid = created["session_id"]
    requests.post(f"{live_server.url}/api/v1/sessions/{sid}/start", headers=headers, timeout=10).raise_for_status()

    gps = make_pty()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DASHBOARD_")}
    env.update({"PYTHONUNBUFFERED": "1", "DASHBOARD_API_KEY": live_server.api_key, "DASHBOARD_HEARTBEAT_S": "0.5",
                "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")})
    log_path = tmp_path / "monitor.log"
    with open(log_path, "ab") as log:
        monitor = subprocess.Popen(
            [sys.executable, "-m", "dashboard", "monitor", "--server", live_server.url, "--car-id", car,
             "--gps", gps.path, "--outbox", str(tmp_path / "outbox.sqlite"), "--rate", RATE_HZ],
            cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    feed = Feed(gps, lines, span)
    try:
        def attached() -> bool:
            assert monitor.poll() is None, log_path.read_text()[-3000:]
            body = requests.get(f"{live_server.url}/api/v1/sessions/{sid}", timeout=5).json()
            return bool(body["monitor_online"])

        wait_for(attached, TIMEOUT_S, "the monitor attached to the session")
        feed.start()
        wait_for(lambda: feed.written >= len(lines) // 2, TIMEOUT_S, "half the recording written")
        monitor.send_signal(signal.SIGSTOP)  # mid-lap: nothing is read, framed or sent for 2 s
        stopped = threading.Event()
        stopped.wait(STALL_S)
        monitor.send_signal(signal.SIGCONT)
        feed.join(TIMEOUT_S)
        assert not feed.is_alive()

        def every_fix_stored() -> list[dict[str, Any]]:
            assert monitor.poll() is None, log_path.read_text()[-3000:]
            placed = [f for f in stored_frames(live_server.url, sid) if f["channels"].get("lat") is not None]
            return placed if len(placed) >= len(expected) else []

        placed = wait_for(every_fix_stored, TIMEOUT_S, f"{len(expected)} fix frames stored")
        frames = stored_frames(live_server.url, sid)
    finally:
        feed.stop.set()
        monitor.terminate()
        try:
            monitor.wait(20)
        except subprocess.TimeoutExpired:
            monitor.kill()
            monitor.wait(10)

    assert [f["t"] for f in placed] == [round(f["t"], 3) for f in expected]  # each fix once, at its GPS time, in order
    assert [(f["channels"]["lat"], f["channels"]["lon"]) for f in placed] == [
        (f["channels"]["lat"], f["channels"]["lon"]) for f in expected]
    ticks = [f for f in frames if f["channels"].get("lat") is None]
    assert ticks and len(ticks) < len(placed) / 5  # 5 tick frames a second against 25 fixes
    assert all("gps_fix" in f["channels"] for f in ticks)  # the receiver's status travels in the tick frames

    def live_laps() -> list[float]:
        items = requests.get(f"{live_server.url}/api/v1/sessions/{sid}/laps", timeout=5).json()["items"]
        timed = [lap["lap_time"] for lap in items if not (lap["out_lap"] or lap["in_lap"])]
        return timed if len(timed) >= len(reference) else []

    laps = wait_for(live_laps, TIMEOUT_S, "the laps timed live")
    assert len(laps) == len(reference)
    assert all(abs(live - direct) < 0.0005 for live, direct in zip(laps, reference, strict=True)), (laps, reference)
