"""The outbox: seq allocation and continuity, ack deletion, renumbering, size cap, crash safety."""
from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

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
