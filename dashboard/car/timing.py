"""The car's own lap timing: the pure ``LapTimer`` fed the monitor's frames, for the driver display.

The server times the laps of every session (``server/timing.py``); the car times its own too, from
the same frames as they leave the assembler, so the driver sees the lap, the running lap time and
the delta to the best lap with no link at all. Both run the one ``telemetry.laps.LapTimer``; this
class only holds it (and the track it times on) behind a lock, because frames arrive on the
assembler's thread and the display reads from its own.

The lap numbers are the car's: they start again from the out-lap when the monitor restarts, while
the server's go on (its answers carry the server's lap, not these).
"""
from __future__ import annotations

import threading
from typing import Any

from dashboard.telemetry.laps import LapTimer, Track


class CarTiming:
    """The lap timer of this car on its track (none: nothing timed, every figure None)."""

    def __init__(self, track: Track | None = None) -> None:
        self._lock = threading.Lock()
        self.track: Track | None = None
        self._timer: LapTimer | None = None
        self.set_track(track)

    def set_track(self, track: Track | None) -> bool:
        """Time on ``track`` from now on (a new timer: the laps so far are forgotten); False if it is the same."""
        with self._lock:
            if track == self.track and (track is None) == (self._timer is None):
                return False
            self.track = track
            self._timer = LapTimer(track) if track is not None else None
            return True

    def feed(self, frame: Any) -> None:
        """One frame of the assembler (``{seq, t, channels: {lat, lon...}}``); frames without a fix are skipped."""
        with self._lock:
            if self._timer is not None:
                self._timer.feed(frame)

    def snapshot(self) -> dict[str, Any]:
        """What the display shows: lap number, running lap time, delta to best, last and best lap times."""
        with self._lock:
            timer = self._timer
            if timer is None:
                return {"track": None, "lap": None, "out_lap": None, "elapsed": None, "delta": None,
                        "last_lap": None, "best_lap": None}
            timed = timer.timed_laps
            best = timer.best_lap
            return {"track": timer.track.name, "lap": timer.current_lap, "out_lap": timer.on_out_lap,
                    "elapsed": timer.current_lap_elapsed, "delta": timer.delta_to_best,
                    "last_lap": timed[-1].lap_time if timed else None,
                    "best_lap": best.lap_time if best is not None else None}
