"""The monitor obeys the server's session lifecycle and its retryable errors (real Uplink and ServiceManager).

The server is ``tests/car/monitor_server.py``: a real python-socketio server on a loopback port playing
``/monitor``, with the pit's side (a session's status changed, a ``command``) and scripted answers.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dashboard.car.monitor import ServiceManager
from dashboard.car.outbox import Outbox
from dashboard.car.source import ChannelStore
from dashboard.car.uplink import Uplink
from tests.car.monitor_server import ScriptedMonitor
from tests.waiting import wait_for

CAR = "car-7"
T0 = 1.7e9
TIMEOUT_S = 10.0
RATE_HZ = 50.0  # frames come quickly, so "collecting again" shows at once


class Monitor:
    """A ServiceManager (no sources: a store that always has a channel) with a real Uplink, run in a thread."""

    def __init__(self, server: ScriptedMonitor, path: Path, *, session_id: str | None = None, waiting: int = 0,
                 collect: bool = True, **uplink_options: Any) -> None:
        self.outbox = Outbox(path)
        if session_id is not None:  # a monitor that ran before in this session
            self.outbox.set_meta("uplink.session_id", session_id)
            self.outbox.set_meta("uplink.record_id", "record-of-an-earlier-run")
        for i in range(waiting):  # frames made before this run, not yet sent
            self.outbox.append(T0 + i, {"speed": float(i)})
        store = ChannelStore()
        store.update({"rpm": 3000.0})
        options = {"heartbeat_s": 0.2, **uplink_options}
        self.uplink = Uplink(server.url, CAR, self.outbox, api_key=server.api_key, **options)
        self.manager = ServiceManager([], store, self.outbox, self.uplink, rate_hz=RATE_HZ)
        self.collect = collect
        self._stop = threading.Event()
        self._runner: threading.Thread | None = None

    def start(self) -> "Monitor":
        """Run the manager (with collecting) or only the uplink."""
        if self.collect:
            self._runner = threading.Thread(target=self.manager.run, args=(self._stop,), daemon=True)
            self._runner.start()
        else:
            self.uplink.start()
        return self

    def stop(self) -> None:
        """Stop everything; the outbox stays open for the test's last looks."""
        self._stop.set()
        if self._runner is not None:
            self._runner.join(30)
            assert not self._runner.is_alive()
        self.uplink.stop()

    def made_more(self, than: int) -> bool:
        """The assembler made frames beyond seq ``than``."""
        return self.outbox.last_seq > than


@pytest.fixture
def monitor(monitor_server: ScriptedMonitor, tmp_path: Path) -> Iterator:
    """Factory of started monitors against the scripted server; all stopped at the end of the test."""
    made: list[Monitor] = []

    def make(**options: Any) -> Monitor:
        m = Monitor(monitor_server, tmp_path / f"outbox{len(made)}.sqlite", **options)
        made.append(m)
        return m.start()

    yield make
    for m in made:
        m.stop()
        m.outbox.close()


def telemetry_seqs(server: ScriptedMonitor, since: int = 0) -> list[list[int]]:
    """The seqs of every telemetry batch received (from call index ``since`` on)."""
    return [[f["seq"] for f in c.data["frames"]] for c in server.calls_of("telemetry", since)]


def heartbeats_after(server: ScriptedMonitor, index: int, n: int) -> bool:
    """At least ``n`` heartbeats arrived after call index ``index``."""
    return len(server.calls_of("heartbeat", index)) >= n


# --------------------------------------------------- a. the session.start answer
def test_a_session_the_pit_stopped_while_away_is_resumed_paused_until_a_start(monitor_server, monitor) -> None:
    sid = monitor_server.add_session(CAR, "stopped")
    m = monitor(session_id=sid, waiting=5)
    wait_for(lambda: m.uplink.paused and not m.manager.collecting, TIMEOUT_S, "the monitor paused")
    assert m.uplink.session_id == sid and m.uplink.want_session  # still attached to that session
    paused_at = len(monitor_server.calls)
    held = m.outbox.last_seq
    m.uplink.queue_event("dtc.set", {"code": "P0301", "description": "misfire", "at_start": False})
    wait_for(lambda: monitor_server.calls_of("event", paused_at) and heartbeats_after(monitor_server, paused_at, 3),
             TIMEOUT_S, "events and heartbeats going on while paused")
    assert not m.manager.assembler.running and m.outbox.last_seq == held  # collecting stopped
    assert telemetry_seqs(monitor_server) == [] and m.outbox.count() == held  # no frames sent; they wait
    assert monitor_server.car_sessions(CAR) == [sid]

    monitor_server.set_status(sid, "active")
    monitor_server.command("start", sid)
    wait_for(lambda: m.manager.collecting and len(monitor_server.stored_seqs(sid)) >= held + 20, TIMEOUT_S,
             "collecting and sending again")
    stored = monitor_server.stored_seqs(sid)
    assert stored == list(range(1, len(stored) + 1))  # the held frames first, then the new ones: no gap
    assert not m.uplink.paused


def test_a_session_the_pit_ended_while_away_starts_nothing_until_a_start_names_one(monitor_server, monitor) -> None:
    old = monitor_server.add_session(CAR, "ended")
    m = monitor(session_id=old, waiting=5)
    wait_for(lambda: not m.uplink.want_session and not m.manager.collecting, TIMEOUT_S, "the monitor to wait")
    wait_for(lambda: m.outbox.count() == 0, TIMEOUT_S, "the frames offered to the ended session")
    assert monitor_server.car_sessions(CAR) == [old]  # the car started no session of its own
    assert len(monitor_server.calls_of("session.start")) == 1
    assert monitor_server.stored_seqs(old) == []
    assert sorted(monitor_server.refused[old]) == list(range(1, m.outbox.last_seq + 1))  # each offered once
    waited_at = len(monitor_server.calls)
    wait_for(lambda: heartbeats_after(monitor_server, waited_at, 2), TIMEOUT_S, "heartbeats while waiting")

    new = monitor_server.add_session(CAR, "active")  # the pit creates and starts the next session
    monitor_server.command("start", new)
    wait_for(lambda: m.manager.collecting and len(monitor_server.stored_seqs(new)) >= 20, TIMEOUT_S,
             "frames in the new session")
    assert m.uplink.session_id == new and monitor_server.car_sessions(CAR) == [old, new]
    stored = monitor_server.stored_seqs(new)
    assert stored == list(range(stored[0], stored[0] + len(stored))) and stored[0] > 5  # seq goes on


def test_a_session_that_expired_while_away_is_replaced_by_a_fresh_one(monitor_server, monitor) -> None:
    old = monitor_server.add_session(CAR, "expired")
    m = monitor(session_id=old, waiting=5)
    wait_for(lambda: m.uplink.session_id not in (None, old), TIMEOUT_S, "a new session")
    new = m.uplink.session_id
    wait_for(lambda: len(monitor_server.stored_seqs(new)) >= 20, TIMEOUT_S, "frames in the new session")
    first, second = (c.data for c in monitor_server.calls_of("session.start")[:2])
    assert first["session_id"] == old and "session_id" not in second
    assert second["record_id"] != first["record_id"]  # a new start, not a replay of the old one
    assert m.manager.collecting and not m.uplink.paused
    assert monitor_server.stored_seqs(new)[:5] == [1, 2, 3, 4, 5]


# ---------------------------------------------------- b. the telemetry ack
def test_a_stopped_session_in_a_telemetry_ack_pauses_until_a_start(monitor_server, monitor) -> None:
    m = monitor()
    wait_for(lambda: m.uplink.session_id and len(monitor_server.stored_seqs(m.uplink.session_id)) >= 10,
             TIMEOUT_S, "frames flowing")
    sid = m.uplink.session_id
    monitor_server.set_status(sid, "stopped")  # the pit stopped it; the command is lost on the way
    wait_for(lambda: m.uplink.paused and not m.manager.collecting, TIMEOUT_S, "the monitor paused")
    paused_at = len(monitor_server.calls)
    wait_for(lambda: heartbeats_after(monitor_server, paused_at, 3), TIMEOUT_S, "heartbeats while paused")
    assert telemetry_seqs(monitor_server, paused_at) == []
    assert monitor_server.refused[sid]  # the batch that found the session stopped

    monitor_server.set_status(sid, "active")
    monitor_server.command("start", sid)
    held = m.outbox.last_seq
    wait_for(lambda: m.manager.collecting and max(monitor_server.stored_seqs(sid)) > held + 10, TIMEOUT_S,
             "collecting and sending again")
    m.stop()
    stored, refused = monitor_server.stored_seqs(sid), monitor_server.refused[sid]
    waiting = [f["seq"] for f in m.outbox.oldest(10_000)]
    assert sorted(stored + refused + waiting) == list(range(1, m.outbox.last_seq + 1))  # each seq exactly once
    assert refused == list(range(refused[0], refused[-1] + 1))  # only the one batch sent into the stop


def test_an_ended_session_in_a_telemetry_ack_stops_collecting_and_starts_nothing(monitor_server, monitor) -> None:
    m = monitor()
    wait_for(lambda: m.uplink.session_id and monitor_server.stored_seqs(m.uplink.session_id), TIMEOUT_S, "frames")
    sid = m.uplink.session_id
    monitor_server.set_status(sid, "ended")
    wait_for(lambda: not m.uplink.want_session and not m.manager.collecting, TIMEOUT_S, "collecting stopped")
    wait_for(lambda: m.outbox.count() == 0, TIMEOUT_S, "the last frames offered to the ended session")
    ended_at = len(monitor_server.calls)
    wait_for(lambda: heartbeats_after(monitor_server, ended_at, 2), TIMEOUT_S, "heartbeats go on")
    assert monitor_server.car_sessions(CAR) == [sid] and len(monitor_server.calls_of("session.start")) == 1


def test_an_expired_session_in_a_telemetry_ack_goes_on_in_a_fresh_session(monitor_server, monitor) -> None:
    m = monitor()
    wait_for(lambda: m.uplink.session_id and monitor_server.stored_seqs(m.uplink.session_id), TIMEOUT_S, "frames")
    old = m.uplink.session_id
    monitor_server.set_status(old, "expired")
    wait_for(lambda: m.uplink.session_id not in (None, old), TIMEOUT_S, "a fresh session")
    new = m.uplink.session_id
    wait_for(lambda: len(monitor_server.stored_seqs(new)) >= 10, TIMEOUT_S, "frames in the fresh session")
    assert m.manager.collecting and monitor_server.car_sessions(CAR) == [old, new]
    assert min(monitor_server.stored_seqs(new)) > max(monitor_server.stored_seqs(old))  # seq goes on


# ------------------------------------------------------------ c. unavailable
UNAVAILABLE = {"ok": False, "error": {"code": "unavailable", "message": "database is locked", "retry_after": 0.3}}


@pytest.mark.parametrize("event", ["session.start", "telemetry", "heartbeat"])
def test_unavailable_makes_the_same_call_again_after_retry_after_on_the_same_connection(
        monitor_server, monitor, event) -> None:
    monitor_server.script(event, UNAVAILABLE)
    m = monitor(waiting=10, collect=False)
    wait_for(lambda: len(monitor_server.calls_of(event)) >= 2 and m.outbox.count() == 0, TIMEOUT_S,
             "the call made again and every frame sent")
    first, second = monitor_server.calls_of(event)[:2]
    assert second.data == first.data and second.sid == first.sid  # the same call, not a reconnect
    assert second.at - first.at >= 0.3
    assert len(monitor_server.connections) == 1 and m.uplink.connects == 1 and m.uplink.unavailable_waits == 1
    assert m.uplink.session_id and monitor_server.stored_seqs(m.uplink.session_id) == list(range(1, 11))


def test_stop_interrupts_the_wait_for_an_unavailable_server(monitor_server, monitor) -> None:
    monitor_server.script("telemetry", {"ok": False, "error": {"code": "unavailable", "retry_after": 3600}})
    m = monitor(waiting=10, collect=False)
    wait_for(lambda: monitor_server.calls_of("telemetry"), TIMEOUT_S, "the refused batch")
    stopped = threading.Thread(target=m.uplink.stop)
    stopped.start()
    stopped.join(5)  # the wait would be 30 s (retry_after is capped); stop() cuts it short
    assert not stopped.is_alive() and not m.uplink.running
    assert len(monitor_server.calls_of("telemetry")) == 1 and m.outbox.count() == 10  # nothing dropped


# -------------------------------------------------------------- d. too_large
@pytest.mark.parametrize("tell, sizes_refused", [(True, [20]), (False, [20, 10])])
def test_too_large_splits_the_batch_and_keeps_the_size_for_the_connection(
        monitor_server, monitor, tell, sizes_refused) -> None:
    monitor_server.max_frames, monitor_server.tell_max_frames = 7, tell
    m = monitor(waiting=45, collect=False, batch_max=20)
    wait_for(lambda: m.outbox.count() == 0, TIMEOUT_S, "every frame sent")
    sid = m.uplink.session_id
    assert monitor_server.stored_seqs(sid) == list(range(1, 46))
    batches = telemetry_seqs(monitor_server)
    refused = [b for b in batches if len(b) > 7]
    assert [len(b) for b in refused] == sizes_refused and batches[0] == list(range(1, 21))
    limit = 7 if tell else 5  # max_frames, or halved until it fits (20 → 10 → 5)
    accepted = batches[len(refused):]
    assert all(len(b) <= limit for b in accepted) and len(accepted[0]) == limit
    assert len(monitor_server.connections) == 1  # split on the same connection

    reconnected_at = len(monitor_server.calls)
    monitor_server.drop_connections()
    wait_for(lambda: m.uplink.connects == 2 and m.uplink.state.value == "connected", TIMEOUT_S, "reconnected")
    for i in range(20):
        m.outbox.append(T0 + 100 + i, {"speed": 1.0})
    m.uplink.wake()
    wait_for(lambda: m.outbox.count() == 0, TIMEOUT_S, "the new frames sent")
    assert len(telemetry_seqs(monitor_server, reconnected_at)[0]) == 20  # a new connection tries the full size


# ----------------------------------------------------------- e. seq_conflict
def test_seq_conflict_renumbers_the_outbox_after_the_servers_seqs_and_resends(
        monitor_server, monitor, caplog) -> None:
    earlier = [{"seq": s, "t": T0 - 100 + s, "channels": {"speed": -1.0}} for s in range(1, 31)]
    sid = monitor_server.add_session(CAR, "active", frames=earlier)  # what the monitor sent before its reinstall
    with caplog.at_level(logging.WARNING, logger="dashboard.car.uplink"):
        m = monitor(waiting=12)  # a fresh outbox: its seqs start at 1 again
        wait_for(lambda: len(monitor_server.stored_seqs(sid)) >= 30 + 12 + 20, TIMEOUT_S, "frames after the conflict")
        m.stop()
    stored = monitor_server.stored(sid)
    seqs = [f["seq"] for f in stored]
    waiting = [f["seq"] for f in m.outbox.oldest(10_000)]
    assert seqs == list(range(1, len(seqs) + 1)) and seqs[-1] + len(waiting) == m.outbox.last_seq
    assert stored[:30] == earlier  # what the server held is untouched
    offline = [f["channels"]["speed"] for f in stored[30:] if f["channels"].get("speed", -1.0) >= 0]
    assert offline == [float(i) for i in range(12)]  # the reinstalled monitor's frames, once each, in order
    conflicts = [r.getMessage() for r in caplog.records if "seq conflict" in r.getMessage()]
    assert len(conflicts) == 1 and CAR in conflicts[0] and sid in conflicts[0]
    assert monitor_server.car_sessions(CAR) == [sid] and len(monitor_server.connections) == 1


# ------------------------------------------------------ f. any other refusal
def test_another_refusal_of_a_batch_still_reconnects_and_sends_it_again(monitor_server, monitor) -> None:
    monitor_server.script("telemetry", {"ok": False, "error": {"code": "internal", "message": "oops"}})
    m = monitor(waiting=10, collect=False)
    wait_for(lambda: m.outbox.count() == 0, TIMEOUT_S, "every frame sent")
    first, second = monitor_server.calls_of("telemetry")[:2]
    assert first.data == second.data and first.sid != second.sid  # as before: a new connection, nothing dropped
    assert m.uplink.connects == 2 and monitor_server.stored_seqs(m.uplink.session_id) == list(range(1, 11))


def test_live_frames_made_long_before_the_newest_go_as_backfill(monitor_server, monitor) -> None:
    """Frames left from before a long pause (the pit stopped the session, then started it a day later) are not
    live: sent as live a server refuses them past its max_clock_behind_s (clock_behind) and they would be lost."""
    import time as _time

    from dashboard.car.uplink import LIVE_SPAN_S

    m = monitor(collect=False)
    wait_for(lambda: m.uplink.session_id is not None and m.uplink.link.connected, TIMEOUT_S, "the uplink connected")
    since = len(monitor_server.calls)
    now = _time.time()
    late = [m.outbox.append(now - 86400 - 10 + i, {"speed": float(i)}) for i in range(3)]
    fresh = [m.outbox.append(now + i * 0.1, {"speed": 50.0}) for i in range(2)]
    m.uplink.wake()
    wait_for(lambda: sum(telemetry_seqs(monitor_server, since), []) == late + fresh, TIMEOUT_S, "the frames sent")
    sent = {f["seq"]: bool(c.data.get("backfill")) for c in monitor_server.calls_of("telemetry", since)
            for f in c.data["frames"]}
    assert [sent[s] for s in late] == [True] * 3 and [sent[s] for s in fresh] == [False] * 2
    assert LIVE_SPAN_S < 86400  # what the server's clock_behind default allows live
