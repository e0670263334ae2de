"""Every route in the URL map, walked as every kind of visitor.

Each endpoint must carry an access rule (``web.access.allow`` or ``OTHER_ENDPOINTS``); the
walk then checks that no role reaches a route its rule does not grant, and that the roles
it does grant get through. A clinician reaches another clinician's client only as a 404.

Two sites: ann's client C-1 is at North, bob's client C-2 at South. The supervisor (sue, at North,
supervising ann) and the site-limited administrator (nadia, at North) walk every route too, and no
page they reach shows anything of South.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from staff_support import PASSWORD, SRS_LOW, make_world, page_token, sign_in, web_export

from core.accounts import create_user
from core.api_keys import create_api_key
from core.export_jobs import start_export
from core.models import Alert, AuditEntry, CareSession, Client, KioskSession, User
from core.responses import create_assignment, submit_response
from core.sites import create_site, set_supervised, set_user_sites
from core.tokens import hash_token
from web.access import KIOSK_COOKIE, access_rule

ROLES = ("anonymous", "link", "clinician", "other_clinician", "supervisor", "auditor", "admin", "site_admin", "kiosk")
SIGNED_IN = {
    "clinician": "ann",
    "other_clinician": "bob",
    "supervisor": "sue",
    "auditor": "audrey",
    "admin": "admin",
    "site_admin": "nadia",
}
NORTH_ONLY = ("supervisor", "site_admin")  # limited to North: nothing of South (client C-2) may show
# Arguments that name something belonging to one client: only that client's clinicians reach it.
CLIENT_SCOPED = {"client_id", "episode_id", "session_id", "assignment_id", "alert_id", "response_id"}
# Public pages that exist only before the first account (tests/test_accounts.py covers them).
CLOSED_AFTER_SETUP = {"auth.setup", "auth.setup_info"}
# Changes only a portal-wide administrator makes: a site-limited one is refused (403).
PORTAL_WIDE_ONLY = {
    ("admin.site_list", "POST"),
    ("admin.user_sites", "POST"),
    ("admin.user_supervised", "POST"),
    ("admin.jobs", "GET"),  # jobs serve every site
}
# An export's pages open only for the administrator who started it (the walk's export is admin's, not nadia's).
STARTER_ONLY = {"admin.export_progress", "admin.download_export"}


def missing_rules(app: Any) -> list[str]:
    return sorted({rule.endpoint for rule in app.url_map.iter_rules() if access_rule(app, rule.endpoint) is None})


@pytest.fixture
def world(app, licensed_wording):
    world = make_world(app)
    state = app.extensions["rapportal"]
    with state.sessions.begin() as session:
        north = create_site(session, "North", actor="test", address=None)
        south = create_site(session, "South", actor="test", address=None)
        for name, role in (("sue", "supervisor"), ("nadia", "admin")):
            user = create_user(session, name, name.title(), role, PASSWORD, actor="test", address=None)
            world.users[name] = user.id
            set_user_sites(session, user, [north.id], actor="test", address=None)
            if role == "supervisor":
                set_supervised(session, user, [world.users["ann"]], actor="test", address=None)
        session.get(Client, world.other_client_id).site_id = south.id
        client = session.get(Client, world.client_id)
        client.site_id = north.id
        care = CareSession(episode_id=world.episode_id, number=1)
        session.add(care)
        session.flush()
        ors, link_token = create_assignment(
            session, state.engine, client, "ors", episode_id=world.episode_id, care_session_id=care.id
        )
        srs, _token = create_assignment(
            session, state.engine, client, "srs", episode_id=world.episode_id, care_session_id=care.id
        )
        answers = {key: float(value) for key, value in SRS_LOW.items()}
        submission = submit_response(session, state.engine, srs, answers)
        kiosk_token = "kiosk-token-for-the-access-test"
        session.add(
            KioskSession(
                token_hash=hash_token(kiosk_token),
                client_id=client.id,
                created_by=world.users["ann"],
                assignment_ids=[ors.id],
                expires_at=datetime.now(UTC) + timedelta(hours=1),
            )
        )
        session.flush()
        export = start_export(
            session, session.get(User, world.users["admin"]), state.jobs, exporter="csv", filters={}, address=None
        )
        alert_id = session.scalar(sa.select(Alert.id).where(Alert.response_id == submission.response_id))
        world.args = {
            "client_id": client.id,
            "episode_id": world.episode_id,
            "session_id": care.id,
            "assignment_id": ors.id,
            "alert_id": alert_id,
            "response_id": submission.response_id,
            "user_id": world.users["ann"],
            "filename": "rapportal.css",
            "export_id": export.id,
            "instrument_id": "ors",  # the JSON API's and the FHIR face's paths (refused without an API key)
            "resource": "ors",
            "key_id": create_api_key(session, owner="ann", name="", scopes="read", actor="test", address=None).key.id,
        }
        world.link_token = link_token
        world.kiosk_token = kiosk_token
    return world


def visitor(app: Any, role: str, world: Any) -> Any:
    client = app.test_client()
    if role in SIGNED_IN:
        assert sign_in(client, SIGNED_IN[role]).status_code == 302
    if role == "kiosk":
        client.set_cookie(KIOSK_COOKIE, world.kiosk_token)
    return client


def granted(rule_roles: tuple[str, ...], role: str, arguments: set[str]) -> bool:
    """Whether ``role`` should get through an endpoint with ``rule_roles`` and these URL arguments."""
    if "public" in rule_roles:
        return True
    if "kiosk" in rule_roles:
        return role == "kiosk"
    if role == "link":
        return "link" in rule_roles
    if role == "other_clinician":
        return "clinician" in rule_roles and not arguments & CLIENT_SCOPED
    if role == "site_admin":
        return "admin" in rule_roles  # the walk's records are all at North, the administrator's site
    return role in rule_roles


def reached(response: Any, endpoint: str, method: str) -> bool:
    if response.status_code in (401, 403, 404, 405):
        return False
    if endpoint.startswith("kiosk.") and method == "GET":
        # Without the kiosk cookie the page is the neutral locked page: reaching it shows nothing.
        return b'name="assignment"' in response.data
    if endpoint == "auth.home":
        return True  # its job is to send each visitor to their start page (the sign-in page, for some)
    return not (response.status_code in (301, 302, 303) and "/login" in (response.location or ""))


def test_every_route_has_an_access_rule(app):
    assert missing_rules(app) == [], "give these endpoints a rule: web.access.allow(...) or OTHER_ENDPOINTS"


def test_a_route_without_a_rule_is_caught_and_refused(app, world):
    app.add_url_rule("/admin/sneaky", endpoint="admin.sneaky", view_func=lambda: "secret")
    assert missing_rules(app) == ["admin.sneaky"]
    admin = visitor(app, "admin", world)
    assert admin.get("/admin/sneaky").status_code == 403


def test_each_role_reaches_exactly_what_its_rule_grants(app, world):
    visitors = {role: visitor(app, role, world) for role in ROLES}
    problems = []
    walked = 0
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        roles = access_rule(app, rule.endpoint)
        assert roles is not None, rule.endpoint
        arguments = set(rule.arguments)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            for role in ROLES:
                values = dict(world.args)
                values["token"] = world.link_token if role == "link" else "not-a-real-token-at-all"
                path = rule.build(values, append_unknown=False)[1]
                client = visitors[role]
                response = client.open(path, method=method, data={} if method == "POST" else None)
                walked += 1
                expected = granted(roles, role, arguments)
                if rule.endpoint in CLOSED_AFTER_SETUP:
                    expected = False
                if role == "site_admin" and (rule.endpoint, method) in PORTAL_WIDE_ONLY:
                    expected = False
                if role == "site_admin" and rule.endpoint in STARTER_ONLY:
                    expected = False
                if rule.endpoint.startswith("client.") and role != "link":
                    expected = False  # a wrong token opens nothing
                if reached(response, rule.endpoint, method) != expected:
                    problems.append(f"{method} {path} ({rule.endpoint}) as {role}: {response.status_code}")
                if role in NORTH_ONLY:
                    assert b"C-2" not in response.data, f"{method} {path} showed South's client to {role}"
                if rule.endpoint.startswith("kiosk.") and role != "kiosk":
                    assert b'name="assignment"' not in response.data, f"{rule.endpoint} showed a form to {role}"
    assert walked > 100
    assert problems == [], "\n".join(problems)


def test_auditor_sees_the_audit_trail_and_nothing_clinical(app, world):
    auditor = visitor(app, "auditor", world)
    assert auditor.get("/admin/audit").status_code == 200
    for path in ("/caseload", f"/clients/{world.client_id}", f"/responses/{world.args['response_id']}"):
        assert auditor.get(path).status_code == 403
    for path in ("/admin/users", "/admin/clients", "/admin/plugins", "/admin/exports"):
        assert auditor.get(path).status_code == 403


def test_administrator_sees_no_answers(app, world):
    admin = visitor(app, "admin", world)
    assert admin.get(f"/clients/{world.client_id}").status_code == 403
    assert admin.get(f"/responses/{world.args['response_id']}").status_code == 403
    assert "Client One" in admin.get("/admin/clients").text  # but manages the client list


def test_a_site_limited_administrator_sees_nothing_of_another_site(app, world):
    nadia, admin = visitor(app, "site_admin", world), visitor(app, "admin", world)
    assert "C-2" in admin.get("/admin/clients").text  # the portal-wide administrator does
    page = nadia.get("/admin/clients")
    assert "C-1" in page.text and "C-2" not in page.text
    assert nadia.get(f"/admin/clients/{world.other_client_id}").status_code == 404
    bob = visitor(app, "other_clinician", world)
    assert bob.get(f"/clients/{world.other_client_id}").status_code == 200  # an entry about C-2
    assert visitor(app, "clinician", world).get(f"/clients/{world.client_id}").status_code == 200  # and C-1
    trail = nadia.get("/admin/audit").text
    assert f"client:{world.other_client_id}<" not in trail and f"client:{world.client_id}<" in trail
    csv_rows = web_export(app, nadia, {"format": "csv"}).text
    assert "C-1" in csv_rows and "C-2" not in csv_rows


def test_a_supervisor_reads_their_clinicians_clients_and_changes_nothing(app, world):
    sue = visitor(app, "supervisor", world)
    page = sue.get(f"/clients/{world.client_id}")
    assert page.status_code == 200 and "<form" not in page.text.split("</header>", 1)[1]
    assert '<span class="site-name">North</span>' in page.text  # the clinic name comes from the site
    assert '<span class="site-name">Rapportal</span>' in visitor(app, "admin", world).get("/admin/users").text
    assert sue.get(f"/clients/{world.other_client_id}").status_code == 404
    token = page_token(sue, "/reports")
    refused = sue.post(f"/alerts/{world.args['alert_id']}/acknowledge", data={"csrf_token": token, "note": "seen"})
    assert refused.status_code == 403
    with app.extensions["rapportal"].sessions.begin() as session:
        assert session.get(Alert, world.args["alert_id"]).acknowledged_at is None
        views = session.scalars(
            sa.select(AuditEntry).where(AuditEntry.actor == "user:sue", AuditEntry.action == "client.view")
        ).all()
    assert [entry.target for entry in views] == [f"client:{world.client_id}"]


def test_outcome_reports_open_for_their_roles_and_download_as_csv(app, world):
    sue = visitor(app, "supervisor", world)
    page = sue.get("/reports", query_string={"scope": f"clinician:{world.users['ann']}", "since": "2020-01-01"})
    assert page.status_code == 200 and "Ann" in page.text
    assert "too few to report" in page.text
    assert sue.get("/reports", query_string={"scope": f"clinician:{world.users['bob']}"}).status_code == 404
    assert sue.get("/reports", query_string={"scope": "clinician:x"}).status_code == 422
    assert sue.get("/reports", query_string={"scope": "portal", "since": "2026-13-01"}).status_code == 422
    csv_file = sue.get("/reports/csv", query_string={"scope": f"clinician:{world.users['ann']}"})
    assert csv_file.mimetype == "text/csv" and csv_file.text.startswith("measure,instrument,figure")
    nadia = visitor(app, "site_admin", world)
    assert nadia.get("/reports", query_string={"scope": "portal"}).status_code == 404
    assert visitor(app, "auditor", world).get("/reports").status_code == 403
