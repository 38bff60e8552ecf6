"""The two servers under test, started by the bench itself, and what is measured on them.

``ours``: ``python -m dashboard serve`` on a free port, a throwaway instance folder
(SQLite, persistence on) and an API key. ``node``: ``bench/node_relay/relay.js``
(socket.io from the npm registry, installed by ``npm ci`` on first use).
A sampler thread reads the server's RSS every ``SAMPLE_EVERY_S``; CPU is the
difference of the process's cpu_times over a window.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

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

    def __init__(self, kind: str) -> None:
        self.kind = kind
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
            env.pop("DASHBOARD_DATABASE_URL", None)  # SQLite in the instance folder: persistence on
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

    def frames_stored(self) -> int | None:
        """Frames in our SQLite database (None for the relay, which stores nothing)."""
        if self.kind != "ours":
            return None
        import sqlite3

        db = self.tmp / "instance" / "dashboard.db"
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as conn:
            return conn.execute("SELECT COUNT(*) FROM frames").fetchone()[0]
