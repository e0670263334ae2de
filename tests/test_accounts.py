"""Accounts: first-start setup, sign-in and its backoff, sessions and their ends, cookies, CSRF, account changes.

The core functions (``sign_in``, ``update_user``, ``clear_sign_in_throttle``) are tested with an explicit
``now`` instead of sleeping; the pages and commands around them are tested through the test client and runner.
"""

from __future__ import annotations

import json
import re
import threading
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa
from staff_support import PASSWORD, audit_actions, csrf, make_world, page_token, sign_in

from core import accounts
from core.accounts import (
    AccountError,
    SignIn,
    SignInLimits,
    SignInRefused,
    clear_sign_in_throttle,
    create_user,
    setup_token,
    throttle_address,
    update_user,
    user_by_username,
)
from core.models import AuditEntry, User, UserSession
from core.tokens import hash_token


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
    assert response.status_code == 303 and response.location.endswith("/admin/users")
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


def at_address(app, address):
    """A test client whose requests come from ``address``."""
    browser = app.test_client()
    browser.environ_base["REMOTE_ADDR"] = address
    return browser


def test_a_streak_of_wrong_passwords_makes_the_next_try_from_that_address_wait(app, client, world):
    for _ in range(app.config["LOGIN_FREE_FAILURES"] + 1):
        assert sign_in(client, "ann", "wrong password here").status_code == 401
    response = sign_in(client, "ann")  # even the right password waits now
    assert response.status_code == 429
    assert response.headers["Retry-After"] in ("1", "2")  # the first wait is 2 seconds
    assert re.search(r"Please wait [12] seconds? and try again", response.text)
    assert "login.throttled" in [a for _actor, a, _t in audit_actions(app)]


def test_an_attackers_failures_stop_neither_the_owner_elsewhere_nor_others_at_the_attackers_address(app, world):
    attacker = at_address(app, "203.0.113.9")
    answers = [sign_in(attacker, "admin", f"guess number {n:02}").status_code for n in range(30)]
    assert answers[: app.config["LOGIN_FREE_FAILURES"] + 1] == [401] * (app.config["LOGIN_FREE_FAILURES"] + 1)
    assert answers[-1] == 429  # the attacker is slowed down ...
    assert sign_in(attacker, "admin").status_code == 429  # ... even with the right password
    assert sign_in(at_address(app, "198.51.100.7"), "admin").status_code == 302  # the owner elsewhere is not
    assert sign_in(at_address(app, "203.0.113.9"), "ann").status_code == 302  # nor a colleague behind the same NAT


def test_an_address_failing_on_many_accounts_waits_for_every_account_there(app, world):
    app.config["LOGIN_ADDRESS_FREE_FAILURES"] = 3
    sprayer = at_address(app, "203.0.113.9")
    for name in ("x1", "x2", "x3", "x4"):
        assert sign_in(sprayer, name, "wrong password here").status_code == 401
    assert sign_in(sprayer, "bob").status_code == 429
    assert sign_in(at_address(app, "198.51.100.7"), "bob").status_code == 302


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
    assert response.status_code == 303
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


# -- core: signing in and its backoff ------------------------------------------------

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
HOME, AWAY = "198.51.100.7", "203.0.113.9"
WRONG = "wrong password here"


def attempt(app, username, address, when, password=WRONG):
    """One sign-in through core, committed as the sign-in page commits it: a SignIn or the SignInRefused."""
    with app.extensions["rapportal"].sessions() as session:
        try:
            result = accounts.sign_in(
                session, username, password, address, when, limits=SignInLimits.from_settings(app.config)
            )
        except SignInRefused as refused:
            result = refused
        session.commit()
    return result


def fail(app, username, address, when, times=1):
    """``times`` failed sign-ins, each as soon as the waits allow; returns when the last one was made."""
    for _ in range(times):
        result = attempt(app, username, address, when)
        if result.reason == "throttled":
            when += timedelta(seconds=result.retry_after)
            result = attempt(app, username, address, when)
        assert result.reason == "credentials", result
    return when


def entries(app, action):
    with app.extensions["rapportal"].sessions() as session:
        return session.scalars(sa.select(AuditEntry).where(AuditEntry.action == action).order_by(AuditEntry.id)).all()


def test_sign_in_returns_the_person_and_a_token_of_which_only_the_hash_is_stored(app, world):
    result = attempt(app, " Ann", HOME, T0, PASSWORD)
    assert isinstance(result, SignIn) and result.user.username == "ann"
    assert _sessions(app, "ann")[-1].token_hash == hash_token(result.token)
    assert ("user:ann", "login.success", f"user:{world.users['ann']}") in audit_actions(app)


def test_a_wrong_password_an_unknown_name_and_an_inactive_account_are_refused_alike(app, world):
    with app.extensions["rapportal"].sessions.begin() as session:
        session.get(User, world.users["bob"]).active = False
    for name, password in (("ann", WRONG), ("nobody", PASSWORD), ("bob", PASSWORD)):
        refused = attempt(app, name, HOME, T0, password)
        assert (refused.reason, refused.retry_after) == ("credentials", 0)
    assert [e.detail["username"] for e in entries(app, "login.failure")] == ["ann", "(no such account)", "bob"]


def test_the_wait_doubles_after_the_free_failures_and_the_try_after_it_is_let_through(app, world):
    fail(app, "ann", HOME, T0, times=app.config["LOGIN_FREE_FAILURES"])
    when, waits = T0, []
    for _ in range(5):
        assert attempt(app, "ann", HOME, when).reason == "credentials"  # let through: the wait is over
        early = attempt(app, "ann", HOME, when, PASSWORD)
        assert early.reason == "throttled"  # even the right password waits
        waits.append(early.retry_after)
        when += timedelta(seconds=early.retry_after)
    assert waits == [2, 4, 8, 16, 32]
    assert isinstance(attempt(app, "ann", HOME, when, PASSWORD), SignIn)
    assert len(entries(app, "login.throttled")) == 5


def test_tries_during_the_wait_neither_check_the_password_nor_lengthen_the_wait(app, world):
    fail(app, "ann", HOME, T0, times=app.config["LOGIN_FREE_FAILURES"] + 1)  # now 2 seconds to wait
    shown = [attempt(app, "ann", HOME, T0 + timedelta(milliseconds=ms), PASSWORD) for ms in (0, 500, 1000, 1500)]
    assert [(r.reason, r.retry_after) for r in shown] == [("throttled", 2), ("throttled", 2)] + [("throttled", 1)] * 2
    assert isinstance(attempt(app, "ann", HOME, T0 + timedelta(seconds=2), PASSWORD), SignIn)


def test_the_wait_for_one_account_at_one_address_is_capped(app, world):
    app.config.update(LOGIN_FREE_FAILURES=1, LOGIN_MAX_WAIT_SECONDS=60)
    last = fail(app, "ann", HOME, T0, times=1 + 7)  # uncapped: 128 s
    assert attempt(app, "ann", HOME, last, PASSWORD).retry_after == 60


def test_parallel_guesses_cannot_all_pass_one_check(app, world):
    fail(app, "ann", HOME, T0, times=app.config["LOGIN_FREE_FAILURES"])  # the next failure earns a wait
    results = []
    threads = [
        threading.Thread(target=lambda n=n: results.append(attempt(app, "ann", HOME, T0, f"parallel guess {n}")))
        for n in range(6)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(r.reason for r in results) == ["credentials"] + ["throttled"] * 5


def test_a_success_clears_the_wait_of_its_own_address_only(app, world):
    free = app.config["LOGIN_FREE_FAILURES"] = 2
    fail(app, "ann", HOME, T0, times=free + 1)
    fail(app, "ann", AWAY, T0, times=free + 1)
    assert isinstance(attempt(app, "ann", HOME, T0 + timedelta(seconds=2), PASSWORD), SignIn)
    later = T0 + timedelta(seconds=2)
    assert [attempt(app, "ann", HOME, later).reason for _ in range(free + 2)] == ["credentials"] * (free + 1) + [
        "throttled"
    ]  # the free failures again, as for a fresh start
    fail(app, "ann", AWAY, later, times=1)
    assert attempt(app, "ann", AWAY, later, PASSWORD).retry_after == 4  # this address kept its count


def test_the_account_wide_wait_holds_many_addresses_back_for_a_few_seconds_at_most(app, world):
    app.config["LOGIN_ACCOUNT_FREE_FAILURES"] = 4
    when = T0
    for n in range(app.config["LOGIN_ACCOUNT_FREE_FAILURES"] + 5):  # one guess each from many addresses
        when = fail(app, "admin", f"192.0.2.{n}", when)
    owner = attempt(app, "admin", HOME, when, PASSWORD)
    assert (owner.reason, owner.retry_after) == ("throttled", app.config["LOGIN_ACCOUNT_MAX_WAIT_SECONDS"])
    assert isinstance(attempt(app, "admin", HOME, when + timedelta(seconds=owner.retry_after), PASSWORD), SignIn)


def test_an_address_trying_many_accounts_is_slowed_for_a_minute_at_most(app, world):
    app.config["LOGIN_ADDRESS_FREE_FAILURES"] = 4
    when = T0
    for n in range(4 + 6):
        when = fail(app, f"sprayed{n}", AWAY, when)
    refused = attempt(app, "bob", AWAY, when, PASSWORD)
    assert (refused.reason, refused.retry_after) == ("throttled", app.config["LOGIN_ADDRESS_MAX_WAIT_SECONDS"])
    assert isinstance(attempt(app, "bob", HOME, when, PASSWORD), SignIn)  # other addresses are not slowed
    assert isinstance(attempt(app, "bob", AWAY, when + timedelta(seconds=refused.retry_after), PASSWORD), SignIn)


def test_a_counter_quiet_for_the_forget_time_starts_again(app, world):
    free = app.config["LOGIN_FREE_FAILURES"] = 2
    last = fail(app, "ann", HOME, T0, times=free + 3)  # 8 seconds to wait now
    later = last + timedelta(seconds=app.config["LOGIN_FORGET_SECONDS"])
    assert [attempt(app, "ann", HOME, later).reason for _ in range(free + 2)] == ["credentials"] * (free + 1) + [
        "throttled"
    ]


@pytest.mark.parametrize(
    ("address", "counted_as"),
    [
        ("198.51.100.7", "198.51.100.7"),
        ("2001:db8:1:2:aaaa:bbbb:cccc:dddd", "2001:db8:1:2::/64"),
        ("::ffff:198.51.100.7", "198.51.100.7"),
        ("not an address", "not an address"),
        (None, "unknown"),
    ],
)
def test_the_throttle_counts_an_ipv6_client_by_its_64(address, counted_as):
    assert throttle_address(address) == counted_as


def test_an_ipv6_clients_failures_count_for_its_whole_64(app, world):
    fail(app, "ann", "2001:db8:1:2::10", T0, times=app.config["LOGIN_FREE_FAILURES"] + 1)
    assert attempt(app, "ann", "2001:db8:1:2:ffff::1", T0, PASSWORD).reason == "throttled"
    assert isinstance(attempt(app, "ann", "2001:db8:1:3::10", T0, PASSWORD), SignIn)


def test_clearing_an_accounts_waits_lets_it_try_at_once_from_every_address_and_is_audited(app, world):
    free = app.config["LOGIN_FREE_FAILURES"] = 1
    for name, address in (("ann", HOME), ("ann", AWAY), ("bob", HOME)):
        fail(app, name, address, T0, times=free + 1)
    with app.extensions["rapportal"].sessions.begin() as session:
        cleared = clear_sign_in_throttle(session, session.get(User, world.users["ann"]), "user:admin", "192.0.2.1")
    assert cleared == 3  # the two addresses and the account
    assert isinstance(attempt(app, "ann", HOME, T0, PASSWORD), SignIn)
    assert isinstance(attempt(app, "ann", AWAY, T0, PASSWORD), SignIn)
    assert attempt(app, "bob", HOME, T0, PASSWORD).reason == "throttled"  # another account keeps its wait
    (entry,) = entries(app, "user.unlock")
    assert (entry.actor, entry.target, entry.address, entry.detail) == (
        "user:admin",
        f"user:{world.users['ann']}",
        "192.0.2.1",
        {"counters": 3},
    )


# -- core: changing accounts -----------------------------------------------------------


def edit(app, user_id, **changes):
    """``update_user`` with the account's present values overridden by ``changes``; committed unless refused."""
    with app.extensions["rapportal"].sessions.begin() as session:
        user = session.get(User, user_id)
        values = {"display_name": user.display_name, "role": user.role, "active": user.active} | changes
        return update_user(session, user, **values, actor="user:admin", address="192.0.2.1")


def test_update_user_changes_the_fields_and_audits_which_never_the_password(app, world):
    new_password = "a brand new password"
    changed = edit(app, world.users["ann"], display_name="Ann Smith", role="auditor", password=new_password)
    assert changed == ["display_name", "role", "password"]
    (entry,) = entries(app, "user.update")
    assert (entry.actor, entry.target) == ("user:admin", f"user:{world.users['ann']}")
    assert entry.detail == {"changed": ["display_name", "role", "password"], "role": "auditor"}
    with app.extensions["rapportal"].sessions() as session:
        ann = session.get(User, world.users["ann"])
        assert (ann.display_name, ann.role) == ("Ann Smith", "auditor")
        stored_hash = ann.password_hash
    assert new_password not in json.dumps(entry.detail) and stored_hash not in json.dumps(entry.detail)
    assert isinstance(attempt(app, "ann", HOME, T0, new_password), SignIn)


def test_update_user_ends_sessions_on_a_new_role_or_a_deactivation_not_on_a_rename(app, world):
    attempt(app, "ann", HOME, T0, PASSWORD)
    edit(app, world.users["ann"], display_name="Ann Smith")
    assert _sessions(app, "ann")[-1].ended_at is None
    edit(app, world.users["ann"], role="auditor")
    assert _sessions(app, "ann")[-1].end_reason == "account_changed"
    attempt(app, "ann", HOME, T0, PASSWORD)
    edit(app, world.users["ann"], active=False)
    assert _sessions(app, "ann")[-1].end_reason == "account_changed"


@pytest.mark.parametrize(("changes", "field"), [({"role": "clinician"}, "role"), ({"active": False}, "active")])
def test_update_user_refuses_to_remove_the_last_active_administrator_naming_the_field(app, world, changes, field):
    with pytest.raises(AccountError) as refused:
        edit(app, world.users["admin"], **changes)
    assert refused.value.field == field and "last active administrator" in refused.value.message
    with app.extensions["rapportal"].sessions() as session:
        admin = session.get(User, world.users["admin"])
        assert (admin.role, admin.active) == ("admin", True)
    assert entries(app, "user.update") == []


def test_an_administrator_can_step_down_once_there_is_another(app, world):
    with app.extensions["rapportal"].sessions.begin() as session:
        create_user(session, "second", "Second", "admin", PASSWORD, actor="test", address=None)
    assert edit(app, world.users["admin"], role="clinician") == ["role"]


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"display_name": "   "}, "display_name"),
        ({"display_name": "x" * 129}, "display_name"),
        ({"role": "superuser"}, "role"),
        ({"password": "short"}, "password"),
    ],
)
def test_update_user_names_the_field_of_bad_input_and_changes_nothing(app, world, changes, field):
    with pytest.raises(AccountError) as refused:
        edit(app, world.users["ann"], **{"role": "auditor", **changes})
    assert refused.value.field == field
    with app.extensions["rapportal"].sessions() as session:
        assert session.get(User, world.users["ann"]).role == "clinician"


def test_user_by_username_names_the_field_for_an_unknown_account(app, world):
    with app.extensions["rapportal"].sessions() as session:
        assert user_by_username(session, " ANN ").id == world.users["ann"]
        with pytest.raises(AccountError) as refused:
            user_by_username(session, "nobody")
    assert refused.value.field == "username"


# -- pages and commands around them ------------------------------------------------------


def waiting_from_this_client(app, username):
    """Failed sign-ins for ``username`` from the test client's address, spaced out so the last is now: 32 s to wait."""
    app.config["LOGIN_FREE_FAILURES"] = 0  # fewer argon2 checks to get there
    rule = SignInLimits.from_settings(app.config).pair
    count = app.config["LOGIN_FREE_FAILURES"] + 5
    start = datetime.now(UTC) - timedelta(seconds=sum(rule.wait_after(n) for n in range(1, count)))
    fail(app, username, "127.0.0.1", start, times=count)


def test_admin_clears_sign_in_waits_from_the_account_page_audited(app, client, world):
    waiting_from_this_client(app, "ann")
    assert sign_in(app.test_client(), "ann").status_code == 429
    sign_in(client, "admin")
    path = f"/admin/users/{world.users['ann']}"
    clear = f"{path}/clear-sign-in-waits"
    assert "Clear sign-in waits" in client.get(path).text
    assert client.post(clear, data={}).status_code == 400  # no CSRF token: nothing cleared
    assert sign_in(app.test_client(), "ann").status_code == 429
    response = client.post(clear, data={"csrf_token": page_token(client, path)})
    assert response.status_code == 302 and response.location.endswith(f"{path}?cleared=1")
    assert "Sign-in waits cleared." in client.get(response.location).text
    assert sign_in(app.test_client(), "ann").status_code == 302
    assert ("user:admin", "user.unlock", f"user:{world.users['ann']}") in audit_actions(app)


def test_unlock_user_command_clears_sign_in_waits_audited(app, runner, world):
    waiting_from_this_client(app, "ann")
    result = runner.invoke(args=["unlock-user", "Ann"])
    assert result.exit_code == 0 and "Cleared the sign-in waits of ann" in result.output
    assert sign_in(app.test_client(), "ann").status_code == 302
    (entry,) = entries(app, "user.unlock")
    assert entry.actor.startswith("cli:") and entry.target == f"user:{world.users['ann']}"


def test_unlock_user_command_names_an_unknown_account(runner, world):
    result = runner.invoke(args=["unlock-user", "nobody"])
    assert result.exit_code == 1 and "username: There is no such account." in result.output


def test_an_account_change_on_the_admin_page_is_audited_by_field_without_the_password(app, client, world):
    sign_in(client, "admin")
    path = f"/admin/users/{world.users['ann']}"
    new_password = "another long password"
    response = client.post(
        path,
        data={
            "csrf_token": page_token(client, path),
            "display_name": "Ann Smith",
            "role": "clinician",
            "active": "y",
            "password": new_password,
        },
    )
    assert response.status_code == 302
    (entry,) = entries(app, "user.update")
    assert entry.actor == "user:admin" and entry.detail == {"changed": ["display_name", "password"]}
    assert new_password not in json.dumps(entry.detail)


# -- own password, sign-out and first setup as core operations ----------------------------------


def test_change_password_checks_the_current_one_and_hands_back_a_new_session(app, world):
    with app.extensions["rapportal"].sessions.begin() as session:
        ann = session.get(User, world.users["ann"])
        with pytest.raises(accounts.AccountError) as refused:
            accounts.change_password(
                session, ann, "wrong password!", "a new long password", actor="user:ann", address=None
            )
        assert refused.value.field == "current"
        with pytest.raises(accounts.AccountError) as refused:
            accounts.change_password(session, ann, PASSWORD, "short", actor="user:ann", address=None)
        assert refused.value.field == "password"
        token = accounts.change_password(session, ann, PASSWORD, "a new long password", actor="user:ann", address=None)
        fresh = session.scalar(sa.select(UserSession).where(UserSession.token_hash == hash_token(token)))
        assert fresh.user_id == ann.id and fresh.ended_at is None
    assert ("user:ann", "password.change", f"user:{world.users['ann']}") in audit_actions(app)


def test_sign_out_ends_the_session_and_is_audited(app, world):
    with app.extensions["rapportal"].sessions.begin() as session:
        ann = session.get(User, world.users["ann"])
        token = accounts.start_session(session, ann, None)
        found = session.scalar(sa.select(UserSession).where(UserSession.token_hash == hash_token(token)))
        accounts.sign_out(session, found, actor="user:ann", address="192.0.2.4")
        assert found.end_reason == "logout"
    assert ("user:ann", "logout", f"user:{world.users['ann']}") in audit_actions(app)


def test_first_setup_happens_once(app):
    with app.extensions["rapportal"].sessions.begin() as session:
        first = accounts.set_up_first_admin(session, "Root", "", PASSWORD, address=None)
        assert first.user.role == "admin" and first.user.username == "root" and first.token
    with app.extensions["rapportal"].sessions.begin() as session:
        assert accounts.set_up_first_admin(session, "second", "", PASSWORD, address=None) is None
    actions = [a for _actor, a, _t in audit_actions(app)]
    assert actions.count("setup.first_admin") == 1 and actions.count("user.create") == 1
