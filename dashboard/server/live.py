"""The live cache: what the server holds in memory for the sessions in use, each with its own lock.

A session's entry holds its row (status, counters), current setup, the latest value of each
channel, the car's monitor health, and, while frames arrive, the last ``recent_window_s`` of
frames for joining viewers. Memory depends on what is live, not on what was ever looked at:

* an entry is loaded from the stored row, never from the frames (a past session's latest values
  and statistics are saved with its frames), except an active session's recent history once;
* entries that are not active, have no monitor attached and no write in flight are evicted once
  unused for ``keep_s``, and the least recently used go first when more than ``keep_max`` remain.

Every entry has its own lock: one car's ingest never waits for another car's work. The cache's
own lock only guards the dictionary, never I/O.
"""
from __future__ import annotations

import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

from dashboard.errors import NotFound
from dashboard.server.store import Store
from dashboard.server.views import window
from dashboard.telemetry.stats import FrameStats

RECENT_MAX_FRAMES = 6000  # 60 s at 100 Hz: a hard cap on each session's in-memory recent history
KEEP_S = 30.0  # an unused inactive entry is evicted after this long
KEEP_MAX = 256  # at most this many inactive entries are kept (least recently used evicted first)
LIVE_STATUSES = ("created", "active", "stopped")
FINAL_STATUSES = ("ended", "expired")


@dataclass(eq=False)
class LiveSession:
    """One session in memory."""

    row: dict[str, Any]
    setup: dict[str, Any] | None = None
    latest: dict[str, tuple[Any, ...]] = field(default_factory=dict)  # channel -> (value, t, seq)
    last_update: float | None = None  # when frames last arrived (server clock)
    lora_at: float | None = None  # when a LoRa summary last arrived (server clock): the team view's link state
    recent: deque = field(default_factory=lambda: deque(maxlen=RECENT_MAX_FRAMES))
    recent_complete: bool = False  # recent holds the whole window (frames arrive here); else read the store
    pending: dict[int, dict[str, Any]] = field(default_factory=dict)  # seq -> frame queued, not yet committed
    monitor: dict[str, Any] = field(default_factory=lambda: {"online": False})
    stats: FrameStats = field(default_factory=FrameStats)
    timing: Any = None  # the session's processors (dashboard.server.timing), built when first needed
    open_alerts: dict[str, dict[str, Any]] = field(default_factory=dict)  # rule id -> {"id": alert id once stored}
    activity_saved_at: float = 0.0
    stale: bool = False  # a frame write failed: counters are reloaded from the store before the next batch
    history: Any = None  # the join snapshot's older history, encoded once (sessions.py: JoinHistory)
    touched: float = field(default_factory=time.monotonic)
    lock: threading.RLock = field(default_factory=threading.RLock)  # the session's state; never held over a write
    changing: threading.RLock = field(default_factory=threading.RLock)  # one status change at a time

    @property
    def id(self) -> str:
        """The session id."""
        return self.row["id"]

    @property
    def status(self) -> str:
        """The session's status."""
        return self.row["status"]

    def remember(self, frame: dict[str, Any], window_s: float) -> None:
        """Keep a stored frame in the recent history (trimmed to ``window_s`` of sample time)."""
        recent = self.recent
        recent.append(frame)
        oldest = frame["t"] - window_s
        while recent and recent[0]["t"] < oldest:
            recent.popleft()

    def take_latest(self, frames: list[dict[str, Any]]) -> None:
        """Each channel's latest value follows the sequence: a frame replaces what an older seq gave.

        ``frames`` in seq order; read newest first, so a channel is looked at once (its newest frame).
        """
        latest, seen = self.latest, set()
        for frame in reversed(frames):
            channels = frame["channels"]
            if channels.keys() <= seen:  # the usual case: a car sends the same channels in every frame
                continue
            seq, t = frame["seq"], frame["t"]
            for name, value in channels.items():
                if name in seen:
                    continue
                seen.add(name)
                old = latest.get(name)
                if old is None or old[2] is None or seq >= old[2]:
                    latest[name] = (value, t, seq)


def stats_from_row(row: dict[str, Any]) -> FrameStats:
    """The stored statistics of a session row (empty if absent or malformed)."""
    raw = row.get("stats")
    return FrameStats.from_dict(raw if isinstance(raw, dict) else None)


def canonical_uuid(value: Any) -> str | None:
    """``value`` in canonical UUID form, or None when it is not a UUID (ids of sessions and tracks are UUIDs)."""
    if isinstance(value, str) and len(value) <= 64:
        try:
            return str(uuid.UUID(value))
        except ValueError:
            pass
    return None


def check_session_id(session_id: Any) -> str:
    """The id in canonical form if it is a UUID, else NotFound naming session_id (no such session can exist)."""
    canonical = canonical_uuid(session_id)
    if canonical is None:
        raise NotFound("no such session: session_id must be a UUID", field="session_id")
    return canonical


def latest_from_row(raw: Any) -> dict[str, tuple[Any, ...]]:
    """The stored ``latest`` column as {channel: (value, t, seq)}; anything malformed is left out."""
    out: dict[str, tuple[Any, ...]] = {}
    if isinstance(raw, dict):
        for name, entry in raw.items():
            if isinstance(entry, list) and len(entry) == 3:
                out[name] = tuple(entry)
    return out


class LiveCache:
    """Sessions in memory by id, loaded from the store on first use and evicted when unused."""

    def __init__(self, store: Store, recent_window_s: float = 60.0, shared: bool = False,
                 keep_s: float = KEEP_S, keep_max: int = KEEP_MAX,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.recent_window_s = recent_window_s
        self.shared = shared  # other processes write the same store: re-read before answering
        self.keep_s = keep_s
        self.keep_max = keep_max
        self.monotonic = monotonic
        self._entries: dict[str, LiveSession] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def entries(self) -> list[LiveSession]:
        """Every entry now in memory."""
        with self._lock:
            return list(self._entries.values())

    def peek(self, session_id: str) -> LiveSession | None:
        """The entry if it is in memory (no load)."""
        return self._entries.get(session_id)

    def get(self, session_id: str, fresh: bool = True) -> LiveSession:
        """The session's entry, loaded if needed; NotFound if it does not exist.

        ``fresh`` in shared mode catches up with what other processes stored (not on the ingest path).
        """
        live = self._entries.get(session_id)
        if live is None:
            live = self._load(check_session_id(session_id))
        elif fresh and self.shared:
            self.refresh(live)
        live.touched = self.monotonic()
        return live

    def add(self, row: dict[str, Any]) -> LiveSession:
        """A session just created: its entry."""
        live = LiveSession(row=dict(row), recent_complete=True)
        with self._lock:
            self._entries[live.id] = live
        return live

    def drop(self, session_id: str) -> None:
        """Forget a session (deleted)."""
        with self._lock:
            self._entries.pop(session_id, None)

    def _load(self, session_id: str) -> LiveSession:
        live = self._entries.get(session_id)  # asked by its non-canonical spelling
        if live is not None:
            return live
        row = self.store.get_session(session_id)
        if row is None:
            raise NotFound(f"no session {session_id}", field="session_id")
        live = LiveSession(row=row, setup=self.store.latest_setup(session_id),
                           latest=latest_from_row(row.get("latest")),
                           stats=stats_from_row(row))
        if row["status"] == "active":  # frames arrive here: keep the window in memory for joining viewers
            self._fill_recent(live)
        with self._lock:
            return self._entries.setdefault(session_id, live)  # another loader may have won: keep one

    def fill_recent(self, live: LiveSession) -> None:
        """Frames start arriving at a session loaded without its history: read its last window once."""
        if not live.recent_complete:
            self._fill_recent(live)

    def _fill_recent(self, live: LiveSession) -> None:
        live.recent.clear()
        for frame in window(self.store.last_frames(live.id, RECENT_MAX_FRAMES), self.recent_window_s):
            live.recent.append(frame)
        live.recent_complete = True

    def refresh(self, live: LiveSession) -> None:
        """Catch up with what other server processes stored: the row, the setup, newer frames."""
        row = self.store.get_session(live.id)
        if row is None:
            self.drop(live.id)
            raise NotFound(f"no session {live.id}", field="session_id")
        with live.lock:
            mine = live.row["last_seq"]
            live.row.update({k: v for k, v in row.items() if k not in ("latest", "stats")})
            if mine is not None and (row["last_seq"] is None or mine > row["last_seq"]):
                live.row["last_seq"] = mine  # frames of ours still on their way to the database
            for name, entry in latest_from_row(row.get("latest")).items():
                old = live.latest.get(name)
                if old is None or (entry[2] is not None and (old[2] is None or entry[2] > old[2])):
                    live.latest[name] = entry
            live.setup = self.store.latest_setup(live.id)
            if live.recent_complete:
                known = max((f["seq"] for f in live.recent), default=-1)
                for frame in self.store.frames(live.id, after_seq=known, limit=RECENT_MAX_FRAMES):
                    if frame["seq"] not in live.pending:
                        live.remember(frame, self.recent_window_s)

    def reload_counters(self, live: LiveSession) -> None:
        """After a failed write: the row's counters, statistics and latest values as stored."""
        row = self.store.get_session(live.id)
        if row is None:
            return
        for key in ("frame_count", "last_seq", "last_activity_at"):
            live.row[key] = row[key]
        live.stats = stats_from_row(row)
        live.latest = latest_from_row(row.get("latest"))
        live.stale = False

    def recent(self, live: LiveSession, exclude: set[int] = frozenset(), raw: bool = False) -> list[dict[str, Any]]:
        """Frames of the last window in seq order: from memory while frames arrive, else from the store
        (``raw``: channels left as stored JSON, for a message; see Store.last_frames)."""
        if live.recent_complete:
            frames = [f for f in live.recent if f["seq"] not in exclude and f["seq"] not in live.pending]
        else:
            frames = self.store.last_frames(live.id, RECENT_MAX_FRAMES, raw=raw)
        return window(sorted(frames, key=lambda f: f["seq"]), self.recent_window_s)

    def evict(self) -> int:
        """Drop unused inactive entries (see the module docstring); returns how many."""
        now = self.monotonic()
        with self._lock:
            idle = [live for live in self._entries.values()
                    if live.status != "active" and not live.pending and not live.monitor.get("online")]
            idle.sort(key=lambda live: live.touched)
            extra = max(0, len(idle) - self.keep_max)
            gone = [live.id for i, live in enumerate(idle) if i < extra or now - live.touched > self.keep_s]
            for session_id in gone:
                del self._entries[session_id]
        return len(gone)
