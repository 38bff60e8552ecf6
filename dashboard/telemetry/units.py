"""Linear unit conversions into the registry's units: a small table, no I/O.

A source that reads values in another unit (a DBC's "m/s", a logger's "degF")
asks ``conversion(from_unit, to_unit)`` once for the pair and applies the
returned ``Linear`` to every value. Only the quantities the registry carries
are here (speed, temperature, ratio, angle, voltage, engine speed, mass flow,
distance, pressure, acceleration); an unknown or mismatched pair is a
``UnitError`` naming both units, raised where the mapping is read, never per
value. pint (python-obd's dependency) would do this too, but is not installed
with every source and costs half a second at import for ten lines of table.
"""
from __future__ import annotations

from dataclasses import dataclass


class UnitError(ValueError):
    """Two units that cannot be converted into each other (or one not known)."""


@dataclass(frozen=True)
class Linear:
    """``value * scale + offset``."""

    scale: float = 1.0
    offset: float = 0.0

    def __call__(self, value: float) -> float:
        return value * self.scale + self.offset

    @property
    def identity(self) -> bool:
        """True when it changes nothing."""
        return self.scale == 1.0 and self.offset == 0.0


# unit (lower case, as DBC files and loggers spell them) -> (quantity, factor to the quantity's base unit, offset)
_UNITS: dict[str, tuple[str, float, float]] = {}


def _define(quantity: str, factor: float, offset: float, *names: str) -> None:
    for name in names:
        _UNITS[name.lower()] = (quantity, factor, offset)


_define("speed", 1.0, 0.0, "km/h", "kph", "kmh", "kmph", "km/hr")
_define("speed", 3.6, 0.0, "m/s", "mps")
_define("speed", 1.609344, 0.0, "mph", "mi/h")
_define("speed", 1.852, 0.0, "kn", "kt", "knot", "knots")
_define("temperature", 1.0, 0.0, "°c", "degc", "deg c", ".c", "c", "celsius")
_define("temperature", 1.0, -273.15, "k", "degk", "kelvin")
_define("temperature", 5.0 / 9.0, -32.0 * 5.0 / 9.0, "°f", "degf", "deg f", ".f", "f", "fahrenheit")
_define("ratio", 1.0, 0.0, "%", "percent", "pct")
_define("ratio", 100.0, 0.0, "ratio", "fraction")
_define("angle", 1.0, 0.0, "°", "deg", "degree", "degrees")
_define("angle", 57.29577951308232, 0.0, "rad", "radian", "radians")
_define("voltage", 1.0, 0.0, "v", "volt", "volts")
_define("voltage", 0.001, 0.0, "mv", "millivolt")
_define("engine_speed", 1.0, 0.0, "rpm", "1/min", "r/min", "u/min")
_define("mass_flow", 1.0, 0.0, "g/s", "gps")
_define("mass_flow", 1000.0 / 3600.0, 0.0, "kg/h")
_define("distance", 1.0, 0.0, "m", "meter", "metre", "meters", "metres")
_define("distance", 0.3048, 0.0, "ft", "feet", "foot")
_define("distance", 1000.0, 0.0, "km")
_define("pressure", 1.0, 0.0, "kpa")
_define("pressure", 100.0, 0.0, "bar")
_define("pressure", 0.1, 0.0, "mbar", "hpa")
_define("pressure", 6.894757293168361, 0.0, "psi")
_define("acceleration", 1.0, 0.0, "g")
_define("acceleration", 1.0 / 9.80665, 0.0, "m/s2", "m/s^2", "m/s²")


def known(unit: str) -> bool:
    """True when ``unit`` is in the table."""
    return unit.strip().lower() in _UNITS


def conversion(from_unit: str, to_unit: str) -> Linear:
    """The conversion of a value in ``from_unit`` into ``to_unit`` (same spelling: identity, known or not)."""
    source, target = from_unit.strip().lower(), to_unit.strip().lower()
    if source == target:
        return Linear()
    if source not in _UNITS or target not in _UNITS:
        unknown = [u for u, key in ((from_unit, source), (to_unit, target)) if key not in _UNITS]
        raise UnitError(f"unknown unit {', '.join(repr(u) for u in unknown)} (converting {from_unit!r} to "
                        f"{to_unit!r}; known: {', '.join(sorted(_UNITS))})")
    (q_from, f_from, o_from), (q_to, f_to, o_to) = _UNITS[source], _UNITS[target]
    if q_from != q_to:
        raise UnitError(f"{from_unit!r} ({q_from.replace('_', ' ')}) cannot become {to_unit!r} "
                        f"({q_to.replace('_', ' ')})")
    # to base: v * f_from + o_from; from base: (b - o_to) / f_to
    return Linear(f_from / f_to, (o_from - o_to) / f_to)
