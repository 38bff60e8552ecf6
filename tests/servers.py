"""A real ``dashboard serve`` process on a free loopback port, for end-to-end tests."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import requests

from tests.waiting import wait_for

REPO = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 30.0


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """``python -m dashboard serve`` with its own instance folder; start/kill/stop/restart."""

    started: list["ServerProcess"] = []  # every one made in this test run (a failed test shows their logs)

    def __init__(self, instance: Path, api_key: str | None = "test-key", extra_args: tuple[str, ...] = (),
                 **settings: str) -> None:
        self.instance = instance
        self.extra_args = extra_args
        self.api_key = api_key
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "DASHBOARD_INSTANCE_PATH": str(instance), "PYTHONUNBUFFERED": "1",
                    "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        self.env.pop("DASHBOARD_API_KEY", None)
        if api_key:
            self.env["DASHBOARD_API_KEY"] = api_key
        for name, value in settings.items():
            self.env[f"DASHBOARD_{name.upper()}"] = str(value)
        self.proc: subprocess.Popen | None = None
        self.log_path = instance / "server.log"
        ServerProcess.started.append(self)

    @property
    def headers(self) -> dict[str, str]:
        """Headers of an authorised mutating REST call."""
        return {"X-API-Key": self.api_key} if self.api_key else {}

    def start(self) -> "ServerProcess":
        """Start the process and wait until /healthz answers."""
        self.instance.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dashboard", "serve", "--host", "127.0.0.1", "--port", str(self.port),
             *self.extra_args],
            cwd=self.instance, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        wait_for(self._ready, START_TIMEOUT_S, f"server on {self.url} (log: {self.log_path})")
        return self

    def _ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"server exited with {self.proc.returncode}: {self.log_path.read_text()[-2000:]}")
        return requests.get(self.url + "/healthz", timeout=1).status_code == 200

    def kill(self) -> None:
        """SIGKILL: no chance to flush anything."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
            self.proc = None

    def stop(self) -> None:
        """SIGTERM and wait."""
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
            self.proc = None

    def restart(self) -> "ServerProcess":
        """Kill -9 and start again on the same port and database."""
        self.kill()
        return self.start()

    def log_text(self) -> str:
        """What the server printed so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_tail_since(self, offset: int, lines: int = 60) -> str:
        """The last ``lines`` lines the server printed after byte ``offset`` of its log."""
        if not self.log_path.exists():
            return ""
        with open(self.log_path, "rb") as log:
            log.seek(offset)
            return "\n".join(log.read().decode(errors="replace").splitlines()[-lines:])

    def log_size(self) -> int:
        return self.log_path.stat().st_size if self.log_path.exists() else 0
