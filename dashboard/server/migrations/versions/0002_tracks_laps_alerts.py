"""Tracks, laps, alert rules and alerts; a session names its track.

Revision ID: 0002
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tracks",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("definition", sa.JSON, nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    with op.batch_alter_table("sessions") as batch:
        batch.add_column(sa.Column("track_id", sa.String(36), nullable=True))
        batch.create_foreign_key("fk_sessions_track", "tracks", ["track_id"], ["id"], ondelete="SET NULL")
    op.create_table(
        "laps",
        sa.Column("session_id", sa.String(36), sa.ForeignKey("sessions.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("lap", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("data", sa.JSON, nullable=False),
    )
    op.create_table(
        "alert_rules",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("car_id", sa.String(64)),
        sa.Column("rule", sa.JSON, nullable=False),
    )
    op.create_index("ix_alert_rules_car_id", "alert_rules", ["car_id"])
    op.create_table(
        "alerts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("session_id", sa.String(36), sa.ForeignKey("sessions.id", ondelete="CASCADE"), nullable=False),
        sa.Column("rule_id", sa.String(64), nullable=False),
        sa.Column("raised", sa.JSON, nullable=False),
        sa.Column("raised_t", sa.Float, nullable=False),
        sa.Column("cleared_t", sa.Float),
        sa.Column("acked_by", sa.String(200)),
        sa.Column("acked_at", sa.Float),
    )
    op.create_index("ix_alerts_session_id", "alerts", ["session_id"])


def downgrade() -> None:
    op.drop_table("alerts")
    op.drop_table("alert_rules")
    op.drop_table("laps")
    with op.batch_alter_table("sessions") as batch:
        batch.drop_constraint("fk_sessions_track", type_="foreignkey")
        batch.drop_column("track_id")
    op.drop_table("tracks")
