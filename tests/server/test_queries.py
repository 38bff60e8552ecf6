"""The hot paths do only their own work: statements counted on the real database engine."""
from __future__ import annotations

import re
import time
from contextlib import contextmanager
from typing import Iterator

from sqlalchemy import event

from dashboard.sessions import SessionManager


@contextmanager
def statements(manager: SessionManager) -> Iterator[list[str]]:
    """Every SQL statement the manager's engine runs inside the block (the writer's included)."""
    manager.core.writer.barrier()  # nothing queued before the block is counted in it
    seen: list[str] = []

    def record(_conn, _cursor, statement, *_args) -> None:  # noqa: ANN001 - SQLAlchemy's event signature
        if not statement.lstrip().upper().startswith(("BEGIN", "COMMIT", "ROLLBACK", "SAVEPOINT", "RELEASE")):
            seen.append(statement)

    engine = manager.store.engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
        manager.core.writer.barrier()
    finally:
        event.remove(engine, "before_cursor_execute", record)


def reads_of(seen: list[str], table: str) -> int:
    return sum(1 for s in seen if s.lstrip().upper().startswith("SELECT") and re.search(rf"\bFROM {table}\b", s))


def test_a_page_of_sessions_costs_the_same_queries_whatever_its_size():
    manager = SessionManager()
    try:
        for i in range(60):
            sid = manager.create_session(car_id=f"C{i}", name=f"s{i}")
            manager.update_setup(sid, {"wing": i})
            manager.end(sid)
        manager.cleanup_stale()  # past sessions, not in memory: the list reads them from the store
        counts = []
        for limit in (5, 50):
            with statements(manager) as seen:
                items, total = manager.list_sessions(limit, 0)
            assert len(items) == limit and total == 60 and items[0]["setup"] == {"wing": 59}
            counts.append(len(seen))
        assert counts[0] == counts[1] == 3, counts  # count, the rows, their current setups
    finally:
        manager.close()


def test_a_heartbeat_reads_nothing_and_saves_activity_at_most_once_a_second():
    manager = SessionManager()
    try:
        sid = manager.create_session(car_id="HB")
        manager.start(sid)
        with statements(manager) as seen:
            started = time.monotonic()
            for _ in range(100):
                manager.core.monitors.heartbeat(sid, {"backlog": 0, "rtt_ms": 10.0, "online": True})
            elapsed = time.monotonic() - started
        assert not [s for s in seen if s.lstrip().upper().startswith("SELECT")], seen
        assert len(seen) <= 1 + int(elapsed), seen  # the activity save, once a second
    finally:
        manager.close()


def test_a_snapshot_in_shared_mode_reads_the_session_once():
    manager = SessionManager(shared=True)
    try:
        sid = manager.create_session(car_id="SNAP")
        manager.start(sid)
        manager.update_setup(sid, {"wing": 1})
        t0 = time.time() - 5
        manager.ingest(sid, [{"seq": i, "t": t0 + i / 10, "channels": {"rpm": 1000.0 + i}} for i in range(20)])
        with statements(manager) as seen:
            snapshot = manager.snapshot(sid)
        assert [f["seq"] for f in snapshot["recent"]] == list(range(20))
        assert reads_of(seen, "sessions") == 1 and reads_of(seen, "setups") == 1, seen
        assert len(seen) <= 4, seen  # the session, its setup, frames newer than memory's, the alerts
    finally:
        manager.close()


def test_ingest_reads_nothing_for_new_frames():
    manager = SessionManager()
    try:
        sid = manager.create_session(car_id="HOT")
        manager.start(sid)
        t0 = time.time() - 10
        manager.ingest(sid, [{"seq": 0, "t": t0, "channels": {"rpm": 1.0}}])
        with statements(manager) as seen:
            for seq in range(1, 51):
                manager.ingest(sid, [{"seq": seq, "t": t0 + seq / 10, "channels": {"rpm": 1.0 + seq}}])
        assert not [s for s in seen if s.lstrip().upper().startswith("SELECT")], seen
    finally:
        manager.close()
