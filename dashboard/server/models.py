"""Database tables (SQLAlchemy 2 declarative). Times are epoch seconds (float) for portability.

The Alembic migrations in ``migrations/versions`` create exactly these tables;
``tests/server/test_migrations.py`` fails when the two drift apart.
"""
from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, Float, ForeignKey, Index, Integer, String, UniqueConstraint, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    """Declarative base of every table."""


class SessionRow(Base):
    """One session of one car."""

    __tablename__ = "sessions"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    car_id: Mapped[str | None] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200), default="")
    driver: Mapped[str | None] = mapped_column(String(200))
    track: Mapped[str | None] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[float] = mapped_column(Float)
    started_at: Mapped[float | None] = mapped_column(Float)
    ended_at: Mapped[float | None] = mapped_column(Float)
    last_activity_at: Mapped[float | None] = mapped_column(Float)
    end_reason: Mapped[str | None] = mapped_column(String(64))
    frame_count: Mapped[int] = mapped_column(BigInteger, default=0)
    last_seq: Mapped[int | None] = mapped_column(BigInteger)
    track_id: Mapped[str | None] = mapped_column(String(36), ForeignKey("tracks.id", ondelete="SET NULL"))
    stats: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # FrameStats, saved with each frame write
    latest: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # {channel: [value, t, seq]}, saved with the frames
    stopped_at: Mapped[float | None] = mapped_column(Float)  # frames sampled after it are refused while stopped
    laps: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # timed laps (not out/in laps)
    best_lap_s: Mapped[float | None] = mapped_column(Float)

    __table_args__ = (
        # One active session per car, enforced by the database across server processes.
        Index("uq_sessions_active_car", "car_id", unique=True, sqlite_where=text("status = 'active'"),
              postgresql_where=text("status = 'active'")),
        Index("ix_sessions_car_status", "car_id", "status"),
        Index("ix_sessions_status_created", "status", "created_at"),
        Index("ix_sessions_created", "created_at"),
    )


class EventRow(Base):
    """One entry of a session's event log (status change, setup change, trouble code...)."""

    __tablename__ = "session_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    session_id: Mapped[str] = mapped_column(String(36), ForeignKey("sessions.id", ondelete="CASCADE"))
    record_id: Mapped[str | None] = mapped_column(String(128))
    event_type: Mapped[str] = mapped_column(String(64))
    timestamp: Mapped[float] = mapped_column(Float)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    received_at: Mapped[float] = mapped_column(Float)

    __table_args__ = (
        UniqueConstraint("session_id", "record_id", name="uq_session_events_record"),
        Index("ix_session_events_session_id", "session_id", "id"),
        Index("ix_session_events_record", "record_id"),
    )


class SetupRow(Base):
    """One version of a session's car setup, as POSTed by the engineer."""

    __tablename__ = "setups"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    session_id: Mapped[str] = mapped_column(String(36), ForeignKey("sessions.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    timestamp: Mapped[float] = mapped_column(Float)
    received_at: Mapped[float] = mapped_column(Float)
    setup: Mapped[dict[str, Any]] = mapped_column(JSON)

    __table_args__ = (UniqueConstraint("session_id", "version", name="uq_setups_version"),)


class FrameRow(Base):
    """One telemetry frame; (session_id, seq) is unique so a resent frame is stored once."""

    __tablename__ = "frames"

    session_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("sessions.id", ondelete="CASCADE"), primary_key=True
    )
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    t: Mapped[float] = mapped_column(Float)
    received_at: Mapped[float] = mapped_column(Float)
    channels: Mapped[dict[str, Any]] = mapped_column(JSON)
    # no other index: every read goes by (session_id, seq); an index on t cost half of each insert (0007)


class TrackRow(Base):
    """A circuit: start/finish line and optional sector lines, as lat/lon pairs."""

    __tablename__ = "tracks"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    definition: Mapped[dict[str, Any]] = mapped_column(JSON)  # {"start_finish": [A, B], "sectors": [[A, B]...]}
    created_at: Mapped[float] = mapped_column(Float)
    updated_at: Mapped[float] = mapped_column(Float)


class LapRow(Base):
    """One completed lap of a session, with the setup version in force."""

    __tablename__ = "laps"

    session_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("sessions.id", ondelete="CASCADE"), primary_key=True
    )
    lap: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    data: Mapped[dict[str, Any]] = mapped_column(JSON)  # the lap.completed payload


class AlertRuleRow(Base):
    """An alert rule for one session, one car, or every car (both null)."""

    __tablename__ = "alert_rules"

    id: Mapped[str] = mapped_column(String(200), primary_key=True)  # scope/rule id, see alerts.rule_key
    car_id: Mapped[str | None] = mapped_column(String(64), index=True)
    session_id: Mapped[str | None] = mapped_column(String(36), index=True)
    rule: Mapped[dict[str, Any]] = mapped_column(JSON)


class AlertRow(Base):
    """An alert raised in a session: when, where, cleared, acknowledged by whom."""

    __tablename__ = "alerts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    session_id: Mapped[str] = mapped_column(String(36), ForeignKey("sessions.id", ondelete="CASCADE"), index=True)
    rule_id: Mapped[str] = mapped_column(String(64))
    raised: Mapped[dict[str, Any]] = mapped_column(JSON)  # the alert.raised payload, with lap and position
    raised_t: Mapped[float] = mapped_column(Float)
    cleared_t: Mapped[float | None] = mapped_column(Float)
    acked_by: Mapped[str | None] = mapped_column(String(200))
    acked_at: Mapped[float | None] = mapped_column(Float)


class KeyRow(Base):
    """An access key of a car, a pit gateway or a person: its SHA-256 only, never the key (server/keys.py)."""

    __tablename__ = "access_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # the public part: rdk_<12 hex>
    key_hash: Mapped[str] = mapped_column(String(64))  # sha256 of the whole key, hex
    name: Mapped[str] = mapped_column(String(200))
    role: Mapped[str] = mapped_column(String(16))  # admin, engineer, viewer, car, gateway
    car_id: Mapped[str | None] = mapped_column(String(64))  # a car key's car, the only one it connects as
    created_at: Mapped[float] = mapped_column(Float)
    last_used_at: Mapped[float | None] = mapped_column(Float)  # saved at most once a minute
    revoked_at: Mapped[float | None] = mapped_column(Float)


class PitwallSettingRow(Base):
    """A pit-wall setting: a car's driver roster, series rules (every car, a car or a session), a fuel model."""

    __tablename__ = "pitwall_settings"

    id: Mapped[str] = mapped_column(String(200), primary_key=True)  # kind/scope, see pitwall.setting_key
    kind: Mapped[str] = mapped_column(String(16))  # roster, series, fuel
    car_id: Mapped[str | None] = mapped_column(String(64), index=True)
    session_id: Mapped[str | None] = mapped_column(String(36), index=True)
    value: Mapped[dict[str, Any]] = mapped_column(JSON)
    updated_at: Mapped[float] = mapped_column(Float)
