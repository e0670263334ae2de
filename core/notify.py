"""Sending clients their links by e-mail or SMS, reminding them, and the outbox that delivers both.

A clinician sends a session's unanswered links through a channel (:func:`send_session_links`): each
link gets a :class:`LinkSending` row and a first outbox message (step 0). A plan rule with reminders
(``remind 24h x2``, see :mod:`core.plans`) makes :func:`queue_due_reminders` add steps 1, 2, ... while
the link stays unanswered and live, outside the quiet hours of the client's time zone. Every message
is one :class:`OutboxMessage` row with a unique (assignment, channel, step) key, so it is made once;
:func:`deliver_message` claims the row before it acts and records it as sent right before the channel's
point of no return, so a worker that dies or restarts never sends a message twice.

Messages carry only the link and the clinic's name, in the client's language: no instrument, no answers.
Nothing is sent to a client who has not agreed to be contacted. Link tokens are never stored: each is
derived from a random nonce and the portal's secret key (:func:`link_token`).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from functools import cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

import sqlalchemy as sa
import sqlalchemy.orm as so
from babel.support import NullTranslations, Translations

from core.audit import record
from core.channels import DeliveryError, NotificationChannel, OutgoingMessage
from core.engine import Engine
from core.errors import Conflict, InvalidInput
from core.jobs import JobContext, JobQueue, job, periodic_job
from core.models import DEFAULT_SITE_ID, Assignment, CareSession, Client, LinkSending, OutboxMessage
from core.plans import reminders_of
from core.responses import is_expired, is_held
from core.tokens import hash_token, new_token

SYSTEM_ACTOR = "system:notify"
MAX_ATTEMPTS = 4  # temporary failures are retried this often (1, 2, 4, 8 minutes apart), then reported
DEFAULT_CLAIM_TIMEOUT_SECONDS = 300  # a claim older than this belongs to a worker that died (SMTP times out at 30 s)
EMAIL_PATTERN = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")
PHONE_PATTERN = re.compile(r"^\+[1-9][0-9]{5,14}$")
_QUIET = re.compile(r"^\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*$")


def N_(message: str) -> str:
    """Mark a message for translation (pybabel extracts it); it is translated when rendered."""
    return message


# The templates: only the link and the clinic's name (see docs/notifications.md). Step 0 is the first sending.
SUBJECTS = {
    "first": N_("Your questionnaire from %(clinic)s"),
    "reminder": N_("Reminder: your questionnaire from %(clinic)s"),
}
BODIES = {
    "first": N_(
        "Hello,\n\n%(clinic)s asks you to answer a short questionnaire. Please open this personal link:\n\n"
        "%(link)s\n\nDo not forward this message: the link is for you alone.\n"
    ),
    "reminder": N_(
        "Hello,\n\nA questionnaire from %(clinic)s is still waiting for you. Please open this personal link:\n\n"
        "%(link)s\n\nDo not forward this message: the link is for you alone.\n"
    ),
}
SHORT_BODIES = {  # SMS and other channels to a phone: one short line
    "first": N_("%(clinic)s: please answer your questionnaire: %(link)s"),
    "reminder": N_("%(clinic)s reminder: your questionnaire is waiting: %(link)s"),
}


# -- contact details and consent -------------------------------------------------------------


def update_contact(
    session: so.Session,
    client: Client,
    *,
    email: str | None,
    phone: str | None,
    consent: bool,
    time_zone: str | None,
    actor: str,
    address: str | None,
) -> Client:
    """Set a client's e-mail, phone, consent to contact and time zone; audited without the values.

    Consent needs at least one contact detail. Withdrawing consent stops every message not yet sent.
    """
    email = (email or "").strip() or None
    phone = re.sub(r"[\s()./-]", "", phone or "") or None
    zone = (time_zone or "").strip() or None
    if email is not None and (len(email) > 254 or not EMAIL_PATTERN.match(email)):
        raise InvalidInput("Enter an e-mail address such as name@example.org.", "email")
    if phone is not None and not PHONE_PATTERN.match(phone):
        raise InvalidInput("Enter the number in international form, such as +49 30 1234567.", "phone")
    if zone is not None and zone not in _time_zones():
        raise InvalidInput("Choose a time zone such as Europe/Berlin.", "time_zone")
    if consent and email is None and phone is None:
        raise InvalidInput("Consent to contact needs an e-mail address or a phone number.", "consent")
    if consent and not client.contact_consent:
        client.contact_consent_at = datetime.now(UTC)
    if not consent:
        client.contact_consent_at = None
    client.email, client.phone, client.contact_consent, client.time_zone = email, phone, consent, zone
    session.flush()
    # which details exist, never their values
    record(
        session,
        actor,
        "client.contact",
        f"client:{client.id}",
        address,
        email=email is not None,
        phone=phone is not None,
        consent=consent,
        time_zone=zone is not None,
    )
    return client


@cache
def _time_zones() -> frozenset[str]:
    return frozenset(available_timezones())


# -- channels and links --------------------------------------------------------------------------


def available_channels(engine: Engine, settings: Mapping[str, Any]) -> list[NotificationChannel]:
    """The installed channels whose settings are there, by name."""
    return [channel for name, channel in sorted(engine.channels.items()) if channel.configured(settings)]


def link_token(secret_key: str, nonce: str) -> str:
    """The token of a sent link: an HMAC of its nonce under the portal's secret key (never stored)."""
    digest = hmac.new(secret_key.encode("utf-8"), b"rapportal-link\0" + nonce.encode("ascii"), hashlib.sha256)
    return base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode("ascii")


def link_url(base_url: str, token: str) -> str:
    return f"{base_url.rstrip('/')}/a/{token}"


@dataclass(frozen=True)
class SentLinks:
    """What :func:`send_session_links` queued: the outbox messages, and links it had sent through the channel."""

    messages: tuple[OutboxMessage, ...]
    already_sent: int


def send_session_links(
    session: so.Session,
    engine: Engine,
    care: CareSession,
    *,
    channel: str,
    settings: Mapping[str, Any],
    base_url: str,
    actor: str,
    address: str | None,
) -> SentLinks:
    """Queue a message with the link of each unanswered, live questionnaire of the session; audited.

    A link not sent before gets a new token (so a link copied earlier stops working): the outbox
    can then make it again for reminders. Load ``care`` with ``visible_record(..., to_change=True)``.
    Enqueue :data:`DELIVER_JOB` for each message once the transaction commits (or let the periodic job).
    """
    found = {c.name: c for c in available_channels(engine, settings)}.get(channel)
    if found is None:
        raise InvalidInput("Choose an installed and configured channel.", "channel")
    client = care.episode.client
    if not client.contact_consent:
        raise Conflict("The client has not agreed to be contacted: record their consent first.", "channel")
    if not getattr(client, found.contact):
        raise Conflict(f"The client has no {found.contact} on record.", "channel")
    pending = [a for a in care.assignments if a.completed_at is None and not is_expired(a)]
    if not pending:
        raise Conflict("This session has no questionnaires left to answer.", "session")
    # end-of-session measures are sent once the clinician has released them (core.care.release_end_of_session)
    pending = [a for a in pending if not is_held(a)]
    if not pending:
        raise Conflict("The questionnaires left wait for the end of the session: release them first.", "session")
    secret = str(settings["SECRET_KEY"])
    messages, already = [], 0
    now = datetime.now(UTC)
    for assignment in pending:
        earlier = list(session.scalars(sa.select(LinkSending).where(LinkSending.assignment_id == assignment.id)))
        if any(s.channel == channel for s in earlier):
            already += 1
            continue
        live = [s for s in earlier if hash_token(link_token(secret, s.nonce)) == assignment.token_hash]
        if live:  # sent through another channel: the same link
            nonce = live[0].nonce
        else:
            nonce = new_token()
            assignment.token_hash = hash_token(link_token(secret, nonce))
        hours, count = _reminders(care, assignment)
        session.add(
            LinkSending(
                assignment_id=assignment.id,
                client_id=client.id,
                channel=channel,
                nonce=nonce,
                base_url=base_url[:255],
                remind_after_hours=hours or None,
                remind_max=count,
                reminders_done=count == 0,
                created_at=now,
            )
        )
        message = OutboxMessage(
            assignment_id=assignment.id, client_id=client.id, channel=channel, step=0, due_at=now, created_at=now
        )
        session.add(message)
        messages.append(message)
    session.flush()
    record(
        session,
        actor,
        "links.send",
        f"client:{client.id}",
        address,
        care_session=care.id,
        channel=channel,
        messages=[m.id for m in messages],
    )
    return SentLinks(tuple(messages), already)


def _reminders(care: CareSession, assignment: Assignment) -> tuple[int, int]:
    for rule in care.episode.plan or []:
        if rule["instrument"] == assignment.instrument_id:
            return reminders_of(rule)
    return 0, 0


def session_messages(session: so.Session, care: CareSession) -> dict[int, list[OutboxMessage]]:
    """The outbox messages of a session's questionnaires by assignment id, oldest first (for its page)."""
    ids = [a.id for a in care.assignments]
    found: dict[int, list[OutboxMessage]] = {i: [] for i in ids}
    query = sa.select(OutboxMessage).where(OutboxMessage.assignment_id.in_(ids)).order_by(OutboxMessage.id)
    for message in session.scalars(query):
        found[message.assignment_id].append(message)
    return found


# -- quiet hours and time zones -------------------------------------------------------------------


def parse_quiet_hours(text: str | None) -> tuple[time, time] | None:
    """``"21:00-08:00"`` as (start, end); None for no quiet hours. :class:`InvalidInput` when malformed."""
    if not (text or "").strip():
        return None
    found = _QUIET.match(text or "")
    if found is None:
        raise InvalidInput("Write quiet hours as 21:00-08:00.", "QUIET_HOURS")
    h1, m1, h2, m2 = (int(g) for g in found.groups())
    if h1 > 23 or h2 > 23 or m1 > 59 or m2 > 59:
        raise InvalidInput("Write quiet hours as 21:00-08:00.", "QUIET_HOURS")
    return time(h1, m1), time(h2, m2)


def client_zone(client: Client, settings: Mapping[str, Any]) -> ZoneInfo:
    """The client's time zone, else the DEFAULT_TIME_ZONE setting, else UTC."""
    for name in (client.time_zone, settings.get("DEFAULT_TIME_ZONE")):
        if name:
            try:
                return ZoneInfo(str(name))
            except (ZoneInfoNotFoundError, ValueError):
                continue
    return ZoneInfo("UTC")


def in_quiet_hours(moment: datetime, zone: ZoneInfo, quiet: tuple[time, time] | None) -> bool:
    """Whether ``moment`` falls in the quiet hours, read on the clock of ``zone``."""
    if quiet is None:
        return False
    start, end = quiet
    local = moment.astimezone(zone).time().replace(tzinfo=None)
    if start <= end:
        return start <= local < end
    return local >= start or local < end


# -- reminders -----------------------------------------------------------------------------------


def queue_due_reminders(session: so.Session, settings: Mapping[str, Any], now: datetime | None = None) -> int:
    """Add the outbox message of every reminder that is due now; return how many were added.

    Everything is read from the database, so a run that was lost is made up by the next. A reminder is
    due ``remind_after_hours`` after the first message was sent, times its step; one due in the client's
    quiet hours waits until they end. Reminders stop when the link is answered, expires or was re-issued.
    """
    now = now or datetime.now(UTC)
    quiet = parse_quiet_hours(settings.get("QUIET_HOURS"))
    secret = str(settings["SECRET_KEY"])
    added = 0
    rows = session.execute(
        sa.select(LinkSending, Assignment, Client)
        .join(Assignment, Assignment.id == LinkSending.assignment_id)
        .join(Client, Client.id == LinkSending.client_id)
        .where(LinkSending.reminders_done.is_(False))
        .order_by(LinkSending.id)
    ).all()
    for sending, assignment, client in rows:
        steps = dict(
            session.execute(
                sa.select(OutboxMessage.step, OutboxMessage.sent_at).where(
                    OutboxMessage.assignment_id == assignment.id, OutboxMessage.channel == sending.channel
                )
            ).all()
        )
        last = max(steps, default=0)
        if (
            assignment.completed_at is not None
            or is_expired(assignment, now)
            or hash_token(link_token(secret, sending.nonce)) != assignment.token_hash
            or last >= sending.remind_max
        ):
            sending.reminders_done = True
            continue
        first_sent = steps.get(0)
        if first_sent is None or not client.contact_consent:
            continue  # not delivered yet (or failed, or consent withdrawn): nothing to remind of
        due = _aware(first_sent) + timedelta(hours=(sending.remind_after_hours or 0) * (last + 1))
        if due > now or in_quiet_hours(now, client_zone(client, settings), quiet):
            continue
        try:
            with session.begin_nested():
                session.add(
                    OutboxMessage(
                        assignment_id=assignment.id,
                        client_id=client.id,
                        channel=sending.channel,
                        step=last + 1,
                        due_at=now,
                        created_at=now,
                    )
                )
        except sa.exc.IntegrityError:  # another worker added it a moment ago
            continue
        added += 1
    session.flush()
    return added


# -- delivery ---------------------------------------------------------------------------------------


class _Withdrawn(Exception):
    """The claim was lost (another worker took the row over): send nothing."""


def due_message_ids(
    session: so.Session, settings: Mapping[str, Any], now: datetime | None = None, limit: int = 1000
) -> list[int]:
    """Messages to deliver now: queued and due, or claimed by a worker that died (the claim is stale)."""
    now = now or datetime.now(UTC)
    stale = now - timedelta(seconds=float(settings.get("NOTIFY_CLAIM_TIMEOUT_SECONDS", DEFAULT_CLAIM_TIMEOUT_SECONDS)))
    query = (
        sa.select(OutboxMessage.id)
        .where(
            sa.or_(
                sa.and_(OutboxMessage.status == "queued", OutboxMessage.due_at <= now),
                sa.and_(OutboxMessage.status == "sending", OutboxMessage.claimed_at < stale),
            )
        )
        .order_by(OutboxMessage.id)
        .limit(limit)
    )
    return list(session.scalars(query))


def deliver_message(
    sessions: so.sessionmaker[so.Session],
    engine: Engine,
    settings: Mapping[str, Any],
    message_id: int,
    now: datetime | None = None,
) -> str:
    """Deliver one outbox message at most once; return its status afterwards.

    1. Claim the row (``queued``, or ``sending`` with a stale claim) in its own transaction, and skip it
       when the link was answered, expired or re-issued, or the client withdrew consent.
    2. Let the channel deliver; right before its point of no return the row becomes ``sent``.
    3. A refusal is stored on the row (``failed``), a temporary one retried with backoff first.
    Each outcome is audited by who-to-which only.
    """
    now = now or datetime.now(UTC)
    claim = secrets.token_hex(8)
    stale = now - timedelta(seconds=float(settings.get("NOTIFY_CLAIM_TIMEOUT_SECONDS", DEFAULT_CLAIM_TIMEOUT_SECONDS)))
    with sessions.begin() as session:
        message = session.get(OutboxMessage, message_id)
        if message is None:
            return "missing"
        claimable = (message.status == "queued" and _aware(message.due_at) <= now) or (
            message.status == "sending" and message.claimed_at is not None and _aware(message.claimed_at) < stale
        )
        if not claimable:
            return message.status
        won = session.execute(
            sa.update(OutboxMessage)
            .where(OutboxMessage.id == message.id, OutboxMessage.status == message.status)
            .where(OutboxMessage.claim.is_(None) if message.claim is None else OutboxMessage.claim == message.claim)
            .values(status="sending", claim=claim, claimed_at=now, attempts=OutboxMessage.attempts + 1)
            .execution_options(synchronize_session=False)
        ).rowcount
        if won != 1:
            return "taken"
        session.refresh(message)
        prepared = _prepare(session, engine, settings, message, now)
        if isinstance(prepared, str):  # a reason not to send
            message.status, message.error, message.claim = "skipped", prepared, None
            _audit(session, message, "message.skip", reason=prepared)
            return "skipped"
        channel, outgoing = prepared

    def point_of_no_return() -> None:
        with sessions.begin() as session:
            marked = session.execute(
                sa.update(OutboxMessage)
                .where(OutboxMessage.id == message_id, OutboxMessage.claim == claim, OutboxMessage.status == "sending")
                .values(status="sent", sent_at=datetime.now(UTC))
                .execution_options(synchronize_session=False)
            ).rowcount
            if marked != 1:
                raise _Withdrawn()
            _audit(session, session.get(OutboxMessage, message_id), "message.sent")

    try:
        channel.deliver(outgoing, settings, point_of_no_return)
    except _Withdrawn:
        return "taken"
    except DeliveryError as refused:
        return _refused(sessions, message_id, claim, str(refused), permanent=refused.permanent, now=now)
    except Exception as broken:  # a channel bug must not leave the row claimed for ever
        return _refused(sessions, message_id, claim, f"{type(broken).__name__}: {broken}", permanent=False, now=now)
    with sessions() as session:
        return session.get(OutboxMessage, message_id).status  # type: ignore[union-attr]


def _refused(
    sessions: so.sessionmaker[so.Session], message_id: int, claim: str, error: str, *, permanent: bool, now: datetime
) -> str:
    with sessions.begin() as session:
        message = session.get(OutboxMessage, message_id)
        if message is None or message.claim != claim:
            return "taken"
        if message.status == "sent":  # refused after the point of no return: the server said no after all
            permanent = True
        retry = not permanent and message.attempts < MAX_ATTEMPTS
        message.error = error[:500]
        message.claim = None
        if retry:
            message.status = "queued"
            message.due_at = now + timedelta(minutes=2 ** (message.attempts - 1))
        else:
            message.status, message.sent_at = "failed", None
            _audit(session, message, "message.fail")
        return message.status


def _prepare(
    session: so.Session, engine: Engine, settings: Mapping[str, Any], message: OutboxMessage, now: datetime
) -> tuple[NotificationChannel, OutgoingMessage] | str:
    assignment = session.get(Assignment, message.assignment_id)
    sending = session.scalar(
        sa.select(LinkSending).where(
            LinkSending.assignment_id == message.assignment_id, LinkSending.channel == message.channel
        )
    )
    client = session.get(Client, message.client_id)
    if assignment is None or sending is None or client is None:
        return "gone"
    if assignment.completed_at is not None:
        return "answered"
    if is_expired(assignment, now):
        return "expired"
    token = link_token(str(settings["SECRET_KEY"]), sending.nonce)
    if hash_token(token) != assignment.token_hash:
        return "reissued"
    if not client.contact_consent:
        return "no_consent"
    channel = engine.channels.get(message.channel)
    if channel is None or not channel.configured(settings):
        return "no_channel"
    recipient = getattr(client, channel.contact)
    if not recipient:
        return "no_contact"
    clinic = str(settings.get("CLINIC_NAME") or "Rapportal")
    if client.site_id != DEFAULT_SITE_ID and client.site is not None:
        clinic = client.site.name
    kind = "reminder" if message.step else "first"
    translations = _translations(settings, client.language)
    link = link_url(sending.base_url, token)
    values = {"clinic": clinic, "link": link}
    body = (BODIES if channel.contact == "email" else SHORT_BODIES)[kind]
    return channel, OutgoingMessage(
        key=f"rapportal-{message.assignment_id}-{message.channel}-{message.step}",
        recipient=recipient,
        subject=translations.gettext(SUBJECTS[kind]) % values,
        body=translations.gettext(body) % values,
        language=client.language,
        clinic=clinic,
        link=link,
    )


_catalogs: dict[tuple[str, str], NullTranslations] = {}


def _translations(settings: Mapping[str, Any], language: str) -> NullTranslations:
    folder = str(settings.get("BABEL_TRANSLATION_DIRECTORIES") or "")
    if (folder, language) not in _catalogs:
        _catalogs[(folder, language)] = Translations.load(folder, [language]) if folder else NullTranslations()
    return _catalogs[(folder, language)]


def _audit(session: so.Session, message: OutboxMessage | None, action: str, **detail: Any) -> None:
    if message is None:
        return
    record(
        session,
        SYSTEM_ACTOR,
        action,
        f"client:{message.client_id}",
        None,
        message=message.id,
        assignment=message.assignment_id,
        channel=message.channel,
        step=message.step,
        **detail,
    )


def deliver_due(
    sessions: so.sessionmaker[so.Session],
    engine: Engine,
    settings: Mapping[str, Any],
    now: datetime | None = None,
    limit: int = 1000,
) -> int:
    """Queue the due reminders, then deliver every due message; return how many were sent."""
    with sessions.begin() as session:
        queue_due_reminders(session, settings, now)
    with sessions() as session:
        ids = due_message_ids(session, settings, now, limit)
    return sum(deliver_message(sessions, engine, settings, i, now) == "sent" for i in ids)


def _aware(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


# -- jobs ----------------------------------------------------------------------------------------------

DELIVER_JOB = "notify.deliver"
SWEEP_JOB = "notify.sweep"


@job(DELIVER_JOB, retries=0)
def _deliver_job(ctx: JobContext, message_id: int) -> None:
    """Deliver one message right after a clinician sent it (the sweep delivers whatever this misses)."""
    deliver_message(ctx.sessions, ctx.engine, ctx.settings, message_id)


@periodic_job(SWEEP_JOB, every_seconds=30)
def _sweep_job(ctx: JobContext) -> None:
    """Queue due reminders and deliver every due message, from the database: a lost run is made up next time."""
    deliver_due(ctx.sessions, ctx.engine, ctx.settings)


def enqueue_deliveries(queue: JobQueue, messages: Iterable[OutboxMessage]) -> None:
    """Ask a worker to deliver these (committed) messages now."""
    for message in messages:
        queue.enqueue(DELIVER_JOB, message_id=message.id)
