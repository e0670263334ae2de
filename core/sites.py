"""Sites: the clinics of one portal. Create them, say who belongs where, who supervises whom, move clients.

A user with no site is portal-wide; a user given sites is limited to them (:mod:`core.scope` holds the
queries). Each client is at one site. Every change here is audited in the same transaction.
"""

from __future__ import annotations

from collections.abc import Iterable

import sqlalchemy as sa
import sqlalchemy.orm as so

from core.audit import record
from core.clients import site_client_ids
from core.errors import InvalidInput, NotFound
from core.models import Client, Site, Supervision, User, UserSite
from core.scope import user_site_ids


def sites(session: so.Session) -> list[Site]:
    """Every site, by name."""
    return list(session.scalars(sa.select(Site).order_by(Site.name)))


def create_site(session: so.Session, name: str, *, actor: str, address: str | None) -> Site:
    """Add a site called ``name`` (unique, 1 to 128 characters); audited as ``site.create``."""
    name = (name or "").strip()
    if not name or len(name) > 128:
        raise InvalidInput("Use 1 to 128 characters.", "name")
    if session.scalar(sa.select(Site.id).where(Site.name == name)) is not None:
        raise InvalidInput("A site with this name exists already.", "name")
    site = Site(name=name)
    session.add(site)
    session.flush()
    record(session, actor, "site.create", f"site:{site.id}", address)
    return site


def site_counts(session: so.Session, shown: Iterable[Site]) -> dict[int, tuple[int, int]]:
    """For each site in ``shown``, by id: how many clients are there and how many people belong to it."""
    ids = [site.id for site in shown]
    clients = dict(
        session.execute(
            sa.select(Client.site_id, sa.func.count()).where(Client.site_id.in_(ids)).group_by(Client.site_id)
        ).all()
    )
    staff = dict(
        session.execute(
            sa.select(UserSite.site_id, sa.func.count()).where(UserSite.site_id.in_(ids)).group_by(UserSite.site_id)
        ).all()
    )
    return {site_id: (clients.get(site_id, 0), staff.get(site_id, 0)) for site_id in ids}


def managed_sites(session: so.Session, user: User) -> list[Site]:
    """The sites ``user`` works at, by name: every site for a portal-wide user."""
    own = site_ids_of(session, user)
    query = sa.select(Site).order_by(Site.name)
    return list(session.scalars(query.where(Site.id.in_(own)) if own else query))


def site_ids_of(session: so.Session, user: User) -> list[int]:
    """The ids of the sites ``user`` belongs to; empty for a portal-wide user."""
    return list(session.scalars(user_site_ids(user).order_by(UserSite.site_id)))


def set_user_sites(
    session: so.Session, user: User, site_ids: Iterable[int], *, actor: str, address: str | None
) -> list[int]:
    """Put ``user`` at exactly these sites (none: portal-wide); audited as ``user.sites``."""
    wanted = sorted(set(site_ids))
    known = set(session.scalars(sa.select(Site.id).where(Site.id.in_(wanted))))
    if set(wanted) - known:
        raise InvalidInput("Choose existing sites only.", "sites")
    if wanted and user.role == "admin" and user.active and _portal_wide_admins(session) == {user.id}:
        raise InvalidInput(
            "This is the last portal-wide administrator: make another one portal-wide first, "
            "or nobody could manage sites on the web.",
            "sites",
        )
    session.execute(sa.delete(UserSite).where(UserSite.user_id == user.id))
    session.add_all(UserSite(user_id=user.id, site_id=site_id) for site_id in wanted)
    session.flush()
    record(session, actor, "user.sites", f"user:{user.id}", address, sites=wanted)
    return wanted


def _portal_wide_admins(session: so.Session) -> set[int]:
    """The ids of the active administrators who belong to no site."""
    with_sites = sa.select(UserSite.user_id)
    return set(
        session.scalars(
            sa.select(User.id).where(User.role == "admin", User.active.is_(True), User.id.not_in(with_sites))
        )
    )


def set_supervised(
    session: so.Session, supervisor: User, clinician_ids: Iterable[int], *, actor: str, address: str | None
) -> list[int]:
    """Assign exactly these clinicians to ``supervisor``; audited as ``user.supervises``."""
    if supervisor.role != "supervisor":
        raise InvalidInput("Only a supervisor can have clinicians assigned.", "supervisor")
    wanted = sorted(set(clinician_ids))
    known = set(session.scalars(sa.select(User.id).where(User.id.in_(wanted), User.role == "clinician")))
    if set(wanted) - known:
        raise InvalidInput("Choose clinicians only.", "clinicians")
    session.execute(sa.delete(Supervision).where(Supervision.supervisor_id == supervisor.id))
    session.add_all(Supervision(supervisor_id=supervisor.id, clinician_id=user_id) for user_id in wanted)
    session.flush()
    record(session, actor, "user.supervises", f"user:{supervisor.id}", address, clinicians=wanted)
    return wanted


def supervised_ids(session: so.Session, supervisor: User) -> list[int]:
    """The ids of the clinicians assigned to ``supervisor``."""
    query = sa.select(Supervision.clinician_id).where(Supervision.supervisor_id == supervisor.id)
    return list(session.scalars(query.order_by(Supervision.clinician_id)))


def move_client(
    session: so.Session, viewer: User | None, client: Client, site_id: int, *, actor: str, address: str | None
) -> None:
    """Move ``client`` to another site; audited as ``client.move`` with both sites.

    ``viewer`` (an administrator) must manage the client and the new site: a site-limited
    administrator moves clients only between their own sites. None is the server's operator (the CLI).
    """
    if viewer is not None:
        managed = sa.select(Client.id).where(Client.id == client.id, Client.id.in_(site_client_ids(viewer)))
        if session.scalar(managed) is None:
            raise NotFound("There is no such client.", "client")
    site = session.get(Site, site_id)
    own = site_ids_of(session, viewer) if viewer is not None else []
    if site is None or (own and site_id not in own):
        raise InvalidInput("Choose one of your sites.", "site")
    before = client.site_id
    client.site_id = site.id
    session.flush()
    record(session, actor, "client.move", f"client:{client.id}", address, site_from=before, site_to=site.id)


# the names of up to two sites of a user, made once: site_name runs on every staff page
_SITE_NAMES = sa.select(Site.name).where(Site.id.in_(user_site_ids(sa.bindparam("user_id")))).limit(2)


def site_name(session: so.Session, user: User | None) -> str | None:
    """The name of the one site ``user`` belongs to, for the page header; None when portal-wide or at several."""
    if user is None:
        return None
    names = list(session.scalars(_SITE_NAMES, {"user_id": user.id}))
    return names[0] if len(names) == 1 else None


def client_site_name(session: so.Session, client_id: int) -> str | None:
    """The name of the site a client is seen at, for the header of their questionnaire and kiosk pages."""
    return session.scalar(sa.select(Site.name).join(Client, Client.site_id == Site.id).where(Client.id == client_id))
