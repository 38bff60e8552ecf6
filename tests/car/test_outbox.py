"""The outbox: seq allocation and continuity, ack deletion, renumbering, size cap, crash safety."""
from __future__ import annotations

import logging
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from dashboard.car.outbox import Outbox

REPO = Path(__file__).resolve().parents[2]


def test_seq_continues_across_reopen_even_when_all_frames_were_acked(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite")
    assert [box.append(1.7e9 + i, {"rpm": float(i)}) for i in range(3)] == [1, 2, 3]
    assert box.delete([1, 2, 3]) == 3 and box.count() == 0
    box.close()
    box.close()  # safe twice
    box = Outbox(tmp_path / "o.sqlite")
    assert box.last_seq == 3 and box.append(1.7e9, {"rpm": None}) == 4
    assert box.oldest(10) == [{"seq": 4, "t": 1.7e9, "channels": {"rpm": None}}]


def test_live_and_backlog_views_and_delete(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite")
    for i in range(10):
        box.append(1.7e9 + i, {"speed": float(i)})
    assert [f["seq"] for f in box.oldest(3, upto=5)] == [1, 2, 3]
    assert [f["seq"] for f in box.oldest(10, upto=5)] == [1, 2, 3, 4, 5]
    assert [f["seq"] for f in box.after(7, 10)] == [8, 9, 10]
    assert box.delete([2, 3, 99]) == 2 and box.count() == 8
    assert box.oldest_t() == 1.7e9


def test_size_cap_drops_oldest_and_counts(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite", max_frames=5)
    for i in range(8):
        box.append(1.7e9 + i, {"rpm": float(i)})
    assert box.count() == 5 and box.dropped == 3
    assert [f["seq"] for f in box.oldest(10)] == [4, 5, 6, 7, 8]
    box.close()
    assert Outbox(tmp_path / "o.sqlite", max_frames=5).dropped == 3


def test_bump_seq_never_goes_back(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite")
    box.bump_seq(41)
    assert box.append(1.7e9, {}) == 42
    box.bump_seq(10)
    assert box.append(1.7e9, {}) == 43


def test_renumber_continues_from_the_given_seq_in_order_and_the_next_seq_follows(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite")
    for i in range(10):
        box.append(1.7e9 + i, {"rpm": float(i)})
    box.delete([1, 4, 6, 7])  # acked out of order (live first): gaps
    before = box.oldest(100)
    assert [f["seq"] for f in before] == [2, 3, 5, 8, 9, 10]
    assert box.renumber(101) == 6
    after = box.oldest(100)
    assert [f["seq"] for f in after] == [101, 102, 103, 104, 105, 106]
    assert [(f["t"], f["channels"]) for f in after] == [(f["t"], f["channels"]) for f in before]  # same order
    assert box.last_seq == 106 and box.count() == 6 and box.append(1.7e9, {}) == 107
    assert box.renumber(4) == 7  # down, onto seqs some frames hold right now: no clash
    assert [f["seq"] for f in box.oldest(100)] == list(range(4, 11))
    assert [f["channels"] for f in box.oldest(100)] == [f["channels"] for f in after] + [{}]
    box.close()
    box = Outbox(tmp_path / "o.sqlite")  # durable: the new seqs and the next one survive a restart
    assert [f["seq"] for f in box.oldest(100)] == list(range(4, 11)) and box.append(1.7e9, {}) == 11


def test_renumber_of_an_empty_outbox_moves_the_next_seq(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite")
    box.append(1.7e9, {})
    box.delete([1])
    assert box.renumber(51) == 0
    assert box.last_seq == 50 and box.append(1.7e9, {}) == 51


def test_renumber_and_append_from_another_thread_never_share_a_seq(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite")
    done = threading.Event()

    def assemble() -> None:
        for i in range(300):
            box.append(1.7e9 + i, {"rpm": float(i)})
        done.set()

    assembler = threading.Thread(target=assemble)
    assembler.start()
    first = 1000
    while not done.is_set():
        box.renumber(first)
        first += 1000
    assembler.join()
    frames = box.oldest(1000)
    assert [f["channels"]["rpm"] for f in frames] == [float(i) for i in range(300)]  # none lost, order kept
    seqs = [f["seq"] for f in frames]
    assert seqs == sorted(set(seqs)) and box.last_seq == seqs[-1]


def test_events_queue_is_durable_and_idempotent(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite")
    rid = box.add_event("dtc.set", {"code": "P0301"})
    assert box.add_event("dtc.set", {"code": "P0301"}, record_id=rid) == rid
    box.close()
    box = Outbox(tmp_path / "o.sqlite")
    events = box.events()
    assert [(e.event_type, e.payload) for e in events] == [("dtc.set", {"code": "P0301"})]
    box.delete_event(rid)
    assert box.events() == []


WRITER = textwrap.dedent("""
    import sys
    from dashboard.car.outbox import Outbox
    box = Outbox(sys.argv[1])
    while True:
        seq = box.append(1.7e9 + box.last_seq, {"rpm": float(box.last_seq)})
        if seq % 3 == 0:
            box.delete(range(seq - 2, seq - 1))  # ack some frames as the uplink would
        print(seq, flush=True)
""")


def test_kill_minus_nine_mid_write_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE, env=env, text=True)
    assert proc.stdout is not None
    deadline = time.monotonic() + 20
    while int(proc.stdout.readline() or 0) < 300:  # a blocking read of the writer's progress, not a sleep
        assert time.monotonic() < deadline and proc.poll() is None, "writer did not reach 300 frames"
    proc.send_signal(signal.SIGKILL)
    rest = proc.stdout.read().split()
    proc.wait(10)
    last_printed = int(rest[-1]) if rest else 300
    box = Outbox(path)
    # every append reported as done is on disk; the next seq follows the last stored one
    assert box.last_seq >= last_printed
    frames = box.oldest(10**6)
    seqs = [f["seq"] for f in frames]
    assert len(seqs) == len(set(seqs)) == box.count()
    last = box.last_seq
    expected = [s for s in range(1, last + 1) if s % 3 != 1 or s + 2 > last]
    if last % 3 == 0 and last - 2 in seqs:  # killed between the last append and its ack's delete
        expected = sorted([*expected, last - 2])
    assert seqs == expected  # exactly the frames not acked: none lost, none twice
    assert all(f["channels"] == {"rpm": float(f["seq"] - 1)} for f in frames)
    assert box.append(1.7e9, {}) == box.last_seq
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_frames_without_a_time_are_held_then_restamped_in_one_go(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite", boot_id="boot-a")
    assert box.append_many([(None, {"rpm": 1.0}, 100.0), (None, {"rpm": 2.0}, 100.1)]) == [1, 2]
    assert box.unstamped() == 2 and box.count() == 2 and box.oldest_t() is None
    assert box.oldest(10) == [] and box.after(0, 10) == []
    try:
        box.append_many([(None, {"rpm": 3.0})])
    except ValueError:
        pass
    else:
        raise AssertionError("a frame with neither t nor monotonic time was stored")
    box.close()
    box = Outbox(tmp_path / "o.sqlite", boot_id="boot-a")  # a monitor restart in the same boot: still stampable
    assert box.unstamped() == 2
    assert box.restamp(1.7e9) == 2 and box.unstamped() == 0
    assert box.append(1.7e9 + 100.2, {"rpm": 3.0}) == 3
    assert [(f["seq"], f["t"]) for f in box.oldest(10)] == [(1, 1.7e9 + 100.0), (2, 1.7e9 + 100.1), (3, 1.7e9 + 100.2)]


def test_frames_of_an_earlier_boot_that_never_learnt_the_time_are_kept_aside_not_sent(tmp_path: Path) -> None:
    box = Outbox(tmp_path / "o.sqlite", boot_id="boot-a")
    box.append_many([(None, {"rpm": 1.0}, 100.0), (1.7e9, {"rpm": 2.0})])
    box.close()
    box = Outbox(tmp_path / "o.sqlite", boot_id="boot-b")  # rebooted before any fix: boot-a's times are lost
    assert box.unstamped_moved == 1 and box.unstamped() == 0 and box.count() == 1
    assert box.restamp(1.8e9) == 0 and [f["seq"] for f in box.oldest(10)] == [2]
    with sqlite3.connect(tmp_path / "o.sqlite") as db:
        assert db.execute("SELECT seq, t, mono, boot FROM unstamped").fetchall() == [(1, None, 100.0, "boot-a")]


def test_an_outbox_from_before_unstamped_frames_is_upgraded_keeping_its_frames(tmp_path: Path) -> None:
    path = tmp_path / "o.sqlite"
    with sqlite3.connect(path) as db:
        db.executescript("""
            CREATE TABLE frames (seq INTEGER PRIMARY KEY, t REAL NOT NULL, channels TEXT NOT NULL);
            CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
            INSERT INTO frames VALUES (7, 1700000000.0, '{"rpm":1.0}');
            INSERT INTO meta VALUES ('last_seq', '7');
        """)
    box = Outbox(path)
    assert box.moved_aside is None and box.oldest(10) == [{"seq": 7, "t": 1.7e9, "channels": {"rpm": 1.0}}]
    assert box.append_many([(None, {}, 1.0)]) == [8]


def corrupt(path: Path, how: str) -> None:
    """Damage an outbox file as a power cut, a bad card or a wrong file would."""
    if how == "garbage":
        path.write_bytes(os.urandom(8192))
    elif how == "truncated":
        box = Outbox(path)
        box.append_many([(1.7e9 + i, {"rpm": float(i), "pad": float(i) * 1e6}) for i in range(3000)])
        box.close()
        size = path.stat().st_size
        with open(path, "r+b") as f:
            f.truncate(size // 2)
    elif how == "missing-table":
        with sqlite3.connect(path) as db:
            db.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
            db.execute("CREATE TABLE other (x)")
    else:
        raise ValueError(how)


@pytest.mark.parametrize("how", ["garbage", "truncated", "missing-table"])
def test_a_corrupt_outbox_is_moved_aside_and_a_fresh_one_opened(tmp_path: Path, how: str,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "o.sqlite"
    corrupt(path, how)
    damaged = path.read_bytes()
    with caplog.at_level(logging.ERROR, logger="dashboard.car.outbox"):
        box = Outbox(path)
    assert box.moved_aside is not None and box.moved_aside.name.startswith("o.sqlite.corrupt-")
    assert box.moved_aside.read_bytes() == damaged  # kept as it was, for a person to look at
    assert str(path) in caplog.text and str(box.moved_aside) in caplog.text
    assert box.count() == 0 and box.append(1.7e9, {"rpm": 1.0}) == 1  # a fresh outbox: seq from 1
    box.close()
    assert Outbox(path).moved_aside is None  # the fresh one is sound


def test_a_locked_outbox_is_not_taken_for_a_corrupt_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import dashboard.car.outbox as outbox_module

    path = tmp_path / "o.sqlite"
    Outbox(path).close()
    monkeypatch.setattr(outbox_module, "BUSY_TIMEOUT_S", 0.1)
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("PRAGMA journal_mode=DELETE")  # another process holds an exclusive lock
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(sqlite3.OperationalError):
            Outbox(path)
        assert not list(tmp_path.glob("*.corrupt-*"))
    finally:
        holder.execute("ROLLBACK")
        holder.close()
