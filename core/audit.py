"""The audit trail: append-only rows of who did or saw what, when and from where.

Rows are only ever added: ``core.models`` refuses UPDATE and DELETE of ``audit_entries``
through the ORM, and database triggers (revision 0003) refuse them whatever connects.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa
import sqlalchemy.orm as so

from core.models import AuditEntry, utcnow


def record(
    session: so.Session,
    actor: str,
    action: str,
    target: str | None = None,
    address: str | None = None,
    *,
    at: datetime | None = None,
    **detail: Any,
) -> AuditEntry:
    """Add one audit entry to ``session`` (committed with the caller's transaction).

    Values are cut to their column widths, so a long plugin or user name never fails the write.
    """
    entry = AuditEntry(
        at=at or utcnow(),
        actor=actor[:128],
        action=action[:64],
        target=target[:128] if target else None,
        address=address[:64] if address else None,
        detail=detail,
    )
    session.add(entry)
    return entry


AUDIT_PAGE_SIZE = 100


def browse_audit(
    session: so.Session,
    *,
    contains: dict[str, str],
    since: datetime | None = None,
    before: datetime | None = None,
    page: int = 1,
    page_size: int = AUDIT_PAGE_SIZE,
    viewer: str,
    address: str | None,
) -> tuple[list[AuditEntry], bool]:
    """One page of the trail, newest first, and whether there are more; the browsing itself is audited.

    ``contains`` filters ``actor``, ``action`` and ``target`` by substring; ``since`` and ``before``
    bound the time. The ``audit.view`` entry records the filters, so who looked for what is on record too.
    """
    columns = {"actor": AuditEntry.actor, "action": AuditEntry.action, "target": AuditEntry.target}
    query = sa.select(AuditEntry)
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
