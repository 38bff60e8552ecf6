"""`dashboard simulate --speedup 10`, a real process, against a real server timing the Orlando track.

Replay keeps the recording's own time base (shifted to now), so the laps the server times at 10x
are the laps a LapTimer times on the recording itself, and no step between fixes looks like a
GPS jump.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import requests

from dashboard.car.replay import BUNDLED_LOG
from dashboard.server.tracks import ORLANDO_TRACK_ID
from dashboard.telemetry.gps import read_log
from dashboard.telemetry.laps import LAP_COMPLETED, ORLANDO_KART_CENTER, LapTimer
from tests.clients import stored_frames
from tests.servers import REPO

SPEEDUP = "10"
RUN_TIMEOUT_S = 180.0  # 314 s of recording at 10x is ~31 s; the rest is start-up and the drain on 2 busy cores
LAP_TOLERANCE_S = 0.002  # "within a few ms": replayed times are the recorded ones shifted by whole ms


def recording_laps() -> tuple[list[float], int]:
    """Timed laps (out-lap excluded) of a LapTimer fed the recording's fixes, and the laps it completed."""
    timer = LapTimer(ORLANDO_KART_CENTER)
    completed = []
    for seq, reading in enumerate(read_log(BUNDLED_LOG)):
        if reading.has_fix and reading.time is not None:
            completed += [e.payload for e in timer.feed({"seq": seq, "t": reading.time, "channels": reading.values})
                          if e.type == LAP_COMPLETED]
    return [lap["lap_time"] for lap in completed if not lap["out_lap"]], len(completed)


def test_simulate_at_10x_times_the_recorded_laps(live_server, tmp_path: Path) -> None:
    reference, _ = recording_laps()
    assert len(reference) == 4  # the bundled recording: out-lap, four whole laps, then the in-lap
    car = f"SIM10-{uuid.uuid4().hex[:6]}"
    created = requests.post(f"{live_server.url}/api/v1/sessions", json={"car_id": car, "track_id": ORLANDO_TRACK_ID},
                            headers=live_server.headers, timeout=10).json()
    sid = created["session_id"]
    requests.post(f"{live_server.url}/api/v1/sessions/{sid}/start", headers=live_server.headers,
                  timeout=10).raise_for_status()
    env = {k: v for k, v in os.environ.items() if not k.startswith("DASHBOARD_")}
    env.update({"PYTHONUNBUFFERED": "1", "DASHBOARD_API_KEY": live_server.api_key,
                "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")})
    started = time.time()
    run = subprocess.run(
        [sys.executable, "-m", "dashboard", "simulate", "--server", live_server.url, "--car-id", car,
         "--speedup", SPEEDUP, "--once", "--outbox", str(tmp_path / "outbox.sqlite")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-3000:]
    assert f"session {sid}" in run.stdout  # it drove the session the pit made, with its track

    frames = stored_frames(live_server.url, sid)
    assert max(f["t"] for f in frames) <= time.time() + 1.0  # a single pass never runs ahead of the wall clock
    assert min(f["t"] for f in frames) >= started - 314.0 - 5.0  # ... and ends about now
    fixes = [f for f in frames if f["channels"].get("lat") is not None]
    timer = LapTimer(ORLANDO_KART_CENTER)
    for frame in fixes:
        timer.feed(frame)
    assert timer.counters.jumps == 0 and timer.counters.relocations == 0  # no step looks like a GPS jump
    assert timer.counters.fixes == len(fixes)  # every fix frame later than the one before

    items = requests.get(f"{live_server.url}/api/v1/sessions/{sid}/laps", timeout=10).json()["items"]
    live = [lap["lap_time"] for lap in items if not (lap["out_lap"] or lap["in_lap"])]
    assert len(live) == len(reference), (live, reference)
    assert all(abs(a - b) <= LAP_TOLERANCE_S for a, b in zip(live, reference, strict=True)), (live, reference)
