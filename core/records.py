"""Scored responses as rows, for the API and its FHIR face: filtered, a page at a time, audited.

The rows come from the export's own query (:func:`core.export.export_query`), narrowed to the
clients the reader may see (:func:`core.clients.visible_client_ids`), so the API, the FHIR face and
the exports report the same numbers for the same responses. Pages are keyset pages (``id`` after
the last one seen): a page costs one bounded query however many responses there are.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
import sqlalchemy.orm as so

from core.audit import record
from core.clients import visible_client_ids
from core.errors import InvalidInput
from core.export import as_utc, export_query, row_to_export_row
from core.exporters import ExportRow, ExportSelection
from core.models import Response, Score, User

MAX_PAGE_SIZE = 100


@dataclass(frozen=True)
class ScoredRow:
    """One response as the export sees it, with the client's id and whether it was scored complete."""

    row: ExportRow
    client_id: int
    complete: bool | None


@dataclass(frozen=True)
class RowPage:
    rows: list[ScoredRow]
    more: bool


def _query(user: User, selection: ExportSelection) -> sa.Select[Any]:
    return (
        export_query(selection)
        .add_columns(Response.client_id, Score.complete)
        .where(Response.client_id.in_(visible_client_ids(user)))
    )


def _scored(row: Any) -> ScoredRow:
    return ScoredRow(row_to_export_row(row), row[-2], row[-1])  # the two columns _query adds after the export's own


def list_scored_responses(
    session: so.Session,
    user: User,
    *,
    client_id: int | None = None,
    client_code: str | None = None,
    instrument: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    after_id: int = 0,
    limit: int = 50,
    actor: str,
    address: str | None,
) -> RowPage:
    """One page of the responses ``user`` may see, oldest id first, after ``after_id``; audited as ``responses.list``.

    Filters: a client (by id or by code), an instrument, submitted at or after ``since`` and before ``until``.
    """
    if not 1 <= limit <= MAX_PAGE_SIZE:
        raise InvalidInput(f"Use 1 to {MAX_PAGE_SIZE}.", "limit")
    if since is not None and until is not None and as_utc(since) >= as_utc(until):
        raise InvalidInput("Choose an end after the start.", "until")
    selection = ExportSelection(
        instruments=(instrument,) if instrument else (),
        since=since,
        until=until,
        clients=(client_code,) if client_code else (),
    )
    query = _query(user, selection).where(Response.id > after_id)
    if client_id is not None:
        query = query.where(Response.client_id == client_id)
    rows = [_scored(row) for row in session.execute(query.limit(limit + 1))]
    filters = {
        "client": client_id,
        "client_code": bool(client_code),
        "instrument": instrument,
        "since": since.isoformat() if since else None,
        "until": until.isoformat() if until else None,
    }
    target = f"client:{client_id}" if client_id is not None else None
    record(session, actor, "responses.list", target, address, filters=filters, rows=min(len(rows), limit))
    return RowPage(rows[:limit], len(rows) > limit)


def response_row(session: so.Session, user: User, response: Response) -> ScoredRow:
    """The row of a response that :func:`core.care.view_response` has just loaded (and audited) for ``user``."""
    return _scored(session.execute(_query(user, ExportSelection()).where(Response.id == response.id)).one())
