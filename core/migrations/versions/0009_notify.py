"""notify: clients' contact details and consent, links sent by e-mail or SMS, and the outbox

Revision ID: 0009_notify
Revises: 0008_jobs

Existing clients get no contact details and no consent, so nothing is sent to them until someone
records both (docs/notifications.md).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009_notify"
down_revision = "0008_jobs"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("clients", schema=None) as batch_op:
        batch_op.add_column(sa.Column("email", sa.String(length=254), nullable=True))
        batch_op.add_column(sa.Column("phone", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("contact_consent", sa.Boolean(), server_default=sa.false(), nullable=False))
        batch_op.add_column(sa.Column("contact_consent_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("time_zone", sa.String(length=64), nullable=True))
    op.create_table(
        "link_sendings",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("assignment_id", sa.Integer(), nullable=False),
        sa.Column("client_id", sa.Integer(), nullable=False),
        sa.Column("channel", sa.String(length=32), nullable=False),
        sa.Column("nonce", sa.String(length=64), nullable=False),
        sa.Column("base_url", sa.String(length=255), nullable=False),
        sa.Column("remind_after_hours", sa.Integer(), nullable=True),
        sa.Column("remind_max", sa.Integer(), nullable=False),
        sa.Column("reminders_done", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["assignment_id"], ["assignments.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["client_id"], ["clients.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("assignment_id", "channel"),
    )
    op.create_index("ix_link_sendings_assignment_id", "link_sendings", ["assignment_id"])
    op.create_index("ix_link_sendings_client_id", "link_sendings", ["client_id"])
    op.create_table(
        "outbox_messages",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("assignment_id", sa.Integer(), nullable=False),
        sa.Column("client_id", sa.Integer(), nullable=False),
        sa.Column("channel", sa.String(length=32), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("due_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("claim", sa.String(length=32), nullable=True),
        sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("error", sa.String(length=500), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["assignment_id"], ["assignments.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["client_id"], ["clients.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("assignment_id", "channel", "step"),
    )
    op.create_index("ix_outbox_messages_assignment_id", "outbox_messages", ["assignment_id"])
    op.create_index("ix_outbox_messages_client_id", "outbox_messages", ["client_id"])
    op.create_index("ix_outbox_messages_status_due", "outbox_messages", ["status", "due_at"])


def downgrade() -> None:
    op.drop_table("outbox_messages")
    op.drop_table("link_sendings")
    with op.batch_alter_table("clients", schema=None) as batch_op:
        for column in ("time_zone", "contact_consent_at", "contact_consent", "phone", "email"):
            batch_op.drop_column(column)
