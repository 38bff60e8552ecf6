"""Power cuts: a real `dashboard monitor` killed with SIGKILL at random instants while it writes, over and over.

A real server, a real monitor process (GPS on a pty at 20 Hz, frames at 50 Hz: a commit every 100 ms
and acks deleting frames all the time), killed at a random delay after it is streaming, restarted, 50
times (seeded; the seed is printed). The monitor logs, at DEBUG, each group it committed ("committed seq
A..B") and each batch the server acked ("acked seq ..."). The claims checked:

- after every kill the outbox is a sound SQLite database and the restarted monitor opens it (it never
  moved it aside) and goes on with seqs above every one it logged;
- every frame the server acked is stored on the server;
- every frame the monitor logged as committed is on the server or in the outbox, and once a last run
  drains the outbox, on the server: none lost;
- no seq is stored twice, and a seq both on the server and in the outbox has the same content.

Half the kills come at a uniform random delay (0-1 s). The other half are aimed into a commit: commits
recur on a 100 ms grid whose phase the log's stamps give, and the kill is timed for the last 2 ms before
a coming commit returns. The test counts the kills that cut a transaction (the WAL ends in frames of its
current generation after its last commit frame) and those that came after a commit was stored and
before its log line (the outbox holds seqs the log never mentions). A kill between a commit and its log
line only makes the test's list shorter, never wrong.
"""
from __future__ import annotations

import json
import math
import os
import random
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import requests

from tests.car.conftest import Pty
from tests.car.test_outbox import corrupt
from tests.clients import stored_frames
from tests.servers import REPO, ServerProcess
from tests.waiting import wait_for

CYCLES = int(os.environ.get("POWER_CUT_CYCLES", "50"))
SEED = int(os.environ.get("POWER_CUT_SEED", "20261129"))
MAX_KILL_DELAY_S = 1.0
FIX_PERIOD_S = 0.05  # a 20 Hz receiver
RATE_HZ = "50"
START_TIMEOUT_S = 60.0  # two busy cores: a monitor's start can take a few seconds
DRAIN_TIMEOUT_S = 90.0
COMMITTED = re.compile(r"committed seq (\d+)\.\.(\d+)")
COMMIT_LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) DEBUG \S+: committed seq", re.M)
COMMIT_PERIOD_S = 0.1  # the assembler commits a group every 100 ms at 50 Hz (5 ticks)
COMMIT_WINDOW_S = 0.002  # a commit (BEGIN, inserts, COMMIT with its fsync) ends within this of starting
ACKED = re.compile(r"acked seq ([\d,]+)")


def nmea(body: str) -> str:
    """A sentence with its checksum."""
    checksum = 0
    for char in body:
        checksum ^= ord(char)
    return f"${body}*{checksum:02X}\r\n"


def fix_sentences(now: datetime, n: int) -> str:
    """An RMC and a GGA at ``now`` (real UTC time: the frames carry today's date), moving east a little."""
    hhmmss = now.strftime("%H%M%S.") + f"{now.microsecond // 10000:02d}"
    lon_min = 22.8 + (n % 1000) * 0.0001
    rmc = nmea(f"GPRMC,{hhmmss},A,2824.6000,N,081{lon_min:07.4f},W,20.0,90.0,{now.strftime('%d%m%y')},,,A")
    gga = nmea(f"GPGGA,{hhmmss},2824.6000,N,081{lon_min:07.4f},W,1,08,0.9,30.0,M,-30.0,M,,")
    return rmc + gga


class Receiver:
    """A GPS receiver on a pty sending fixes at 20 Hz; writes never block (unread sentences are dropped)."""

    def __init__(self) -> None:
        self.pty = Pty()
        os.set_blocking(self.pty.master, False)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="receiver", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        n = 0
        while not self._stop.wait(FIX_PERIOD_S):
            n += 1
            try:
                os.write(self.pty.master, fix_sentences(datetime.now(timezone.utc), n).encode("ascii"))
            except OSError:  # buffer full while no monitor reads: a real receiver's sentences are lost too
                pass

    def close(self) -> None:
        """Stop sending and close the pty."""
        self._stop.set()
        self._thread.join(5)
        self.pty.close()


class Monitor:
    """One `dashboard monitor` run, logging at DEBUG into its own file."""

    def __init__(self, server: ServerProcess, gps: str, outbox: Path, log_path: Path,
                 car_id: str = "power-cut") -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DASHBOARD_")}
        env.update({"PYTHONUNBUFFERED": "1", "DASHBOARD_API_KEY": server.api_key or "",
                    "DASHBOARD_LOG_LEVEL": "DEBUG", "DASHBOARD_HEARTBEAT_S": "1",
                    "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")})
        self.log_path = log_path
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "dashboard", "monitor", "--server", server.url, "--car-id", car_id,
                 "--gps", gps, "--outbox", str(outbox), "--rate", RATE_HZ],
                cwd=outbox.parent, env=env, stdout=log, stderr=subprocess.STDOUT)

    def text(self) -> str:
        """What it logged so far."""
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL: the power cut."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        """SIGTERM, as systemd would."""
        self.proc.terminate()
        self.proc.wait(30)


def aimed_delay(text: str, rng: random.Random) -> float:
    """A delay that ends inside a commit to come.

    Commits run on the assembler's fixed 100 ms grid. Their log lines (ms stamps) give the grid's phase:
    the earliest end in the cycle is the grid plus the quickest commit. The kill is aimed at the 2 ms
    before that phase, some cycles ahead, where the commit's writes and fsync happen.
    """
    ends = [datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp() for stamp in COMMIT_LINE.findall(text)]
    first = ends[0]
    phase = min((end - first + COMMIT_PERIOD_S / 2) % COMMIT_PERIOD_S - COMMIT_PERIOD_S / 2 for end in ends)
    target = first + phase + rng.randint(1, 8) * COMMIT_PERIOD_S - rng.uniform(0.0, COMMIT_WINDOW_S)
    target += max(0, math.ceil((time.time() - target) / COMMIT_PERIOD_S)) * COMMIT_PERIOD_S
    return target - time.time()


def torn_wal_frames(path: Path) -> int:
    """WAL frames after the last commit frame of the WAL's current generation: a transaction the kill cut."""
    try:
        wal = Path(str(path) + "-wal").read_bytes()
    except FileNotFoundError:
        return 0
    if len(wal) < 32:
        return 0
    page_size = int.from_bytes(wal[8:12], "big")
    salts = wal[16:24]
    torn = 0
    for offset in range(32, len(wal) - 24 - page_size + 1, 24 + page_size):
        header = wal[offset:offset + 24]
        if header[8:16] != salts:
            break  # an older generation's frame: the current one ends here
        torn = 0 if int.from_bytes(header[4:8], "big") else torn + 1  # a commit frame has the db size
    return torn


def logged_seqs(text: str) -> tuple[set[int], set[int]]:
    """(committed, acked) seqs in a monitor's log."""
    committed: set[int] = set()
    for first, last in COMMITTED.findall(text):
        committed.update(range(int(first), int(last) + 1))
    acked = {int(s) for line in ACKED.findall(text) for s in line.split(",")}
    return committed, acked


def outbox_rows(path: Path) -> dict[int, tuple[Any, str]]:
    """seq → (t, channels) of every frame in the outbox file, after a check that the file is sound."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        assert db.execute("PRAGMA quick_check").fetchone()[0] == "ok"
        return {seq: (t, body) for seq, t, body in db.execute("SELECT seq, t, channels FROM frames")}


def outbox_meta(path: Path, key: str) -> str | None:
    """A meta value of the outbox file."""
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return None if row is None else row[0]


def server_frames(server: ServerProcess, session_ids: set[str]) -> list[dict[str, Any]]:
    """Every frame stored in these sessions."""
    frames: list[dict[str, Any]] = []
    for session_id in session_ids:
        frames += stored_frames(server.url, session_id)
    return frames


def session_events(server: ServerProcess, session_id: str) -> list[str]:
    """The event types logged in a session."""
    answer = requests.get(f"{server.url}/api/v1/sessions/{session_id}/events", timeout=10)
    answer.raise_for_status()
    return [event["event_type"] for event in answer.json()["items"]]


def check_claims(server: ServerProcess, sessions: set[str], outbox: dict[int, tuple[Any, str]],
                 committed: set[int], acked: set[int]) -> set[int]:
    """Acked ⊆ server; committed ⊆ server ∪ outbox; no seq twice; a seq in both has the same content."""
    frames = server_frames(server, sessions)
    seqs = [f["seq"] for f in frames]
    assert len(seqs) == len(set(seqs)), "a seq stored twice on the server"
    on_server = set(seqs)
    assert acked <= on_server, f"acked but not stored: {sorted(acked - on_server)[:20]}"
    lost = committed - on_server - set(outbox)
    assert not lost, f"committed, then neither on the server nor in the outbox: {sorted(lost)[:20]}"
    for frame in frames:
        if frame["seq"] in outbox:  # acked, its delete cut short by the kill: the same frame, not a reused seq
            t, body = outbox[frame["seq"]]
            assert t == frame["t"] and json.loads(body) == frame["channels"], f"seq {frame['seq']} differs"
    return on_server


def test_kill_minus_nine_at_random_instants_loses_nothing_committed(tmp_path: Path) -> None:
    rng = random.Random(SEED)
    print(f"power-cut seed {SEED}, {CYCLES} cycles (POWER_CUT_SEED / POWER_CUT_CYCLES to change)")
    server = ServerProcess(tmp_path / "server").start()
    receiver = Receiver()
    outbox_path = tmp_path / "car" / "outbox.sqlite"
    outbox_path.parent.mkdir()
    committed: set[int] = set()
    acked: set[int] = set()
    sessions: set[str] = set()
    delays = []
    aimed = 0
    unlogged = 0
    torn = 0
    monitor: Monitor | None = None
    try:
        for cycle in range(CYCLES):
            monitor = Monitor(server, receiver.pty.path, outbox_path, tmp_path / f"monitor-{cycle}.log")
            # mostly once frames flow to the server (commits, acks and deletes all under way), sometimes as
            # soon as the first group is committed (the uplink still connecting, a backlog being sent)
            streaming = ACKED if rng.random() < 0.75 else COMMITTED
            wait_for(lambda m=monitor, pattern=streaming: pattern.search(m.text()), START_TIMEOUT_S,
                     f"cycle {cycle}: the monitor streaming (log {monitor.log_path})")
            if cycle % 2:  # anywhere
                delay = rng.uniform(0.0, MAX_KILL_DELAY_S)
            else:  # aimed into a commit: the last few ms before a coming group's commit returns
                # (the grid's phase from this run's own commits: its first acks may be of the backlog's frames)
                wait_for(lambda m=monitor: COMMIT_LINE.search(m.text()), START_TIMEOUT_S,
                         f"cycle {cycle}: a group committed (log {monitor.log_path})")
                delay = aimed_delay(monitor.text(), rng)
                aimed += 1
            delays.append(delay)
            time.sleep(delay)  # the random instant of the power cut: what this test is about
            monitor.kill()
            if torn_wal_frames(outbox_path):
                torn += 1  # killed inside a commit: its pages written, its commit frame not
            text = monitor.text()
            assert "unreadable" not in text and "Traceback" not in text, text[-3000:]
            run_committed, run_acked = logged_seqs(text)
            assert not (run_committed & committed), "a seq committed again after a restart"
            committed |= run_committed
            acked |= run_acked
            rows = outbox_rows(outbox_path)  # sound after the kill (quick_check)
            last_seq = int(outbox_meta(outbox_path, "last_seq") or 0)
            assert last_seq >= max(committed), "the outbox's seq went back below a committed frame"
            if last_seq > max(run_committed, default=0):
                unlogged += 1  # killed after a commit returned and before its log line: inside the commit path
            session = outbox_meta(outbox_path, "uplink.session_id")
            if session:
                sessions.add(session)
        assert len(sessions) == 1, f"one session across every restart, got {sessions}"
        assert len(acked) > 0 and len(committed) > 10 * CYCLES
        check_claims(server, sessions, outbox_rows(outbox_path), committed, acked)

        # one last run, stopped cleanly once the server holds everything ever committed
        monitor = Monitor(server, receiver.pty.path, outbox_path, tmp_path / "monitor-drain.log")
        wait_for(lambda: committed <= {f["seq"] for f in server_frames(server, sessions)}, DRAIN_TIMEOUT_S,
                 "every committed frame on the server")
        monitor.stop()
        run_committed, run_acked = logged_seqs(monitor.text())
        committed |= run_committed
        acked |= run_acked
        rows = outbox_rows(outbox_path)
        on_server = check_claims(server, sessions, rows, committed, acked)
        assert committed <= on_server | set(rows)
        print(f"{CYCLES} kills ({aimed} aimed into a commit; {torn} cut a transaction in the WAL, {unlogged} came "
              f"between a commit and its log line) "
              f"at {min(delays):.3f}-{max(delays):.3f} s after "
              f"streaming: {len(committed)} frames committed, "
              f"{len(on_server)} on the server, {len(rows)} still in the outbox")
    finally:
        if monitor is not None and monitor.proc.poll() is None:
            monitor.kill()
        receiver.close()
        server.stop()


def test_a_corrupt_outbox_is_moved_aside_and_the_monitor_streams_with_a_fresh_one(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path / "server").start()
    receiver = Receiver()
    monitor: Monitor | None = None
    try:
        for how in ("truncated", "garbage", "missing-table"):
            folder = tmp_path / how
            folder.mkdir()
            outbox_path = folder / "outbox.sqlite"
            car = f"car-{how}"
            # a first run: the car has a session on the server and frames stored there
            monitor = Monitor(server, receiver.pty.path, outbox_path, folder / "first.log", car_id=car)
            wait_for(lambda m=monitor: ACKED.search(m.text()), START_TIMEOUT_S, f"{how}: first run streaming")
            monitor.kill()
            first_session = outbox_meta(outbox_path, "uplink.session_id")
            assert first_session is not None
            before = {f["seq"]: f["t"] for f in stored_frames(server.url, first_session)}
            for part in folder.glob("outbox.sqlite*"):
                part.unlink()
            corrupt(outbox_path, how)
            damaged = outbox_path.read_bytes()
            monitor = Monitor(server, receiver.pty.path, outbox_path, folder / "second.log", car_id=car)
            wait_for(lambda m=monitor: ACKED.search(m.text()), START_TIMEOUT_S, f"{how}: streaming again")
            text = monitor.text()
            asides = [p for p in folder.iterdir() if ".corrupt-" in p.name and not p.name.endswith(("-wal", "-shm"))]
            assert len(asides) == 1 and asides[0].read_bytes()[:100] == damaged[:100]
            error = next(line for line in text.splitlines() if " ERROR " in line)
            assert str(outbox_path) in error and str(asides[0]) in error  # loud, naming both files
            assert monitor.proc.poll() is None, "the monitor keeps running"
            session = wait_for(lambda p=outbox_path: outbox_meta(p, "uplink.session_id"), START_TIMEOUT_S, "a session")
            committed, acked = logged_seqs(text)
            wait_for(lambda s=session, a=acked: a <= {f["seq"] for f in stored_frames(server.url, s)},
                     START_TIMEOUT_S, f"{how}: the fresh outbox's frames on the server")
            # the fresh outbox counts from 1 again; the server's session goes on, so its seqs never mix with the
            # old ones: the uplink moves them past the server's (seq jumps), or renumbers on a seq conflict
            if session == first_session:
                assert "seq jumps" in text or "seq conflict" in text
                after = {f["seq"]: f["t"] for f in stored_frames(server.url, session)}
                assert all(after[seq] == t for seq, t in before.items()), "a stored frame was overwritten"
                assert min(after.keys() - before.keys()) > max(before)
            else:
                assert min(committed) == 1
            wait_for(lambda s=session: "outbox.replaced" in session_events(server, s), START_TIMEOUT_S,
                     f"{how}: the outbox.replaced event on the server")
            monitor.stop()
    finally:
        if monitor is not None and monitor.proc.poll() is None:
            monitor.kill()
        receiver.close()
        server.stop()
