"""Initial tables: sessions, session_events, setups, frames.

Revision ID: 0001
Revises:
"""
import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sessions",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("car_id", sa.String(64)),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("driver", sa.String(200)),
        sa.Column("track", sa.String(200)),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("started_at", sa.Float),
        sa.Column("ended_at", sa.Float),
        sa.Column("last_activity_at", sa.Float),
        sa.Column("end_reason", sa.String(64)),
        sa.Column("frame_count", sa.BigInteger, nullable=False),
        sa.Column("last_seq", sa.BigInteger),
    )
    op.create_index("ix_sessions_car_status", "sessions", ["car_id", "status"])
    op.create_index("ix_sessions_status_created", "sessions", ["status", "created_at"])
    op.create_index("ix_sessions_created", "sessions", ["created_at"])
    op.create_table(
        "session_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("session_id", sa.String(36), sa.ForeignKey("sessions.id", ondelete="CASCADE"), nullable=False),
        sa.Column("record_id", sa.String(128)),
        sa.Column("event_type", sa.String(64), nullable=False),
        sa.Column("timestamp", sa.Float, nullable=False),
        sa.Column("payload", sa.JSON, nullable=False),
        sa.Column("received_at", sa.Float, nullable=False),
        sa.UniqueConstraint("session_id", "record_id", name="uq_session_events_record"),
    )
    op.create_index("ix_session_events_session_id", "session_events", ["session_id", "id"])
    op.create_index("ix_session_events_record", "session_events", ["record_id"])
    op.create_table(
        "setups",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("session_id", sa.String(36), sa.ForeignKey("sessions.id", ondelete="CASCADE"), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("timestamp", sa.Float, nullable=False),
        sa.Column("received_at", sa.Float, nullable=False),
        sa.Column("setup", sa.JSON, nullable=False),
        sa.UniqueConstraint("session_id", "version", name="uq_setups_version"),
    )
    op.create_table(
        "frames",
        sa.Column("session_id", sa.String(36), sa.ForeignKey("sessions.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("t", sa.Float, nullable=False),
        sa.Column("received_at", sa.Float, nullable=False),
        sa.Column("channels", sa.JSON, nullable=False),
    )
    op.create_index("ix_frames_session_t", "frames", ["session_id", "t"])


def downgrade() -> None:
    op.drop_table("frames")
    op.drop_table("setups")
    op.drop_table("session_events")
    op.drop_table("sessions")
