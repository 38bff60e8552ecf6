"""SessionManager in process: the original API, lifecycle rules, statistics, concurrency, persistence."""
from __future__ import annotations

import threading
import time
import uuid

import pytest

from dashboard.errors import Conflict, InvalidInput, NotFound
from dashboard.server.store import Store
from dashboard.sessions import SessionManager


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: float = 1.8e9) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_original_api_in_memory():
    manager = SessionManager()
    sid = manager.create_session()
    assert uuid.UUID(sid).version == 4
    session = manager.get_session(sid)
    for key in ("session_id", "created_at", "setup", "setup_timestamp", "telemetry", "last_update"):
        assert key in session
    assert session["created_at"].endswith("+00:00")
    assert manager.get_session(str(uuid.uuid4())) is None
    assert manager.get_session("garbage") is None
    manager.update_setup(sid, {"rear_wing": 7}, 1.8e9)
    manager.update_telemetry(sid, {"rpm": 6000, "speed": 120.5})
    manager.update_telemetry(sid, {"rpm": 6100})
    session = manager.get_session(sid)
    assert session["setup"] == {"rear_wing": 7} and session["setup_timestamp"].startswith("2027-01-15")
    assert session["telemetry"] == {"rpm": 6100.0, "speed": 120.5} and session["last_update"]
    assert manager.get_active_sessions() == []
    manager.start(sid)
    assert manager.get_active_sessions() == [sid]
    assert manager.delete_session(sid) is True and manager.get_session(sid) is None
    assert manager.delete_session(sid) is False
    with pytest.raises(NotFound):
        manager.update_setup(sid, {}, None)
    with pytest.raises(InvalidInput):
        manager.update_telemetry(manager.create_session(), {"rpm": float("nan")})


def test_concurrent_updates_from_many_threads_lose_nothing():
    manager = SessionManager()
    sid = manager.create_session()
    errors = []

    def writer(n: int) -> None:
        try:
            for i in range(100):
                manager.update_telemetry(sid, {"rpm": float(n * 1000 + i)})
                manager.get_session(sid)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert manager.get_session(sid)["stats"]["frames"] == 800
    assert [f["seq"] for f in manager.frames(sid, limit=1000)] == list(range(800))


def test_expiry_stats_cleanup_and_history():
    clock = Clock()
    manager = SessionManager(idle_s=300, clock=clock)
    sid = manager.create_session(car_id="C1")
    manager.start(sid)
    manager.ingest(sid, [{"seq": i, "t": clock.now + i / 10, "channels": {"rpm": 1.0}} for i in range(50)])
    clock.now += 10
    stats = manager.get_session(sid)["stats"]
    assert stats["frames"] == 50 and stats["duration_s"] == 10.0 and stats["update_rate_hz"] == 5.0
    clock.now += 289  # 299 s since the last frame
    assert manager.expire_idle() == []
    clock.now += 2
    assert manager.expire_idle() == [sid]
    session = manager.get_session(sid)
    assert session["status"] == "expired" and session["end_reason"] == "idle"
    assert [s["session_id"] for s in manager.history()] == [sid]
    assert manager.cleanup_stale() == 1
    assert manager.get_session(sid)["status"] == "expired"  # evicted from memory, still in the store


def test_lifecycle_conflicts():
    manager = SessionManager()
    a, b = manager.create_session(car_id="C9"), manager.create_session(car_id="C9")
    manager.start(a)
    with pytest.raises(Conflict) as exc:
        manager.start(b)
    assert exc.value.extra["session_id"] == a
    first = manager.start_for_car("C9", record_id="r1")
    assert first["session_id"] == a  # resumes the car's active session
    manager.end(a)
    created = manager.start_for_car("C9", record_id="r2")
    assert created["session_id"] not in (a, b) and created["status"] == "active"
    assert manager.start_for_car("C9", record_id="r2")["session_id"] == created["session_id"]


def test_listeners_hear_frames_and_status(tmp_path):
    store = Store.from_url(f"sqlite:///{tmp_path}/s.db")
    manager = SessionManager(store)
    heard = []
    manager.listeners.append(lambda kind, payload: heard.append(kind))
    try:
        sid = manager.create_session(car_id="C2")
        manager.start(sid)
        t = time.time()
        result = manager.ingest(sid, [{"seq": 1, "t": t, "channels": {"rpm": 1.0}}, {"seq": "x"}])
        assert result.ticket.wait(5) and result.acked_seq == 1 and len(result.rejected) == 1
        again = manager.ingest(sid, [{"seq": 1, "t": t, "channels": {"rpm": 1.0}}])
        assert again.accepted == [] and again.duplicates == 1 and again.acked_seq == 1
    finally:
        manager.close()
    assert heard.count("frames") == 1 and "session" in heard and "command" in heard
    reopened = SessionManager(Store.from_url(f"sqlite:///{tmp_path}/s.db"))
    try:
        assert reopened.get_active_sessions() == [sid]
        assert reopened.get_session(sid)["telemetry"] == {"rpm": 1.0}
    finally:
        reopened.close()


def test_recent_history_is_bounded_by_the_window():
    manager = SessionManager(recent_window_s=60.0)
    sid = manager.create_session(car_id="C3")
    t0 = time.time() - 200
    for start in range(0, 4000, 500):  # 200 s at 20 Hz
        manager.ingest(sid, [{"seq": s, "t": t0 + s / 20, "channels": {"rpm": 1.0}} for s in range(start, start + 500)])
    live = manager.core.cache.get(sid)
    assert len(live.recent) <= 60 * 20 + 1  # 60 s at 20 Hz, not the 6000-frame cap
    recent = manager.recent(sid)
    assert recent[-1]["seq"] == 3999 and recent[-1]["t"] - recent[0]["t"] <= 60.0
