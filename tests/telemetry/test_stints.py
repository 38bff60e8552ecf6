"""Drivers, stints, the clean-lap rule and the series-rules watch, with an accelerated clock."""
from __future__ import annotations

import pytest
from pydantic import ValidationError

from dashboard.telemetry.cleanlap import CLEAN_MAX_RATIO, LapRecord, best_time, clean_laps, lap_record
from dashboard.telemetry.laps import Lap
from dashboard.telemetry.pitlane import PitStop
from dashboard.telemetry.stints import (
    CHAMPCAR,
    RULE_BREACH,
    RULE_WARN,
    Driver,
    DriverChange,
    Roster,
    RulesWatch,
    SeriesRules,
    stamp_laps,
    stint_at,
    stints_from_changes,
    summarise_stints,
)

T0 = 1_700_000_000.0


def lap(number: int, start: float, time: float, **kw: object) -> LapRecord:
    return LapRecord(number=number, start_t=T0 + start, end_t=T0 + start + time, lap_time=time, **kw)  # type: ignore


# ---------------------------------------------------------------- clean laps

def test_clean_lap_rule() -> None:
    laps = [
        lap(0, 0, 70, timed=False),  # out-lap
        lap(1, 70, 60.0),
        lap(2, 130, 61.0),
        lap(3, 191, 60.0 * CLEAN_MAX_RATIO + 0.01),  # a spin: over 107 %
        lap(4, 260, 59.0, pit=True),  # a pit lap is never the best
        lap(5, 320, 58.0, flagged=True),
        lap(6, 380, 58.5, setup_changed=True),
        lap(7, 440, 60.5),
    ]
    assert best_time(laps) == 60.0
    assert [x.number for x in clean_laps(laps)] == [1, 2, 7]
    assert [x.number for x in clean_laps(laps, reference_best=50.0)] == []
    assert clean_laps([lap(0, 0, 70, timed=False)]) == []


def test_lap_record_from_a_lap_and_its_dict() -> None:
    timed = Lap(3, T0, T0 + 60, 60.0, (None,), setup_version=2)
    interrupted = Lap(4, T0 + 60, T0 + 90, 30.0, (None,), in_lap=True, interrupted="gap")
    assert lap_record(timed).timed and lap_record(timed).setup_version == 2
    assert lap_record(timed.to_dict()) == lap_record(timed)
    assert not lap_record(interrupted.to_dict()).timed
    assert lap_record(timed, driver_id="d1").driver_id == "d1"
    with pytest.raises(ValueError):
        lap_record({"lap": 1, "start_t": 0, "end_t": "x", "lap_time": 1})
    with pytest.raises(ValueError):
        lap_record({"start_t": 0, "end_t": 1, "lap_time": 1})


# ---------------------------------------------------------------- stints

def test_stints_from_changes_and_laps_stamped_with_the_driver_at_their_start() -> None:
    changes = [DriverChange(T0 + 125, "b"), DriverChange(T0, "a"), DriverChange(T0 + 300, "c")]
    stints = stints_from_changes(T0, changes)
    assert [(s.number, s.driver_id, s.start_t - T0, s.end_t) for s in stints] == [
        (1, "a", 0, T0 + 125), (2, "b", 125, T0 + 300), (3, "c", 300, None)]
    laps = [lap(1, 0, 60), lap(2, 60, 60), lap(3, 120, 60), lap(4, 180, 60)]
    stamped = stamp_laps(laps, stints)
    assert [x.driver_id for x in stamped] == ["a", "a", "a", "b"]  # lap 3 started before the change
    late = stints_from_changes(T0, [DriverChange(T0 + 10, "a")])
    assert late[0].driver_id is None and late[1].driver_id == "a"
    assert stint_at(late, T0 - 1) is None and stint_at(late, T0 + 10) is late[1]


def test_stint_summary() -> None:
    stints = stints_from_changes(T0, [DriverChange(T0, "a"), DriverChange(T0 + 400, "b")], T0 + 800)
    laps = [
        lap(1, 0, 62.0, timed=False, fuel_used=1.5),
        lap(2, 62, 60.0, fuel_used=1.0),
        lap(3, 122, 61.0, fuel_used=1.1),
        lap(4, 183, 62.0, fuel_used=1.2),
        lap(5, 245, 80.0, fuel_used=0.9),  # over 107 %
        lap(6, 400, 58.0, fuel_used=1.0),
        lap(7, 458, 59.0),
    ]
    first, second = summarise_stints(stints, laps)
    assert (first.driver_id, first.laps, first.clean_laps, first.best) == ("a", 5, 3, 60.0)
    assert first.mean_clean == pytest.approx(61.0)
    assert first.consistency == pytest.approx(1.0)  # sample sd of 60, 61, 62
    assert first.fuel_used == pytest.approx(5.7)
    assert (second.driver_id, second.laps, second.best, second.fuel_used) == ("b", 2, 58.0, None)
    assert second.to_dict()["stint"] == 2


def test_roster_and_rules_validation() -> None:
    with pytest.raises(ValidationError):
        Roster(car="7", drivers=(Driver(id="a", name="A"), Driver(id="a", name="B")))
    with pytest.raises(ValidationError):
        Driver(id="a b", name="A")
    with pytest.raises(ValidationError):
        SeriesRules(max_stint_s=-1)
    with pytest.raises(ValidationError):
        SeriesRules.model_validate({"max_stint": 7200})
    assert CHAMPCAR.max_stint_s == 7200 and CHAMPCAR.min_stop_s == 300


# ---------------------------------------------------------------- the rules watch

def test_stint_limit_warns_then_breaches_at_the_right_time_with_an_accelerated_clock() -> None:
    watch = RulesWatch(CHAMPCAR)
    stints = stints_from_changes(T0, [DriverChange(T0, "a")])
    raised = []
    for k in range(0, 2 * 3600 + 120, 7):  # a clock ticking 7 s at a time
        raised += [(e.type, e.t - T0, e.rule) for e in watch.check(T0 + k, stints)]
    assert raised == [(RULE_WARN, 7200 - 300, "max_stint"), (RULE_BREACH, 7200, "max_stint")]
    (status,) = watch.status(T0 + 3600, stints)
    assert status.left_s == 3600 and status.subject == "stint 1"


def test_a_change_in_time_raises_nothing_and_personal_limits_are_stricter() -> None:
    roster = Roster(car="7", drivers=(Driver(id="a", name="A", max_stint_s=3600), Driver(id="b", name="B")))
    watch = RulesWatch(CHAMPCAR, roster)
    stints = stints_from_changes(T0, [DriverChange(T0, "a"), DriverChange(T0 + 3000, "b")])
    assert watch.check(T0 + 2999, stints) == []
    assert watch.check(T0 + 3400, stints) == []  # a got out at 3000, before their own 3600 - 300
    alone = stints_from_changes(T0, [DriverChange(T0, "a")])
    (warn,) = RulesWatch(CHAMPCAR, roster).check(T0 + 3400, alone)
    assert (warn.type, warn.t - T0, warn.limit_s) == (RULE_WARN, 3300, 3600)


def test_driver_total_limit_over_several_stints() -> None:
    rules = SeriesRules(max_driver_total_s=1000, warn_lead_s=100)
    watch = RulesWatch(rules)
    changes = [DriverChange(T0, "a"), DriverChange(T0 + 600, "b"), DriverChange(T0 + 900, "a")]
    stints = stints_from_changes(T0, changes)
    events = watch.check(T0 + 1400, stints)
    assert [(e.type, e.t - T0, e.subject) for e in events] == [
        (RULE_WARN, 900 + 300, "driver a"), (RULE_BREACH, 900 + 400, "driver a")]
    assert watch.check(T0 + 1500, stints) == []  # once each
    total = next(s for s in watch.status(T0 + 1400, stints) if s.subject == "driver a")
    assert total.used_s == 1100 and total.left_s == -100


def test_min_stop_breached_by_a_short_fuel_stop_only() -> None:
    watch = RulesWatch(CHAMPCAR)
    stints = stints_from_changes(T0, [DriverChange(T0, "a")])
    short = PitStop(1, T0 + 100, T0 + 340, 240.0, 200.0)
    long = PitStop(2, T0 + 1000, T0 + 1320, 320.0, 290.0)
    events = watch.check(T0 + 2000, stints, [short, long])
    assert [(e.type, e.subject, e.left_s) for e in events] == [(RULE_BREACH, "stop 1", 60.0)]
    assert RulesWatch(CHAMPCAR).check(T0 + 2000, stints, [short], fuel_stops={2}) == []
    waiting = [s for s in watch.status(T0 + 2100, stints, in_pit_since=T0 + 2000) if s.rule == "min_stop"]
    assert waiting[-1].left_s == 200.0 and waiting[-1].subject == "stop in progress"
