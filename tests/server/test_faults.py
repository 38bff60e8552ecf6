"""No single request, client or fault stalls the other cars: exports, a database locked by another process,
a full disk and 200 viewers joining at once, each through a real server while a car streams.

Each test proves the car's acks go on during the fault and that nothing acknowledged is lost; the bound on
latencies here is loose (it catches a stall of the fault's length); the figures themselves are measured by
``python -m bench.stalls``.
"""
from __future__ import annotations

import multiprocessing
import sqlite3
import subprocess
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import requests
from sqlalchemy import Connection

from dashboard.server.store import FrameWrite, Store
from tests.clients import Car, RawSocketIO, Viewer, stored_frames
from tests.servers import ServerProcess
from tests.waiting import wait_for

STALL_S = 1.0  # far above any ack or health answer of a server that is not stalled (bench: tens of ms)


def timed_get(url: str) -> tuple[int, float]:
    started = time.monotonic()
    resp = requests.get(url, timeout=60)
    return resp.status_code, time.monotonic() - started


def fill(db: Path, session_id: str, car_id: str, frames: int) -> None:
    """A long ended session written straight into the server's database before it starts."""
    store = Store.from_url(f"sqlite:///{db}")
    t0 = time.time() - 86_400
    with store.engine.begin() as conn:
        store.insert_session({"id": session_id, "car_id": car_id, "name": "long", "status": "ended",
                              "created_at": t0, "started_at": t0, "ended_at": t0 + frames / 25,
                              "last_activity_at": t0 + frames / 25, "end_reason": "ended", "frame_count": 0},
                             conn=conn)
        _write_frames(store, conn, session_id, t0, frames)
    store.close()


def _write_frames(store: Store, conn: Connection, session_id: str, t0: float, frames: int) -> None:
    for start in range(0, frames, 5000):
        rows = [{"seq": s, "t": t0 + s / 25, "received_at": t0 + s / 25,
                 "channels": {"rpm": 3000.0 + s % 5000, "speed": float(s % 180), "lat": 28.41, "lon": -81.37,
                              "coolant_temp": 90.0, "throttle": float(s % 100)}}
                for s in range(start, min(frames, start + 5000))]
        store.write_frames([FrameWrite(session_id, rows, rows[-1]["seq"], rows[-1]["t"])], conn)


def test_four_exports_run_off_the_loop_while_the_cars_go_on_and_a_fifth_is_429(tmp_path):
    server = ServerProcess(tmp_path / "server").start()
    server.stop()
    sid = str(uuid.uuid4())
    fill(tmp_path / "server" / "dashboard.db", sid, "LONG-1", 150_000)
    server.start()
    car = Car(server.url, server.api_key).start()
    try:
        wait_for(lambda: len(car.acked) >= 50, 10, "the car streaming")
        before = len(car.acked)
        url = f"{server.url}/api/v1/sessions/{sid}/export?format=csv"
        responses = [requests.get(url, stream=True, timeout=60) for _ in range(4)]
        assert all(r.status_code == 200 for r in responses)
        refused = requests.get(url, timeout=10)
        assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
        assert refused.json()["error"]["code"] == "too_many"
        health: list[tuple[int, float]] = []
        sizes = [0] * 4

        def drain(i: int) -> None:
            for chunk in responses[i].iter_content(65536):
                sizes[i] += len(chunk)
                if len(health) < 40 and i == 0 and sizes[0] % (1 << 20) < 65536:
                    health.append(timed_get(server.url + "/healthz"))

        with ThreadPoolExecutor(4) as pool:
            list(pool.map(drain, range(4)))
        lines = sum(chunk.count(b"\n") for chunk in requests.get(url, stream=True, timeout=60).iter_content(65536))
        assert lines == 150_001 and min(sizes) == max(sizes) > 5_000_000
        assert health and all(code == 200 and took < STALL_S for code, took in health), health
        during = car.latencies[before // 10:]
        assert len(during) >= 20 and max(during) < STALL_S, f"car acks during the exports: max {max(during):.3f} s"
    finally:
        car.stop()
        server.stop()


def test_a_database_locked_by_another_process_for_30_s_stalls_nothing_and_loses_nothing(tmp_path):
    server = ServerProcess(tmp_path / "server").start()
    car = Car(server.url, server.api_key).start()
    lock = sqlite3.connect(tmp_path / "server" / "dashboard.db", timeout=10, isolation_level=None)
    try:
        wait_for(lambda: len(car.acked) >= 50, 10, "the car streaming")
        lock.execute("BEGIN EXCLUSIVE")  # a backup or a sqlite3 shell holding the write lock
        locked_at = time.monotonic()
        health = []
        while time.monotonic() - locked_at < 30:
            health.append(timed_get(server.url + "/healthz"))
            code, took = timed_get(f"{server.url}/api/v1/sessions/{car.session_id}")  # reads go on (WAL)
            assert code == 200 and took < STALL_S, (code, took)
            time.sleep(0.5)
        wrote = requests.post(f"{server.url}/api/v1/sessions", json={"car_id": "LOCKED"}, headers=server.headers,
                              timeout=60)
        assert wrote.status_code == 503 and int(wrote.headers["Retry-After"]) >= 1, wrote.text
        assert wrote.json()["error"]["code"] == "unavailable"
        assert car.unavailable > 0  # the car was told to try again, and it did
        assert {code for code, _took in health} == {503}
        assert sorted(took for _code, took in health)[-2] < STALL_S  # at once: the writer is stuck (only the
        # first check, before the writer had waited HEALTH_STALLED_S, may wait for its own 2 s write timeout)
        lock.execute("COMMIT")
        acked_before_release = len(car.acked)
        wait_for(lambda: len(car.acked) >= acked_before_release + 50, 30, "acks again once the lock is gone")
        wait_for(lambda: requests.get(server.url + "/healthz", timeout=10).status_code == 200, 10, "healthy")
    finally:
        lock.close()
        car.stop()
    stored = [f["seq"] for f in stored_frames(server.url, car.session_id)]
    assert stored == sorted(set(stored)) and set(car.acked) <= set(stored)  # every acked frame is stored, once
    assert stored == list(range(len(stored)))  # and the frames sent meanwhile were stored after
    server.stop()


def test_a_full_disk_answers_unavailable_and_viewers_get_each_stored_frame_once(tmp_path):
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], check=True)
    server = None
    try:
        server = ServerProcess(mount / "server").start()
        viewer = Viewer(server.url)
        car = Car(server.url, server.api_key)
        assert viewer.join(car.session_id)["ok"]
        car.start()
        wait_for(lambda: car.unavailable > 0, 60, "the disk filling up")
        assert requests.get(server.url + "/healthz", timeout=10).status_code == 503
        acked_when_full = len(car.acked)
        subprocess.run(["mount", "-o", "remount,size=64m", str(mount)], check=True)  # room again
        wait_for(lambda: len(car.acked) >= acked_when_full + 50, 30, "acks again once there is room")
        car.stop()
        stored = [f["seq"] for f in stored_frames(server.url, car.session_id)]
        assert set(car.acked) <= set(stored) and stored == list(range(len(stored)))
        seen = wait_for(lambda: viewer.seqs() if len(viewer.seqs()) >= len(stored) else None, 15, "every frame")
        assert seen == stored  # each stored frame once, in order, and never a frame that was not stored
        viewer.close()
        wait_for(lambda: requests.get(server.url + "/healthz", timeout=10).status_code == 200, 15, "healthy again")
    finally:
        if server is not None:
            server.stop()
        subprocess.run(["umount", "-l", str(mount)], check=False)


def join_storm(url: str, session_id: str, viewers: int, ready: Any, go: Any, results: Any) -> None:
    """In a process of its own (its threads must not starve the car's): ``viewers`` connect, then join at once.

    Puts the number of recent frames each viewer's snapshot held, or the error, on ``results``.
    """
    try:
        clients = [RawSocketIO(url, "/dashboard") for _ in range(viewers)]
    except Exception as exc:  # reported to the test, which fails with it
        results.put(repr(exc))
        return
    barrier = threading.Barrier(viewers)

    def join(client: RawSocketIO) -> int:
        barrier.wait()
        ack = client.call(1, f'["join",{{"session_id":"{session_id}"}}]')
        assert ack["ok"], ack
        return len(ack["snapshot"]["recent"])

    ready.set()
    go.wait(30)
    try:
        with ThreadPoolExecutor(viewers) as pool:
            results.put(list(pool.map(join, clients)))
    except Exception as exc:
        results.put(repr(exc))
    finally:
        for client in clients:
            client.close()


def test_two_hundred_viewers_joining_a_busy_session_at_once_get_a_bounded_snapshot(live_server):
    car = Car(live_server.url, live_server.api_key).start()
    ctx = multiprocessing.get_context("spawn")
    ready, go, results = ctx.Event(), ctx.Event(), ctx.Queue()
    storm = ctx.Process(target=join_storm, args=(live_server.url, car.session_id, 200, ready, go, results))
    try:
        wait_for(lambda: len(car.acked) >= 2000, 30, "history")
        storm.start()
        wait_for(lambda: ready.is_set() or not results.empty() or not storm.is_alive(), 60, "the viewers connecting")
        assert ready.is_set(), results.get(timeout=5) if not results.empty() else f"exit {storm.exitcode}"
        before = len(car.latencies)
        go.set()
        sizes = results.get(timeout=120)
        during = car.latencies[before:]
        assert isinstance(sizes, list), sizes
        assert len(sizes) == 200 and all(0 < n <= 1200 + 600 for n in sizes), sizes[:5]
        assert during and max(during) < STALL_S, f"car acks during the join storm: max {max(during):.3f} s"
    finally:
        car.stop()
        storm.join(30)
        if storm.is_alive():
            storm.kill()
