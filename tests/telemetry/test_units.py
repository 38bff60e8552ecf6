"""The unit table: conversions into the registry's units, and clear errors for pairs that cannot convert."""
from __future__ import annotations

import pytest

from dashboard.telemetry.channels import REGISTRY
from dashboard.telemetry.units import Linear, UnitError, conversion, known


@pytest.mark.parametrize(("value", "source", "target", "expected"), [
    (10.0, "m/s", "km/h", 36.0),
    (60.0, "mph", "km/h", 96.56064),
    (212.0, "degF", "°C", 100.0),
    (32.0, "°F", "°C", 0.0),
    (373.15, "K", "°C", 100.0),
    (100.0, "°C", "degF", 212.0),
    (0.5, "ratio", "%", 50.0),
    (3.141592653589793, "rad", "°", 180.0),
    (1.0, "bar", "kPa", 100.0),
    (14.5, "psi", "kPa", 99.97398),
    (36.0, "kg/h", "g/s", 10.0),
    (9.80665, "m/s²", "g", 1.0),
    (1200.0, "1/min", "rpm", 1200.0),
])
def test_conversions(value: float, source: str, target: str, expected: float) -> None:
    assert conversion(source, target)(value) == pytest.approx(expected, abs=1e-4)


def test_the_same_unit_is_the_identity_known_or_not() -> None:
    assert conversion("km/h", "KM/H").identity
    assert conversion("furlongs", "furlongs").identity
    assert conversion("", "").identity
    assert Linear(2.0, 1.0)(3.0) == 7.0 and not Linear(2.0, 1.0).identity


def test_mismatched_and_unknown_units_are_named() -> None:
    with pytest.raises(UnitError, match=r"'bar' \(pressure\) cannot become 'km/h' \(speed\)"):
        conversion("bar", "km/h")
    with pytest.raises(UnitError, match="unknown unit 'furlong/fortnight'"):
        conversion("furlong/fortnight", "km/h")


def test_every_registry_unit_with_a_unit_is_known() -> None:
    assert all(known(channel.unit) for channel in REGISTRY.values() if channel.unit)
