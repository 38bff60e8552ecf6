"""bench.stalls: what a car and /healthz wait while one request, client or fault weighs on the server.

One real server (SQLite in a temporary folder), one car streaming 10-frame ``telemetry`` emits 20 times a
second from its own process, and a prober asking ``/healthz`` every 100 ms. Then, one after the other:

- ``quiet``: nothing else, the reference;
- ``exports``: four CSV exports at once of an ended 196,000-frame session (a fifth must be refused 429);
- ``lock``: another process holds SQLite's write lock (``BEGIN EXCLUSIVE``, as a backup or a ``sqlite3``
  shell would) for ``--lock-s`` seconds; the car is told ``unavailable`` and resends, as the uplink does;
- ``storm``: 200 viewers, connected beforehand from their own process, join the car's session at once.

For each phase it prints the car's ack round trip (p50/p99/max), its ``unavailable`` acks, and /healthz's
answer time and codes; the issue's bound is 200 ms for acks and /healthz (a locked database answers 503
at once: that is the point). Results go to ``bench/results/<date>-stalls.json``.

    python -m bench.stalls [--lock-s 10] [--viewers 200] [--export-frames 196000] [--out FILE]
"""
from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import sqlite3
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench.load import CONNECT_PARALLEL, DASHBOARD_NS, MONITOR_NS, LeanClient, _http_session, make_frame
from bench.servers import API_KEY, BENCH, Server

EMIT_EVERY_S = 0.05
FRAMES_PER_EMIT = 10
HEALTH_EVERY_S = 0.1
BOUND_MS = 200.0


# ------------------------------------------------------------------ the car (its own process)
def car_process(url: str, stop: Any, out: Any) -> None:
    """Stream until ``stop``; put the session id, then every emit as (sent_at, seconds, ok, code), on ``out``."""
    import random

    async def main() -> None:
        async with _http_session() as http:
            client = LeanClient(http, url, MONITOR_NS)
            await client.connect({"car_id": "STALL-CAR", "api_key": API_KEY}, compress=False)
            ack = await client.call("session.start", {"name": "stalls"})
            out.put(("session", ack["session"]["session_id"]))
            session_id, rng, seq, emits = ack["session"]["session_id"], random.Random(1), 0, []
            while not stop.is_set():
                frames = [make_frame(seq + i, rng) for i in range(FRAMES_PER_EMIT)]
                while not stop.is_set():
                    sent_at, started = time.time(), time.perf_counter()
                    ack = await client.call("telemetry", {"session_id": session_id, "frames": frames})
                    code = None if ack.get("ok") else ack["error"]["code"]
                    emits.append((sent_at, time.perf_counter() - started, code is None, code))
                    if code is None:
                        break
                    await asyncio.sleep(min(float(ack["error"].get("retry_after") or 1), 1.0))
                seq += FRAMES_PER_EMIT
                await asyncio.sleep(EMIT_EVERY_S)
            out.put(("emits", emits))
            await client.close()

    asyncio.run(main())


# ------------------------------------------------------------------ the viewers of the storm (their own process)
def storm_process(url: str, session_id: str, viewers: int, go: Any, out: Any) -> None:
    """Connect ``viewers`` to /dashboard, report ready, and on ``go`` have every one join at once."""
    async def main() -> None:
        async with _http_session() as http:
            gate = asyncio.Semaphore(CONNECT_PARALLEL)
            clients = [LeanClient(http, url, DASHBOARD_NS) for _ in range(viewers)]

            async def connect(client: LeanClient) -> None:
                async with gate:
                    await client.connect(None, compress=True)

            await asyncio.gather(*(connect(c) for c in clients))
            out.put(("ready", viewers))
            await asyncio.get_running_loop().run_in_executor(None, go.wait)

            async def join(client: LeanClient) -> tuple[float, int, bool]:
                started = time.perf_counter()
                ack = await client.call("join", {"session_id": session_id}, timeout=120)
                recent = len(ack["snapshot"]["recent"]) if ack.get("ok") else 0
                return time.perf_counter() - started, recent, bool(ack.get("ok"))

            started = time.time()
            joins = await asyncio.gather(*(join(c) for c in clients))
            out.put(("joined", {"started": started, "ended": time.time(), "joins": joins}))
            await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)

    asyncio.run(main())


# ------------------------------------------------------------------ the exports (their own process)
def exports_process(url: str, out: Any) -> None:
    """Four streaming CSV exports at once, and a fifth while they run; report sizes and times."""
    responses = [urllib.request.urlopen(url, timeout=120) for _ in range(4)]
    try:
        urllib.request.urlopen(url, timeout=30)
        fifth = 200
    except urllib.error.HTTPError as exc:
        fifth = exc.code

    def drain(resp: Any) -> tuple[int, float]:
        started, size = time.perf_counter(), 0
        while chunk := resp.read(65536):
            size += len(chunk)
        return size, time.perf_counter() - started

    with ThreadPoolExecutor(4) as pool:
        drained = list(pool.map(drain, responses))
    sizes, drain_s = [s for s, _ in drained], [round(t, 2) for _, t in drained]
    out.put(("exports", {"fifth": fifth, "sizes": sizes, "drain_s": drain_s}))


# ------------------------------------------------------------------ the prober (a thread here)
class Sampler(threading.Thread):
    """Takes ``sample()`` every ``every_s`` until ``stopping`` is set; keeps what it returns (None: nothing)."""

    def __init__(self, url: str, every_s: float, name: str) -> None:
        super().__init__(daemon=True, name=name)
        self.url, self.every_s, self.samples, self.stopping = url, every_s, [], threading.Event()

    def sample(self) -> Any:
        raise NotImplementedError

    def run(self) -> None:
        while not self.stopping.is_set():
            taken = self.sample()
            if taken is not None:
                self.samples.append(taken)
            self.stopping.wait(self.every_s)


class HealthProber(Sampler):
    """GET /healthz every HEALTH_EVERY_S; keeps (asked_at, seconds, status)."""

    def __init__(self, url: str) -> None:
        super().__init__(url + "/healthz", HEALTH_EVERY_S, "healthz")

    def sample(self) -> tuple[float, float, int]:
        asked, started = time.time(), time.perf_counter()
        try:
            with urllib.request.urlopen(self.url, timeout=30) as resp:
                status = resp.status
        except urllib.error.HTTPError as exc:
            status = exc.code
        except OSError:
            status = 0
        return asked, time.perf_counter() - started, status


# ------------------------------------------------------------------ helpers
def fill_ended_session(url: str, frames: int) -> str:
    """A long session sent through the server as a car would (1,000-frame batches), then ended."""
    import random

    async def main() -> str:
        async with _http_session() as http:
            client = LeanClient(http, url, MONITOR_NS)
            await client.connect({"car_id": "LONG-1", "api_key": API_KEY}, compress=False)
            ack = await client.call("session.start", {"name": "long"})
            session_id, rng = ack["session"]["session_id"], random.Random(2)
            t0 = time.time() - frames / 25 - 60
            for start in range(0, frames, 1000):
                batch = [make_frame(s, rng) for s in range(start, min(frames, start + 1000))]
                for frame in batch:
                    frame["t"] = t0 + frame["seq"] / 25
                ack = await client.call("telemetry", {"session_id": session_id, "frames": batch}, timeout=60)
                if not ack.get("ok"):
                    raise RuntimeError(f"filling: {ack}")
            ack = await client.call("session.end", {"session_id": session_id})
            if not ack.get("ok"):
                raise RuntimeError(f"ending: {ack}")
            await client.close()
            return session_id

    return asyncio.run(main())


def quantiles(values: list[float]) -> dict[str, float | None]:
    """p50, p99 and max in milliseconds (None when empty)."""
    if not values:
        return {"p50": None, "p99": None, "max": None}
    ordered = sorted(values)
    pick = lambda q: round(ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000, 1)  # noqa: E731
    return {"p50": pick(0.5), "p99": pick(0.99), "max": round(ordered[-1] * 1000, 1)}


def summarise(name: str, start: float, end: float, emits: list[tuple], health: list[tuple],
              extra: dict[str, Any]) -> dict[str, Any]:
    """The figures of one phase: the car's emits sent and the health checks asked within [start, end]."""
    mine = [e for e in emits if start <= e[0] <= end]
    probes = [h for h in health if start <= h[0] <= end]
    codes: dict[str, int] = {}
    for _asked, _took, status in probes:
        codes[str(status)] = codes.get(str(status), 0) + 1
    return {"phase": name, "seconds": round(end - start, 1), "emits": len(mine),
            "ack_ms": quantiles([e[1] for e in mine]), "unavailable": sum(1 for e in mine if e[3] == "unavailable"),
            "errors": sorted({e[3] for e in mine if e[3] not in (None, "unavailable")}),
            "healthz": len(probes), "healthz_ms": quantiles([h[1] for h in probes]), "healthz_codes": codes, **extra}


def _get(out: Any, kind: str, timeout: float) -> Any:
    got_kind, value = out.get(timeout=timeout)
    if got_kind != kind:
        raise RuntimeError(f"expected {kind}, got {got_kind}: {value!r:.300}")
    return value


# ------------------------------------------------------------------ main
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lock-s", type=float, default=10.0, help="how long the external lock is held")
    parser.add_argument("--viewers", type=int, default=200, help="viewers joining at once in the storm")
    parser.add_argument("--export-frames", type=int, default=196_000, help="frames in the exported session")
    parser.add_argument("--quiet-s", type=float, default=5.0, help="length of the reference phase")
    parser.add_argument("--out", type=Path, help="JSON results (default bench/results/<date>-stalls.json)")
    args = parser.parse_args()

    ctx = mp.get_context("spawn")
    server = Server("ours", connection_caps=True).start()
    phases: list[dict[str, Any]] = []
    try:
        print(f"filling an ended session of {args.export_frames:,} frames ...", flush=True)
        long_id = fill_ended_session(server.url, args.export_frames)
        out, stop = ctx.Queue(), ctx.Event()
        car = ctx.Process(target=car_process, args=(server.url, stop, out), daemon=True)
        car.start()
        car_session = _get(out, "session", 60)
        prober = HealthProber(server.url)
        prober.start()
        marks: list[tuple[str, float, float, dict[str, Any]]] = []

        time.sleep(1.0)  # the car under way
        t = time.time()
        time.sleep(args.quiet_s)
        marks.append(("quiet", t, time.time(), {}))

        print("exports ...", flush=True)
        t = time.time()
        exporter = ctx.Process(target=exports_process,
                               args=(f"{server.url}/api/v1/sessions/{long_id}/export?format=csv", out), daemon=True)
        exporter.start()
        exported = _get(out, "exports", 600)
        exporter.join(10)
        marks.append(("exports", t, time.time(), exported))

        print(f"lock for {args.lock_s:g} s ...", flush=True)
        db = server.tmp / "instance" / "dashboard.db"
        lock = sqlite3.connect(db, timeout=10, isolation_level=None)
        lock.execute("BEGIN EXCLUSIVE")
        t = time.time()
        time.sleep(args.lock_s)
        lock.execute("COMMIT")
        lock.close()
        released = time.time()
        time.sleep(2.0)  # the resends land
        marks.append(("lock", t, released, {"lock_s": args.lock_s}))
        marks.append(("after lock", released, time.time(), {}))

        print(f"storm of {args.viewers} viewers ...", flush=True)
        go = ctx.Event()
        storm = ctx.Process(target=storm_process, args=(server.url, car_session, args.viewers, go, out), daemon=True)
        storm.start()
        _get(out, "ready", 120)
        time.sleep(1.0)
        go.set()
        joined = _get(out, "joined", 180)
        storm.join(30)
        joins = joined["joins"]
        marks.append(("storm", joined["started"], joined["ended"], {
            "viewers": len(joins), "joined_ok": sum(1 for j in joins if j[2]),
            "join_ms": quantiles([j[0] for j in joins]),
            "snapshot_recent_max": max((j[1] for j in joins), default=0)}))

        stop.set()
        emits = _get(out, "emits", 60)
        car.join(10)
        prober.stopping.set()
        prober.join(35)
        phases = [summarise(name, start, end, emits, prober.samples, extra) for name, start, end, extra in marks]
    finally:
        server.stop()

    print()
    print(f"{'phase':<11} {'s':>5} {'emits':>6} {'ack p50':>8} {'p99':>7} {'max':>7} {'unavail':>8} "
          f"{'hz n':>5} {'hz p50':>7} {'p99':>7} {'max':>7}  codes")
    for p in phases:
        a, h = p["ack_ms"], p["healthz_ms"]
        print(f"{p['phase']:<11} {p['seconds']:>5} {p['emits']:>6} {a['p50']!s:>8} {a['p99']!s:>7} {a['max']!s:>7} "
              f"{p['unavailable']:>8} {p['healthz']:>5} {h['p50']!s:>7} {h['p99']!s:>7} {h['max']!s:>7}  "
              f"{p['healthz_codes']}")
    for p in phases:
        if p["phase"] == "exports":
            print(f"exports: 4 x {min(p['sizes']) / 1e6:.1f} MB, each drained in {max(p['drain_s']):.1f} s at most; "
                  f"a fifth at once: {p['fifth']}")
        if p["phase"] == "storm":
            print(f"storm: {p['joined_ok']}/{p['viewers']} joined, join ack p50/p99/max {p['join_ms']['p50']}/"
                  f"{p['join_ms']['p99']}/{p['join_ms']['max']} ms, at most {p['snapshot_recent_max']} recent frames")
    worst = max((p["ack_ms"]["max"] or 0) for p in phases)
    print(f"worst car ack in any phase: {worst} ms (bound {BOUND_MS:g} ms)")
    target = args.out or BENCH / "results" / f"{time.strftime('%Y-%m-%d')}-stalls.json"
    target.write_text(json.dumps({"argv": vars(args) | {"out": str(args.out)}, "phases": phases}, indent=1))
    print(f"results: {target}")


if __name__ == "__main__":
    main()
