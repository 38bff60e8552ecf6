"""The pure processors of one session (lap timer and alert engine), fed the session's frames.

This is the thin layer between the SessionManager (which stores and tells)
and the pure processors in ``dashboard.telemetry`` (which only compute): it
keeps one processor set per session, replays stored frames into them after a
restart or a track change, and turns their output into (kind, payload) pairs.
"""
from __future__ import annotations

from typing import Any, Iterable

from dashboard.telemetry.alerts import DEFAULT_RULES, AlertEngine, AlertRule
from dashboard.telemetry.frames import Frame
from dashboard.telemetry.laps import LAP_COMPLETED, LAP_DELTA, SECTOR_COMPLETED, LapTimer, Track


class SessionTiming:
    """Lap timing of one session on one track, and its alert rules."""

    def __init__(self, track: Track | None, setups: Iterable[tuple[float, int]] = (),
                 rules: Iterable[AlertRule] = DEFAULT_RULES) -> None:
        self.track = track
        self.timer = LapTimer(track) if track is not None else None
        self.alerts = AlertEngine(rules)
        self._setups = sorted(setups)
        self._next_setup = 0
        self.delta: dict[str, Any] | None = None  # the latest lap.delta payload

    def set_setup_version(self, t: float, version: int) -> None:
        """A new setup takes effect at ``t``."""
        self._setups.append((t, version))
        self._setups.sort()

    def feed(self, frame: dict[str, Any], alerts: bool = True) -> list[tuple[str, dict[str, Any]]]:
        """One frame in; ("lap" | "sector" | "alert", payload) out. The latest delta is kept, not returned.

        ``alerts=False`` replays history into the lap timer only (alerts are about now).
        """
        out: list[tuple[str, dict[str, Any]]] = []
        if alerts:
            model = Frame.model_construct(seq=frame["seq"], t=frame["t"], channels=frame["channels"])
            out += [("alert", e.model_dump()) for e in self.alerts.feed(model, frame.get("received_at"))]
        if self.timer is None or self.timer.finished:
            return out
        while self._next_setup < len(self._setups) and self._setups[self._next_setup][0] <= frame["t"]:
            self.timer.setup_version = self._setups[self._next_setup][1]
            self._next_setup += 1
        for event in self.timer.feed(frame):
            if event.type == LAP_COMPLETED:
                out.append(("lap", event.payload))
            elif event.type == SECTOR_COMPLETED:
                out.append(("sector", event.payload))
            elif event.type == LAP_DELTA:
                self.delta = event.payload
        return out

    def tick(self, now: float) -> list[tuple[str, dict[str, Any]]]:
        """Time passes with no frame: the link-silence rule may fire."""
        return [("alert", e.model_dump()) for e in self.alerts.tick(now)]

    def set_rules(self, rules: Iterable[AlertRule], now: float) -> list[tuple[str, dict[str, Any]]]:
        """Replace the alert rules; alerts of changed or dropped rules are cleared."""
        return [("alert", e.model_dump()) for e in self.alerts.set_rules(rules, now)]

    def finish(self) -> list[tuple[str, dict[str, Any]]]:
        """The session ended: close the in-lap."""
        if self.timer is None or self.timer.finished:
            return []
        return [("lap", e.payload) for e in self.timer.finish() if e.type == LAP_COMPLETED]
