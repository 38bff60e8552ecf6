"""Lap timing of the sessions: their pure processors (lap timer, alert engine), fed frames in seq order.

:class:`SessionTiming` is the thin layer over the pure processors in ``dashboard.telemetry``:
one set per session, turning their output into ("lap" | "sector" | "alert", payload) pairs.

:class:`TimingService` keeps each session's set, stores and tells its laps, and builds a set again
from the stored frames when it is first needed after a restart or when the session's track
changes. That replay reads pages off the event loop and yields between chunks; it never holds
the session's lock for long and never another car's. Frames stored meanwhile wait in the set's
backlog and are fed once the replay has caught up.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Iterable

from dashboard.errors import NotFound
from dashboard.server.changes import Change
from dashboard.server.live import FINAL_STATUSES, LiveSession
from dashboard.server.pitwall import PitWall
from dashboard.server.service import Service, Shared
from dashboard.server.views import laps_out
from dashboard.telemetry.alerts import DEFAULT_RULES, AlertEngine, AlertRule
from dashboard.telemetry.laps import LAP_COMPLETED, LAP_DELTA, SECTOR_COMPLETED, LapTimer, Track
from dashboard.telemetry.pitlane import PitLane

log = logging.getLogger(__name__)

REPLAY_PAGE = 2000  # frames read per query when a session's laps are timed again
REPLAY_CHUNK = 250  # frames fed between two yields to the event loop (~2-3 ms of lap timer work)
Output = list[tuple[str, dict[str, Any]]]


class SessionTiming:
    """Lap timing of one session on one track, and its alert rules."""

    def __init__(self, track: Track | None, setups: Iterable[tuple[float, int]] = (),
                 rules: Iterable[AlertRule] = DEFAULT_RULES, pit: PitWall | None = None) -> None:
        self.track = track
        self.pit = pit  # pit stops, drivers, fuel and series rules (pitwall.py)
        self.timer = LapTimer(track) if track is not None else None
        self.alerts = AlertEngine(rules)
        self._setups = sorted(setups)
        self._next_setup = 0
        self.delta: dict[str, Any] | None = None  # the latest lap.delta payload
        self.replaying = False  # history is being fed: live frames wait in the backlog
        self.backlog: list[dict[str, Any]] = []
        self.ready = threading.Event()
        self.ready.set()

    def set_setup_version(self, t: float, version: int) -> None:
        """A new setup takes effect at ``t``."""
        self._setups.append((t, version))
        self._setups.sort()

    def feed(self, frame: dict[str, Any], alerts: bool = True, laps: bool = True) -> Output:
        """One frame in; ("lap" | "sector" | "alert", payload) out. The latest delta is kept, not returned.

        ``alerts=False`` replays history into the lap timer only (alerts are about now).
        """
        return self.feed_batch([frame], alerts, laps)

    def feed_batch(self, frames: list[dict[str, Any]], alerts: bool = True, laps: bool = True) -> Output:
        """Frames in seq order; for each frame its alerts, its pit events, then its laps and sectors.

        An alert carries the lap it fired in (``lap``), as the lap timer had it at that frame.
        """
        by_seq: dict[int, list[dict[str, Any]]] = {}
        if alerts and frames:
            for event in self.alerts.feed_batch(frames, frames[-1].get("received_at")):
                by_seq.setdefault(event.seq, []).append(event.model_dump())
        timing_laps = laps and self.timer is not None and not self.timer.finished
        pitting = laps and self.pit is not None and not self.pit.finished
        if not by_seq and not timing_laps and not pitting:
            return []
        out: Output = []
        for frame in frames:
            fired = by_seq.get(frame["seq"])
            if fired:
                lap = self.timer.current_lap if self.timer is not None else None
                out += [("alert", {**payload, "lap": lap}) for payload in fired]
            if pitting:
                out += self._with_lap(self.pit.feed(frame, alerts))
            if timing_laps:
                out += self._lap_events(frame, alerts)
        return out

    def _with_lap(self, outputs: Output) -> Output:
        lap = self.timer.current_lap if self.timer is not None else None
        return [(kind, {**p, "lap": lap}) if kind == "alert" else (kind, p) for kind, p in outputs]

    def _lap_events(self, frame: dict[str, Any], alerts: bool = True) -> Output:
        out: Output = []
        if self.timer is None or self.timer.finished:
            return out
        while self._next_setup < len(self._setups) and self._setups[self._next_setup][0] <= frame["t"]:
            self.timer.setup_version = self._setups[self._next_setup][1]
            self._next_setup += 1
        for event in self.timer.feed(frame):
            if event.type == LAP_COMPLETED:
                stamped = self.pit.on_lap(event.payload, alerts) if self.pit is not None else []
                out.append(("lap", event.payload))
                out += self._with_lap(stamped)
            elif event.type == SECTOR_COMPLETED:
                out.append(("sector", event.payload))
            elif event.type == LAP_DELTA:
                self.delta = event.payload
        return out

    def tick(self, now: float, open_alerts: Iterable[str] = ()) -> Output:
        """Time passes with no frame: the link-silence rule and the series rules may fire."""
        out = self._alerts(self.alerts.tick(now))
        if self.pit is not None and not self.replaying:
            out += self._with_lap(self.pit.tick(now, open_alerts))
        return out

    def set_rules(self, rules: Iterable[AlertRule], now: float) -> Output:
        """Replace the alert rules; alerts of changed or dropped rules are cleared."""
        return self._alerts(self.alerts.set_rules(rules, now))

    def _alerts(self, events: Iterable[Any]) -> Output:
        lap = self.timer.current_lap if self.timer is not None else None
        return [("alert", {**e.model_dump(), "lap": lap}) for e in events]

    def finish(self) -> Output:
        """The session ended: close the in-lap, and a stop still open."""
        out: Output = self.pit.finish() if self.pit is not None else []
        if self.timer is None or self.timer.finished:
            return out
        for event in self.timer.finish():
            if event.type == LAP_COMPLETED:
                stamped = self.pit.on_lap(event.payload, alerts=False) if self.pit is not None else []
                out += [("lap", event.payload), *stamped]
        return out


class TimingService(Service):
    """Each session's processors: fed live frames, rebuilt from stored frames, their laps stored and told."""

    def __init__(self, shared: Shared, rules: Callable[[str | None, str], list[AlertRule]],
                 on_alert: Callable[[LiveSession, dict], None]) -> None:
        super().__init__(shared)
        self.rules = rules  # (car_id, session_id) -> the alert rules in force
        self.on_alert = on_alert
        # live -> the session's pit-wall settings {"series", "roster", "fuel"} (team.py sets it; None: defaults)
        self.pit_settings: Callable[[LiveSession], dict[str, Any]] | None = None
        self.on_pit: Callable[[LiveSession, dict[str, Any]], None] | None = None  # live pit events (messages)
        self.replays = 0  # sessions timed again from their stored frames (restart or track change)
        self.replaying = 0  # replays running now
        self.interrupted = {"gap": 0, "jump": 0}  # live laps ended untimed where the trace broke, by reason

    # ----------------------------------------------------------- live path
    def processors(self, live: LiveSession) -> SessionTiming:
        """The session's processors (caller holds its lock); built, and replayed in the background, on first use."""
        if live.timing is None:
            live.timing = self._build(live)
            if live.timing.timer is not None and (live.row.get("frame_count") or 0) > 0:
                live.timing.replaying = True
                live.timing.ready.clear()
                threading.Thread(target=self._replay, args=(live, live.timing), name="lap-replay",
                                 daemon=True).start()
        return live.timing

    def feed(self, live: LiveSession, rows: list[dict[str, Any]]) -> None:
        """Stored frames of the session, in seq order, through its processors (caller holds its lock)."""
        timing = self.processors(live)
        before = timing.delta
        replaying = timing.replaying
        if replaying:
            timing.backlog.extend(rows)
        self._handle(live, timing.feed_batch(rows, laps=not replaying))
        if timing.delta is not None and timing.delta is not before:
            self.bus.tell(Change.TIMING, {"session_id": live.id, **timing.delta})

    def tick(self, live: LiveSession, now: float) -> None:
        """Time passes: the link-silence rule may fire (caller holds the lock)."""
        if live.timing is not None:
            self._handle(live, live.timing.tick(now, list(live.open_alerts)))

    def set_rules(self, live: LiveSession, rules: list[AlertRule]) -> None:
        """New alert rules for a session (caller holds its lock)."""
        if live.timing is not None:
            self._handle(live, live.timing.set_rules(rules, self.clock()))

    def set_setup_version(self, live: LiveSession, t: float, version: int) -> None:
        """A new setup version took effect at ``t`` (caller holds the lock)."""
        if live.timing is not None:
            live.timing.set_setup_version(t, version)

    def finish(self, live: LiveSession) -> None:
        """The session ended: the in-lap is closed and stored (caller holds the lock)."""
        timing = self.processors(live)
        if timing.replaying:
            return  # the replay finishes it, seeing the final status
        self._handle(live, timing.finish())

    def apply(self, live: LiveSession, outputs: Output) -> None:
        """Outputs of a session's processors made outside a feed (the pit wall's crew inputs; caller holds the lock)."""
        self._handle(live, outputs)

    def _handle(self, live: LiveSession, outputs: Output) -> None:
        for kind, payload in outputs:
            if kind == "lap":
                self._store_lap(live, payload)
            elif kind == "sector":
                self.bus.tell(Change.SECTOR, {"session_id": live.id, **payload})
            elif kind == "pit":
                self._log_pit(live.id, payload)
                if self.on_pit is not None:
                    self.on_pit(live, payload)
            elif kind == "fuel":
                if payload["type"] == "fuel.refill":
                    self.events.log(live.id, "fuel.refill", payload["payload"], timestamp=payload["t"])
            else:
                self.on_alert(live, payload)

    def _log_pit(self, session_id: str, event: dict[str, Any]) -> None:
        """A pit event in the session's log, once: a replay finds the same stop and is not logged again."""
        kind, payload = event["type"], event["payload"]
        record_id = f"{kind}:{payload.get('stop')}:{event['t']:.3f}"
        self.events.log(session_id, kind, payload, record_id=record_id, timestamp=event["t"])

    def _store_lap(self, live: LiveSession, lap: dict[str, Any]) -> None:
        sid = live.id
        if lap.get("interrupted") in self.interrupted:
            self.interrupted[lap["interrupted"]] += 1
        if not (lap["out_lap"] or lap["in_lap"]):  # the row's lap figures, as the store keeps them
            live.row["laps"] = (live.row.get("laps") or 0) + 1
            best = live.row.get("best_lap_s")
            live.row["best_lap_s"] = lap["lap_time"] if best is None else min(best, lap["lap_time"])
        self.writer.submit(lambda conn: self.store.add_lap(sid, lap, conn=conn), background=True)
        self.events.log(sid, "lap.completed", lap)
        self.bus.tell(Change.LAP, {"session_id": sid, **lap})

    # -------------------------------------------------------------- replays
    def _build(self, live: LiveSession) -> SessionTiming:
        track_id = live.row.get("track_id")
        track_row = self.store.get_track(track_id) if track_id else None
        track = Track.from_dict(track_row["definition"]) if track_row else None
        setups = [(v["timestamp"], v["version"]) for v in self.store.setups(live.id)]
        lane = None
        if track_row and isinstance(track_row["definition"].get("pit_lane"), dict):
            try:
                lane = PitLane.from_dict(track_row["definition"]["pit_lane"])
            except ValueError:  # a stored lane is validated when saved; one that is not is ignored, not fatal
                log.warning("track %s: its stored pit lane is not valid; stops found without it", track_row["id"])
        settings = self.pit_settings(live) if self.pit_settings is not None else {}
        start = live.row.get("started_at") or live.row.get("created_at") or 0.0
        pit = PitWall(lane, start, settings.get("changes", ()), settings.get("series"), settings.get("roster"),
                      settings.get("fuel"), settings.get("refills", ()))
        return SessionTiming(track, setups, self.rules(live.row["car_id"], live.id), pit)

    def _replay(self, live: LiveSession, timing: SessionTiming) -> None:
        """Feed the stored frames into ``timing`` off the hot path; then its backlog; store the laps."""
        laps: list[dict[str, Any]] = []
        pits: list[dict[str, Any]] = []

        def take(outputs: Output) -> None:
            for kind, payload in outputs:
                if kind == "lap":
                    laps.append(payload)
                elif kind == "pit":
                    pits.append(payload)

        after = -1
        self.replaying += 1
        try:
            while page := self.store.frames(live.id, after, REPLAY_PAGE):
                for i, frame in enumerate(page):
                    take(timing.feed(frame, alerts=False))
                    if i % REPLAY_CHUNK == REPLAY_CHUNK - 1:
                        time.sleep(0)  # let the other cars' events run
                after = page[-1]["seq"]
            with live.lock:
                for frame in timing.backlog:
                    if frame["seq"] > after:
                        take(timing.feed(frame, alerts=False))
                timing.backlog = []
                if live.status in FINAL_STATUSES:
                    take(timing.finish())
                timing.replaying = False
            self.writer.call(lambda conn: self.store.replace_laps(live.id, laps, conn=conn))
            for event in pits:
                self._log_pit(live.id, event)
            timed = [lap["lap_time"] for lap in laps if not (lap["out_lap"] or lap["in_lap"])]
            with live.lock:
                live.row["laps"], live.row["best_lap_s"] = len(timed), min(timed, default=None)
            self.bus.tell(Change.LAPS, {"session_id": live.id, "track_id": live.row.get("track_id"),
                                        **self.laps_of(live)})
            self.replays += 1  # counted once its laps are stored and told
        except Exception:  # noqa: BLE001 - a failed replay leaves the session untimed, never the server down
            log.exception("timing session %s again failed", live.id)
            with live.lock:
                timing.replaying = False
                timing.backlog = []
        finally:
            self.replaying -= 1
            timing.ready.set()

    def retime(self, live: LiveSession, wait: bool = True) -> None:
        """Time the session again from its stored frames (its track changed); ``wait`` until done."""
        with live.lock:
            timing = self._build(live)
            timing.replaying = True
            timing.ready.clear()
            live.timing = timing
        self._replay(live, timing) if wait else threading.Thread(
            target=self._replay, args=(live, timing), name="lap-replay", daemon=True).start()

    # --------------------------------------------------------------- views
    def laps_of(self, live: LiveSession) -> dict[str, Any]:
        """The session's laps (LapList)."""
        timing = live.timing.delta if live.timing is not None and live.status == "active" else None
        return laps_out(self.store.laps(live.id), timing)

    def laps(self, session_id: str) -> dict[str, Any]:
        """The session's laps with best lap, best sectors, theoretical best and live delta (LapList)."""
        try:
            live = self.cache.get(session_id)
        except NotFound:
            raise
        return self.laps_of(live)
