"""Lap comparison: what a comparison costs and what it sends, and what another car's acks wait meanwhile.

    python -m bench.compare [--laps 6] [--lap-s 1200] [--rounds 3]

In process (a temporary SQLite database, no server): one lap of the bundled recording (~57 s, ~6 fixes/s)
and ``--laps`` laps of ``--lap-s`` seconds at 25 Hz round a circle, each lap read from its own time span and
resampled (``CompareService``, as the route does): milliseconds per lap, points and bytes per lap answered
(2,000 points by default, 4,000 at most) against the frames the lap has.

Through a real server (``dashboard serve``, SQLite): a car streams 10-frame batches 20 times a second while
comparisons of the long laps (4,000 points, all channels by default) run one after another for ``--rounds``
rounds; prints the car's ack round trip p50 / p99 / max during them and before (the bound asked is 200 ms).
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import requests

from dashboard.server.comparing import CompareService
from dashboard.server.store import Store
from dashboard.server.tracks import ORLANDO_TRACK_ID
from dashboard.telemetry.laps import ORLANDO_KART_CENTER
from tests.clients import Car
from tests.server.test_compare import HZ, fill_long_laps, okc_session
from tests.servers import ServerProcess
from tests.waiting import wait_for

CHANNELS = ["speed", "gps_speed", "rpm", "throttle"]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def in_process(laps: int, lap_s: float) -> None:
    folder = Path(tempfile.mkdtemp(prefix="bench-compare-"))
    db = folder / "dashboard.db"
    store = Store.from_url(f"sqlite:///{db}")
    store.save_track({"id": ORLANDO_TRACK_ID, "name": "Orlando Kart Center",
                      "definition": ORLANDO_KART_CENTER.to_dict(), "created_at": 0, "updated_at": 0})
    okc, okc_lap = okc_session(store)
    store.close()
    long_sid = str(uuid.uuid4())
    fill_long_laps(db, long_sid, laps, lap_s)
    store = Store.from_url(f"sqlite:///{db}")
    service = CompareService(store)
    print("in process (SQLite, one thread):")
    for name, sid, lap, frames in (("OKC lap (bundled recording)", okc, okc_lap, None),
                                   (f"{lap_s:.0f} s lap at {HZ} Hz", long_sid, 1, int(lap_s * HZ))):
        row = store.lap(sid, lap)
        if frames is None:
            frames = sum(1 for f in store.iter_frames(sid) if row["start_t"] <= f["t"] <= row["end_t"])
        for points in (2000, 4000):
            took = []
            for _ in range(5):
                started = time.perf_counter()
                body = service.encoded("trace", sid, lap, CHANNELS, points)
                took.append(time.perf_counter() - started)
            print(f"  {name}: {frames} frames -> {points} points, {len(body) / 1024:.0f} KiB answered, "
                  f"{statistics.median(took) * 1000:.0f} ms (median of 5, read + resample + encode)")
    started = time.perf_counter()
    body = service.encoded("compare", [(long_sid, n) for n in range(1, laps + 1)], CHANNELS, 4000, 50)
    print(f"  comparison of {laps} x {lap_s:.0f} s laps at 4000 points: {(time.perf_counter() - started):.2f} s, "
          f"{len(body) / 1024 / 1024:.1f} MiB answered")
    service.close()
    store.close()


def through_server(laps: int, lap_s: float, rounds: int) -> None:
    folder = Path(tempfile.mkdtemp(prefix="bench-compare-server-"))
    server = ServerProcess(folder / "server").start()
    server.stop()
    sid = str(uuid.uuid4())
    fill_long_laps(folder / "server" / "dashboard.db", sid, laps, lap_s)
    server.start()
    car = Car(server.url, server.api_key).start()
    try:
        wait_for(lambda: len(car.latencies) >= 100, 20, "the car streaming")
        quiet = list(car.latencies[20:])
        before = len(car.latencies)
        took = []
        query = {"laps": ",".join(f"{sid}:{n}" for n in range(1, laps + 1)), "points": 4000}
        for _ in range(rounds):
            started = time.monotonic()
            requests.get(f"{server.url}/api/v1/compare", params=query, timeout=300).raise_for_status()
            took.append(time.monotonic() - started)
        during = car.latencies[before:]
    finally:
        car.stop()
        server.stop()
    print(f"through a server: {rounds} comparisons of {laps} x {lap_s:.0f} s laps, "
          f"{statistics.mean(took):.2f} s each")
    for label, values in (("quiet", quiet), ("during", during)):
        print(f"  car acks {label}: n={len(values)} p50 {percentile(values, 0.5) * 1000:.0f} ms, "
              f"p99 {percentile(values, 0.99) * 1000:.0f} ms, max {max(values) * 1000:.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--laps", type=int, default=6)
    parser.add_argument("--lap-s", type=float, default=1200.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    in_process(args.laps, args.lap_s)
    through_server(args.laps, args.lap_s, args.rounds)


if __name__ == "__main__":
    main()
