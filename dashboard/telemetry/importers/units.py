"""Columns of other loggers as the registry's channels: names by alias, values converted to its units. Pure.

``column(name, unit)`` answers the channel a column becomes and the function that converts its
values; a column with a registered meaning but a unit we cannot convert stays a custom channel
(named with its unit, so nobody reads miles per hour as km/h), and a note says so.
"""
from __future__ import annotations

from typing import Callable

from dashboard.telemetry.channels import REGISTRY
from dashboard.telemetry.importers import channel_name

Convert = Callable[[float], float]
MPH_TO_KMH = 1.609344  # exact: the international mile
MS_TO_KMH = 3.6
KNOTS_TO_KMH = 1.852  # exact
FT_TO_M = 0.3048  # exact: the international foot


def _same(value: float) -> float:
    return value


def _scale(factor: float) -> Convert:
    return lambda value: value * factor


def _fahrenheit(value: float) -> float:
    return (value - 32.0) * 5.0 / 9.0


def _kelvin(value: float) -> float:
    return value - 273.15


# what a column's name says (lower case, spaces/underscores/dashes removed) -> the registry's channel
ALIASES = {
    "speed": "speed", "vehiclespeed": "speed", "vss": "speed", "obdspeed": "speed", "kph": "speed", "mph": "speed",
    "gpsspeed": "gps_speed", "speedoverground": "gps_speed", "sog": "gps_speed",
    "rpm": "rpm", "enginespeed": "rpm", "enginerpm": "rpm",
    "throttle": "throttle", "tps": "throttle", "throttleposition": "throttle", "throttlepos": "throttle",
    "engineload": "engine_load", "load": "engine_load", "calculatedload": "engine_load",
    "coolanttemp": "coolant_temp", "coolant": "coolant_temp", "enginetemp": "coolant_temp",
    "watertemp": "coolant_temp", "ect": "coolant_temp", "enginecoolanttemperature": "coolant_temp",
    "intaketemp": "intake_temp", "iat": "intake_temp", "intakeairtemp": "intake_temp", "airtemp": "intake_temp",
    "fuellevel": "fuel_level", "fuel": "fuel_level",
    "timingadvance": "timing_advance", "ignitiontiming": "timing_advance",
    "maf": "maf", "massairflow": "maf",
    "lat": "lat", "latitude": "lat",
    "lon": "lon", "lng": "lon", "long": "lon", "longitude": "lon",
    "heading": "heading", "bearing": "heading", "course": "heading", "cog": "heading",
    "altitude": "altitude", "alt": "altitude", "elevation": "altitude", "ele": "altitude",
    "gpsfix": "gps_fix", "gpsqual": "gps_fix", "fixquality": "gps_fix",
    "satellites": "satellites", "sats": "satellites", "gpssats": "satellites", "numsats": "satellites",
    "hdop": "hdop", "gpsdop": "hdop",
    "battery": "battery_voltage", "batteryvoltage": "battery_voltage", "voltage": "battery_voltage",
    "batt": "battery_voltage", "vbat": "battery_voltage",
    "oiltemp": "oil_temp", "engineoiltemp": "oil_temp",
    "gear": "gear",
}

# a unit label as loggers write it (lower case, no spaces) -> (the registry unit it converts to, how)
UNITS: dict[str, tuple[str, Convert]] = {
    "km/h": ("km/h", _same), "kph": ("km/h", _same), "kmh": ("km/h", _same), "kmph": ("km/h", _same),
    "mph": ("km/h", _scale(MPH_TO_KMH)), "m/s": ("km/h", _scale(MS_TO_KMH)), "mps": ("km/h", _scale(MS_TO_KMH)),
    "knots": ("km/h", _scale(KNOTS_TO_KMH)), "kn": ("km/h", _scale(KNOTS_TO_KMH)), "kt": ("km/h", _scale(KNOTS_TO_KMH)),
    "c": ("°C", _same), "°c": ("°C", _same), "degc": ("°C", _same), ".c": ("°C", _same), "celsius": ("°C", _same),
    "f": ("°C", _fahrenheit), "°f": ("°C", _fahrenheit), "degf": ("°C", _fahrenheit), ".f": ("°C", _fahrenheit),
    "fahrenheit": ("°C", _fahrenheit), "k": ("°C", _kelvin), "kelvin": ("°C", _kelvin),
    "m": ("m", _same), "meters": ("m", _same), "metres": ("m", _same),
    "ft": ("m", _scale(FT_TO_M)), "feet": ("m", _scale(FT_TO_M)),
    "v": ("V", _same), "volts": ("V", _same), "volt": ("V", _same),
    "%": ("%", _same), "percent": ("%", _same), "pct": ("%", _same),
    "rpm": ("rpm", _same),
    "deg": ("°", _same), "degrees": ("°", _same), "°": ("°", _same), "degree": ("°", _same),
    "g/s": ("g/s", _same),
}


def registered(name: str) -> str | None:
    """The registry channel a column's name stands for, or None."""
    key = "".join(ch for ch in name.lower() if ch.isalnum())
    return ALIASES.get(key)


def column(name: str, unit: str, notes: list[str] | None = None) -> tuple[str, Convert]:
    """(channel, converter) of a column called ``name`` whose values are in ``unit`` ("" when unsaid)."""
    target = registered(name)
    label = unit.strip().lower().replace(" ", "")
    if target is None:
        return channel_name(name), _same
    wanted = REGISTRY[target].unit
    if not label or not wanted:
        return target, _same  # no unit said: the registry's is assumed; a unitless channel takes any
    known = UNITS.get(label)
    if known is not None and known[0] == wanted:
        return target, known[1]
    custom = channel_name(f"{name}_{unit}")
    if notes is not None:
        notes.append(f"column {name!r} in {unit!r} kept as custom channel {custom!r}: "
                     f"{target} is in {wanted} and {unit!r} does not convert to it")
    return custom, _same
