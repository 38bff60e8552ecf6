"""When a room's frames go out (pure: time is passed in)."""
from dashboard.server.coalesce import Coalescer


def frames(*seqs: int) -> list[dict]:
    return [{"seq": s} for s in seqs]


def test_first_frames_after_a_quiet_interval_are_due_at_once():
    c = Coalescer(0.05)
    assert c.add("a", frames(1), now=10.0) is True
    assert c.next_due() == 10.0
    out = c.take_due(10.0)
    assert [f["seq"] for f in out["a"].frames] == [1]
    assert c.next_due() is None


def test_a_faster_car_is_held_to_one_message_per_interval_after_its_burst():
    c = Coalescer(0.0625)
    sent = []
    for i in range(40):  # 4 frames per interval
        now = 10.0 + i * 0.015625
        c.add("a", frames(i), now)
        due = c.next_due()
        if due is not None and due <= now:
            sent.append((now, [f["seq"] for f in c.take_due(now)["a"].frames]))
    assert sent[0] == (10.0, [0]) and sent[1] == (10.015625, [1])  # the saved-up burst
    gaps = [b[0] - a[0] for a, b in zip(sent[2:], sent[3:], strict=False)]
    assert gaps and all(abs(g - 0.0625) < 1e-9 for g in gaps)  # then one message per interval
    seqs = [s for _, batch in sent for s in batch]
    assert seqs == list(range(len(seqs)))  # nothing lost or reordered


def test_frames_waiting_for_a_token_leave_together():
    c = Coalescer(0.0625)
    for t in (10.0, 10.0):
        c.add("a", frames(0), t)
        c.take_due(t)  # burst spent
    assert c.add("a", frames(2), 10.03125) is True
    assert c.add("a", frames(3), 10.046875) is False  # joins the waiting batch
    assert c.next_due() == 10.0625
    assert c.take_due(10.06) == {}
    out = c.take_due(10.0625)
    assert [f["seq"] for f in out["a"].frames] == [2, 3]
    assert out["a"].since == 10.03125


def test_a_car_at_the_display_rate_is_never_held():
    c = Coalescer(0.05)
    for i in range(50):
        now = 10.0 + i * 0.0502 + (0.004 if i % 3 else 0.0)  # a hair slower than the interval, with jitter
        c.add("a", frames(i), now)
        assert c.next_due() == now
        assert list(c.take_due(now)) == ["a"]


def test_rooms_are_independent_and_waiting_seqs_are_reported():
    c = Coalescer(0.05)
    for _ in range(2):
        c.add("a", frames(1), 10.0)
        c.take_due(10.0)
    c.add("a", frames(2), 10.01)
    c.add("b", frames(7, 8), 10.01)
    assert c.next_due() == 10.01
    assert list(c.take_due(10.01)) == ["b"]
    assert c.waiting_seqs("a") == {2}
    assert c.waiting_seqs("b") == set()
    everything = c.take_all(10.02)
    assert list(everything) == ["a"]
    assert c.pending == {}


def test_rooms_quiet_for_an_interval_are_forgotten():
    c = Coalescer(0.05)
    for i in range(100):
        c.add(f"room{i}", frames(1), 10.0)
    c.take_due(10.0)
    c.add("x", frames(1), 11.0)
    c.take_due(11.0)
    assert set(c._buckets) == {"x"}


def test_with_a_share_a_room_is_held_only_when_its_fan_out_would_take_more_than_its_share():
    c = Coalescer(0.05, share=0.2)
    c.record("costly", 0.006, 9.0)
    assert c.interval("costly") == 0.0  # the loop keeps up: nothing is held, however costly the room
    c.loaded = True
    for i in range(20):  # a car at 50 Hz, a cheap room (20 viewers: 0.2 ms an emit): every frame at once
        now = 10.0 + i * 0.02
        assert c.add("cheap", frames(i), now) and c.next_due() == now
        c.take_due(now)
        c.record("cheap", 0.0002, now)
    assert c.interval("cheap") == 0.0002 / 0.2
    for i in range(20):  # the same car, a room whose emit takes 6 ms: held to one message per 30 ms
        now = 20.0 + i * 0.02
        c.add("costly", frames(i), now)
        for room in c.take_due(now):
            c.record(room, 0.006, now)
    assert abs(c.interval("costly") - 0.03) < 1e-9
    c.record("huge", 1.0, 30.0)
    assert c.interval("huge") == 0.05  # never more than the configured interval
    c.forget("costly")
    assert c.interval("costly") == 0.0
