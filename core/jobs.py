"""Background jobs: registered by name, stored in the database, claimed once, retried with backoff.

The database is the source of truth. ``JobQueue.enqueue`` adds a row to ``jobs``; whoever runs it
(a worker, or ``run_until_idle`` in tests and the CLI) first *claims* the row with one conditional
UPDATE (``status = 'queued'`` and due, or ``running`` with an expired lease) in its own transaction,
so a job delivered twice, or found again after a worker died, is run by one worker only. A broker
(see ``core.job_runner``) only tells workers that a row is due; losing its message loses nothing,
because a periodic sweep hands out due rows again.

A job is ``f(ctx: JobContext, **kwargs)``, registered with :func:`job`; kwargs must be JSON-able.
A job that raises is queued again after ``retry_delay_seconds * 2 ** (attempt - 1)`` seconds, at
most ``retries`` times, then marked ``failed`` with the error's type and message and logged.
Jobs whose side effects must happen exactly once (an e-mail, a file) also claim their own row
(``UPDATE ... WHERE status = 'queued'`` or a unique key) before acting: a worker that dies after
acting but before marking its job done leaves the job to be re-run after its lease expires.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
import sqlalchemy.orm as so

from core.engine import Engine
from core.models import Job, JobSchedule, utcnow

log = logging.getLogger("rapportal.jobs")

# Modules that register jobs; imported by load_job_modules() when the app and the worker start.
# Other areas add theirs here (one line each).
JOB_MODULES: tuple[str, ...] = ("core.jobs",)

QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"
STATUSES = (QUEUED, RUNNING, DONE, FAILED)

DEFAULT_LEASE_SECONDS = 300  # a running job's claim lasts this long; a heartbeat renews it while the job runs
MAX_RETRY_DELAY_SECONDS = 3600
ERROR_LENGTH = 1000


@dataclass(frozen=True)
class JobContext:
    """What a running job gets: the engine, database sessions, the settings and the queue.

    ``job_id`` and ``attempt`` are set for the job being run (attempt 1 is the first try).
    """

    engine: Engine
    sessions: so.sessionmaker[so.Session]
    settings: Mapping[str, Any]
    queue: JobQueue
    job_id: str | None = None
    attempt: int = 0


@dataclass(frozen=True)
class JobSpec:
    """A registered job: its function and retry policy."""

    name: str
    function: Callable[..., Any]
    retries: int = 3
    retry_delay_seconds: float = 10

    def retry_delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1, 2, ...): doubling, capped at an hour."""
        return min(self.retry_delay_seconds * 2 ** (attempt - 1), MAX_RETRY_DELAY_SECONDS)


@dataclass(frozen=True)
class PeriodicSpec:
    """A job the worker runs every ``every_seconds`` (once per period across all workers and hosts)."""

    name: str
    function: Callable[[JobContext], Any]
    every_seconds: int


_JOBS: dict[str, JobSpec] = {}
_PERIODIC: dict[str, PeriodicSpec] = {}


def _same_function(a: Callable[..., Any], b: Callable[..., Any]) -> bool:
    # A module imported again (tests reload) registers a new function object of the same name.
    return (a.__module__, a.__qualname__) == (b.__module__, b.__qualname__)


def job(name: str, *, retries: int = 3, retry_delay_seconds: float = 10) -> Callable:
    """Register ``f(ctx: JobContext, **kwargs)`` under ``name``; kwargs must be JSON-able."""
    if retries < 0 or retry_delay_seconds < 0:
        raise ValueError("retries and retry_delay_seconds must not be negative")

    def register(function: Callable[..., Any]) -> Callable[..., Any]:
        known = _JOBS.get(name)
        if known is not None and not _same_function(known.function, function):
            raise ValueError(
                f"job {name!r} is registered twice ({known.function.__module__} and {function.__module__})"
            )
        _JOBS[name] = JobSpec(name, function, retries, retry_delay_seconds)
        return function

    return register


def periodic_job(name: str, *, every_seconds: int) -> Callable:
    """Register ``f(ctx)`` to be run by the worker every ``every_seconds`` seconds."""
    if every_seconds < 1:
        raise ValueError("every_seconds must be at least 1")

    def register(function: Callable[[JobContext], Any]) -> Callable[[JobContext], Any]:
        known = _PERIODIC.get(name)
        if known is not None and not _same_function(known.function, function):
            raise ValueError(f"periodic job {name!r} is registered twice")
        _PERIODIC[name] = PeriodicSpec(name, function, every_seconds)
        return function

    return register


def registered_jobs() -> dict[str, JobSpec]:
    return dict(_JOBS)


def periodic_jobs() -> dict[str, PeriodicSpec]:
    return dict(_PERIODIC)


def load_job_modules(modules: tuple[str, ...] | None = None) -> None:
    """Import every module that registers jobs (``JOB_MODULES``), so any process can run any job."""
    for module in JOB_MODULES if modules is None else modules:
        importlib.import_module(module)


def _worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"[:128]


Dispatch = Callable[[str, datetime], None]


@dataclass
class JobQueue:
    """Jobs in the database of ``sessions``; ``dispatch(job_id, run_at)`` tells a broker (None: nobody to tell).

    ``engine`` is the engine the app runs with (core operations that queue work check their input
    against it); ``clock`` gives the current time (tests move it forward to reach a retry or a
    delayed job).
    """

    sessions: so.sessionmaker[so.Session]
    dispatch: Dispatch | None = None
    engine: Engine | None = None
    clock: Callable[[], datetime] = utcnow
    lease_seconds: float = DEFAULT_LEASE_SECONDS
    _pending_key: str = field(default="rapportal_pending_jobs", repr=False)

    # -- enqueueing --------------------------------------------------------------------------

    def enqueue(self, name: str, *, delay_seconds: float = 0, db: so.Session | None = None, **kwargs: Any) -> str:
        """Queue job ``name`` with ``kwargs`` to run in ``delay_seconds``; returns the job's id.

        With ``db`` the job row joins that session's transaction (committed, and handed to the
        broker, with the caller's change; gone if it rolls back). Without it the row is committed
        at once in a session of its own. On SQLite a caller that has already written in an open
        transaction must pass ``db`` (a second connection would wait for its write lock).
        """
        if name not in _JOBS:
            raise ValueError(f"no job named {name!r} is registered (is its module in core.jobs.JOB_MODULES?)")
        if delay_seconds < 0:
            raise ValueError("delay_seconds must not be negative")
        try:
            payload = json.loads(json.dumps(kwargs))
        except (TypeError, ValueError) as exc:
            raise TypeError(f"the arguments of job {name!r} must be JSON-able: {exc}") from exc
        spec = _JOBS[name]
        now = self.clock()
        row = Job(
            id=uuid.uuid4().hex,
            name=name,
            kwargs=payload,
            status=QUEUED,
            attempts=0,
            max_attempts=spec.retries + 1,
            run_at=now + timedelta(seconds=delay_seconds),
            created_at=now,
        )
        if db is None:
            with self.sessions.begin() as own:
                own.add(row)
            self._dispatch(row.id, row.run_at)
        else:
            db.add(row)
            self._dispatch_after_commit(db, row.id, row.run_at)
        return row.id

    def redispatch(self, job_id: str) -> None:
        """Tell the broker again that a stored job is due (the worker's sweep; a duplicate is harmless)."""
        self._dispatch(job_id, self.clock())

    def _dispatch(self, job_id: str, run_at: datetime) -> None:
        if self.dispatch is None:
            return
        try:
            self.dispatch(job_id, run_at)
        except Exception:
            # The row is stored: the worker's sweep hands it out even if the broker is down now.
            log.warning(
                "job %s is stored but the broker could not be told; the sweep will pick it up", job_id, exc_info=True
            )

    def _dispatch_after_commit(self, db: so.Session, job_id: str, run_at: datetime) -> None:
        pending = db.info.setdefault(self._pending_key, [])
        if not db.info.get(self._pending_key + "_listening"):
            db.info[self._pending_key + "_listening"] = True

            def committed(session: so.Session) -> None:
                for item in session.info.pop(self._pending_key, []):
                    self._dispatch(*item)

            def rolled_back(session: so.Session, _previous: Any) -> None:
                session.info.pop(self._pending_key, None)

            sa.event.listen(db, "after_commit", committed)
            sa.event.listen(db, "after_soft_rollback", rolled_back)
        pending.append((job_id, run_at))

    # -- claiming and running ----------------------------------------------------------------

    def claim(self, job_id: str, *, worker: str | None = None) -> Job | None:
        """Take job ``job_id`` for this worker if it is due and nobody holds it; None otherwise.

        One conditional UPDATE in its own transaction: of several workers asking at once, one wins.
        A ``running`` job whose lease has expired (its worker died) can be claimed again.
        """
        now = self.clock()
        with self.sessions.begin() as db:
            claimed = db.execute(
                sa.update(Job)
                .where(
                    Job.id == job_id,
                    sa.or_(
                        sa.and_(Job.status == QUEUED, Job.run_at <= now),
                        sa.and_(Job.status == RUNNING, Job.lease_until < now),
                    ),
                )
                .values(
                    status=RUNNING,
                    attempts=Job.attempts + 1,
                    worker=worker or _worker_name(),
                    started_at=now,
                    lease_until=now + timedelta(seconds=self.lease_seconds),
                )
                .execution_options(synchronize_session=False)
            )
            if claimed.rowcount != 1:
                return None
            return db.get(Job, job_id)

    def due_job_ids(self, *, limit: int = 100) -> list[str]:
        """Jobs that could be claimed now, oldest first: due queued ones and running ones whose lease expired."""
        now = self.clock()
        with self.sessions() as db:
            return list(
                db.scalars(
                    sa.select(Job.id)
                    .where(
                        sa.or_(
                            sa.and_(Job.status == QUEUED, Job.run_at <= now),
                            sa.and_(Job.status == RUNNING, Job.lease_until < now),
                        )
                    )
                    .order_by(Job.run_at, Job.created_at)
                    .limit(limit)
                )
            )

    def run_claimed(self, context: JobContext, row: Job) -> str:
        """Run a job this worker has claimed, then record the outcome; returns the new status."""
        spec = _JOBS.get(row.name)
        attempt = row.attempts
        heartbeat = _Heartbeat(self, row.id)
        heartbeat.start()
        try:
            if spec is None:
                raise LookupError(f"no job named {row.name!r} is registered in this process")
            spec.function(
                JobContext(
                    engine=context.engine,
                    sessions=context.sessions,
                    settings=context.settings,
                    queue=self,
                    job_id=row.id,
                    attempt=attempt,
                ),
                **row.kwargs,
            )
        except Exception as exc:
            heartbeat.stop()
            error = f"{type(exc).__name__}: {exc}"[:ERROR_LENGTH]
            if spec is not None and attempt < row.max_attempts:
                delay = spec.retry_delay(attempt)
                self._finish(row.id, QUEUED, error=error, run_at=self.clock() + timedelta(seconds=delay))
                log.warning(
                    "job %s (%s) failed on attempt %d, retrying in %.0f s: %s", row.id, row.name, attempt, delay, error
                )
                return QUEUED
            self._finish(row.id, FAILED, error=error)
            log.error("job %s (%s) failed after %d attempts: %s", row.id, row.name, attempt, error)
            return FAILED
        heartbeat.stop()
        self._finish(row.id, DONE)
        return DONE

    def _finish(self, job_id: str, status: str, *, error: str | None = None, run_at: datetime | None = None) -> None:
        now = self.clock()
        values: dict[str, Any] = {"status": status, "lease_until": None, "error": error}
        if status in (DONE, FAILED):
            values["finished_at"] = now
        if run_at is not None:
            values["run_at"] = run_at
        with self.sessions.begin() as db:
            db.execute(sa.update(Job).where(Job.id == job_id, Job.status == RUNNING).values(**values))
        if status == QUEUED and run_at is not None:
            self._dispatch(job_id, run_at)

    def renew_lease(self, job_id: str) -> None:
        with self.sessions.begin() as db:
            db.execute(
                sa.update(Job)
                .where(Job.id == job_id, Job.status == RUNNING)
                .values(lease_until=self.clock() + timedelta(seconds=self.lease_seconds))
            )

    def run_job(self, context: JobContext, job_id: str) -> str | None:
        """Claim and run one job; None when it was not due or another worker holds it."""
        row = self.claim(job_id)
        if row is None:
            return None
        return self.run_claimed(context, row)

    def run_until_idle(self, context: JobContext, *, limit: int = 10_000) -> int:
        """Run due jobs in this process until none is left (jobs they queue included); returns how many ran.

        Jobs not yet due (delayed, or waiting for a retry) stay queued. ``limit`` stops a job that
        keeps queueing itself.
        """
        ran = 0
        while ran < limit:
            ids = self.due_job_ids(limit=min(100, limit - ran))
            if not ids:
                break
            progressed = False
            for job_id in ids:
                if self.run_job(context, job_id) is not None:
                    ran += 1
                    progressed = True
            if not progressed:
                break
        return ran

    # -- periodic jobs -----------------------------------------------------------------------

    def run_periodic(self, context: JobContext) -> list[str]:
        """Run every periodic job whose period has come, here and now, once across all workers; returns their names.

        Each job's period number (seconds since the epoch // every_seconds) is claimed in
        ``job_schedules`` with a conditional UPDATE (or the first INSERT), so of several workers
        on several hosts one runs it. A failure is logged; the next period tries again.
        (The worker uses :meth:`enqueue_periodic` instead, which runs them as ordinary jobs.)
        """
        ran = []
        for spec in self._due_periodic():
            ran.append(spec.name)
            try:
                self.run_periodic_now(context, spec.name)
            except Exception:
                log.exception("periodic job %s failed", spec.name)
        return ran

    def enqueue_periodic(self) -> list[str]:
        """Queue a ``jobs.periodic`` job for every periodic job whose period has come (once across all workers)."""
        names = [spec.name for spec in self._due_periodic()]
        for name in names:
            self.enqueue("jobs.periodic", name=name)
        return names

    def run_periodic_now(self, context: JobContext, name: str) -> None:
        """Run periodic job ``name`` (unclaimed: callers claim its period first)."""
        spec = _PERIODIC.get(name)
        if spec is None:
            raise LookupError(f"no periodic job named {name!r} is registered in this process")
        spec.function(
            JobContext(engine=context.engine, sessions=context.sessions, settings=context.settings, queue=self)
        )

    def _due_periodic(self) -> list[PeriodicSpec]:
        now = self.clock()
        due = []
        for spec in sorted(_PERIODIC.values(), key=lambda s: s.name):
            if self._claim_period(spec.name, int(now.timestamp()) // spec.every_seconds):
                due.append(spec)
        return due

    def _claim_period(self, name: str, period: int) -> bool:
        with self.sessions.begin() as db:
            taken = db.execute(
                sa.update(JobSchedule)
                .where(JobSchedule.name == name, JobSchedule.last_period < period)
                .values(last_period=period, last_run_at=self.clock())
                .execution_options(synchronize_session=False)
            )
            if taken.rowcount == 1:
                return True
            if db.get(JobSchedule, name) is not None:
                return False
        try:
            with self.sessions.begin() as db:
                db.add(JobSchedule(name=name, last_period=period, last_run_at=self.clock()))
        except sa.exc.IntegrityError:
            return False  # another worker made the row first, for this period
        return True

    # -- reporting ---------------------------------------------------------------------------

    def status(self, job_id: str) -> Job | None:
        with self.sessions() as db:
            return db.get(Job, job_id)


class _Heartbeat:
    """Renews a running job's lease every third of it, so a long job is not taken for a dead one."""

    def __init__(self, queue: JobQueue, job_id: str) -> None:
        self._queue = queue
        self._job_id = job_id
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._beat, name=f"job-heartbeat-{job_id}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join()

    def _beat(self) -> None:
        while not self._stopped.wait(self._queue.lease_seconds / 3):
            try:
                self._queue.renew_lease(self._job_id)
            except Exception:
                log.warning("could not renew the lease of job %s", self._job_id, exc_info=True)


def recent_jobs(db: so.Session, *, status: str | None = None, limit: int = 50) -> list[Job]:
    """The newest jobs, optionally of one status (the admin's job list)."""
    query = sa.select(Job).order_by(Job.created_at.desc()).limit(limit)
    if status is not None:
        query = query.where(Job.status == status)
    return list(db.scalars(query))


def purge_finished_jobs(db: so.Session, *, older_than: datetime) -> int:
    """Delete done jobs finished before ``older_than`` (failed ones stay for the admin to see)."""
    result = db.execute(sa.delete(Job).where(Job.status == DONE, Job.finished_at < older_than))
    return result.rowcount or 0


@job("jobs.periodic", retries=0)
def _run_periodic(ctx: JobContext, *, name: str) -> None:
    """A periodic job's turn, queued once per period by a worker's sweep (JobQueue.enqueue_periodic)."""
    ctx.queue.run_periodic_now(ctx, name)


@periodic_job("jobs.purge_finished", every_seconds=3600)
def _purge_finished(ctx: JobContext) -> None:
    days = float(ctx.settings.get("JOBS_KEEP_DONE_DAYS", 7))
    with ctx.sessions.begin() as db:
        purge_finished_jobs(db, older_than=ctx.queue.clock() - timedelta(days=days))
