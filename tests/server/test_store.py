"""The migrations create exactly the tables the models describe; the writer isolates a bad batch."""
from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from dashboard.server.models import Base
from dashboard.server.store import FrameWrite, Store
from dashboard.server.writer import Writer


def test_migrations_match_models(db_url):
    store = Store.from_url(db_url)
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_writer_commits_good_batches_when_one_fails(db_url):
    store = Store.from_url(db_url)
    store.insert_session({"id": "s1", "car_id": "C", "name": "", "status": "active", "created_at": 1.0,
                          "frame_count": 0})
    writer = Writer(store, batch_max=10_000)
    row = {"seq": 1, "t": 2.0, "received_at": 2.0, "channels": {"rpm": 1.0}}
    tickets = [writer.frames(FrameWrite("s1", [row], 1, 2.0)),
               writer.frames(FrameWrite("no-such-session", [row], 1, 2.0)),  # foreign key violation
               writer.frames(FrameWrite("s1", [{**row, "seq": 2}], 2, 2.0))]
    writer.start()
    try:
        assert tickets[0].wait(10) and tickets[2].wait(10)
        assert not tickets[1].wait(10) and tickets[1].error is not None
    finally:
        writer.stop()
    assert [f["seq"] for f in store.frames("s1")] == [1, 2]
    store.engine.dispose()


def test_database_allows_one_active_session_per_car(db_url):
    store = Store.from_url(db_url)
    base = {"car_id": "C7", "name": "", "created_at": 1.0, "frame_count": 0}
    store.insert_session({**base, "id": "a", "status": "active"})
    store.insert_session({**base, "id": "b", "status": "created"})
    store.insert_session({**base, "id": "c", "status": "ended"})
    event = {"record_id": None, "event_type": "session.started", "timestamp": 1.0, "payload": {}, "received_at": 1.0}
    assert store.transition("b", {"status": "active"}, event) is None  # refused by the partial unique index
    assert store.get_session("b")["status"] == "created"
    assert store.transition("a", {"status": "stopped"}, event) is not None
    assert store.transition("b", {"status": "active"}, event) is not None
    store.engine.dispose()


def test_writer_says_how_long_it_has_been_stuck_and_when_it_last_failed(tmp_path):
    """What /healthz reads to answer at once while another process holds the database's write lock."""
    import sqlite3

    from dashboard.errors import Unavailable
    from tests.waiting import wait_for

    store = Store.from_url(f"sqlite:///{tmp_path}/test.db")
    writer = Writer(store)
    writer.start()
    lock = sqlite3.connect(tmp_path / "test.db", isolation_level=None)
    try:
        assert writer.busy_s == 0.0 and writer.failed_at is None
        writer.call(store.write_check)
        lock.execute("BEGIN EXCLUSIVE")
        ticket = writer.submit(store.write_check)
        wait_for(lambda: writer.busy_s > 0.5, 5, "the writer waiting on the lock")
        assert not ticket.done
        assert not ticket.wait(30) and isinstance(ticket.error, Unavailable)  # past the busy timeout
        assert writer.failed_at is not None and writer.busy_s == 0.0
        lock.execute("COMMIT")
        writer.call(store.write_check)
    finally:
        lock.close()
        writer.stop()
        store.engine.dispose()


def test_under_a_lock_queued_writes_fail_at_once_and_background_ones_are_kept_until_it_ends(tmp_path):
    """A car's frames queued behind a batch waiting on the lock fail with it (they would wait a second busy
    timeout, past the uplink's limit); a lap, alert or log entry nobody would send again is written once it ends."""
    import sqlite3
    import time

    from dashboard.errors import Unavailable
    from tests.waiting import wait_for

    store = Store.from_url(f"sqlite:///{tmp_path}/test.db")
    store.insert_session({"id": "s1", "car_id": "C", "name": "", "status": "active", "created_at": 1.0,
                          "frame_count": 0})
    event = {"record_id": None, "event_type": "lap.completed", "timestamp": 1.0, "payload": {}, "received_at": 1.0}
    writer = Writer(store)
    writer.start()
    lock = sqlite3.connect(tmp_path / "test.db", isolation_level=None)
    try:
        lock.execute("BEGIN EXCLUSIVE")
        first = writer.submit(store.write_check)
        wait_for(lambda: writer.busy_s > 0.2, 5, "the writer waiting on the lock")
        row = {"seq": 1, "t": 2.0, "received_at": 2.0, "channels": {"rpm": 1.0}}
        frames = writer.frames(FrameWrite("s1", [row], 1, 2.0))
        logged = writer.submit(lambda conn: store.add_event("s1", event, conn=conn), background=True)
        assert not first.wait(30) and isinstance(first.error, Unavailable)
        failed_at = time.monotonic()
        assert not frames.wait(30) and isinstance(frames.error, Unavailable)
        assert time.monotonic() - failed_at < 1.0  # with the first, not a busy timeout later
        assert not logged.done  # kept, tried again while the lock lasts
        wait_for(lambda: writer.failures >= 2, 30, "the kept entry tried again")
        assert not logged.done
        lock.execute("COMMIT")
        assert logged.wait(30) and logged.error is None
    finally:
        lock.close()
        writer.stop()
    assert [e["event_type"] for e in store.events("s1")] == ["lap.completed"] and store.frames("s1") == []
    store.engine.dispose()
