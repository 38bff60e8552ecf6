"""After a restart, a long session's lap timer is rebuilt from its stored frames off the hot path:
other cars' acks go on meanwhile, and the session's own frames wait for the timer, not for nothing."""
from __future__ import annotations

import time
import uuid

import requests
from sqlalchemy import Connection

from dashboard.server.store import FrameWrite, Store
from dashboard.server.tracks import ORLANDO_TRACK_ID
from tests.clients import CALL_TIMEOUT_S, connect_monitor, make_frames, metric, metrics
from tests.server.test_laps import recorded_frames
from tests.servers import ServerProcess
from tests.waiting import wait_for

LAPS_PER_COPY = 4  # the bundled recording: an out-lap, 4 timed laps
COPIES = 50  # ~190,000 stored frames: seconds of lap timer work to replay


def fill(store: Store, conn: Connection, session_id: str) -> tuple[int, float]:
    """The recording driven COPIES times in a row (each copy later by its length, the last one ending now, as
    the recording does: live frames a day old or minutes ahead are refused): last seq and time."""
    base = recorded_frames()
    span = base[-1]["t"] - base[0]["t"] + 1.0
    seq = -1
    for copy in range(COPIES):
        shift = (copy - COPIES + 1) * span
        rows = [{"seq": seq + 1 + i, "t": f["t"] + shift, "received_at": f["t"] + shift,
                 "channels": f["channels"]} for i, f in enumerate(base)]
        seq = rows[-1]["seq"]
        store.write_frames([FrameWrite(session_id, rows, seq, rows[-1]["t"])], conn)
    return seq, rows[-1]["t"]


def test_the_lap_timer_is_rebuilt_off_the_hot_path_after_a_restart(tmp_path):
    server = ServerProcess(tmp_path / "server").start()  # creates the database and the built-in track
    server.stop()
    store = Store.from_url(f"sqlite:///{tmp_path / 'server' / 'dashboard.db'}")
    sid, car = str(uuid.uuid4()), f"KART-{uuid.uuid4().hex[:6]}"
    now = time.time()
    with store.engine.begin() as conn:
        store.insert_session({"id": sid, "car_id": car, "name": "long day", "status": "active", "created_at": now,
                              "started_at": now, "last_activity_at": now, "frame_count": 0,
                              "track_id": ORLANDO_TRACK_ID}, conn=conn)
        last_seq, last_t = fill(store, conn, sid)
    store.close()
    server.start()
    kart = connect_monitor(server.url, car, server.api_key)
    other = connect_monitor(server.url, f"CAR-{uuid.uuid4().hex[:6]}", server.api_key)
    try:
        assert kart.call("session.start", {"session_id": sid}, namespace="/monitor",
                         timeout=CALL_TIMEOUT_S)["session"]["status"] == "active"
        other_sid = other.call("session.start", {}, namespace="/monitor", timeout=CALL_TIMEOUT_S)["session"][
            "session_id"]
        # after the restart the kart's lap timer is rebuilt from ~190,000 stored frames, in the background
        wait_for(lambda: metric(server.url, "dashboard_lap_replays_running") == 1, 10, "the replay under way")
        ack = kart.call("telemetry", {"session_id": sid, "frames": [
            {"seq": last_seq + 1, "t": last_t + 0.1, "channels": {"lat": 28.41, "lon": -81.38}}]},
            namespace="/monitor", timeout=CALL_TIMEOUT_S)
        assert ack["ok"] and ack["acked_seq"] == last_seq + 1  # acked at once, not after the replay
        assert metric(server.url, "dashboard_lap_replays_total") == 0
        acks_during_replay, seq = 0, 0
        while True:
            done, running = metrics(server.url, "dashboard_lap_replays_total", "dashboard_lap_replays_running")
            if done:
                break
            assert running == 1
            ack = other.call("telemetry", {"session_id": other_sid, "frames": make_frames(seq, 10)},
                             namespace="/monitor", timeout=CALL_TIMEOUT_S)
            assert ack["ok"] and ack["acked_seq"] == seq + 9
            acks_during_replay += 1
            seq += 10
        assert acks_during_replay >= 5, "the other car's acks waited for the replay"
    finally:
        kart.disconnect()
        other.disconnect()
    laps = wait_for(lambda: requests.get(f"{server.url}/api/v1/sessions/{sid}/laps", timeout=10).json(), 10,
                    "laps")
    timed = [lap for lap in laps["items"] if not (lap["out_lap"] or lap["in_lap"])]
    assert len(timed) >= COPIES * LAPS_PER_COPY  # every copy's laps (and the laps across the joins between copies)
    assert abs(laps["best_lap"]["lap_time"] - 56.172) < 0.05
    server.stop()
