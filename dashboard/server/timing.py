"""The pure processors of one session (lap timer, and later the alert engine), fed the session's frames.

This is the thin layer between the SessionManager (which stores and tells)
and the pure processors in ``dashboard.telemetry`` (which only compute): it
keeps one processor set per session, replays stored frames into them after a
restart or a track change, and turns their output into (kind, payload) pairs.
"""
from __future__ import annotations

from typing import Any, Iterable

from dashboard.telemetry.laps import LAP_COMPLETED, LAP_DELTA, SECTOR_COMPLETED, LapTimer, Track


class SessionTiming:
    """Lap timing of one session on one track."""

    def __init__(self, track: Track | None, setups: Iterable[tuple[float, int]] = ()) -> None:
        self.track = track
        self.timer = LapTimer(track) if track is not None else None
        self._setups = sorted(setups)
        self._next_setup = 0
        self.delta: dict[str, Any] | None = None  # the latest lap.delta payload

    def set_setup_version(self, t: float, version: int) -> None:
        """A new setup takes effect at ``t``."""
        self._setups.append((t, version))
        self._setups.sort()

    def feed(self, frame: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
        """One frame in; ("lap" | "sector", payload) out. The latest delta is kept, not returned."""
        if self.timer is None or self.timer.finished:
            return []
        while self._next_setup < len(self._setups) and self._setups[self._next_setup][0] <= frame["t"]:
            self.timer.setup_version = self._setups[self._next_setup][1]
            self._next_setup += 1
        out = []
        for event in self.timer.feed(frame):
            if event.type == LAP_COMPLETED:
                out.append(("lap", event.payload))
            elif event.type == SECTOR_COMPLETED:
                out.append(("sector", event.payload))
            elif event.type == LAP_DELTA:
                self.delta = event.payload
        return out

    def finish(self) -> list[tuple[str, dict[str, Any]]]:
        """The session ended: close the in-lap."""
        if self.timer is None or self.timer.finished:
            return []
        return [("lap", e.payload) for e in self.timer.finish() if e.type == LAP_COMPLETED]

    def summary(self) -> dict[str, Any]:
        """Best lap, best sectors and theoretical best so far."""
        if self.timer is None:
            return {"best_lap": None, "best_sectors": [], "theoretical_best": None}
        best = self.timer.best_lap
        return {"best_lap": best.to_dict() if best else None, "best_sectors": self.timer.best_sectors,
                "theoretical_best": self.timer.theoretical_best}
