"""core/sites.py and the site half of core/clients.py: who belongs where, whom each person may see."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from staff_support import PASSWORD, csrf, make_world, page_token, sign_in

from core.accounts import create_user
from core.clients import create_client, list_clients, managed_client, visible_client_ids
from core.db import create_schema, make_db_engine, make_session_factory
from core.errors import InvalidInput, NotFound
from core.models import DEFAULT_SITE_ID, AuditEntry, Client, Episode, Site, User, UserSite
from core.sites import create_site, managed_sites, move_client, set_supervised, set_user_sites, site_name

ROLES = {"ann": "clinician", "bob": "clinician", "sue": "supervisor", "nadia": "admin", "admin": "admin"}


@pytest.fixture
def db(db_url):
    engine = make_db_engine(db_url)
    create_schema(engine)
    sessions = make_session_factory(engine)
    with sessions.begin() as session:
        users = {
            name: create_user(session, name, name.title(), role, "a long test password", actor="test", address=None)
            for name, role in ROLES.items()
        }
        north = create_site(session, "North", actor="test", address=None)
        south = create_site(session, "South", actor="test", address=None)
        for name in ("ann", "sue", "nadia"):
            set_user_sites(session, users[name], [north.id], actor="test", address=None)
        set_supervised(session, users["sue"], [users["ann"].id, users["bob"].id], actor="test", address=None)
        for code, clinician, site in (("N-ann", "ann", north), ("S-ann", "ann", south), ("S-bob", "bob", south)):
            session.add(Client(code=code, clinician_id=users[clinician].id, site_id=site.id))
    yield sessions
    engine.dispose()


def _user(session, name):
    return session.scalar(sa.select(User).where(User.username == name))


def _visible(session, name):
    ids = visible_client_ids(_user(session, name))
    return sorted(session.scalars(sa.select(Client.code).where(Client.id.in_(ids))))


def test_a_clinician_at_a_site_sees_only_their_clients_there(db):
    with db.begin() as session:
        assert _visible(session, "ann") == ["N-ann"]
        assert _visible(session, "bob") == ["S-bob"]  # portal-wide, but only his own clients


def test_a_supervisor_sees_their_clinicians_clients_at_their_sites(db):
    with db.begin() as session:
        assert _visible(session, "sue") == ["N-ann"]
        set_supervised(session, _user(session, "sue"), [], actor="test", address=None)
        assert _visible(session, "sue") == []


def test_administrators_see_no_clinical_data_and_manage_only_their_sites(db):
    with db.begin() as session:
        assert _visible(session, "nadia") == [] and _visible(session, "admin") == []
        nadia = _user(session, "nadia")
        assert [c.code for c, _u in list_clients(session, viewer=nadia, actor="x", address=None)] == ["N-ann"]
        assert [s.name for s in managed_sites(session, nadia)] == ["North"]
        south_client = session.scalar(sa.select(Client).where(Client.code == "S-bob"))
        with pytest.raises(NotFound):
            managed_client(session, nadia, south_client.id)


def test_moving_a_client_is_audited_with_both_sites(db):
    with db.begin() as session:
        client = session.scalar(sa.select(Client).where(Client.code == "S-ann"))
        north = client.site_id - 1  # sites: Main site (1), North (2), South (3)
        move_client(session, _user(session, "admin"), client, north, actor="user:admin", address=None)
        entry = session.scalars(sa.select(AuditEntry).where(AuditEntry.action == "client.move")).one()
        assert entry.target == f"client:{client.id}" and entry.detail == {"site_from": 3, "site_to": 2}
        assert _visible(session, "ann") == ["N-ann", "S-ann"]


def test_a_site_limited_administrator_cannot_move_clients_to_or_from_another_site(db):
    with db.begin() as session:
        nadia = _user(session, "nadia")
        north_client = session.scalar(sa.select(Client).where(Client.code == "N-ann"))
        south_client = session.scalar(sa.select(Client).where(Client.code == "S-bob"))
        with pytest.raises(InvalidInput) as refused:
            move_client(session, nadia, north_client, south_client.site_id, actor="x", address=None)
        assert refused.value.field == "site"
        with pytest.raises(NotFound):
            move_client(session, nadia, south_client, north_client.site_id, actor="x", address=None)


def test_new_clients_go_to_the_default_site_unless_told_and_an_unknown_site_is_refused(db):
    with db.begin() as session:
        fields = dict(display_name=None, language="en", languages=("en",), clinician_id=None, actor="x", address=None)
        assert create_client(session, code="D-1", **fields).site_id == DEFAULT_SITE_ID
        with pytest.raises(InvalidInput) as refused:
            create_client(session, code="D-2", site_id=999, **fields)
        assert refused.value.field == "site"


def test_site_changes_are_checked_and_audited(db):
    with db.begin() as session:
        with pytest.raises(InvalidInput):
            create_site(session, "North", actor="x", address=None)
        with pytest.raises(InvalidInput):
            set_user_sites(session, _user(session, "bob"), [999], actor="x", address=None)
        with pytest.raises(InvalidInput):
            set_supervised(session, _user(session, "ann"), [], actor="x", address=None)
        with pytest.raises(InvalidInput):
            set_supervised(session, _user(session, "sue"), [_user(session, "admin").id], actor="x", address=None)
        actions = set(session.scalars(sa.select(AuditEntry.action)))
        assert {"site.create", "user.sites", "user.supervises"} <= actions


def test_the_page_header_names_a_users_one_site(db):
    with db.begin() as session:
        assert site_name(session, _user(session, "ann")) == "North"
        assert site_name(session, _user(session, "admin")) is None


# -- the administrator's pages: /admin/sites and the account page --------------------------------


@pytest.fixture
def web(app):
    """make_world's accounts and clients, sites North and South, supervisor sue; the signed-in portal-wide admin."""
    world = make_world(app)
    with app.extensions["rapportal"].sessions.begin() as session:
        world.sites = {name: create_site(session, name, actor="test", address=None).id for name in ("North", "South")}
        world.users["sue"] = create_user(session, "sue", "Sue", "supervisor", PASSWORD, actor="test", address=None).id
        session.get(Client, world.client_id).site_id = world.sites["South"]
    admin = app.test_client()
    sign_in(admin, "admin")
    world.admin = admin
    return world


def _signed_in(app, name):
    visitor = app.test_client()
    sign_in(visitor, name)
    return visitor


def _audited(app, action):
    with app.extensions["rapportal"].sessions() as session:
        return session.scalars(sa.select(AuditEntry).where(AuditEntry.action == action)).all()


def test_an_administrator_creates_a_site_on_the_web_and_it_is_audited(app, web):
    token = page_token(web.admin, "/admin/sites")
    made = web.admin.post("/admin/sites", data={"csrf_token": token, "name": "  East  "})
    assert made.status_code == 303
    page = web.admin.get(made.location).text
    assert "<td>East</td>" in page and "Site East created." in page
    south = page[page.index("<td>South</td>") : page.index("</tr>", page.index("<td>South</td>"))]
    assert "<td>1</td>" in south  # one client (C-1), nobody belongs there yet
    [entry] = [e for e in _audited(app, "site.create") if e.actor == "user:admin"]
    with app.extensions["rapportal"].sessions() as session:
        assert entry.target == f"site:{session.scalar(sa.select(Site.id).where(Site.name == 'East'))}"


@pytest.mark.parametrize("name", ["North", "", "x" * 129])
def test_a_duplicate_blank_or_too_long_site_name_is_refused_on_the_field(app, web, name):
    token = page_token(web.admin, "/admin/sites")
    refused = web.admin.post("/admin/sites", data={"csrf_token": token, "name": name})
    assert refused.status_code == 422 and 'id="name-error"' in refused.text
    expected = "A site with this name exists already." if name == "North" else "Use 1 to 128 characters."
    assert expected in refused.text
    with app.extensions["rapportal"].sessions() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Site)) == 3  # Main site, North, South


def test_putting_a_clinician_at_a_site_on_the_account_page_hides_another_sites_client(app, web):
    ann = _signed_in(app, "ann")
    assert ann.get(f"/clients/{web.client_id}").status_code == 200  # portal-wide: her client at South
    path = f"/admin/users/{web.users['ann']}"
    done = web.admin.post(
        f"{path}/sites", data={"csrf_token": page_token(web.admin, path), "sites": web.sites["North"]}
    )
    assert done.status_code == 303
    assert ann.get(f"/clients/{web.client_id}").status_code == 404
    page = web.admin.get(path).text
    assert f'<option selected value="{web.sites["North"]}">North</option>' in page
    [entry] = [e for e in _audited(app, "user.sites") if e.actor == "user:admin"]
    assert entry.target == f"user:{web.users['ann']}" and entry.detail == {"sites": [web.sites["North"]]}
    portal_wide = web.admin.post(f"{path}/sites", data={"csrf_token": page_token(web.admin, path)})
    assert portal_wide.status_code == 303 and ann.get(f"/clients/{web.client_id}").status_code == 200


def test_an_unknown_site_on_the_account_page_is_refused_on_the_field(app, web):
    path = f"/admin/users/{web.users['ann']}"
    refused = web.admin.post(f"{path}/sites", data={"csrf_token": page_token(web.admin, path), "sites": "999"})
    assert refused.status_code == 422 and 'id="sites-error"' in refused.text
    assert [e for e in _audited(app, "user.sites") if e.actor == "user:admin"] == []


def test_assigning_clinicians_to_a_supervisor_lets_them_read_those_clients(app, web):
    sue = _signed_in(app, "sue")
    assert sue.get(f"/clients/{web.client_id}").status_code == 404
    path = f"/admin/users/{web.users['sue']}"
    page = web.admin.get(path).text
    assert "Supervision" in page
    done = web.admin.post(f"{path}/supervised", data={"csrf_token": csrf(page), "clinicians": web.users["ann"]})
    assert done.status_code == 303
    assert sue.get(f"/clients/{web.client_id}").status_code == 200
    assert sue.get(f"/clients/{web.other_client_id}").status_code == 404  # bob's client: not supervised
    [entry] = [e for e in _audited(app, "user.supervises") if e.actor == "user:admin"]
    assert entry.detail == {"clinicians": [web.users["ann"]]}


def test_only_a_supervisor_has_a_supervision_form(app, web):
    path = f"/admin/users/{web.users['ann']}"
    assert "Save supervised clinicians" not in web.admin.get(path).text
    refused = web.admin.post(
        f"{path}/supervised", data={"csrf_token": page_token(web.admin, path), "clinicians": web.users["bob"]}
    )
    assert refused.status_code == 422 and "Only a supervisor can have clinicians assigned." in refused.text


def test_a_site_limited_administrator_sees_their_sites_read_only(app, web):
    with app.extensions["rapportal"].sessions.begin() as session:
        nadia = create_user(session, "nadia", "Nadia", "admin", PASSWORD, actor="test", address=None)
        set_user_sites(session, nadia, [web.sites["North"]], actor="test", address=None)
    nadia = _signed_in(app, "nadia")
    page = nadia.get("/admin/sites")
    assert page.status_code == 200 and "<td>North</td>" in page.text and "South" not in page.text
    assert "Add a site" not in page.text
    assert nadia.post("/admin/sites", data={"csrf_token": csrf(page.text), "name": "East"}).status_code == 403
    account = nadia.get(f"/admin/users/{web.users['ann']}").text
    assert "Save sites" not in account and "Portal-wide (no site)." in account
    token = csrf(account)
    assert nadia.post(f"/admin/users/{web.users['ann']}/sites", data={"csrf_token": token}).status_code == 403
    with app.extensions["rapportal"].sessions() as session:
        assert session.scalar(sa.select(Site.id).where(Site.name == "East")) is None


def test_the_staff_navigation_links_administrators_to_the_sites_page(app, web):
    assert 'href="/admin/sites"' in web.admin.get("/admin/users").text
    assert 'href="/admin/sites"' not in _signed_in(app, "ann").get("/caseload").text


def test_the_last_portal_wide_administrator_cannot_limit_themselves_to_a_site(db):
    with db() as session:
        admins = session.scalars(sa.select(User).where(User.role == "admin", User.active.is_(True))).all()
        wide = [a for a in admins if not session.scalars(sa.select(UserSite).where(UserSite.user_id == a.id)).all()]
        assert len(wide) == 1
        north = session.scalar(sa.select(Site.id).where(Site.name == "North"))
        with pytest.raises(InvalidInput, match="last portal-wide administrator") as refused:
            set_user_sites(session, wide[0], [north], actor="test", address=None)
        assert refused.value.field == "sites"
        second = create_user(session, "root2", "Root", "admin", "a long test password", actor="test", address=None)
        assert set_user_sites(session, wide[0], [north], actor="test", address=None) == [north]
        with pytest.raises(InvalidInput):
            set_user_sites(session, second, [north], actor="test", address=None)


def test_a_supervisor_reads_a_clients_record_but_core_refuses_them_any_change(db):
    from core.care import visible_record
    from core.clients import treated_client, visible_client
    from core.errors import NotAllowed

    with db() as session:
        sue, ann = _user(session, "sue"), _user(session, "ann")
        client = session.scalar(sa.select(Client).where(Client.code == "N-ann"))
        assert visible_client(session, sue, client.id).code == "N-ann"
        assert treated_client(session, ann, client.id).code == "N-ann"
        with pytest.raises(NotAllowed):
            treated_client(session, sue, client.id)
        episode = Episode(client_id=client.id, plan_name="pcoms", plan=[])
        session.add(episode)
        session.flush()
        assert visible_record(session, sue, Episode, episode.id).id == episode.id
        with pytest.raises(NotAllowed):
            visible_record(session, sue, Episode, episode.id, to_change=True)
        with pytest.raises(NotFound):  # a client at another site stays invisible, to read or to change
            treated_client(session, sue, session.scalar(sa.select(Client.id).where(Client.code == "S-bob")))
