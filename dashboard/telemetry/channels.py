"""The registry of telemetry channels: every name a frame may carry, with its unit.

Like Signal K's path registry, one table says what each channel means, the
unit it is always expressed in on the wire and in storage, the range a sane
value lies in, and how long a value stays fresh. Sources convert to these
units before a value enters a frame; the dashboard labels gauges from here.

Channels not in the registry are allowed (a team's own sensors) as long as
the name is well-formed; they are carried unitless.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

CHANNEL_NAME_RE = re.compile(r"^[a-z][a-z0-9_.]{0,63}$")
MAX_CHANNELS_PER_FRAME = 128  # a generous car logs ~40; more is a misbehaving client
DEFAULT_STALE_AFTER_S = 5.0  # a channel older than this is shown greyed out


@dataclass(frozen=True)
class Channel:
    """One telemetry channel: canonical name, unit and plausible range."""

    name: str
    unit: str
    description: str
    minimum: float | None = None
    maximum: float | None = None
    stale_after_s: float = DEFAULT_STALE_AFTER_S
    label: str = ""  # what a person reads ("Engine load"); the name when empty

    @property
    def title(self) -> str:
        """The channel's label for people, its name when it has none."""
        return self.label or self.name


_CHANNELS = [
    Channel("speed", "km/h", "Vehicle speed (OBD, else GPS)", 0, 500, label="Speed"),
    Channel("rpm", "rpm", "Engine speed", 0, 25000, label="RPM"),
    Channel("throttle", "%", "Throttle position", 0, 100, label="Throttle"),
    Channel("engine_load", "%", "Calculated engine load", 0, 100, label="Engine load"),
    Channel("coolant_temp", "°C", "Engine coolant temperature", -40, 215, label="Coolant temp"),
    Channel("intake_temp", "°C", "Intake air temperature", -40, 215, label="Intake temp"),
    Channel("fuel_level", "%", "Fuel tank level", 0, 100, stale_after_s=30.0, label="Fuel level"),
    Channel("timing_advance", "°", "Ignition timing advance", -64, 64, label="Timing advance"),
    Channel("maf", "g/s", "Mass air flow", 0, 700, label="Air flow"),
    Channel("lat", "°", "GPS latitude (WGS84)", -90, 90, stale_after_s=2.0, label="Latitude"),
    Channel("lon", "°", "GPS longitude (WGS84)", -180, 180, stale_after_s=2.0, label="Longitude"),
    Channel("gps_speed", "km/h", "Speed over ground from GPS", 0, 500, stale_after_s=2.0, label="GPS speed"),
    Channel("heading", "°", "Course over ground, true", 0, 360, stale_after_s=2.0, label="Heading"),
    Channel("altitude", "m", "GPS altitude above mean sea level", -500, 9000, stale_after_s=2.0, label="Altitude"),
    Channel("gps_fix", "", "GPS fix quality (0 none, 1 GPS, 2 DGPS, 4/5 RTK)", 0, 8, stale_after_s=2.0,
            label="GPS fix"),
    Channel("satellites", "", "Satellites used in the fix", 0, 64, stale_after_s=2.0, label="Satellites"),
    Channel("hdop", "", "Horizontal dilution of precision", 0, 100, stale_after_s=2.0, label="HDOP"),
    Channel("battery_voltage", "V", "Control module voltage", 0, 40, label="Battery"),
    Channel("oil_temp", "°C", "Engine oil temperature", -40, 215, label="Oil temp"),
    Channel("gear", "", "Selected gear (0 neutral, -1 reverse)", -1, 10, label="Gear"),
]

REGISTRY: dict[str, Channel] = {c.name: c for c in _CHANNELS}


def get_channel(name: str) -> Channel | None:
    """The registered channel of that name, or None for a custom channel."""
    return REGISTRY.get(name)


def is_valid_name(name: object) -> bool:
    """True when ``name`` is a well-formed channel name (registered or custom)."""
    return isinstance(name, str) and CHANNEL_NAME_RE.fullmatch(name) is not None


def stale_after(name: str) -> float:
    """Seconds after which a value of this channel counts as stale."""
    channel = REGISTRY.get(name)
    return channel.stale_after_s if channel else DEFAULT_STALE_AFTER_S


def units() -> dict[str, str]:
    """Map of every registered channel to its unit, for the dashboard."""
    return {c.name: c.unit for c in _CHANNELS}
