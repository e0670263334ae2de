"""Helpers for the staff-side tests: accounts, a small caseload, signing in, CSRF tokens."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from core.accounts import create_user
from core.models import Client, Episode
from core.plans import BUILTIN_PLANS

PASSWORD = "a long test password"
ORS_ANSWERS = {"ors_1": "4.0", "ors_2": "5.0", "ors_3": "4.5", "ors_4": "5.0"}  # total 18.5
SRS_LOW = {"srs_1": "8.0", "srs_2": "8.0", "srs_3": "8.0", "srs_4": "8.0"}  # total 32: below 36


def csrf(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, "no CSRF token on the page"
    return found.group(1)


def links_on(html: str) -> dict[str, str]:
    """The questionnaire links on a links page, by instrument id (paths only)."""
    return {
        instrument: re.sub(r"^https?://[^/]+", "", url)
        for url, instrument in re.findall(r'value="(https?://[^"]+/a/[^"]+)" readonly data-link="([^"]+)"', html)
    }


@dataclass
class World:
    """Accounts and a client for the access and caseload tests."""

    users: dict[str, int] = field(default_factory=dict)
    client_id: int = 0
    other_client_id: int = 0
    episode_id: int = 0


def make_world(app: Any) -> World:
    """admin, auditor, clinician ``ann`` (client C-1), clinician ``bob`` (client C-2)."""
    world = World()
    with app.extensions["rapportal"].sessions.begin() as session:
        for name, role in (("admin", "admin"), ("audrey", "auditor"), ("ann", "clinician"), ("bob", "clinician")):
            world.users[name] = create_user(session, name, name.title(), role, PASSWORD, actor="test", address=None).id
        mine = Client(code="C-1", display_name="Client One", clinician_id=world.users["ann"])
        theirs = Client(code="C-2", clinician_id=world.users["bob"])
        session.add_all([mine, theirs])
        session.flush()
        episode = Episode(client_id=mine.id, plan_name="pcoms", plan=BUILTIN_PLANS["pcoms"][1])
        session.add(episode)
        session.add(Episode(client_id=theirs.id, plan_name="pcoms", plan=BUILTIN_PLANS["pcoms"][1]))
        session.flush()
        world.client_id, world.other_client_id, world.episode_id = mine.id, theirs.id, episode.id
    return world


def sign_in(client: Any, username: str, password: str = PASSWORD) -> Any:
    page = client.get("/login")
    return client.post("/login", data={"csrf_token": csrf(page.text), "username": username, "password": password})


def page_token(client: Any, path: str) -> str:
    page = client.get(path)
    assert page.status_code == 200, (path, page.status_code)
    return csrf(page.text)


def start_session(client: Any, episode_id: int, client_id: int) -> Any:
    """Press "Start session N" on the client page; returns the links page the redirect leads to."""
    page = client.get(f"/clients/{client_id}")
    assert page.status_code == 200, page.status_code
    number = re.search(r'name="number" value="(\d+)"', page.text)
    assert number, "no 'Start session' button on the client page"
    return client.post(
        f"/episodes/{episode_id}/sessions",
        data={"csrf_token": csrf(page.text), "number": number.group(1)},
        follow_redirects=True,
    )


def answer(app: Any, path: str, answers: dict[str, str]) -> Any:
    anonymous = app.test_client()
    page = anonymous.get(path)
    assert page.status_code == 200, page.text
    return anonymous.post(path, data={**answers, "csrf_token": csrf(page.text)})


def audit_actions(app: Any) -> list[tuple[str, str, str | None]]:
    from core.models import AuditEntry

    with app.extensions["rapportal"].sessions() as session:
        return [(e.actor, e.action, e.target) for e in session.scalars(sa.select(AuditEntry).order_by(AuditEntry.id))]


def web_export(app: Any, client: Any, data: dict[str, Any]) -> Any:
    """Start an export on the exports page, let a worker write it (in this process), and download it."""
    from web.state import job_context

    started = client.post("/admin/exports", data={"csrf_token": page_token(client, "/admin/exports"), **data})
    assert started.status_code == 303, (started.status_code, started.text)
    progress = started.headers["Location"]
    with app.app_context():
        app.extensions["rapportal"].jobs.run_until_idle(job_context(app))
    page = client.get(progress)
    assert page.status_code == 200
    link = re.search(r'href="([^"]+/download)"', page.text)
    assert link, page.text
    return client.get(link.group(1))
