"""sites: clinics of one portal; users' sites, supervisors' clinicians, and each client's site

Revision ID: 0006
Revises: 0005

Every client made before this revision is put in the default site (``Main site``, id 1). Users get
no site, which makes them portal-wide, as they were (see docs/sites.md).
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    sites = op.create_table(
        "sites",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("name"),
    )
    op.bulk_insert(sites, [{"name": "Main site", "created_at": datetime.now(UTC)}])
    op.create_table(
        "user_sites",
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("site_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["site_id"], ["sites.id"]),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"]),
        sa.PrimaryKeyConstraint("user_id", "site_id"),
    )
    op.create_index("ix_user_sites_site_id", "user_sites", ["site_id"])
    op.create_table(
        "supervisions",
        sa.Column("supervisor_id", sa.Integer(), nullable=False),
        sa.Column("clinician_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["clinician_id"], ["users.id"]),
        sa.ForeignKeyConstraint(["supervisor_id"], ["users.id"]),
        sa.PrimaryKeyConstraint("supervisor_id", "clinician_id"),
    )
    op.create_index("ix_supervisions_clinician_id", "supervisions", ["clinician_id"])
    default = op.get_bind().execute(sa.text("SELECT min(id) FROM sites")).scalar_one()
    with op.batch_alter_table("clients", schema=None) as batch_op:
        batch_op.add_column(sa.Column("site_id", sa.Integer(), nullable=True))
    op.get_bind().execute(sa.text("UPDATE clients SET site_id = :site"), {"site": default})
    with op.batch_alter_table("clients", schema=None) as batch_op:
        batch_op.alter_column("site_id", existing_type=sa.Integer(), nullable=False)
        batch_op.create_foreign_key("fk_clients_site_id_sites", "sites", ["site_id"], ["id"])
        batch_op.create_index("ix_clients_site_id", ["site_id"])


def downgrade() -> None:
    with op.batch_alter_table("clients", schema=None) as batch_op:
        batch_op.drop_index("ix_clients_site_id")
        batch_op.drop_constraint("fk_clients_site_id_sites", type_="foreignkey")
        batch_op.drop_column("site_id")
    op.drop_index("ix_supervisions_clinician_id", table_name="supervisions")
    op.drop_table("supervisions")
    op.drop_index("ix_user_sites_site_id", table_name="user_sites")
    op.drop_table("user_sites")
    op.drop_table("sites")
