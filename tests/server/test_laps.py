"""Laps end to end: a recorded session streamed to a real server, timed live, and timed again on a track change."""
from __future__ import annotations

import re
import time
import uuid
from pathlib import Path

import requests

from dashboard.server.tracks import ORLANDO_TRACK_ID
from dashboard.telemetry.gps import read_log
from tests.clients import CALL_TIMEOUT_S, Viewer, connect_monitor, send_frames
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
    send_frames(server, car, sid, frames, BATCH)
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


def test_a_session_whose_track_text_names_a_stored_track_is_timed_on_it(live_server):
    """The free-text track matches a stored track by name (case, spacing): laps are timed without a second step."""
    url, headers = live_server.url, live_server.headers
    created = requests.post(f"{url}/api/v1/sessions", json={"car_id": "NAME-1", "track": "  orlando KART   center "},
                            headers=headers, timeout=5)
    assert created.status_code == 201 and created.json()["track_id"] == ORLANDO_TRACK_ID
    free = requests.post(f"{url}/api/v1/sessions", json={"car_id": "NAME-2", "track": "Test Track"},
                         headers=headers, timeout=5)
    assert free.status_code == 201 and free.json()["track_id"] is None and free.json()["track"] == "Test Track"
    by_id = requests.post(f"{url}/api/v1/sessions", json={"car_id": "NAME-3", "track_id": ORLANDO_TRACK_ID},
                          headers=headers, timeout=5).json()
    assert by_id["track"] == "Orlando Kart Center"  # the track's name, for lists and pages
    legacy = requests.post(f"{url}/session_manager/sessions.start", json={"car_id": "NAME-4", "track": "ORLANDO KART "
                           "CENTER"}, headers=headers, timeout=5)
    assert legacy.status_code in (200, 201) and legacy.json()["track_id"] == ORLANDO_TRACK_ID, legacy.text


def test_a_car_names_its_track_in_session_start(live_server):
    """A monitor's session.start with a track name or id: the session it starts is timed; an unknown one is refused
    naming the field, and nothing is created."""
    url = live_server.url
    car = f"KART-{uuid.uuid4().hex[:6]}"
    monitor = connect_monitor(url, car, live_server.api_key)
    try:
        def start(body: dict) -> dict:
            return monitor.call("session.start", body, namespace="/monitor", timeout=CALL_TIMEOUT_S)

        unknown = start({"record_id": "r-unknown", "track": "Orlnado Kart Center"})
        assert unknown["ok"] is False and unknown["error"]["code"] == "not_found"
        assert unknown["error"]["field"] == "track" and "Orlando Kart Center" in unknown["error"]["message"]
        bad_id = start({"record_id": "r-bad-id", "track_id": str(uuid.uuid4())})
        assert bad_id["ok"] is False and bad_id["error"]["field"] == "track_id"
        assert requests.get(f"{url}/api/v1/sessions?car_id={car}", timeout=5).json()["total"] == 0
        ack = start({"record_id": "r-1", "track": "orlando kart center"})
        assert ack["ok"] and ack["session"]["track_id"] == ORLANDO_TRACK_ID, ack
        sid = ack["session"]["session_id"]
        frames = recorded_frames()
        for i in range(0, len(frames), BATCH):
            sent = monitor.call("telemetry", {"session_id": sid, "frames": frames[i:i + BATCH]}, namespace="/monitor",
                                timeout=CALL_TIMEOUT_S)
            assert sent["ok"] and not sent["rejected"], sent
    finally:
        monitor.disconnect()

    def laps() -> list[float]:
        got = timed(requests.get(f"{url}/api/v1/sessions/{sid}/laps", timeout=5).json())
        return got if len(got) == len(REFERENCE_LAPS) else []

    assert all(abs(a - b) < 0.05 for a, b in zip(wait_for(laps, 15, "the laps"), REFERENCE_LAPS, strict=True))
    requests.post(f"{url}/api/v1/sessions/{sid}/end", headers=live_server.headers, timeout=5).raise_for_status()
    other = connect_monitor(url, car, live_server.api_key)
    try:
        by_id = other.call("session.start", {"record_id": "r-2", "track_id": ORLANDO_TRACK_ID}, namespace="/monitor",
                           timeout=CALL_TIMEOUT_S)
        assert by_id["ok"] and by_id["session"]["session_id"] != sid
        assert by_id["session"]["track_id"] == ORLANDO_TRACK_ID and by_id["session"]["track"] == "Orlando Kart Center"
    finally:
        other.disconnect()


def test_the_recording_looped_end_to_start_times_no_fake_lap_and_the_seam_is_counted(live_server):
    """The demo's loop seam through a real server: two passes of the recording, time running on across the seam
    (the kart jumps 135 m back to the pit lane). 8 timed laps, each a real one; the lap in progress at the seam is
    stored untimed (interrupted: jump) and counted in /metrics."""
    url = live_server.url
    one = recorded_frames()
    span = one[-1]["t"] - one[0]["t"] + 0.1
    shift = time.time() - 2 * span - one[0]["t"] - 5  # the second pass ends about now
    frames = [{**f, "seq": k * len(one) + f["seq"], "t": f["t"] + shift + k * span} for k in (0, 1) for f in one]
    before = interrupted_count(url, "jump")
    sid = stream(live_server, f"KART-{uuid.uuid4().hex[:6]}", frames, track_id=ORLANDO_TRACK_ID)

    def laps() -> dict:
        got = requests.get(f"{url}/api/v1/sessions/{sid}/laps", timeout=5).json()
        return got if len(timed(got)) == 2 * len(REFERENCE_LAPS) else {}

    got = wait_for(laps, 15, "every lap of both passes")
    assert all(abs(a - b) < 0.05 for a, b in zip(timed(got), REFERENCE_LAPS * 2, strict=True))
    cut = [lap for lap in got["items"] if lap["interrupted"]]
    assert [(lap["lap"], lap["in_lap"], lap["interrupted"]) for lap in cut] == [(5, True, "jump")]
    assert got["items"][6]["lap"] == 6 and got["items"][6]["out_lap"]  # the second pass starts with an out-lap
    assert abs(got["best_lap"]["lap_time"] - min(REFERENCE_LAPS)) < 0.05
    assert wait_for(lambda: interrupted_count(url, "jump") >= before + 1, 10, "the metric")


def interrupted_count(url: str, reason: str) -> float:
    text = requests.get(f"{url}/metrics", timeout=5).text
    found = re.search(rf'^dashboard_laps_interrupted_total{{reason="{reason}"}} (\S+)$', text, re.MULTILINE)
    assert found, text[-2000:]
    return float(found.group(1))
