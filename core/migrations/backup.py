"""Online, consistent backups: SQLite's backup API, or ``pg_dump`` for PostgreSQL.

Both copy a single snapshot while the portal keeps taking answers: a submission is either
wholly in the backup (response, scores, alerts, audit entry) or not at all.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

import sqlalchemy as sa


class BackupError(Exception):
    """The backup could not be written; nothing was left at the destination."""


def backup_database(url: str, destination: Path) -> Path:
    """Write a consistent backup of the database at ``url`` to ``destination`` (replaced atomically)."""
    destination = destination.resolve()
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(f".{destination.name}.{os.getpid()}.partial")
    parsed = sa.make_url(url)
    try:
        if parsed.get_backend_name() == "sqlite":
            _backup_sqlite(parsed, partial, destination)
        elif parsed.get_backend_name() == "postgresql":
            _backup_postgresql(parsed, partial)
        else:
            raise BackupError(f"no backup method for {parsed.get_backend_name()} databases")
        os.replace(partial, destination)
    finally:
        partial.unlink(missing_ok=True)
    return destination


def _backup_sqlite(url: sa.URL, partial: Path, destination: Path) -> None:
    if not url.database or url.database == ":memory:":
        raise BackupError("an in-memory database cannot be backed up")
    source_path = Path(url.database).resolve()
    if not source_path.is_file():
        raise BackupError(f"{source_path}: no such database file")
    if source_path == destination:
        raise BackupError("the backup file cannot be the database itself")
    source = sqlite3.connect(source_path, timeout=30)
    target = sqlite3.connect(partial)
    try:
        # pages=-1 copies every page in one step under one read transaction: a consistent
        # snapshot that does not block writers (WAL).
        source.backup(target, pages=-1)
        target.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
        result = target.execute("PRAGMA integrity_check").fetchone()[0]
        if result != "ok":
            raise BackupError(f"the backup failed its integrity check: {result}")
        target.commit()
    finally:
        target.close()
        source.close()
    with open(partial, "rb") as handle:
        os.fsync(handle.fileno())


def libpq_arguments(url: sa.URL) -> tuple[list[str], dict[str, str]]:
    """Connection arguments for PostgreSQL's own tools, with the password in the environment (not argv)."""
    env = dict(os.environ)
    if url.password:
        env["PGPASSWORD"] = str(url.password)
    conninfo = url.set(drivername="postgresql", password=None).render_as_string(hide_password=False)
    return ["--dbname", conninfo], env


def _search_path_schema(url: sa.URL) -> str | None:
    """The schema named by ``?options=-csearch_path=NAME`` (a portal kept in its own schema)."""
    options = url.query.get("options")
    if not options:
        return None
    for option in options if isinstance(options, tuple) else (options,):
        for part in str(option).split():
            if part.startswith("-csearch_path="):
                return part.split("=", 1)[1].split(",")[0]
    return None


def _backup_postgresql(url: sa.URL, partial: Path) -> None:
    pg_dump = shutil.which("pg_dump")
    if pg_dump is None:
        raise BackupError("pg_dump is not installed (Debian: apt-get install postgresql-client)")
    connection, env = libpq_arguments(url)
    command = [pg_dump, "--format=custom", "--no-owner", "--no-privileges", "--file", str(partial), *connection]
    schema = _search_path_schema(url)
    if schema:
        command += ["--schema", schema]
    # pg_dump reads one snapshot (repeatable read) and takes only share locks: online and consistent.
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise BackupError(f"pg_dump failed: {done.stderr.strip()}")
