"""instrument_wordings: licensed wording kept in the database, one row per installed version

Revision ID: 0005
Revises: 0004

Wording installed before this revision lives in each host's instance folder (``wording/<id>.json``);
``rapportal serve`` and ``rapportal db upgrade`` copy those files into this table (see core/wording.py).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "instrument_wordings",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("instrument_id", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("document", sa.JSON(), nullable=False),
        sa.Column("placeholder", sa.Boolean(), nullable=False),
        sa.Column("installed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("installed_by", sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("instrument_id", "version"),
    )


def downgrade() -> None:
    op.drop_table("instrument_wordings")
