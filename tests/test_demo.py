"""``dashboard demo`` (and ``serve``) as a user meets them: real processes on loopback ports.

A taken port, the printed URL and key line, the README's curl examples run as written against the demo,
and the demo stopped (SIGTERM and kill -9) and started again on the same instance folder.
"""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from dashboard.demo import DEMO_CAR, RESTART_REASON
from dashboard.server.tracks import ORLANDO_TRACK_ID
from dashboard.telemetry.laps import GAP_MAX_S
from tests.servers import REPO, free_port
from tests.waiting import wait_for

START_TIMEOUT_S = 60.0
LONGEST_RECORDED_LAP_S = 58.857  # the bundled recording's longest lap (tests/telemetry/test_laps.py reference)
LAP_MARGIN_S = 1.0
URL_LINE = re.compile(r"open (http://[^/\s]+)/sessions/([0-9a-f-]{36})")
EXPORT_LINE = re.compile(r"^export DASHBOARD_API_KEY=(\S+)", re.MULTILINE)


def environment(instance: Path) -> dict[str, str]:
    env = {**os.environ, "DASHBOARD_INSTANCE_PATH": str(instance), "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    for name in ("DASHBOARD_API_KEY", "DASHBOARD_PORT", "DASHBOARD_HOST", "DASHBOARD_DATABASE_URL",
                 "DASHBOARD_VIEWER_TOKEN"):
        env.pop(name, None)
    return env


class Demo:
    """One ``python -m dashboard demo`` process, its stdout and stderr (the log) in files."""

    def __init__(self, instance: Path, port: int, speedup: float = 1.0, run: int = 0) -> None:
        instance.mkdir(parents=True, exist_ok=True)
        self.out_path, self.err_path = instance / f"demo{run}.out", instance / f"demo{run}.err"
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "dashboard", "demo", "--port", str(port), "--speedup", str(speedup)],
                cwd=instance, env=environment(instance), stdout=out, stderr=err)
        match = wait_for(self._url_line, START_TIMEOUT_S, f"the demo's URL line ({self.err_path})")
        self.url, self.session_id = match.group(1), match.group(2)

    def _url_line(self) -> re.Match | None:
        if self.proc.poll() is not None:
            raise AssertionError(f"demo exited with {self.proc.returncode}: {self.stderr()[-2000:]}")
        return URL_LINE.search(self.stdout())

    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def export_line(self) -> str:
        """The ``export DASHBOARD_API_KEY=...`` line as printed."""
        return next(line for line in self.stdout().splitlines() if line.startswith("export DASHBOARD_API_KEY="))

    def key(self) -> str:
        match = EXPORT_LINE.search(self.stdout())
        assert match, self.stdout()
        return match.group(1)

    def session(self, session_id: str | None = None) -> dict:
        return requests.get(f"{self.url}/api/v1/sessions/{session_id or self.session_id}", timeout=10).json()

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@pytest.mark.parametrize("command", ["demo", "serve"])
def test_a_taken_port_is_one_line_naming_it_and_nothing_else_happens(tmp_path: Path, command: str) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "dashboard", command, "--port", str(port)], cwd=tmp_path,
                              env=environment(tmp_path / "instance"), capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert str(port) in lines[0] and "--port" in lines[0] and "taken" in lines[0]
    assert "Traceback" not in done.stdout + done.stderr
    assert "http://" not in done.stdout  # no URL for a server that never listened
    assert not (tmp_path / "instance" / "dashboard.db").exists()  # nothing was started: no database, no session


def readme_curl_blocks() -> str:
    """The README's ```sh blocks aimed at a local server (``localhost:5000``): Using the API, Adding a track."""
    readme = (REPO / "README.md").read_text()
    sections = re.split(r"^## ", readme, flags=re.MULTILINE)
    # the sections written to be pasted against a fresh demo (others need data it has not: laps done, a log file)
    runnable = "".join(s for s in sections if s.startswith(("Using the API", "Adding a track")))
    blocks = re.findall(r"```sh\n(.*?)```", runnable, re.DOTALL)
    local = [b for b in blocks if "curl" in b and "localhost:5000" in b]
    assert len(local) >= 2, "the README's curl examples were not found"
    return "\n".join(local)


def test_the_readme_curl_examples_work_against_the_demo_as_written(tmp_path: Path) -> None:
    """Paste the demo's export line, then the README's curl examples: every answer 2xx; the key never in the log."""
    demo = Demo(tmp_path / "instance", port=0, speedup=4)  # port 0: the demo picks one and prints it
    try:
        assert requests.get(f"{demo.url}/healthz", timeout=10).status_code == 200  # the printed URL answers
        key = demo.key()
        assert demo.stdout().count(key) == 1 and len(key) >= 32
        examples = readme_curl_blocks()
        calls = len(re.findall(r"(?:^|\$\()curl ", examples, re.MULTILINE))
        port = demo.url.rsplit(":", 1)[1]
        script = "\n".join([
            "set -euo pipefail",
            'curl() { command curl --silent --show-error --write-out "%{stderr}HTTP %{http_code}\\n" "$@"; }',
            demo.export_line(),  # as printed: the line a user pastes
            examples.replace("localhost:5000", f"127.0.0.1:{port}"),
        ])
        done = subprocess.run(["bash", "-c", script], env={k: v for k, v in environment(tmp_path).items()
                                                               if not k.startswith("DASHBOARD_")},
                              capture_output=True, text=True, timeout=120)
        codes = re.findall(r"^HTTP (\d{3})$", done.stderr, re.MULTILINE)
        assert done.returncode == 0, done.stderr
        assert len(codes) == calls and all(code.startswith("2") for code in codes), done.stderr
        sessions = requests.get(f"{demo.url}/api/v1/sessions?car_id=CAR001", timeout=10).json()["items"]
        assert len(sessions) == 1 and sessions[0]["status"] == "ended"  # the examples' session, ended
        listed = requests.get(f"{demo.url}/api/v1/tracks", timeout=10).json()["items"]
        tracks = {t["name"]: t["track_id"] for t in listed}
        assert sessions[0]["track_id"] == tracks["My Club Circuit"] != ORLANDO_TRACK_ID  # named, then changed
        assert key not in demo.stderr()  # the log never has it
    finally:
        demo.stop()
    assert key not in demo.stderr()


def frames_of(url: str, session_id: str) -> list[dict]:
    out, after = [], -1
    while True:
        page = requests.get(f"{url}/api/v1/sessions/{session_id}/frames?after_seq={after}&limit=10000",
                            timeout=30).json()
        out += page["items"]
        if not page["items"] or page["next_after_seq"] is None:
            return out
        after = page["next_after_seq"]


def test_the_demo_started_again_ends_the_previous_session_and_never_times_a_lap_across_the_restart(
        tmp_path: Path) -> None:
    """Stopped with SIGTERM while a lap is under way, then killed with -9, started again each time on the same
    instance folder and port: each run has its own session, the previous one is ended, none holds a time jump,
    and no lap is longer than the recording's longest."""
    instance, port = tmp_path / "instance", free_port()
    speedup = 2.5  # laps of ~23 s of frame time: still over the track's 20 s debounce
    runs: list[Demo] = []
    try:
        first = Demo(instance, port, speedup, run=0)
        runs.append(first)

        def timed_laps() -> list[dict]:
            laps = requests.get(f"{first.url}/api/v1/sessions/{first.session_id}/laps", timeout=10).json()["items"]
            return [lap for lap in laps if not (lap["out_lap"] or lap["in_lap"])]

        wait_for(timed_laps, 150, "a timed lap in the first run")
        first.stop(signal.SIGTERM)  # mid lap 2
        for n, stop in enumerate((signal.SIGKILL, signal.SIGTERM), start=1):
            demo = Demo(instance, port, speedup, run=n)
            runs.append(demo)
            assert demo.session_id != runs[-2].session_id
            wait_for(lambda d=demo: d.session()["stats"]["frames"] >= 20, 60, "frames in the new run's session")
            demo.stop(stop)
        last = Demo(instance, port, speedup, run=len(runs))  # to read every session through
        runs.append(last)
        sessions = {d.session_id: last.session(d.session_id) for d in runs}
        assert len(sessions) == len(runs)
        for d in runs[:-1]:
            assert sessions[d.session_id]["status"] == "ended", sessions[d.session_id]
            assert sessions[d.session_id]["end_reason"] == RESTART_REASON
            assert sessions[d.session_id]["car_id"] == DEMO_CAR
        assert sessions[last.session_id]["status"] == "active"
        live = requests.get(f"{last.url}/api/v1/sessions?car_id={DEMO_CAR}&status=active", timeout=10).json()
        assert [s["session_id"] for s in live["items"]] == [last.session_id]
        for d in runs[:-1]:
            frames = frames_of(last.url, d.session_id)
            assert frames, d.session_id
            gaps = [b["t"] - a["t"] for a, b in zip(frames, frames[1:], strict=False)]
            assert max(gaps) < GAP_MAX_S, f"a time jump in session {d.session_id}: {max(gaps):.1f} s"
            laps = requests.get(f"{last.url}/api/v1/sessions/{d.session_id}/laps", timeout=10).json()["items"]
            assert all(lap["lap_time"] < LONGEST_RECORDED_LAP_S + LAP_MARGIN_S for lap in laps
                       if not (lap["out_lap"] or lap["in_lap"])), laps
        assert any(not (lap["out_lap"] or lap["in_lap"]) for lap in requests.get(
            f"{last.url}/api/v1/sessions/{first.session_id}/laps", timeout=10).json()["items"])
        for d in runs:
            assert "Traceback" not in d.stderr(), d.stderr()[-3000:]
    finally:
        for d in runs:
            d.stop(signal.SIGTERM)


DISPLAY_LINE = re.compile(r"driver's display in the simulated car: (http://\S+/)")


def test_the_demo_car_has_a_driver_display_that_answers_the_pit(tmp_path: Path) -> None:
    """The whole loop on embedded defaults: a message from the pit reaches the simulated car, shows on its driver
    display (printed by the demo), which times its own laps; the answer given there comes back to the pit."""
    demo = Demo(tmp_path / "instance", port=0, speedup=8)
    try:
        display = DISPLAY_LINE.search(demo.stdout())
        assert display, demo.stdout()
        page = display.group(1)
        state = wait_for(lambda: requests.get(page + "api/state", timeout=5).json(), START_TIMEOUT_S,
                         "the simulated car's display")
        assert requests.get(page, timeout=5).text.lstrip().lower().startswith("<!doctype html")
        headers = {"X-API-Key": demo.key()}
        wait_for(lambda: requests.get(f"{demo.url}/api/v1/sessions/{demo.session_id}/telemetry", timeout=5).json()
                 ["channels"].get("lat"), START_TIMEOUT_S, "the car on the map")
        sent = requests.post(f"{demo.url}/api/v1/sessions/{demo.session_id}/messages", headers=headers, timeout=10,
                             json={"text": "FUEL OK?", "asks_answer": True})
        assert sent.status_code == 201, sent.text
        mid = sent.json()["id"]
        state = wait_for(lambda: (s := requests.get(page + "api/state", timeout=5).json())["messages"] and s,
                         START_TIMEOUT_S, "the message on the display")
        assert [m["text"] for m in state["messages"]] == ["FUEL OK?"]
        answer = requests.post(f"{page}api/messages/{mid}/answer", json={"answer": "no"}, timeout=5)
        assert answer.status_code == 200 and answer.json()["applied"], answer.text

        def answered() -> dict | None:
            items = requests.get(f"{demo.url}/api/v1/sessions/{demo.session_id}/messages", timeout=10).json()["items"]
            return next((m for m in items if m["id"] == mid and m["state"] == "answered"), None)

        done = wait_for(answered, START_TIMEOUT_S, "the answer at the pit")
        assert done["answer"] == "no" and done["events"][-1]["lat"] is not None  # where the car was
        # the car times its own laps on the bundled track (8x: a lap in ~7 s)
        wait_for(lambda: (requests.get(page + "api/state", timeout=5).json()["timing"].get("lap") or 0) >= 1,
                 START_TIMEOUT_S, "a lap timed in the car")
    finally:
        demo.stop()
