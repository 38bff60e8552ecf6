"""An imported RaceCapture log times like the same recording streamed live, to the millisecond.

The excerpt of the OKC recording that ``tests/data/imports/okc.log`` was written from (lines 1700-4700: two whole
laps; tests/data/make_import_samples.py) is streamed live as in ``test_fix_frames_e2e``: a real monitor process
reads it from a pty (restamped to now by whole seconds, written 5x faster than recorded) and sends it to a real
server, which times the laps as they come. Then the RaceCapture file is uploaded to the same server. Lap for lap,
the two agree within half a millisecond.
"""
from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import requests

from dashboard.server.tracks import ORLANDO_TRACK_ID
from tests.car.nmea import shift_to_now
from tests.car.test_fix_frames_e2e import FIRST_LINE, LAST_LINE, RECORDING, SPEEDUP, Feed, fixes_of
from tests.servers import REPO
from tests.waiting import wait_for

SAMPLE = REPO / "tests" / "data" / "imports" / "okc.log"
TIMEOUT_S = 90.0
HALF_MS = 0.0005


def timed(laps: list[dict]) -> list[float]:
    return [lap["lap_time"] for lap in laps if not (lap["out_lap"] or lap["in_lap"])]


def test_an_imported_racecapture_log_times_like_the_recording_streamed_live(live_server, make_pty,
                                                                             tmp_path: Path) -> None:
    recorded = RECORDING.read_text().splitlines(keepends=True)[FIRST_LINE:LAST_LINE]
    fixes = fixes_of(recorded)
    span = fixes[-1]["t"] - fixes[0]["t"]
    lines, _shift = shift_to_now(recorded, fixes[0]["t"], lead_s=-span + span / SPEEDUP - 5.0)

    car = f"IMP-{uuid.uuid4().hex[:6]}"
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
             "--gps", gps.path, "--outbox", str(tmp_path / "outbox.sqlite"), "--rate", "5"],
            cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    feed = Feed(gps, lines, span)
    try:
        def attached() -> bool:
            assert monitor.poll() is None, log_path.read_text()[-3000:]
            return bool(requests.get(f"{live_server.url}/api/v1/sessions/{sid}", timeout=5).json()["monitor_online"])

        wait_for(attached, TIMEOUT_S, "the monitor attached to the session")
        feed.start()
        feed.join(TIMEOUT_S)
        assert not feed.is_alive()

        def live_laps() -> list[float]:
            assert monitor.poll() is None, log_path.read_text()[-3000:]
            items = requests.get(f"{live_server.url}/api/v1/sessions/{sid}/laps", timeout=5).json()["items"]
            return timed(items) if len(timed(items)) >= 2 else []

        live = wait_for(live_laps, TIMEOUT_S, "two laps timed live")
    finally:
        feed.stop.set()
        monitor.terminate()
        try:
            monitor.wait(20)
        except subprocess.TimeoutExpired:
            monitor.kill()
            monitor.wait(10)

    answer = requests.post(f"{live_server.url}/api/v1/imports", params={"format": "racecapture", "car_id": car,
                                                                     "track": ORLANDO_TRACK_ID},
                           data=SAMPLE.read_bytes(), headers=headers, timeout=TIMEOUT_S)
    assert answer.status_code == 201, answer.text
    imported_id = answer.json()["session"]["session_id"]
    assert answer.json()["session"]["track_id"] == ORLANDO_TRACK_ID  # the live session's (the shared server may
    # hold other tracks on the same line: found tracks are tests/server/test_importing.py's)
    imported = timed(requests.get(f"{live_server.url}/api/v1/sessions/{imported_id}/laps", timeout=10).json()["items"])

    assert len(live) == len(imported) == 2
    assert all(abs(a - b) < HALF_MS for a, b in zip(live, imported, strict=True)), (live, imported)
