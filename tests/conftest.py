"""Shared fixtures: the Flask trio (app, client, runner), a bare engine, and throwaway plugins."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from core import Engine, build_engine
from web import create_app

PLACEHOLDER = "[PLACEHOLDER wording for tests: not the licensed text]"


def database_url(tmp_path: Path) -> str:
    """SQLite in the test's folder, or the server named by RAPPORTAL_TEST_DATABASE_URL."""
    return os.environ.get("RAPPORTAL_TEST_DATABASE_URL") or f"sqlite:///{tmp_path / 'test.db'}"


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


def placeholder_wording(instrument: Any) -> dict[str, Any]:
    """A clearly marked placeholder wording file for a licensed instrument (tests and demos only)."""
    items = {}
    for item in instrument.items:
        entry: dict[str, Any] = {"text": f"{PLACEHOLDER} {item.topic}"}
        if item.widget == "vas":
            entry["anchors"] = ["[PLACEHOLDER low end]", "[PLACEHOLDER high end]"]
        items[item.id] = entry
    return {"instrument": instrument.id, "language": "en", "stem": PLACEHOLDER, "items": items}


@pytest.fixture
def licensed_wording(app: Any) -> None:
    """Install placeholder wording for every licensed built-in instrument."""
    eng = app.extensions["rapportal"].engine
    for instrument in eng.instruments:
        if not instrument.licence.wording_bundled:
            eng.install_wording(instrument.id, placeholder_wording(instrument))


def write_json(path: Path, document: Any) -> Path:
    path.write_text(json.dumps(document), encoding="utf-8")
    return path
