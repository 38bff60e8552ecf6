"""Pit-wall settings: a car's driver roster, series rules, a fuel model (a track's pit lane is in its definition).

Revision ID: 0009
Revises: 0008
"""
import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "pitwall_settings",
        sa.Column("id", sa.String(200), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("car_id", sa.String(64), nullable=True),
        sa.Column("session_id", sa.String(36), nullable=True),
        sa.Column("value", sa.JSON(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
    )
    op.create_index("ix_pitwall_settings_car_id", "pitwall_settings", ["car_id"])
    op.create_index("ix_pitwall_settings_session_id", "pitwall_settings", ["session_id"])


def downgrade() -> None:
    op.drop_index("ix_pitwall_settings_session_id", "pitwall_settings")
    op.drop_index("ix_pitwall_settings_car_id", "pitwall_settings")
    op.drop_table("pitwall_settings")
