"""The API served by gunicorn (`rapportal serve`) on loopback: schemathesis over every operation, and docs/api.md.

Schemathesis generates valid and invalid requests from the served OpenAPI document and checks that
no answer is a server error or strays from the document; a read-only key must be refused every
operation that changes something. Then every code block of docs/api.md runs against the same server.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance
from staff_support import ORS_ANSWERS, SRS_LOW, make_world
from test_api import make_key, run_flow
from test_production_support import Server

from core.db import make_db_engine
from core.instruments import placeholder_wording
from core.migrations import upgrade
from core.wording import install_wording
from web.api import openapi_document
from web.app import create_app

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "api.md"
ADMIN_OPERATIONS = {
    ("POST", "/api/v1/clients"),
    ("GET", "/api/v1/clients"),
    ("POST", "/api/v1/exports"),
    ("GET", "/api/v1/exports/{export_id}"),
    ("GET", "/api/v1/exports/{export_id}/file"),
}


class Live:
    def __init__(self, server: Server, url: str, instance: Path, keys: dict[str, str]) -> None:
        self.server, self.url, self.instance, self.keys = server, url, instance, keys

    @property
    def base(self) -> str:
        return self.server.base


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, module_db_url: str) -> Iterator[Live]:
    folder = tmp_path_factory.mktemp("api-live")
    url = module_db_url
    migrated = make_db_engine(url)
    upgrade(migrated)  # as `rapportal serve` would
    migrated.dispose()
    app = create_app({"TESTING": True, "SECRET_KEY": "seed", "DATABASE_URL": url, "LOAD_ENTRYPOINTS": False})
    state = app.extensions["rapportal"]
    with state.sessions.begin() as session:
        for instrument in state.engine.instruments:
            if not instrument.licence.wording_bundled:
                wording = placeholder_wording(instrument)
                wording["placeholder"] = False
                install_wording(session, state.engine, instrument.id, wording, actor="test")
    world = make_world(app)
    run_flow(app, world)  # a client with answered ORS and SRS and an open alert, so reads find something
    keys = {"ann": make_key(app, "ann"), "admin": make_key(app, "admin"), "read": make_key(app, "ann", "read")}
    state.db.dispose()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAPPORTAL_API_RATE_LIMIT", "1000000")
        server = Server(url, folder / "instance", workers=2).start()
    try:
        yield Live(server, url, folder / "instance", keys)
    finally:
        server.stop()


def _served_document() -> dict[str, Any]:
    """The document the server serves at /api/v1/openapi.json (the test below checks they are the same)."""
    app = create_app({"TESTING": True, "SECRET_KEY": "doc", "DATABASE_URL": "sqlite://", "LOAD_ENTRYPOINTS": False})
    with app.test_request_context():
        return openapi_document()


# Loaded here rather than from the live server: schemathesis's lazy fixture loader does not work with pytest 9.
schema = schemathesis.openapi.from_dict(_served_document())


def test_the_schema_tested_is_the_one_served(live: Live) -> None:
    assert requests.get(f"{live.base}/api/v1/openapi.json", timeout=30).json() == schema.raw_schema


def _key_for(live: Live, case: Any) -> str:
    operation = (case.operation.method.upper(), case.operation.path)
    return live.keys["admin"] if operation in ADMIN_OPERATIONS else live.keys["ann"]


@schema.parametrize()
@settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_operation_answers_as_documented_and_never_with_a_server_error(case: Any, live: Live) -> None:
    # Valid input may still be refused by the clinic's rules (an unknown id is 404, a session that is
    # not the next one 409): positive_data_acceptance would call that a failure, so it is left out.
    case.call_and_validate(
        base_url=live.base,
        headers={"Authorization": f"Bearer {_key_for(live, case)}"},
        excluded_checks=[positive_data_acceptance],
    )


@schema.include(method="POST").exclude(path_regex="/score$").parametrize()
@settings(max_examples=10, deadline=None, suppress_health_check=list(HealthCheck))
def test_a_read_only_key_is_refused_every_operation_that_changes_something(case: Any, live: Live) -> None:
    if case.method.upper() != case.operation.method.upper():
        return  # the coverage phase's probes of other methods (OPTIONS, TRACE, ...) change nothing either
    case.headers = {**(case.headers or {}), "Authorization": f"Bearer {live.keys['read']}"}
    response = case.call(base_url=live.base)
    # 404 only for a path no route matches (an id out of range): the key is checked before anything else
    assert response.status_code in (403, 404), (case.operation.path, response.status_code, response.text[:300])
    if response.status_code == 403:
        assert response.json()["errors"][0]["field"] == "scope"
    else:
        assert "not found on the server" in response.json()["detail"]


# -- docs/api.md, every block run against the served portal ----------------------------------------


def _blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOCS.read_text(encoding="utf-8"), flags=re.S)


def _answer_links(output: str, pending: set[str]) -> int:
    """Answer the questionnaire links in ``output`` and ``pending`` as a client would: ORS within range, SRS below
    its cutoff. A held end-of-session link stays in ``pending`` until a later block has released it."""
    answered = 0
    pending |= set(re.findall(r"https?://[^\s\"']+/a/[A-Za-z0-9_-]+", output))
    for link in sorted(pending):
        browser = requests.Session()
        page = browser.get(link, timeout=30)
        assert page.status_code == 200, page.text[:300]
        if "comes at the end of the session" in page.text:
            continue
        pending.discard(link)
        token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
        answers = ORS_ANSWERS if 'name="ors_1"' in page.text else SRS_LOW
        assert browser.post(link, data={**answers, "csrf_token": token}, timeout=30).status_code == 200
        answered += 1
    return answered


def _cli_env(live: Live) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        BASE=live.base,
        RAPPORTAL_DATABASE_URL=live.url,
        RAPPORTAL_INSTANCE_PATH=str(live.instance),
        RAPPORTAL_LOAD_ENTRYPOINTS="false",
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
    )
    return env


def test_every_curl_and_python_example_in_docs_api_md_runs(live: Live, tmp_path: Path) -> None:
    shell, python = _blocks("sh"), _blocks("python")
    assert len(shell) >= 4 and len(python) >= 3
    env, state = _cli_env(live), tmp_path / "state.sh"
    state.write_text("")
    answered, pending = 0, set()
    for block in shell:
        script = f"set -euo pipefail -o allexport\nsource {state}\n{block}\nexport -p > {state}\n"
        done = subprocess.run(
            ["bash", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, (block, done.stdout[-2000:], done.stderr[-2000:])
        answered += _answer_links(done.stdout, pending)
    assert answered == 2 and not pending
    assert '"acknowledged_at"' in done.stdout and '"changed":true' in done.stdout.replace(" ", "")
    exported = subprocess.run(
        ["bash", "-c", f"source {state}; echo $ADMIN_KEY; echo $KEY"], env=env, capture_output=True, text=True
    ).stdout.split()
    os_env = {"BASE": live.base, "ADMIN_KEY": exported[0], "KEY": exported[1]}
    namespace: dict[str, Any] = {}
    answered, pending = 0, set()
    with pytest.MonkeyPatch.context() as patch:
        for name, value in os_env.items():
            patch.setenv(name, value)
        for block in python:
            out = io.StringIO()
            with contextlib.redirect_stdout(out):
                exec(compile(block, str(DOCS), "exec"), namespace)  # the documentation's own example
            answered += _answer_links(out.getvalue(), pending)
    assert answered == 2 and not pending
    assert namespace["done"].json()["changed"] is True
