"""What a clean lap is, in one place, and the lap record the pit-wall processors read. Pure, no I/O.

The rule
    A lap is clean when all of these hold:
    1. it was timed line to line: not the out-lap or the in-lap of the session, not
       interrupted by a gap or a GPS jump (``laps.Lap.timed``);
    2. no pit: it holds no pit entry or exit (``pitlane.pit_lap_flags``);
    3. not flagged: no yellow flag or alerted time loss marked on it by the crew or the server;
    4. its setup did not change during it;
    5. its time is within ``CLEAN_MAX_RATIO`` (107 %) of the best lap of the set being
       summarised that passes 1-4 (a stint, a setup version: the caller chooses the set, so a
       slower driver's or setup's laps are judged against their own best, and a spin or a
       traffic lap still drops out).
    Means and standard deviations are taken over clean laps only; best laps over rules 1-4.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

CLEAN_MAX_RATIO = 1.07  # the 107 % rule of racing qualifying: slower than this is a lap with a mistake in it


@dataclass(frozen=True)
class LapRecord:
    """A lap as the pit-wall processors see it (from a ``laps.Lap``, its ``to_dict()``, or a stored row)."""

    number: int
    start_t: float
    end_t: float
    lap_time: float
    timed: bool = True
    pit: bool = False  # holds a pit entry or exit
    flagged: bool = False  # a yellow flag or an alerted time loss
    setup_changed: bool = False
    setup_version: int | None = None
    driver_id: str | None = None
    fuel_used: float | None = None  # in the fuel model's unit (percent of tank or litres)
    session_id: str | None = None


def _get(raw: Any, name: str, default: Any = None) -> Any:
    if isinstance(raw, Mapping):
        return raw.get(name, default)
    return getattr(raw, name, default)


def lap_record(raw: Any, **overrides: Any) -> LapRecord:
    """A LapRecord from a ``laps.Lap``, a ``Lap.to_dict()`` mapping (``lap`` for the number) or a LapRecord.

    ``overrides`` set fields the source does not carry (``driver_id``, ``pit``, ``fuel_used`` ...).
    Raises ValueError on a lap without a number or finite times.
    """
    if isinstance(raw, LapRecord):
        fields = dict(raw.__dict__)
    else:
        number = _get(raw, "number", _get(raw, "lap"))
        timed_attr = _get(raw, "timed")
        timed = (bool(timed_attr) if timed_attr is not None else
                 not (_get(raw, "out_lap", False) or _get(raw, "in_lap", False) or _get(raw, "interrupted")))
        fields = {
            "number": number, "start_t": _get(raw, "start_t"), "end_t": _get(raw, "end_t"),
            "lap_time": _get(raw, "lap_time"), "timed": timed, "pit": bool(_get(raw, "pit", False)),
            "flagged": bool(_get(raw, "flagged", False)), "setup_changed": bool(_get(raw, "setup_changed", False)),
            "setup_version": _get(raw, "setup_version"), "driver_id": _get(raw, "driver_id"),
            "fuel_used": _get(raw, "fuel_used"), "session_id": _get(raw, "session_id"),
        }
    fields.update(overrides)
    if not isinstance(fields["number"], int) or isinstance(fields["number"], bool):
        raise ValueError(f"a lap needs an integer number, not {fields['number']!r}")
    for name in ("start_t", "end_t", "lap_time"):
        value = fields[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"lap {fields['number']}: {name} must be a finite number, not {value!r}")
        fields[name] = float(value)
    return LapRecord(**fields)


def is_candidate(lap: LapRecord) -> bool:
    """Rules 1-4: timed, no pit, not flagged, setup unchanged. Best laps are taken among these."""
    return lap.timed and not lap.pit and not lap.flagged and not lap.setup_changed and lap.lap_time > 0


def best_time(laps: Iterable[LapRecord]) -> float | None:
    """The fastest lap time among the candidates (rules 1-4), None if there is none."""
    times = [lap.lap_time for lap in laps if is_candidate(lap)]
    return min(times) if times else None


def clean_laps(laps: Iterable[LapRecord], reference_best: float | None = None) -> list[LapRecord]:
    """The clean laps of a set, in the order given (the rule in the module docstring).

    ``reference_best`` replaces the set's own best for rule 5 (e.g. the car's best of the day).
    """
    laps = list(laps)
    best = reference_best if reference_best is not None else best_time(laps)
    if best is None:
        return []
    return [lap for lap in laps if is_candidate(lap) and lap.lap_time <= best * CLEAN_MAX_RATIO]
