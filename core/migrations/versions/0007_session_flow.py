"""session flow: end-of-session questionnaires wait for the clinician's release; clients may see their progress

Revision ID: 0007_session_flow
Revises: 0006

Every session started before this revision counts as released (its end-of-session links worked when they were
handed out and keep working). No client is shown their progress until a clinician turns it on.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_session_flow"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("care_sessions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("end_released_at", sa.DateTime(timezone=True), nullable=True))
    op.get_bind().execute(sa.text("UPDATE care_sessions SET end_released_at = held_at"))
    with op.batch_alter_table("clients", schema=None) as batch_op:
        batch_op.add_column(sa.Column("show_progress", sa.Boolean(), server_default=sa.false(), nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("clients", schema=None) as batch_op:
        batch_op.drop_column("show_progress")
    with op.batch_alter_table("care_sessions", schema=None) as batch_op:
        batch_op.drop_column("end_released_at")
