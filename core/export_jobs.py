"""Exports as background jobs: started from the web page or the API, written to a file, downloaded when ready.

An administrator starts an export (:func:`start_export`); a worker writes it to a file in the
export folder (``RAPPORTAL_EXPORT_FOLDER``, by default ``<instance>/exports``), counting the rows
written against the rows expected as it goes; the administrator who started it downloads it
(:func:`open_export`) until it expires (``RAPPORTAL_EXPORT_KEEP_HOURS``, default 24), when a
periodic job removes the file. No byte of an export passes through a request that a timeout
could cut. Started, finished, failed and downloaded are audited (``export.started``,
``export.finished``, ``export.failed``, ``export.downloaded``) with the format and row count,
never with answers or scores.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import sqlalchemy.orm as so

from core.audit import record
from core.engine import Engine
from core.errors import Conflict, InvalidInput, NotAllowed, NotFound
from core.export import ExportError, as_utc, count_rows, prepare_export, run_export
from core.exporters import ExportSelection
from core.jobs import JobContext, JobQueue, job, periodic_job
from core.models import ExportJob, User, utcnow
from core.sites import site_ids_of

QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"
EXPORT_RETRIES = 2  # a failed export is tried three times in all
DEFAULT_KEEP_HOURS = 24
LATEST_DATE = date(9998, 12, 31)
PROGRESS_SECONDS = 1.0  # the progress row is written at most this often
FILTER_FIELDS = ("instruments", "since", "until", "clinicians", "clients", "identifying")


@dataclass(frozen=True)
class ExportFilters:
    """What an administrator asks to export: instruments, submission dates (inclusive), clinicians, clients.

    The sites are never part of it: a site-limited administrator's exports are always limited to
    their sites.
    """

    instruments: tuple[str, ...] = ()
    since: date | None = None
    until: date | None = None
    clinicians: tuple[str, ...] = ()
    clients: tuple[str, ...] = ()
    identifying: bool = False

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ExportFilters:
        """Read filters from JSON-like values (dates as ``YYYY-MM-DD``); :class:`InvalidInput` names the field."""
        if not isinstance(data, Mapping):
            raise InvalidInput("Give the filters as an object.", "filters")
        unknown = sorted(set(data) - set(FILTER_FIELDS))
        if unknown:
            raise InvalidInput(f"Unknown filter; use {', '.join(FILTER_FIELDS)}.", unknown[0])
        identifying = data.get("identifying", False)
        if not isinstance(identifying, bool):
            raise InvalidInput("Must be true or false.", "identifying")
        return cls(
            instruments=_names(data.get("instruments"), "instruments"),
            since=_date(data.get("since"), "since"),
            until=_date(data.get("until"), "until"),
            clinicians=_names(data.get("clinicians"), "clinicians"),
            clients=_names(data.get("clients"), "clients"),
            identifying=identifying,
        )

    def check(self) -> None:
        for name in ("since", "until"):
            value = getattr(self, name)
            if value is not None and value > LATEST_DATE:
                raise InvalidInput("Use a date up to 9998-12-31.", name)
        if self.since and self.until and self.since > self.until:
            raise InvalidInput("This date is before the 'since' date.", "until")

    def selection(self, sites: tuple[int, ...]) -> ExportSelection:
        since, until = self.since, self.until
        return ExportSelection(
            instruments=self.instruments,
            since=datetime(since.year, since.month, since.day, tzinfo=UTC) if since else None,
            until=datetime(until.year, until.month, until.day, tzinfo=UTC) + timedelta(days=1) if until else None,
            clinicians=self.clinicians,
            clients=self.clients,
            identifying=self.identifying,
            sites=sites,
        )


def _names(value: Any, field: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) and v.strip() for v in value):
        raise InvalidInput("Give a list of names.", field)
    return tuple(v.strip() for v in value)


def _date(value: Any, field: str) -> date | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            pass
    raise InvalidInput("Give a date in the form YYYY-MM-DD.", field)


def _selection_from_json(data: Mapping[str, Any]) -> ExportSelection:
    return ExportSelection(
        instruments=tuple(data.get("instruments") or ()),
        since=datetime.fromisoformat(data["since"]) if data.get("since") else None,
        until=datetime.fromisoformat(data["until"]) if data.get("until") else None,
        clinicians=tuple(data.get("clinicians") or ()),
        clients=tuple(data.get("clients") or ()),
        identifying=bool(data.get("identifying")),
        sites=tuple(data.get("sites") or ()),
    )


def may_export(user: User | None) -> bool:
    """Who may export: an active administrator (the exports page's rule)."""
    return user is not None and user.active and user.role == "admin"


def _check_exporter(engine: Engine, exporter: str, selection: ExportSelection) -> None:
    if not isinstance(exporter, str) or exporter not in engine.exporters:
        known = ", ".join(sorted(engine.exporters)) or "none"
        raise InvalidInput(f"Unknown export format; known: {known}.", "exporter")
    unknown = [i for i in selection.instruments if i not in engine.instruments]
    if unknown:
        raise InvalidInput(f"No instrument {', '.join(map(repr, unknown))} is installed.", "instruments")
    try:
        prepare_export(engine, exporter, selection)
    except ExportError as exc:
        raise InvalidInput(str(exc), "exporter") from exc


def start_export(
    db: so.Session,
    actor: User,
    queue: JobQueue,
    *,
    exporter: str,
    filters: ExportFilters | Mapping[str, Any],
    engine: Engine | None = None,
    address: str | None = None,
) -> ExportJob:
    """Check and queue an export for ``actor``; the job is committed with the caller's transaction.

    Raises :class:`NotAllowed` unless ``actor`` is an active administrator, and
    :class:`InvalidInput` naming ``exporter`` or the filter at fault. The engine that checks the
    format and instruments is ``engine`` or the queue's. Audited as ``export.started``.
    """
    if not may_export(actor):
        raise NotAllowed("Only administrators can export.")
    engine = engine or queue.engine
    if engine is None:
        raise RuntimeError("start_export needs the engine (pass engine=, or build the JobQueue with one)")
    if not isinstance(filters, ExportFilters):
        filters = ExportFilters.from_dict(filters)
    filters.check()
    selection = filters.selection(tuple(site_ids_of(db, actor)))
    _check_exporter(engine, exporter, selection)
    row = ExportJob(
        requested_by=actor.id,
        exporter=exporter,
        selection=selection.to_json(),
        status=QUEUED,
        rows_written=0,
        created_at=utcnow(),
    )
    db.add(row)
    db.flush()
    row.job_id = queue.enqueue("export.run", db=db, export_id=row.id)
    record(
        db,
        f"user:{actor.username}",
        "export.started",
        f"export:{row.id}",
        address,
        format=exporter,
        selection=row.selection,
    )
    return row


def export_status(db: so.Session, actor: User, job_id: int) -> ExportJob:
    """The export ``job_id`` as its owner sees it; :class:`NotFound` for anyone else (and for no such export)."""
    row = db.get(ExportJob, job_id) if isinstance(job_id, int) else None
    if row is None or not may_export(actor) or row.requested_by != actor.id:
        raise NotFound("There is no such export.")
    return row


def recent_exports(db: so.Session, actor: User, *, limit: int = 20) -> list[ExportJob]:
    """``actor``'s newest exports, newest first (the exports page lists them)."""
    if not may_export(actor):
        return []
    query = sa.select(ExportJob).where(ExportJob.requested_by == actor.id)
    return list(db.scalars(query.order_by(ExportJob.id.desc()).limit(limit)))


def open_export(db: so.Session, actor: User, job_id: int, *, address: str | None = None) -> tuple[Path, str, str]:
    """The finished file of export ``job_id``: (path, download filename, media type); audited as ``export.downloaded``.

    :class:`NotFound` unless ``actor`` started it; :class:`Conflict` while it is not ready, after
    it failed, and once its file has expired.
    """
    row = export_status(db, actor, job_id)
    if row.status in (QUEUED, RUNNING):
        raise Conflict("The export is not ready yet.")
    if row.status == FAILED:
        raise Conflict("The export failed; start it again.")
    path = Path(row.path or "")
    if row.removed_at is not None or (row.expires_at and as_utc(row.expires_at) <= utcnow()) or not path.is_file():
        raise Conflict("The export file has expired; start the export again.")
    record(
        db,
        f"user:{actor.username}",
        "export.downloaded",
        f"export:{row.id}",
        address,
        format=row.exporter,
        rows=row.rows_written,
    )
    return path, row.filename or path.name, row.media_type or "application/octet-stream"


# ---------------------------------------------------------------------------
# The jobs
# ---------------------------------------------------------------------------


def export_folder(settings: Mapping[str, Any]) -> Path:
    folder = settings.get("EXPORT_FOLDER")
    if not folder:
        raise RuntimeError("the EXPORT_FOLDER setting is missing")
    return Path(folder)


def _keep(settings: Mapping[str, Any]) -> timedelta:
    return timedelta(hours=float(settings.get("EXPORT_KEEP_HOURS") or DEFAULT_KEEP_HOURS))


class _Progress:
    """Writes ``rows_written`` at most once per PROGRESS_SECONDS, in its own short transaction."""

    def __init__(self, sessions: so.sessionmaker[so.Session], export_id: int) -> None:
        self.sessions = sessions
        self.export_id = export_id
        self.last = time.monotonic()

    def __call__(self, rows: int) -> None:
        now = time.monotonic()
        if now - self.last < PROGRESS_SECONDS:
            return
        self.last = now
        with self.sessions.begin() as db:
            db.execute(
                sa.update(ExportJob)
                .where(ExportJob.id == self.export_id, ExportJob.status == RUNNING)
                .values(rows_written=rows)
            )


@job("export.run", retries=EXPORT_RETRIES, retry_delay_seconds=30)
def run_export_job(ctx: JobContext, *, export_id: int) -> None:
    """Write export ``export_id`` to its file; a retry starts the file again from the first row."""
    with ctx.sessions.begin() as db:
        claimed = db.execute(
            sa.update(ExportJob)
            .where(ExportJob.id == export_id, ExportJob.status.in_((QUEUED, RUNNING)))
            .values(status=RUNNING, started_at=utcnow(), rows_written=0)
        )
        if claimed.rowcount != 1:
            return  # finished or failed already: a duplicate delivery acts no more
        row = db.get(ExportJob, export_id)
        assert row is not None
        user = db.get(User, row.requested_by)
        exporter_name, username = row.exporter, user.username if user else "unknown"
        allowed = may_export(user)
        selection = _selection_from_json(row.selection)
        if allowed and user is not None:
            # the administrator's sites now, not when they asked: a site taken away is not exported
            selection = replace(selection, sites=tuple(site_ids_of(db, user)))
    folder = export_folder(ctx.settings)
    part = folder / f".export-{export_id}-{secrets.token_hex(8)}.part"
    try:
        if not allowed:
            raise NotAllowed("the account that started the export may no longer export")
        plan = prepare_export(ctx.engine, exporter_name, selection)
        expected = count_rows(ctx.sessions.kw["bind"], selection)
        with ctx.sessions.begin() as db:
            db.execute(sa.update(ExportJob).where(ExportJob.id == export_id).values(rows_expected=expected))
        folder.mkdir(parents=True, exist_ok=True)
        with open(part, "wb") as handle:
            written = run_export(
                ctx.sessions,
                ctx.engine,
                exporter_name,
                selection,
                handle,
                actor=f"user:{username}",
                plan=plan,
                progress=_Progress(ctx.sessions, export_id),
                audit=False,
            )
            handle.flush()
            os.fsync(handle.fileno())
        final = folder / f"export-{export_id}-{secrets.token_hex(8)}.{plan.exporter.extension}"
        os.replace(part, final)
    except Exception as exc:
        part.unlink(missing_ok=True)
        last = ctx.attempt >= EXPORT_RETRIES + 1 or isinstance(exc, NotAllowed)
        _failed(ctx, export_id, exc, last=last, actor=f"user:{username}", exporter=exporter_name)
        if isinstance(exc, NotAllowed):
            return  # nothing a retry could change
        raise
    now = utcnow()
    with ctx.sessions.begin() as db:
        db.execute(
            sa.update(ExportJob)
            .where(ExportJob.id == export_id)
            .values(
                status=DONE,
                rows_written=written,
                path=str(final),
                filename=plan.filename,
                media_type=plan.exporter.media_type,
                error=None,
                finished_at=now,
                expires_at=now + _keep(ctx.settings),
            )
        )
        record(db, f"user:{username}", "export.finished", f"export:{export_id}", format=exporter_name, rows=written)


def _failed(ctx: JobContext, export_id: int, exc: Exception, *, last: bool, actor: str, exporter: str) -> None:
    reason = str(exc) if isinstance(exc, (ExportError, NotAllowed)) else type(exc).__name__
    with ctx.sessions.begin() as db:
        rows = db.scalar(sa.select(ExportJob.rows_written).where(ExportJob.id == export_id))
        db.execute(
            sa.update(ExportJob)
            .where(ExportJob.id == export_id)
            .values(
                status=FAILED if last else QUEUED,
                error=reason[:500],
                finished_at=utcnow() if last else None,
            )
        )
        if last:
            record(db, actor, "export.failed", f"export:{export_id}", format=exporter, rows=rows or 0)


def remove_expired_exports(sessions: so.sessionmaker[so.Session], folder: Path, keep: timedelta) -> int:
    """Delete the files of exports past their time, and stray files older than ``keep``; returns files removed."""
    now = utcnow()
    removed = 0
    with sessions.begin() as db:
        expired = db.scalars(
            sa.select(ExportJob).where(ExportJob.removed_at.is_(None), ExportJob.expires_at <= now)
        ).all()
        for row in expired:
            if row.path:
                with contextlib.suppress(FileNotFoundError):
                    Path(row.path).unlink()
                    removed += 1
            row.removed_at = now
        kept = {r for r in db.scalars(sa.select(ExportJob.path).where(ExportJob.removed_at.is_(None))) if r}
    if folder.is_dir():
        cutoff = time.time() - keep.total_seconds()
        for path in folder.iterdir():
            # files of exports whose row never committed, and parts left by a worker that died
            if path.is_file() and str(path) not in kept and path.stat().st_mtime < cutoff:
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                    removed += 1
    return removed


@periodic_job("export.remove_expired", every_seconds=600)
def _remove_expired(ctx: JobContext) -> None:
    remove_expired_exports(ctx.sessions, export_folder(ctx.settings), _keep(ctx.settings))
