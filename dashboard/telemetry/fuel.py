"""Fuel per lap and laps left: from the ``fuel_level`` channel, or from a model for cars without a sensor.

Both behind one interface (``FuelTracker``): ``feed(frame)`` for each frame (in seq order),
``lap_completed(lap)`` for each lap the lap timer completes, ``refilled(t, ...)`` when the crew
says what went in, ``estimate()`` for the overview; each returns ``fuel.*`` events. Pure, no I/O,
no clock: every time comes from the frames and laps.

From the sensor (``SensorFuel``, unit: percent of the tank, as the channel registry says)
    A tank sloshes: the level read in a corner or under braking is off by several percent,
    in spikes lasting a second or two. Three steps:
    1. a median per ``BIN_S`` (1 s) of the readings (takes out sample noise and short spikes);
    2. a robust straight line (Theil-Sen: the median of the slopes between every pair of
       points) of the bin medians against driving time (time with ``speed``, else
       ``gps_speed``, at least ``MOVING_KMH``: a car standing in the pits burns next to
       nothing, so the line does not bend at a stop; without any speed channel, all time
       counts), over the bins since the last refill within the last ``FIT_WINDOW_S`` (ten
       minutes: several laps, so one lap's slosh pattern does not tilt it), thinned to at
       most ``MAX_FIT_POINTS`` (medians of neighbouring bins) to bound the cost;
    3. the level at a lap's end is that line at the lap's end time; the fuel used in a lap
       is the level at its start minus the level at its end, both on the line fitted at
       the lap's end (None for a lap with a refill, or without enough readings:
       ``MIN_FIT_BINS`` bins over ``MIN_FIT_SPAN_S`` of driving).
    A refill is a step up: ``REFILL_CONFIRM_BINS`` consecutive bin medians above the line
    by more than ``REFILL_MIN_PCT`` (a corner spike lasts under that many seconds). It
    starts a new line from the first bin above.

From a model (``ModelFuel``, unit: litres)
    A tank size, a starting level (full) and a use per lap that the crew sets; every completed
    lap (out- and in-laps too: a partial lap is counted whole, to err on the safe side) takes
    one lap's use. After a stop the crew says what went in ("filled 40 l"): the level goes up
    by that much (at most to the tank size); when they filled it to full, the fuel used since
    the level was last known (the start, or the last fill to full) is that level + everything
    added since − the tank size, and the use per lap is corrected to it (used / laps since).

Both
    Use per lap for the forecast: from the sensor, the slope of the line at the last lap's end
    times the mean driving time of the last ``RECENT_LAPS`` laps (the whole window's evidence,
    not one lap's noisy difference; a lap with a refill in it does not count); from the model,
    its use per lap. Laps left = level / use per lap. The sensor's forecast is ``settled`` once
    its line has ``SETTLE_S`` (4 min) of driving behind it; before that it is shown but the
    low-fuel alert waits (on the test trace, unsettled forecasts were off by up to 60 %).
    ``alert_laps_left``: a ``fuel.low`` event once, when laps left first falls to that number
    or below; a refill that brings it back above re-arms it.
"""
from __future__ import annotations

import bisect
import math
import statistics
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

BIN_S = 1.0  # readings are reduced to one median per second
FIT_WINDOW_S = 600.0  # the level line is fitted over the last ten minutes since the last refill
MAX_FIT_POINTS = 120  # thinned to this many points: Theil-Sen is O(n²), 7,140 pairs per lap
REFIT_BINS = 10  # refill detection refits its line every ten seconds, not every second (cost)
MIN_FIT_BINS = 5  # fewer bin medians than this: no level
MIN_FIT_SPAN_S = 20.0  # nor under this much driving: slopes over a second or two of slosh are noise
REFILL_MIN_PCT = 10.0  # a step up larger than slosh (±5 %) and its 1 s medians
REFILL_CONFIRM_BINS = 3  # for this many seconds in a row: a corner's slosh spike is shorter
MOVING_KMH = 5.0  # the level line runs against driving time: a car slower than this is standing
SETTLE_S = 240.0  # the forecast is sure enough after four minutes of driving since the start or a refill
RECENT_LAPS = 5  # the forecast averages the use of the last five laps

FUEL_LAP = "fuel.lap"
FUEL_REFILL = "fuel.refill"
FUEL_LOW = "fuel.low"


@dataclass(frozen=True)
class FuelEvent:
    """``fuel.lap``, ``fuel.refill`` or ``fuel.low`` at ``t``."""

    type: str
    t: float
    payload: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"type": self.type, "t": self.t, "payload": self.payload}


@dataclass(frozen=True)
class FuelEstimate:
    """What the overview shows: level, use per lap, laps left (None where not known yet)."""

    unit: str  # "%" (sensor) or "l" (model)
    level: float | None
    per_lap: float | None
    laps_left: float | None
    last_lap_used: float | None
    settled: bool = True  # False while the sensor's line has under SETTLE_S of driving behind it

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return dict(self.__dict__)


class FuelTracker(Protocol):
    """The one interface of the sensor and the model."""

    unit: str

    def feed(self, frame: Any) -> list[FuelEvent]:
        """One frame (only ``fuel_level`` is read)."""
        ...

    def lap_completed(self, lap: Any) -> list[FuelEvent]:
        """A lap (``number``, ``start_t``, ``end_t``; a ``laps.Lap`` or its dict) has completed."""
        ...

    def refilled(self, t: float, added: float | None = None, to_full: bool = False) -> list[FuelEvent]:
        """The crew's word after a stop: ``added`` went in (in this tracker's unit), or it was filled to full."""
        ...

    def estimate(self) -> FuelEstimate:
        """Now."""
        ...


def theil_sen(points: list[tuple[float, float]]) -> tuple[float, float] | None:
    """(slope, intercept) of the Theil-Sen line through (x, y) points; None under two distinct x."""
    slopes = [(y1 - y0) / (x1 - x0) for i, (x0, y0) in enumerate(points) for x1, y1 in points[i + 1:] if x1 != x0]
    if not slopes:
        return None
    slope = statistics.median(slopes)
    return slope, statistics.median(y - slope * x for x, y in points)


def _lap_fields(lap: Any) -> tuple[int | None, float, float]:
    get = lap.get if isinstance(lap, Mapping) else lambda name, default=None: getattr(lap, name, default)
    number = get("number", get("lap"))
    start_t, end_t = get("start_t"), get("end_t")
    for value in (start_t, end_t):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"a lap needs finite start_t and end_t, not {value!r}")
    return (number if isinstance(number, int) else None), float(start_t), float(end_t)


def _fuel_value(frame: Any) -> tuple[float | None, float | None, float | None]:
    """(t, fuel_level, speed) of a frame: speed from ``speed`` (OBD), else ``gps_speed``; None where absent."""
    if isinstance(frame, Mapping):
        t, channels = frame.get("t"), frame.get("channels")
    else:
        t, channels = getattr(frame, "t", None), getattr(frame, "channels", None)
    if not isinstance(channels, Mapping):
        channels = {}
    speed = channels.get("speed")
    if speed is None:
        speed = channels.get("gps_speed")
    ok = [v if not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v) else None
          for v in (t, channels.get("fuel_level"), speed)]
    return ok[0], ok[1], ok[2]


class _LowAlert:
    def __init__(self, threshold: float | None) -> None:
        if threshold is not None and not (math.isfinite(threshold) and threshold > 0):
            raise ValueError("alert_laps_left must be a positive number of laps")
        self.threshold = threshold
        self.armed = True

    def check(self, t: float, laps_left: float | None) -> list[FuelEvent]:
        if self.threshold is None or laps_left is None:
            return []
        if laps_left > self.threshold:
            self.armed = True
            return []
        if not self.armed:
            return []
        self.armed = False
        return [FuelEvent(FUEL_LOW, t, {"laps_left": laps_left, "threshold": self.threshold})]


class SensorFuel:
    """Fuel from the ``fuel_level`` channel (percent), smoothed against slosh (the module docstring)."""

    unit = "%"

    def __init__(self, alert_laps_left: float | None = None) -> None:
        self._alert = _LowAlert(alert_laps_left)
        self._bins: list[_Bin] = []  # since the last refill (and at most 2 × FIT_WINDOW_S of them)
        self._bin_index: int | None = None
        self._bin_values: list[float] = []
        self._bin_moving: bool | None = None  # None: no speed in this bin yet
        self._moving = True  # the last known state; without any speed channel the car is taken as driving
        self._line: tuple[float, float] | None = None  # the line refill detection compares with
        self._line_at = 0  # len(_bins) when it was fitted
        self._above = 0  # consecutive bins above the line
        self._above_from: int | None = None  # index in _bins of the first of them
        self._refill_ts: list[float] = []
        self._drive_s: list[float] = []  # driving time of the recent laps
        self._slope: float | None = None  # %/s of driving, of the line fitted at the last lap's end
        self._settled = False  # that line had at least SETTLE_S of driving behind it
        self._last_lap_used: float | None = None
        self.ignored = 0  # readings without a usable time or level (out of 0..100, not a number, out of order)

    # ---------------------------------------------------------------- feed

    def feed(self, frame: Any) -> list[FuelEvent]:
        """Take a frame's ``fuel_level`` (and ``speed``/``gps_speed``); a ``fuel.refill`` when a step up is sure."""
        t, level, speed = _fuel_value(frame)
        if speed is not None:
            self._moving = speed >= MOVING_KMH
            self._bin_moving = bool(self._bin_moving) or self._moving
        if level is None:
            return []  # frames without the channel are the rule (GPS frames): not counted
        if t is None or not 0.0 <= level <= 100.0:
            self.ignored += 1
            return []
        index = math.floor(t / BIN_S)
        if self._bin_index is not None and index < self._bin_index:
            self.ignored += 1
            return []
        events: list[FuelEvent] = []
        if self._bin_index is not None and index != self._bin_index:
            events = self._close_bin()
        self._bin_index = index
        self._bin_values.append(level)
        return events

    def lap_completed(self, lap: Any) -> list[FuelEvent]:
        """The fuel used in that lap (None with a refill in it), and the forecast; maybe ``fuel.low``."""
        number, start_t, end_t = _lap_fields(lap)
        fit, x_start, x_end = self._fit(end_t), self._x_at(start_t), self._x_at(end_t)
        end_level = None if fit is None or x_end is None else fit[0] * x_end + fit[1]
        start_level = None if fit is None or x_start is None else fit[0] * x_start + fit[1]
        refill_in_lap = any(start_t <= r <= end_t for r in self._refill_ts)
        used = None if refill_in_lap or start_level is None or end_level is None else start_level - end_level
        self._last_lap_used = used
        if used is not None and x_start is not None and x_end is not None:
            self._drive_s = (self._drive_s + [x_end - x_start])[-RECENT_LAPS:]
        self._slope = None if fit is None else fit[0]
        first = next((b for b in self._bins if b.t > end_t - FIT_WINDOW_S), None)
        self._settled = fit is not None and first is not None and x_end is not None and x_end - first.x >= SETTLE_S
        estimate = self.estimate()
        events = [FuelEvent(FUEL_LAP, end_t, {"lap": number, "used": used, **estimate.to_dict()})]
        return events + self._alert.check(end_t, estimate.laps_left if estimate.settled else None)

    def refilled(self, t: float, added: float | None = None, to_full: bool = False) -> list[FuelEvent]:
        """The sensor sees refills itself: the crew's word only re-arms the low-fuel alert."""
        self._alert.armed = True
        return []

    # ---------------------------------------------------------------- state

    def level_at(self, t: float) -> float | None:
        """The fitted level at ``t`` (the line through the bins up to ``t`` since the last refill)."""
        fit = self._fit(t)
        x = self._x_at(t)
        return None if fit is None or x is None else fit[0] * x + fit[1]

    def estimate(self) -> FuelEstimate:
        """Level (at the latest reading), mean use of the recent laps, laps left."""
        level = self.level_at(self._bins[-1].t) if self._bins else None
        per_lap = (-self._slope * statistics.fmean(self._drive_s)
                   if self._slope is not None and self._drive_s and self._slope < 0 else None)
        laps_left = level / per_lap if level is not None and per_lap is not None and per_lap > 0 else None
        return FuelEstimate(self.unit, level, per_lap, laps_left, self._last_lap_used, self._settled)

    # ---------------------------------------------------------------- internals

    def _x_at(self, t: float) -> float | None:
        """Driving time at ``t``: interpolated between bins, carried on (if driving) past the last one."""
        bins = self._bins
        if not bins:
            return None
        if t >= bins[-1].t:
            return bins[-1].x + ((t - bins[-1].t) if self._moving else 0.0)
        if t <= bins[0].t:
            return bins[0].x - (bins[0].t - t)
        i = bisect.bisect_right([b.t for b in bins], t)
        b0, b1 = bins[i - 1], bins[i]
        return b0.x + (b1.x - b0.x) * (t - b0.t) / (b1.t - b0.t)

    def _close_bin(self) -> list[FuelEvent]:
        assert self._bin_index is not None
        centre = (self._bin_index + 0.5) * BIN_S
        median = statistics.median(self._bin_values)
        moving = self._moving if self._bin_moving is None else self._bin_moving
        self._bin_values, self._bin_moving = [], None
        if self._line is None or len(self._bins) - self._line_at >= REFIT_BINS:
            self._line, self._line_at = self._fit(centre), len(self._bins)
        line = self._line
        last = self._bins[-1] if self._bins else None
        x = 0.0 if last is None else last.x + ((centre - last.t) if moving else 0.0)
        self._bins.append(_Bin(centre, x, median))
        keep = round(2 * FIT_WINDOW_S / BIN_S)  # memory bound over a long stint: a lap's start is still in it
        if len(self._bins) > 2 * keep and self._above_from is None:
            drop = len(self._bins) - keep
            self._bins = self._bins[drop:]
            self._line_at = max(0, self._line_at - drop)
        if line is None or median - (line[0] * x + line[1]) <= REFILL_MIN_PCT:
            self._above, self._above_from = 0, None
            return []
        if self._above == 0:
            self._above_from = len(self._bins) - 1
        self._above += 1
        if self._above < REFILL_CONFIRM_BINS:
            return []
        assert self._above_from is not None
        before = line[0] * self._bins[self._above_from].x + line[1]
        self._bins = self._bins[self._above_from:]
        self._line, self._line_at = None, 0
        at = self._bins[0].t - BIN_S / 2
        self._refill_ts.append(at)
        self._above, self._above_from = 0, None
        self._alert.armed = True
        return [FuelEvent(FUEL_REFILL, at, {"before": before, "after": statistics.median(b.v for b in self._bins)})]

    def _fit(self, t: float) -> tuple[float, float] | None:
        """Theil-Sen line (level against driving time) of the bins in (t - FIT_WINDOW_S, t].

        Bins of a step up still being confirmed are left out.
        """
        end = len(self._bins) if self._above_from is None else self._above_from
        points = [(b.x, b.v) for b in self._bins[:end] if t - FIT_WINDOW_S < b.t <= t + BIN_S / 2]
        if len(points) < MIN_FIT_BINS or points[-1][0] - points[0][0] < MIN_FIT_SPAN_S:
            return None
        if len(points) > MAX_FIT_POINTS:
            step = math.ceil(len(points) / MAX_FIT_POINTS)
            points = [(statistics.fmean(p[0] for p in chunk), statistics.median(p[1] for p in chunk))
                      for chunk in (points[i:i + step] for i in range(0, len(points), step))]
        return theil_sen(points)


@dataclass(frozen=True)
class _Bin:
    t: float  # centre of the second
    x: float  # driving time since the first bin (does not advance while the car stands)
    v: float  # median level in the second


class ModelFuel:
    """Fuel from a tank size and a use per lap (litres), corrected by the crew (the module docstring)."""

    unit = "l"

    def __init__(self, tank_l: float, use_per_lap_l: float, level_l: float | None = None,
                 alert_laps_left: float | None = None) -> None:
        if not (math.isfinite(tank_l) and tank_l > 0 and math.isfinite(use_per_lap_l) and use_per_lap_l > 0):
            raise ValueError("tank size and use per lap must be positive numbers of litres")
        if level_l is not None and not (math.isfinite(level_l) and 0 <= level_l <= tank_l):
            raise ValueError("the level must be between 0 and the tank size")
        self.tank_l = tank_l
        self.use_per_lap_l = use_per_lap_l
        self.level_l = tank_l if level_l is None else level_l
        self._alert = _LowAlert(alert_laps_left)
        self._known_l = self.level_l  # the level last known for sure (the start, or a fill to full)
        self._added_since_l = 0.0  # litres added since then
        self._laps_since_known = 0  # laps since then
        self._last_lap_used: float | None = None

    def feed(self, frame: Any) -> list[FuelEvent]:
        """No sensor: frames tell the model nothing."""
        return []

    def lap_completed(self, lap: Any) -> list[FuelEvent]:
        """One lap's use off the level; maybe ``fuel.low``."""
        number, _, end_t = _lap_fields(lap)
        used = min(self.use_per_lap_l, self.level_l)
        self.level_l -= used
        self._laps_since_known += 1
        self._last_lap_used = used
        estimate = self.estimate()
        return ([FuelEvent(FUEL_LAP, end_t, {"lap": number, "used": used, **estimate.to_dict()})]
                + self._alert.check(end_t, estimate.laps_left))

    def refilled(self, t: float, added: float | None = None, to_full: bool = False) -> list[FuelEvent]:
        """``added`` litres went in (``to_full``: up to a full tank, and ``added`` corrects the use per lap)."""
        if added is not None and not (math.isfinite(added) and added >= 0):
            raise ValueError("the amount added must be a non-negative number of litres")
        if added is None and not to_full:
            raise ValueError("say how much went in, or that the tank was filled to full")
        before = self.level_l
        if to_full:
            if added is not None and self._laps_since_known > 0:
                used = self._known_l + self._added_since_l + added - self.tank_l
                if used > 0:
                    self.use_per_lap_l = used / self._laps_since_known
            self.level_l = self._known_l = self.tank_l
            self._laps_since_known, self._added_since_l = 0, 0.0
        else:
            assert added is not None
            self.level_l = min(self.tank_l, self.level_l + added)
            self._added_since_l += added
        self._alert.check(t, self.estimate().laps_left)  # re-arms when back above the threshold
        return [FuelEvent(FUEL_REFILL, t, {"before": before, "after": self.level_l,
                                            "use_per_lap": self.use_per_lap_l})]

    def estimate(self) -> FuelEstimate:
        """Level, the use per lap, laps left."""
        return FuelEstimate(self.unit, self.level_l, self.use_per_lap_l, self.level_l / self.use_per_lap_l,
                            self._last_lap_used)
