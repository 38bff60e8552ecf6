"""Running statistics of a session's frames: distance, maxima, gaps. Pure: fed frames, no I/O.

The server keeps one per session, saves it with the frames, and shows it in
the sessions list and the API (laps and best lap come from the lap timer).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

GAP_S = 1.0  # frames further apart than this (by sample time) are a gap in the data: a dropped link or a stop
MAX_STEP_KMH = 350.0  # a move between two fixes implying more is a GPS jump, not distance driven
EARTH_RADIUS_M = 6_371_008.8  # mean Earth radius (IUGG)


def step_m(lat0: float, lon0: float, lat1: float, lon1: float) -> float:
    """Distance between two nearby fixes (equirectangular; exact to well under 0.1% over a few metres)."""
    mean_lat = math.radians((lat0 + lat1) / 2)
    dx = math.radians(lon1 - lon0) * math.cos(mean_lat)
    dy = math.radians(lat1 - lat0)
    return EARTH_RADIUS_M * math.hypot(dx, dy)


@dataclass
class FrameStats:
    """What a session's frames add up to so far."""

    distance_m: float = 0.0
    max_speed: float | None = None
    max_rpm: float | None = None
    gaps: int = 0
    gap_s: float = 0.0
    backfilled: int = 0
    last_t: float | None = None
    last_lat: float | None = None
    last_lon: float | None = None
    last_fix_t: float | None = None

    def feed(self, frame: dict[str, Any], backfill: bool = False) -> None:
        """Take one frame (in seq order) into account."""
        channels, t = frame["channels"], frame["t"]
        if backfill:
            self.backfilled += 1
        if self.last_t is not None and t - self.last_t > GAP_S:
            self.gaps += 1
            self.gap_s += t - self.last_t
        if self.last_t is None or t > self.last_t:
            self.last_t = t
        speed, rpm = channels.get("speed"), channels.get("rpm")
        if speed is not None and (self.max_speed is None or speed > self.max_speed):
            self.max_speed = speed
        if rpm is not None and (self.max_rpm is None or rpm > self.max_rpm):
            self.max_rpm = rpm
        lat, lon = channels.get("lat"), channels.get("lon")
        if lat is None or lon is None:
            return
        if self.last_lat is not None and self.last_fix_t is not None and t > self.last_fix_t:
            step = step_m(self.last_lat, self.last_lon, lat, lon)
            if step / (t - self.last_fix_t) * 3.6 <= MAX_STEP_KMH:
                self.distance_m += step
        self.last_lat, self.last_lon, self.last_fix_t = lat, lon, t

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, for storage (a copy of the fields: dataclasses.asdict deep-copies, 10x slower)."""
        return dict(self.__dict__)

    @classmethod
    def from_dict(cls, raw: dict[str, Any] | None) -> "FrameStats":
        """The inverse of ``to_dict`` (None gives empty statistics)."""
        known = {k: v for k, v in (raw or {}).items() if k in cls.__dataclass_fields__}
        return cls(**known)

    def public(self) -> dict[str, Any]:
        """The figures shown to people."""
        return {"distance_m": round(self.distance_m, 1), "max_speed": self.max_speed, "max_rpm": self.max_rpm,
                "gaps": self.gaps, "gap_s": round(self.gap_s, 3), "backfilled_frames": self.backfilled}
