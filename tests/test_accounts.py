"""Accounts: first-start setup, sign-in, throttling, sessions and their ends, cookies, CSRF."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from staff_support import PASSWORD, audit_actions, csrf, make_world, page_token, sign_in

from core.accounts import setup_token
from core.models import User, UserSession


@pytest.fixture
def world(app):
    return make_world(app)


def _sessions(app, username):
    with app.extensions["rapportal"].sessions() as session:
        return session.scalars(
            sa.select(UserSession).join(User).where(User.username == username).order_by(UserSession.id)
        ).all()


# -- first start -----------------------------------------------------------------


def test_first_start_sends_visitors_to_the_setup_page(client):
    response = client.get("/")
    assert response.status_code == 302 and response.location.endswith("/setup")
    assert "rapportal setup-link" in client.get("/setup").text


def test_setup_link_creates_the_first_administrator_and_signs_in(app, client):
    path = f"/setup/{setup_token(app.config['SECRET_KEY'])}"
    token = csrf(client.get(path).text)
    response = client.post(
        path, data={"csrf_token": token, "username": "Boss", "password": PASSWORD, "confirm": PASSWORD}
    )
    assert response.status_code == 302 and response.location.endswith("/admin/users")
    assert client.get("/admin/users").status_code == 200
    with app.extensions["rapportal"].sessions() as session:
        boss = session.scalar(sa.select(User))
    assert boss.username == "boss" and boss.role == "admin"
    assert boss.password_hash.startswith("$argon2id$")
    assert ("setup", "user.create", f"user:{boss.id}") in audit_actions(app)


def test_setup_link_stops_working_once_an_account_exists(app, client, world):
    assert client.get(f"/setup/{setup_token(app.config['SECRET_KEY'])}").status_code == 404
    assert client.get("/setup").status_code == 404


def test_a_wrong_setup_token_is_not_found(client):
    assert client.get("/setup/not-the-token").status_code == 404


def test_setup_names_the_field_of_a_short_password(app, client):
    path = f"/setup/{setup_token(app.config['SECRET_KEY'])}"
    token = csrf(client.get(path).text)
    response = client.post(
        path, data={"csrf_token": token, "username": "boss", "password": "short", "confirm": "short"}
    )
    assert response.status_code == 422
    assert "Use at least 12 characters." in response.text


def test_setup_link_cli_prints_the_link_and_refuses_later(app, runner):
    result = runner.invoke(args=["setup-link", "--base-url", "http://clinic.example"])
    assert result.exit_code == 0
    assert f"http://clinic.example/setup/{setup_token(app.config['SECRET_KEY'])}" in result.output
    runner.invoke(args=["create-user", "boss", "--role", "admin", "--password", PASSWORD])
    result = runner.invoke(args=["setup-link"])
    assert result.exit_code == 1 and "accounts exist already" in result.output


def test_create_user_cli_refuses_a_short_password_naming_the_field(runner):
    result = runner.invoke(args=["create-user", "boss", "--role", "admin", "--password", "short"])
    assert result.exit_code == 1 and "password:" in result.output


# -- sign-in -----------------------------------------------------------------------


def test_sign_in_sets_a_server_side_session_cookie(app, client, world):
    response = sign_in(client, "ann")
    assert response.status_code == 302 and response.location.endswith("/caseload")
    cookie = response.headers["Set-Cookie"]
    assert "rapportal_session=" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert "Secure" not in cookie  # plain HTTP in the test client; COOKIE_SECURE=auto
    token = cookie.split("rapportal_session=")[1].split(";")[0]
    stored = _sessions(app, "ann")[-1]
    assert stored.token_hash != token and len(stored.token_hash) == 64  # only the hash is kept


def test_cookie_is_secure_over_https(client, world):
    page = client.get("/login", base_url="https://localhost")
    response = client.post(
        "/login",
        data={"csrf_token": csrf(page.text), "username": "ann", "password": PASSWORD},
        base_url="https://localhost",
    )
    assert "Secure" in response.headers["Set-Cookie"]


def test_unknown_user_and_wrong_password_get_the_same_answer(app, client, world):
    unknown = sign_in(client, "nobody", PASSWORD)
    wrong = sign_in(client, "ann", "not the password at all")
    assert unknown.status_code == wrong.status_code == 401

    def shown(response, typed):
        return re.sub(r'name="csrf_token" value="[^"]+"', "", response.text).replace(typed, "X")

    assert shown(unknown, "nobody") == shown(wrong, "ann")
    actions = [a for _actor, a, _t in audit_actions(app)]
    assert actions.count("login.failure") == 2


def test_deactivated_account_cannot_sign_in(app, client, world):
    with app.extensions["rapportal"].sessions.begin() as session:
        session.get(User, world.users["ann"]).active = False
    assert sign_in(client, "ann").status_code == 401


def test_sign_in_is_throttled_per_account(app, client, world):
    for _ in range(app.config["LOGIN_LIMIT_PER_ACCOUNT"]):
        assert sign_in(client, "ann", "wrong password here").status_code == 401
    response = sign_in(client, "ann")  # even the right password waits now
    assert response.status_code == 429
    assert "login.throttled" in [a for _actor, a, _t in audit_actions(app)]


def test_sign_in_is_throttled_per_address(app, client, world):
    app.config["LOGIN_LIMIT_PER_ADDRESS"] = 3
    for name in ("x1", "x2", "x3"):
        assert sign_in(client, name, "wrong password here").status_code == 401
    assert sign_in(client, "bob").status_code == 429


def test_sign_in_without_csrf_token_is_refused(client, world):
    client.get("/login")
    response = client.post("/login", data={"username": "ann", "password": PASSWORD})
    assert response.status_code == 400
    assert "could not be verified" in response.text


def test_sign_in_redirects_only_to_local_pages(client, world):
    page = client.get("/login")
    response = client.post(
        "/login?next=//evil.example/x",
        data={"csrf_token": csrf(page.text), "username": "ann", "password": PASSWORD},
    )
    assert response.location.endswith("/caseload")


# -- sessions end --------------------------------------------------------------------


def test_logout_ends_the_session_on_the_server(app, client, world):
    sign_in(client, "ann")
    cookie = client.get_cookie("rapportal_session").value
    token = page_token(client, "/caseload")
    assert client.post("/logout", data={"csrf_token": token}).status_code == 302
    assert _sessions(app, "ann")[-1].end_reason == "logout"
    replay = app.test_client()
    replay.set_cookie("rapportal_session", cookie)
    assert replay.get("/caseload").status_code == 302  # the old cookie opens nothing


def test_logout_needs_csrf(client, world):
    sign_in(client, "ann")
    assert client.post("/logout", data={}).status_code == 400
    assert client.get("/caseload").status_code == 200


def test_idle_session_ends(app, client, world):
    sign_in(client, "ann")
    with app.extensions["rapportal"].sessions.begin() as session:
        found = session.scalars(sa.select(UserSession)).all()[-1]
        found.last_seen_at = datetime.now(UTC) - timedelta(minutes=app.config["SESSION_IDLE_MINUTES"] + 1)
    assert client.get("/caseload").status_code == 302
    assert _sessions(app, "ann")[-1].end_reason == "idle_timeout"


def test_session_ends_after_the_absolute_timeout_even_when_active(app, client, world):
    sign_in(client, "ann")
    with app.extensions["rapportal"].sessions.begin() as session:
        found = session.scalars(sa.select(UserSession)).all()[-1]
        found.created_at = datetime.now(UTC) - timedelta(hours=app.config["SESSION_ABSOLUTE_HOURS"], minutes=1)
    assert client.get("/caseload").status_code == 302
    assert _sessions(app, "ann")[-1].end_reason == "absolute_timeout"


def test_changing_the_password_ends_other_sessions(app, world):
    laptop, tablet = app.test_client(), app.test_client()
    sign_in(laptop, "ann")
    sign_in(tablet, "ann")
    token = page_token(laptop, "/account/password")
    new = "another long password"
    response = laptop.post(
        "/account/password", data={"csrf_token": token, "current": PASSWORD, "password": new, "confirm": new}
    )
    assert response.status_code == 302
    assert laptop.get("/caseload").status_code == 200  # this browser got a new session
    assert tablet.get("/caseload").status_code == 302  # the other one is signed out
    assert sign_in(app.test_client(), "ann", new).status_code == 302


def test_password_change_needs_the_current_password(client, world):
    sign_in(client, "ann")
    token = page_token(client, "/account/password")
    response = client.post(
        "/account/password",
        data={"csrf_token": token, "current": "wrong", "password": "x" * 12, "confirm": "x" * 12},
    )
    assert response.status_code == 422 and "not your current password" in response.text


def test_admin_password_reset_signs_the_person_out(app, world):
    ann, admin = app.test_client(), app.test_client()
    sign_in(ann, "ann")
    sign_in(admin, "admin")
    path = f"/admin/users/{world.users['ann']}"
    token = page_token(admin, path)
    response = admin.post(
        path,
        data={"csrf_token": token, "display_name": "Ann", "role": "clinician", "active": "y", "password": "x" * 14},
    )
    assert response.status_code == 302
    assert ann.get("/caseload").status_code == 302


def test_the_last_administrator_cannot_be_deactivated(app, client, world):
    sign_in(client, "admin")
    path = f"/admin/users/{world.users['admin']}"
    token = page_token(client, path)
    response = client.post(path, data={"csrf_token": token, "display_name": "Admin", "role": "admin"})
    assert response.status_code == 422 and "last active administrator" in response.text


def test_admin_creates_accounts_and_names_a_taken_username(app, client, world):
    sign_in(client, "admin")
    token = page_token(client, "/admin/users")
    data = {"csrf_token": token, "username": "cleo", "display_name": "Cleo", "role": "clinician", "password": PASSWORD}
    assert client.post("/admin/users", data=data).status_code == 302
    again = client.post("/admin/users", data=data)
    assert again.status_code == 422 and "This username is taken." in again.text
    bad_role = client.post("/admin/users", data={**data, "username": "dora", "role": "superuser"})
    assert bad_role.status_code == 422 and "Not a valid choice" in bad_role.text
