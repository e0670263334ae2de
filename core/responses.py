"""Links and submissions: the one path by which an answer is validated, scored and stored.

Every response is stored by :func:`store_response`, so each gets the same validation, scoring, alerts and
audit entry, in one transaction: link pages through :func:`submit_link`, kiosks and scripts through
:func:`submit_answers` and :func:`submit_response` (an ORM session's transaction).
"""

from __future__ import annotations

import random
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, TypeVar, cast

import sqlalchemy as sa
import sqlalchemy.orm as so
from sqlalchemy.dialects import postgresql

from core.alerts import AlertContext, earlier_scores_loader
from core.audit import audit_values
from core.db import DirectStatement
from core.engine import Engine
from core.errors import DatabaseUnavailable
from core.models import (
    Alert,
    Assignment,
    AuditEntry,
    CareSession,
    Client,
    Episode,
    Response,
    Score,
    Site,
    ThrottleCounter,
)
from core.plans import moment_of
from core.scoring import ScoreResult, decimal_scores, score_response
from core.tokens import hash_token, new_token
from core.validation import validate_answers
from core.wording import wording_stamp_columns

DEFAULT_LINK_LIFETIME = timedelta(days=7)


def _nothing() -> None:
    pass


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


_FIND_ASSIGNMENT = (
    sa.select(Assignment)
    # a submit reads the response, the session's number and (for the held check) its episode's plan
    .options(so.joinedload(Assignment.response), so.joinedload(Assignment.session).joinedload(CareSession.episode))
    .where(Assignment.token_hash == sa.bindparam("token_hash"))
)


def find_assignment(session: so.Session, token: str) -> Assignment | None:
    """The link's assignment with its response, if any, in one query (every caller asks for it next)."""
    return session.scalar(_FIND_ASSIGNMENT, {"token_hash": hash_token(token)})


@dataclass(frozen=True)
class LinkView:
    """A link as its page shows it: plain values read with SQLAlchemy Core, no ORM objects.

    ``response_id`` and ``receipt`` are set once the link was answered; ``held`` says whether it is an
    end-of-session questionnaire still waiting for its session's release (see :func:`is_held`);
    ``show_progress`` is the client's setting for the done page.
    """

    id: int
    client_id: int
    token_hash: str
    instrument_id: str
    instrument_version: str
    language: str
    expires_at: datetime
    completed_at: datetime | None
    response_id: int | None
    receipt: str | None
    held: bool
    show_progress: bool
    episode_id: int | None
    session_number: int | None

    def target(self) -> SubmissionTarget:
        """What storing an answer to this link needs (:func:`submit_link`)."""
        return SubmissionTarget(
            self.id,
            self.client_id,
            self.episode_id,
            self.session_number,
            self.instrument_id,
            self.instrument_version,
            self.language,
            self.token_hash,
        )


@dataclass(frozen=True)
class SubmissionTarget:
    """The link a response answers, as :func:`store_response` needs it: plain values, read before or inside
    the submission's transaction. ``token_hash`` is the link's token as it was read: a link re-issued since
    then is refused (:class:`LinkChanged`)."""

    assignment_id: int
    client_id: int
    episode_id: int | None
    session_number: int | None
    instrument_id: str
    instrument_version: str
    language: str
    token_hash: str

    @classmethod
    def of(cls, assignment: Assignment) -> SubmissionTarget:
        care = assignment.session if assignment.session_id is not None else None
        return cls(
            assignment.id,
            assignment.client_id,
            assignment.episode_id,
            care.number if care is not None else None,
            assignment.instrument_id,
            assignment.instrument_version,
            assignment.language,
            assignment.token_hash,
        )


@dataclass(frozen=True)
class LinkLookup:
    """What a link page needs, read in one statement (:func:`look_up_link`).

    ``link`` is None for an unknown token; ``guesses`` is the address's count of unknown tokens in
    the current throttle window, ``site_name`` the name of the site the client is seen at,
    ``wording_stamp`` the stored wording's stamp for :func:`core.wording.refresh_wording`.
    """

    link: LinkView | None
    guesses: int
    site_name: str | None
    wording_stamp: tuple[int, int | None] | None


def _link_lookup_statement() -> sa.Select[Any]:
    links, responses, clients = Assignment.__table__, Response.__table__, Client.__table__
    care, episodes, sites = CareSession.__table__, Episode.__table__, Site.__table__
    guesses = (
        sa.select(ThrottleCounter.count)
        .where(ThrottleCounter.key == sa.bindparam("guess_key"), ThrottleCounter.window_start == sa.bindparam("window"))
        .scalar_subquery()
    )
    return (
        sa.select(
            links.c.id,
            links.c.client_id,
            links.c.token_hash,
            links.c.instrument_id,
            links.c.instrument_version,
            links.c.language,
            links.c.expires_at,
            links.c.completed_at,
            responses.c.id,
            responses.c.receipt,
            links.c.session_id,
            care.c.end_released_at,
            episodes.c.plan,
            clients.c.show_progress,
            sites.c.name,
            guesses,
            *wording_stamp_columns(),
            links.c.episode_id,
            care.c.number,
        )
        .select_from(
            links.join(clients, clients.c.id == links.c.client_id)
            .outerjoin(sites, sites.c.id == clients.c.site_id)
            .outerjoin(responses, responses.c.assignment_id == links.c.id)
            .outerjoin(care, care.c.id == links.c.session_id)
            .outerjoin(episodes, episodes.c.id == care.c.episode_id)
        )
        .where(links.c.token_hash == sa.bindparam("token_hash"))
    )


_LINK_LOOKUP = DirectStatement(_link_lookup_statement())  # built and compiled once: that cost more than running it


def look_up_link(
    db: sa.Engine,
    token: str,
    *,
    guess_key: str,
    window_seconds: int,
    now: float | None = None,
) -> LinkLookup:
    """A link with its response, its address's throttle count, its site and the wording stamp.

    A page view of a valid link is the hottest path of the portal: one SELECT with joins and scalar
    subqueries, run on a pooled DBAPI connection without a transaction (:class:`core.db.DirectStatement`: no
    ORM objects, no write lock on SQLite, one round trip on PostgreSQL). An unknown token finds no row,
    so its caller reads the throttle count itself (:func:`core.throttle.attempts`) before counting the
    guess.
    """
    window = int((now if now is not None else time.time()) // window_seconds)
    params = {"token_hash": hash_token(token), "guess_key": guess_key, "window": window}
    row = _LINK_LOOKUP.first(db, params)
    if row is None:
        return LinkLookup(None, 0, None, None)
    # the first ten columns are LinkView's own, in its order; the rest decide ``held`` or go beside it
    completed_at, instrument_id = row[7], row[3]
    session_id, released_at, plan, show_progress, site_name, guess_count, wording_count, wording_newest = row[10:18]
    held = session_id is not None and waits_for_release(completed_at, released_at, plan, instrument_id)
    link = LinkView(*row[:10], held, bool(show_progress), *row[18:])
    return LinkLookup(link, guess_count or 0, site_name, (wording_count, wording_newest))


def is_expired(assignment: Assignment | LinkView, now: datetime | None = None) -> bool:
    expires = assignment.expires_at
    if expires.tzinfo is None:  # SQLite hands back naive datetimes
        expires = expires.replace(tzinfo=UTC)
    return (now or datetime.now(UTC)) >= expires


def is_held(assignment: Assignment) -> bool:
    """Whether an unanswered end-of-session questionnaire still waits for its session's release.

    The plan's ``end`` measures (the SRS of PCOMS) are given after the session has happened: their links and
    the kiosk hold them until the clinician releases them (:func:`core.care.release_end_of_session`).
    """
    care = assignment.session
    if care is None:
        return False
    return waits_for_release(assignment.completed_at, care.end_released_at, care.episode.plan, assignment.instrument_id)


def waits_for_release(completed_at: Any, released_at: Any, plan: Any, instrument_id: str) -> bool:
    """:func:`is_held` from the values it reads, for a session's questionnaire read as a row (not yet answered,
    the session's end not released, and the plan gives it at the end)."""
    return completed_at is None and released_at is None and moment_of(plan, instrument_id) == "end"


def _earlier_statement(in_episode: bool) -> sa.Select[Any]:
    query = (
        sa.select(Response.answers, Score.values)
        .outerjoin(Score, Score.response_id == Response.id)
        .where(
            Response.client_id == sa.bindparam("client_id"),
            Response.instrument_id == sa.bindparam("instrument_id"),
            Response.submitted_at <= sa.bindparam("now"),
        )
    )
    if in_episode:
        query = query.where(Response.episode_id == sa.bindparam("episode_id"))
    return query.order_by(Response.submitted_at, Response.id)


_EARLIER = {in_episode: DirectStatement(_earlier_statement(in_episode)) for in_episode in (True, False)}  # built once


def earlier_responses(
    reader: sa.Connection | sa.Engine, client_id: int, instrument_id: str, episode_id: int | None, now: datetime
) -> list[tuple[dict[str, Any], dict[str, Any] | None]]:
    """The client's earlier responses to this instrument (in the same episode, when there is one), oldest first:
    each one's answers (what rules that look back re-score) and its stored scores (what alert rules compare
    with), in one query: in the transaction of ``reader`` when it is a connection, or, when it is the engine,
    what is committed, read outside any transaction (:class:`core.db.DirectStatement`)."""
    params = {"client_id": client_id, "instrument_id": instrument_id, "episode_id": episode_id, "now": now}
    return [(answers, values) for answers, values in _EARLIER[episode_id is not None].all(reader, params)]


def score_values_to_store(result: ScoreResult) -> dict[str, str | None]:
    return {name: None if value is None else str(value) for name, value in result.scores.items()}


def stored_score_values(score: Any) -> dict[str, Decimal | None]:
    """Scores read back from storage as exact Decimals (of a :class:`Score` or a ``core.care.ScoreRecord``)."""
    return decimal_scores(score.values)


@dataclass(frozen=True)
class Submission:
    """What the client is told: the receipt, and whether this request stored the response."""

    response_id: int
    receipt: str
    created: bool


class LinkChanged(Exception):
    """The link was answered, re-issued, expired or removed after it was read: nothing was stored."""


@dataclass(frozen=True)
class StoredResponse:
    """What :func:`store_response` wrote: the client's receipt, and the response row's values."""

    submission: Submission
    row: dict[str, Any]


def store_response(
    writer: sa.Connection | sa.Engine,
    engine: Engine,
    target: SubmissionTarget,
    answers: Mapping[str, Any],
    *,
    actor: str = "client-link",
    address: str | None = None,
    started_at: datetime | None = None,
    look_back_committed: bool = False,
) -> StoredResponse:
    """Validate, score and store one response with its scores, alerts and audit entry: the one way a response
    is stored. ``writer`` is a connection: everything runs on it, in its transaction, which the caller commits,
    and a plugin hook that raises aborts the whole submission. On PostgreSQL it may be the engine instead, when no
    plugin listens to ``response_submitted``: then the writes are one statement that commits by itself
    (:class:`core.db.DirectStatement`), with no ``Connection`` checked out around it.

    ``look_back_committed``: the reads of earlier responses (for rules that look back) read what is committed,
    outside the transaction, instead of in it (always so when ``writer`` is the engine). A caller whose
    transaction has written nothing yet passes True (:func:`submit_link`): then the transaction begins with the
    first write, and on SQLite the write lock is not held while the answers are scored and the alert rules run.
    On PostgreSQL's READ COMMITTED the reads see the same either way.

    The link is completed first, and only if it is still open for this answer (not answered, not re-issued,
    not expired, still there); otherwise :class:`LinkChanged` is raised and nothing was written. Validation,
    scoring and the alert rules run before the first write (they read only the earlier responses, when a rule
    looks back), so a connection that begins its transaction on first use (SQLite's ``BEGIN IMMEDIATE``) holds
    the write lock only for the statements, and on PostgreSQL the alerts go in with the response.
    Raises ``ResponseValidationError`` when the answers do not fit the instrument.
    """
    if isinstance(writer, sa.Engine) and writer.dialect.name != "postgresql":
        raise TypeError("only PostgreSQL stores a response as one statement of its own: give SQLite a connection")
    instrument = engine.instruments.get(target.instrument_id, target.instrument_version)
    validate_answers(instrument, answers)
    now = datetime.now(UTC)
    if isinstance(writer, sa.Engine):
        reader: sa.Connection | sa.Engine = writer
    else:
        reader = writer.engine if look_back_committed else writer
    earlier = (
        earlier_responses(reader, target.client_id, instrument.id, target.episode_id, now)
        if instrument.scoring.uses_history
        else None  # no rule looks back: do not load and re-score every earlier response
    )
    result = score_response(instrument, answers, [given for given, _scores in earlier or ()])
    row = {
        "assignment_id": target.assignment_id,
        "client_id": target.client_id,
        "episode_id": target.episode_id,
        "instrument_id": instrument.id,
        "instrument_version": instrument.version,
        "language": target.language,
        "answers": dict(answers),
        "receipt": secrets.token_hex(4).upper(),
        "started_at": started_at,
        "submitted_at": now,
    }
    score = {
        "complete": result.complete,
        "values": score_values_to_store(result),
        "band": result.band,
        "flags": list(result.flags),
        "scored_at": now,
    }
    audit = audit_values(
        actor,
        "response.submit",
        None,  # the response's id, known once it is stored
        address,
        now,
        {"instrument": instrument.id, "version": instrument.version, "assignment": target.assignment_id},
    )
    context = AlertContext(
        instrument,
        result,
        answers=answers,
        session_number=target.session_number,
        # the scores loaded with the answers above, or a query only if a rule asks for them
        load_earlier=(
            earlier_scores_loader(reader, row)
            if earlier is None
            else lambda: [decimal_scores(scores) for _answers, scores in earlier if scores is not None]
        ),
        load_expected=lambda score: _expected_table(engine, writer, instrument, score),
    )
    # worked out before the write (a rule that looks back reads only earlier responses), so on PostgreSQL the
    # alerts go in with the response in its one statement
    alerts = [
        {"rule": alert.rule, "severity": alert.severity, "message": alert.message}
        for alert in engine.alerts_for(context)
    ]
    response_id = _write_response(writer, target, row, score, alerts, audit)
    row["id"] = response_id
    engine.plugin_manager.hook.response_submitted(
        instrument_id=instrument.id, version=instrument.version, response_id=response_id, result=result
    )
    return StoredResponse(Submission(response_id, row["receipt"], created=True), row)


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
    """:func:`store_response` for an assignment loaded in an ORM session, in the session's transaction.

    The session is told what was stored, so a caller that reads ``assignment.response`` afterwards finds it.
    A second submission for the same assignment returns the first one's receipt (``created`` False).
    Raises ``ResponseValidationError``, or :class:`LinkChanged` (nothing written) when the link stopped being
    open after the caller read it; :func:`submit_answers` then reads it again.
    """
    if assignment.response is not None:
        return Submission(assignment.response.id, assignment.response.receipt, created=False)
    session.flush()  # whatever the caller added first (a new assignment, say) goes in before the rows below
    stored = store_response(
        session.connection(),
        engine,
        SubmissionTarget.of(assignment),
        answers,
        actor=actor,
        address=address,
        started_at=started_at,
    )
    response = Response(**stored.row)
    so.make_transient_to_detached(response)  # stored already: the session takes it as loaded, not as new
    session.add(response)
    so.attributes.set_committed_value(assignment, "response", response)
    so.attributes.set_committed_value(assignment, "completed_at", stored.row["submitted_at"])
    return stored.submission


def _expected_table(engine: Engine, writer: sa.Connection | sa.Engine, instrument: Any, score: str) -> Any:
    """The clinic's expected-change table for an alert rule (kept for a while, so read from the database seldom)."""
    if isinstance(writer, sa.Engine):
        with writer.connect() as connection:
            return engine.expected.table(connection, instrument, score)
    return engine.expected.table(writer, instrument, score)


_LINKS = Assignment.__table__
_COMPLETE_ASSIGNMENT = (  # completes the link only while it is open for this answer
    sa.update(_LINKS)
    .where(
        _LINKS.c.id == sa.bindparam("assignment_id"),
        _LINKS.c.token_hash == sa.bindparam("read_token_hash"),
        _LINKS.c.completed_at.is_(None),
        _LINKS.c.expires_at > sa.bindparam("now", type_=_LINKS.c.expires_at.type),
    )
    .values(completed_at=sa.bindparam("now", type_=_LINKS.c.completed_at.type))
)


def _write_response(
    writer: sa.Connection | sa.Engine,
    target: SubmissionTarget,
    row: dict[str, Any],
    score: dict[str, Any],
    alerts: list[dict[str, str]],
    audit: dict[str, Any],
) -> int:
    """Complete the link and insert the response, its score, its alerts and the audit entry; the response's id.

    Raises :class:`LinkChanged` (nothing written) when the link is no longer open for this answer. On
    PostgreSQL the writes are one statement (data-modifying CTEs: one round trip, and a transaction of its own
    when ``writer`` is the engine); elsewhere four, and one more for each alert a rule raised, each run straight on
    the connection's DBAPI connection in its transaction.
    """
    completion = {
        "assignment_id": target.assignment_id,
        "read_token_hash": target.token_hash,
        "now": row["submitted_at"],
    }
    if writer.dialect.name == "postgresql":
        params = {
            **completion,
            **_prefixed("r_", row),
            **_prefixed("s_", score),
            **_prefixed("a_", audit),
            **{array: [alert[name] for alert in alerts] for name, array in _ALERT_ARRAYS.items()},
        }
        stored = _STORE_IN_ONE_STATEMENT.first(writer, params)
        if stored is None:
            raise LinkChanged(target.assignment_id)
        return stored[0]
    connection = cast(sa.Connection, writer)  # an engine only on PostgreSQL (store_response checks)
    if _COMPLETE_LINK.first(connection, completion) is None:
        raise LinkChanged(target.assignment_id)
    response_id = _INSERT_RESPONSE.first(connection, row)[0]
    _INSERT_SCORE.first(connection, {**score, "response_id": response_id})
    extra = {"response_id": response_id, "client_id": target.client_id, "created_at": row["submitted_at"]}
    for alert in alerts:
        _INSERT_ALERT.first(connection, {**alert, **extra})
    _INSERT_AUDIT.first(connection, {**audit, "target": f"response:{response_id}"})
    return response_id


# The columns a submission writes, on every database (Python-side defaults do not apply to these statements: each
# names every value). The response and the score take all of theirs but the ids that come from the statement.
_RESPONSES, _SCORES, _ALERTS, _ENTRIES = Response.__table__, Score.__table__, Alert.__table__, AuditEntry.__table__
_RESPONSE_COLUMNS = [c.name for c in _RESPONSES.c if c.name not in ("id", "assignment_id")]
_SCORE_COLUMNS = [c.name for c in _SCORES.c if c.name != "response_id"]
# an alert's own columns (beside its response, client and time), and the arrays that carry them on PostgreSQL
_ALERT_ARRAYS = {"rule": "alert_rules", "severity": "alert_severities", "message": "alert_messages"}
_ALERT_COLUMNS = list(_ALERT_ARRAYS)
_ENTRY_COLUMNS = ["at", "actor", "action", "address", "detail"]  # beside the target, "response:<id>"


def _given(table: sa.Table, names: list[str], prefix: str = "") -> list[sa.BindParameter[Any]]:
    """A parameter for each of ``names``, typed as its column (so values are converted as the ORM would)."""
    return [sa.bindparam(prefix + name, type_=table.c[name].type) for name in names]


def _insert(table: sa.Table, names: list[str], returning: sa.Column[Any]) -> DirectStatement:
    values = dict(zip(names, _given(table, names), strict=True))
    return DirectStatement(sa.insert(table).values(values).returning(returning), writes=True)


# The writes of a submission elsewhere than on PostgreSQL, each run on the writing connection's DBAPI connection in
# its transaction (DirectStatement given a connection).
_COMPLETE_LINK = DirectStatement(_COMPLETE_ASSIGNMENT.returning(_LINKS.c.id), writes=True)
_INSERT_RESPONSE = _insert(_RESPONSES, ["assignment_id", *_RESPONSE_COLUMNS], _RESPONSES.c.id)
_INSERT_SCORE = _insert(_SCORES, ["response_id", *_SCORE_COLUMNS], _SCORES.c.response_id)
_INSERT_ALERT = _insert(_ALERTS, ["response_id", "client_id", *_ALERT_COLUMNS, "created_at"], _ALERTS.c.id)
_INSERT_AUDIT = _insert(_ENTRIES, ["target", *_ENTRY_COLUMNS], _ENTRIES.c.id)


def _prefixed(prefix: str, values: dict[str, Any]) -> dict[str, Any]:
    return {prefix + key: value for key, value in values.items()}


def _store_in_one_statement() -> sa.Select[Any]:
    """:data:`_COMPLETE_ASSIGNMENT` and the INSERTs chained by CTEs: each takes the id the one before returned,
    so if the link was not completed nothing is inserted and the statement returns no row. The alerts come as
    three arrays (rule, severity, message), one row each; empty arrays insert none."""
    completed = _COMPLETE_ASSIGNMENT.returning(_LINKS.c.id).cte("completed")
    response = (
        sa.insert(_RESPONSES)
        .from_select(
            ["assignment_id", *_RESPONSE_COLUMNS],
            sa.select(completed.c.id, *_given(_RESPONSES, _RESPONSE_COLUMNS, "r_")),
        )
        .returning(_RESPONSES.c.id)
        .cte("response")
    )
    score = (
        sa.insert(_SCORES)
        .from_select(["response_id", *_SCORE_COLUMNS], sa.select(response.c.id, *_given(_SCORES, _SCORE_COLUMNS, "s_")))
        .returning(_SCORES.c.response_id)
        .cte("score")
    )
    raised = (
        sa.func.unnest(*(sa.bindparam(array, type_=postgresql.ARRAY(sa.Text)) for array in _ALERT_ARRAYS.values()))
        .table_valued(*_ALERT_COLUMNS)
        .render_derived(name="raised")
    )
    alert = (
        sa.insert(_ALERTS)
        .from_select(
            ["response_id", "client_id", *_ALERT_COLUMNS, "created_at"],
            sa.select(
                response.c.id,
                sa.bindparam("r_client_id", type_=_ALERTS.c.client_id.type),
                *(raised.c[name] for name in _ALERT_COLUMNS),
                sa.bindparam("now", type_=_ALERTS.c.created_at.type),
            ).select_from(response.join(raised, sa.true())),
        )
        .returning(_ALERTS.c.id)
        .cte("alert")
    )
    target = sa.literal("response:", sa.String) + sa.cast(response.c.id, sa.String)
    entry = (
        sa.insert(_ENTRIES)
        .from_select(["target", *_ENTRY_COLUMNS], sa.select(target, *_given(_ENTRIES, _ENTRY_COLUMNS, "a_")))
        .returning(_ENTRIES.c.id)
        .cte("entry")
    )
    return sa.select(response.c.id).add_cte(score, alert, entry)


_STORE_IN_ONE_STATEMENT = DirectStatement(_store_in_one_statement(), writes=True)


class LinkError(Exception):
    """A link that cannot be answered: ``reason`` is ``unknown``, ``expired``, ``completed`` or ``held``
    (an end-of-session questionnaire not released yet: see :func:`is_held`)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


DEFAULT_RETRY_SECONDS = 5.0
T = TypeVar("T")
_Model = TypeVar("_Model", Assignment, CareSession, Episode)


def retry_database(
    work: Callable[[], T], *, seconds: float = DEFAULT_RETRY_SECONDS, reset: Callable[[], None] = _nothing
) -> T:
    """Run ``work``; while the database is busy or unreachable, run it again with growing pauses.

    A restart or failover of PostgreSQL, or SQLite's write lock held elsewhere, passes within a
    few seconds; after ``seconds`` :class:`DatabaseUnavailable` is raised and nothing was stored.
    ``reset`` runs before each new try (to drop a session whose connection died).
    """
    deadline = time.monotonic() + seconds
    pause = 0.05
    while True:
        try:
            return work()
        except sa.exc.DBAPIError as exc:
            if not is_retryable(exc):
                raise
            reset()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DatabaseUnavailable("The database cannot be reached just now; nothing was stored.") from exc
            time.sleep(min(remaining, pause * random.uniform(0.5, 1.0)))
            pause = min(pause * 2, 1.0)


def submit_answers(
    session_factory: so.sessionmaker[so.Session],
    engine: Engine,
    locate: Callable[[so.Session], Assignment],
    answers: Mapping[str, Any],
    *,
    retry_seconds: float = DEFAULT_RETRY_SECONDS,
    **kwargs: Any,
) -> Submission:
    """Store one response in its own transaction, with the assignment read inside it: the kiosks' path, and the
    links' when the page's own read no longer holds (:func:`submit_link`).

    ``locate`` finds the assignment inside the transaction (raising :class:`LinkError`). Lock
    time-outs, serialization failures and a lost connection are retried (:func:`retry_database`).
    If another request stored a response for the same assignment first (the unique constraint on
    ``responses.assignment_id`` stops this one, or on PostgreSQL the link was completed between
    ``locate`` and the write), the next pass finds it and the first one's receipt is returned.
    Raises :class:`LinkError`, ``ResponseValidationError`` or :class:`DatabaseUnavailable`.
    """
    lost_race = False
    changed = False

    def attempt() -> Submission | None:
        nonlocal lost_race, changed
        with session_factory() as session:
            try:
                with session.begin():
                    assignment = locate(session)
                    if lost_race and assignment.response is None:
                        raise RuntimeError("the response could not be stored: a database constraint refused it")
                    return submit_response(session, engine, assignment, answers, **kwargs)
            except LinkChanged:
                # Completed, re-issued or expired after ``locate`` read it (READ COMMITTED lets a concurrent
                # submission finish in between): nothing was written; the next pass reads what is there now.
                changed = True
                return None
            except sa.exc.IntegrityError:
                # Most likely a concurrent submit of the same assignment won: the next pass reads its
                # receipt. If no response turns up, the constraint was another one: give up then.
                lost_race = True
                return None

    for _ in range(2):
        changed = False
        submission = retry_database(attempt, seconds=retry_seconds)
        if submission is not None:
            return submission
    if changed:
        raise LinkError("expired")  # it changed again under the second pass: no longer open for this answer
    raise RuntimeError("the response could not be stored: a database constraint refused it")


def _loaded(session: so.Session, instance: _Model) -> _Model:
    """Put an object built from a row this session's transaction just read into the session as if the ORM had
    loaded it (no INSERT follows); what was not read loads on first use as usual."""
    so.make_transient_to_detached(instance)
    session.add(instance)
    return instance


def _submit_lookup_statement() -> sa.Select[Any]:
    links, care, episodes = Assignment.__table__, CareSession.__table__, Episode.__table__
    return (
        sa.select(links, care, episodes.c.id, episodes.c.plan, Response.__table__.c.id)
        .select_from(
            links.outerjoin(care, care.c.id == links.c.session_id)
            .outerjoin(episodes, episodes.c.id == care.c.episode_id)
            .outerjoin(Response.__table__, Response.__table__.c.assignment_id == links.c.id)
        )
        .where(links.c.token_hash == sa.bindparam("token_hash"))
    )


_SUBMIT_LOOKUP = _submit_lookup_statement()


def find_assignment_to_submit(session: so.Session, token: str) -> Assignment | None:
    """:func:`find_assignment` for a submission: one Core statement reads the link, its care session and the
    plan (a submission needs them all), and the session gets them as loaded objects. An answered link is
    read the usual way (the first receipt is what it needs)."""
    row = session.connection().execute(_SUBMIT_LOOKUP, {"token_hash": hash_token(token)}).first()
    if row is None:
        return None
    links, care = Assignment.__table__, CareSession.__table__
    if row[-1] is not None:  # answered already
        return find_assignment(session, token)
    assignment = _loaded(session, Assignment(**{c.key: row[i] for i, c in enumerate(links.c)}))
    so.attributes.set_committed_value(assignment, "response", None)
    if assignment.session_id is None:
        so.attributes.set_committed_value(assignment, "session", None)
        return assignment
    offset = len(links.c)
    visit = _loaded(session, CareSession(**{c.key: row[offset + i] for i, c in enumerate(care.c)}))
    episode_id, plan = row[offset + len(care.c)], row[offset + len(care.c) + 1]
    so.attributes.set_committed_value(visit, "episode", _loaded(session, Episode(id=episode_id, plan=plan)))
    so.attributes.set_committed_value(assignment, "session", visit)
    return assignment


def submit_by_token(
    session_factory: so.sessionmaker[so.Session],
    engine: Engine,
    token: str,
    answers: Mapping[str, Any],
    **kwargs: Any,
) -> Submission:
    """Submit through a link (see :func:`submit_answers`)."""

    def locate(session: so.Session) -> Assignment:
        assignment = find_assignment_to_submit(session, token)
        if assignment is None:
            raise LinkError("unknown")
        if assignment.response is None and is_expired(assignment):
            raise LinkError("expired")
        if assignment.response is None and is_held(assignment):
            raise LinkError("held")
        return assignment

    return submit_answers(session_factory, engine, locate, answers, **kwargs)


def submit_link(
    db: sa.Engine,
    session_factory: so.sessionmaker[so.Session],
    engine: Engine,
    link: LinkView,
    token: str,
    answers: Mapping[str, Any],
    *,
    address: str | None = None,
    started_at: datetime | None = None,
    retry_seconds: float = DEFAULT_RETRY_SECONDS,
) -> Submission:
    """Submit through a link its page has just read (:func:`look_up_link`) and found open: the link pages' path.

    The writing transaction reads nothing before it writes: :func:`store_response` completes the link only if
    it is still open for this answer. If it is not (a double click stored the first answer meanwhile, or the
    link was re-issued, expired or removed), nothing was written and :func:`submit_by_token` reads the link
    again inside its own transaction, which returns the first receipt or raises the right :class:`LinkError`.
    Lock time-outs and lost connections are retried as in :func:`submit_answers`.
    Raises :class:`LinkError`, ``ResponseValidationError`` or :class:`DatabaseUnavailable`.
    """
    target = link.target()
    # The reads before the write (history, earlier scores) see what is committed, read outside the transaction, as
    # they would inside a READ COMMITTED one; on SQLite the write lock is then taken only for the writes.
    # On PostgreSQL the response goes in as one statement, which is a transaction of its own, run straight on a
    # pooled connection (store_response given the engine): no BEGIN and COMMIT round trips, no Connection. A plugin
    # that listens to ``response_submitted`` may abort the submission by raising, so then the statement runs on a
    # Connection, in a transaction that its hook call is part of.
    one_statement = (
        db.dialect.name == "postgresql" and not engine.plugin_manager.hook.response_submitted.get_hookimpls()
    )

    def attempt() -> Submission:
        if one_statement:
            return store_response(db, engine, target, answers, address=address, started_at=started_at).submission
        with db.connect() as connection:
            stored = store_response(
                connection, engine, target, answers, address=address, started_at=started_at, look_back_committed=True
            )
            connection.commit()
            return stored.submission

    try:
        return retry_database(attempt, seconds=retry_seconds)
    except (LinkChanged, sa.exc.IntegrityError):
        return submit_by_token(
            session_factory, engine, token, answers, address=address, started_at=started_at, retry_seconds=retry_seconds
        )


# SQLSTATE classes that pass: connection exceptions (08), operator intervention such as an
# administrator's shutdown or a crash recovery (57P), serialization failure and deadlock.
_RETRYABLE_SQLSTATES = ("08", "57P", "40001", "40P01")
_RETRYABLE_SQLITE = ("database is locked", "unable to open database file", "disk i/o error")


def is_retryable(exc: sa.exc.DBAPIError) -> bool:
    """Whether an error passes by itself: a lost or refused connection, a lock time-out, a serialization failure."""
    if exc.connection_invalidated:
        return True
    if not isinstance(exc, (sa.exc.OperationalError, sa.exc.InterfaceError)):
        return False
    orig = exc.orig
    if type(orig).__module__.startswith("sqlite3"):
        return any(text in str(orig).lower() for text in _RETRYABLE_SQLITE)
    code = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    # A server that answered always names its SQLSTATE; none means it was never reached.
    return code is None or code.startswith(_RETRYABLE_SQLSTATES)
