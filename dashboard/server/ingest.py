"""The path of a telemetry batch through the server: one ordered chain of small stages.

    decode ─► own ─► dedupe ─► reserve ─► write ┄┄(commit)┄┄► publish ─► process

Why this order (Traccar's processing pipeline is the model: each stage one job, the order here):

1. ``decode``  each frame is validated on its own, first, so a bad frame is rejected and never its batch;
               its time is checked against the server's clock: too far ahead (``clock_ahead``), or, for a
               live frame, too far behind (``clock_behind``); backfill is taken at any age, it is late by nature;
2. ``own``     the session comes from memory (no query on the hot path); the sender must be its car;
               its status decides what is taken (frames sampled after a stop or an end are refused);
3. ``dedupe``  before anything changes: a resent frame is acknowledged but not stored or told twice,
               and a seq already stored with other content stops the batch (the car must renumber);
4. ``reserve`` the session's counters, statistics, latest values and in-flight set move on under its
               lock, so the next batch (from any connection) dedupes against this one at once;
5. ``write``   the frames go to the single writer; the monitor's ack waits for the commit.
   After the commit, in commit order (the ticket's callback):
6. ``publish`` only stored frames reach viewers: they join the recent history and go to the room;
7. ``process`` the pure processors (lap timer, sectors, alerts) see the frames in seq order, last,
               because what they produce (a lap, an alert) refers to stored frames.

Stages 2-5 hold the session's lock, 6-7 take it again: one car's ingest never waits for another's.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from dashboard.errors import ClockAhead, ClockBehind, SeqConflict, SessionNotActive, Unauthorized
from dashboard.server.changes import Change
from dashboard.server.lifecycle import LifecycleService
from dashboard.server.live import LiveSession
from dashboard.server.service import Service, Shared
from dashboard.server.store import FrameWrite
from dashboard.server.timing import TimingService
from dashboard.server.writer import Ticket
from dashboard.telemetry.frames import frame_seq, parse_frames

log = logging.getLogger(__name__)

# The order, in one place: the module docstring says why. The session's lock is held over LOCKED and AFTER_COMMIT.
UNLOCKED = ("decode", "own")
LOCKED = ("dedupe", "reserve", "write")
AFTER_COMMIT = ("publish", "process")
NOT_ACTIVE = ("stopped", "ended", "expired")


@dataclass
class Batch:
    """One telemetry batch on its way through the stages."""

    session_id: str
    raw: list[Any]
    backfill: bool
    car_id: str | None  # the sending car; None for a trusted caller (the in-process API)
    received_at: float
    live: LiveSession | None = None
    valid: dict[int, dict[str, Any]] = field(default_factory=dict)  # seq -> frame row, first one of a seq wins
    rejected: list[dict[str, Any]] = field(default_factory=list)
    fresh: list[dict[str, Any]] = field(default_factory=list)  # frames to store, in seq order
    duplicates: int = 0
    status: str = "active"
    ticket: Ticket | None = None


@dataclass
class IngestResult:
    """What became of one telemetry batch."""

    accepted: list[dict[str, Any]]
    rejected: list[dict[str, Any]]
    duplicates: int
    acked_seq: int | None
    ticket: Ticket | None
    session_status: str = "active"


class Ingest(Service):
    """Runs a batch through the stages (see the module docstring)."""

    def __init__(self, shared: Shared, lifecycle: LifecycleService, timing: TimingService,
                 max_ahead_s: float = 300.0, max_behind_s: float | None = None) -> None:
        super().__init__(shared)
        self.lifecycle = lifecycle
        self.timing = timing
        self.max_ahead_s = max_ahead_s  # a frame stamped further ahead of the server's clock is refused
        self.max_behind_s = max_behind_s  # a live frame stamped further behind is refused (None: no limit)

    def __call__(self, session_id: str, raw_frames: list[Any], backfill: bool = False,
                 car_id: str | None = None) -> IngestResult:
        """Take a batch: stages 1-5 now; 6-7 once committed. Wait on the result's ticket for the commit."""
        batch = Batch(session_id, raw_frames, backfill, car_id, self.clock())
        for stage in UNLOCKED:
            getattr(self, stage)(batch)
        assert batch.live is not None
        with batch.live.lock:
            for stage in LOCKED:
                getattr(self, stage)(batch)
        return IngestResult(batch.fresh, batch.rejected, batch.duplicates, max(batch.valid, default=None),
                            batch.ticket, batch.status)

    # ---------------------------------------------------------------- stages
    def decode(self, batch: Batch) -> None:
        """1. Each frame validated on its own; too far ahead of the server's clock, or (live) behind it, refused."""
        good, bad = parse_frames(batch.raw)
        for raw, error in bad:
            batch.rejected.append({"seq": frame_seq(raw), "error": error.to_dict()})
        latest_t = batch.received_at + self.max_ahead_s
        earliest_t = float("-inf") if batch.backfill or self.max_behind_s is None \
            else batch.received_at - self.max_behind_s
        valid, received_at = batch.valid, batch.received_at
        for frame in good:
            if frame["t"] > latest_t:
                error = ClockAhead(f"frame time is {frame['t'] - received_at:.0f} s ahead of the server's clock "
                                   f"(at most {self.max_ahead_s:.0f} s)", field="t")
                batch.rejected.append({"seq": frame["seq"], "error": error.to_dict()})
            elif frame["t"] < earliest_t:
                error = ClockBehind(f"frame time is {received_at - frame['t']:.0f} s behind the server's clock: "
                                    f"a live frame at most {self.max_behind_s:.0f} s (frames from the backlog go "
                                    "as backfill, taken at any age)", field="t")
                batch.rejected.append({"seq": frame["seq"], "error": error.to_dict()})
            elif frame["seq"] not in valid:
                frame["received_at"] = received_at
                valid[frame["seq"]] = frame

    def own(self, batch: Batch) -> None:
        """2. The session from memory; the sender must be its car; its status decides what is taken."""
        live = self.cache.get(batch.session_id, fresh=False)
        if batch.car_id is not None and live.row["car_id"] not in (None, batch.car_id):
            raise Unauthorized("that session belongs to another car", field="session_id")
        batch.live = live
        batch.status = live.status
        if live.status in NOT_ACTIVE:
            cutoff = (live.row.get("stopped_at") if live.status == "stopped" else live.row.get("ended_at")) \
                or live.row.get("last_activity_at") or 0.0
            error = SessionNotActive(f"the session is {live.status}: frames sampled after it stopped are not "
                                     "taken", field="t", status=live.status).to_dict()
            for seq, row in list(batch.valid.items()):
                if row["t"] > cutoff:
                    del batch.valid[seq]
                    batch.rejected.append({"seq": seq, "error": error})
        if batch.valid and not live.recent_complete:
            self.cache.fill_recent(live)

    def dedupe(self, batch: Batch) -> None:
        """3. New seqs are fresh; a lower seq already stored (or in flight) with the same content is a duplicate."""
        live = batch.live
        assert live is not None
        last = live.row["last_seq"]
        fresh = [row for seq, row in batch.valid.items() if last is None or seq > last]
        older = [seq for seq in batch.valid if last is not None and seq <= last]
        if older:
            in_flight = {seq: live.pending[seq] for seq in older if seq in live.pending}
            stored = self.store.stored_frames(live.id, [seq for seq in older if seq not in in_flight])
            for seq in older:
                known = in_flight.get(seq) or stored.get(seq)
                if known is None:
                    fresh.append(batch.valid[seq])
                elif known["t"] != batch.valid[seq]["t"] or known["channels"] != batch.valid[seq]["channels"]:
                    raise SeqConflict(f"seq {seq} is already stored with other values; continue from {last + 1}",
                                      field="frames", next_seq=last + 1)
        fresh.sort(key=lambda row: row["seq"])
        batch.fresh = fresh
        batch.duplicates = len(batch.valid) - len(fresh)

    def reserve(self, batch: Batch) -> None:
        """4. Counters, statistics, latest values and the in-flight set move on (caller holds the lock)."""
        live = batch.live
        assert live is not None
        if not batch.fresh:
            if batch.valid and live.status == "active":
                self.lifecycle.touch(live)  # only resent frames: the car is alive all the same
            return
        if live.stale and not live.pending:
            self.cache.reload_counters(live)
        if live.status == "active":
            self.lifecycle.touch(live, persist=False)  # the frame write saves it
        rows = batch.fresh
        last = live.row["last_seq"]
        live.row["last_seq"] = max(rows[-1]["seq"], last if last is not None else -1)
        live.row["frame_count"] = (live.row["frame_count"] or 0) + len(rows)
        live.last_update = batch.received_at
        live.take_latest(rows)
        stats, pending, backfill = live.stats, live.pending, batch.backfill
        for row in rows:
            stats.feed(row, backfill)
            pending[row["seq"]] = row

    def write(self, batch: Batch) -> None:
        """5. The frames to the single writer, with the session's counters; publish once committed."""
        live = batch.live
        assert live is not None
        if not batch.fresh:
            return
        write = FrameWrite(live.id, batch.fresh, live.row["last_seq"],
                           live.row["last_activity_at"] or batch.received_at, live.stats.to_dict(),
                           dict(live.latest))
        batch.ticket = self.writer.frames(write, lambda ticket: self._committed(batch, ticket))

    def _committed(self, batch: Batch, ticket: Ticket) -> None:
        live = batch.live
        assert live is not None
        with live.lock:
            for row in batch.fresh:
                live.pending.pop(row["seq"], None)
            if ticket.error is not None:
                live.stale = True  # counters moved for frames that were not stored
                return
            for stage in AFTER_COMMIT:
                getattr(self, stage)(batch)

    def publish(self, batch: Batch) -> None:
        """6. Stored frames join the recent history and go to the room."""
        live = batch.live
        assert live is not None
        window_s = self.cache.recent_window_s
        for row in batch.fresh:
            live.remember(row, window_s)
        self.bus.tell(Change.FRAMES, {"session_id": live.id, "frames": batch.fresh})

    def process(self, batch: Batch) -> None:
        """7. Lap timer, sectors and alerts, in seq order."""
        assert batch.live is not None
        self.timing.feed(batch.live, batch.fresh)

