"""Laps compared through a real server: the bundled recording streamed as two sessions of one car with two setups,
then the picker, a lap's trace, the comparison (its delta ends at the lap-time difference) and the setup table;
bad input answered 4xx naming the field; and long laps compared while another car's acks go on."""
from __future__ import annotations

import math
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from dashboard import schemas
from dashboard.errors import NotFound
from dashboard.server.comparing import CompareService
from dashboard.server.store import FrameWrite, Store
from dashboard.server.tracks import ORLANDO_TRACK_ID
from dashboard.telemetry.laps import ORLANDO_KART_CENTER, recompute
from tests.clients import Car, send_frames
from tests.server.test_laps import BATCH, recorded_frames, stream, timed
from tests.servers import ServerProcess
from tests.waiting import wait_for

ACK_BOUND_S = 0.2  # another car's ack while comparisons are computed (unstalled: tens of ms)


def end(server, sid: str) -> None:
    requests.post(f"{server.url}/api/v1/sessions/{sid}/end", headers=server.headers, timeout=10).raise_for_status()


def setup(server, sid: str, fields: dict, t: float) -> None:
    requests.post(f"{server.url}/api/v1/sessions/{sid}/setup", json={"setup": fields, "timestamp": t},
                  headers=server.headers, timeout=5).raise_for_status()


def stream_with_setup(server, car: str, fields: dict, track_id: str = ORLANDO_TRACK_ID) -> str:
    """A session of ``car`` on the track with ``fields`` as its setup from the first frame, streamed and ended."""
    frames = recorded_frames()
    created = requests.post(f"{server.url}/api/v1/sessions", json={"car_id": car, "track_id": track_id},
                            headers=server.headers, timeout=5).json()
    sid = created["session_id"]
    setup(server, sid, fields, frames[0]["t"] - 1)
    send_frames(server, car, sid, frames, BATCH)
    end(server, sid)
    wait_for(lambda: len(timed(requests.get(f"{server.url}/api/v1/sessions/{sid}/laps", timeout=5).json())) == 4,
             30, "four timed laps")
    return sid


@pytest.fixture(scope="module")
def two_sessions(live_server):
    car = f"CMP-{uuid.uuid4().hex[:6]}"
    first = stream_with_setup(live_server, car, {"gearing": {"rear_sprocket": 84}, "tyres": "MG red"})
    second = stream_with_setup(live_server, car, {"gearing": {"rear_sprocket": 85}, "tyres": "MG red"})
    return car, first, second


def lap_times(server, sid: str) -> dict[int, float]:
    laps = requests.get(f"{server.url}/api/v1/sessions/{sid}/laps", timeout=5).json()["items"]
    return {lap["lap"]: lap["lap_time"] for lap in laps}


def test_the_delta_trace_ends_at_the_difference_of_the_lap_times(live_server, two_sessions):
    car, first, second = two_sessions
    times = lap_times(live_server, first)
    resp = requests.get(f"{live_server.url}/api/v1/compare", params={
        "laps": f"{first}:2,{first}:4,{second}:3", "channels": "gps_speed,rpm", "points": 1500}, timeout=30)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    schemas.Comparison.model_validate(body)  # exactly the documented fields
    assert body["reference"] == {"session_id": first, "lap": 2} and body["points"] == 1500
    assert body["track_id"] == ORLANDO_TRACK_ID and len(body["laps"]) == 3 and len(body["deltas"]) == 2
    other = lap_times(live_server, second)
    for delta, want in zip(body["deltas"], (times[4] - times[2], other[3] - times[2]), strict=True):
        assert abs(delta["delta_s"][-1] - want) < 0.05, (delta["delta_s"][-1], want)
        assert delta["delta_s"][0] == 0 and abs(delta["final_s"] - want) < 0.05
        assert sum(s["change_s"] for s in delta["segments"]) == pytest.approx(delta["final_s"], abs=0.01)
        assert len(delta["segments"]) == 50 and {s["verdict"] for s in delta["segments"]} <= {"gain", "loss", "even"}
    reference = body["laps"][0]
    assert len(reference["distance_m"]) == 1500 and reference["distance_m"][0] == 0
    assert all(b > a for a, b in zip(reference["distance_m"], reference["distance_m"][1:], strict=False))
    assert 1000 < reference["length_m"] < 1400 and abs(reference["lap_time"] - times[2]) < 0.001
    speeds = [v for v in reference["channels"]["gps_speed"] if v is not None]
    assert len(speeds) == 1500 and 20 < max(speeds) < 120  # km/h of a kart
    assert set(reference["channels"]["rpm"]) == {None}  # the recording has no rpm: a break all along


def test_a_lap_trace_is_a_few_thousand_points_at_most(live_server, two_sessions):
    _car, first, _second = two_sessions
    url = f"{live_server.url}/api/v1/sessions/{first}/laps/3/trace"
    trace = schemas.LapTrace.model_validate(requests.get(url, timeout=30).json()).model_dump()
    assert trace["points"] == 2000 and len(trace["time_s"]) == 2000 and set(trace["channels"]) == {
        "speed", "gps_speed", "rpm", "throttle"}
    assert trace["time_s"][-1] == pytest.approx(trace["lap_time"], abs=0.001)
    assert all(b >= a for a, b in zip(trace["time_s"], trace["time_s"][1:], strict=False))
    most = requests.get(url, params={"points": 4000, "channels": "heading"}, timeout=30).json()
    assert most["points"] == 4000 and set(most["channels"]) == {"heading"}


def test_the_picker_lists_the_cars_laps_across_sessions(live_server, two_sessions):
    car, first, second = two_sessions
    listed = requests.get(f"{live_server.url}/api/v1/cars/{car}/laps", params={"track_id": ORLANDO_TRACK_ID},
                          timeout=10).json()
    schemas.CarLapList.model_validate(listed)
    assert listed["track_id"] == ORLANDO_TRACK_ID and listed["track_name"] == "Orlando Kart Center"
    items = listed["items"]
    assert [i["session_id"] for i in items if not (i["out_lap"] or i["in_lap"])] == [first] * 4 + [second] * 4
    assert {i["car_setup_version"] for i in items if i["session_id"] == first} == {1}
    assert {i["car_setup_version"] for i in items if i["session_id"] == second} == {2}
    assert {i["setup_version"] for i in items} == {1}  # each session's own numbering
    assert all(i["driver_id"] is None for i in items)
    best = [i for i in items if i["is_best"]]
    assert len(best) == 2 and {i["lap"] for i in best} == {4} and listed["best_lap_time"] == pytest.approx(56.17, 0.01)
    assert all(i["clean"] for i in items if not (i["out_lap"] or i["in_lap"]))
    assert not any(i["clean"] for i in items if i["out_lap"] or i["in_lap"])
    default = requests.get(f"{live_server.url}/api/v1/cars/{car}/laps", timeout=10).json()
    assert default["track_id"] == ORLANDO_TRACK_ID and len(default["items"]) == len(items)
    nobody = requests.get(f"{live_server.url}/api/v1/cars/NO-SUCH-CAR/laps", timeout=10).json()
    assert nobody["items"] == [] and nobody["track_id"] is None


def test_the_setup_table_says_what_changed_next_to_the_change_in_lap_time(live_server, two_sessions):
    car, first, second = two_sessions
    table = requests.get(f"{live_server.url}/api/v1/cars/{car}/setups/compare", timeout=10).json()
    schemas.SetupComparison.model_validate(table)
    one, two = table["items"]
    assert (one["car_setup_version"], two["car_setup_version"]) == (1, 2)
    assert one["laps"] == two["laps"] == 6 and one["clean_laps"] == two["clean_laps"] == 4
    assert one["sessions"] == [{"session_id": first, "version": 1}]
    assert two["changed"] == {"gearing.rear_sprocket": {"from": 84, "to": 85}} and one["changed"] == {}
    times = sorted(timed(requests.get(f"{live_server.url}/api/v1/sessions/{first}/laps", timeout=5).json()))
    assert one["best"] == pytest.approx(times[0], abs=0.001)
    assert one["mean_clean"] == pytest.approx(sum(times) / 4, abs=0.001)
    assert two["best_change"] == pytest.approx(0, abs=0.001)  # the same recording twice
    assert "107 %" in table["rule"]


def test_bad_input_is_refused_naming_the_field(live_server, two_sessions):
    car, first, _second = two_sessions
    url = live_server.url
    other_track = requests.post(f"{url}/api/v1/tracks", headers=live_server.headers, timeout=5, json={
        **{k: v for k, v in requests.get(f"{url}/api/v1/tracks/{ORLANDO_TRACK_ID}", timeout=5).json().items()
           if k in ("a", "b", "sectors", "min_lap_time_s", "max_speed_kmh")}, "name": f"OKC {car}"}).json()
    elsewhere = stream(live_server, f"{car}-B", recorded_frames(), other_track["track_id"])
    wait_for(lambda: len(lap_times(live_server, elsewhere)) >= 3, 30, "laps on the other track")
    cases = [
        ("/api/v1/compare", {"laps": f"{first}:2,{elsewhere}:2"}, 422, "laps"),  # two tracks
        ("/api/v1/compare", {"laps": ",".join(f"{first}:{n}" for n in (1, 2, 3, 4, 1, 2, 3))}, 422, "laps"),
        ("/api/v1/compare", {"laps": f"{uuid.uuid4()}:2"}, 404, "laps"),
        ("/api/v1/compare", {"laps": f"{first}:99"}, 404, "laps"),
        ("/api/v1/compare", {"laps": "nonsense"}, 422, "laps"),
        ("/api/v1/compare", {}, 422, "laps"),
        ("/api/v1/compare", {"laps": f"{first}:2", "channels": "Speed;drop"}, 422, "channels"),
        ("/api/v1/compare", {"laps": f"{first}:2", "points": 4001}, 422, "points"),
        (f"/api/v1/sessions/{first}/laps/x/trace", {}, 404, "lap"),
        (f"/api/v1/sessions/{first}/laps/77/trace", {}, 404, "lap"),
        (f"/api/v1/sessions/{uuid.uuid4()}/laps/1/trace", {}, 404, "session_id"),
        (f"/api/v1/sessions/{first}/laps/1/trace", {"points": 1}, 422, "points"),
        (f"/api/v1/cars/{car}/laps", {"track_id": str(uuid.uuid4())}, 404, "track_id"),
        (f"/api/v1/cars/{car}/setups/compare", {"track_id": "not-a-track"}, 404, "track_id"),
        ("/api/v1/cars/bad car!/laps", {}, 422, "car_id"),
    ]
    for path, query, status, field in cases:
        resp = requests.get(url + path, params=query, timeout=30)
        assert resp.status_code == status and resp.json()["error"]["field"] == field, (path, query, resp.text)


def okc_session(store: Store, car_id: str = "OKC") -> tuple[str, int]:
    """The bundled recording as an ended session with its laps; (session id, a timed lap)."""
    frames = recorded_frames()
    sid = str(uuid.uuid4())
    t0 = frames[0]["t"]
    with store.engine.begin() as conn:
        store.insert_session({"id": sid, "car_id": car_id, "name": "okc", "status": "ended", "created_at": t0,
                              "frame_count": 0, "track_id": ORLANDO_TRACK_ID}, conn=conn)
        rows = [{**f, "received_at": f["t"]} for f in frames]
        store.write_frames([FrameWrite(sid, rows, rows[-1]["seq"], rows[-1]["t"])], conn)
        laps = [lap.to_dict() for lap in recompute(ORLANDO_KART_CENTER, frames)]
        store.replace_laps(sid, laps, conn=conn)
    return sid, 2


def test_the_service_reads_a_laps_own_frames_on_sqlite_and_postgresql(db_url):
    """The SQL of the comparison (a lap's frames by seq and time, only the channels asked for; a car's laps and
    setups across sessions) on both databases, in process."""
    store = Store.from_url(db_url)
    service = CompareService(store)
    try:
        store.save_track({"id": ORLANDO_TRACK_ID, "name": "Orlando Kart Center",
                          "definition": ORLANDO_KART_CENTER.to_dict(), "created_at": 0, "updated_at": 0})
        sid, lap = okc_session(store, "DB-1")
        store.add_setup(sid, {"rear_sprocket": 84}, 0.0, 0.0,
                        {"event_type": "setup.changed", "timestamp": 0.0, "received_at": 0.0, "payload": {}})
        frames = store.frames_between(sid, 0, 1e12, None, ["lat", "gps_speed"])
        assert frames and all(set(f["channels"]) <= {"lat", "gps_speed"} for f in frames)
        result = service.compare([(sid, 2), (sid, 3), (sid, 4)], ["gps_speed"], 500, 10)
        times = {row["lap"]: row["lap_time"] for row in store.laps(sid)}
        assert [d["final_s"] for d in result["deltas"]] == pytest.approx([times[3] - times[2], times[4] - times[2]],
                                                                         abs=0.002)
        listed = service.car_laps("DB-1", None)
        assert listed["track_id"] == ORLANDO_TRACK_ID and len(listed["items"]) == len(times)
        assert {i["car_setup_version"] for i in listed["items"]} == {None}  # the laps were timed before the setup
        assert service.setups("DB-1", ORLANDO_TRACK_ID)["items"][0]["laps"] == len(times)
        with pytest.raises(NotFound):
            service.trace(sid, 99, [], 100)
    finally:
        service.close()
        store.close()


# ------------------------------------------------------------------ long laps, off the event loop
LONG_LAP_S = 1200  # 20 minutes a lap at 25 Hz: 30,000 frames each
HZ = 25


def fill_long_laps(db, session_id: str, laps: int, lap_s: float = LONG_LAP_S) -> None:
    """An ended session of ``laps`` laps of ``lap_s`` round a 1 km circle, written straight into the database."""
    store = Store.from_url(f"sqlite:///{db}")
    t0 = time.time() - 86_400
    lap_s = int(lap_s)
    frames = laps * lap_s * HZ + 2 * HZ
    with store.engine.begin() as conn:
        store.insert_session({"id": session_id, "car_id": "LONG-1", "name": "long laps", "status": "ended",
                              "created_at": t0, "started_at": t0, "ended_at": t0 + frames / HZ,
                              "last_activity_at": t0 + frames / HZ, "end_reason": "ended", "frame_count": 0,
                              "track_id": ORLANDO_TRACK_ID}, conn=conn)
        for start in range(0, frames, 5000):
            rows = []
            for s in range(start, min(frames, start + 5000)):
                angle = 2 * math.pi * (s / HZ - 1) / lap_s
                rows.append({"seq": s, "t": t0 + s / HZ, "received_at": t0 + s / HZ, "channels": {
                    "lat": 28.41 + 0.0014 * math.sin(angle), "lon": -81.38 + 0.0016 * math.cos(angle),
                    "speed": 50.0 + s % 40, "rpm": 9000.0 + s % 3000, "throttle": float(s % 100)}})
            store.write_frames([FrameWrite(session_id, rows, rows[-1]["seq"], rows[-1]["t"])], conn)
        store.replace_laps(session_id, [
            {"lap": n, "start_t": t0 + 1 + (n - 1) * lap_s, "end_t": t0 + 1 + n * lap_s,
             "lap_time": float(lap_s), "start_seq": HZ + (n - 1) * lap_s * HZ,
             "end_seq": HZ + n * lap_s * HZ, "out_lap": False, "in_lap": False, "setup_version": None}
            for n in range(1, laps + 1)], conn=conn)
    store.close()


def test_long_laps_are_compared_while_another_cars_acks_go_on(tmp_path):
    server = ServerProcess(tmp_path / "server").start()
    server.stop()
    sid = str(uuid.uuid4())
    fill_long_laps(tmp_path / "server" / "dashboard.db", sid, 6)
    server.start()
    car = Car(server.url, server.api_key).start()
    try:
        wait_for(lambda: len(car.acked) >= 50, 10, "the car streaming")
        before = len(car.latencies)
        laps = ",".join(f"{sid}:{n}" for n in range(1, 7))

        def compare(_: int) -> tuple[int, float, dict]:
            started = time.monotonic()
            resp = requests.get(f"{server.url}/api/v1/compare", params={"laps": laps, "points": 4000}, timeout=120)
            return resp.status_code, time.monotonic() - started, resp.json()

        with ThreadPoolExecutor(2) as pool:  # two at once: the second waits for the first
            results = list(pool.map(compare, range(2)))
        during = car.latencies[before:]
        for status, _took, body in results:
            assert status == 200 and all(abs(d["final_s"]) < 0.01 for d in body["deltas"]), body.get("error")
        slowest = max(took for _s, took, _b in results)
        assert slowest > 1.0, "the comparisons were too quick to show anything"  # 180,000 frames read each
        assert len(during) >= 10 and max(during) < ACK_BOUND_S, f"acks during the comparisons: max {max(during):.3f} s"
    finally:
        car.stop()
        server.stop()
