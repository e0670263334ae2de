"""The stored data: SQLAlchemy 2.0 typed models.

Raw answers are kept exactly as validated; scores live in their own table because they are
derived and can be recomputed when a scoring rule is corrected. A submitted response is
never edited in place.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
import sqlalchemy.orm as so


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(so.DeclarativeBase):
    type_annotation_map = {dict[str, Any]: sa.JSON, list[Any]: sa.JSON, datetime: sa.DateTime(timezone=True)}


class User(Base):
    """A person who signs in: an administrator, a clinician or a read-only auditor."""

    __tablename__ = "users"

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    username: so.Mapped[str] = so.mapped_column(sa.String(64), unique=True)
    display_name: so.Mapped[str] = so.mapped_column(sa.String(128))
    role: so.Mapped[str] = so.mapped_column(sa.String(16))  # admin | clinician | supervisor | auditor
    password_hash: so.Mapped[str | None] = so.mapped_column(sa.String(255))
    active: so.Mapped[bool] = so.mapped_column(default=True)
    created_at: so.Mapped[datetime] = so.mapped_column(default=utcnow)
    password_changed_at: so.Mapped[datetime] = so.mapped_column(default=utcnow)

    clients: so.Mapped[list[Client]] = so.relationship(back_populates="clinician")


DEFAULT_SITE_ID = 1  # the site revision 0006 (or create_all) makes first; it holds the clients made before sites
DEFAULT_SITE_NAME = "Main site"


class Site(Base):
    """A clinic of the practice group: its clients, clinicians and supervisors, and its name on pages."""

    __tablename__ = "sites"

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    name: so.Mapped[str] = so.mapped_column(sa.String(128), unique=True)
    created_at: so.Mapped[datetime] = so.mapped_column(default=utcnow)


@sa.event.listens_for(Site.__table__, "after_create")
def _default_site(table: sa.Table, connection: sa.Connection, **_kw: Any) -> None:
    connection.execute(table.insert().values(name=DEFAULT_SITE_NAME, created_at=utcnow()))


class UserSite(Base):
    """A site a user belongs to. A user with no site is portal-wide; one with sites is limited to them."""

    __tablename__ = "user_sites"

    user_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("users.id"), primary_key=True)
    site_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("sites.id"), primary_key=True, index=True)


class Supervision(Base):
    """A clinician assigned to a supervisor, who sees their outcome reports and their clients read-only."""

    __tablename__ = "supervisions"

    supervisor_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("users.id"), primary_key=True)
    clinician_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("users.id"), primary_key=True, index=True)


class Client(Base):
    """A person who answers questionnaires, known by a pseudonymous code."""

    __tablename__ = "clients"

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    code: so.Mapped[str] = so.mapped_column(sa.String(64), unique=True)
    display_name: so.Mapped[str | None] = so.mapped_column(sa.String(128))
    # the language the client's questionnaire links are made in (portal text and translated instruments)
    language: so.Mapped[str] = so.mapped_column(sa.String(16), default="en", server_default="en")
    clinician_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("users.id"), index=True)
    created_at: so.Mapped[datetime] = so.mapped_column(default=utcnow)
    # the site (clinic) the client is seen at: see core/sites.py; revision 0006 put earlier clients in the default site
    site_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("sites.id"), index=True, default=DEFAULT_SITE_ID)
    # whether the client sees their own trend after answering (core.clients.set_progress_shown): off by default
    show_progress: so.Mapped[bool] = so.mapped_column(default=False, server_default=sa.false())
    # contact details and consent to contact (core/notify.py; revision 0009_notify): nothing is sent without consent
    email: so.Mapped[str | None] = so.mapped_column(sa.String(254))
    phone: so.Mapped[str | None] = so.mapped_column(sa.String(32))
    contact_consent: so.Mapped[bool] = so.mapped_column(default=False, server_default=sa.false())
    contact_consent_at: so.Mapped[datetime | None]
    time_zone: so.Mapped[str | None] = so.mapped_column(sa.String(64))  # None: the DEFAULT_TIME_ZONE setting

    clinician: so.Mapped[User | None] = so.relationship(back_populates="clients")
    site: so.Mapped[Site] = so.relationship()
    episodes: so.Mapped[list[Episode]] = so.relationship(back_populates="client", order_by="Episode.id")


class Episode(Base):
    """An episode of care: change is measured against its first administration."""

    __tablename__ = "episodes"

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    client_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("clients.id"), index=True)
    title: so.Mapped[str | None] = so.mapped_column(sa.String(128))
    started_at: so.Mapped[datetime] = so.mapped_column(default=utcnow)
    ended_at: so.Mapped[datetime | None]
    # The measurement plan this episode follows (see core/plans.py): its name and its rules,
    # copied here so that a later change to a built-in plan never changes a running episode.
    plan_name: so.Mapped[str | None] = so.mapped_column(sa.String(64))
    plan: so.Mapped[list[Any] | None]

    client: so.Mapped[Client] = so.relationship(back_populates="episodes")
    sessions: so.Mapped[list[CareSession]] = so.relationship(back_populates="episode", order_by="CareSession.number")


class CareSession(Base):
    """One therapy session within an episode."""

    __tablename__ = "care_sessions"
    __table_args__ = (sa.UniqueConstraint("episode_id", "number"),)

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    episode_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("episodes.id"), index=True)
    number: so.Mapped[int]
    held_at: so.Mapped[datetime] = so.mapped_column(default=utcnow)
    # when the clinician released the end-of-session questionnaires (core.care.release_end_of_session);
    # until then their links and the kiosk hold them back (revision 0007 released every earlier session)
    end_released_at: so.Mapped[datetime | None]

    episode: so.Mapped[Episode] = so.relationship(back_populates="sessions")
    assignments: so.Mapped[list[Assignment]] = so.relationship(back_populates="session", order_by="Assignment.id")


class Assignment(Base):
    """One instrument version to be answered by one client, reached through a link.

    Only a SHA-256 hash of the link's token is stored.
    """

    __tablename__ = "assignments"

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    client_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("clients.id"), index=True)
    episode_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("episodes.id"), index=True)
    session_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("care_sessions.id"), index=True)
    instrument_id: so.Mapped[str] = so.mapped_column(sa.String(64))
    instrument_version: so.Mapped[str] = so.mapped_column(sa.String(32))
    language: so.Mapped[str] = so.mapped_column(sa.String(16), default="en")
    token_hash: so.Mapped[str] = so.mapped_column(sa.String(64), unique=True)
    created_at: so.Mapped[datetime] = so.mapped_column(default=utcnow)
    expires_at: so.Mapped[datetime]
    completed_at: so.Mapped[datetime | None]

    client: so.Mapped[Client] = so.relationship()
    session: so.Mapped[CareSession | None] = so.relationship(back_populates="assignments")
    response: so.Mapped[Response | None] = so.relationship(back_populates="assignment")


class Response(Base):
    """A submitted response: the raw answers exactly as validated. Never edited in place."""

    __tablename__ = "responses"
    __table_args__ = (sa.Index("ix_responses_history", "client_id", "instrument_id", "submitted_at"),)

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    # unique: a repeated or double-clicked submit can store exactly one response per link
    assignment_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("assignments.id"), unique=True)
    client_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("clients.id"))
    episode_id: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("episodes.id"), index=True)
    instrument_id: so.Mapped[str] = so.mapped_column(sa.String(64))
    instrument_version: so.Mapped[str] = so.mapped_column(sa.String(32))
    language: so.Mapped[str] = so.mapped_column(sa.String(16), default="en")
    answers: so.Mapped[dict[str, Any]]
    receipt: so.Mapped[str] = so.mapped_column(sa.String(32))
    started_at: so.Mapped[datetime | None]
    submitted_at: so.Mapped[datetime] = so.mapped_column(default=utcnow, index=True)

    assignment: so.Mapped[Assignment | None] = so.relationship(back_populates="response")
    client: so.Mapped[Client] = so.relationship()
    score: so.Mapped[Score | None] = so.relationship(back_populates="response", uselist=False)


class Score(Base):
    """The derived scoring result of a response; recomputed when a scoring rule changes.

    Score values are stored as decimal strings so that 5.0 stays exactly 5.0.
    """

    __tablename__ = "scores"

    response_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("responses.id"), primary_key=True)
    complete: so.Mapped[bool]
    values: so.Mapped[dict[str, Any]]
    band: so.Mapped[str | None] = so.mapped_column(sa.String(64))
    flags: so.Mapped[list[Any]]
    scored_at: so.Mapped[datetime] = so.mapped_column(default=utcnow)

    response: so.Mapped[Response] = so.relationship(back_populates="score")


class Alert(Base):
    """An alert raised by an alert rule; open until a clinician acknowledges it with a note."""

    __tablename__ = "alerts"

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    response_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("responses.id"), index=True)
    client_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("clients.id"), index=True)
    rule: so.Mapped[str] = so.mapped_column(sa.String(64))
    severity: so.Mapped[str] = so.mapped_column(sa.String(16))
    message: so.Mapped[str] = so.mapped_column(sa.Text)
    created_at: so.Mapped[datetime] = so.mapped_column(default=utcnow)
    acknowledged_at: so.Mapped[datetime | None]
    acknowledged_by: so.Mapped[int | None] = so.mapped_column(sa.ForeignKey("users.id"))
    note: so.Mapped[str | None] = so.mapped_column(sa.Text)


class AuditEntry(Base):
    """An append-only record of who did or saw what, when, and from where."""

    __tablename__ = "audit_entries"

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    at: so.Mapped[datetime] = so.mapped_column(default=utcnow, index=True)
    actor: so.Mapped[str] = so.mapped_column(sa.String(128))
    action: so.Mapped[str] = so.mapped_column(sa.String(64), index=True)
    target: so.Mapped[str | None] = so.mapped_column(sa.String(128))
    address: so.Mapped[str | None] = so.mapped_column(sa.String(64))
    detail: so.Mapped[dict[str, Any]] = so.mapped_column(default=dict)


@sa.event.listens_for(AuditEntry, "before_update")
@sa.event.listens_for(AuditEntry, "before_delete")
def _audit_is_append_only(_mapper: Any, _connection: Any, target: AuditEntry) -> None:
    raise PermissionError(f"audit entry {target.id} cannot be changed or deleted: the audit trail is append-only")


@sa.event.listens_for(so.Session, "do_orm_execute")
def _no_bulk_audit_changes(state: so.ORMExecuteState) -> None:
    table = getattr(state.statement, "table", None)
    if (state.is_update or state.is_delete) and (
        table is AuditEntry.__table__ or any(getattr(m, "class_", None) is AuditEntry for m in state.all_mappers)
    ):
        raise PermissionError("the audit trail is append-only: no UPDATE or DELETE of audit_entries")


# The database itself refuses to change or delete audit rows, whatever code or tool connects.
# Revision 0003 installs these triggers; create_all (tests) installs them through the event below.
AUDIT_APPEND_ONLY_SQL = {
    "sqlite": [
        "CREATE TRIGGER audit_entries_no_update BEFORE UPDATE ON audit_entries "
        "BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END",
        "CREATE TRIGGER audit_entries_no_delete BEFORE DELETE ON audit_entries "
        "BEGIN SELECT RAISE(ABORT, 'the audit trail is append-only'); END",
    ],
    "postgresql": [
        "CREATE FUNCTION rapportal_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN RAISE EXCEPTION 'the audit trail is append-only'; END $$",
        "CREATE TRIGGER audit_entries_append_only BEFORE UPDATE OR DELETE ON audit_entries "
        "FOR EACH ROW EXECUTE FUNCTION rapportal_audit_append_only()",
        "CREATE TRIGGER audit_entries_no_truncate BEFORE TRUNCATE ON audit_entries "
        "FOR EACH STATEMENT EXECUTE FUNCTION rapportal_audit_append_only()",
    ],
}


@sa.event.listens_for(AuditEntry.__table__, "after_create")
def _audit_triggers(table: sa.Table, connection: sa.Connection, **_kw: Any) -> None:
    for statement in AUDIT_APPEND_ONLY_SQL.get(connection.dialect.name, []):
        connection.exec_driver_sql(statement)


class ClientClinician(Base):
    """A further clinician assigned to a client (``Client.clinician_id`` is the main one)."""

    __tablename__ = "client_clinicians"

    client_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("clients.id"), primary_key=True)
    user_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("users.id"), primary_key=True, index=True)
    added_at: so.Mapped[datetime] = so.mapped_column(default=utcnow)


class UserSession(Base):
    """A signed-in session: the cookie holds a random id, only its SHA-256 is stored here."""

    __tablename__ = "user_sessions"

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    token_hash: so.Mapped[str] = so.mapped_column(sa.String(64), unique=True)
    user_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("users.id"), index=True)
    created_at: so.Mapped[datetime] = so.mapped_column(default=utcnow)
    last_seen_at: so.Mapped[datetime] = so.mapped_column(default=utcnow)
    address: so.Mapped[str | None] = so.mapped_column(sa.String(64))
    ended_at: so.Mapped[datetime | None]
    end_reason: so.Mapped[str | None] = so.mapped_column(sa.String(32))

    user: so.Mapped[User] = so.relationship()


class KioskSession(Base):
    """A device unlocked for one client's pending assignments; the kiosk cookie holds its token."""

    __tablename__ = "kiosk_sessions"

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    token_hash: so.Mapped[str] = so.mapped_column(sa.String(64), unique=True)
    client_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("clients.id"), index=True)
    created_by: so.Mapped[int] = so.mapped_column(sa.ForeignKey("users.id"))
    assignment_ids: so.Mapped[list[Any]]
    created_at: so.Mapped[datetime] = so.mapped_column(default=utcnow)
    expires_at: so.Mapped[datetime]
    ended_at: so.Mapped[datetime | None]


class ThrottleCounter(Base):
    """Attempts per key, shared by every process: see core/throttle.py.

    A fixed-window counter has one row per window (``window_start`` numbers the window); a backoff
    counter has one row, whose ``window_start`` is its last failure in milliseconds since the epoch.
    """

    __tablename__ = "throttle_counters"

    key: so.Mapped[str] = so.mapped_column(sa.String(160), primary_key=True)
    window_start: so.Mapped[int] = so.mapped_column(sa.BigInteger, primary_key=True)
    count: so.Mapped[int] = so.mapped_column(default=0)


class InstrumentWording(Base):
    """One installed version of an instrument's licensed wording, shared by every host on this database.

    Every install adds a row with the next version number; rows are never changed, and the newest applies.
    """

    __tablename__ = "instrument_wordings"
    __table_args__ = (sa.UniqueConstraint("instrument_id", "version"),)

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    instrument_id: so.Mapped[str] = so.mapped_column(sa.String(64))
    version: so.Mapped[int]  # 1, 2, 3, ... per instrument
    document: so.Mapped[dict[str, Any]]  # the wording file as installed (licensed text: never exported or audited)
    placeholder: so.Mapped[bool] = so.mapped_column(default=False)
    installed_at: so.Mapped[datetime] = so.mapped_column(default=utcnow)
    installed_by: so.Mapped[str] = so.mapped_column(sa.String(128))


# --- Background jobs (core/jobs.py, core/export_jobs.py) ------------------------------------------------------------


class Job(Base):
    """One queued, running, finished or failed background job; the row a worker claims before running it."""

    __tablename__ = "jobs"
    __table_args__ = (sa.Index("ix_jobs_status_run_at", "status", "run_at"),)

    id: so.Mapped[str] = so.mapped_column(sa.String(32), primary_key=True)
    name: so.Mapped[str] = so.mapped_column(sa.String(128))
    kwargs: so.Mapped[dict[str, Any]]
    status: so.Mapped[str] = so.mapped_column(sa.String(16))  # queued | running | done | failed
    attempts: so.Mapped[int] = so.mapped_column(default=0)
    max_attempts: so.Mapped[int] = so.mapped_column(default=4)
    run_at: so.Mapped[datetime]  # due from then on (a delay, or the backoff before a retry)
    created_at: so.Mapped[datetime] = so.mapped_column(default=utcnow, index=True)
    started_at: so.Mapped[datetime | None]
    finished_at: so.Mapped[datetime | None]
    lease_until: so.Mapped[datetime | None]  # a running job's claim; past it, the job may be claimed again
    worker: so.Mapped[str | None] = so.mapped_column(sa.String(128))
    error: so.Mapped[str | None] = so.mapped_column(sa.String(1000))  # the last failure's type and message


class JobSchedule(Base):
    """The last period in which a periodic job ran, claimed by one worker across all hosts."""

    __tablename__ = "job_schedules"

    name: so.Mapped[str] = so.mapped_column(sa.String(128), primary_key=True)
    last_period: so.Mapped[int] = so.mapped_column(sa.BigInteger)
    last_run_at: so.Mapped[datetime]


class ExportJob(Base):
    """An export run as a job: who asked, for what, how far it got, and the file it left in the instance folder."""

    __tablename__ = "export_jobs"

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    job_id: so.Mapped[str | None] = so.mapped_column(sa.String(32))  # the jobs row that runs it
    requested_by: so.Mapped[int] = so.mapped_column(sa.ForeignKey("users.id"), index=True)
    exporter: so.Mapped[str] = so.mapped_column(sa.String(64))
    selection: so.Mapped[dict[str, Any]]  # ExportSelection.to_json(), sites included
    status: so.Mapped[str] = so.mapped_column(sa.String(16), default="queued")  # queued | running | done | failed
    rows_written: so.Mapped[int] = so.mapped_column(default=0)
    rows_expected: so.Mapped[int | None]
    filename: so.Mapped[str | None] = so.mapped_column(sa.String(255))  # the download's name
    media_type: so.Mapped[str | None] = so.mapped_column(sa.String(128))
    path: so.Mapped[str | None] = so.mapped_column(sa.String(1024))  # the file, once written
    error: so.Mapped[str | None] = so.mapped_column(sa.String(500))
    created_at: so.Mapped[datetime] = so.mapped_column(default=utcnow, index=True)
    started_at: so.Mapped[datetime | None]
    finished_at: so.Mapped[datetime | None]
    expires_at: so.Mapped[datetime | None]  # the file is removed then (RAPPORTAL_EXPORT_KEEP_HOURS)
    removed_at: so.Mapped[datetime | None]

    @property
    def expired(self) -> bool:
        return self.removed_at is not None


# ---------------------------------------------------------------------------
# Notifications: links sent by e-mail or SMS, reminders, the outbox (core/notify.py, revision 0009_notify)
# ---------------------------------------------------------------------------


class LinkSending(Base):
    """A link sent to its client through a channel, and the reminders its plan rule asks for.

    The link's token is never stored: it is derived from ``nonce`` and the portal's secret key
    (core.notify.link_token), and the assignment's token hash is set from it when the link is first sent.
    """

    __tablename__ = "link_sendings"
    __table_args__ = (sa.UniqueConstraint("assignment_id", "channel"),)

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    assignment_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("assignments.id", ondelete="CASCADE"), index=True)
    client_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("clients.id"), index=True)
    channel: so.Mapped[str] = so.mapped_column(sa.String(32))
    nonce: so.Mapped[str] = so.mapped_column(sa.String(64))
    base_url: so.Mapped[str] = so.mapped_column(sa.String(255))
    remind_after_hours: so.Mapped[int | None]
    remind_max: so.Mapped[int] = so.mapped_column(default=0)
    reminders_done: so.Mapped[bool] = so.mapped_column(default=False)  # answered, expired or all sent: skip it
    created_at: so.Mapped[datetime] = so.mapped_column(default=utcnow)

    assignment: so.Mapped[Assignment] = so.relationship()
    client: so.Mapped[Client] = so.relationship()


class OutboxMessage(Base):
    """One message to deliver: the first sending of a link (step 0) or its n-th reminder (step n).

    The unique (assignment, channel, step) key means a message is made once however often a job runs;
    delivery claims the row before it acts, so a restarted worker never sends it twice.
    """

    __tablename__ = "outbox_messages"
    __table_args__ = (
        sa.UniqueConstraint("assignment_id", "channel", "step"),
        sa.Index("ix_outbox_messages_status_due", "status", "due_at"),
    )

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    assignment_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("assignments.id", ondelete="CASCADE"), index=True)
    client_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("clients.id"), index=True)
    channel: so.Mapped[str] = so.mapped_column(sa.String(32))
    step: so.Mapped[int]
    status: so.Mapped[str] = so.mapped_column(sa.String(16), default="queued")  # queued|sending|sent|failed|skipped
    due_at: so.Mapped[datetime] = so.mapped_column(default=utcnow)
    attempts: so.Mapped[int] = so.mapped_column(default=0)
    claim: so.Mapped[str | None] = so.mapped_column(sa.String(32))
    claimed_at: so.Mapped[datetime | None]
    sent_at: so.Mapped[datetime | None]
    error: so.Mapped[str | None] = so.mapped_column(sa.String(500))  # the server's refusal: never message text
    created_at: so.Mapped[datetime] = so.mapped_column(default=utcnow)


# -- API keys (issue 13: the JSON API and the FHIR face) ---------------------------------


class ApiKey(Base):
    """A key a script or an EHR sends as ``Authorization: Bearer <key>``; only its SHA-256 is stored.

    It acts as its owner, narrowed by ``scopes`` (read, write, export); a revoked or expired key is refused.
    """

    __tablename__ = "api_keys"

    id: so.Mapped[int] = so.mapped_column(primary_key=True)
    secret_hash: so.Mapped[str] = so.mapped_column(sa.String(64), unique=True)
    prefix: so.Mapped[str] = so.mapped_column(sa.String(16))  # the key's first characters, to tell keys apart
    name: so.Mapped[str] = so.mapped_column(sa.String(128))
    owner_id: so.Mapped[int] = so.mapped_column(sa.ForeignKey("users.id"), index=True)
    scopes: so.Mapped[list[Any]]
    created_at: so.Mapped[datetime] = so.mapped_column(default=utcnow)
    created_by: so.Mapped[str] = so.mapped_column(sa.String(128))
    expires_at: so.Mapped[datetime | None]
    revoked_at: so.Mapped[datetime | None]

    owner: so.Mapped[User] = so.relationship()
