"""The downlink's resend policy: repeats until the car reports, a send limit, each car's hourly airtime budget."""
from __future__ import annotations

import pytest

from dashboard.car.mesh import DEFAULT_INTERVAL_S
from dashboard.telemetry import downlink, lora
from dashboard.telemetry.downlink_policy import (
    BUDGET_SHARE,
    CLOSE_SENDS,
    MAX_SENDS,
    REPEAT_S,
    WINDOW_S,
    DownlinkPolicy,
    packet_airtime_s,
)

T0 = 1_700_000_000.0
CAR = lora.car_hash("car-7")
OTHER = lora.car_hash("car-12")


def message(short_id: int = 1, car: int = CAR, text: str = "FUEL OK?") -> downlink.DownlinkMessage:
    return downlink.DownlinkMessage(car, short_id, text, T0 + 600, asks_answer=True)


def close(short_id: int = 1, car: int = CAR) -> downlink.DownlinkClose:
    return downlink.DownlinkClose(car, short_id, "cancelled")


def transmit(policy: DownlinkPolicy, now: float) -> list:
    due = policy.due(now)
    for packet in due:
        policy.sent(packet, now)
    return due


def test_the_budget_is_under_the_uplink_summarys_share():
    uplink_share = lora.SUMMARY_AIRTIME_S / DEFAULT_INTERVAL_S  # 3.4% of the hour per car
    assert BUDGET_SHARE * 3 < uplink_share
    assert MAX_SENDS * downlink.MAX_MESSAGE_AIRTIME_S < BUDGET_SHARE * WINDOW_S / 8  # eight full messages an hour
    assert packet_airtime_s(message(text="É" * 24)) == downlink.MAX_MESSAGE_AIRTIME_S  # 48 bytes: the longest


def test_a_message_goes_at_once_then_every_repeat_until_the_limit():
    policy = DownlinkPolicy()
    assert policy.offer(message(), T0)
    sends = []
    for second in range(0, 10 * int(REPEAT_S)):
        if transmit(policy, T0 + second):
            sends.append(second)
    assert sends == [int(i * REPEAT_S) for i in range(MAX_SENDS)]
    assert policy.finished(message()) == "sent" and policy.pending() == []
    assert not policy.offer(message(), T0 + 1000)  # the server handing it again changes nothing
    assert policy.due(T0 + 1000) == []


def test_a_report_over_either_link_stops_the_repeats():
    policy = DownlinkPolicy()
    policy.offer(message(1), T0)
    policy.offer(message(2), T0)
    assert transmit(policy, T0) == [message(1), message(2)]
    assert policy.reported(CAR, 1) is True
    assert policy.reported(CAR, 1) is False  # the same report over the other link
    assert transmit(policy, T0 + REPEAT_S) == [message(2)]
    assert policy.finished(message(1)) == "reported"
    assert not policy.offer(message(1), T0 + REPEAT_S)


def test_a_report_before_the_hand_off_means_it_is_never_sent():
    policy = DownlinkPolicy()
    policy.reported(CAR, 5)
    assert not policy.offer(message(5), T0)
    assert policy.due(T0) == []


def test_a_close_stops_its_message_and_goes_twice_first_in_line():
    policy = DownlinkPolicy()
    policy.offer(message(1), T0)
    policy.offer(message(2), T0)
    transmit(policy, T0)
    assert policy.offer(close(1), T0 + 5)
    assert not policy.offer(close(1), T0 + 6)  # pending already
    assert policy.finished(message(1)) == "closed"
    assert transmit(policy, T0 + REPEAT_S) == [close(1), message(2)]  # the close first
    assert transmit(policy, T0 + 2 * REPEAT_S) == [close(1), message(2)]
    assert [p for p in transmit(policy, T0 + 3 * REPEAT_S) if isinstance(p, downlink.DownlinkClose)] == []
    assert policy.finished(close(1)) == "sent" and CLOSE_SENDS == 2


def test_each_car_stays_under_its_hourly_airtime_and_waits_for_the_window():
    policy = DownlinkPolicy(max_sends=1)
    budget = BUDGET_SHARE * WINDOW_S
    each = packet_airtime_s(message(text="X" * 40))
    fit = int(budget // each)
    for short_id in range(1, fit + 6):
        policy.offer(message(short_id, text="X" * 40), T0)
    policy.offer(message(999, car=OTHER), T0)
    sent = transmit(policy, T0)
    mine = [p for p in sent if p.car_hash == CAR]
    assert len(mine) == fit and policy.used_s(CAR, T0) <= budget
    assert [p.short_id for p in sent if p.car_hash == OTHER] == [999]  # another car has its own budget
    assert transmit(policy, T0 + WINDOW_S / 2) == []  # still over: they wait
    later = transmit(policy, T0 + WINDOW_S + 1)  # the first hour's transmissions have left the window
    assert [p.short_id for p in later] == list(range(fit + 1, fit + 6))
    for now in range(int(T0), int(T0 + 2 * WINDOW_S), 60):
        assert policy.used_s(CAR, now) <= budget


def test_next_due_and_bad_settings():
    policy = DownlinkPolicy()
    assert policy.next_due_s(T0) is None
    policy.offer(message(), T0)
    assert policy.next_due_s(T0) == 0.0
    transmit(policy, T0)
    assert policy.next_due_s(T0 + 10) == pytest.approx(REPEAT_S - 10)
    for bad in ({"repeat_s": 0}, {"max_sends": 0}, {"share": 1.5}, {"window_s": -1}):
        with pytest.raises(ValueError):
            DownlinkPolicy(**bad)
