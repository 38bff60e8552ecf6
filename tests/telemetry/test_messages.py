"""Pit-to-car messages: the model's checks, the state machine and its dedupe rule, canned messages, the inbox."""
from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dashboard.errors import Conflict, DashboardError, InvalidInput
from dashboard.telemetry import messages as m
from dashboard.telemetry.geo import LocalProjection
from dashboard.telemetry.laps import Line
from dashboard.telemetry.pitlane import PIT_STOP, PitDetector, PitEvent, PitLane

T0 = 1_700_000_000.0
PROPERTY = settings(max_examples=200, deadline=None)


def message(**options: Any) -> m.Message:
    options.setdefault("created_by", "k7f3a")
    options.setdefault("now", T0)
    return m.new_message("car-7", options.pop("text", "FUEL OK?"), **options)


def states(record: m.MessageRecord) -> list[tuple[str, bool]]:
    return [(e.state, e.implied) for e in record.events]


# ------------------------------------------------------------------ the message
def test_new_message_checks_and_fills_every_field():
    msg = message(text="  box   this lap ", asks_answer=True, priority="urgent", close_on="box", ttl_s=120)
    assert msg.text == "box this lap"  # spaces collapsed
    assert uuid.UUID(msg.id).version == 4
    assert msg.short_id == uuid.UUID(msg.id).int >> 96 and 0 < msg.short_id < 2**32
    assert (msg.created_t, msg.expires_t) == (T0, T0 + 120)
    assert msg.answers() == ("yes", "no")
    assert message().expires_t == T0 + m.DEFAULT_TTL_S
    assert m.Message.from_dict(json.loads(json.dumps(msg.to_dict()))) == msg


def test_text_limits_are_the_lora_budget():
    assert message(text="X" * m.MAX_TEXT_CHARS).text == "X" * 40
    with pytest.raises(m.MessageError, match="41 characters") as info:
        message(text="X" * 41)
    assert info.value.field == "text" and isinstance(info.value, InvalidInput)
    assert message(text="É" * 24).text == "É" * 24  # 48 bytes of UTF-8
    with pytest.raises(m.MessageError, match="48 bytes"):
        message(text="É" * 25)
    for bad in ("", "   ", "PUSH\x00", "PUSH\u200b", 42, None):
        with pytest.raises(m.MessageError):
            message(text=bad)


@pytest.mark.parametrize("field, options", [
    ("priority", {"priority": "asap"}),
    ("close_on", {"close_on": "pit"}),
    ("asks_answer", {"asks_answer": "yes"}),
    ("ttl_s", {"ttl_s": 0}),
    ("ttl_s", {"ttl_s": m.MAX_TTL_S + 1}),
    ("expires_t", {"expires_t": T0 - 1}),
    ("created_t", {"now": float("nan")}),
    ("created_t", {"now": 12.0}),
    ("created_by", {"created_by": ""}),
    ("created_by", {"created_by": "x" * 65}),
    ("id", {"message_id": "not-a-uuid"}),
    ("id", {"message_id": 12}),
])
def test_a_bad_field_is_refused_naming_it(field: str, options: dict[str, Any]):
    with pytest.raises(m.MessageError) as info:
        message(**options)
    assert info.value.field == field
    assert info.value.to_dict()["code"] == "invalid_message"


def test_a_short_id_already_taken_by_the_car_is_drawn_again(monkeypatch: pytest.MonkeyPatch):
    first, second = uuid.UUID("11111111-0000-4000-8000-000000000000"), uuid.UUID("22222222-0000-4000-8000-000000000000")
    draws = iter([first, second])
    monkeypatch.setattr(m.uuid, "uuid4", lambda: next(draws))
    msg = message(taken={0x11111111})
    assert msg.id == str(second) and msg.short_id == 0x22222222


def test_short_id_is_never_zero():
    assert m.short_id_of("00000000-1234-4000-8000-000000000000") == 1
    with pytest.raises(m.MessageError):
        m.short_id_of("nope")


def test_from_dict_refuses_what_is_not_a_message():
    good = message().to_dict()
    for bad in (None, [], {**good, "short_id": good["short_id"] + 1}, {k: v for k, v in good.items() if k != "text"}):
        with pytest.raises(m.MessageError):
            m.Message.from_dict(bad)


# ------------------------------------------------------------------ canned messages
def test_default_canned_messages():
    texts = [c.text for c in m.DEFAULT_CANNED]
    assert {"BOX THIS LAP", "PUSH", "FUEL OK?", "SLOW DOWN", "STAY OUT"} <= set(texts)
    box = m.DEFAULT_CANNED[texts.index("BOX THIS LAP")]
    assert box.close_on == "box" and box.priority == "urgent"
    assert m.DEFAULT_CANNED[texts.index("FUEL OK?")].asks_answer
    assert m.canned_from_list(None) == m.DEFAULT_CANNED
    assert m.canned_from_list([c.to_dict() for c in m.DEFAULT_CANNED]) == m.DEFAULT_CANNED


def test_a_team_edits_its_canned_messages():
    mine = m.canned_from_list([{"text": "TYRES OK?", "asks_answer": True},
                               {"text": "pit  next lap", "close_on": "box"}])
    assert mine == (m.CannedMessage("TYRES OK?", True), m.CannedMessage("pit next lap", close_on="box"))
    for bad, field in (
        ([{"text": "PUSH"}, {"text": "push"}], "canned[1].text"),
        ([{"text": "X" * 41}], "canned[0].text"),
        ([{"text": "PUSH", "colour": "red"}], "canned[0]"),
        ([{"text": "PUSH", "priority": 3}], "canned[0].priority"),
        ([{"text": "PUSH", "asks_answer": 1}], "canned[0].asks_answer"),
        (["PUSH"], "canned[0]"),
        ([{"text": f"M{i}"} for i in range(m.MAX_CANNED + 1)], "canned"),
        ({"text": "PUSH"}, "canned"),
    ):
        with pytest.raises(m.MessageError) as info:
            m.canned_from_list(bad)
        assert info.value.field == field


# ------------------------------------------------------------------ states
def test_the_whole_way_to_an_answer_one_event_per_state():
    record = m.queue(message(asks_answer=True))
    steps = [("sent", "main", {}), ("delivered", "main", {}), ("seen", "main", {"lap": 3}),
             ("answered", "main", {"lap": 3, "lat": 28.41, "lon": -81.38, "answer": "yes"})]
    for i, (state, via, extra) in enumerate(steps):
        result = m.transition(record, state, t=T0 + i + 1, via=via, **extra)
        assert not result.duplicate and [e.state for e in result.events] == [state]
        record = result.record
    assert record.state == "answered" and record.answer == "yes" and record.final
    assert states(record) == [(s, False) for s in ("queued", "sent", "delivered", "seen", "answered")]
    last = record.events[-1].to_dict()
    assert last == {"message_id": record.message.id, "state": "answered", "t": T0 + 4, "via": "main", "lap": 3,
                    "lat": 28.41, "lon": -81.38, "answer": "yes", "implied": False, "by": None}


def test_the_same_report_over_both_links_counts_once():
    record = m.transition(m.queue(message()), "sent", t=T0 + 1, via="main").record
    record = m.transition(record, "delivered", t=T0 + 2, via="lora").record
    again = m.transition(record, "delivered", t=T0 + 3, via="main")
    assert again.duplicate and again.record is record
    assert m.transition(record, "sent", t=T0 + 3, via="lora").duplicate  # a resend over LoRa: no event


def test_an_answer_before_delivered_implies_the_skipped_states():
    record = m.transition(m.queue(message(asks_answer=True)), "sent", t=T0 + 1, via="main").record
    result = m.transition(record, "answered", t=T0 + 9, via="lora", lap=4, lat=28.4, lon=-81.4, answer="no")
    assert [(e.state, e.implied, e.t, e.via, e.lap) for e in result.events] == [
        ("delivered", True, T0 + 9, "lora", 4), ("seen", True, T0 + 9, "lora", 4),
        ("answered", False, T0 + 9, "lora", 4)]
    assert [e.answer for e in result.events] == [None, None, "no"]
    late = m.transition(result.record, "delivered", t=T0 + 5, via="main")  # the main link's ack, late
    assert late.duplicate and late.record.state == "answered"
    assert m.transition(result.record, "answered", t=T0 + 10, via="main", answer="no").duplicate
    with pytest.raises(m.MessageStateError, match="already answered \\(no\\)") as info:
        m.transition(result.record, "answered", t=T0 + 10, via="main", answer="yes")
    assert info.value.state == "answered" and isinstance(info.value, Conflict)
    assert info.value.to_dict() == {"code": "message_state", "message": info.value.message, "field": "state",
                                    "state": "answered"}


def test_a_cancel_from_queued_implies_nothing_and_is_final():
    cancelled = m.transition(m.queue(message(asks_answer=True)), "cancelled", t=T0 + 1, by="k9")
    assert [(e.state, e.implied, e.by, e.via) for e in cancelled.events] == [("cancelled", False, "k9", None)]
    with pytest.raises(m.MessageStateError, match="already cancelled; answered \\(yes\\) refused"):
        m.transition(cancelled.record, "answered", t=T0 + 2, via="lora", answer="yes")
    assert m.transition(cancelled.record, "delivered", t=T0 + 2, via="lora").duplicate
    assert m.transition(cancelled.record, "cancelled", t=T0 + 3).duplicate


def test_expiry_only_once_its_time_has_come():
    record = m.queue(message(ttl_s=60))
    with pytest.raises(m.MessageStateError, match="expires at"):
        m.transition(record, "expired", t=T0 + 59)
    assert m.due_to_expire([record], T0 + 59) == []
    assert m.due_to_expire([record], T0 + 60) == [record]
    assert m.transition(record, "expired", t=T0 + 60).record.state == "expired"


def test_answers_a_message_does_not_take_are_refused():
    question, note, box = m.queue(message(asks_answer=True)), m.queue(message(text="PUSH")), \
        m.queue(message(text="BOX", close_on="box"))
    with pytest.raises(m.MessageStateError, match="takes yes, no"):
        m.transition(question, "answered", t=T0 + 1, via="main", answer="ok")
    assert m.transition(note, "answered", t=T0 + 1, via="main", answer="ok").record.answer == "ok"
    with pytest.raises(m.MessageStateError, match="takes ok"):
        m.transition(note, "answered", t=T0 + 1, via="main", answer="yes")
    with pytest.raises(m.MessageStateError, match="closes in the pit lane"):
        m.transition(box, "answered", t=T0 + 1, via="main", answer="ok")
    with pytest.raises(m.MessageStateError, match="no closing condition"):
        m.transition(note, "closed", t=T0 + 1)


@pytest.mark.parametrize("state, options, error, field", [
    ("delivered", {}, m.MessageError, "via"),  # a car's report names its link
    ("delivered", {"via": "wifi"}, m.MessageError, "via"),
    ("cancelled", {"via": "main"}, m.MessageStateError, "via"),  # the pit's decision travels no link
    ("answered", {"via": "main"}, m.MessageError, "answer"),
    ("seen", {"via": "main", "answer": "yes"}, m.MessageError, "answer"),
    ("seen", {"via": "main", "lat": 91.0, "lon": 0.0}, m.MessageError, "lat"),
    ("seen", {"via": "main", "lat": 28.0}, m.MessageError, "lon"),
    ("seen", {"via": "main", "lap": -1}, m.MessageError, "lap"),
    ("seen", {"via": "main", "lap": True}, m.MessageError, "lap"),
    ("read", {"via": "main"}, m.MessageError, "state"),
])
def test_malformed_arrivals_are_refused_clearly(state: str, options: dict[str, Any], error: type, field: str):
    with pytest.raises(error) as info:
        m.transition(m.queue(message(asks_answer=True)), state, t=T0 + 1, **options)
    assert info.value.field == field and isinstance(info.value, DashboardError)
    with pytest.raises(m.MessageError):
        m.transition(m.queue(message()), "seen", t=float("inf"), via="main")


ARRIVALS = st.lists(st.tuples(
    st.sampled_from(["sent", "delivered", "seen", "answered", "cancelled", "expired"]),
    st.sampled_from(["main", "lora"]),
    st.sampled_from(["yes", "no"]),
), max_size=12)


@PROPERTY
@given(ARRIVALS)
def test_any_order_of_arrivals_moves_forwards_and_records_each_state_once(arrivals: list[tuple[str, str, str]]):
    record = m.queue(message(asks_answer=True, ttl_s=60))
    for i, (state, via, answer) in enumerate(arrivals):
        before = record
        kwargs: dict[str, Any] = {"t": T0 + 60 + i}
        if state in m.CAR_STATES or state == "sent":
            kwargs["via"] = via
        if state == "answered":
            kwargs["answer"] = answer
        try:
            result = m.transition(record, state, **kwargs)
        except m.MessageStateError:
            assert before.final  # only a different ending after the end is refused
            continue
        record = result.record
        assert m._RANK[record.state] >= m._RANK[before.state]
        assert result.duplicate == (record == before)
        assert m.transition(record, state, **kwargs).duplicate  # the same arrival again changes nothing
    reached = [e.state for e in record.events]
    assert len(reached) == len(set(reached))  # dedupe by (message id, state)
    assert [m._RANK[s] for s in reached] == sorted(m._RANK[s] for s in reached)
    assert sum(1 for s in reached if s in m.FINAL_STATES) <= 1
    assert (record.answer is not None) == (record.state == "answered")


# ------------------------------------------------------------------ box: closed in the pit lane
def test_a_box_message_closes_when_the_pit_detector_sees_the_car_enter_the_lane():
    proj = LocalProjection((28.4, -81.4))
    lane = PitLane(Line(proj.to_latlon(100, 10), proj.to_latlon(100, -10), "a_left"),
                   Line(proj.to_latlon(400, 10), proj.to_latlon(400, -10), "a_left"))
    detector = PitDetector(lane)
    box = m.transition(m.queue(message(text="BOX THIS LAP", close_on="box")), "seen", t=T0 + 1, via="main").record
    push = m.queue(message(text="PUSH"))
    events: list[PitEvent] = []
    for i in range(40):  # 60 km/h eastwards along the lane, 10 fixes a second
        lat, lon = proj.to_latlon(i * 60 / 3.6 * 0.1 * 10, 0.0)
        events += detector.feed({"seq": i, "t": T0 + 10 + i, "channels": {"lat": lat, "lon": lon, "gps_speed": 60.0}})
    entries = [e for e in events if e.type == "pit.entry"]
    assert len(entries) == 1
    assert m.close_on_pit_event([box, push], next(e for e in events if e.type == PIT_STOP)) == []
    closed = m.close_on_pit_event([box, push], entries[0].to_dict(), lap=5)
    assert len(closed) == 1 and closed[0].record.message.id == box.message.id
    assert [(e.state, e.t, e.lap, e.via) for e in closed[0].events] == [("closed", entries[0].t, 5, None)]
    assert m.close_on_pit_event([closed[0].record], entries[0]) == []  # closed once
    later = m.queue(message(text="BOX", close_on="box", now=entries[0].t + 1))
    assert m.close_on_pit_event([later], entries[0]) == []  # sent after the entry: for the next time round


# ------------------------------------------------------------------ the car's inbox
def test_the_display_shows_the_highest_priority_then_the_oldest():
    inbox = m.Inbox()
    push = message(text="PUSH", now=T0)
    fuel = message(asks_answer=True, now=T0 + 1)
    box = message(text="BOX THIS LAP", priority="urgent", close_on="box", now=T0 + 2)
    later = message(text="LAST LAP", now=T0 + 3)
    for msg in (push, fuel, later, box):
        assert inbox.receive(msg)
    assert inbox.pending() == [box, push, fuel, later]
    assert inbox.current() == box
    assert inbox.close(box.short_id) and inbox.current() == push
    assert inbox.answer(push.short_id, "ok") and inbox.current() == fuel
    assert inbox.current(now=fuel.expires_t) == later == inbox.pending(now=fuel.expires_t)[0]
    assert inbox.expire(fuel.expires_t) == [fuel.short_id]
    assert inbox.pending() == [later]
    assert m.Inbox().current() is None


def test_no_message_is_shown_or_answered_twice_across_links_and_restarts():
    inbox = m.Inbox()
    fuel = message(asks_answer=True)
    assert inbox.receive(fuel)
    assert not inbox.receive(fuel)  # the same message again (over LoRa, or a retry)
    assert inbox.mark_seen(fuel.short_id) and not inbox.mark_seen(fuel.short_id)
    restarted = m.Inbox.from_dict(json.loads(json.dumps(inbox.to_dict())))
    assert restarted.current() == fuel  # still waiting for its answer after the restart...
    assert restarted.is_seen(fuel.short_id) and not restarted.mark_seen(fuel.short_id)  # ...but not announced again
    with pytest.raises(m.MessageStateError):
        restarted.answer(fuel.short_id, "ok")
    assert restarted.answer(fuel.short_id, "yes")
    assert not restarted.answer(fuel.short_id, "no")  # a second press: not applied
    again = m.Inbox.from_dict(json.loads(json.dumps(restarted.to_dict())))
    assert not again.receive(fuel) and again.current() is None  # re-sent after the answer: not shown
    assert not again.close(fuel.short_id) and not again.mark_seen(fuel.short_id)


def test_the_inbox_remembers_a_bounded_number_of_finished_messages():
    inbox = m.Inbox()
    ids = []
    for i in range(m.INBOX_MEMORY + 10):
        msg = message(text=f"M{i}", now=T0 + i)
        inbox.receive(msg)
        inbox.close(msg.short_id)
        ids.append(msg.short_id)
    assert inbox.finished == ids[-m.INBOX_MEMORY:]


@pytest.mark.parametrize("snapshot", [
    None, [], {}, {"held": [], "finished": ["x"]}, {"held": [], "finished": [0]}, {"held": [{"seen": True}],
                                                                                      "finished": []},
    {"held": [{"message": {"id": "x"}, "seen": False}], "finished": []}, {"held": ["x"], "finished": []},
])
def test_a_broken_inbox_snapshot_is_a_clear_error(snapshot: Any):
    with pytest.raises(m.MessageError):
        m.Inbox.from_dict(snapshot)
