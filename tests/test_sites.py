"""core/sites.py and the site half of core/clients.py: who belongs where, whom each person may see."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from core.accounts import create_user
from core.clients import create_client, list_clients, managed_client, visible_client_ids
from core.db import create_schema, make_db_engine, make_session_factory
from core.errors import InvalidInput, NotFound
from core.models import DEFAULT_SITE_ID, AuditEntry, Client, User
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
