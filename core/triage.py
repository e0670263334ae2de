"""Triage: which alert and which client need the clinician first, closing several alerts with one note, the report.

Severity ranks ``urgent`` before ``warning`` before ``info``. Alerts are listed by severity, then newest first.
The caseload lists clients with an open urgent alert first, then those with an open warning, then those with only
information alerts, then everyone else; within a group the client with more open alerts of that severity comes
first, then the one whose oldest such alert has waited longest, then by client code.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeVar

import sqlalchemy as sa
import sqlalchemy.orm as so

from core.audit import record
from core.care import MAX_NOTE_LENGTH, AlertRecord, ClientRecord, load_client_record, read_alerts
from core.clients import treated_client
from core.errors import InvalidInput, NotFound
from core.models import Alert, Client, User

AlertT = TypeVar("AlertT", Alert, AlertRecord)  # an ORM alert or one read as a record

SEVERITIES: tuple[str, ...] = ("urgent", "warning", "info")
MAX_ALERTS_PER_NOTE = 100


def severity_rank(severity: str) -> int:
    """0 for urgent, 1 for warning, 2 for info, 3 for anything a plugin invented."""
    return SEVERITIES.index(severity) if severity in SEVERITIES else len(SEVERITIES)


def triage_order(alerts: Iterable[AlertT]) -> list[AlertT]:
    """Alerts by severity (urgent first), then newest first."""
    by_time = sorted(alerts, key=lambda a: (_aware(a.created_at), a.id), reverse=True)
    return sorted(by_time, key=lambda a: severity_rank(a.severity))


def count_by_severity(alerts: Iterable[Alert | AlertRecord]) -> dict[str, int]:
    """Open alerts counted per severity, every known severity present (0 when none)."""
    counts = dict.fromkeys(SEVERITIES, 0)
    for alert in alerts:
        counts[alert.severity] = counts.get(alert.severity, 0) + 1
    return counts


def caseload_order(clients: Sequence[Client], open_alerts: Iterable[Alert | AlertRecord]) -> list[Client]:
    """The caseload by urgency (see the module docstring for the order)."""
    by_client: dict[int, list[Alert]] = {}
    for alert in open_alerts:
        by_client.setdefault(alert.client_id, []).append(alert)

    def key(client: Client) -> tuple[int, int, datetime, str]:
        mine = by_client.get(client.id, [])
        if not mine:
            return (len(SEVERITIES) + 1, 0, datetime.max.replace(tzinfo=UTC), client.code)
        rank = min(severity_rank(a.severity) for a in mine)
        top = [a for a in mine if severity_rank(a.severity) == rank]
        return (rank, -len(top), min(_aware(a.created_at) for a in top), client.code)

    return sorted(clients, key=key)


def acknowledge_alerts(
    session: so.Session,
    user: User,
    alert_ids: Sequence[int],
    *,
    client_id: int | None = None,
    note: str,
    actor: str,
    address: str | None,
) -> int:
    """Close several alerts of one client with one note; returns how many were still open.

    Every alert must belong to one client that ``user`` treats, and to ``client_id`` when given (:class:`NotFound`
    / ``NotAllowed`` otherwise).
    One audit entry per alert, naming the alert and never its rule.
    """
    note = (note or "").strip()
    if not note:
        raise InvalidInput("Write a note: what you did or decided.", "note")
    if len(note) > MAX_NOTE_LENGTH:
        raise InvalidInput(f"Use at most {MAX_NOTE_LENGTH} characters.", "note")
    ids = sorted(set(alert_ids))
    if not ids:
        raise InvalidInput("Choose at least one alert to acknowledge.", "alert")
    if len(ids) > MAX_ALERTS_PER_NOTE:
        raise InvalidInput(f"Choose at most {MAX_ALERTS_PER_NOTE} alerts at a time.", "alert")
    alerts = list(session.scalars(sa.select(Alert).where(Alert.id.in_(ids)).order_by(Alert.id)))
    if len(alerts) != len(ids):
        raise NotFound("There is no such record.", "alerts")
    clients = {alert.client_id for alert in alerts}
    if len(clients) != 1:
        raise InvalidInput("Acknowledge the alerts of one client at a time.", "alert")
    if client_id is not None and clients != {client_id}:
        raise NotFound("There is no such record.", "alerts")
    treated_client(session, user, clients.pop())
    now = datetime.now(UTC)
    closed = [alert for alert in alerts if alert.acknowledged_at is None]
    for alert in closed:
        alert.acknowledged_at = now
        alert.acknowledged_by = user.id
        alert.note = note
    session.flush()
    for alert in closed:
        record(session, actor, "alert.acknowledge", f"client:{alert.client_id}", address, alert=alert.id)
    return len(closed)


def alerts_of_responses(session: so.Session, response_ids: Sequence[int]) -> list[AlertRecord]:
    """Every alert (open or acknowledged) raised by these responses, in triage order. Not audited: it is part
    of a view that is (:func:`core.care.view_client`, :func:`client_report`)."""
    if not response_ids:
        return []
    return triage_order(read_alerts(session, Alert.response_id.in_(list(response_ids))))


@dataclass(frozen=True)
class ClientReport(ClientRecord):
    """What the printable report shows: the client record (:func:`core.care.load_client_record`), every alert its
    responses raised and when the report was made."""

    alerts: list[AlertRecord] = field(default_factory=list)
    made_at: datetime = field(default_factory=lambda: datetime.now(UTC))


def client_report(
    session: so.Session, user: User, client_id: int, *, episode_id: int | None = None, actor: str, address: str | None
) -> ClientReport:
    """The client report of one episode (default: the latest); audited as ``client.report`` with the episode id
    only: no score, answer or alert text goes into the audit."""
    found = load_client_record(session, user, client_id, episode_id=episode_id)
    alerts = alerts_of_responses(session, [response.id for response, _score in found.responses])
    episode = found.episode
    record(
        session, actor, "client.report", f"client:{found.client.id}", address, episode=episode.id if episode else None
    )
    return ClientReport(found.client, episode, found.sessions, found.responses, alerts, datetime.now(UTC))


def _aware(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value
