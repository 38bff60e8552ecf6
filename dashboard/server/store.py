"""All SQL of the server: one Store over a SQLAlchemy engine (SQLite WAL or PostgreSQL).

Only portable SQL is used; the one dialect-specific piece, the insert that
ignores an already stored (session_id, seq), picks the dialect's own
``on_conflict_do_nothing``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import Engine, bindparam, create_engine, delete, event, func, select, text, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.pool import StaticPool

from dashboard.server.models import (
    AlertRow,
    AlertRuleRow,
    EventRow,
    FrameRow,
    LapRow,
    SessionRow,
    SetupRow,
    TrackRow,
)

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"
FRAME_PAGE = 5000  # frames per query when streaming a whole session: ~1-2 MB of rows, few queries for a million
SQLITE_BUSY_TIMEOUT_MS = 5000  # a reader holding the WAL briefly must not fail a write


@dataclass
class FrameWrite:
    """One session's share of a writer transaction."""

    session_id: str
    rows: list[dict[str, Any]]  # {seq, t, received_at, channels}
    last_seq: int  # highest seq of the session once these rows are in
    last_activity_at: float
    stats: dict[str, Any] | None = None  # the session's FrameStats once these rows are in


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL, synchronous=NORMAL and foreign keys."""
    if url in ("sqlite://", "sqlite:///:memory:"):  # one shared connection: the in-memory manager
        engine = create_engine("sqlite://", poolclass=StaticPool, connect_args={"check_same_thread": False})
        event.listen(engine, "connect", lambda c, _r: c.execute("PRAGMA foreign_keys=ON"))
        return engine
    if url.startswith("sqlite"):
        path = url.split(":///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")  # committed data survives a killed process
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


def upgrade(engine: Engine) -> None:
    """Apply every Alembic migration (``dashboard db upgrade``; also run on ``serve``)."""
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def _insert_ignoring_duplicates(engine: Engine, table: Any) -> Any:
    dialect = engine.dialect.name
    if dialect == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    if dialect == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing()
    raise NotImplementedError(f"database dialect {dialect!r} is not supported")


class Store:
    """Reads and writes sessions, events, setups and frames."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._insert_frames = _insert_ignoring_duplicates(engine, FrameRow.__table__)
        sessions = SessionRow.__table__
        bump = update(sessions).where(sessions.c.id == bindparam("b_id")).values(
            frame_count=sessions.c.frame_count + bindparam("b_n"),
            last_seq=bindparam("b_last_seq"),
            last_activity_at=bindparam("b_at"))
        self._bump_session = bump
        self._bump_session_stats = bump.values(stats=bindparam("b_stats", type_=sessions.c.stats.type))

    @classmethod
    def from_url(cls, url: str, migrate: bool = True) -> "Store":
        """Open (and by default migrate) the database at ``url``."""
        engine = make_engine(url)
        if migrate:
            upgrade(engine)
        return cls(engine)

    def ping(self) -> bool:
        """True when the database answers."""
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            return True
        except Exception:  # noqa: BLE001 - health check reports, never raises
            log.exception("database ping failed")
            return False

    # ------------------------------------------------------------ sessions
    def insert_session(self, row: dict[str, Any]) -> None:
        """Insert a new session row."""
        with self.engine.begin() as conn:
            conn.execute(SessionRow.__table__.insert().values(**row))

    def update_session(self, session_id: str, **fields: Any) -> None:
        """Update columns of one session."""
        with self.engine.begin() as conn:
            conn.execute(update(SessionRow.__table__).where(SessionRow.id == session_id).values(**fields))

    def transition(self, session_id: str, fields: dict[str, Any], event: dict[str, Any]) -> dict[str, Any] | None:
        """Update a session and log its event in one transaction; the event, or None if its record_id was seen."""
        try:
            with self.engine.begin() as conn:
                conn.execute(update(SessionRow.__table__).where(SessionRow.id == session_id).values(**fields))
                result = conn.execute(EventRow.__table__.insert().values(session_id=session_id, **event))
                event_id = result.inserted_primary_key[0]
        except IntegrityError:
            return None
        return {"id": event_id, "session_id": session_id, **event}

    def get_session(self, session_id: str) -> dict[str, Any] | None:
        """One session row as a dict, or None."""
        with self.engine.connect() as conn:
            row = conn.execute(select(SessionRow.__table__).where(SessionRow.id == session_id)).mappings().first()
        return dict(row) if row else None

    def list_sessions(
        self, limit: int, offset: int, status: str | tuple[str, ...] | None = None, car_id: str | None = None
    ) -> tuple[list[dict[str, Any]], int]:
        """A page of sessions, newest first, and the total matching (``status``: one or several)."""
        table = SessionRow.__table__
        where = []
        if status:
            where.append(table.c.status.in_((status,) if isinstance(status, str) else status))
        if car_id:
            where.append(table.c.car_id == car_id)
        with self.engine.connect() as conn:
            total = conn.execute(select(func.count()).select_from(table).where(*where)).scalar_one()
            rows = conn.execute(
                select(table).where(*where).order_by(table.c.created_at.desc(), table.c.id).limit(limit).offset(offset)
            ).mappings()
            return [dict(r) for r in rows], total

    def sessions_with_status(self, *statuses: str) -> list[dict[str, Any]]:
        """Every session in one of ``statuses``."""
        table = SessionRow.__table__
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(select(table).where(table.c.status.in_(statuses))).mappings()]

    def active_session_for_car(self, car_id: str) -> dict[str, Any] | None:
        """The car's active session, if any."""
        table = SessionRow.__table__
        with self.engine.connect() as conn:
            row = conn.execute(
                select(table).where(table.c.car_id == car_id, table.c.status == "active")
            ).mappings().first()
        return dict(row) if row else None

    def sessions_by_prefix(self, prefix: str) -> list[dict[str, Any]]:
        """Live sessions whose id starts with ``prefix`` (the LoRa summary carries 8 hex digits)."""
        table = SessionRow.__table__
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(table).where(table.c.id.like(prefix + "%"), table.c.status.in_(("created", "active", "stopped")))
            ).mappings()
            return [dict(r) for r in rows]

    def delete_session(self, session_id: str) -> bool:
        """Delete a session and everything it owns; False if unknown."""
        with self.engine.begin() as conn:
            for table in (FrameRow.__table__, SetupRow.__table__, EventRow.__table__, LapRow.__table__,
                          AlertRow.__table__):
                conn.execute(delete(table).where(table.c.session_id == session_id))
            result = conn.execute(delete(SessionRow.__table__).where(SessionRow.id == session_id))
        return result.rowcount > 0

    # -------------------------------------------------------------- events
    def add_event(self, session_id: str, event: dict[str, Any]) -> dict[str, Any] | None:
        """Log an event; None when its record_id was already logged for this session."""
        try:
            with self.engine.begin() as conn:
                result = conn.execute(EventRow.__table__.insert().values(session_id=session_id, **event))
                event_id = result.inserted_primary_key[0]
        except IntegrityError:
            return None
        return {"id": event_id, "session_id": session_id, **event}

    def event_by_record(self, record_id: str, event_types: Iterable[str]) -> dict[str, Any] | None:
        """The first event with this client record_id and one of these types."""
        table = EventRow.__table__
        with self.engine.connect() as conn:
            row = conn.execute(
                select(table).where(table.c.record_id == record_id, table.c.event_type.in_(list(event_types)))
                .order_by(table.c.id).limit(1)
            ).mappings().first()
        return dict(row) if row else None

    def events(self, session_id: str, after_id: int = 0, limit: int = 1000) -> list[dict[str, Any]]:
        """A session's events in order."""
        table = EventRow.__table__
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(table).where(table.c.session_id == session_id, table.c.id > after_id)
                .order_by(table.c.id).limit(limit)
            ).mappings()
            return [dict(r) for r in rows]

    # -------------------------------------------------------------- setups
    def add_setup(self, session_id: str, setup: dict[str, Any], timestamp: float, received_at: float,
                  event: dict[str, Any]) -> dict[str, Any]:
        """Store the next setup version and its event in one transaction."""
        table = SetupRow.__table__
        with self.engine.begin() as conn:
            current = conn.execute(
                select(func.max(table.c.version)).where(table.c.session_id == session_id)
            ).scalar_one()
            version = (current or 0) + 1
            conn.execute(table.insert().values(
                session_id=session_id, version=version, timestamp=timestamp, received_at=received_at, setup=setup))
            event = {**event, "payload": {**event["payload"], "version": version}}
            result = conn.execute(EventRow.__table__.insert().values(session_id=session_id, **event))
            stored_event = {"id": result.inserted_primary_key[0], "session_id": session_id, **event}
        return {"session_id": session_id, "version": version, "timestamp": timestamp,
                "received_at": received_at, "setup": setup, "event": stored_event}

    def setups(self, session_id: str) -> list[dict[str, Any]]:
        """Every setup version of a session, oldest first."""
        table = SetupRow.__table__
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(table.c.session_id, table.c.version, table.c.timestamp, table.c.received_at, table.c.setup)
                .where(table.c.session_id == session_id).order_by(table.c.version)
            ).mappings()
            return [dict(r) for r in rows]

    def latest_setup(self, session_id: str) -> dict[str, Any] | None:
        """The current setup version, or None."""
        table = SetupRow.__table__
        with self.engine.connect() as conn:
            row = conn.execute(
                select(table.c.session_id, table.c.version, table.c.timestamp, table.c.received_at, table.c.setup)
                .where(table.c.session_id == session_id).order_by(table.c.version.desc()).limit(1)
            ).mappings().first()
        return dict(row) if row else None

    # -------------------------------------------------------------- frames
    def write_frames(self, writes: list[FrameWrite]) -> None:
        """Insert frames of several sessions and bump their counters, in one transaction.

        Three statements at most, however many sessions and writes the batch holds: every row in one
        executemany, then each session's counters once (statements built once, in ``__init__``).
        """
        rows = [{"session_id": w.session_id, **r} for w in writes for r in w.rows]
        if not rows:
            return
        bumps: dict[str, dict[str, Any]] = {}
        for w in writes:
            if not w.rows:
                continue
            bump = bumps.setdefault(w.session_id, {"b_id": w.session_id, "b_n": 0})
            bump["b_n"] += len(w.rows)
            bump["b_last_seq"] = w.last_seq
            bump["b_at"] = w.last_activity_at
            if w.stats is not None:
                bump["b_stats"] = w.stats
        plain = [b for b in bumps.values() if "b_stats" not in b]
        with_stats = [b for b in bumps.values() if "b_stats" in b]
        with self.engine.begin() as conn:
            conn.execute(self._insert_frames, rows)
            if plain:
                conn.execute(self._bump_session, plain)
            if with_stats:
                conn.execute(self._bump_session_stats, with_stats)

    def existing_seqs(self, session_id: str, seqs: list[int]) -> set[int]:
        """Which of ``seqs`` are already stored for the session."""
        if not seqs:
            return set()
        table = FrameRow.__table__
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(table.c.seq).where(table.c.session_id == session_id, table.c.seq.in_(seqs))
            ).scalars()
            return set(rows)

    def frames(self, session_id: str, after_seq: int = -1, limit: int = 1000) -> list[dict[str, Any]]:
        """Stored frames in seq order after ``after_seq``."""
        table = FrameRow.__table__
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(table.c.seq, table.c.t, table.c.received_at, table.c.channels)
                .where(table.c.session_id == session_id, table.c.seq > after_seq)
                .order_by(table.c.seq).limit(limit)
            ).mappings()
            return [dict(r) for r in rows]

    def iter_frames(self, session_id: str, page: int = FRAME_PAGE) -> Iterator[dict[str, Any]]:
        """Every stored frame of a session in seq order, read ``page`` at a time (memory stays bounded)."""
        after = -1
        while rows := self.frames(session_id, after, page):
            yield from rows
            after = rows[-1]["seq"]

    def last_frames(self, session_id: str, limit: int) -> list[dict[str, Any]]:
        """The last ``limit`` frames by seq, returned in seq order."""
        table = FrameRow.__table__
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(table.c.seq, table.c.t, table.c.received_at, table.c.channels)
                .where(table.c.session_id == session_id).order_by(table.c.seq.desc()).limit(limit)
            ).mappings()
            return [dict(r) for r in reversed(list(rows))]

    # -------------------------------------------------------------- tracks
    def save_track(self, row: dict[str, Any]) -> None:
        """Insert or replace a track."""
        table = TrackRow.__table__
        with self.engine.begin() as conn:
            if conn.execute(select(table.c.id).where(table.c.id == row["id"])).first():
                conn.execute(update(table).where(table.c.id == row["id"]).values(**row))
            else:
                conn.execute(table.insert().values(**row))

    def get_track(self, track_id: str) -> dict[str, Any] | None:
        """One track, or None."""
        table = TrackRow.__table__
        with self.engine.connect() as conn:
            row = conn.execute(select(table).where(table.c.id == track_id)).mappings().first()
        return dict(row) if row else None

    def tracks(self) -> list[dict[str, Any]]:
        """Every track, by name."""
        table = TrackRow.__table__
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(select(table).order_by(table.c.name)).mappings()]

    def delete_track(self, track_id: str) -> bool:
        """Delete a track (sessions keep their data and lose the reference); False if unknown."""
        with self.engine.begin() as conn:
            conn.execute(update(SessionRow.__table__).where(SessionRow.track_id == track_id).values(track_id=None))
            return conn.execute(delete(TrackRow.__table__).where(TrackRow.id == track_id)).rowcount > 0

    def session_ids_on_track(self, track_id: str) -> list[str]:
        """Sessions that name this track."""
        table = SessionRow.__table__
        with self.engine.connect() as conn:
            return list(conn.execute(select(table.c.id).where(table.c.track_id == track_id)).scalars())

    # ---------------------------------------------------------------- laps
    def replace_laps(self, session_id: str, laps: list[dict[str, Any]]) -> None:
        """Replace every lap of a session (after the track was defined or changed)."""
        table = LapRow.__table__
        with self.engine.begin() as conn:
            conn.execute(delete(table).where(table.c.session_id == session_id))
            if laps:
                conn.execute(table.insert(), [{"session_id": session_id, "lap": lap["lap"], "data": lap}
                                              for lap in laps])

    def add_lap(self, session_id: str, lap: dict[str, Any]) -> None:
        """Store one completed lap (a lap number seen before is replaced)."""
        table = LapRow.__table__
        with self.engine.begin() as conn:
            conn.execute(delete(table).where(table.c.session_id == session_id, table.c.lap == lap["lap"]))
            conn.execute(table.insert().values(session_id=session_id, lap=lap["lap"], data=lap))

    def laps(self, session_id: str) -> list[dict[str, Any]]:
        """A session's laps in order."""
        table = LapRow.__table__
        with self.engine.connect() as conn:
            rows = conn.execute(select(table.c.data).where(table.c.session_id == session_id).order_by(table.c.lap))
            return [r[0] for r in rows]

    # ---------------------------------------------------------- alert rules
    def save_alert_rule(self, key: str, car_id: str | None, rule: dict[str, Any],
                        session_id: str | None = None) -> None:
        """Insert or replace an alert rule (``key`` names its scope and id)."""
        table = AlertRuleRow.__table__
        with self.engine.begin() as conn:
            conn.execute(delete(table).where(table.c.id == key))
            conn.execute(table.insert().values(id=key, car_id=car_id, session_id=session_id, rule=rule))

    def alert_rules(self, car_id: str | None = None, session_id: str | None = None) -> list[dict[str, Any]]:
        """Rules for every car, plus those of ``car_id`` and of ``session_id`` when given."""
        table = AlertRuleRow.__table__
        where = table.c.car_id.is_(None) & table.c.session_id.is_(None)
        if car_id is not None:
            where = where | ((table.c.car_id == car_id) & table.c.session_id.is_(None))
        if session_id is not None:
            where = where | (table.c.session_id == session_id)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(select(table).where(where).order_by(table.c.id)).mappings()]

    def delete_alert_rule(self, rule_id: str) -> bool:
        """Delete a rule; False if unknown."""
        with self.engine.begin() as conn:
            return conn.execute(delete(AlertRuleRow.__table__).where(AlertRuleRow.id == rule_id)).rowcount > 0

    # --------------------------------------------------------------- alerts
    def add_alert(self, session_id: str, rule_id: str, raised: dict[str, Any], raised_t: float) -> int:
        """Store a raised alert; returns its id."""
        with self.engine.begin() as conn:
            result = conn.execute(AlertRow.__table__.insert().values(
                session_id=session_id, rule_id=rule_id, raised=raised, raised_t=raised_t))
            return result.inserted_primary_key[0]

    def update_alert(self, alert_id: int, **fields: Any) -> None:
        """Set cleared_t or the acknowledgement of an alert."""
        with self.engine.begin() as conn:
            conn.execute(update(AlertRow.__table__).where(AlertRow.id == alert_id).values(**fields))

    def get_alert(self, session_id: str, alert_id: int) -> dict[str, Any] | None:
        """One alert of a session, or None."""
        table = AlertRow.__table__
        with self.engine.connect() as conn:
            row = conn.execute(
                select(table).where(table.c.id == alert_id, table.c.session_id == session_id)
            ).mappings().first()
        return dict(row) if row else None

    def alerts(self, session_id: str) -> list[dict[str, Any]]:
        """A session's alerts in the order they were raised."""
        table = AlertRow.__table__
        with self.engine.connect() as conn:
            rows = conn.execute(select(table).where(table.c.session_id == session_id).order_by(table.c.id))
            return [dict(r) for r in rows.mappings()]
