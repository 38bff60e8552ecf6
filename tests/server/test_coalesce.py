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


def test_frames_within_the_interval_wait_for_its_end_and_leave_together():
    c = Coalescer(0.05)
    c.add("a", frames(1), 10.0)
    c.take_due(10.0)
    assert c.add("a", frames(2), 10.02) is True
    assert c.add("a", frames(3), 10.04) is False  # joins the waiting batch
    assert c.next_due() == 10.05
    assert c.take_due(10.049) == {}
    out = c.take_due(10.05)
    assert [f["seq"] for f in out["a"].frames] == [2, 3]
    assert out["a"].since == 10.02


def test_a_car_at_the_display_rate_is_never_held():
    c = Coalescer(0.0625)  # binary-exact, so "one interval later" is exactly the next frame's time
    for i in range(10):
        now = 10.0 + i * 0.0625
        c.add("a", frames(i), now)
        assert c.next_due() == now
        assert list(c.take_due(now)) == ["a"]


def test_rooms_are_independent_and_waiting_seqs_are_reported():
    c = Coalescer(0.05)
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
    assert set(c._last_sent) == {"x"}
