"""Links and submissions: the one path by which an answer is validated, scored and stored.

The web form, the JSON API and imports all call :func:`submit_response`, so every response
gets the same validation, scoring, alerts and audit entry, in one transaction.
"""

from __future__ import annotations

import random
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
import sqlalchemy.orm as so

from core.audit import record
from core.engine import Engine
from core.models import Alert, Assignment, Client, Response, Score
from core.scoring import ScoreResult, decimal_scores, score_response
from core.tokens import hash_token, new_token
from core.validation import validate_answers

DEFAULT_LINK_LIFETIME = timedelta(days=7)


def create_assignment(
    session: so.Session,
    engine: Engine,
    client: Client,
    instrument_id: str,
    *,
    episode_id: int | None = None,
    care_session_id: int | None = None,
    language: str = "en",
    lifetime: timedelta = DEFAULT_LINK_LIFETIME,
    allow_placeholder: bool = False,
) -> tuple[Assignment, str]:
    """Create an assignment of the newest version of an instrument; return it and its link token.

    Raises ``KeyError`` for an unknown instrument and ``ValueError`` for one whose licensed
    wording is not installed (placeholder wording counts only for demos: ``allow_placeholder``).
    """
    instrument = engine.instruments.get(instrument_id)
    if not (instrument.sendable or (allow_placeholder and instrument.wording_installed)):
        raise ValueError(f"{instrument_id}: licensed wording not installed; it cannot be sent to clients")
    token = new_token()
    assignment = Assignment(
        client=client,
        episode_id=episode_id,
        session_id=care_session_id,
        instrument_id=instrument.id,
        instrument_version=instrument.version,
        language=language,
        token_hash=hash_token(token),
        expires_at=datetime.now(UTC) + lifetime,
    )
    session.add(assignment)
    session.flush()
    return assignment, token


def find_assignment(session: so.Session, token: str) -> Assignment | None:
    return session.scalar(sa.select(Assignment).where(Assignment.token_hash == hash_token(token)))


def is_expired(assignment: Assignment, now: datetime | None = None) -> bool:
    expires = assignment.expires_at
    if expires.tzinfo is None:  # SQLite hands back naive datetimes
        expires = expires.replace(tzinfo=UTC)
    return (now or datetime.now(UTC)) >= expires


def history_for(
    session: so.Session, client_id: int, instrument_id: str, episode_id: int | None
) -> list[dict[str, Any]]:
    """Earlier answers of this client to this instrument in the same episode, oldest first."""
    query = sa.select(Response.answers).where(Response.client_id == client_id, Response.instrument_id == instrument_id)
    if episode_id is not None:
        query = query.where(Response.episode_id == episode_id)
    return list(session.scalars(query.order_by(Response.submitted_at, Response.id)))


def score_values_to_store(result: ScoreResult) -> dict[str, str | None]:
    return {name: None if value is None else str(value) for name, value in result.scores.items()}


def stored_score_values(score: Score) -> dict[str, Decimal | None]:
    """Scores read back from storage as exact Decimals."""
    return decimal_scores(score.values)


@dataclass(frozen=True)
class Submission:
    """What the client is told: the receipt, and whether this request stored the response."""

    response_id: int
    receipt: str
    created: bool


def submit_response(
    session: so.Session,
    engine: Engine,
    assignment: Assignment,
    answers: Mapping[str, Any],
    *,
    actor: str = "client-link",
    address: str | None = None,
    started_at: datetime | None = None,
) -> Submission:
    """Validate, score and store one response with its scores, alerts and audit entry.

    Everything is added to ``session`` and committed by the caller's transaction; a plugin
    hook that raises aborts the whole submission. A second submission for the same
    assignment returns the first one's receipt (``created`` False).
    Raises ``ResponseValidationError`` when the answers do not fit the instrument.
    """
    if assignment.response is not None:
        return Submission(assignment.response.id, assignment.response.receipt, created=False)
    instrument = engine.instruments.get(assignment.instrument_id, assignment.instrument_version)
    validate_answers(instrument, answers)
    history = (
        history_for(session, assignment.client_id, instrument.id, assignment.episode_id)
        if instrument.scoring.uses_history
        else []  # no rule looks back: do not load and re-score every earlier response
    )
    result = score_response(instrument, answers, history)
    now = datetime.now(UTC)
    response = Response(
        assignment=assignment,
        client_id=assignment.client_id,
        episode_id=assignment.episode_id,
        instrument_id=instrument.id,
        instrument_version=instrument.version,
        language=assignment.language,
        answers=dict(answers),
        receipt=secrets.token_hex(4).upper(),
        started_at=started_at,
        submitted_at=now,
    )
    session.add(response)
    assignment.completed_at = now
    session.flush()
    session.add(
        Score(
            response_id=response.id,
            complete=result.complete,
            values=score_values_to_store(result),
            band=result.band,
            flags=list(result.flags),
            scored_at=now,
        )
    )
    for alert in engine.alerts_for(result):
        session.add(
            Alert(
                response_id=response.id,
                client_id=assignment.client_id,
                rule=alert.rule,
                severity=alert.severity,
                message=alert.message,
                created_at=now,
            )
        )
    record(
        session,
        actor,
        "response.submit",
        f"response:{response.id}",
        address,
        at=now,
        instrument=instrument.id,
        version=instrument.version,
        assignment=assignment.id,
    )
    engine.plugin_manager.hook.response_submitted(
        instrument_id=instrument.id, version=instrument.version, response_id=response.id, result=result
    )
    session.flush()
    return Submission(response.id, response.receipt, created=True)


class LinkError(Exception):
    """A link that cannot be answered: ``reason`` is ``unknown``, ``expired`` or ``completed``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def submit_by_token(
    session_factory: so.sessionmaker[so.Session],
    engine: Engine,
    token: str,
    answers: Mapping[str, Any],
    **kwargs: Any,
) -> Submission:
    """Submit through a link in its own transaction; safe against double submits across processes.

    If another request stored a response for the same link first, the unique constraint on
    ``responses.assignment_id`` stops this one and its receipt is returned instead.
    Raises :class:`LinkError` or ``ResponseValidationError``.
    """
    attempts = 5
    lost_race = False
    for attempt in range(attempts):
        with session_factory() as session:
            try:
                with session.begin():
                    assignment = find_assignment(session, token)
                    if assignment is None:
                        raise LinkError("unknown")
                    if lost_race and assignment.response is None:
                        raise RuntimeError("the response could not be stored: a database constraint refused it")
                    if assignment.response is None and is_expired(assignment):
                        raise LinkError("expired")
                    return submit_response(session, engine, assignment, answers, **kwargs)
            except sa.exc.IntegrityError:
                # Most likely a concurrent submit of the same link won: the next pass reads its
                # receipt. If no response turns up, the constraint was another one: give up then.
                lost_race = True
            except sa.exc.OperationalError as exc:
                if not is_retryable(exc) or attempt == attempts - 1:
                    raise
                time.sleep(random.uniform(0.01, 0.05) * (attempt + 1))  # let the other transaction finish
    raise RuntimeError(f"submission could not be stored after {attempts} attempts")


def is_retryable(exc: sa.exc.DBAPIError) -> bool:
    """Serialization failures, deadlocks and SQLite lock time-outs are safe to retry."""
    code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    return code in ("40001", "40P01") or "database is locked" in str(exc.orig)
