"""The car's frame clock: GPS time while the receiver has a fix, else the system clock."""
from __future__ import annotations

import time
from collections.abc import Callable

from dashboard.telemetry.frames import MAX_T, MIN_T

GPS_TIME_VALID_S = 2.0  # GPS time is used for this long after the last fix, then the system clock


class GpsClock:
    """Frame timestamps from the GPS receiver's clock while it has a fix, else the system clock."""

    def __init__(self, wall: Callable[[], float] = time.time, mono: Callable[[], float] = time.monotonic) -> None:
        self._wall, self._mono = wall, mono
        self._gps: tuple[float, float] | None = None  # (gps epoch, monotonic when received)

    def observe(self, gps_epoch: float, at_mono: float | None = None) -> None:
        """Record the receiver's time of a fix, received at monotonic ``at_mono``."""
        if MIN_T <= gps_epoch <= MAX_T:
            self._gps = (gps_epoch, self._mono() if at_mono is None else at_mono)

    @property
    def using_gps(self) -> bool:
        """True while frame times come from GPS."""
        return self._gps is not None and self._mono() - self._gps[1] <= GPS_TIME_VALID_S

    def now(self) -> float:
        """Epoch seconds for a frame made now."""
        if self._gps is not None:
            gps_epoch, at = self._gps
            elapsed = self._mono() - at
            if elapsed <= GPS_TIME_VALID_S:
                return gps_epoch + elapsed
        return self._wall()
