"""Backups: `rapportal db backup` taken under load restores (as docs/deployment.md says) to the same data."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from test_production_support import (
    RAPPORTAL,
    Server,
    assert_database_intact,
    assert_exactly_once,
    prepare_database,
    start_clients,
    stored_state,
    table_checksums,
)

from core.db import make_db_engine
from core.migrations.backup import libpq_arguments

LINKS = 1200


def backup(url: str, instance: Path, file: Path) -> None:
    env = dict(os.environ, RAPPORTAL_DATABASE_URL=url, RAPPORTAL_INSTANCE_PATH=str(instance))
    env["RAPPORTAL_LOAD_ENTRYPOINTS"] = "false"
    done = subprocess.run([str(RAPPORTAL), "db", "backup", str(file)], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert file.is_file()


@pytest.fixture
def restore(tmp_path: Path) -> Iterator[Any]:
    """Restore a backup the way docs/deployment.md describes; yields a function returning the restored URL."""
    databases: list[tuple[str, str]] = []

    def restore_to(url: str, file: Path) -> str:
        parsed = sa.make_url(url)
        if parsed.get_backend_name() == "sqlite":
            # Stop the portal, copy the backup over the database file, remove the -wal/-shm files.
            target = tmp_path / f"restored-{uuid.uuid4().hex[:8]}.db"
            shutil.copyfile(file, target)
            return f"sqlite:///{target}"
        name = f"rt_restore_{uuid.uuid4().hex[:12]}"
        server = parsed.set(query={}).render_as_string(hide_password=False)
        with make_db_engine(server, poolclass=sa.NullPool, isolation_level="AUTOCOMMIT").connect() as connection:
            connection.exec_driver_sql(f"CREATE DATABASE {name}")
        databases.append((server, name))
        restored = parsed.set(database=name)
        arguments, env = libpq_arguments(restored.set(query={}))
        done = subprocess.run(
            ["pg_restore", "--no-owner", "--exit-on-error", *arguments, str(file)],
            env=env,
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, done.stderr
        return restored.render_as_string(hide_password=False)

    yield restore_to
    for server, name in databases:
        with make_db_engine(server, poolclass=sa.NullPool, isolation_level="AUTOCOMMIT").connect() as connection:
            connection.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def rows_by_key(url: str) -> dict[str, dict[Any, tuple]]:
    """Every row of every table keyed by primary key, with assignments' completed_at left out (it changes)."""
    db = make_db_engine(url)
    try:
        with db.connect() as connection:
            metadata = sa.MetaData()
            metadata.reflect(connection)
            found = {}
            for name, table in metadata.tables.items():
                columns = [c for c in table.columns if (name, c.name) != ("assignments", "completed_at")]
                keys = list(table.primary_key.columns)
                found[name] = {
                    tuple(row[: len(keys)]): tuple(str(v) for v in row[len(keys) :])
                    for row in connection.execute(sa.select(*keys, *columns))
                }
            return found
    finally:
        db.dispose()


def wait_for_first_responses(url: str, tokens: list[str], seconds: float = 60) -> None:
    """Return once some submissions are stored: the backup must start while the rest still arrive."""
    deadline = time.monotonic() + seconds
    while stored_state(url, tokens).responses < 20:
        assert time.monotonic() < deadline, "no submission was stored within a minute"
        time.sleep(0.02)


def test_backup_under_load_restores_to_a_consistent_snapshot_and_a_quiet_one_to_identical_data(
    tmp_path: Path, db_url: str, restore: Any
) -> None:
    url = db_url
    tokens = prepare_database(url, LINKS)
    instance = tmp_path / "instance"
    # no job worker beside it: its periodic jobs would change the jobs table between a backup and the comparison
    with Server(url, instance, workers=4, job_worker=False) as server:
        # the clients answer at a steady pace and hold their last links back until the backup is taken, so it is
        # taken while submissions arrive and before the last of them, however fast the server answers
        release = multiprocessing.get_context("fork").Event()
        pool, result = start_clients(server.base, tokens, processes=8, release=release)
        wait_for_first_responses(url, tokens)
        backup(url, instance, tmp_path / "under-load.backup")
        release.set()
        outcomes = [outcome for chunk in result.get(timeout=300) for outcome in chunk]
        pool.join()
        backup(url, instance, tmp_path / "quiet.backup")
    assert {outcome.status for outcome in outcomes} == {200}
    final = assert_exactly_once(url, outcomes, tokens)

    # Under load: a snapshot between the first and the last submission, every row identical to the
    # live database's, and no submission half in it (response, score and audit entry together).
    snapshot = restore(url, tmp_path / "under-load.backup")
    assert_database_intact(snapshot)
    partial = stored_state(snapshot, tokens)
    assert 0 < partial.responses < final.responses, "the backup was not taken while submissions were arriving"
    assert partial.responses == sum(partial.scores_per_response.values()) == sum(partial.audits_per_response.values())
    assert partial.completed_without_response == 0
    live, copied = rows_by_key(url), rows_by_key(snapshot)
    assert set(copied) == set(live)
    for table, rows in copied.items():
        differing = [key for key, row in rows.items() if live[table].get(key) != row]
        assert differing == [], f"{table}: {len(differing)} rows differ from the live database"

    # Quiet: the same counts and checksums as the live database, table by table.
    assert table_checksums(restore(url, tmp_path / "quiet.backup")) == table_checksums(url)
