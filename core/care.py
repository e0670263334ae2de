"""The care domain: episodes, sessions with their links, links, kiosks and alerts.

Each function is one operation a clinic performs. It checks its input, adds its audit entry to
the caller's transaction and raises a typed error from :mod:`core.errors`; the web views, the CLI
and the API call these and only parse, commit and render. Access (whose client this is) is
checked when the record is loaded: :func:`visible_record` and :func:`core.clients.visible_client`
raise :class:`NotFound` for a record the person may not see. Reads of client data
(:func:`view_caseload`, :func:`view_client`, ...) are operations too: each is audited.

Links are shown once, when they are made: only their hashes are stored. To hand a link out again
the clinician re-issues it, which replaces the hash (the old link stops working).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

import sqlalchemy as sa
import sqlalchemy.orm as so

from core.accounts import SignInLimits, confirm_password, end_session
from core.audit import PendingEntries, record
from core.clients import treated_client, visible_client, visible_client_ids
from core.engine import Engine
from core.errors import Conflict, InvalidInput, NotFound
from core.models import (
    Alert,
    Assignment,
    CareSession,
    Client,
    Episode,
    KioskSession,
    Response,
    Score,
    User,
    UserSession,
)
from core.plans import BUILTIN_PLANS, DEFAULT_PLAN, PlanError, due_in_session, moment_of, parse_plan
from core.progress import Administration, OwnTrend, own_trends
from core.responses import (
    DEFAULT_LINK_LIFETIME,
    DEFAULT_RETRY_SECONDS,
    LinkError,
    Submission,
    create_assignment,
    is_expired,
    is_held,
    stored_score_values,
    submit_answers,
    waits_for_release,
)
from core.tokens import hash_token, new_token

MAX_NOTE_LENGTH = 2000
MAX_TITLE_LENGTH = 128

# -- episodes ------------------------------------------------------------------------


def start_episode(
    session: so.Session,
    engine: Engine,
    client: Client,
    *,
    title: str | None,
    plan: str,
    custom_plan: str | None = None,
    actor: str,
    address: str | None,
) -> Episode:
    """Start an episode of care following a built-in plan or a custom one; the open episode ends.

    ``plan`` names a built-in plan or is ``"custom"``, in which case ``custom_plan`` holds its text
    form (see :mod:`core.plans`). Change is measured from the new episode's first administration.
    """
    if plan == "custom":
        try:
            rules = parse_plan(custom_plan or "", engine.instruments)
        except PlanError as exc:
            raise InvalidInput(str(exc), "custom") from None
    elif plan in BUILTIN_PLANS:
        rules = BUILTIN_PLANS[plan][1]
    else:
        raise InvalidInput(f"Choose one of: {', '.join([*BUILTIN_PLANS, 'custom'])}.", "plan")
    title = (title or "").strip() or None
    if title and len(title) > MAX_TITLE_LENGTH:
        raise InvalidInput(f"Use at most {MAX_TITLE_LENGTH} characters.", "title")
    now = datetime.now(UTC)
    for open_episode in client.episodes:
        if open_episode.ended_at is None:
            open_episode.ended_at = now
    episode = Episode(client_id=client.id, title=title, plan_name=plan, plan=rules, started_at=now)
    session.add(episode)
    session.flush()
    record(session, actor, "episode.create", f"client:{client.id}", address, episode=episode.id)
    return episode


def plan_moment(episode: Episode, instrument_id: str) -> str:
    """When the episode's plan gives the instrument: ``start``, ``end``, or ``""`` when the plan does not name it."""
    return moment_of(episode.plan, instrument_id)


# -- sessions and their links ----------------------------------------------------------


@dataclass(frozen=True)
class IssuedLink:
    """A link made just now: the token is shown to the clinician once and never stored."""

    assignment: Assignment
    token: str
    moment: str


@dataclass(frozen=True)
class StartedSession:
    """The outcome of :func:`start_care_session`.

    ``created`` is False when the session had been started already (a reload or a re-post): then
    no links are made again. ``skipped`` lists (instrument id, reason) for instruments the plan
    names that cannot be sent: reason ``not_installed`` or ``no_wording``.
    """

    care: CareSession
    links: tuple[IssuedLink, ...]
    skipped: tuple[tuple[str, str], ...]
    created: bool


def next_session_number(session: so.Session, episode: Episode) -> int:
    return (
        session.scalar(sa.select(sa.func.max(CareSession.number)).where(CareSession.episode_id == episode.id)) or 0
    ) + 1


def start_care_session(
    session: so.Session,
    engine: Engine,
    episode: Episode,
    *,
    number: int,
    lifetime: timedelta = DEFAULT_LINK_LIFETIME,
    actor: str,
    address: str | None,
) -> StartedSession:
    """Start session ``number`` of the episode and make the links its plan gives; idempotent.

    The caller names the number it means to start (the button said "Start session 3"), so a
    reload, Back/Forward or a re-post finds session 3 and starts nothing; two requests at once are
    kept apart by the unique (episode, number) constraint. A number beyond the next one is refused.
    """
    existing = session.scalar(
        sa.select(CareSession).where(CareSession.episode_id == episode.id, CareSession.number == number)
    )
    if existing is not None:
        return StartedSession(existing, (), (), created=False)
    if episode.ended_at is not None:
        raise Conflict("This episode has ended: start a new episode first.", "episode")
    expected = next_session_number(session, episode)
    if number != expected:
        raise Conflict(f"The next session of this episode is session {expected}, not {number}.", "number")
    care = CareSession(episode_id=episode.id, number=number)
    try:
        with session.begin_nested():
            session.add(care)
            session.flush()
    except sa.exc.IntegrityError:  # another request started the same session a moment ago
        won = session.scalar(
            sa.select(CareSession).where(CareSession.episode_id == episode.id, CareSession.number == number)
        )
        if won is None:
            raise
        return StartedSession(won, (), (), created=False)
    links, skipped = [], []
    client = episode.client
    for rule in due_in_session(episode.plan or BUILTIN_PLANS[DEFAULT_PLAN][1], number):
        try:
            assignment, token = create_assignment(
                session,
                engine,
                client,
                rule["instrument"],
                episode_id=episode.id,
                care_session_id=care.id,
                language=client.language,
                lifetime=lifetime,
            )
        except KeyError:
            skipped.append((rule["instrument"], "not_installed"))
            continue
        except ValueError:
            skipped.append((rule["instrument"], "no_wording"))
            continue
        links.append(IssuedLink(assignment, token, rule["moment"]))
    record(
        session,
        actor,
        "session.create",
        f"client:{client.id}",
        address,
        care_session=care.id,
        number=number,
        assignments=[link.assignment.id for link in links],
    )
    return StartedSession(care, tuple(links), tuple(skipped), created=True)


def cancel_care_session(session: so.Session, care: CareSession, *, actor: str, address: str | None) -> None:
    """Remove a session that was started by mistake, with its links; only while nothing was answered.

    Its links stop working at once, and its number is free again for the next session.
    """
    if any(a.completed_at is not None for a in care.assignments):
        raise Conflict("This session has answers: it cannot be cancelled.", "session")
    if not session_cancellable(session, care):
        raise Conflict("Only the latest session of an episode can be cancelled.", "session")
    client_id, care_id, number = care.episode.client_id, care.id, care.number
    for assignment in list(care.assignments):
        session.delete(assignment)
    session.delete(care)
    session.flush()
    record(session, actor, "session.cancel", f"client:{client_id}", address, care_session=care_id, number=number)


# -- links -------------------------------------------------------------------------------


def issue_link(
    session: so.Session,
    engine: Engine,
    client: Client,
    instrument_id: str,
    *,
    lifetime: timedelta = DEFAULT_LINK_LIFETIME,
    allow_placeholder: bool = False,
    actor: str,
    address: str | None,
) -> IssuedLink:
    """Make one link outside any session (a demo, a one-off measure), in the client's language; audited.

    ``allow_placeholder`` lets a demo send an instrument whose wording is the marked stand-in.
    """
    try:
        assignment, token = create_assignment(
            session,
            engine,
            client,
            instrument_id,
            language=client.language,
            lifetime=lifetime,
            allow_placeholder=allow_placeholder,
        )
    except KeyError:
        raise NotFound(f"No instrument {instrument_id!r} is installed.", "instrument") from None
    except ValueError:
        raise Conflict(f"The licensed wording of {instrument_id} is not installed.", "instrument") from None
    record(session, actor, "link.issue", f"client:{client.id}", address, assignment=assignment.id)
    return IssuedLink(assignment, token, "")


def reissue_link(
    session: so.Session,
    assignment: Assignment,
    *,
    lifetime: timedelta = DEFAULT_LINK_LIFETIME,
    actor: str,
    address: str | None,
) -> IssuedLink:
    """Replace an unanswered link with a new one (the old one stops working) and restart its lifetime."""
    if assignment.completed_at is not None:
        raise Conflict("This questionnaire is already answered; its link cannot be re-issued.", "assignment")
    token = new_token()
    assignment.token_hash = hash_token(token)
    assignment.expires_at = datetime.now(UTC) + lifetime
    session.flush()
    record(session, actor, "link.reissue", f"client:{assignment.client_id}", address, assignment=assignment.id)
    moment = plan_moment(assignment.session.episode, assignment.instrument_id) if assignment.session else ""
    return IssuedLink(assignment, token, moment)


def expire_link(session: so.Session, assignment: Assignment, *, actor: str, address: str | None) -> None:
    """End an unanswered link now (a link sent to the wrong person, say); re-issuing makes a new one."""
    if assignment.completed_at is not None:
        raise Conflict("This questionnaire is already answered.", "assignment")
    if not is_expired(assignment):
        assignment.expires_at = datetime.now(UTC)
        session.flush()
    record(session, actor, "link.expire", f"client:{assignment.client_id}", address, assignment=assignment.id)


# -- the session flow: end-of-session questionnaires wait for the clinician --------------


def held_assignments(care: CareSession) -> list[Assignment]:
    """The session's unanswered, unexpired end-of-session questionnaires that still wait for the release."""
    return [a for a in care.assignments if is_held(a) and not is_expired(a)]


def release_end_of_session(
    session: so.Session, user: User, care: CareSession, *, actor: str, address: str | None
) -> bool:
    """Release the session's end-of-session questionnaires (the SRS of PCOMS): their links and the kiosk open them.

    Only one of the client's clinicians may (:class:`NotAllowed` for a supervisor, :class:`NotFound` for anyone
    else). Returns False, and changes nothing, when the session was released already (a reload or a second
    press); the release itself is audited as ``session.release``.
    """
    visible_record(session, user, CareSession, care.id, to_change=True)
    if care.end_released_at is not None:
        return False
    care.end_released_at = datetime.now(UTC)
    session.flush()
    record(
        session,
        actor,
        "session.release",
        f"client:{care.episode.client_id}",
        address,
        care_session=care.id,
        assignments=[a.id for a in care.assignments if plan_moment(care.episode, a.instrument_id) == "end"],
    )
    return True


def own_progress(
    session: so.Session, engine: Engine, assignment: Assignment, *, actor: str, address: str | None
) -> list[OwnTrend]:
    """What the client sees of their own progress after answering through ``assignment``.

    Empty unless one of their clinicians turned it on (:func:`core.clients.set_progress_shown`), and once the
    link has expired: an old link forwarded or found later shows nothing. Only this client's scored answers of the
    assignment's episode up to this answer (never later ones), and only outcome scores whose definition declares
    a direction of improvement (:func:`core.progress.own_trends`); no alerts, flags or notes. Audited as
    ``progress.view`` when something is shown.
    """
    client = assignment.client
    if not client.show_progress or assignment.response is None or is_expired(assignment):
        return []
    query = (
        sa.select(Response, Score)
        .join(Score, Score.response_id == Response.id)
        .where(Response.client_id == client.id, Response.submitted_at <= assignment.response.submitted_at)
        .order_by(Response.submitted_at, Response.id)
    )
    if assignment.episode_id is not None:
        query = query.where(Response.episode_id == assignment.episode_id)
    grouped: dict[str, list[tuple[Response, Score]]] = {}
    for response, score in session.execute(query).all():
        grouped.setdefault(response.instrument_id, []).append((response, score))
    trends: list[OwnTrend] = []
    for instrument_id, rows in grouped.items():
        try:
            instrument = engine.instruments.get(instrument_id, rows[-1][0].instrument_version)
        except KeyError:
            continue
        administrations = [
            Administration(
                response_id=response.id,
                version=response.instrument_version,
                scores=stored_score_values(score),
                band=score.band,
                session_number=response.assignment.session.number
                if response.assignment is not None and response.assignment.session is not None
                else None,
                submitted_at=response.submitted_at,
            )
            for response, score in rows
        ]
        trends.extend(own_trends(instrument, administrations))
    if trends:
        record(session, actor, "progress.view", f"client:{client.id}", address, assignment=assignment.id)
    return trends


# -- kiosk -------------------------------------------------------------------------------


def unlock_kiosk(
    session: so.Session,
    care: CareSession,
    *,
    user_session: UserSession,
    hours: float,
    actor: str,
    address: str | None,
) -> tuple[KioskSession, str]:
    """Hand this device to the client for the session's unanswered questionnaires; return the kiosk and its token.

    The clinician's sign-in session on the device ends: the client cannot reach anything else.
    """
    pending = [a.id for a in care.assignments if a.completed_at is None and not is_expired(a)]
    if not pending:
        raise Conflict("This session has no questionnaires left to answer.", "session")
    token = new_token()
    kiosk = KioskSession(
        token_hash=hash_token(token),
        client_id=care.episode.client_id,
        created_by=user_session.user_id,
        assignment_ids=pending,
        expires_at=datetime.now(UTC) + timedelta(hours=hours),
    )
    session.add(kiosk)
    end_session(user_session, "kiosk")
    session.flush()
    record(
        session,
        actor,
        "kiosk.unlock",
        f"client:{care.episode.client_id}",
        address,
        kiosk=kiosk.id,
        assignments=pending,
    )
    return kiosk, token


def find_kiosk(session: so.Session, token: str, now: datetime | None = None) -> KioskSession | None:
    """The live kiosk for a cookie token, or None when it is unknown, locked or past its time."""
    found = session.scalar(sa.select(KioskSession).where(KioskSession.token_hash == hash_token(token)))
    if found is None or found.ended_at is not None or (now or datetime.now(UTC)) >= _aware(found.expires_at):
        return None
    return found


def kiosk_next(session: so.Session, kiosk: KioskSession) -> Assignment | None:
    """The kiosk's next questionnaire to answer, in the order they were handed over; None when all are done."""
    wanted = list(kiosk.assignment_ids)
    rows = {
        a.id: a
        for a in session.scalars(
            sa.select(Assignment).where(Assignment.id.in_(wanted), Assignment.client_id == kiosk.client_id)
        )
    }
    for assignment_id in wanted:
        assignment = rows.get(assignment_id)
        if (
            assignment is not None
            and assignment.completed_at is None
            and not is_expired(assignment)
            and not is_held(assignment)
        ):
            return assignment
    return None


def kiosk_waiting(session: so.Session, kiosk: KioskSession) -> list[CareSession]:
    """The sessions whose end-of-session questionnaires this kiosk holds back: empty once nothing waits.

    When :func:`kiosk_next` finds nothing and this is not empty, the device shows the hand-back screen.
    """
    found: dict[int, CareSession] = {}
    for assignment in session.scalars(
        sa.select(Assignment).where(
            Assignment.id.in_(list(kiosk.assignment_ids)), Assignment.client_id == kiosk.client_id
        )
    ):
        if assignment.session is not None and is_held(assignment) and not is_expired(assignment):
            found[assignment.session.id] = assignment.session
    return list(found.values())


def release_on_kiosk(
    session: so.Session,
    kiosk: KioskSession,
    password: str,
    *,
    limits: SignInLimits,
    address: str | None,
    now: datetime | None = None,
) -> int:
    """The clinician takes the kiosk back and releases the end-of-session questionnaires on the same device.

    A short re-authentication with the password of the clinician who opened the kiosk, throttled and audited as
    sign-in is (:func:`core.accounts.confirm_password`); no sign-in session starts, so the device stays a kiosk
    that reaches nothing but its questionnaires. Returns how many sessions were released.
    Raises :class:`core.accounts.SignInRefused` for a wrong password or while throttled, and :class:`NotAllowed`
    or :class:`NotFound` when that clinician no longer treats the client.
    """
    clinician = session.get(User, kiosk.created_by)
    if clinician is None:
        raise NotFound("There is no such clinician.", "user")
    confirm_password(session, clinician, password, address, now, limits=limits, actor=f"kiosk:{kiosk.id}")
    released = 0
    for care in kiosk_waiting(session, kiosk):
        released += release_end_of_session(
            session, clinician, care, actor=f"user:{clinician.username}", address=address
        )
    return released


def kiosk_position(kiosk: KioskSession, assignment: Assignment) -> tuple[int, int]:
    """(this questionnaire's place, how many) for "Questionnaire 1 of 2"."""
    return kiosk.assignment_ids.index(assignment.id) + 1, len(kiosk.assignment_ids)


def submit_for_kiosk(
    session_factory: so.sessionmaker[so.Session],
    engine: Engine,
    kiosk_id: int,
    assignment_id: int,
    answers: Mapping[str, Any],
    *,
    address: str | None,
    retry_seconds: float = DEFAULT_RETRY_SECONDS,
) -> Submission:
    """Store an answer given on a kiosk: the links' submission path, with its retries and double-submit guard.

    Raises :class:`LinkError` (``expired``) when the kiosk was locked or the questionnaire is not one
    of the kiosk's, and whatever :func:`core.responses.submit_answers` raises.
    """

    def locate(session: so.Session) -> Assignment:
        kiosk = session.get(KioskSession, kiosk_id)
        assignment = session.get(Assignment, assignment_id)
        if (
            kiosk is None
            or kiosk.ended_at is not None
            or datetime.now(UTC) >= _aware(kiosk.expires_at)
            or assignment is None
            or assignment.id not in kiosk.assignment_ids
            or assignment.client_id != kiosk.client_id
            or (assignment.response is None and (is_expired(assignment) or is_held(assignment)))
        ):
            raise LinkError("expired")
        return assignment

    return submit_answers(
        session_factory,
        engine,
        locate,
        answers,
        actor=f"kiosk:{kiosk_id}",
        address=address,
        retry_seconds=retry_seconds,
    )


def lock_kiosk(session: so.Session, kiosk: KioskSession, *, reason: str, address: str | None) -> None:
    """Lock the device: ``reason`` is ``finished`` (all answered) or ``locked`` (someone pressed Lock)."""
    if reason not in ("finished", "locked"):
        raise InvalidInput("The reason is 'finished' or 'locked'.", "reason")
    if kiosk.ended_at is None:
        kiosk.ended_at = datetime.now(UTC)
        session.flush()
        record(session, f"kiosk:{kiosk.id}", "kiosk.lock", f"kiosk:{kiosk.id}", address, reason=reason)


# -- alerts --------------------------------------------------------------------------------


def open_alerts(session: so.Session, client_ids: list[int]) -> list[AlertRecord]:
    """Unacknowledged alerts of the given clients, newest first."""
    return read_alerts(session, sa.and_(_among(Alert.client_id, client_ids), Alert.acknowledged_at.is_(None)))


def alert_session_numbers(
    session: so.Session, alerts: Sequence[Alert | AlertRecord], loaded: Sequence[tuple[ResponseRecord, Any]] = ()
) -> dict[int, int]:
    """The session number of each alert's response, by alert id (alerts of answers outside a session have none).

    ``loaded``: responses read already with their session numbers (the client page's and the report's,
    :func:`load_client_record`); only the other alerts' responses are looked up, in one statement.
    """
    numbers = {response.id: response.session_number for response, _score in loaded if response.session_number}
    known = {response.id for response, _score in loaded}
    ids = sorted({alert.response_id for alert in alerts} - known)
    if ids:
        rows = _rows_of(session).execute(
            sa.select(Response.id, CareSession.number)
            .join(Assignment, Assignment.id == Response.assignment_id)
            .join(CareSession, CareSession.id == Assignment.session_id)
            .where(_among(Response.id, ids))
        )
        numbers.update(rows.all())
    return {alert.id: numbers[alert.response_id] for alert in alerts if alert.response_id in numbers}


def _among(column: Any, ids: list[int]) -> Any:
    """``column IN (...)`` for ids read from the database (a caseload's clients, its alerts' responses), written
    into the statement when it runs.

    The caseload's reads take its clients' ids as a list rather than the visibility rule's subquery again: the
    planner cannot tell how few clients that subquery keeps, and on PostgreSQL it hashed them and scanned every
    alert, link and response of the portal, a cost that grew with the whole database instead of with the caseload.
    The ids are integers read from the database, so they are written in as literals: as 200 bound parameters
    they cost SQLAlchemy and psycopg about 1.1 ms per statement, written in 0.3 ms.
    """
    return column.in_(sa.bindparam("client_ids", [int(i) for i in ids], expanding=True, literal_execute=True))


def acknowledge_alert(
    session: so.Session, alert: Alert, *, user_id: int, note: str, actor: str, address: str | None
) -> bool:
    """Close an alert with the clinician's note (what they did or decided); False if it was closed already.

    The audit entry names the alert, never its rule: which rule fired is clinical content.
    """
    note = (note or "").strip()
    if not note:
        raise InvalidInput("Write a note: what you did or decided.", "note")
    if len(note) > MAX_NOTE_LENGTH:
        raise InvalidInput(f"Use at most {MAX_NOTE_LENGTH} characters.", "note")
    if alert.acknowledged_at is not None:
        return False
    alert.acknowledged_at = datetime.now(UTC)
    alert.acknowledged_by = user_id
    alert.note = note
    session.flush()
    record(session, actor, "alert.acknowledge", f"client:{alert.client_id}", address, alert=alert.id)
    return True


def visible_record(
    session: so.Session, user: User, model: type[Any], object_id: int, *, to_change: bool = False
) -> Any:
    """An episode, session, assignment, response or alert by id, if ``user`` may see its client.

    :class:`NotFound` otherwise: a record of someone else's client looks like one that does not exist.
    With ``to_change`` the user must be one of the client's clinicians (:func:`core.clients.treated_client`):
    a supervisor who may read the record gets :class:`NotAllowed`.
    """
    found = session.get(model, object_id)
    if found is None:
        raise NotFound("There is no such record.", model.__tablename__)
    client_id = found.episode.client_id if isinstance(found, CareSession) else found.client_id
    (treated_client if to_change else visible_client)(session, user, client_id)
    return found


# -- reads of client data: each is audited -------------------------------------------------


@dataclass(frozen=True)
class Caseload:
    """A clinician's clients with their open alerts, unanswered links and last answer."""

    clients: list[Client]
    alerts: list[AlertRecord]
    pending: dict[int, int]
    last_answer: dict[int, datetime]


def view_caseload(
    session: so.Session, user: User, *, actor: str, address: str | None, pending_audit: PendingEntries | None = None
) -> Caseload:
    """The clients ``user`` may see, with what needs their attention; audited as ``caseload.view``.

    The audit entry goes into ``pending_audit`` when given (entries the caller stores when it is done, so
    ``session`` may be a read-only one), else into ``session``.
    """
    clients = list(
        session.scalars(sa.select(Client).where(Client.id.in_(visible_client_ids(user))).order_by(Client.code))
    )
    ids = [client.id for client in clients]
    alerts = open_alerts(session, ids)
    pending = dict(
        session.execute(
            sa.select(Assignment.client_id, sa.func.count())
            .where(_among(Assignment.client_id, ids), Assignment.completed_at.is_(None))
            .group_by(Assignment.client_id)
        ).all()
    )
    last_answer = dict(
        session.execute(
            sa.select(Response.client_id, sa.func.max(Response.submitted_at))
            .where(_among(Response.client_id, ids))
            .group_by(Response.client_id)
        ).all()
    )
    # the caseload shows client codes and alert messages: a view of client data like any other
    record(pending_audit or session, actor, "caseload.view", None, address, clients=len(clients), alerts=len(alerts))
    return Caseload(clients, alerts, pending, last_answer)


# The client page's record is read as plain rows, not ORM objects: a client with 50 sessions has some 350 sessions,
# questionnaires, responses and scores, and loading each into the session's identity map cost about two thirds of
# the page's time. These records are what the page and the report read; nothing is changed through them.


class AssignmentRecord(NamedTuple):
    """A questionnaire of a session, as the client page lists it."""

    id: int
    instrument_id: str
    instrument_version: str
    completed_at: datetime | None
    expires_at: datetime
    held: bool  # an end-of-session questionnaire waiting for its session's release (core.responses.is_held)


class SessionRecord(NamedTuple):
    """A care session of the episode with its questionnaires, oldest questionnaire first."""

    id: int
    number: int
    held_at: datetime
    assignments: list[AssignmentRecord]


class ResponseRecord(NamedTuple):
    """A response as the client page and the report show it."""

    id: int
    instrument_id: str
    instrument_version: str
    submitted_at: datetime
    answers: dict[str, Any]
    session_number: int | None  # the care session it was answered in; None for answers given outside one


class ScoreRecord(NamedTuple):
    """A response's stored scores (:func:`core.responses.stored_score_values` reads them as Decimals)."""

    values: dict[str, Any]
    band: str | None


class AlertRecord(NamedTuple):
    """An alert as a page lists it (:class:`core.models.Alert`'s columns)."""

    id: int
    response_id: int
    client_id: int
    rule: str
    severity: str
    message: str
    created_at: datetime
    acknowledged_at: datetime | None
    acknowledged_by: int | None
    note: str | None


_READ_ALERTS = sa.select(*(getattr(Alert, name) for name in AlertRecord._fields))
_NEWEST_FIRST = (Alert.created_at.desc(), Alert.id.desc())


def read_alerts(session: so.Session, where: Any) -> list[AlertRecord]:
    """The alerts matching ``where`` as records, newest first."""
    rows = _rows_of(session).execute(_READ_ALERTS.where(where).order_by(*_NEWEST_FIRST))
    return [AlertRecord._make(row) for row in rows]


def _rows_of(session: so.Session) -> sa.Connection:
    """The session's connection for reading plain rows, after its pending changes are flushed (as the ORM's own
    queries autoflush), so the rows show what the session holds."""
    session.flush()  # nothing to do, and no statement, when nothing is pending
    return session.connection()


@dataclass(frozen=True)
class ClientRecord:
    """A client ``user`` may see, the chosen episode (None when the client has none) with its sessions, and the
    responses with their scores, oldest first: those of the episode and those given outside any episode."""

    client: Client
    episode: Episode | None
    sessions: list[SessionRecord]
    responses: list[tuple[ResponseRecord, ScoreRecord | None]]


@dataclass(frozen=True)
class ClientView(ClientRecord):
    """One client's record as their clinician sees it, with the client's open alerts (``alerts``), every alert
    the record's responses raised, open or acknowledged (``raised``) and the next session's number."""

    alerts: list[AlertRecord] = field(default_factory=list)
    raised: list[AlertRecord] = field(default_factory=list)
    next_session: int = 1


# The statements of load_client_record, made once (a statement built per call costs more than its rows).
_EPISODE_SESSIONS = (
    sa.select(
        CareSession.id,
        CareSession.number,
        CareSession.held_at,
        CareSession.end_released_at,
        Assignment.id,
        Assignment.instrument_id,
        Assignment.instrument_version,
        Assignment.completed_at,
        Assignment.expires_at,
    )
    .outerjoin(Assignment, Assignment.session_id == CareSession.id)
    .where(CareSession.episode_id == sa.bindparam("episode_id"))
    .order_by(CareSession.number, Assignment.id)
)
_CLIENT_RESPONSES = (
    sa.select(
        Response.id,
        Response.instrument_id,
        Response.instrument_version,
        Response.submitted_at,
        Response.answers,
        CareSession.number,
        Score.response_id,
        Score.values,
        Score.band,
    )
    .outerjoin(Score, Score.response_id == Response.id)
    .outerjoin(Assignment, Assignment.id == Response.assignment_id)
    .outerjoin(CareSession, CareSession.id == Assignment.session_id)
    .where(Response.client_id == sa.bindparam("client_id"))
    .order_by(Response.submitted_at, Response.id)
)
# A client's open alerts and those raised by the responses the page shows (those of the episode and those given
# outside any episode; without an episode the client has only the latter): no list of response ids to send.
_CLIENT_ALERTS = (
    _READ_ALERTS.join(Response, Response.id == Alert.response_id)
    .where(
        Alert.client_id == sa.bindparam("client_id"),
        sa.or_(
            Alert.acknowledged_at.is_(None),
            Response.episode_id.is_(None),
            Response.episode_id == sa.bindparam("episode_id"),
        ),
    )
    .order_by(*_NEWEST_FIRST)
)
# those of the episode and those given outside any episode
_EPISODE_RESPONSES = _CLIENT_RESPONSES.where(
    sa.or_(Response.episode_id == sa.bindparam("episode_id"), Response.episode_id.is_(None))
)


def load_client_record(
    session: so.Session, user: User, client_id: int, *, episode_id: int | None = None
) -> ClientRecord:
    """The record of a client ``user`` may see, with the chosen episode (default: the latest). Not audited: the
    views that call it are. Three statements whatever the number of sessions: the client with its episodes, the
    episode's sessions with their questionnaires, the responses with their scores and session numbers."""
    client = visible_client(session, user, client_id)
    episode = None
    for one in client.episodes:
        if episode_id is None or one.id == episode_id:
            episode = one
    connection = _rows_of(session)  # plain rows, no ORM objects (see above)
    sessions: list[SessionRecord] = []
    if episode is not None:
        plan = episode.plan
        for care_id, number, held_at, released_at, *assignment in connection.execute(
            _EPISODE_SESSIONS, {"episode_id": episode.id}
        ):
            if not sessions or sessions[-1].id != care_id:
                sessions.append(SessionRecord(care_id, number, held_at, []))
            if assignment[0] is not None:
                held = waits_for_release(assignment[3], released_at, plan, assignment[1])
                sessions[-1].assignments.append(AssignmentRecord(*assignment, held))
    rows = connection.execute(
        _CLIENT_RESPONSES if episode is None else _EPISODE_RESPONSES,
        {"client_id": client.id, "episode_id": episode.id if episode else None},
    )
    responses = [(ResponseRecord(*row[:6]), ScoreRecord(*row[7:]) if row[6] is not None else None) for row in rows]
    return ClientRecord(client, episode, sessions, responses)


def view_client(
    session: so.Session,
    user: User,
    client_id: int,
    *,
    episode_id: int | None = None,
    actor: str,
    address: str | None,
    pending_audit: PendingEntries | None = None,
) -> ClientView:
    """A client's page: the chosen episode (default: the latest) and its answers; audited as ``client.view``
    (into ``pending_audit`` when given, as :func:`view_caseload`)."""
    found = load_client_record(session, user, client_id, episode_id=episode_id)
    client, episode = found.client, found.episode
    record(
        pending_audit or session,
        actor,
        "client.view",
        f"client:{client.id}",
        address,
        episode=episode.id if episode else None,
    )
    # the next number is the episode's sessions' next, as next_session_number says
    next_session = max((care.number for care in found.sessions), default=0) + 1
    # the client's open alerts and every alert the page's responses raised (open or acknowledged), in one query
    ids = {response.id for response, _score in found.responses}
    rows = _rows_of(session).execute(
        _CLIENT_ALERTS, {"client_id": client.id, "episode_id": episode.id if episode else None}
    )
    alerts = [AlertRecord._make(row) for row in rows]
    opened = [alert for alert in alerts if alert.client_id == client.id and alert.acknowledged_at is None]
    raised = [alert for alert in alerts if alert.response_id in ids]
    return ClientView(client, episode, found.sessions, found.responses, opened, raised, next_session)


def view_care_session(
    session: so.Session, user: User, session_id: int, *, actor: str, address: str | None
) -> CareSession:
    """A session with its questionnaires and their state; audited as ``session.view``."""
    care = visible_record(session, user, CareSession, session_id)
    record(session, actor, "session.view", f"client:{care.episode.client_id}", address, care_session=care.id)
    return care


def view_response(
    session: so.Session, user: User, response_id: int, *, actor: str, address: str | None
) -> tuple[Response, list[Alert]]:
    """One response with the alerts it raised; audited as ``response.view``."""
    response = visible_record(session, user, Response, response_id)
    alerts = list(session.scalars(sa.select(Alert).where(Alert.response_id == response.id).order_by(Alert.id)))
    record(session, actor, "response.view", f"client:{response.client_id}", address, response=response.id)
    return response, alerts


def session_cancellable(session: so.Session, care: CareSession) -> bool:
    """Whether :func:`cancel_care_session` would accept this session: the latest, and nothing answered."""
    return (
        all(a.completed_at is None for a in care.assignments)
        and care.number == next_session_number(session, care.episode) - 1
    )


def _aware(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value
