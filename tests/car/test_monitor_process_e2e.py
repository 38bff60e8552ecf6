"""End to end with real processes: `dashboard serve` + `dashboard monitor` (ELM327 emulator, pty GPS) + a viewer.

The ELM327-emulator runs in a thread of the test process on a pseudo-terminal; the monitor process
opens that pty's path like a serial adapter. The GPS is another pty, reached through a symlink (as a
udev rule would name it) so it can be unplugged and come back under the same name; the test writes
real sentences of the bundled recording into it at the receiver's pace.
"""
from __future__ import annotations

import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import requests

from dashboard.car.outbox import Outbox
from dashboard.car.replay import BUNDLED_LOG
from dashboard.car.uplink import Uplink
from dashboard.telemetry.gps import NmeaDecoder
from tests.car.conftest import Pty
from tests.car.nmea import shift_to_now
from tests.clients import Viewer, stored_frames
from tests.servers import REPO
from tests.waiting import wait_for

RECORDED = BUNDLED_LOG.read_text().splitlines(keepends=True)
ON_TRACK = 1000  # the first lines are in the pits, standing still; from here the kart laps
# the recording as a receiver would send it today (the server refuses live frames a day old)
SENTENCES_PER_FIX = 2  # the log has an RMC and a GGA per fix
FIX_PERIOD_S = 0.06  # the receiver's pace in the log (16.7 Hz)
TIMEOUT_S = 30.0  # generous: two cores, a server, a monitor and the emulator all busy
CAN_11_500 = "6"  # ISO 15765-4 CAN 11-bit 500 kbaud: the emulator's car scenario; skips protocol search
HEARTBEAT_S = "0.5"  # the sources' status reaches the server this fresh
STOP_TIMEOUT_S = 20.0  # a monitor's clean stop waits for the OBD reader and the uplink


def emulator_rpms() -> set[float]:
    """Every RPM the emulator's `car` scenario can answer, decoded as python-obd does ((256A+B)/4)."""
    from elm import obd_message

    rpms = set()
    for response in obd_message.ObdMessage["car"]["RPM"]["Response"]:
        a, b = re.search(r"41 0C ([0-9A-F]{2}) ([0-9A-F]{2})", response).groups()
        rpms.add((int(a, 16) * 256 + int(b, 16)) / 4)
    return rpms


def log_positions(lines: list[str]) -> set[tuple[float, float]]:
    """(lat, lon) of every fix in these log lines, decoded by the monitor's own decoder."""
    return {(r.values["lat"], r.values["lon"]) for r in NmeaDecoder().feed("".join(lines))
            if r.values.get("lat") is not None and r.values.get("lon") is not None}


class GpsFeed:
    """A GPS receiver on a pty behind a stable symlink, sending the log's sentences at its pace.

    ``unplug()`` closes the pty (the monitor's reads fail); ``plug()`` makes a new one under the same
    name. Writes never block: while nobody reads, the pty's buffer fills and sentences are dropped,
    as a real receiver's would be.
    """

    def __init__(self, link: Path, start_line: int = ON_TRACK, lines: list[str] | None = None) -> None:
        self.link = link
        # the recording, its start_line stamped now: when this feed starts, not when the module was imported (a
        # long run imports it minutes before; a message's time is then after the car's, as it never is in a car)
        self.shift = 0
        if lines is None:
            first = next(r.time for line in RECORDED[start_line:] for r in NmeaDecoder().feed(line) if r.time)
            lines, self.shift = shift_to_now(RECORDED, first)
        self.lines = lines
        self.next_line = start_line
        self._pty: Pty | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.plug()
        self._thread = threading.Thread(target=self._run, name="gps-feed", daemon=True)
        self._thread.start()

    def plug(self) -> int:
        """Plug a (new) receiver in under the same name; returns the first log line it will send."""
        with self._lock:
            pty = Pty()
            os.set_blocking(pty.master, False)
            if self.link.is_symlink():
                self.link.unlink()
            os.symlink(pty.path, self.link)
            self._pty = pty
            return self.next_line

    def unplug(self) -> None:
        """Pull the receiver out: both ends of its pty are closed."""
        with self._lock:
            pty, self._pty = self._pty, None
        if pty is not None:
            pty.close()

    def _run(self) -> None:
        while not self._stop.wait(FIX_PERIOD_S):
            with self._lock:
                if self._pty is None:
                    continue
                index = ON_TRACK + (self.next_line - ON_TRACK) % (len(self.lines) - ON_TRACK)  # loop the laps
                chunk = "".join(self.lines[index:index + SENTENCES_PER_FIX]).encode("ascii")
                self.next_line += SENTENCES_PER_FIX
                try:
                    os.write(self._pty.master, chunk)
                except OSError:  # buffer full (nobody reading): the receiver's sentences are lost
                    pass

    def sent_since(self, line: int) -> list[str]:
        """The log lines sent from ``line`` on (assumes no wrap-around, the test is short)."""
        return self.lines[line:self.next_line]

    def close(self) -> None:
        """Stop sending and unplug."""
        self._stop.set()
        self._thread.join(5)
        self.unplug()


class MonitorProcess:
    """``python -m dashboard monitor`` against a server; start / kill -9 / stop (SIGTERM)."""

    def __init__(self, server: Any, car_id: str, obd: str, gps: Path, outbox: Path, log_path: Path) -> None:
        self.args = [sys.executable, "-m", "dashboard", "monitor", "--server", server.url, "--car-id", car_id,
                     "--obd", obd, "--obd-protocol", CAN_11_500, "--gps", str(gps),
                     "--outbox", str(outbox), "--rate", "10"]
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("DASHBOARD_")}
        self.env.update({"PYTHONUNBUFFERED": "1", "DASHBOARD_HEARTBEAT_S": HEARTBEAT_S,
                         "DASHBOARD_API_KEY": server.api_key,  # a key never goes on a command line
                         "DASHBOARD_DTC_INTERVAL_S": "0",  # trouble codes are tested in test_obd_source
                         "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")})
        self.cwd = outbox.parent
        self.log_path = log_path
        self.proc: subprocess.Popen | None = None

    def start(self) -> "MonitorProcess":
        """Start the process (it connects to its sources and the server by itself)."""
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.args, cwd=self.cwd, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        return self

    def check_alive(self) -> None:
        """Fail with the monitor's log when it exited."""
        if self.proc is not None and self.proc.poll() is not None:
            raise AssertionError(f"monitor exited with {self.proc.returncode}: {self.log_text()[-3000:]}")

    def kill(self) -> None:
        """kill -9: no chance to flush or say goodbye."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)
            self.proc = None

    def stop(self) -> int | None:
        """SIGTERM and wait; returns the exit code."""
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        proc.terminate()
        try:
            return proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
            raise AssertionError(f"monitor did not stop on SIGTERM: {self.log_text()[-3000:]}") from None

    def log_text(self) -> str:
        """What the monitor printed so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@pytest.fixture
def rig(live_server, elm_emulator, tmp_path: Path):
    """Factory of a monitor process wired to the live server, the emulator and a GPS feed."""
    made: list[tuple[MonitorProcess, GpsFeed]] = []

    def make(car_id: str) -> tuple[MonitorProcess, GpsFeed]:
        gps = GpsFeed(tmp_path / f"{car_id}-gps")
        monitor = MonitorProcess(live_server, car_id, elm_emulator.get_pty(), gps.link,
                                 tmp_path / f"{car_id}-outbox.sqlite", tmp_path / f"{car_id}-monitor.log")
        made.append((monitor, gps))
        return monitor.start(), gps

    yield make
    for monitor, gps in made:
        if monitor.proc is not None:
            monitor.proc.kill()
            monitor.proc.wait(10)
        gps.close()


# ---------------------------------------------------------------- REST views
def car_session(server: Any, car_id: str, monitor: MonitorProcess) -> dict[str, Any]:
    """The car's one session, once the monitor has started it."""
    def found() -> dict[str, Any] | None:
        monitor.check_alive()
        body = requests.get(f"{server.url}/api/v1/sessions", params={"car_id": car_id}, timeout=5).json()
        return body["items"][0] if body["items"] else None

    return wait_for(found, TIMEOUT_S, f"the session of {car_id}")


def session(server: Any, session_id: str) -> dict[str, Any]:
    """GET /sessions/{id}."""
    answer = requests.get(f"{server.url}/api/v1/sessions/{session_id}", timeout=5)
    answer.raise_for_status()
    return answer.json()


def outbox_state(path: Path) -> tuple[int, int]:
    """(frames waiting, last seq allocated) as the monitor's outbox holds them on disk."""
    db = sqlite3.connect(str(path), timeout=10)
    try:
        waiting = db.execute("SELECT count(*) FROM frames").fetchone()[0]
        row = db.execute("SELECT value FROM meta WHERE key = 'last_seq'").fetchone()
        return waiting, int(row[0]) if row else 0
    finally:
        db.close()


def source_state(server: Any, session_id: str, name: str) -> str:
    """The source's status as the monitor's last heartbeat reported it ("" before any)."""
    sources = session(server, session_id)["monitor"].get("sources") or {}
    return sources.get(name, "")


def drain_and_stop(server: Any, car_id: str, sid: str, monitor: MonitorProcess, outbox: Path) -> int:
    """SIGTERM the monitor, then send what its outbox still holds (as its next run would); returns the last seq.

    Not a REST stop: a stopped session pauses the monitor with frames still waiting, and a batch in
    flight at that moment may be refused (session_not_active), so "every seq stored" would not hold.
    """
    assert monitor.stop() == 0, monitor.log_text()[-3000:]
    box = Outbox(outbox)
    uplink = Uplink(server.url, car_id, box, api_key=server.api_key)  # no sources: only the leftovers
    uplink.start()
    try:
        wait_for(lambda: box.count() == 0, TIMEOUT_S, "the outbox drained")
        assert uplink.session_id == sid  # resumed the same session
    finally:
        uplink.stop()
        box.close()
    waiting, last = outbox_state(outbox)
    assert waiting == 0
    return last


# --------------------------------------------------------------------- tests
def test_viewer_sees_emulator_rpm_and_log_positions_through_a_gps_unplug(live_server, rig, tmp_path: Path) -> None:
    monitor, gps = rig("proc-e2e")
    sid = car_session(live_server, "proc-e2e", monitor)["session_id"]
    viewer = Viewer(live_server.url)
    try:
        assert viewer.join(sid)["ok"]

        def frames() -> list[dict[str, Any]]:
            monitor.check_alive()
            return list(viewer.frames)

        def live_car() -> bool:
            seen = {f["channels"]["rpm"] for f in frames() if f["channels"].get("rpm") is not None}
            return len(seen) >= 3 and sum(f["channels"].get("lat") is not None for f in frames()) >= 20

        try:  # the first frames wait for python-obd to connect; under load that alone can take half a minute
            wait_for(live_car, 2 * TIMEOUT_S, "frames with changing rpm and positions at the viewer")
        except AssertionError as exc:
            rpms = sorted({f["channels"].get("rpm") for f in frames()}, key=str)[:10]
            fixes = sum(f["channels"].get("lat") is not None for f in frames())
            raise AssertionError(f"{exc}: {len(frames())} frames, rpm values {rpms}, {fixes} with a position; "
                                 f"monitor log: {monitor.log_text()[-3000:]}") from None
        seen = {f["channels"]["rpm"] for f in frames() if f["channels"].get("rpm") is not None}
        assert seen <= emulator_rpms(), seen - emulator_rpms()  # every rpm is one the emulator answered
        placed = [f for f in frames() if f["channels"].get("lat") is not None]
        positions = {(f["channels"]["lat"], f["channels"]["lon"]) for f in placed}
        assert positions <= log_positions(gps.sent_since(ON_TRACK)), "a position that is not the log's"
        assert len(positions) >= 10  # the kart moves
        assert all(1685890000 + gps.shift < f["t"] < 1685990000 + gps.shift for f in placed)  # the receiver's time
        wait_for(lambda: session(live_server, sid)["monitor"]["sources"] == {"obd": "reading", "gps": "reading"},
                 TIMEOUT_S, "both sources reading in the heartbeat")

        gps.unplug()
        unplugged_at = max(viewer.seqs())
        wait_for(lambda: source_state(live_server, sid, "gps").startswith("error"), TIMEOUT_S, "gps error status")
        wait_for(lambda: any(f["seq"] > unplugged_at and f["channels"].get("lat") is None
                             and f["channels"].get("rpm") is not None for f in frames()),
                 TIMEOUT_S, "a stale position sent as null, the rpm still live")  # the other source goes on
        replug_line = gps.plug()
        plugged_at = max(viewer.seqs())
        wait_for(lambda: source_state(live_server, sid, "gps") == "reading", TIMEOUT_S, "gps reading again")

        def resumed() -> list[dict[str, Any]]:
            return [f for f in frames() if f["seq"] > plugged_at and f["channels"].get("lat") is not None]

        wait_for(lambda: len(resumed()) >= 5, TIMEOUT_S, "positions again after the replug")
        new_positions = {(f["channels"]["lat"], f["channels"]["lon"]) for f in resumed()}
        assert new_positions <= log_positions(gps.sent_since(replug_line))  # the new receiver's sentences
        seqs = viewer.seqs()
        assert len(seqs) == len(set(seqs))  # none twice (the first frames may come as backfill, after later ones)
    finally:
        viewer.close()
    last = drain_and_stop(live_server, "proc-e2e", sid, monitor, tmp_path / "proc-e2e-outbox.sqlite")
    assert [f["seq"] for f in stored_frames(live_server.url, sid)] == list(range(1, last + 1))


def test_monitor_killed_and_restarted_every_seq_is_stored_once(live_server, rig, tmp_path: Path) -> None:
    monitor, _gps = rig("proc-kill")
    sid = car_session(live_server, "proc-kill", monitor)["session_id"]

    def stored_at_least(n: int) -> bool:
        monitor.check_alive()
        return (session(live_server, sid)["stats"]["last_seq"] or 0) >= n

    wait_for(lambda: stored_at_least(20), TIMEOUT_S, "20 frames stored")
    monitor.kill()  # mid-run: frames in flight, maybe acked but not yet deleted from the outbox
    at_kill = session(live_server, sid)["stats"]["last_seq"]
    monitor.start()  # same outbox: same session, seq goes on
    wait_for(lambda: stored_at_least(at_kill + 20), TIMEOUT_S, "frames of the restarted monitor")
    sessions = requests.get(f"{live_server.url}/api/v1/sessions", params={"car_id": "proc-kill"}, timeout=5).json()
    assert [s["session_id"] for s in sessions["items"]] == [sid]  # resumed, not a second session
    last = drain_and_stop(live_server, "proc-kill", sid, monitor, tmp_path / "proc-kill-outbox.sqlite")
    assert [f["seq"] for f in stored_frames(live_server.url, sid)] == list(range(1, last + 1))  # each once, no gap
    assert last >= at_kill + 20
