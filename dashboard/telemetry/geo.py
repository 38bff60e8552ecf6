"""Pure plane geodesy for a race track: a local projection, distances and segment crossings.

A track is at most a few kilometres across, so positions are projected onto a
plane tangent at the track (equirectangular: east = N·cos φ0·Δlon, north =
M·Δlat, with M and N the WGS84 radii of curvature at the origin). Its scale
is exact at the origin and off by about 1e-4 per kilometre away from it
(meridians converge): 10 cm over 1 km, under GPS noise, and a line and the
fixes around it are distorted alike, so crossing times do not suffer. It is
an affine map of latitude and
longitude: a straight line in degrees stays a straight line, and the fraction of
the way along a segment is the same in degrees and in metres. That makes the
crossing interpolation exact for a car moving straight at constant speed
between two fixes.

Everything here is a function of its arguments: no I/O, no clock.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

WGS84_A_M = 6_378_137.0  # WGS84 semi-major axis: GPS positions are WGS84
WGS84_E2 = 6.694_379_990_14e-3  # WGS84 first eccentricity squared, f·(2 − f) with f = 1/298.257223563
LatLon = tuple[float, float]  # (latitude, longitude) in degrees, WGS84
Point = tuple[float, float]  # (east, north) in metres on the local plane
END_TOLERANCE = 1e-9  # fraction of a line's length (a micrometre): a move through an end point hits it both ways


def _wrap_degrees(delta: float) -> float:
    """A longitude difference brought into [-180, 180) so a track on the antimeridian works."""
    return (delta + 180.0) % 360.0 - 180.0


@dataclass(frozen=True)
class LocalProjection:
    """Equirectangular projection around ``origin``: (lat, lon) degrees ↔ (east, north) metres."""

    origin: LatLon
    _east_m_per_deg: float = field(init=False, repr=False, compare=False)
    _north_m_per_deg: float = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        phi = math.radians(self.origin[0])
        w = 1.0 - WGS84_E2 * math.sin(phi) ** 2
        prime_vertical = WGS84_A_M / math.sqrt(w)  # N: radius of curvature east-west
        meridional = WGS84_A_M * (1.0 - WGS84_E2) / w**1.5  # M: radius of curvature north-south
        object.__setattr__(self, "_east_m_per_deg", math.radians(1.0) * prime_vertical * math.cos(phi))
        object.__setattr__(self, "_north_m_per_deg", math.radians(1.0) * meridional)

    def to_xy(self, lat: float, lon: float) -> Point:
        """Metres east and north of the origin."""
        return (
            _wrap_degrees(lon - self.origin[1]) * self._east_m_per_deg,
            (lat - self.origin[0]) * self._north_m_per_deg,
        )

    def to_latlon(self, x: float, y: float) -> LatLon:
        """The inverse of ``to_xy``."""
        lon = _wrap_degrees(self.origin[1] + x / self._east_m_per_deg)
        return (self.origin[0] + y / self._north_m_per_deg, lon)


def distance(p: Point, q: Point) -> float:
    """Plane distance in metres."""
    return math.hypot(q[0] - p[0], q[1] - p[1])


def side(p: Point, a: Point, b: Point) -> float:
    """Twice the signed area of (a, b, p): > 0 when p is left of a→b, < 0 right, 0 on the line."""
    return (b[0] - a[0]) * (p[1] - a[1]) - (b[1] - a[1]) * (p[0] - a[0])


def segment_crossing(p0: Point, p1: Point, a: Point, b: Point) -> tuple[float, int] | None:
    """Where the move p0→p1 crosses the line segment a–b: ``(s, direction)`` or None.

    ``s`` in [0, 1] is the fraction of the way from p0 to p1 (so the crossing time
    is t0 + s·(t1 − t0)); ``direction`` is +1 when the move goes from the right of
    a→b to its left (a on the driver's left, b on the right) and −1 the other way.

    A point exactly on the line counts as being on its right. So a fix lying on
    the line gives one crossing, never two: a leftward move crosses on the
    segment leaving that fix (s = 0), a rightward move on the segment arriving at
    it (s = 1). A move that only touches the line and comes back is no crossing.
    The line's end points belong to it.
    """
    d0, d1 = side(p0, a, b), side(p1, a, b)
    left0, left1 = d0 > 0.0, d1 > 0.0
    if left0 == left1:
        return None
    s = d0 / (d0 - d1)  # d0 != d1 because exactly one of them is > 0
    x = p0[0] + s * (p1[0] - p0[0])
    y = p0[1] + s * (p1[1] - p0[1])
    abx, aby = b[0] - a[0], b[1] - a[1]
    u = ((x - a[0]) * abx + (y - a[1]) * aby) / (abx * abx + aby * aby)
    if not -END_TOLERANCE <= u <= 1.0 + END_TOLERANCE:
        return None
    return s, (1 if left1 else -1)
