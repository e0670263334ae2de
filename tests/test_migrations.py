"""Migrations: they agree with core/models.py, have one head, and keep data through every upgrade."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.script import ScriptDirectory

from core.db import create_schema, make_db_engine
from core.migrations import (
    BASELINE_REVISION,
    MIGRATIONS_DIR,
    MigrationError,
    alembic_config,
    current_revision,
    head_revision,
    schema_differences,
    upgrade,
)


@pytest.fixture
def db(db_url: str):
    engine = make_db_engine(db_url)
    yield engine
    engine.dispose()


def test_models_and_migrations_agree(db: sa.Engine) -> None:
    """Fails when a model changes without a revision: see core/migrations/README.md."""
    upgrade(db)
    assert schema_differences(db) == []


def test_migrations_have_exactly_one_head() -> None:
    assert len(ScriptDirectory.from_config(alembic_config()).get_heads()) == 1


def test_upgrade_creates_every_table_in_an_empty_database_and_is_idempotent(db: sa.Engine) -> None:
    assert current_revision(db) is None
    assert upgrade(db) == head_revision()
    assert upgrade(db) == head_revision()
    assert set(sa.inspect(db).get_table_names()) >= {"responses", "scores", "alembic_version"}


def test_downgrade_to_base_removes_every_table(db: sa.Engine) -> None:
    upgrade(db)
    with db.connect() as connection:
        command.downgrade(alembic_config(connection), "base")
        connection.commit()
    assert set(sa.inspect(db).get_table_names()) <= {"alembic_version"}


# Rows as they were at the baseline revision, written with plain SQL so that later model changes
# cannot change what "data from the previous revision" means.
NOW = datetime(2026, 1, 5, 9, 30, tzinfo=UTC)
BASELINE_ROWS = {
    "users": [dict(id=1, username="dr.k", display_name="Dr K", role="clinician", password_hash=None, active=True,
                   created_at=NOW, password_changed_at=NOW)],
    "clients": [dict(id=1, code="C-001", display_name=None, clinician_id=1, created_at=NOW)],
    "episodes": [dict(id=1, client_id=1, title="Episode 1", started_at=NOW, ended_at=None)],
    "care_sessions": [dict(id=1, episode_id=1, number=1, held_at=NOW)],
    "assignments": [dict(id=1, client_id=1, episode_id=1, session_id=1, instrument_id="phq9", instrument_version="1.0",
                         language="en", token_hash="ab" * 32, created_at=NOW, expires_at=NOW, completed_at=NOW)],
    "responses": [dict(id=1, assignment_id=1, client_id=1, episode_id=1, instrument_id="phq9", instrument_version="1.0",
                       language="en", answers={f"phq9_{n}": 1 for n in range(1, 10)}, receipt="0A1B2C3D",
                       started_at=None, submitted_at=NOW)],
    "scores": [dict(response_id=1, complete=True, values={"total": "9"}, band="mild", flags=[], scored_at=NOW)],
    "alerts": [dict(id=1, response_id=1, client_id=1, rule="phq9_item9", severity="urgent", message="item 9",
                    created_at=NOW, acknowledged_at=None, acknowledged_by=None, note=None)],
    "audit_entries": [dict(id=1, at=NOW, actor="client-link", action="response.submit", target="response:1",
                           address="127.0.0.1", detail={"instrument": "phq9"})],
}  # fmt: skip


def _seed(db: sa.Engine) -> None:
    metadata = sa.MetaData()
    metadata.reflect(db)
    with db.begin() as connection:
        for table, rows in BASELINE_ROWS.items():
            connection.execute(metadata.tables[table].insert(), rows)


def _read(db: sa.Engine) -> dict[str, list[dict]]:
    metadata = sa.MetaData()
    metadata.reflect(db)
    found = {}
    with db.connect() as connection:
        for table, rows in BASELINE_ROWS.items():
            columns = [metadata.tables[table].c[name] for name in rows[0]]
            found[table] = [
                {name: _plain(value) for name, value in row._mapping.items()}
                for row in connection.execute(sa.select(*columns))
            ]
    return found


def _plain(value):
    if isinstance(value, datetime):
        return value.replace(tzinfo=None)
    if isinstance(value, str) and value[:1] in "{[":
        return json.loads(value)
    return value


def _expected() -> dict[str, list[dict]]:
    return {table: [{k: _plain(v) for k, v in row.items()} for row in rows] for table, rows in BASELINE_ROWS.items()}


# A throwaway revision on top of the real head: column type changes that SQLite can only make by
# copying the table (batch mode), on a parent (assignments) and a child (responses) table.
EXTRA_REVISION = """
import sqlalchemy as sa
from alembic import op

revision = "test_extra"
down_revision = {head!r}
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table("responses") as batch:
        batch.alter_column("receipt", existing_type=sa.String(32), type_=sa.String(40))
        batch.add_column(sa.Column("channel", sa.String(16), nullable=False, server_default="link"))
        batch.create_index("ix_responses_channel", ["channel"])
    with op.batch_alter_table("assignments") as batch:
        batch.alter_column("language", existing_type=sa.String(16), type_=sa.String(35))


def downgrade():
    with op.batch_alter_table("assignments") as batch:
        batch.alter_column("language", existing_type=sa.String(35), type_=sa.String(16))
    with op.batch_alter_table("responses") as batch:
        batch.drop_index("ix_responses_channel")
        batch.drop_column("channel")
        batch.alter_column("receipt", existing_type=sa.String(40), type_=sa.String(32))
"""


def test_upgrade_keeps_data_seeded_at_the_baseline_revision(db: sa.Engine, tmp_path: Path) -> None:
    upgrade(db, BASELINE_REVISION)
    _seed(db)
    assert upgrade(db) == head_revision()
    assert _read(db) == _expected()

    extra = tmp_path / "extra_versions"
    extra.mkdir()
    (extra / "test_extra.py").write_text(EXTRA_REVISION.format(head=head_revision()))
    with db.connect() as connection:
        config = alembic_config(connection)
        config.set_main_option("path_separator", "os")
        config.set_main_option("version_locations", os.pathsep.join([str(MIGRATIONS_DIR / "versions"), str(extra)]))
        command.upgrade(config, "test_extra")
        connection.commit()
        assert _read(db) == _expected()
        assert connection.execute(sa.text("SELECT channel FROM responses")).scalars().all() == ["link"]
        command.downgrade(config, head_revision())
        connection.commit()
    assert _read(db) == _expected()
    assert schema_differences(db) == []
    if db.dialect.name == "sqlite":
        with db.connect() as connection:
            assert connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall() == []


def test_a_database_created_before_migrations_is_adopted_at_the_baseline(db: sa.Engine) -> None:
    metadata = sa.MetaData()
    upgrade(db, BASELINE_REVISION)
    metadata.reflect(db)
    with db.connect() as connection:
        command.downgrade(alembic_config(connection), "base")
        connection.commit()
    with db.begin() as connection:
        metadata.create_all(connection)  # what create_all made before there were migrations
    _seed(db)
    assert upgrade(db) == head_revision()
    assert _read(db) == _expected()


def test_tables_without_migration_history_that_are_not_the_baseline_are_refused(db: sa.Engine) -> None:
    with db.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE responses (id INTEGER PRIMARY KEY)")
    with pytest.raises(MigrationError, match="no migration history"):
        upgrade(db)


def test_the_tests_fast_path_builds_the_same_schema_as_the_migrations(db: sa.Engine) -> None:
    create_schema(db)
    with db.connect() as connection:
        command.stamp(alembic_config(connection), "head")
        connection.commit()
    assert schema_differences(db) == []


def test_upgrade_to_0004_keeps_clients_and_gives_them_the_default_language(db: sa.Engine) -> None:
    upgrade(db, "0003")
    _seed(db)
    assert upgrade(db) == head_revision()
    assert _read(db) == _expected()
    with db.connect() as connection:
        languages = connection.execute(sa.text("SELECT DISTINCT language FROM clients")).scalars().all()
    assert languages == ["en"]


def test_upgrade_to_0005_adds_an_empty_wording_store_and_downgrading_to_0004_removes_it(db: sa.Engine) -> None:
    upgrade(db, "0004")
    _seed(db)
    upgrade(db, "0005")
    assert _read(db) == _expected()
    with db.connect() as connection:
        assert connection.execute(sa.text("SELECT count(*) FROM instrument_wordings")).scalar() == 0
        command.downgrade(alembic_config(connection), "0004")
        connection.commit()
    assert "instrument_wordings" not in sa.inspect(db).get_table_names()
    assert _read(db) == _expected()


def test_upgrade_to_0006_puts_every_client_in_the_default_site_and_keeps_every_row(db: sa.Engine) -> None:
    upgrade(db, "0005")
    _seed(db)
    with db.begin() as connection:
        connection.execute(
            sa.text("INSERT INTO clients (id, code, display_name, clinician_id, created_at, language) "
                    "VALUES (2, 'C-002', 'Two', NULL, :now, 'de')"),
            {"now": NOW},
        )  # fmt: skip
    upgrade(db, "0006")
    found = _read(db)
    expected = _expected()
    assert found["clients"][0] == expected["clients"][0]
    assert {table: rows for table, rows in found.items() if table != "clients"} == {
        table: rows for table, rows in expected.items() if table != "clients"
    }
    with db.connect() as connection:
        sites = connection.execute(sa.text("SELECT id, name FROM sites")).all()
        clients = connection.execute(sa.text("SELECT code, language, site_id FROM clients ORDER BY id")).all()
    assert [tuple(row) for row in sites] == [(1, "Main site")]
    assert [tuple(row) for row in clients] == [("C-001", "en", 1), ("C-002", "de", 1)]
    upgrade(db)  # the later revisions (0008_jobs, ...) complete the schema
    assert schema_differences(db) == []
    with db.connect() as connection:
        command.downgrade(alembic_config(connection), "0005")
        connection.commit()
    assert "sites" not in sa.inspect(db).get_table_names()
    assert _read(db)["clients"][0] == expected["clients"][0]
