"""Run the benchmark: our server and the Node socket.io relay under the same load, side by side.

    python -m bench.run [--quick] [--scenario N ...] [--soak] [--servers ours,node] [--no-deflate]
    python -m bench.run --scenario 5      # scale-out: 1 vs 2 processes over Redis + PostgreSQL

Each scenario point starts a fresh server, opens its viewers (joined before any
frame is sent), starts the monitors on one signal, waits for the last delivery,
and stops the server. See bench/README.md for what every figure means.
"""
from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import platform
import queue
import re
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.load import Histogram, monitor_process, viewer_process
from bench.servers import API_KEY, BENCH, NODE_RELAY, PG_ADMIN_URL, REDIS_URL, Cluster, Server

RESULTS = BENCH / "results"
VIEWERS_PER_PROCESS = 250  # python-socketio AsyncClients one viewer process carries
MAX_VIEWER_PROCESSES = 4
QUIET_CORES = 0.3  # before each point, wait for the machine's other work to fall below this...
QUIET_PATIENCE_S = 60.0  # ...for at most this long (then measure anyway; "other" in the table shows it)
DRAIN_STALL_S = 3.0  # deliveries still missing after this long without progress are counted lost
DRAIN_MAX_S = 60.0
READY_TIMEOUT_S = 180.0
# configurations of our server: (processes, Redis message queue). Scenarios 1-4 run "ours" on SQLite;
# scenario 5 runs all three on PostgreSQL. Monitors connect to the first process, viewers split evenly.
VARIANTS = {"ours": (1, False), "ours_redis": (1, True), "ours_2p": (2, True)}
VARIANT_NAMES = {"ours": "ours 1p", "ours_redis": "1p+redis", "ours_2p": "ours 2p"}


@dataclass
class Point:
    """One measured configuration of a scenario."""

    scenario: str
    label: str
    cars: int
    rate_hz: float | None  # None: as fast as acks allow
    batch: int  # frames per emit: the most at a rate, exactly this many at full speed
    viewers_per_car: int
    duration_s: float
    monitor_procs: int = 1
    rss_every_s: float = 0.0  # soak: keep an RSS timeline at this interval
    deflate: bool | None = None  # viewers offer permessage-deflate; None: as the command line says
    database: str = "sqlite"  # "postgres": ours runs as a Cluster on a throwaway PostgreSQL database
    variants: tuple[str, ...] = ("ours",)  # which configurations of ours (VARIANTS) this point measures

    @property
    def viewers(self) -> int:
        return self.cars * self.viewers_per_car


def scenarios(quick: bool, soak: bool, chosen: set[str], viewers: set[int] | None = None) -> list[Point]:
    """The scenario points of this run."""
    d1, d2, d3 = (6.0, 8.0, 5.0) if quick else (20.0, 30.0, 15.0)
    points: list[Point] = []
    for m in ((10, 100, 500) if quick else (10, 100, 200, 500, 1000)):
        if viewers and m not in viewers:
            continue
        points.append(Point("1", f"1 car x 50 Hz -> {m} viewers", 1, 50.0, 50, m, d1))
    if not viewers or 500 in viewers:  # what declining compression would change
        points.append(Point("1", "1 car x 50 Hz -> 500 viewers, no deflate offered", 1, 50.0, 50, 500, d1,
                            deflate=False))
    points.append(Point("2", "20 cars x 20 Hz x 10 viewers", 20, 20.0, 50, 10, d2))
    points.append(Point("2", "200 cars x 10 Hz x 2 viewers (a whole series on one process)", 200, 10.0, 50, 2, d2,
                        monitor_procs=2))
    for b in (1, 10, 50):
        points.append(Point("3", f"max ingest, 8 monitors, {b} frame(s)/emit", 8, None, b, 0, d3, monitor_procs=2))
    if soak:
        points.append(Point("4", "soak: 20 cars x 20 Hz x 10 viewers, 10 min", 20, 20.0, 50, 10, 600.0,
                            rss_every_s=10.0))
    if "5" in chosen:  # scale-out, only when asked for: it needs Redis and a PostgreSQL server
        points.append(Point("5", "1 car x 50 Hz -> 1000 viewers, PostgreSQL; 1 process / 1 + Redis / 2 over Redis",
                            1, 50.0, 50, 1000, 6.0 if quick else 20.0, database="postgres",
                            variants=("ours", "ours_redis", "ours_2p")))
    return [p for p in points if not chosen or p.scenario in chosen]


# ---------------------------------------------------------------- one point
def _get(q: Any, timeout: float, what: str) -> tuple[str, Any]:
    try:
        kind, payload = q.get(timeout=timeout)
    except queue.Empty:
        raise RuntimeError(f"timed out waiting for {what}") from None
    if kind == "error":
        raise RuntimeError(payload)
    return kind, payload


def run_point(kind: str, point: Point, deflate: bool, client: str = "lean",
              profile: Path | None = None, pg_admin_url: str = PG_ADMIN_URL,
              redis_url: str = REDIS_URL) -> dict[str, Any]:
    """Measure one point against one server (``kind``: node or a VARIANTS key); the figures as a dict."""
    ctx = mp.get_context("spawn")
    if kind != "node" and point.database == "postgres":
        processes, use_queue = VARIANTS[kind]
        server: Any = Cluster(processes, use_queue, pg_admin_url, redis_url).start()
    else:
        server = Server("ours" if kind in VARIANTS else kind).start()
    urls = getattr(server, "urls", [server.url])
    backing = getattr(server, "backing", None)
    procs: list[Any] = []
    go, stop = ctx.Event(), ctx.Event()
    out = ctx.Queue()
    try:
        # monitors connect and start their sessions first: the viewers need the session ids
        cars = [f"CAR{i:03d}" for i in range(point.cars)]
        groups = [cars[i::point.monitor_procs] for i in range(point.monitor_procs)]
        for group in groups:
            p = ctx.Process(target=monitor_process, daemon=True, args=(
                server.url, API_KEY, group, point.rate_hz, point.batch, point.duration_s, client, go, out))
            p.start()
            procs.append(p)
        sessions: dict[str, str] = {}
        for _ in groups:
            sessions.update(_get(out, READY_TIMEOUT_S, "monitor sessions")[1])
        rss_before_viewers = server.rss()

        # viewers: all joined before the first frame
        viewer_sessions = [sessions[c] for c in cars for _ in range(point.viewers_per_car)]
        n_procs = min(MAX_VIEWER_PROCESSES, math.ceil(len(viewer_sessions) / VIEWERS_PER_PROCESS))
        if point.viewers:  # an equal number of viewer processes per server process: viewers split evenly
            n_procs = math.ceil(n_procs / len(urls)) * len(urls)
        counters = []
        viewers_by_server = [0] * len(urls)
        for i in range(n_procs):
            counter = ctx.Value("q", 0, lock=False)
            counters.append(counter)
            viewers_by_server[i % len(urls)] += len(viewer_sessions[i::n_procs])
            p = ctx.Process(target=viewer_process, daemon=True, args=(
                urls[i % len(urls)], viewer_sessions[i::n_procs], deflate, client, stop, counter, out))
            p.start()
            procs.append(p)
        negotiated = {"offered": deflate, "accepted": 0, "declined": 0}
        joined = failed = 0
        for _ in range(n_procs):
            info = _get(out, READY_TIMEOUT_S, "viewers to join")[1]
            joined, failed = joined + info["joined"], failed + info["failed"]
            negotiated["accepted"] += info["accepted"]
            negotiated["declined"] += info["declined"]
        time.sleep(0.5)  # let the joins' snapshots settle before the baseline
        rss_with_viewers = server.rss()

        # the measured window: from go until the last monitor has its last ack
        if backing is not None:
            backing.start()
        by_process0 = server.cpu_by_process() if hasattr(server, "cpu_by_process") else None
        busy0, soft0, others0 = _busy_seconds(), _softirq_seconds(), _cpu_by_process()
        cpu0, t0 = server.cpu_seconds(), time.time()
        go.set()
        spy = _profile(server, point, profile) if profile and kind == "ours" else None
        monitor_reports = []
        rss_timeline: list[tuple[float, int]] = []
        next_rss = t0
        while len(monitor_reports) < len(groups):
            if point.rss_every_s and time.time() >= next_rss:
                rss_timeline.append((round(time.time() - t0, 1), server.rss()))
                next_rss += point.rss_every_s
            try:
                kind_, payload = out.get(timeout=0.2)
            except queue.Empty:
                if any(p.exitcode not in (None, 0) for p in procs):
                    raise RuntimeError("a load process died") from None
                continue
            if kind_ == "error":
                raise RuntimeError(payload)
            monitor_reports.append(payload)
        cpu1, t1 = server.cpu_seconds(), time.time()
        busy1, soft1, others1 = _busy_seconds(), _softirq_seconds(), _cpu_by_process()
        window = t1 - t0
        by_process1 = server.cpu_by_process() if by_process0 is not None else None
        backing_cpu = backing.cpu_seconds() if backing is not None else {}

        acked_by_session: dict[str, int] = {}
        ack_hist = Histogram()
        frames_sent = frames_acked = emits = errors = 0
        for report in monitor_reports:
            for car in report["cars"]:
                acked_by_session[car["session_id"]] = car["acked"]
                frames_sent += car["sent"]
                frames_acked += car["acked"]
                emits += car["emits"]
                errors += car["errors"] + car["rejected"]
                ack_hist.merge(Histogram.from_sparse(*car["ack_hist"]))
        expected = sum(acked_by_session[s] for s in viewer_sessions)

        # drain: wait for the deliveries still on their way
        last, last_change = -1, time.time()
        while time.time() - t1 < DRAIN_MAX_S:
            got = sum(c.value for c in counters)
            if got >= expected:
                break
            if got != last:
                last, last_change = got, time.time()
            elif time.time() - last_change > DRAIN_STALL_S:
                break
            time.sleep(0.05)
        drain_s = time.time() - t1
        stop.set()
        hist = Histogram()
        received = duplicates = out_of_order = messages = 0
        viewer_cpu = 0.0
        worst: dict[int, float] = {}
        for _ in range(n_procs):
            info = _get(out, 60, "viewer results")[1]
            received += info["received"]
            messages += info["messages"]
            duplicates += info["duplicates"]
            out_of_order += info["out_of_order"]
            viewer_cpu += info["cpu_s"]
            for second, latency in info["worst_by_second"].items():
                worst[second] = max(latency, worst.get(second, 0.0))
            hist.merge(Histogram.from_sparse(*info["hist"]))
        monitor_cpu = sum(r["cpu_s"] for r in monitor_reports)
        if spy is not None:
            spy.wait(30)
        stored = server.frames_stored()
        per_commit = server.frames_per_commit() if hasattr(server, "frames_per_commit") else None
        rss_peak = max(server.rss_hwm(), server.rss_peak)
    finally:
        go.set()
        stop.set()
        for p in procs:
            p.join(10)
            if p.is_alive():
                p.kill()
                p.join(5)
        server.stop()

    ms = lambda s: None if s is None else round(s * 1000, 1)  # noqa: E731
    result = {
        "frames_in": frames_acked,
        "frames_in_per_s": round(frames_acked / window, 1),
        "emits_per_s": round(emits / window, 1),
        "send_errors": errors,
        "frames_stored": stored,
        "frames_per_commit": per_commit,
        "deliveries_expected": expected,
        "deliveries": received,
        "deliveries_per_s": round(received / window, 1),
        "messages_to_viewers_per_s": round(messages / window, 1),
        "frames_per_message": round(received / messages, 2) if messages else None,
        "loss": expected - received,
        "duplicates": duplicates,
        "out_of_order": out_of_order,
        "latency_p50_ms": ms(hist.quantile(0.50)),
        "latency_p99_ms": ms(hist.quantile(0.99)),
        "latency_max_ms": ms(hist.max) if hist.count else None,
        "ack_p50_ms": ms(ack_hist.quantile(0.50)),
        "ack_p99_ms": ms(ack_hist.quantile(0.99)),
        "server_cpu_cores": round((cpu1 - cpu0) / window, 3),
        "server_rss_peak_mb": round(rss_peak / 2**20, 1),
        "server_rss_per_viewer_kb": (round((rss_with_viewers - rss_before_viewers) / 1024 / point.viewers, 1)
                                     if point.viewers else None),
        "generator_cpu_cores": round((monitor_cpu + viewer_cpu) / window, 3),
        "monitor_cpu_cores": round(monitor_cpu / window, 3),
        "viewer_cpu_cores": round(viewer_cpu / window, 3),
        "machine_busy_cores": round((busy1 - busy0) / window, 3),
        "other_cpu_cores": round(((busy1 - busy0) - (cpu1 - cpu0) - monitor_cpu - viewer_cpu
                                  - sum(v or 0.0 for v in backing_cpu.values())) / window, 3),
        "softirq_cores": round((soft1 - soft0) / window, 3),  # kernel network work; part of "other"
        "other_top_processes": _top_others(others0, others1, window, server, procs),
        "viewer_processes": n_procs,
        "viewers_joined": joined,
        "viewers_failed": failed,
        "deflate": negotiated,
        "window_s": round(window, 2),
        "drain_s": round(drain_s, 2),
    }
    result["latency_max_by_second_ms"] = [round(worst[s] * 1000) for s in sorted(worst)]
    if point.database == "postgres" and kind != "node":
        result["server_processes"] = len(urls)
        result["message_queue"] = bool(getattr(server, "redis_url", None))
        result["viewers_by_server"] = viewers_by_server
        result["server_cpu_cores_by_process"] = [round((b - a) / window, 3)
                                                 for a, b in zip(by_process0, by_process1, strict=True)]
        for name, cpu in backing_cpu.items():  # not in "other": Redis and this database's PG backends
            result[f"{name}_cpu_cores"] = None if cpu is None else round(cpu / window, 3)
        result["backing_cpu_cores"] = round(sum(v or 0.0 for v in backing_cpu.values()) / window, 3)
        result["deliveries_per_server_core_s"] = (round(result["deliveries_per_s"] / result["server_cpu_cores"])
                                                  if result["server_cpu_cores"] else None)
    if rss_timeline:
        result["rss_timeline_mb"] = [(t, round(r / 2**20, 1)) for t, r in rss_timeline]
        result["rss_growth_pct"] = soak_growth(rss_timeline)
    return result


def _profile(server: Server, point: Point, folder: Path) -> subprocess.Popen:
    """py-spy on our server over the sending window: a flame graph and a raw (collapsed) profile."""
    folder.mkdir(parents=True, exist_ok=True)
    name = re.sub(r"[^A-Za-z0-9]+", "_", f"{point.scenario} {point.label}").strip("_")
    cmd = ["py-spy", "record", "--pid", str(server.ps.pid), "--duration", str(max(1, int(point.duration_s) - 1)),
           "--rate", "200", "--nonblocking", "--threads", "--format", "raw", "--output", str(folder / f"{name}.txt")]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_quiet(limit_cores: float = QUIET_CORES, patience_s: float = QUIET_PATIENCE_S) -> float:
    """Wait (up to ``patience_s``) until other work on the machine uses under ``limit_cores``; return its load."""
    deadline = time.time() + patience_s
    while True:
        b0, t0 = _busy_seconds(), time.time()
        time.sleep(1.0)
        load = (_busy_seconds() - b0) / (time.time() - t0)
        if load < limit_cores or time.time() > deadline:
            return round(load, 2)
        print(f"  machine busy ({load:.2f} cores used by other work), waiting...", flush=True)


def _busy_seconds() -> float:
    """CPU seconds the whole machine spent not idle so far."""
    import psutil

    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


def _softirq_seconds() -> float:
    import psutil

    return getattr(psutil.cpu_times(), "softirq", 0.0)


def _cpu_by_process() -> dict[int, tuple[str, float]]:
    """CPU seconds of every process on the machine now: pid -> (command line, seconds)."""
    import psutil

    out = {}
    for p in psutil.process_iter(["cmdline", "name", "cpu_times"]):
        t = p.info["cpu_times"]
        if t is not None:
            cmd = " ".join(p.info["cmdline"] or []) or p.info["name"] or "?"
            out[p.pid] = (cmd[:90], t.user + t.system)
    return out


def _top_others(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]], window: float,
                server: Any, procs: list[Any]) -> list[tuple[str, float]]:
    """The five processes outside the run that used the most CPU in the window (what "other" was), cores."""
    import psutil

    ours = {os.getpid(), *(p.pid for p in procs if p.pid)}
    for s in getattr(server, "servers", [server]):
        if s.proc is not None:
            ours.add(s.proc.pid)
    for group in getattr(getattr(server, "backing", None), "procs", {}).values():
        ours.update(p.pid for p in group)
    try:
        ours.update(c.pid for c in psutil.Process().children(recursive=True))
    except psutil.Error:
        pass
    used = [(cmd, (cpu - before.get(pid, (cmd, 0.0))[1]) / window) for pid, (cmd, cpu) in after.items()
            if pid not in ours]
    return [(cmd, round(c, 3)) for cmd, c in sorted(used, key=lambda x: -x[1])[:5] if c >= 0.01]


def soak_growth(timeline: list[tuple[float, int]]) -> float | None:
    """RSS growth over the soak: mean of the last minute against the mean of the second minute."""
    early = [r for t, r in timeline if 60 <= t < 120]
    late = [r for t, r in timeline if t >= timeline[-1][0] - 60]
    if not early or not late:
        return None
    return round(100 * (sum(late) / len(late) - sum(early) / len(early)) / (sum(early) / len(early)), 2)


# ---------------------------------------------------------------- reporting
COLUMNS = (  # key, header, width
    ("frames_in_per_s", "in/s", 8), ("deliveries_per_s", "out/s", 8), ("loss", "loss", 6),
    ("latency_p50_ms", "p50 ms", 7), ("latency_p99_ms", "p99 ms", 7), ("latency_max_ms", "max ms", 7),
    ("ack_p99_ms", "ack99", 6), ("server_cpu_cores", "srv CPU", 7), ("server_rss_peak_mb", "RSS MB", 7),
    ("server_rss_per_viewer_kb", "KB/vwr", 7), ("generator_cpu_cores", "gen CPU", 7),
    ("other_cpu_cores", "other", 6),
)


def ratio(ours: Any, node: Any) -> float | None:
    """ours / node, 1.0 when both are zero, None when it means nothing."""
    if not isinstance(ours, (int, float)) or not isinstance(node, (int, float)):
        return None
    if node == 0:
        return 1.0 if ours == 0 else math.inf
    return round(ours / node, 2)


def _cell(value: Any, width: int) -> str:
    if value is None:
        text = "-"
    elif isinstance(value, float) and math.isinf(value):
        text = "inf"
    elif isinstance(value, float):
        text = f"{value:.2f}" if abs(value) < 10 else f"{value:.0f}"
    else:
        text = str(value)
    return text.rjust(width)


RATIO_NAMES = {"ours_redis/ours": "1p+redis/1p", "ours_2p/ours": "2p/1p", "ours_2p/node": "2p/node"}
SCALE_COLUMNS = (  # scenario 5 adds: telemetry messages to viewers/s; Redis + this database's PG backends, cores
    ("messages_to_viewers_per_s", "msg/s", 7), ("backing_cpu_cores", "rds+pg", 6),
)


def table(rows: list[dict[str, Any]]) -> str:
    """The terminal table: per point, ours (each configuration measured), node, ours/node and the scale-out ratios."""
    lines = []
    for row in rows:
        results, extra = row["results"], row.get("ratios") or {}
        columns = COLUMNS + (SCALE_COLUMNS if any("backing_cpu_cores" in r for r in results.values()) else ())
        label_w = 11 if extra or set(results) - {"ours", "node"} else 7
        head = "server".ljust(label_w) + "".join(h.rjust(w + 1) for _, h, w in columns) + "  deflate"
        lines += ["", f"[{row['scenario']}] {row['label']}", head]
        named = [(VARIANT_NAMES.get(k, k) if label_w > 7 else k, results[k]) for k in results]
        named += [("ours/node" if not extra else "1p/node", row.get("ratio"))]
        named += [(RATIO_NAMES.get(k, k), v) for k, v in extra.items()]
        for name, figures in named:
            if not figures or "error" in figures:
                if figures:
                    lines.append(name.ljust(label_w) + "  failed: " + figures["error"][:100])
                continue
            cells = "".join(" " + _cell(figures.get(k), w) for k, _, w in columns)
            deflate = figures.get("deflate")
            note = (f"  {deflate['accepted']}/{deflate['accepted'] + deflate['declined']} accepted"
                    if isinstance(deflate, dict) and deflate.get("offered") else "")
            if figures.get("rss_growth_pct") is not None:
                note += f"  RSS growth {figures['rss_growth_pct']}%"
            per_process = figures.get("server_cpu_cores_by_process")
            if isinstance(per_process, list) and len(per_process) > 1:
                note += "  srv CPU per process " + " + ".join(f"{c:.2f}" for c in per_process)
            lines.append(name.ljust(label_w) + cells + note)
    return "\n".join(lines)


def point_kinds(point: Point, selected: list[str]) -> list[str]:
    """The servers to measure at this point: "ours" means every configuration of ours the point has."""
    kinds: list[str] = []
    for k in selected:
        for kind in (point.variants if k == "ours" else (k,) if k == "node" or k in point.variants else ()):
            if kind not in kinds:
                kinds.append(kind)
    return kinds


def machine() -> dict[str, Any]:
    """What this ran on."""
    import psutil

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    versions = {}
    for dist in ("python-socketio", "python-engineio", "Flask-SocketIO", "simple-websocket", "gevent", "aiohttp",
                 "SQLAlchemy", "psutil"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    try:
        lock = json.loads((NODE_RELAY / "package-lock.json").read_text())
        versions["socket.io (npm)"] = lock["packages"]["node_modules/socket.io"]["version"]
        node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout.strip()
    except (OSError, KeyError, ValueError):
        node = None
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
            "os": platform.platform(), "python": platform.python_version(), "node": node, "versions": versions}


def main(argv: list[str] | None = None) -> int:
    """The ``python -m bench.run`` command line."""
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="short versions of scenarios 1-3 (a few minutes)")
    parser.add_argument("--scenario", action="append", default=[], choices=["1", "2", "3", "4", "5"],
                        help="run only this scenario (repeatable); 4 is the soak, 5 the scale-out over Redis + "
                             "PostgreSQL (only when named)")
    parser.add_argument("--soak", action="store_true", help="add scenario 4, the 10-minute soak of scenario 2")
    parser.add_argument("--servers", default="ours,node",
                        help="comma-separated: ours, node (default both); scenario 5 also takes ours_redis, ours_2p")
    parser.add_argument("--pg-url", default=PG_ADMIN_URL,
                        help="scenario 5: PostgreSQL server where a throwaway bench_<random> database is created "
                             "and dropped (default %(default)s)")
    parser.add_argument("--redis-url", default=REDIS_URL, help="scenario 5: the message queue (default %(default)s)")
    parser.add_argument("--no-deflate", action="store_true", help="viewers do not offer permessage-deflate")
    parser.add_argument("--client", default="lean", choices=["lean", "socketio"],
                        help="load clients: lean Socket.IO over aiohttp (default) or python-socketio's AsyncClient")
    parser.add_argument("--viewers", help="scenario 1: only these viewer counts, e.g. 500,1000")
    parser.add_argument("--profile", help="folder: py-spy record our server over each point's window (raw profiles)")
    parser.add_argument("--duration", type=float, help="override every point's duration, seconds")
    parser.add_argument("--out", help="results JSON path (default bench/results/<time>.json)")
    args = parser.parse_args(argv)

    kinds = [k.strip() for k in args.servers.split(",") if k.strip()]
    points = scenarios(args.quick, args.soak or "4" in args.scenario, set(args.scenario),
                       {int(v) for v in args.viewers.split(",")} if args.viewers else None)
    if args.duration:
        for p in points:
            p.duration_s = args.duration
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    command = " ".join(["python -m bench.run", *(argv if argv is not None else sys.argv[1:])])
    report: dict[str, Any] = {"started_at": started, "command": command, "machine": machine(),
                              "deflate_offered": not args.no_deflate, "client": args.client, "points": []}
    stamp = time.strftime("%Y%m%d-%H%M%S") + ("-quick" if args.quick else "")
    out_path = Path(args.out) if args.out else RESULTS / f"{stamp}.json"
    out_path.parent.mkdir(parents=True, exist_ok=True)
    for point in points:
        row = {"scenario": point.scenario, "label": point.label, "spec": asdict(point), "results": {}}
        for kind in point_kinds(point, kinds):
            print(f"[{point.scenario}] {point.label}: {kind} ...", flush=True)
            idle_load = wait_quiet()
            try:
                deflate = point.deflate if point.deflate is not None else not args.no_deflate
                row["results"][kind] = run_point(kind, point, deflate, args.client,
                                                 Path(args.profile) if args.profile else None,
                                                 args.pg_url, args.redis_url)
                row["results"][kind]["machine_load_before_cores"] = idle_load
            except Exception as exc:  # noqa: BLE001 - one failed point must not lose the others
                print(f"  failed: {exc}", flush=True)
                row["results"][kind] = {"error": str(exc)}
            r = row["results"][kind]
            if "error" not in r:
                print(f"  in {r['frames_in_per_s']}/s  out {r['deliveries_per_s']}/s  loss {r['loss']}  "
                      f"p99 {r['latency_p99_ms']} ms  server CPU {r['server_cpu_cores']}  "
                      f"gen CPU {r['generator_cpu_cores']}  other {r['other_cpu_cores']}", flush=True)
                if r["other_cpu_cores"] > QUIET_CORES:
                    print(f"  other: softirq {r['softirq_cores']}, top {r['other_top_processes'][:3]}", flush=True)
        ours, node = row["results"].get("ours", {}), row["results"].get("node", {})
        if "error" not in ours and "error" not in node and ours and node:
            row["ratio"] = {k: ratio(v, node.get(k)) for k, v in ours.items() if isinstance(v, (int, float))}
        ratios = {}  # scenario 5: how each configuration compares with one process, and two with Node
        for a, b in (("ours_redis", "ours"), ("ours_2p", "ours"), ("ours_2p", "node")):
            ra, rb = row["results"].get(a), row["results"].get(b)
            if ra and rb and "error" not in ra and "error" not in rb:
                ratios[f"{a}/{b}"] = {k: ratio(v, rb.get(k)) for k, v in ra.items() if isinstance(v, (int, float))}
        if ratios:
            row["ratios"] = ratios
        report["points"].append(row)
        out_path.write_text(json.dumps(report, indent=1) + "\n")  # written as it goes: a crash keeps the rest
    report["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    out_path.write_text(json.dumps(report, indent=1) + "\n")
    m = report["machine"]
    print(f"\n{m['cpu']}, {m['cores']} cores, Python {m['python']}, Node {m['node']}; "
          f"viewers {'offer' if not args.no_deflate else 'do not offer'} permessage-deflate")
    print(table(report["points"]))
    print(f"\nresults: {out_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
