"""Plausible engine channels derived from recorded GPS speed: the simulated car's drivetrain.

Pure and deterministic: feed ``(t, speed_kmh)`` samples in time order and get
rpm, gear, throttle, engine load, coolant temperature and fuel level in the
registry's units. The model is a small six-speed car, not a physics engine:
rpm follows road speed through the selected gear, throttle follows the
smoothed longitudinal acceleration (0 % when braking), coolant warms from a
cold start towards its thermostat band with load, and fuel drains with
throttle and rpm.
"""
from __future__ import annotations

from dataclasses import dataclass

GEAR_TOP_KMH = (42.0, 64.0, 86.0, 110.0, 135.0, 165.0)  # road speed at redline per gear
REDLINE_RPM = 9000.0  # rev limit of the modelled engine
IDLE_RPM = 1500.0  # idle / clutch-in rpm, also the floor when rolling slowly
SHIFT_UP_FRACTION = 0.92  # change up above this fraction of redline
SHIFT_DOWN_RPM = 4200.0  # change down when the next gear down would stay below redline and rpm falls under this
ACCEL_FULL_THROTTLE = 2.5  # m/s² of acceleration that needs full throttle (a kart-like car at speed)
CRUISE_THROTTLE = 18.0  # % throttle holding a steady speed
ACCEL_SMOOTHING_S = 0.4  # time constant of the acceleration filter; GPS speed is noisy at 10-25 Hz
MAX_DT_S = 2.0  # a longer gap (dropped fixes, log loop) restarts the derivative
COOLANT_START_C = 55.0  # engine started in the pits, not fully warm
COOLANT_BASE_C = 82.0  # thermostat-controlled temperature at light load
COOLANT_LOAD_GAIN_C = 14.0  # extra degrees at sustained full load
COOLANT_TIME_CONSTANT_S = 90.0  # how fast the coolant follows the load
FUEL_START_PCT = 96.0  # a nearly full tank at the start of the run
FUEL_PCT_PER_FULL_LOAD_S = 0.012  # % of tank per second at full throttle and redline (~2 h at full load)
FUEL_IDLE_PCT_PER_S = 0.0004  # % of tank per second at idle


def _clamp(value: float, low: float, high: float) -> float:
    return max(low, min(high, value))


@dataclass
class EngineModel:
    """State of the simulated drivetrain; ``update`` advances it by one GPS sample."""

    gear: int = 1
    coolant_c: float = COOLANT_START_C
    fuel_pct: float = FUEL_START_PCT
    _last_t: float | None = None
    _last_speed_ms: float = 0.0
    _accel: float = 0.0

    def reset_motion(self) -> None:
        """Forget the last sample (after a gap or a loop of the log); temperatures and fuel stay."""
        self._last_t = None
        self._accel = 0.0

    def update(self, t: float, speed_kmh: float) -> dict[str, float]:
        """Advance to time ``t`` with the recorded road speed; the engine channels at that instant."""
        speed_kmh = max(0.0, speed_kmh)
        speed_ms = speed_kmh / 3.6
        dt = 0.0 if self._last_t is None else t - self._last_t
        if self._last_t is not None and 0.0 < dt <= MAX_DT_S:
            raw_accel = (speed_ms - self._last_speed_ms) / dt
            alpha = dt / (ACCEL_SMOOTHING_S + dt)
            self._accel += alpha * (raw_accel - self._accel)
        elif dt > MAX_DT_S or dt < 0:
            self._accel = 0.0
            dt = 0.0
        self._last_t = t
        self._last_speed_ms = speed_ms

        self.gear = self._select_gear(speed_kmh)
        rpm = max(IDLE_RPM, speed_kmh / GEAR_TOP_KMH[self.gear - 1] * REDLINE_RPM)
        rpm = min(rpm, REDLINE_RPM)
        if self._accel <= -0.3:  # braking or lifting off
            throttle = 0.0
        elif speed_kmh < 2.0:
            throttle = 0.0  # idling in the pits
        else:
            throttle = CRUISE_THROTTLE + (100.0 - CRUISE_THROTTLE) * self._accel / ACCEL_FULL_THROTTLE
        throttle = _clamp(throttle, 0.0, 100.0)
        load = _clamp(0.25 * 100.0 * rpm / REDLINE_RPM + 0.75 * throttle, 0.0, 100.0)

        if dt > 0:
            target = COOLANT_BASE_C + COOLANT_LOAD_GAIN_C * load / 100.0
            self.coolant_c += (target - self.coolant_c) * min(1.0, dt / COOLANT_TIME_CONSTANT_S)
            burn = FUEL_IDLE_PCT_PER_S + FUEL_PCT_PER_FULL_LOAD_S * (throttle / 100.0) * (rpm / REDLINE_RPM)
            self.fuel_pct = max(0.0, self.fuel_pct - burn * dt)

        return {
            "speed": round(speed_kmh, 2),
            "rpm": round(rpm),
            "gear": float(self.gear) if speed_kmh >= 2.0 else 0.0,
            "throttle": round(throttle, 1),
            "engine_load": round(load, 1),
            "coolant_temp": round(self.coolant_c, 1),
            "fuel_level": round(self.fuel_pct, 2),
        }

    def _select_gear(self, speed_kmh: float) -> int:
        gear = self.gear
        while gear < len(GEAR_TOP_KMH) and speed_kmh > GEAR_TOP_KMH[gear - 1] * SHIFT_UP_FRACTION:
            gear += 1
        while gear > 1:
            lower_rpm = speed_kmh / GEAR_TOP_KMH[gear - 2] * REDLINE_RPM
            current_rpm = speed_kmh / GEAR_TOP_KMH[gear - 1] * REDLINE_RPM
            if current_rpm < SHIFT_DOWN_RPM and lower_rpm < REDLINE_RPM * SHIFT_UP_FRACTION:
                gear -= 1
            else:
                break
        return gear
