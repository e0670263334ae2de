"""The audit trail: append-only rows of who did or saw what, when and from where.

Rows are only ever added: ``core.models`` refuses UPDATE and DELETE of ``audit_entries``
through the ORM, and database triggers (revision 0003) refuse them whatever connects.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
import sqlalchemy.orm as so

from core.db import DirectStatement
from core.models import AuditEntry, User, UserSite, utcnow
from core.scope import site_client_ids, site_user_ids


def audit_values(
    actor: str, action: str, target: str | None, address: str | None, at: datetime | None, detail: dict[str, Any]
) -> dict[str, Any]:
    """One audit row's values, cut to their column widths (so a long plugin or user name never fails the write)."""
    return {
        "at": at or utcnow(),
        "actor": actor[:128],
        "action": action[:64],
        "target": target[:128] if target else None,
        "address": address[:64] if address else None,
        "detail": detail,
    }


class PendingEntries:
    """Audit entries that :func:`record` keeps here instead of adding them to a session, for a caller that stores
    them when it is done reading: a reading page's entry (``web.access.read_audit``), stored after the page's reads
    and before it is sent, alone (:func:`store_alone`) or in a short transaction of its own."""

    def __init__(self) -> None:
        self.entries: list[AuditEntry] = []

    def add(self, entry: AuditEntry) -> None:
        self.entries.append(entry)


def record(
    session: so.Session | PendingEntries,
    actor: str,
    action: str,
    target: str | None = None,
    address: str | None = None,
    *,
    at: datetime | None = None,
    **detail: Any,
) -> AuditEntry:
    """Add one audit entry to ``session`` (committed with the caller's transaction), or to entries pending."""
    entry = AuditEntry(**audit_values(actor, action, target, address, at, detail))
    session.add(entry)
    return entry


_ENTRIES = AuditEntry.__table__
_VALUES = ("at", "actor", "action", "target", "address", "detail")
_INSERT_ENTRY = DirectStatement(
    sa.insert(_ENTRIES)
    .values({name: sa.bindparam(name, type_=_ENTRIES.c[name].type) for name in _VALUES})
    .returning(_ENTRIES.c.id),
    writes=True,
)


def store_alone(db: sa.Engine, entry: AuditEntry) -> None:
    """Store an entry made by :func:`record` into :class:`PendingEntries` in a statement of its own that commits by
    itself, for an entry that is all a transaction would hold: a reading page's ``client.view``, say.

    One INSERT on a pooled connection (:class:`core.db.DirectStatement`), durable as any commit, without the ORM's
    flush and transaction around it, which cost a page view more than the INSERT and its commit did.
    """
    _INSERT_ENTRY.first(db, {name: getattr(entry, name) for name in _VALUES})


AUDIT_PAGE_SIZE = 100


def site_entries(user: User) -> sa.ColumnElement[bool]:
    """A condition on ``AuditEntry``: the entry belongs to ``user``'s sites (always true when portal-wide).

    An entry about a client (target ``client:<id>``) belongs to the client's site; any other entry
    belongs to the sites of the user who made it (actor ``user:<name>``).
    """
    if not user.active:
        return sa.false()
    limited = sa.exists(sa.select(UserSite.site_id).where(UserSite.user_id == user.id))
    clients = site_client_ids(user).subquery()
    client_targets = sa.select(sa.literal("client:", sa.String) + sa.cast(clients.c.id, sa.String))
    people = sa.select(sa.literal("user:", sa.String) + User.username).where(User.id.in_(site_user_ids(user)))
    return sa.or_(
        ~limited,
        AuditEntry.target.in_(client_targets),
        sa.and_(
            sa.or_(AuditEntry.target.is_(None), ~AuditEntry.target.like("client:%")),
            AuditEntry.actor.in_(people),
        ),
    )


def browse_audit(
    session: so.Session,
    *,
    contains: dict[str, str],
    since: datetime | None = None,
    before: datetime | None = None,
    page: int = 1,
    page_size: int = AUDIT_PAGE_SIZE,
    viewer: str,
    viewer_user: User | None = None,
    address: str | None,
) -> tuple[list[AuditEntry], bool]:
    """One page of the trail, newest first, and whether there are more; the browsing itself is audited.

    ``contains`` filters ``actor``, ``action`` and ``target`` by substring; ``since`` and ``before``
    bound the time. The ``audit.view`` entry records the filters, so who looked for what is on record too.
    A ``viewer_user`` limited to sites sees only :func:`site_entries`.
    """
    columns = {"actor": AuditEntry.actor, "action": AuditEntry.action, "target": AuditEntry.target}
    query = sa.select(AuditEntry)
    if viewer_user is not None:
        query = query.where(site_entries(viewer_user))
    for name, value in contains.items():
        query = query.where(columns[name].contains(value, autoescape=True))
    if since is not None:
        query = query.where(AuditEntry.at >= since)
    if before is not None:
        query = query.where(AuditEntry.at < before)
    rows = list(
        session.scalars(query.order_by(AuditEntry.id.desc()).offset((page - 1) * page_size).limit(page_size + 1))
    )
    filters = dict(contains)
    filters.update({name: value.date().isoformat() for name, value in (("since", since), ("before", before)) if value})
    record(session, viewer, "audit.view", None, address, filters=filters, page=page)
    return rows[:page_size], len(rows) > page_size
