"""core/clients.py: creating and editing clients, assigning clinicians, and whom a user may see."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from core.accounts import create_user
from core.clients import (
    create_client,
    unassigned_clients,
    update_client,
    visible_client,
    visible_client_ids,
)
from core.db import create_schema, make_db_engine, make_session_factory
from core.errors import InvalidInput, NotFound
from core.models import AuditEntry, Client, User

LANGUAGES = ("en", "de")


@pytest.fixture
def db(db_url):
    engine = make_db_engine(db_url)
    create_schema(engine)
    sessions = make_session_factory(engine)
    with sessions.begin() as session:
        for name, role in (("ann", "clinician"), ("bob", "clinician"), ("admin", "admin")):
            create_user(session, name, name.title(), role, "a long test password", actor="test", address=None)
    yield sessions
    engine.dispose()


def _user(session, name):
    return session.scalar(sa.select(User).where(User.username == name))


def _new(session, code="C-1", **overrides):
    fields = {
        "code": code,
        "display_name": "Client One",
        "language": "en",
        "languages": LANGUAGES,
        "clinician_id": _user(session, "ann").id,
        "further_ids": [],
        "actor": "user:admin",
        "address": "127.0.0.1",
    }
    return create_client(session, **(fields | overrides))


def test_a_new_client_is_audited_with_their_clinicians_but_not_their_name(db):
    with db.begin() as session:
        client = _new(session, further_ids=[_user(session, "bob").id])
        entry = session.scalar(sa.select(AuditEntry).where(AuditEntry.action == "client.create"))
        assert entry.target == f"client:{client.id}" and entry.actor == "user:admin"
        assert entry.detail == {"clinician": _user(session, "ann").id, "further": [_user(session, "bob").id], "site": 1}
        assert "Client One" not in str(entry.detail)


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"code": "has space"}, "code"),
        ({"code": ""}, "code"),
        ({"code": "x" * 65}, "code"),
        ({"language": "fr"}, "language"),
        ({"display_name": "n" * 129}, "display_name"),
    ],
)
def test_bad_client_input_names_the_field(db, overrides, field):
    with db() as session, pytest.raises(InvalidInput) as refused:
        _new(session, **overrides)
    assert refused.value.field == field


def test_a_code_is_unique(db):
    with db.begin() as session:
        _new(session)
    with db() as session, pytest.raises(InvalidInput, match="exists already"):
        _new(session, code=" C-1 ")


def test_only_active_clinicians_can_be_assigned(db):
    with db() as session:
        with pytest.raises(InvalidInput) as refused:
            _new(session, clinician_id=_user(session, "admin").id)
        assert refused.value.field == "clinician"
        _user(session, "bob").active = False
        session.flush()
        with pytest.raises(InvalidInput) as refused:
            _new(session, code="C-2", further_ids=[_user(session, "bob").id])
        assert refused.value.field == "further"


def test_a_clinician_sees_their_main_and_further_clients_only(db):
    with db.begin() as session:
        ann, bob = _user(session, "ann"), _user(session, "bob")
        mine = _new(session, code="C-1")
        shared = _new(session, code="C-2", clinician_id=bob.id, further_ids=[ann.id])
        theirs = _new(session, code="C-3", clinician_id=bob.id)
    with db() as session:
        ann = _user(session, "ann")
        seen = set(session.scalars(sa.select(Client.code).where(Client.id.in_(visible_client_ids(ann)))))
        assert seen == {"C-1", "C-2"}
        assert visible_client(session, ann, shared.id).code == "C-2"
        with pytest.raises(NotFound):
            visible_client(session, ann, theirs.id)
        with pytest.raises(NotFound):
            visible_client(session, ann, 999_999)
        admin = _user(session, "admin")
        assert session.scalars(sa.select(Client.id).where(Client.id.in_(visible_client_ids(admin)))).all() == []
        with pytest.raises(NotFound):
            visible_client(session, admin, mine.id)


def test_a_deactivated_clinician_sees_no_client(db):
    with db.begin() as session:
        client = _new(session)
        _user(session, "ann").active = False
    with db() as session, pytest.raises(NotFound):
        visible_client(session, _user(session, "ann"), client.id)


def test_updating_a_client_moves_them_to_another_clinician(db):
    with db.begin() as session:
        client = _new(session)
    with db.begin() as session:
        client = session.get(Client, client.id)
        update_client(
            session,
            client,
            display_name="  ",
            language="de",
            languages=LANGUAGES,
            clinician_id=_user(session, "bob").id,
            further_ids=[_user(session, "bob").id],  # the main clinician is not also a further one
            actor="user:admin",
            address=None,
        )
    with db() as session:
        client = session.get(Client, client.id)
        assert (client.display_name, client.language) == (None, "de")
        assert client.clinician_id == _user(session, "bob").id
        with pytest.raises(NotFound):
            visible_client(session, _user(session, "ann"), client.id)
        entry = session.scalar(sa.select(AuditEntry).where(AuditEntry.action == "client.update"))
        assert entry.detail == {"clinician": _user(session, "bob").id, "further": []}


def test_clients_without_a_clinician_are_listed_for_administrators(db):
    with db.begin() as session:
        _new(session, code="C-1")
        _new(session, code="C-0", clinician_id=None)
    with db() as session:
        assert [c.code for c in unassigned_clients(session)] == ["C-0"]
