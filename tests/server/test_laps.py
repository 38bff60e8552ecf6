"""Laps end to end: a recorded session streamed to a real server, timed live, and timed again on a track change."""
from __future__ import annotations

import time
import uuid
from pathlib import Path

import requests

from dashboard.server.tracks import ORLANDO_TRACK_ID
from dashboard.telemetry.gps import read_log
from tests.clients import CALL_TIMEOUT_S, Viewer, connect_monitor
from tests.waiting import wait_for

RECORDING = Path(__file__).resolve().parents[2] / "dashboard" / "data" / "okc-2023-4laps.nmea"
# The 4 laps of this recording, from the careful reference timing in tests/telemetry/test_laps.py.
REFERENCE_LAPS = [58.857, 56.791, 56.797, 56.172]
BATCH = 250


def recorded_frames() -> list[dict]:
    """The recording's RMC fixes as frames, shifted by whole seconds to end now (live frames a day old are refused)."""
    readings = [r for r in read_log(RECORDING) if r.sentence == "RMC"]
    shift = round(time.time() - readings[-1].time)
    return [{"seq": seq, "t": r.time + shift, "channels": {k: v for k, v in r.values.items() if v is not None}}
            for seq, r in enumerate(readings)]


def stream(server, car: str, frames: list[dict], track_id: str | None) -> str:
    created = requests.post(f"{server.url}/api/v1/sessions", json={"car_id": car, "track_id": track_id},
                            headers=server.headers, timeout=5).json()
    sid = created["session_id"]
    monitor = connect_monitor(server.url, car, server.api_key)
    try:
        assert monitor.call("session.start", {"session_id": sid}, namespace="/monitor",
                            timeout=CALL_TIMEOUT_S)["ok"]
        for i in range(0, len(frames), BATCH):
            ack = monitor.call("telemetry", {"session_id": sid, "frames": frames[i:i + BATCH]}, namespace="/monitor",
                               timeout=CALL_TIMEOUT_S)
            assert ack["ok"] and not ack["rejected"], ack
    finally:
        monitor.disconnect()
    return sid


def timed(laps: dict) -> list[float]:
    return [lap["lap_time"] for lap in laps["items"] if not (lap["out_lap"] or lap["in_lap"])]


def test_builtin_track_is_served(live_server):
    track = requests.get(f"{live_server.url}/api/v1/tracks/{ORLANDO_TRACK_ID}", timeout=5).json()
    assert track["name"] == "Orlando Kart Center" and track["a"] == [28.41270817, -81.37973266]


def test_laps_are_timed_live_and_viewers_see_them(live_server):
    frames = recorded_frames()
    viewer = Viewer(live_server.url)
    car = f"KART-{uuid.uuid4().hex[:6]}"
    try:
        created = requests.post(f"{live_server.url}/api/v1/sessions",
                                json={"car_id": car, "track_id": ORLANDO_TRACK_ID},
                                headers=live_server.headers, timeout=5).json()
        viewer.join(created["session_id"])
        sid = created["session_id"]
        requests.post(f"{live_server.url}/api/v1/sessions/{sid}/setup", json={"setup": {"rear_sprocket": 84},
                      "timestamp": frames[0]["t"]}, headers=live_server.headers, timeout=5).raise_for_status()
        monitor = connect_monitor(live_server.url, car, live_server.api_key)
        try:
            monitor.call("session.start", {"session_id": sid}, namespace="/monitor", timeout=CALL_TIMEOUT_S)
            for i in range(0, len(frames), BATCH):
                monitor.call("telemetry", {"session_id": sid, "frames": frames[i:i + BATCH]}, namespace="/monitor",
                             timeout=CALL_TIMEOUT_S)
        finally:
            monitor.disconnect()
        def every_lap() -> list:
            timed_laps = [e for e in viewer.of("lap") if not e["out_lap"]]
            return timed_laps if len(timed_laps) >= len(REFERENCE_LAPS) else []

        live_laps = wait_for(every_lap, 15, "every lap at the viewer")
        assert [round(lap["lap_time"], 1) for lap in live_laps] == [round(t, 1) for t in REFERENCE_LAPS]
        assert viewer.of("timing") and viewer.of("timing")[-1]["best_lap_time"] == min(lap["lap_time"]
                                                                                        for lap in live_laps)
    finally:
        viewer.close()
    laps = requests.get(f"{live_server.url}/api/v1/sessions/{sid}/laps", timeout=5).json()
    assert all(abs(got - want) < 0.05 for got, want in zip(timed(laps), REFERENCE_LAPS, strict=True))
    assert laps["best_lap"]["lap"] == 4 and abs(laps["best_lap"]["lap_time"] - 56.172) < 0.05
    assert {lap["setup_version"] for lap in laps["items"] if not lap["out_lap"]} == {1}
    requests.post(f"{live_server.url}/api/v1/sessions/{sid}/end", headers=live_server.headers,
                  timeout=5).raise_for_status()
    ended = requests.get(f"{live_server.url}/api/v1/sessions/{sid}/laps", timeout=5).json()
    assert ended["items"][-1]["in_lap"] is True and ended["items"][0]["out_lap"] is True
    listed = requests.get(f"{live_server.url}/api/v1/sessions?car_id={car}", timeout=5).json()["items"][0]
    stats = listed["stats"]
    assert stats["laps"] == 4 and abs(stats["best_lap_s"] - 56.172) < 0.05 and stats["frames"] == len(frames)
    assert 4000 < stats["distance_m"] < 7000 and stats["gaps"] == 0 and stats["max_rpm"] is None


def test_laps_recomputed_when_the_track_is_set_afterwards(live_server):
    frames = recorded_frames()
    sid = stream(live_server, f"KART-{uuid.uuid4().hex[:6]}", frames, track_id=None)
    assert requests.get(f"{live_server.url}/api/v1/sessions/{sid}/laps", timeout=5).json()["items"] == []
    resp = requests.put(f"{live_server.url}/api/v1/sessions/{sid}/track", json={"track_id": ORLANDO_TRACK_ID},
                        headers=live_server.headers, timeout=30)
    assert resp.status_code == 200, resp.text
    assert all(abs(got - want) < 0.05 for got, want in zip(timed(resp.json()), REFERENCE_LAPS, strict=True))
    # a line moved: every session on that track is timed again (here: a copy of the track, line reversed)
    track = requests.get(f"{live_server.url}/api/v1/tracks/{ORLANDO_TRACK_ID}", timeout=5).json()
    body = {k: track[k] for k in ("name", "a", "b", "sectors", "min_lap_time_s", "max_speed_kmh")}
    copy = requests.post(f"{live_server.url}/api/v1/tracks", json={**body, "name": "OKC copy", "direction": "a_left"},
                         headers=live_server.headers, timeout=5).json()
    requests.put(f"{live_server.url}/api/v1/sessions/{sid}/track", json={"track_id": copy["track_id"]},
                 headers=live_server.headers, timeout=30).raise_for_status()
    reversed_ = requests.put(f"{live_server.url}/api/v1/tracks/{copy['track_id']}",
                             json={**body, "name": "OKC copy", "direction": "a_right"}, headers=live_server.headers,
                             timeout=30)
    assert reversed_.status_code == 200
    laps = requests.get(f"{live_server.url}/api/v1/sessions/{sid}/laps", timeout=5).json()
    assert timed(laps) == []  # driving "backwards" across the reversed line: no lap


def test_bad_tracks_are_refused(live_server):
    url, headers = f"{live_server.url}/api/v1/tracks", live_server.headers
    for body, field in (({"name": "x", "a": [95, 0], "b": [1, 1]}, "a.0"),
                        ({"name": "", "a": [1, 0], "b": [1, 1]}, "name"),
                        ({"name": "x", "a": [1, 0]}, "b"),
                        ({"name": "x", "a": [1, 0], "b": [1, 1], "direction": "up"}, "direction")):
        resp = requests.post(url, json=body, headers=headers, timeout=5)
        assert resp.status_code == 422 and resp.json()["error"]["field"] == field, resp.text
    same = requests.post(url, json={"name": "x", "a": [1, 1], "b": [1, 1]}, headers=headers, timeout=5)
    assert same.status_code == 422 and same.json()["error"]["field"] == "b"  # the point that should differ
    assert requests.get(f"{url}/{uuid.uuid4()}", timeout=5).status_code == 404
    sid = requests.post(f"{live_server.url}/api/v1/sessions", json={"car_id": "T1"}, headers=headers,
                        timeout=5).json()["session_id"]
    missing = requests.put(f"{live_server.url}/api/v1/sessions/{sid}/track", json={"track_id": str(uuid.uuid4())},
                           headers=headers, timeout=5)
    assert missing.status_code == 404 and missing.json()["error"]["field"] == "track_id"


def test_a_track_in_use_cannot_be_deleted(live_server):
    url, headers = live_server.url, live_server.headers
    body = {"name": f"Temp {uuid.uuid4().hex[:6]}", "a": [28.41270817, -81.37973266], "b": [28.41273039, -81.37957049]}
    track = requests.post(f"{url}/api/v1/tracks", json=body, headers=headers, timeout=5).json()
    sid = requests.post(f"{url}/api/v1/sessions", json={"car_id": "TRK-1", "track_id": track["track_id"]},
                        headers=headers, timeout=5).json()["session_id"]
    refused = requests.delete(f"{url}/api/v1/tracks/{track['track_id']}", headers=headers, timeout=5)
    assert refused.status_code == 409 and refused.json()["error"]["sessions"] == [sid]
    assert requests.get(f"{url}/api/v1/sessions/{sid}", timeout=5).json()["track_id"] == track["track_id"]
    requests.put(f"{url}/api/v1/sessions/{sid}/track", json={"track_id": None}, headers=headers,
                 timeout=5).raise_for_status()
    assert requests.delete(f"{url}/api/v1/tracks/{track['track_id']}", headers=headers, timeout=5).status_code == 204
    assert requests.get(f"{url}/api/v1/tracks/{track['track_id']}", timeout=5).status_code == 404
    assert requests.get(f"{url}/api/v1/sessions/{sid}", timeout=5).json()["track_id"] is None
