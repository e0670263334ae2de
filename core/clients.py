"""Clients: create and edit them, assign their clinicians, and the one query of whom a user may see.

Clinical data (answers, scores, alerts) is shown only to a client's assigned clinicians, main or
further, and read-only to those clinicians' supervisors. :func:`visible_client_ids` is that rule as a
query; every page, command and API call that returns client data goes through it (or
:func:`visible_client`), so there is one place to change it. Both it and :func:`site_client_ids` (the
clients an administrator manages, exports and sees in the audit trail) keep to the asker's sites: a
user with no site is portal-wide, a user with sites sees only clients at those sites.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Collection, Iterable

import sqlalchemy as sa
import sqlalchemy.orm as so

from core.audit import record
from core.errors import InvalidInput, NotAllowed, NotFound
from core.models import DEFAULT_SITE_ID, Client, ClientClinician, Site, Supervision, User
from core.scope import at_sites_of_id, site_client_ids

CODE_PATTERN = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def visible_client_ids(user: User) -> sa.Select[tuple[int]]:
    """The ids of the clients whose clinical data ``user`` may see, at the user's sites.

    A clinician's assigned clients; a supervisor's supervised clinicians' clients (read-only); else none.
    """
    return _visible_ids(user.role, user.active, user.id)


def _visible_ids(role: str, active: bool, viewer: int | sa.BindParameter[int]) -> sa.Select[tuple[int]]:
    """:func:`visible_client_ids` for a user of ``role`` whose id is ``viewer`` (a number, or a parameter)."""
    if role == "clinician":
        clinician_ids: sa.Select[tuple[int]] | None = sa.select(
            viewer if isinstance(viewer, sa.BindParameter) else sa.literal(viewer)
        )
    elif role == "supervisor":
        clinician_ids = sa.select(Supervision.clinician_id).where(Supervision.supervisor_id == viewer)
    else:
        clinician_ids = None
    if clinician_ids is None or not active:
        return sa.select(Client.id).where(sa.false())
    assigned = sa.select(Client.id).where(Client.clinician_id.in_(clinician_ids))
    further = sa.select(ClientClinician.client_id).where(ClientClinician.user_id.in_(clinician_ids))
    # one IN over a UNION, not an OR of two: each half is read through its own index, where with the OR PostgreSQL
    # read every client of the portal to test both conditions on each
    return sa.select(Client.id).where(Client.id.in_(sa.union(assigned, further)), at_sites_of_id(viewer))


@functools.cache
def _visible_client(role: str, active: bool) -> sa.Select[tuple[Client]]:
    """:func:`visible_client`'s statement for a role, the ids as parameters: made once per role (a page needs it
    on every view, and building it cost more than running it)."""
    viewer = sa.bindparam("viewer_id", type_=sa.Integer)
    return sa.select(Client).where(
        Client.id == sa.bindparam("client_id", type_=sa.Integer), Client.id.in_(_visible_ids(role, active, viewer))
    )


def visible_client(session: so.Session, user: User, client_id: int) -> Client:
    """The client if ``user`` may see them; :class:`NotFound` otherwise (a stranger's client looks absent)."""
    client = session.scalar(
        _visible_client(user.role, bool(user.active)), {"viewer_id": user.id, "client_id": client_id}
    )
    if client is None:
        raise NotFound("There is no such client.", "client")
    return client


def treated_client(session: so.Session, user: User, client_id: int) -> Client:
    """The client if ``user`` is one of their clinicians, for an operation that changes their record.

    :class:`NotFound` when ``user`` may not see the client at all; :class:`NotAllowed` when they may only read
    it (a supervisor).
    """
    client = visible_client(session, user, client_id)
    if user.role != "clinician":
        raise NotAllowed("Only the client's clinicians can change their record.", "client")
    return client


def managed_client(session: so.Session, user: User, client_id: int) -> Client:
    """The client if they are at ``user``'s sites (an administrator's edit page); :class:`NotFound` otherwise."""
    client = session.scalar(sa.select(Client).where(Client.id == client_id, Client.id.in_(site_client_ids(user))))
    if client is None:
        raise NotFound("There is no such client.", "client")
    return client


def list_clients(
    session: so.Session, *, viewer: User | None = None, actor: str, address: str | None
) -> list[tuple[Client, User | None]]:
    """Every client by code with their main clinician, for administrators (no clinical data); audited.

    With a ``viewer``, only the clients at the viewer's sites (:func:`site_client_ids`).
    """
    query = sa.select(Client, User).outerjoin(User, User.id == Client.clinician_id).order_by(Client.code)
    if viewer is not None:
        query = query.where(Client.id.in_(site_client_ids(viewer)))
    rows = [(client, clinician) for client, clinician in session.execute(query)]
    record(session, actor, "clients.list", None, address, clients=len(rows))
    return rows


def unassigned_clients(session: so.Session, viewer: User | None = None) -> list[Client]:
    """Clients with no main clinician: no clinician can see them, so administrators are shown this list.

    With a ``viewer``, only those at the viewer's sites.
    """
    query = sa.select(Client).where(Client.clinician_id.is_(None)).order_by(Client.code)
    if viewer is not None:
        query = query.where(Client.id.in_(site_client_ids(viewer)))
    return list(session.scalars(query))


def create_client(
    session: so.Session,
    *,
    code: str,
    display_name: str | None,
    language: str,
    languages: Collection[str],
    clinician_id: int | None,
    further_ids: Iterable[int] = (),
    site_id: int = DEFAULT_SITE_ID,
    actor: str,
    address: str | None,
) -> Client:
    """Add a client with a pseudonymous ``code`` (unique, never changed) at a site, with their clinicians; audited."""
    code = (code or "").strip()
    if not CODE_PATTERN.match(code):
        raise InvalidInput("Use 1 to 64 letters, digits and . _ - only.", "code")
    if session.scalar(sa.select(Client.id).where(Client.code == code)) is not None:
        raise InvalidInput("A client with this code exists already.", "code")
    if session.get(Site, site_id) is None:
        raise InvalidInput("Choose an existing site.", "site")
    client = Client(
        code=code, display_name=_display_name(display_name), language=_language(language, languages), site_id=site_id
    )
    session.add(client)
    session.flush()
    _assign(session, client, clinician_id, further_ids)
    detail = _assignment_detail(session, client)
    record(session, actor, "client.create", f"client:{client.id}", address, site=client.site_id, **detail)
    return client


def update_client(
    session: so.Session,
    client: Client,
    *,
    display_name: str | None,
    language: str,
    languages: Collection[str],
    clinician_id: int | None,
    further_ids: Iterable[int] = (),
    actor: str,
    address: str | None,
) -> Client:
    """Change a client's display name, questionnaire language and clinicians; audited (without the name)."""
    client.display_name = _display_name(display_name)
    client.language = _language(language, languages)
    _assign(session, client, clinician_id, further_ids)
    record(session, actor, "client.update", f"client:{client.id}", address, **_assignment_detail(session, client))
    return client


def set_progress_shown(
    session: so.Session, user: User, client_id: int, shown: bool, *, actor: str, address: str | None
) -> Client:
    """Turn on or off whether the client sees their own trend after answering; one of their clinicians decides.

    Off by default. Audited as ``client.progress`` with the new setting (a preference, no clinical content).
    """
    if not isinstance(shown, bool):
        raise InvalidInput("Choose on or off.", "show_progress")
    client = treated_client(session, user, client_id)
    if client.show_progress != shown:
        client.show_progress = shown
        session.flush()
        record(session, actor, "client.progress", f"client:{client.id}", address, shown=shown)
    return client


def clinicians(session: so.Session) -> list[User]:
    """Active clinician accounts, by display name: those a client can be assigned to."""
    return list(
        session.scalars(
            sa.select(User).where(User.role == "clinician", User.active.is_(True)).order_by(User.display_name)
        )
    )


def _display_name(value: str | None) -> str | None:
    name = (value or "").strip()
    if len(name) > 128:
        raise InvalidInput("Use at most 128 characters.", "display_name")
    return name or None


def _language(value: str, languages: Collection[str]) -> str:
    if value not in languages:
        raise InvalidInput(f"Choose one of: {', '.join(languages)}.", "language")
    return value


def _assign(session: so.Session, client: Client, main: int | None, further: Iterable[int]) -> None:
    active = {user.id for user in clinicians(session)}
    if main is not None and main not in active:
        raise InvalidInput("Choose an active clinician.", "clinician")
    wanted = set(further) - {main}
    if wanted - active:
        raise InvalidInput("Choose active clinicians only.", "further")
    client.clinician_id = main
    existing = {
        row.user_id: row
        for row in session.scalars(sa.select(ClientClinician).where(ClientClinician.client_id == client.id))
    }
    for user_id, row in existing.items():
        if user_id not in wanted:
            session.delete(row)
    for user_id in wanted - set(existing):
        session.add(ClientClinician(client_id=client.id, user_id=user_id))
    session.flush()


def _assignment_detail(session: so.Session, client: Client) -> dict[str, object]:
    further = session.scalars(
        sa.select(ClientClinician.user_id)
        .where(ClientClinician.client_id == client.id)
        .order_by(ClientClinician.user_id)
    )
    return {"clinician": client.clinician_id, "further": list(further)}
