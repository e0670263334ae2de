"""The audit trail: append-only rows of who did or saw what, when and from where.

Rows are only ever added: ``core.models`` refuses UPDATE and DELETE of ``audit_entries``
through the ORM, and docs/accounts.md shows how to revoke both in PostgreSQL.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy.orm as so

from core.models import AuditEntry


def record(
    session: so.Session, actor: str, action: str, target: str | None = None, address: str | None = None, **detail: Any
) -> AuditEntry:
    """Add one audit entry to ``session`` (committed with the caller's transaction)."""
    entry = AuditEntry(
        actor=actor[:128],
        action=action[:64],
        target=target[:128] if target else None,
        address=address[:64] if address else None,
        detail=detail,
    )
    session.add(entry)
    return entry
