"""All SQL of the server: one Store over a SQLAlchemy engine (SQLite WAL or PostgreSQL).

Only portable SQL is used; the one dialect-specific piece, the hot frame insert that
ignores an already stored (session_id, seq), is written per dialect (``_frame_statements``).

Every public method runs off the event loop (:class:`dashboard.server.blocking.Offload`):
under gevent a read waits for a native thread, never for the loop. A database that is
locked past its busy timeout, full or unreachable raises :class:`Unavailable` (503).
Writes take an optional ``conn``: the single writer (``writer.py``) passes its own,
inside its transaction; without one the method commits alone (tools, tests).
"""
from __future__ import annotations

import functools
import logging
import math
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, TypeVar

import orjson
from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import (
    Connection,
    Engine,
    Text,
    and_,
    cast,
    create_engine,
    delete,
    event,
    func,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError, OperationalError

from dashboard.errors import Unavailable
from dashboard.server.blocking import Offload
from dashboard.server.models import (
    AlertRow,
    AlertRuleRow,
    EventRow,
    FrameRow,
    KeyRow,
    LapRow,
    PitwallSettingRow,
    SessionRow,
    SetupRow,
    TrackRow,
)

log = logging.getLogger(__name__)

MIGRATIONS = Path(__file__).parent / "migrations"
FRAME_PAGE = 5000  # frames per query when streaming a whole session: ~1-2 MB of rows, few queries for a million
SQLITE_BUSY_TIMEOUT_MS = 5000  # a reader holding the WAL briefly must not fail a write
READ_THREADS = 8  # native threads for reads under gevent: more than the SQLite file can usefully serve at once
RETRY_AFTER_S = 2.0  # what a client is told to wait when the database is locked or unreachable
F = TypeVar("F", bound=Callable[..., Any])
SESSIONS, FRAMES, EVENTS, SETUPS = SessionRow.__table__, FrameRow.__table__, EventRow.__table__, SetupRow.__table__
LAPS, TRACKS, RULES, ALERTS = LapRow.__table__, TrackRow.__table__, AlertRuleRow.__table__, AlertRow.__table__
KEYS = KeyRow.__table__
PITWALL = PitwallSettingRow.__table__
FRAME_COLUMNS = (FRAMES.c.seq, FRAMES.c.t, FRAMES.c.received_at, FRAMES.c.channels)
SETUP_COLUMNS = (SETUPS.c.session_id, SETUPS.c.version, SETUPS.c.timestamp, SETUPS.c.received_at, SETUPS.c.setup)


@dataclass
class FrameWrite:
    """One session's share of a writer transaction."""

    session_id: str
    rows: list[dict[str, Any]]  # {seq, t, received_at, channels}
    last_seq: int  # highest seq of the session once these rows are in
    last_activity_at: float
    stats: dict[str, Any] | None = None  # the session's FrameStats once these rows are in
    latest: dict[str, Any] | None = None  # each channel's latest [value, t, seq] once these rows are in


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL, synchronous=NORMAL, foreign keys and working SAVEPOINTs.

    ``hide_parameters``: a failed statement's error (which the writer logs) never shows its values, so no
    driver's name or key hash reaches a log.
    """
    if url.startswith("sqlite"):
        path = url.split(":///", 1)[-1]
        if not path or path == ":memory:" or url == "sqlite://":
            raise ValueError("an in-memory SQLite database cannot be shared by the writer and the readers; "
                             "give a file (SessionManager() makes a temporary one)")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False,
                                                  "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000}, hide_parameters=True)

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # BEGIN is ours (below): pysqlite's own breaks SAVEPOINT
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")  # committed data survives a killed process
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        @event.listens_for(engine, "begin")
        def _begin(conn: Connection) -> None:
            # The writer's transactions take the write lock at BEGIN, waiting up to the busy timeout for it;
            # a deferred one that reads first could not upgrade while another process holds the lock and
            # would fail at once, without waiting.
            conn.exec_driver_sql(f"BEGIN {conn.get_execution_options().get(WRITER_BEGIN, 'DEFERRED')}")

        return engine
    return create_engine(url, pool_pre_ping=True, hide_parameters=True)


WRITER_BEGIN = "dashboard_sqlite_begin"  # execution option: how the writer's SQLite transactions begin


def upgrade(engine: Engine) -> None:
    """Apply every Alembic migration (``dashboard db upgrade``; also run on ``serve``)."""
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def _frame_statements(engine: Engine) -> tuple[str, str]:
    """The frame insert (ignoring a stored (session_id, seq)) and the session counters' update, as driver SQL."""
    dialect = engine.dialect.name
    if dialect == "sqlite":
        mark, as_json = "?", "?"
    elif dialect == "postgresql":
        mark, as_json = "%s", "CAST(%s AS JSON)"
    else:
        raise NotImplementedError(f"database dialect {dialect!r} is not supported")
    insert = (f"INSERT INTO frames (session_id, seq, t, received_at, channels) "
              f"VALUES ({mark}, {mark}, {mark}, {mark}, {as_json}) ON CONFLICT DO NOTHING")
    bump = (f"UPDATE sessions SET frame_count = frame_count + {mark}, last_seq = {mark}, last_activity_at = {mark}, "
            f"stats = {as_json}, latest = {as_json} WHERE id = {mark}")
    return insert, bump


def _json_text(value: Any) -> str | None:
    return None if value is None else orjson.dumps(value).decode()


def _io(method: F) -> F:
    """Run the method off the event loop; a locked, full or unreachable database becomes Unavailable."""

    @functools.wraps(method)
    def wrapper(self: "Store", *args: Any, **kwargs: Any) -> Any:
        try:
            return self.offload(method, self, *args, **kwargs)
        except OperationalError as exc:
            log.warning("database unavailable in %s: %s", method.__name__, exc.orig)
            raise Unavailable(f"the database is unavailable: {exc.orig}", retry_after=RETRY_AFTER_S) from None

    return wrapper  # type: ignore[return-value]


def finite_or_none(value: Any) -> float | None:
    """A stored number as a finite float, or None (rows written before inputs were bounded may hold anything)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


class Store:
    """Reads and writes sessions, events, setups, frames, tracks, laps, alert rules and alerts."""

    def __init__(self, engine: Engine, offload: Offload | None = None) -> None:
        self.engine = engine
        self.offload = offload or Offload(READ_THREADS, "reads")
        self._frame_sql, self._bump_sql = _frame_statements(engine)

    @classmethod
    def from_url(cls, url: str, migrate: bool = True) -> "Store":
        """Open (and by default migrate) the database at ``url``."""
        engine = make_engine(url)
        if migrate:
            upgrade(engine)
        return cls(engine)

    def close(self) -> None:
        """Stop the read threads and close the connections (safe twice)."""
        self.offload.close()
        self.engine.dispose()

    @contextmanager
    def _tx(self, conn: Connection | None) -> Iterator[Connection]:
        if conn is not None:
            yield conn
        else:
            with self.engine.begin() as own:
                yield own

    @contextmanager
    def _reading(self, conn: Connection | None) -> Iterator[Connection]:
        if conn is not None:
            yield conn
        else:
            with self.engine.connect() as own:
                yield own

    def writer_connection(self) -> Connection:
        """The single writer's connection: its transactions take the write lock when they begin."""
        return self.engine.connect().execution_options(**{WRITER_BEGIN: "IMMEDIATE"})

    def write_check(self, conn: Connection) -> None:
        """A real, tiny write (the writer runs it): SQLite's header version; PostgreSQL takes a transaction id.

        Fails like any write would on a full disk or a database locked past its busy timeout.
        """
        if self.engine.dialect.name == "sqlite":
            version = conn.exec_driver_sql("PRAGMA user_version").scalar() or 0
            conn.exec_driver_sql(f"PRAGMA user_version = {(int(version) + 1) % 2**31}")
        else:
            conn.execute(text("SELECT txid_current()"))

    @_io
    def ping(self) -> bool:
        """True when the database answers a read."""
        with self.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        return True

    # ------------------------------------------------------------ sessions
    @_io
    def insert_session(self, row: dict[str, Any], conn: Connection | None = None) -> None:
        """Insert a new session row."""
        with self._tx(conn) as c:
            c.execute(SESSIONS.insert().values(**row))

    @_io
    def update_session(self, session_id: str, conn: Connection | None = None, **fields: Any) -> None:
        """Update columns of one session."""
        with self._tx(conn) as c:
            c.execute(update(SESSIONS).where(SESSIONS.c.id == session_id).values(**fields))

    @_io
    def transition(self, session_id: str, fields: dict[str, Any], event: dict[str, Any],
                   conn: Connection | None = None) -> dict[str, Any] | None:
        """Update a session and log its event in one step; the event, or None if the database refused it."""
        try:
            with self._tx(conn) as c, c.begin_nested():
                c.execute(update(SESSIONS).where(SESSIONS.c.id == session_id).values(**fields))
                result = c.execute(EVENTS.insert().values(session_id=session_id, **event))
                event_id = result.inserted_primary_key[0]
        except IntegrityError:
            return None
        return {"id": event_id, "session_id": session_id, **event}

    @_io
    def get_session(self, session_id: str) -> dict[str, Any] | None:
        """One session row as a dict, or None."""
        with self.engine.connect() as conn:
            row = conn.execute(select(SESSIONS).where(SESSIONS.c.id == session_id)).mappings().first()
        return dict(row) if row else None

    @_io
    def list_sessions(
        self, limit: int, offset: int, status: str | tuple[str, ...] | None = None, car_id: str | None = None
    ) -> tuple[list[dict[str, Any]], int]:
        """A page of sessions, newest first, and the total matching (``status``: one or several)."""
        where = []
        if status:
            where.append(SESSIONS.c.status.in_((status,) if isinstance(status, str) else status))
        if car_id:
            where.append(SESSIONS.c.car_id == car_id)
        with self.engine.connect() as conn:
            total = conn.execute(select(func.count()).select_from(SESSIONS).where(*where)).scalar_one()
            rows = conn.execute(
                select(SESSIONS).where(*where).order_by(SESSIONS.c.created_at.desc(), SESSIONS.c.id)
                .limit(limit).offset(offset)).mappings()
            return [dict(r) for r in rows], total

    @_io
    def sessions_with_status(self, *statuses: str) -> list[dict[str, Any]]:
        """Every session in one of ``statuses``."""
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(select(SESSIONS).where(SESSIONS.c.status.in_(statuses))).mappings()]

    @_io
    def session_for_car(self, car_id: str, statuses: tuple[str, ...] = ("active",)) -> dict[str, Any] | None:
        """The car's newest session in one of ``statuses`` (at most one can be active)."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(SESSIONS).where(SESSIONS.c.car_id == car_id, SESSIONS.c.status.in_(statuses))
                .order_by(SESSIONS.c.created_at.desc()).limit(1)).mappings().first()
        return dict(row) if row else None

    def active_session_for_car(self, car_id: str) -> dict[str, Any] | None:
        """The car's active session, if any."""
        return self.session_for_car(car_id, ("active",))

    @_io
    def sessions_by_prefix(self, prefix: str) -> list[dict[str, Any]]:
        """Live sessions whose id starts with ``prefix`` (the LoRa summary carries 8 hex digits)."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(SESSIONS).where(SESSIONS.c.id.like(prefix + "%"),
                                       SESSIONS.c.status.in_(("created", "active", "stopped")))).mappings()
            return [dict(r) for r in rows]

    @_io
    def delete_session(self, session_id: str, conn: Connection | None = None) -> bool:
        """Delete a session and everything it owns; False if unknown."""
        with self._tx(conn) as c:
            for table in (FRAMES, SETUPS, EVENTS, LAPS, ALERTS):
                c.execute(delete(table).where(table.c.session_id == session_id))
            c.execute(delete(RULES).where(RULES.c.session_id == session_id))
            c.execute(delete(PITWALL).where(PITWALL.c.session_id == session_id))
            result = c.execute(delete(SESSIONS).where(SESSIONS.c.id == session_id))
        return result.rowcount > 0

    # -------------------------------------------------------------- events
    @_io
    def add_event(self, session_id: str, event: dict[str, Any],
                  conn: Connection | None = None) -> dict[str, Any] | None:
        """Log an event; None when its record_id was already logged for this session."""
        try:
            with self._tx(conn) as c, c.begin_nested():
                result = c.execute(EVENTS.insert().values(session_id=session_id, **event))
                event_id = result.inserted_primary_key[0]
        except IntegrityError:
            return None
        return {"id": event_id, "session_id": session_id, **event}

    @_io
    def event_by_record(self, record_id: str, event_types: Iterable[str]) -> dict[str, Any] | None:
        """The first event with this client record_id and one of these types."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(EVENTS).where(EVENTS.c.record_id == record_id, EVENTS.c.event_type.in_(list(event_types)))
                .order_by(EVENTS.c.id).limit(1)).mappings().first()
        return dict(row) if row else None

    @_io
    def events(self, session_id: str, after_id: int = 0, limit: int = 1000) -> list[dict[str, Any]]:
        """A session's events in order."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(EVENTS).where(EVENTS.c.session_id == session_id, EVENTS.c.id > after_id)
                .order_by(EVENTS.c.id).limit(limit)).mappings()
            return [dict(r) for r in rows]

    # -------------------------------------------------------------- setups
    @_io
    def add_setup(self, session_id: str, setup: dict[str, Any], timestamp: float, received_at: float,
                  event: dict[str, Any], conn: Connection | None = None) -> dict[str, Any]:
        """Store the next setup version and its event in one transaction."""
        with self._tx(conn) as c:
            current = c.execute(
                select(func.max(SETUPS.c.version)).where(SETUPS.c.session_id == session_id)).scalar_one()
            version = (current or 0) + 1
            c.execute(SETUPS.insert().values(session_id=session_id, version=version, timestamp=timestamp,
                                             received_at=received_at, setup=setup))
            event = {**event, "payload": {**event["payload"], "version": version}}
            result = c.execute(EVENTS.insert().values(session_id=session_id, **event))
            stored_event = {"id": result.inserted_primary_key[0], "session_id": session_id, **event}
        return {"session_id": session_id, "version": version, "timestamp": timestamp,
                "received_at": received_at, "setup": setup, "event": stored_event}

    @_io
    def setups(self, session_id: str) -> list[dict[str, Any]]:
        """Every setup version of a session, oldest first."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(*SETUP_COLUMNS).where(SETUPS.c.session_id == session_id)
                                .order_by(SETUPS.c.version)).mappings()
            return [dict(r) for r in rows]

    @_io
    def latest_setup(self, session_id: str) -> dict[str, Any] | None:
        """The current setup version, or None."""
        with self.engine.connect() as conn:
            row = conn.execute(select(*SETUP_COLUMNS).where(SETUPS.c.session_id == session_id)
                               .order_by(SETUPS.c.version.desc()).limit(1)).mappings().first()
        return dict(row) if row else None

    @_io
    def latest_setups(self, session_ids: list[str]) -> dict[str, dict[str, Any]]:
        """The current setup version of each of several sessions, in one query."""
        if not session_ids:
            return {}
        newest = (select(SETUPS.c.session_id, func.max(SETUPS.c.version).label("version"))
                  .where(SETUPS.c.session_id.in_(session_ids)).group_by(SETUPS.c.session_id).subquery())
        with self.engine.connect() as conn:
            rows = conn.execute(select(*SETUP_COLUMNS).join(newest, and_(
                SETUPS.c.session_id == newest.c.session_id, SETUPS.c.version == newest.c.version))).mappings()
            return {r["session_id"]: dict(r) for r in rows}

    # -------------------------------------------------------------- frames
    def write_frames(self, writes: list[FrameWrite], conn: Connection | None = None) -> None:
        """Insert frames of several sessions and bump their counters, in one transaction.

        Two statements, however many sessions and writes the batch holds: every row in one
        executemany, then each session's counters once. The hot path of the single writer, so the
        SQL is the driver's own (built once per dialect, ``_frame_statements``) and the JSON columns
        are written as orjson text: SQLAlchemy's per-row bind processing cost 2x the whole insert
        (measured: 282 -> 130 µs a commit of 8 frames). Not offloaded: the writer calls it in its thread.
        """
        dumps = orjson.dumps
        rows = [(w.session_id, r["seq"], r["t"], r["received_at"], dumps(r["channels"]).decode())
                for w in writes for r in w.rows]
        if not rows:
            return
        bumps: dict[str, list[Any]] = {}
        for w in writes:
            if not w.rows:
                continue
            bump = bumps.get(w.session_id)
            if bump is None:
                bumps[w.session_id] = bump = [0, None, None, None, None, w.session_id]
            bump[0] += len(w.rows)
            bump[1:5] = [w.last_seq, w.last_activity_at, _json_text(w.stats), _json_text(w.latest)]
        with self._tx(conn) as c:
            c.exec_driver_sql(self._frame_sql, rows)
            c.exec_driver_sql(self._bump_sql, [tuple(b) for b in bumps.values()])

    @_io
    def stored_frames(self, session_id: str, seqs: list[int]) -> dict[int, dict[str, Any]]:
        """Which of ``seqs`` are stored for the session, each with its frame."""
        if not seqs:
            return {}
        with self.engine.connect() as conn:
            rows = conn.execute(select(*FRAME_COLUMNS).where(FRAMES.c.session_id == session_id,
                                                             FRAMES.c.seq.in_(seqs))).mappings()
            return {r["seq"]: dict(r) for r in rows}

    @_io
    def frames(self, session_id: str, after_seq: int = -1, limit: int = 1000) -> list[dict[str, Any]]:
        """Stored frames in seq order after ``after_seq``."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(*FRAME_COLUMNS)
                                .where(FRAMES.c.session_id == session_id, FRAMES.c.seq > after_seq)
                                .order_by(FRAMES.c.seq).limit(limit)).mappings()
            return [dict(r) for r in rows]

    def iter_frames(self, session_id: str, page: int = FRAME_PAGE) -> Iterator[dict[str, Any]]:
        """Every stored frame of a session in seq order, read ``page`` at a time (memory stays bounded)."""
        after = -1
        while rows := self.frames(session_id, after, page):
            yield from rows
            after = rows[-1]["seq"]

    @_io
    def last_frames(self, session_id: str, limit: int, raw: bool = False) -> list[dict[str, Any]]:
        """The last ``limit`` frames by seq, returned in seq order.

        ``raw``: each frame's channels as the stored JSON text in an ``orjson.Fragment``, not decoded: a
        snapshot sent as JSON needs no Python object per value (20 per frame, thousands per snapshot).
        """
        channels = cast(FRAMES.c.channels, Text).label("channels") if raw else FRAMES.c.channels
        with self.engine.connect() as conn:
            rows = list(conn.execute(select(FRAMES.c.seq, FRAMES.c.t, FRAMES.c.received_at, channels)
                                     .where(FRAMES.c.session_id == session_id)
                                     .order_by(FRAMES.c.seq.desc()).limit(limit)))
        if raw:
            return [{"seq": r[0], "t": r[1], "received_at": r[2], "channels": orjson.Fragment(r[3])}
                    for r in reversed(rows)]
        return [{"seq": r[0], "t": r[1], "received_at": r[2], "channels": r[3]} for r in reversed(rows)]

    # -------------------------------------------------------------- tracks
    @_io
    def save_track(self, row: dict[str, Any], conn: Connection | None = None) -> None:
        """Insert or replace a track."""
        with self._tx(conn) as c:
            if c.execute(select(TRACKS.c.id).where(TRACKS.c.id == row["id"])).first():
                c.execute(update(TRACKS).where(TRACKS.c.id == row["id"]).values(**row))
            else:
                c.execute(TRACKS.insert().values(**row))

    @_io
    def get_track(self, track_id: str) -> dict[str, Any] | None:
        """One track, or None."""
        with self.engine.connect() as conn:
            row = conn.execute(select(TRACKS).where(TRACKS.c.id == track_id)).mappings().first()
        return dict(row) if row else None

    @_io
    def tracks(self) -> list[dict[str, Any]]:
        """Every track, by name."""
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(select(TRACKS).order_by(TRACKS.c.name)).mappings()]

    @_io
    def delete_track(self, track_id: str, conn: Connection | None = None) -> bool:
        """Delete a track that no session names; False if unknown."""
        with self._tx(conn) as c:
            return c.execute(delete(TRACKS).where(TRACKS.c.id == track_id)).rowcount > 0

    @_io
    def session_ids_on_track(self, track_id: str, conn: Connection | None = None) -> list[str]:
        """Sessions that name this track."""
        with self._reading(conn) as c:
            return list(c.execute(select(SESSIONS.c.id).where(SESSIONS.c.track_id == track_id)
                                  .order_by(SESSIONS.c.created_at)).scalars())

    # ---------------------------------------------------------------- laps
    @_io
    def replace_laps(self, session_id: str, laps: list[dict[str, Any]], conn: Connection | None = None) -> None:
        """Replace every lap of a session (after the track was defined or changed), and its lap figures."""
        with self._tx(conn) as c:
            c.execute(delete(LAPS).where(LAPS.c.session_id == session_id))
            if laps:
                c.execute(LAPS.insert(), [{"session_id": session_id, "lap": lap["lap"], "data": lap} for lap in laps])
            self._lap_figures(c, session_id)

    @_io
    def add_lap(self, session_id: str, lap: dict[str, Any], conn: Connection | None = None) -> None:
        """Store one completed lap (a lap number seen before is replaced), and the session's lap figures."""
        with self._tx(conn) as c:
            c.execute(delete(LAPS).where(LAPS.c.session_id == session_id, LAPS.c.lap == lap["lap"]))
            c.execute(LAPS.insert().values(session_id=session_id, lap=lap["lap"], data=lap))
            self._lap_figures(c, session_id)

    @staticmethod
    def _lap_figures(conn: Connection, session_id: str) -> None:
        timed = [finite_or_none(d.get("lap_time")) for d in conn.execute(
            select(LAPS.c.data).where(LAPS.c.session_id == session_id)).scalars()
            if isinstance(d, dict) and not (d.get("out_lap") or d.get("in_lap"))]
        times = [t for t in timed if t is not None]
        conn.execute(update(SESSIONS).where(SESSIONS.c.id == session_id)
                     .values(laps=len(times), best_lap_s=min(times, default=None)))

    @_io
    def laps(self, session_id: str) -> list[dict[str, Any]]:
        """A session's laps in order."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(LAPS.c.data).where(LAPS.c.session_id == session_id).order_by(LAPS.c.lap))
            return [r[0] for r in rows]

    # ------------------------------------------------ laps compared (compare_api)
    @_io
    def car_laps(self, car_id: str, track_id: str) -> list[dict[str, Any]]:
        """Every lap of the car's sessions on a track, oldest session first: ``{session_id, session_name,
        session_created_at, data}``."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(SESSIONS.c.id, SESSIONS.c.name, SESSIONS.c.created_at, LAPS.c.data)
                .join(LAPS, LAPS.c.session_id == SESSIONS.c.id)
                .where(SESSIONS.c.car_id == car_id, SESSIONS.c.track_id == track_id)
                .order_by(SESSIONS.c.created_at, SESSIONS.c.id, LAPS.c.lap))
            return [{"session_id": r[0], "session_name": r[1], "session_created_at": r[2], "data": r[3]}
                    for r in rows]

    @_io
    def latest_track_of_car(self, car_id: str) -> str | None:
        """The track of the car's newest session that has one, or None."""
        with self.engine.connect() as conn:
            return conn.execute(select(SESSIONS.c.track_id).where(SESSIONS.c.car_id == car_id,
                                                                   SESSIONS.c.track_id.is_not(None))
                                .order_by(SESSIONS.c.created_at.desc()).limit(1)).scalar()

    @_io
    def setups_of(self, session_ids: list[str]) -> list[dict[str, Any]]:
        """Every setup version of several sessions, by time."""
        if not session_ids:
            return []
        with self.engine.connect() as conn:
            rows = conn.execute(select(*SETUP_COLUMNS).where(SETUPS.c.session_id.in_(session_ids))
                                # equal times (the same setup time given in two sessions): the one posted first
                                .order_by(SETUPS.c.timestamp, SETUPS.c.received_at, SETUPS.c.id)).mappings()
            return [dict(r) for r in rows]

    @_io
    def lap(self, session_id: str, lap: int) -> dict[str, Any] | None:
        """One stored lap (its lap.completed payload), or None."""
        with self.engine.connect() as conn:
            return conn.execute(select(LAPS.c.data).where(LAPS.c.session_id == session_id,
                                                          LAPS.c.lap == lap)).scalar()

    @_io
    def frames_between(self, session_id: str, start_t: float, end_t: float, seqs: tuple[int, int] | None = None,
                       channels: Iterable[str] | None = None) -> list[dict[str, Any]]:
        """The frames sampled in ``start_t..end_t`` as ``{seq, t, channels}``, in seq order; only among seqs
        ``seqs[0]..seqs[1]`` if given (the table is keyed by seq, not time: a seq range reads a lap's rows, not the
        whole session's); only the named ``channels`` of each if given (decoded with orjson, the rest dropped at
        once: a long lap's frames held as a few small objects each)."""
        where = [FRAMES.c.session_id == session_id, FRAMES.c.t >= start_t, FRAMES.c.t <= end_t]
        if seqs is not None:
            where += [FRAMES.c.seq >= seqs[0], FRAMES.c.seq <= seqs[1]]
        wanted = None if channels is None else tuple(channels)
        with self.engine.connect() as conn:
            if wanted is None:
                rows = conn.execute(select(*FRAME_COLUMNS).where(*where).order_by(FRAMES.c.seq)).mappings()
                return [dict(r) for r in rows]
            rows = conn.execute(select(FRAMES.c.seq, FRAMES.c.t, cast(FRAMES.c.channels, Text))
                                .where(*where).order_by(FRAMES.c.seq))
            out = []
            loads = orjson.loads
            for seq, t, raw in rows:
                try:
                    values = loads(raw) if raw is not None else {}
                except orjson.JSONDecodeError:
                    continue
                if isinstance(values, dict):
                    out.append({"seq": seq, "t": t, "channels": {k: values[k] for k in wanted if k in values}})
            return out

    # ----------------------------------------------------- pit-wall settings
    @_io
    def save_setting(self, row: dict[str, Any], conn: Connection | None = None) -> None:
        """Insert or replace a pit-wall setting (roster, series rules, fuel model) by its id."""
        with self._tx(conn) as c:
            c.execute(delete(PITWALL).where(PITWALL.c.id == row["id"]))
            c.execute(PITWALL.insert().values(**row))

    @_io
    def setting(self, setting_id: str) -> dict[str, Any] | None:
        """One pit-wall setting, or None."""
        with self.engine.connect() as conn:
            row = conn.execute(select(PITWALL).where(PITWALL.c.id == setting_id)).mappings().first()
        return dict(row) if row else None

    @_io
    def delete_setting(self, setting_id: str, conn: Connection | None = None) -> bool:
        """Forget a pit-wall setting; False if there was none."""
        with self._tx(conn) as c:
            return c.execute(delete(PITWALL).where(PITWALL.c.id == setting_id)).rowcount > 0

    @_io
    def events_of_types(self, session_id: str, event_types: Iterable[str]) -> list[dict[str, Any]]:
        """A session's events of these types, in order (driver changes, crew refills: few per session)."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(EVENTS).where(EVENTS.c.session_id == session_id,
                                                     EVENTS.c.event_type.in_(list(event_types)))
                                .order_by(EVENTS.c.id)).mappings()
            return [dict(r) for r in rows]

    # ---------------------------------------------------------- alert rules
    @_io
    def save_alert_rule(self, key: str, car_id: str | None, rule: dict[str, Any],
                        session_id: str | None = None, conn: Connection | None = None) -> None:
        """Insert or replace an alert rule (``key`` names its scope and id)."""
        with self._tx(conn) as c:
            c.execute(delete(RULES).where(RULES.c.id == key))
            c.execute(RULES.insert().values(id=key, car_id=car_id, session_id=session_id, rule=rule))

    @_io
    def alert_rules(self, car_id: str | None = None, session_id: str | None = None) -> list[dict[str, Any]]:
        """Rules for every car, plus those of ``car_id`` and of ``session_id`` when given."""
        where = RULES.c.car_id.is_(None) & RULES.c.session_id.is_(None)
        if car_id is not None:
            where = where | ((RULES.c.car_id == car_id) & RULES.c.session_id.is_(None))
        if session_id is not None:
            where = where | (RULES.c.session_id == session_id)
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(select(RULES).where(where).order_by(RULES.c.id)).mappings()]

    @_io
    def delete_alert_rule(self, key: str, conn: Connection | None = None) -> bool:
        """Delete a rule; False if unknown."""
        with self._tx(conn) as c:
            return c.execute(delete(RULES).where(RULES.c.id == key)).rowcount > 0

    # --------------------------------------------------------------- alerts
    @_io
    def add_alert(self, session_id: str, rule_id: str, raised: dict[str, Any], raised_t: float,
                  conn: Connection | None = None) -> int:
        """Store a raised alert; returns its id."""
        with self._tx(conn) as c:
            result = c.execute(ALERTS.insert().values(session_id=session_id, rule_id=rule_id, raised=raised,
                                                      raised_t=raised_t))
            return result.inserted_primary_key[0]

    @_io
    def update_alert(self, alert_id: int, conn: Connection | None = None, **fields: Any) -> None:
        """Set cleared_t or the acknowledgement of an alert."""
        with self._tx(conn) as c:
            c.execute(update(ALERTS).where(ALERTS.c.id == alert_id).values(**fields))

    @_io
    def get_alert(self, session_id: str, alert_id: int, conn: Connection | None = None) -> dict[str, Any] | None:
        """One alert of a session, or None (``conn``: read inside the writer's transaction)."""
        with self._reading(conn) as c:
            row = c.execute(select(ALERTS).where(ALERTS.c.id == alert_id,
                                                 ALERTS.c.session_id == session_id)).mappings().first()
        return dict(row) if row else None

    @_io
    def alerts(self, session_id: str) -> list[dict[str, Any]]:
        """A session's alerts in the order they were raised."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(ALERTS).where(ALERTS.c.session_id == session_id).order_by(ALERTS.c.id))
            return [dict(r) for r in rows.mappings()]

    # ---------------------------------------------------------- access keys
    @_io
    def insert_key(self, row: dict[str, Any], conn: Connection | None = None) -> None:
        """Store a new key's row (its hash, never the key)."""
        with self._tx(conn) as c:
            c.execute(KEYS.insert().values(**row))

    @_io
    def get_key(self, key_id: str) -> dict[str, Any] | None:
        """One key's row by its public id, or None."""
        with self.engine.connect() as conn:
            row = conn.execute(select(KEYS).where(KEYS.c.id == key_id)).mappings().first()
        return dict(row) if row else None

    @_io
    def keys(self) -> list[dict[str, Any]]:
        """Every key's row, oldest first."""
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(select(KEYS).order_by(KEYS.c.created_at, KEYS.c.id)).mappings()]

    @_io
    def count_keys(self) -> int:
        """How many keys were ever created (revoked ones too)."""
        with self.engine.connect() as conn:
            return conn.execute(select(func.count()).select_from(KEYS)).scalar_one()

    @_io
    def revoke_key(self, key_id: str, at: float, conn: Connection | None = None) -> dict[str, Any] | None:
        """Mark a key revoked at ``at`` (a second revoke keeps the first time); its row, or None if unknown."""
        with self._tx(conn) as c:
            c.execute(update(KEYS).where(KEYS.c.id == key_id, KEYS.c.revoked_at.is_(None)).values(revoked_at=at))
            row = c.execute(select(KEYS).where(KEYS.c.id == key_id)).mappings().first()
        return dict(row) if row else None

    @_io
    def update_key(self, key_id: str, conn: Connection | None = None, **fields: Any) -> None:
        """Update columns of one key (its last use)."""
        with self._tx(conn) as c:
            c.execute(update(KEYS).where(KEYS.c.id == key_id).values(**fields))
