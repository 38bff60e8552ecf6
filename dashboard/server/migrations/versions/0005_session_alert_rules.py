"""Alert rules for one session (on top of those for every car and for one car).

Revision ID: 0005
Revises: 0004
"""
import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("alert_rules") as batch:
        batch.add_column(sa.Column("session_id", sa.String(36), nullable=True))
        batch.alter_column("id", type_=sa.String(120), existing_type=sa.String(64))
    op.create_index("ix_alert_rules_session_id", "alert_rules", ["session_id"])


def downgrade() -> None:
    op.drop_index("ix_alert_rules_session_id", table_name="alert_rules")
    with op.batch_alter_table("alert_rules") as batch:
        batch.drop_column("session_id")
        batch.alter_column("id", type_=sa.String(64), existing_type=sa.String(120))
