"""The two servers under test, started by the bench itself, and what is measured on them.

``ours``: ``python -m dashboard serve`` on a free port, a throwaway instance folder
(SQLite, persistence on) and an API key. ``node``: ``bench/node_relay/relay.js``
(socket.io from the npm registry, installed by ``npm ci`` on first use).
A sampler thread reads the server's RSS every ``SAMPLE_EVERY_S``; CPU is the
difference of the process's cpu_times over a window.

Scenario 5 (scale-out): ``Cluster`` runs one or two ``dashboard serve`` processes on one
throwaway PostgreSQL database (``BenchDatabase``, created and dropped by the bench) and,
optionally, one Redis message queue; ``Backing`` measures the CPU of the Redis server and of
the PostgreSQL backends serving that database, which the machine's "other" would hide.
"""
from __future__ import annotations

import os
import re
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
NODE_RELAY = BENCH / "node_relay"
API_KEY = "bench-key"
SAMPLE_EVERY_S = 0.25
START_TIMEOUT_S = 60.0


def free_port() -> int:
    """A free loopback TCP port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_node_relay() -> None:
    """Install the relay's pinned socket.io into bench/node_relay/node_modules if it is not there."""
    if (NODE_RELAY / "node_modules" / "socket.io" / "package.json").exists():
        return
    print("installing the Node relay's dependencies (npm ci)...", flush=True)
    subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=NODE_RELAY, check=True)


class Server:
    """One running server process, with its RSS sampler."""

    def __init__(self, kind: str, env: dict[str, str] | None = None, connection_caps: bool = False) -> None:
        self.kind = kind
        self.env = env or {}  # extra DASHBOARD_* settings (ours): database URL, message queue
        # The load scenarios open up to 1,000 viewers from the one address 127.0.0.1: ours runs without its
        # per-address cap and with room for them, unless the bench measures the caps (bench.floods, bench.stalls)
        self.connection_caps = connection_caps
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.tmp = Path(tempfile.mkdtemp(prefix=f"bench-{kind}-"))
        self.log_path = self.tmp / "server.log"
        self.proc: subprocess.Popen | None = None
        self.ps: psutil.Process | None = None
        self.rss_peak = 0
        self.rss_samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._sampler: threading.Thread | None = None

    # -------------------------------------------------------------- lifecycle
    def start(self) -> "Server":
        """Start the process, wait until it answers, start sampling."""
        log = open(self.log_path, "wb")
        if self.kind == "ours":
            env = {**os.environ, "DASHBOARD_INSTANCE_PATH": str(self.tmp / "instance"),
                   "DASHBOARD_API_KEY": API_KEY, "DASHBOARD_LOG_LEVEL": "WARNING"}
            env.pop("DASHBOARD_DATABASE_URL", None)  # SQLite in the instance folder: persistence on...
            env.pop("DASHBOARD_MESSAGE_QUEUE", None)
            if not self.connection_caps:
                env.update({"DASHBOARD_MAX_CONNECTIONS_PER_ADDRESS": "0", "DASHBOARD_MAX_CONNECTIONS": "20000"})
            env.update(self.env)  # ...unless the scenario gives a database URL (PostgreSQL) or a queue
            cmd = [sys.executable, "-m", "dashboard", "serve", "--port", str(self.port)]
            self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
            ready_path = "/healthz"
        else:
            ensure_node_relay()
            cmd = ["node", "relay.js", str(self.port)]
            self.proc = subprocess.Popen(cmd, cwd=NODE_RELAY, stdout=log, stderr=subprocess.STDOUT)
            ready_path = "/socket.io/?EIO=4&transport=polling"
        self.ps = psutil.Process(self.proc.pid)
        deadline = time.time() + START_TIMEOUT_S
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind} server exited: {self.log_path.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(self.url + ready_path, timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.time() > deadline:
                raise RuntimeError(f"{self.kind} server did not answer in {START_TIMEOUT_S} s")
            time.sleep(0.1)
        self._sampler = threading.Thread(target=self._sample, name=f"rss-{self.kind}", daemon=True)
        self._sampler.start()
        return self

    def stop(self) -> None:
        """Stop the process (terminate, then kill) and remove its folder (safe to call twice)."""
        self._stop.set()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        shutil.rmtree(self.tmp, ignore_errors=True)

    # -------------------------------------------------------------- measures
    def _sample(self) -> None:
        while not self._stop.wait(SAMPLE_EVERY_S):
            try:
                rss = self.ps.memory_info().rss
            except psutil.Error:
                return
            self.rss_peak = max(self.rss_peak, rss)
            self.rss_samples.append((time.time(), rss))

    def rss(self) -> int:
        """Resident set size now, bytes."""
        rss = self.ps.memory_info().rss
        self.rss_peak = max(self.rss_peak, rss)
        return rss

    def rss_hwm(self) -> int:
        """The kernel's peak RSS of the process (VmHWM), bytes; the sampled peak if unreadable."""
        try:
            for line in Path(f"/proc/{self.ps.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            pass
        return self.rss_peak

    def cpu_seconds(self) -> float:
        """User + system CPU seconds of the process so far (all its threads)."""
        t = self.ps.cpu_times()
        return t.user + t.system

    def frames_per_commit(self) -> float | None:
        """Mean frames per database transaction of ours (from /metrics); None for the relay."""
        if self.kind != "ours":
            return None
        try:
            with urllib.request.urlopen(self.url + "/metrics", timeout=5) as resp:
                text = resp.read().decode()
        except OSError:
            return None
        found = {name: float(value) for name, value in re.findall(
            r"^dashboard_db_write_batch_frames_(sum|count) ([0-9.e+]+)$", text, re.M)}
        return round(found["sum"] / found["count"], 2) if found.get("count") else None

    def frames_stored(self) -> int | None:
        """Frames in our SQLite database (None for the relay, which stores nothing)."""
        if self.kind != "ours":
            return None
        if "DASHBOARD_DATABASE_URL" in self.env:
            return None  # PostgreSQL: the Cluster's BenchDatabase counts
        import sqlite3

        db = self.tmp / "instance" / "dashboard.db"
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as conn:
            return conn.execute("SELECT COUNT(*) FROM frames").fetchone()[0]


# ------------------------------------------------------------------ scenario 5: scale-out
PG_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS_URL = "redis://127.0.0.1:6379/0"


class BenchDatabase:
    """A throwaway PostgreSQL database ``bench_<random>`` on an existing server; dropped by ``drop()``."""

    def __init__(self, admin_url: str = PG_ADMIN_URL) -> None:
        self.admin_url = admin_url
        self.name = f"bench_{secrets.token_hex(4)}"
        self.created = False

    def _admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True, connect_timeout=10) as conn:
            conn.execute(sql)

    def create(self) -> "BenchDatabase":
        self._admin(f'CREATE DATABASE "{self.name}"')
        self.created = True
        return self

    def drop(self) -> None:
        """Drop it, closing whatever still connects (safe to call twice)."""
        if self.created:
            self._admin(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
            self.created = False

    @property
    def libpq_url(self) -> str:
        return self.admin_url.rsplit("/", 1)[0] + "/" + self.name

    @property
    def sqlalchemy_url(self) -> str:
        """What ``DASHBOARD_DATABASE_URL`` gets (psycopg 3 driver)."""
        return self.libpq_url.replace("postgresql://", "postgresql+psycopg://", 1)

    def query_one(self, sql: str) -> Any:
        import psycopg

        with psycopg.connect(self.libpq_url, autocommit=True, connect_timeout=10) as conn:
            return conn.execute(sql).fetchone()[0]

    def backend_pids(self) -> list[int]:
        """PostgreSQL backend processes connected to this database now (the servers' pools)."""
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True, connect_timeout=10) as conn:
            rows = conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                                (self.name,)).fetchall()
        return [r[0] for r in rows]


class Backing:
    """CPU of what the servers lean on in scenario 5: redis-server and this database's PostgreSQL backends.

    The backends are the ones connected when ``start()`` is called (the servers' connection pools,
    opened while the viewers joined); PostgreSQL's shared background processes are not counted.
    """

    def __init__(self, db: BenchDatabase | None, redis_url: str | None) -> None:
        self.db, self.redis_url = db, redis_url
        self.procs: dict[str, list[psutil.Process]] = {"redis": [], "postgres": []}
        self.start_cpu: dict[int, float] = {}

    @staticmethod
    def _cpu(p: psutil.Process) -> float | None:
        try:
            t = p.cpu_times()
            return t.user + t.system
        except psutil.Error:
            return None

    def _redis_process(self) -> psutil.Process | None:
        """The process listening on the queue's port (redis-server)."""
        from urllib.parse import urlparse

        port = urlparse(self.redis_url).port or 6379
        try:
            conns = psutil.net_connections("tcp")
        except psutil.Error:
            return None
        for c in conns:
            if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port and c.pid:
                return psutil.Process(c.pid)
        return None

    def start(self) -> None:
        if self.redis_url:
            p = self._redis_process()
            self.procs["redis"] = [p] if p is not None else []
        if self.db is not None:
            self.procs["postgres"] = [psutil.Process(pid) for pid in self.db.backend_pids() if psutil.pid_exists(pid)]
        for group in self.procs.values():
            for p in group:
                cpu = self._cpu(p)
                if cpu is not None:
                    self.start_cpu[p.pid] = cpu

    def cpu_seconds(self) -> dict[str, float | None]:
        """CPU seconds since ``start()``, per kind (None when the process could not be found)."""
        out: dict[str, float | None] = {}
        for kind, group in self.procs.items():
            if not group:
                out[kind] = None
                continue
            total = 0.0
            for p in group:
                cpu = self._cpu(p)
                if cpu is not None and p.pid in self.start_cpu:
                    total += cpu - self.start_cpu[p.pid]
            out[kind] = total
        return out


class Cluster:
    """``processes`` x ``dashboard serve`` on one fresh PostgreSQL database, over Redis when ``queue``.

    The same measuring interface as ``Server``, summed over the processes; ``urls`` lists each
    process's address (monitors go to the first, viewers are split over all).
    """

    def __init__(self, processes: int, queue: bool, pg_admin_url: str = PG_ADMIN_URL,
                 redis_url: str = REDIS_URL) -> None:
        self.kind = "ours"
        self.db = BenchDatabase(pg_admin_url)
        self.redis_url = redis_url if queue else None
        self.n = processes
        self.servers: list[Server] = []
        self.backing = Backing(self.db, self.redis_url)

    @property
    def url(self) -> str:
        return self.servers[0].url

    @property
    def urls(self) -> list[str]:
        return [s.url for s in self.servers]

    @property
    def ps(self) -> psutil.Process:  # py-spy: the first process (the monitor's)
        return self.servers[0].ps

    @property
    def rss_peak(self) -> int:
        return sum(s.rss_peak for s in self.servers)

    def start(self) -> "Cluster":
        """Create the database, then start the processes one after the other (the first one migrates)."""
        try:
            self.db.create()
            env = {"DASHBOARD_DATABASE_URL": self.db.sqlalchemy_url}
            if self.redis_url:
                env["DASHBOARD_MESSAGE_QUEUE"] = self.redis_url
            for _ in range(self.n):
                server = Server("ours", env)
                self.servers.append(server)
                server.start()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        for s in self.servers:
            s.stop()
        self.db.drop()

    def rss(self) -> int:
        return sum(s.rss() for s in self.servers)

    def rss_hwm(self) -> int:
        return sum(s.rss_hwm() for s in self.servers)

    def cpu_seconds(self) -> float:
        return sum(s.cpu_seconds() for s in self.servers)

    def cpu_by_process(self) -> list[float]:
        return [s.cpu_seconds() for s in self.servers]

    def frames_per_commit(self) -> float | None:
        """Mean frames per transaction of the first process (the monitors' one)."""
        return self.servers[0].frames_per_commit()

    def frames_stored(self) -> int | None:
        return int(self.db.query_one("SELECT COUNT(*) FROM frames"))
