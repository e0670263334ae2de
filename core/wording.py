"""Licensed wording kept in the database, so that every process and every host serves the same text.

A clinic installs the wording it obtained from the licensor (ORS, SRS, WAI-SR ship without it).
Each install is checked against every version of the instrument and stored as a new numbered
version in ``instrument_wordings``, audited in the same transaction; the newest version applies.
Processes keep the applied wording in memory (:class:`core.instruments.InstrumentRegistry`) and
:func:`refresh_wording` brings them up to date with one small query when something changed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import sqlalchemy as sa
import sqlalchemy.orm as so

from core.audit import record
from core.engine import Engine
from core.instruments import InstrumentRegistry, WordingError, WordingVersion, check_wording
from core.models import InstrumentWording

# session.info key: versions this session stored, applied to their registry once the commit succeeds
_PENDING = "rapportal.wording_installed"


def install_wording(
    session: so.Session,
    engine: Engine,
    instrument_id: str,
    document: Any,
    *,
    actor: str,
    address: str | None = None,
) -> WordingVersion:
    """Check a wording document against every version of the instrument and store it as the next version.

    Adds the row and its ``wording.install`` audit entry (instrument, version number, placeholder flag;
    never the text) to ``session``; the caller commits. Once it does, this process's registry uses
    the new version; other processes pick it up at their next :func:`refresh_wording`.
    Raises :class:`WordingError` saying what does not fit.
    """
    versions = engine.instruments.versions_of(instrument_id)
    if not versions:
        raise WordingError(f"no instrument {instrument_id!r} is installed")
    if versions[0].licence.wording_bundled:
        raise WordingError(f"{instrument_id} ships its own wording; nothing to install")
    for instrument in versions:
        check_wording(instrument, document)
    newest = session.scalar(
        sa.select(sa.func.max(InstrumentWording.version)).where(InstrumentWording.instrument_id == instrument_id)
    )
    row = InstrumentWording(
        instrument_id=instrument_id,
        version=(newest or 0) + 1,
        document=dict(document),
        placeholder=bool(document.get("placeholder", False)),
        installed_by=actor[:128],
    )
    try:
        with session.begin_nested():
            session.add(row)
    except sa.exc.IntegrityError:
        # Only another install of the same instrument at the same moment takes this version number.
        raise WordingError(
            f"another installation of {instrument_id} wording was stored at the same moment; install it again"
        ) from None
    record(
        session,
        actor,
        "wording.install",
        f"instrument:{instrument_id}",
        address,
        instrument=instrument_id,
        version=row.version,
        placeholder=row.placeholder,
    )
    version = _version(row)
    session.info.setdefault(_PENDING, []).append((engine.instruments, version))
    return version


@sa.event.listens_for(so.Session, "after_commit")
def _apply_committed_wording(session: so.Session) -> None:
    pending: list[tuple[InstrumentRegistry, WordingVersion]] = session.info.pop(_PENDING, [])
    for registry, version in pending:
        registry.use_wording([version])


@sa.event.listens_for(so.Session, "after_transaction_end")
def _forget_uncommitted_wording(session: so.Session, transaction: so.SessionTransaction) -> None:
    if transaction.parent is None:  # the outermost transaction ended without a commit (or after one)
        session.info.pop(_PENDING, None)


def wording_stamp_columns() -> tuple[sa.ScalarSelect[Any], sa.ScalarSelect[Any]]:
    """The stored wording's stamp (row count, newest id) as two scalar subqueries.

    A hot path can select them beside its own columns and pass the pair to :func:`refresh_wording`,
    saving a statement per request.
    """
    return (
        sa.select(sa.func.count(InstrumentWording.id)).scalar_subquery(),
        sa.select(sa.func.max(InstrumentWording.id)).scalar_subquery(),
    )


_WORDING_STAMP = sa.select(*wording_stamp_columns())  # built once: building it cost more than running it


def refresh_wording(session: so.Session, engine: Engine, stamp: tuple[int, int | None] | None = None) -> bool:
    """Bring the registry up to date with the stored wording; return whether anything was read.

    One aggregate over ``instrument_wordings`` (rows are only ever added, so their count and
    newest id change with every install), unless the caller read it in the same transaction
    (``stamp``, see :func:`wording_stamp_columns`); only when it differs from what the registry
    last saw are the newest versions read. Runs on the caller's session, inside its transaction.
    """
    if stamp is None:
        stamp = tuple(session.connection().execute(_WORDING_STAMP).one())
    if stamp == engine.instruments.wording_stamp:
        return False
    engine.instruments.use_wording(stored_wording(session), stamp)
    return True


def stored_wording(session: so.Session) -> list[WordingVersion]:
    """The newest stored version of every instrument's wording."""
    newest = (
        sa.select(InstrumentWording.instrument_id, sa.func.max(InstrumentWording.version).label("version"))
        .group_by(InstrumentWording.instrument_id)
        .subquery()
    )
    rows = session.scalars(
        sa.select(InstrumentWording).join(
            newest,
            sa.and_(
                InstrumentWording.instrument_id == newest.c.instrument_id,
                InstrumentWording.version == newest.c.version,
            ),
        )
    )
    return [_version(row) for row in rows]


def wording_history(session: so.Session, instrument_id: str) -> list[WordingVersion]:
    """Every stored version of one instrument's wording, oldest first."""
    rows = session.scalars(
        sa.select(InstrumentWording)
        .where(InstrumentWording.instrument_id == instrument_id)
        .order_by(InstrumentWording.version)
    )
    return [_version(row) for row in rows]


def import_wording_folder(session: so.Session, engine: Engine, folder: Path, *, actor: str) -> list[str]:
    """Store the wording files an instance folder held before revision 0005 (``wording/<id>.json``).

    A file is imported only while the database holds no wording for its instrument, so running
    this again, or on a second host with its own folder, changes nothing. Returns one line per
    file saying what happened; the files themselves are left alone and no longer read.
    """
    if not folder.is_dir():
        return []
    stored = set(session.scalars(sa.select(InstrumentWording.instrument_id).distinct()))
    report = []
    for path in sorted(folder.glob("*.json")):
        instrument_id = path.stem
        if instrument_id in stored:
            report.append(f"{path}: not imported, the database holds wording for {instrument_id} already")
            continue
        try:
            document = json.loads(path.read_text(encoding="utf-8"))
            version = install_wording(session, engine, instrument_id, document, actor=actor)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError, WordingError) as error:
            report.append(f"{path}: not imported: {error}")
            continue
        stored.add(instrument_id)
        report.append(f"{path}: imported as {instrument_id} wording version {version.number}")
    return report


def _version(row: InstrumentWording) -> WordingVersion:
    document: Mapping[str, Any] = row.document
    return WordingVersion(
        instrument_id=row.instrument_id,
        number=row.version,
        document=document,
        placeholder=row.placeholder,
        installed_at=row.installed_at,
        installed_by=row.installed_by,
    )
