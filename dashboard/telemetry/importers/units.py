"""Columns of other loggers as the registry's channels: names by alias, values converted to its units. Pure.

``column(name, unit)`` answers the channel a column becomes and the function that converts its
values; a column with a registered meaning but a unit we cannot convert stays a custom channel
(named with its unit, so nobody reads miles per hour as km/h), and a note says so.
"""
from __future__ import annotations

from typing import Callable

from dashboard.telemetry.channels import REGISTRY
from dashboard.telemetry.importers import channel_name
from dashboard.telemetry.units import UnitError, conversion

Convert = Callable[[float], float]
MS_TO_KMH = 3.6


def _same(value: float) -> float:
    return value


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
    try:  # the one table of conversions (dashboard/telemetry/units.py), shared with the CAN map
        convert = conversion(label, wanted)
    except UnitError:
        pass
    else:
        return target, (_same if convert.identity else convert)
    custom = channel_name(f"{name}_{unit}")
    if notes is not None:
        notes.append(f"column {name!r} in {unit!r} kept as custom channel {custom!r}: "
                     f"{target} is in {wanted} and {unit!r} does not convert to it")
    return custom, _same
