"""Memory depends on what is live, not on what was ever looked at (a real server process, its RSS from /proc)."""
from __future__ import annotations

import time
import uuid
from pathlib import Path

import requests
from sqlalchemy import Connection

from dashboard.server.live import KEEP_MAX
from dashboard.server.store import FrameWrite, Store
from tests.clients import Viewer, metric
from tests.servers import ServerProcess
from tests.waiting import wait_for

PAST_SESSIONS = 1000
WARM_UP = 200  # sessions opened before the measure starts
AGAIN = 300  # sessions opened a second time
FRAMES_EACH = 300  # 30 s at 10 Hz, 20 channels: each snapshot is a few hundred kB
CHANNELS = ("speed", "rpm", "throttle", "engine_load", "coolant_temp", "intake_temp", "fuel_level", "timing_advance",
            "maf", "lat", "lon", "gps_speed", "heading", "altitude", "gps_fix", "satellites", "hdop",
            "battery_voltage", "oil_temp", "gear")


def fill(instance: Path) -> list[str]:
    """A database holding PAST_SESSIONS ended sessions with their frames, written before the server starts."""
    store = Store.from_url(f"sqlite:///{instance / 'dashboard.db'}")
    ids, t0 = [], time.time() - 86_400
    with store.engine.begin() as conn:
        for n in range(PAST_SESSIONS):
            ids.append(_fill_one(store, conn, n, t0))
    store.close()
    return ids


def _fill_one(store: Store, conn: Connection, n: int, t0: float) -> str:
    sid = str(uuid.uuid4())
    start = t0 + n * 60
    store.insert_session({"id": sid, "car_id": f"CAR{n % 20}", "name": f"past {n}", "status": "ended",
                          "created_at": start, "started_at": start, "ended_at": start + 30,
                          "last_activity_at": start + 30, "end_reason": "ended", "frame_count": 0}, conn=conn)
    rows = [{"seq": i, "t": start + i / 10, "received_at": start + i / 10,
             "channels": {c: float(i + k) for k, c in enumerate(CHANNELS)}} for i in range(FRAMES_EACH)]
    store.write_frames([FrameWrite(sid, rows, FRAMES_EACH - 1, start + 30)], conn)
    return sid


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_opening_a_thousand_past_sessions_leaves_memory_where_it_was(tmp_path):
    instance = tmp_path / "server"
    instance.mkdir()
    ids = fill(instance)
    server = ServerProcess(instance).start()
    viewer = Viewer(server.url)
    http = requests.Session()  # kept alive, as a browser does
    try:
        def open_session(sid: str) -> None:  # as the browser does: the page's REST call, then join and leave
            assert http.get(f"{server.url}/api/v1/sessions/{sid}", timeout=10).json()["status"] == "ended"
            snapshot = viewer.join(sid)["snapshot"]
            assert len(snapshot["recent"]) == FRAMES_EACH
            viewer.client.call("leave", {"session_id": sid}, namespace="/dashboard", timeout=10)

        for sid in ids[-WARM_UP:]:  # warm up: imports, pools and the allocator's arenas reach their working size
            open_session(sid)
        before = rss_kb(server.proc.pid)
        for sid in ids:
            open_session(sid)
        after = rss_kb(server.proc.pid)
        assert after <= before * 1.10, f"RSS {before} kB -> {after} kB after opening {PAST_SESSIONS} past sessions"
        for sid in ids[:AGAIN]:  # and looking at them again costs nothing more: flat, not growing
            open_session(sid)
        again = rss_kb(server.proc.pid)
        assert again <= after * 1.02, f"RSS {after} kB -> {again} kB opening {AGAIN} of them again"
        wait_for(lambda: metric(server.url, "dashboard_sessions_in_memory") <= KEEP_MAX, 5,
                 "the least recently used sessions evicted from memory")
    finally:
        http.close()
        viewer.close()
        server.stop()
