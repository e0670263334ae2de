"""The audit trail: append-only rows of who did or saw what, when and from where.

Rows are only ever added: ``core.models`` refuses UPDATE and DELETE of ``audit_entries``
through the ORM, and database triggers (revision 0003) refuse them whatever connects.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

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
