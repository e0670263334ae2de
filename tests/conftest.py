"""Shared fixtures: the Flask trio (app, client, runner), a bare engine, and throwaway plugins."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from core import Engine, build_engine
from core.db import make_db_engine
from core.instruments import placeholder_wording
from core.wording import install_wording
from web import create_app


def database_url(tmp_path: Path) -> str:
    """SQLite in the test's folder, or a fresh schema on the server named by RAPPORTAL_TEST_DATABASE_URL.

    On PostgreSQL each call creates an empty schema and points the URL's search_path at it; the
    schemas are dropped when the session ends (and left-overs of a killed run when the next starts).
    """
    server = os.environ.get("RAPPORTAL_TEST_DATABASE_URL")
    if not server:
        return f"sqlite:///{tmp_path / 'test.db'}"
    schema = f"{_TEST_SCHEMA_PREFIX}{os.getpid()}_{len(_test_schemas)}"
    with _admin_engine(server).begin() as connection:
        connection.exec_driver_sql(f"CREATE SCHEMA {schema}")
    _test_schemas.append(schema)
    url = sa.make_url(server.replace("postgresql://", "postgresql+psycopg://", 1))
    return url.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(hide_password=False)


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    """A fresh, empty database for this test on the pass's backend (see :func:`database_url`)."""
    return database_url(tmp_path)


@pytest.fixture(scope="module")
def module_db_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One fresh database shared by a module's tests (a served portal that several tests use)."""
    return database_url(tmp_path_factory.mktemp("db"))


_TEST_SCHEMA_PREFIX = "rt_test_"
_test_schemas: list[str] = []
_admin_engines: dict[str, sa.Engine] = {}


def _admin_engine(server: str) -> sa.Engine:
    if server not in _admin_engines:
        _admin_engines[server] = make_db_engine(server, poolclass=sa.NullPool)
    return _admin_engines[server]


def _drop_test_schemas(server: str, names: list[str]) -> None:
    for name in names:  # one transaction each: dropping hundreds at once exhausts the lock table
        with _admin_engine(server).begin() as connection:
            connection.exec_driver_sql(f"DROP SCHEMA IF EXISTS {name} CASCADE")


@pytest.fixture(scope="session", autouse=True)
def _postgres_test_schemas() -> Iterator[None]:
    """Drop the per-test PostgreSQL schemas at the end (and a killed run's left-overs at the start)."""
    server = os.environ.get("RAPPORTAL_TEST_DATABASE_URL")
    if not server:
        yield
        return
    with _admin_engine(server).connect() as connection:
        stale = connection.scalars(
            sa.text("SELECT nspname FROM pg_namespace WHERE nspname LIKE :prefix"),
            {"prefix": _TEST_SCHEMA_PREFIX + "%"},
        ).all()
    _drop_test_schemas(server, [name for name in stale if _schema_owner_gone(name)])
    yield
    _drop_test_schemas(server, _test_schemas)
    _admin_engine(server).dispose()


def _schema_owner_gone(schema: str) -> bool:
    """A schema left by a test process that no longer runs (the pid is part of its name)."""
    pid = int(schema[len(_TEST_SCHEMA_PREFIX) :].split("_")[0])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return pid == os.getpid()


@pytest.fixture
def engine() -> Engine:
    """An engine with the built-in plugins only (no installed entry points)."""
    return build_engine(load_entrypoints=False)


@pytest.fixture
def app_config(tmp_path: Path) -> dict[str, Any]:
    return {
        "TESTING": True,
        "SECRET_KEY": "test-secret-key",
        "DATABASE_URL": database_url(tmp_path),
        "LOAD_ENTRYPOINTS": False,
        "CREATE_SCHEMA": True,  # fast path; tests/test_migrations.py checks that it matches the migrations
    }


@pytest.fixture
def app(app_config: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.setenv("RAPPORTAL_INSTANCE_PATH", str(tmp_path / "instance"))
    app = create_app(app_config)
    yield app
    app.extensions["rapportal"].db.dispose()


@pytest.fixture
def client(app: Any) -> Any:
    return app.test_client()


@pytest.fixture
def runner(app: Any) -> Any:
    return app.test_cli_runner()


@pytest.fixture
def licensed_wording(app: Any) -> None:
    """Install real-looking (not placeholder-flagged) test wording for every licensed built-in instrument."""
    state = app.extensions["rapportal"]
    with state.sessions.begin() as session:
        for instrument in state.engine.instruments:
            if not instrument.licence.wording_bundled:
                wording = placeholder_wording(instrument)
                wording["placeholder"] = False  # lets tests send them like a clinic with a licence
                install_wording(session, state.engine, instrument.id, wording, actor="test")


def write_json(path: Path, document: Any) -> Path:
    path.write_text(json.dumps(document), encoding="utf-8")
    return path
