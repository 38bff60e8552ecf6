"""What a session's view needs without reading its frames, and longer alert rule keys.

- ``latest``: each channel's latest value ``{name: [value, t, seq]}``, saved with the frames (a past
  session's view never loads frames);
- ``stopped_at``: when the session was last stopped (frames sampled after it are refused);
- ``laps`` and ``best_lap_s``: kept with the laps (the sessions list is a constant number of queries);
- ``alert_rules.id`` up to 200 characters: a 64-character car id with a 64-character rule id is 129.

Revision ID: 0006
Revises: 0005
"""
import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("sessions") as batch:
        batch.add_column(sa.Column("latest", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("stopped_at", sa.Float(), nullable=True))
        batch.add_column(sa.Column("laps", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("best_lap_s", sa.Float(), nullable=True))
    with op.batch_alter_table("alert_rules") as batch:
        batch.alter_column("id", type_=sa.String(200), existing_type=sa.String(120))
    # sessions stored before this revision: their lap figures from their stored laps
    conn = op.get_bind()
    laps = sa.table("laps", sa.column("session_id", sa.String), sa.column("data", sa.JSON))
    sessions = sa.table("sessions", sa.column("id", sa.String), sa.column("laps", sa.Integer),
                        sa.column("best_lap_s", sa.Float))
    figures: dict[str, list[float]] = {}
    for session_id, data in conn.execute(sa.select(laps.c.session_id, laps.c.data)):
        if isinstance(data, dict) and not (data.get("out_lap") or data.get("in_lap")):
            figures.setdefault(session_id, []).append(float(data["lap_time"]))
    for session_id, times in figures.items():
        conn.execute(sa.update(sessions).where(sessions.c.id == session_id)
                     .values(laps=len(times), best_lap_s=min(times)))


def downgrade() -> None:
    with op.batch_alter_table("alert_rules") as batch:
        batch.alter_column("id", type_=sa.String(120), existing_type=sa.String(200))
    with op.batch_alter_table("sessions") as batch:
        batch.drop_column("best_lap_s")
        batch.drop_column("laps")
        batch.drop_column("stopped_at")
        batch.drop_column("latest")
