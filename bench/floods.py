"""bench.floods: connection floods at the issue's sizes against a server on its default caps.

One real server (SQLite in a temporary folder, default settings: max_connections 2,000, 250 per address,
headers within 10 s, a namespace within 10 s, WebSocket only), one car streaming 10-frame ``telemetry``
emits 20 times a second from its own process, and a prober asking ``/healthz`` every 100 ms on a new
connection each time. Then, one after the other, each flood from processes of their own (bench/flooders.py,
spread over ``--sources`` loopback addresses so the total cap is what binds):

- ``websocket``: 9,000 idle viewers (connected to ``/dashboard``, answering pings);
- ``slowloris``: 3,000 clients sending a header byte a second, never finishing;
- ``tcp``: 20,000 bare TCP connections that never send a byte;
- ``polling``: 20,000 Engine.IO long-polling handshakes;
- ``unauthenticated``: 3,000 WebSockets that open Engine.IO and never connect to a namespace.

Each flood is held ``--hold-s`` seconds after its last connection was tried, then closed. Per flood it prints:
connections the server held at peak (``dashboard_connections_open``, scraped every 0.25 s: a scrape over the cap
goes through the health reserve), refused by reason, the server's RSS before, at peak and after (once the count
is back and a few seconds passed, and again ``RELEASE_S`` + 3 s after the flood closed: Engine.IO keeps a closed
connection's socket up to its ping interval, then the server trims), /healthz's worst answer time and its codes,
and the car's ack p50/p99/max during the flood. Results go to ``bench/results/<date>-floods.json``.

    python -m bench.floods [--floods websocket,tcp] [--scale 0.1] [--hold-s 12] [--sources 100] [--out FILE]
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import re
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench.flooders import flood_process, source_address
from bench.servers import BENCH, Server
from bench.stalls import HealthProber, Sampler, _get, car_process, quantiles
from dashboard.server.connections import RELEASE_S

SIZES = {"websocket": 9_000, "slowloris": 3_000, "tcp": 20_000, "polling": 20_000, "unauthenticated": 3_000}
PER_PROCESS = 5_000  # connections per flood process: its own descriptors, and its share of the generator's CPU
SCRAPE_EVERY_S = 0.25
SETTLE_S = 3.0  # after the count is back: the sweeper's trim and the allocator settle
BACK_TIMEOUT_S = 60.0


class Scraper(Sampler):
    """Reads the server's connection series every SCRAPE_EVERY_S; keeps (time, {name: value})."""

    def __init__(self, url: str) -> None:
        super().__init__(url + "/metrics", SCRAPE_EVERY_S, "scraper")

    def sample(self) -> tuple[float, dict[str, float]] | None:
        try:
            return time.time(), scrape(self.url)
        except OSError:
            return None


def scrape(metrics_url: str) -> dict[str, float]:
    with urllib.request.urlopen(metrics_url, timeout=5) as resp:
        text = resp.read().decode()
    return {name: float(value) for name, value in re.findall(r"^(dashboard_\S+) (\S+)$", text, re.M)}


def scrape_retrying(metrics_url: str, timeout: float = 10.0) -> dict[str, float]:
    """A scrape that may meet a full reserve (a flood's silent sockets hold it up to a second)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return scrape(metrics_url)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


REFUSED = re.compile(r'dashboard_connections_refused_total\{reason="(\w+)"\}')


def refusals(sample: dict[str, float]) -> dict[str, float]:
    """Refused connections by reason, from one scrape."""
    return {m.group(1): v for k, v in sample.items() if (m := REFUSED.match(k))}


def run_flood(ctx: Any, server: Server, kind: str, count: int, sources: int, hold_s: float) -> dict[str, Any]:
    """One flood from ceil(count / PER_PROCESS) processes; the server's and the flooders' figures."""
    metrics_url = server.url + "/metrics"
    before = scrape_retrying(metrics_url)
    rss_before = server.rss()
    server.rss_peak = rss_before
    processes = -(-count // PER_PROCESS)
    addresses = [source_address(i) for i in range(sources)]
    stop, out = ctx.Event(), ctx.Queue()
    procs, events = [], []
    for p in range(processes):
        share = count // processes + (1 if p < count % processes else 0)
        mine = addresses[p::processes] or addresses
        events.append(ctx.Event())  # kept: an event the parent dropped cannot be opened by the child
        proc = ctx.Process(target=flood_process, args=(kind, "127.0.0.1", server.port, share, mine, events[-1],
                                                       stop, out), daemon=True)
        proc.start()
        procs.append(proc)
    started = time.time()
    ready = [_get(out, "ready", 300) for _ in procs]
    tried_s = time.time() - started
    time.sleep(hold_s)
    held_until = time.time()
    stop.set()
    done = [_get(out, "done", 120) for _ in procs]
    for proc in procs:
        proc.join(10)
    closed_at = time.time()
    deadline = time.monotonic() + BACK_TIMEOUT_S
    while scrape_retrying(metrics_url)["dashboard_connections_open"] > before["dashboard_connections_open"]:
        if time.monotonic() > deadline:
            break
        time.sleep(0.25)
    back_s = time.time() - closed_at
    time.sleep(SETTLE_S)
    rss_after = server.rss()
    time.sleep(max(0.0, closed_at + RELEASE_S + SETTLE_S - time.time()))  # Engine.IO let go; the trim ran
    after = scrape_retrying(metrics_url)
    refused_by = {reason: after_v - refusals(before).get(reason, 0.0)
                  for reason, after_v in refusals(after).items()}
    return {"flood": kind, "connections": count, "processes": processes, "sources": sources,
            "started": started, "held_until": held_until, "tried_s": round(tried_s, 1),
            "client_held": sum(r["held"] for r in ready), "client_refused": sum(r["refused"] for r in ready),
            "client_errors": sum(r["errors"] for r in ready),
            "answered": _merge([r["answered"] for r in ready]),
            "closed_by_server": sum(d["closed_by_server"] for d in done),
            "held_s_max": round(max((s for d in done for s in d["held_s"]), default=0.0), 1),
            "refused": {k: int(v) for k, v in refused_by.items()},
            "idle_closed": int(after.get("dashboard_connections_idle_closed_total", 0)
                               - before.get("dashboard_connections_idle_closed_total", 0)),
            "memory_trims": int(after.get("dashboard_memory_trims_total", 0)
                                - before.get("dashboard_memory_trims_total", 0)),
            "count_back_s": round(back_s, 1),
            "rss_mb": {"before": round(rss_before / 2**20, 1), "peak": round(server.rss_peak / 2**20, 1),
                       "after": round(rss_after / 2**20, 1), "after_release": round(server.rss() / 2**20, 1)}}


def _merge(dicts: list[dict[str, int]]) -> dict[str, int]:
    merged: dict[str, int] = {}
    for d in dicts:
        for k, v in d.items():
            merged[k] = merged.get(k, 0) + v
    return merged


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--floods", default=",".join(SIZES), help="which floods, in order (comma-separated)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every flood's size (a quick run: 0.1)")
    parser.add_argument("--hold-s", type=float, default=12.0, help="how long each flood is held once tried "
                        "(past the 10 s header and namespace deadlines)")
    parser.add_argument("--sources", type=int, default=100, help="loopback source addresses of the floods")
    parser.add_argument("--out", type=Path, help="JSON results (default bench/results/<date>-floods.json)")
    args = parser.parse_args()

    ctx = mp.get_context("spawn")
    server = Server("ours", connection_caps=True).start()
    results: list[dict[str, Any]] = []
    try:
        out, stop = ctx.Queue(), ctx.Event()
        car = ctx.Process(target=car_process, args=(server.url, stop, out), daemon=True)
        car.start()
        _get(out, "session", 60)
        prober, scraper = HealthProber(server.url), Scraper(server.url)
        prober.start()
        scraper.start()
        time.sleep(2.0)  # the car under way
        for kind in args.floods.split(","):
            count = max(1, int(SIZES[kind] * args.scale))
            print(f"{kind}: {count:,} connections ...", flush=True)
            results.append(run_flood(ctx, server, kind, count, args.sources, args.hold_s))
            time.sleep(1.0)
        stop.set()
        emits = _get(out, "emits", 60)
        car.join(10)
        prober.stopping.set()
        scraper.stopping.set()
        prober.join(35)
        scraper.join(10)
    finally:
        server.stop()

    for r in results:
        start, end = r["started"], r["held_until"]
        mine = [e for e in emits if start <= e[0] <= end]
        probes = [h for h in prober.samples if start <= h[0] <= end]
        opened = [s["dashboard_connections_open"] - 1 for t, s in scraper.samples if start <= t <= end + 1]
        codes: dict[str, int] = {}
        for _asked, _took, status in probes:
            codes[str(status)] = codes.get(str(status), 0) + 1
        r.update({"held_peak": int(max(opened, default=0)), "emits": len(mine),
                  "ack_ms": quantiles([e[1] for e in mine]),
                  "ack_failed": sum(1 for e in mine if not e[2]),
                  "healthz": len(probes), "healthz_ms": quantiles([h[1] for h in probes]), "healthz_codes": codes})

    print()
    print(f"{'flood':<16} {'conns':>7} {'held':>6} {'refused (reason)':<34} {'RSS MB bef/peak/aft/33s':<27} "
          f"{'hz max ms':>9} {'hz codes':<18} {'ack p50/p99/max ms':<20}")
    for r in results:
        refused = ", ".join(f"{k} {v}" for k, v in r["refused"].items() if v)
        rss, a = r["rss_mb"], r["ack_ms"]
        print(f"{r['flood']:<16} {r['connections']:>7,} {r['held_peak']:>6} {refused:<34} "
              f"{rss['before']:>5}/{rss['peak']:>5}/{rss['after']:>5}/{rss['after_release']:>5} "
              f"{r['healthz_ms']['max']!s:>9} "
              f"{json.dumps(r['healthz_codes']):<18} {a['p50']}/{a['p99']}/{a['max']}")
    for r in results:
        print(f"{r['flood']}: tried in {r['tried_s']} s; the flooders saw {r['client_held']} held, "
              f"{r['client_refused']} refused, {r['client_errors']} failed to connect, answers {r['answered']}; "
              f"{r['closed_by_server']} closed by the server (held at most {r['held_s_max']} s); count back "
              f"{r['count_back_s']} s after the flood closed; {r['memory_trims']} memory trims")
    target = args.out or BENCH / "results" / f"{time.strftime('%Y-%m-%d')}-floods.json"
    target.write_text(json.dumps({"argv": vars(args) | {"out": str(args.out)}, "floods": results}, indent=1))
    print(f"results: {target}")


if __name__ == "__main__":
    main()
