"""Running an export: select responses, stream them through an exporter, audit the export.

No Flask here. The CLI calls :func:`run_export` with a file; the web download calls
:func:`iter_export`, which yields the same bytes for a streaming response. Rows come from the
database in batches (a server-side cursor on PostgreSQL), so memory does not grow with the
number of rows; exporters write each row as it arrives.
"""

from __future__ import annotations

import contextlib
import io
import json
import operator
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from typing import IO, Any

import sqlalchemy as sa
import sqlalchemy.orm as so

from core.audit import record
from core.engine import Engine
from core.exporters import Exporter, ExportRow, ExportSelection
from core.instruments import Instrument, Item
from core.models import Assignment, CareSession, Client, ClientClinician, Episode, Response, Score, User
from core.scoring import decimal_scores

BATCH_SIZE = 2000
CHUNK_SIZE = 64 * 1024


class ExportError(Exception):
    """An export that cannot run as asked: unknown format, or a selection the exporter refuses."""


# ---------------------------------------------------------------------------
# Spreadsheet safety
# ---------------------------------------------------------------------------

# A cell whose first meaningful character is one of these is read as a formula (or DDE call)
# by Excel, LibreOffice and Google Sheets.
_FORMULA_STARTS = frozenset("=+-@\t\r")
_SKIPPED_LEADERS = " \"'"


def neutralise_cell(text: str) -> str:
    """Make a text cell inert for spreadsheets: prefix ``'`` when it could start a formula.

    A formula can hide behind leading spaces or quotes (`` =1+1``, ``"=1+1``), so those are
    looked past. Numbers are never passed here: numeric columns are written as numbers.
    """
    if not text:
        return text
    if text[0] in _FORMULA_STARTS:
        return "'" + text
    stripped = text.lstrip(_SKIPPED_LEADERS)
    if stripped is not text and stripped and stripped[0] in _FORMULA_STARTS:
        return "'" + text
    return text


# ---------------------------------------------------------------------------
# Columns: the wide layout that CSV, Excel, SPSS and the codebook share
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportColumn:
    """One variable of the wide layout (one row per response).

    ``kind`` is ``meta``, ``item``, ``score``, ``band`` or ``flags``; ``type`` is ``text``,
    ``integer``, ``number`` or ``datetime``; ``key`` is the item id or score name.
    """

    name: str
    label: str
    kind: str
    type: str
    key: str = ""
    options: tuple[tuple[Any, str], ...] = ()
    allowed: str = ""
    code: str | None = None
    instruments: tuple[str, ...] = ()
    flatten: bool = False  # booleans become 1/0, lists become "a;b"


META_COLUMNS = (
    ExportColumn("response_id", "Response number", "meta", "integer", "response_id"),
    ExportColumn("client", "Client code (pseudonym)", "meta", "text", "client"),
    ExportColumn("client_name", "Client display name (identifying)", "meta", "text", "client_name"),
    ExportColumn("clinician", "Clinician username", "meta", "text", "clinician"),
    ExportColumn("clinician_name", "Clinician display name (identifying)", "meta", "text", "clinician_name"),
    ExportColumn(
        "episode", "Episode number (recomputes expected change: docs/expected-change.md)", "meta", "integer", "episode"
    ),
    ExportColumn(
        "episode_ended_at", "Episode ended at (UTC; blank while it is open)", "meta", "datetime", "episode_ended_at"
    ),
    ExportColumn("session", "Session number within the episode", "meta", "integer", "session"),
    ExportColumn("instrument", "Instrument id", "meta", "text", "instrument"),
    ExportColumn("version", "Instrument version", "meta", "text", "version"),
    ExportColumn("submitted_at", "Submitted at (UTC)", "meta", "datetime", "submitted_at"),
)
IDENTIFYING_COLUMNS = frozenset({"client_name", "clinician_name"})


def _item_type(item: Item) -> str:
    types = item.schema.get("type", [])
    types = [types] if isinstance(types, str) else list(types)
    if item.options and all(isinstance(o.value, int) and not isinstance(o.value, bool) for o in item.options):
        return "integer"
    if "boolean" in types:
        return "integer"  # 1 yes, 0 no: numbers in every target
    if "integer" in types:
        return "integer"
    if "number" in types:
        return "number"
    return "text"


def _allowed(item: Item) -> str:
    if item.options:
        return "; ".join(f"{o.value} = {o.label}" for o in item.options)
    if item.minimum is not None or item.maximum is not None:
        step = f" in steps of {item.step}" if item.step is not None else ""
        return f"{item.minimum} to {item.maximum}{step}"
    if _item_type(item) == "text":
        return "free text"
    return ""


def item_label(instrument: Instrument, item: Item) -> str:
    """The label exports use: the bundled wording, or the topic for licensed wording (never exported)."""
    if instrument.licence.wording_bundled and item.text:
        return item.text
    return item.topic


def wide_columns(instruments: Sequence[Instrument], identifying: bool) -> tuple[ExportColumn, ...]:
    """Meta columns, then every item and named score of ``instruments`` (first seen first), band, flags."""
    columns = [c for c in META_COLUMNS if identifying or c.name not in IDENTIFYING_COLUMNS]
    items: dict[str, ExportColumn] = {}
    scores: dict[str, ExportColumn] = {}
    for instrument in instruments:
        for item in instrument.items:
            if item.id in items:
                previous = items[item.id]
                if instrument.id not in previous.instruments:
                    items[item.id] = _add_instrument(previous, instrument.id)
                continue
            boolean = "boolean" in str(item.schema.get("type", ""))
            items[item.id] = ExportColumn(
                name=item.id,
                label=item_label(instrument, item),
                kind="item",
                type=_item_type(item),
                key=item.id,
                options=((1, "Yes"), (0, "No")) if boolean else tuple((o.value, o.label) for o in item.options),
                allowed="1 = Yes; 0 = No" if boolean else _allowed(item),
                code=item.code,
                instruments=(instrument.id,),
                flatten=boolean or "array" in str(item.schema.get("type", "")),
            )
        for spec in instrument.scoring.scores:
            name = f"score_{spec.name}"
            if name in scores:
                previous = scores[name]
                if instrument.id not in previous.instruments:
                    scores[name] = _add_instrument(previous, instrument.id)
                continue
            scores[name] = ExportColumn(
                name=name,
                label=spec.label,
                kind="score",
                type="number",
                key=spec.name,
                allowed=f"computed by rule {spec.rule.name}",
                code=(instrument.codes.get("scores") or {}).get(spec.name),
                instruments=(instrument.id,),
            )
    columns.extend(items.values())
    columns.extend(scores.values())
    columns.append(ExportColumn("band", "Severity band (id)", "band", "text", "band"))
    columns.append(ExportColumn("flags", "Flags raised, separated by ';'", "flags", "text", "flags"))
    return tuple(columns)


def _add_instrument(column: ExportColumn, instrument_id: str) -> ExportColumn:
    """A column that several instruments share: its label can no longer be one instrument's."""
    label = f"{column.key} {'score' if column.kind == 'score' else 'item'} of the response's instrument"
    return ExportColumn(**{**asdict(column), "label": label, "instruments": (*column.instruments, instrument_id)})


def wide_values(
    row: ExportRow, columns: Sequence[ExportColumn], clean: Callable[[str], str] | None = None
) -> list[Any]:
    """The values of one response in column order: text, ints, Decimals, datetimes or None.

    ``clean``, when given, is applied to every text value (CSV and Excel pass ``neutralise_cell``).
    """
    layout = _LAYOUTS.get(id(columns))
    if layout is None or layout.columns is not columns:
        if len(_LAYOUTS) > 64:  # one per export's column set; keep a long-running server's cache small
            _LAYOUTS.clear()
        layout = _LAYOUTS[id(columns)] = _Layout(columns)
    return layout.values(row, clean)


def _flat(value: Any) -> Any:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, list):
        return ";".join(str(v) for v in value)
    return value


def _session(row: ExportRow) -> int | None:
    return None if row.session is None else int(row.session)


def _flags(row: ExportRow) -> str:
    return ";".join(row.flags)


_META_GETTERS: dict[str, Callable[[ExportRow], Any]] = {"session": _session}
_EXTRA_KEYS = frozenset({"episode", "episode_ended_at", "client_name", "clinician_name"})  # read from row.extra


class _Layout:
    """``wide_values`` compiled for one column sequence.

    This is the hot loop of every wide export. A row answers one instrument, so it fills its
    few answers and scores into a row of blanks instead of looking up every column; the row's
    plain fields are read with one ``attrgetter`` call, the extra ones from ``row.extra``.
    """

    def __init__(self, columns: Sequence[ExportColumn]) -> None:
        self.columns = columns
        self.blank: list[Any] = [None] * len(columns)
        plain: list[tuple[int, str]] = []
        self.extras: list[tuple[int, str]] = []
        self.computed: list[tuple[int, Callable[[ExportRow], Any]]] = []
        self.items: dict[str, int] = {}
        self.scores: dict[str, int] = {}
        for index, column in enumerate(columns):
            if column.kind == "item":
                self.items.setdefault(column.key, index)
            elif column.kind == "score":
                self.scores.setdefault(column.key, index)
            elif column.kind == "band":
                plain.append((index, "band"))
            elif column.kind == "flags":
                self.computed.append((index, _flags))
            elif column.key in _EXTRA_KEYS:
                self.extras.append((index, column.key))
            elif column.key in _META_GETTERS:
                self.computed.append((index, _META_GETTERS[column.key]))
            else:
                plain.append((index, column.key))
        self.plain_indexes = tuple(index for index, _name in plain)
        names = [name for _index, name in plain]
        # attrgetter of several names returns a tuple; of one, the value itself
        self.plain: Callable[[ExportRow], tuple[Any, ...]] = (
            operator.attrgetter(*names) if len(names) > 1 else lambda row: (getattr(row, names[0]),) if names else ()
        )

    def values(self, row: ExportRow, clean: Callable[[str], str] | None) -> list[Any]:
        out = self.blank.copy()
        if clean is None:
            for index, value in zip(self.plain_indexes, self.plain(row), strict=True):
                out[index] = value
        else:
            for index, value in zip(self.plain_indexes, self.plain(row), strict=True):
                out[index] = clean(value) if value.__class__ is str else value
        if self.extras:
            extra = row.extra
            for index, key in self.extras:
                value = extra.get(key)
                out[index] = clean(value) if clean is not None and value.__class__ is str else value
        for index, getter in self.computed:
            value = getter(row)
            out[index] = clean(value) if clean is not None and value.__class__ is str else value
        positions = self.items
        for key, value in row.answers.items():
            index = positions.get(key)
            if index is None:
                continue
            cls = value.__class__
            if cls is bool or cls is list:
                value = _flat(value)
                cls = value.__class__
            out[index] = clean(value) if clean is not None and cls is str else value
        positions = self.scores
        for key, value in row.scores.items():
            index = positions.get(key)
            if index is not None:
                out[index] = value
        return out


_LAYOUTS: dict[int, _Layout] = {}


def as_utc(value: datetime) -> datetime:
    """The same moment as an aware UTC datetime; a naive one (SQLite returns those) is read as UTC."""
    tzinfo = value.tzinfo
    if tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value if tzinfo is UTC else value.astimezone(UTC)


# ---------------------------------------------------------------------------
# The context exporters receive
# ---------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ExportContext:
    """What an exporter knows besides the rows: the engine, the selection and its instruments."""

    engine: Engine
    selection: ExportSelection
    instruments: tuple[Instrument, ...]
    generated_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @cached_property
    def columns(self) -> tuple[ExportColumn, ...]:
        """The wide layout over every instrument in the selection."""
        return wide_columns(self.instruments, self.selection.identifying)

    def columns_for(self, instrument_id: str) -> tuple[ExportColumn, ...]:
        """The wide layout of one instrument (all its versions in the selection)."""
        cache = self.__dict__.setdefault("_per_instrument", {})
        if instrument_id not in cache:
            versions = [i for i in self.instruments if i.id == instrument_id]
            cache[instrument_id] = wide_columns(versions, self.selection.identifying)
        return cache[instrument_id]

    def instrument(self, instrument_id: str, version: str) -> Instrument | None:
        """The definition a row was answered on, or None when that version is no longer installed.

        Looked up once per version for the whole export: exporters call this for every row, and the
        wording must not change half-way through a file.
        """
        cache = self.__dict__.setdefault("_by_key", {})
        key = (instrument_id, version)
        if key not in cache:
            try:
                cache[key] = self.engine.instruments.get(instrument_id, version)
            except KeyError:
                cache[key] = None
        return cache[key]


def instruments_in(engine: Engine, selection: ExportSelection) -> tuple[Instrument, ...]:
    """Every installed version of the selected instruments (all instruments when none is named)."""
    wanted = set(selection.instruments)
    found = [i for i in engine.instruments.all_versions() if not wanted or i.id in wanted]
    return tuple(sorted(found, key=lambda i: (i.id, i.version)))


# ---------------------------------------------------------------------------
# Reading rows from the database
# ---------------------------------------------------------------------------


def export_query(selection: ExportSelection, *, json_as_text: bool = False) -> sa.Select[Any]:
    """The SELECT behind an export: responses with client, clinician, session and scores.

    With ``json_as_text`` the answers, score values and flags come as the database gives them (the stored JSON
    text on SQLite) for :func:`json_value` to decode, instead of through SQLAlchemy's JSON type.
    """
    answers, values, flags = Response.answers, Score.values, Score.flags
    if json_as_text:
        answers, values, flags = (sa.type_coerce(c, sa.Text).label(c.key) for c in (answers, values, flags))
    columns: list[Any] = [
        Response.id,
        Client.code,
        User.username,
        CareSession.number,
        Response.instrument_id,
        Response.instrument_version,
        Response.submitted_at,
        answers,
        values,
        Score.band,
        flags,
        Response.episode_id,
        Episode.ended_at,
    ]
    if selection.identifying:
        columns += [Client.display_name, User.display_name]
    query = (
        sa.select(*columns)
        .join(Client, Client.id == Response.client_id)
        .outerjoin(User, User.id == Client.clinician_id)
        .outerjoin(Assignment, Assignment.id == Response.assignment_id)
        .outerjoin(CareSession, CareSession.id == Assignment.session_id)
        .outerjoin(Score, Score.response_id == Response.id)
        .outerjoin(Episode, Episode.id == Response.episode_id)
    )
    if selection.instruments:
        query = query.where(Response.instrument_id.in_(selection.instruments))
    if selection.since is not None:
        query = query.where(Response.submitted_at >= as_utc(selection.since))
    if selection.until is not None:
        query = query.where(Response.submitted_at < as_utc(selection.until))
    if selection.clinicians:
        # the client's main clinician or any further clinician assigned to the client
        selected = sa.select(User.id).where(User.username.in_(selection.clinicians))
        further = sa.select(ClientClinician.client_id).where(ClientClinician.user_id.in_(selected))
        query = query.where(sa.or_(Client.clinician_id.in_(selected), Client.id.in_(further)))
    if selection.clients:
        query = query.where(Client.code.in_(selection.clients))
    if selection.sites:
        query = query.where(Client.site_id.in_(selection.sites))
    return query.order_by(Response.id)


def _reading_bind(bind: sa.Engine) -> tuple[sa.Engine, bool]:
    """The engine to read an export with, and whether it was made here (and must be disposed).

    Rapportal's SQLite connections open every transaction with ``BEGIN IMMEDIATE``, which takes
    the write lock: a long export would hold it and stall submissions. Exports read through a
    plain connection instead; under WAL a SELECT reads one consistent snapshot without a lock.
    """
    if bind.dialect.name != "sqlite":
        return bind, False
    reader = sa.create_engine(bind.url, poolclass=sa.pool.NullPool, connect_args={"timeout": 30})
    return reader, True


_scan_json = json.JSONDecoder().scan_once  # the C scanner that json.loads ends in, without its Python layers


def json_value(stored: Any) -> Any:
    """A JSON column's value from its stored text, exactly as ``json.loads`` reads it; anything else as it is.

    PostgreSQL's driver decodes JSON itself, and SQLite may hand over a bare number: those pass through.
    """
    if stored.__class__ is not str:
        return stored
    try:
        value, end = _scan_json(stored, 0)
    except StopIteration:
        return json.loads(stored)  # leading whitespace, or not JSON: json.loads decides (and says why)
    return value if end == len(stored) else json.loads(stored)


def row_to_export_row(row: Any, identifying: bool = False, *, json_as_text: bool = False) -> ExportRow:
    """One row of :func:`export_query`'s result as an :class:`ExportRow`, read by position.

    The exports and the API's reads (core/records.py) both build their rows here, so a column added to the
    query is read in one place. Columns a caller adds after the query's own follow at the end. Pass the
    query's ``json_as_text`` on.
    """
    session, answers, values, flags, ended_at = row[3], row[7], row[8], row[10], row[12]
    if json_as_text:
        answers, values, flags = json_value(answers), json_value(values), json_value(flags)
    extra = {"episode": row[11], "episode_ended_at": None if ended_at is None else as_utc(ended_at)}
    if identifying:
        extra["client_name"] = row[13]
        extra["clinician_name"] = row[14]
    export_row = ExportRow.__new__(ExportRow)
    # Giving the instance its __dict__ whole skips the frozen dataclass's per-field object.__setattr__
    # (a third of the cost of a row in a large export) and the keyword dict of __dict__.update; the
    # result is identical. Every container made per row is work for the garbage collector.
    object.__setattr__(
        export_row,
        "__dict__",
        {
            "response_id": row[0],
            "client": row[1],
            "clinician": row[2],
            "session": None if session is None else str(session),
            "instrument": row[4],
            "version": row[5],
            "submitted_at": as_utc(row[6]),
            "answers": answers or {},
            "scores": decimal_scores(values),
            "band": row[9],
            "flags": tuple(flags) if flags else (),
            "extra": extra,
        },
    )
    return export_row


def stream_rows(bind: sa.Engine, selection: ExportSelection, batch_size: int = BATCH_SIZE) -> Iterator[ExportRow]:
    """Yield the selected responses oldest id first, ``batch_size`` rows per database round trip."""
    reader, owned = _reading_bind(bind)
    try:
        with reader.connect() as conn:
            query = export_query(selection, json_as_text=True)
            result = conn.execution_options(stream_results=True, yield_per=batch_size).execute(query)
            identifying = selection.identifying
            # Row by row, not partitions(): the result still fetches batch_size rows per round trip, but makes
            # each row (its JSON decoded) only when it is taken, so a batch never sits in memory as objects that
            # outlive garbage collections and make the collector scan the whole heap again and again.
            for row in result:
                yield row_to_export_row(row, identifying, json_as_text=True)
    finally:
        if owned:
            reader.dispose()


# ---------------------------------------------------------------------------
# Running an export
# ---------------------------------------------------------------------------


def list_exporters(engine: Engine) -> list[Exporter]:
    """Every registered exporter, built-in or third-party, by name."""
    return sorted(engine.exporters.values(), key=lambda exporter: exporter.name)


@dataclass(frozen=True, eq=False)
class ExportPlan:
    """A checked export: the exporter and the context it will write with."""

    exporter: Exporter
    context: ExportContext

    @property
    def filename(self) -> str:
        stamp = self.context.generated_at.strftime("%Y%m%dT%H%M%SZ")
        return f"rapportal-{self.exporter.name}-{stamp}.{self.exporter.extension}"


def prepare_export(engine: Engine, exporter_name: str, selection: ExportSelection) -> ExportPlan:
    """Find the exporter and check it accepts the selection; raise :class:`ExportError` if not."""
    exporter = engine.exporters.get(exporter_name)
    if exporter is None:
        known = ", ".join(e.name for e in list_exporters(engine)) or "none"
        raise ExportError(f"unknown export format {exporter_name!r} (known: {known})")
    unknown = [i for i in selection.instruments if i not in engine.instruments]
    if unknown:
        raise ExportError(f"no instrument {', '.join(map(repr, unknown))} is installed")
    if not exporter.can_export(selection):
        raise ExportError(f"the {exporter.name} exporter cannot export this selection")
    return ExportPlan(exporter, ExportContext(engine, selection, instruments_in(engine, selection)))


PROGRESS_EVERY = 500  # rows between two calls of an export's progress callback


class _Counted:
    """Count the rows an exporter actually consumed, telling ``progress`` every ``PROGRESS_EVERY`` rows."""

    def __init__(self, rows: Iterable[ExportRow], progress: Callable[[int], None] | None = None) -> None:
        self._rows = rows
        self._progress = progress
        self.count = 0

    def __iter__(self) -> Iterator[ExportRow]:
        progress = self._progress
        for row in self._rows:
            self.count += 1
            if progress is not None and self.count % PROGRESS_EVERY == 0:
                progress(self.count)
            yield row


def count_rows(bind: sa.Engine, selection: ExportSelection) -> int:
    """How many responses ``selection`` holds (an export's rows expected, for its progress)."""
    reader, owned = _reading_bind(bind)
    try:
        with reader.connect() as conn:
            selected = export_query(selection).order_by(None).with_only_columns(Response.id).subquery()
            return conn.execute(sa.select(sa.func.count()).select_from(selected)).scalar_one()
    finally:
        if owned:
            reader.dispose()


def _bind_of(session_factory: so.sessionmaker[so.Session]) -> sa.Engine:
    bind = session_factory.kw.get("bind")
    if not isinstance(bind, sa.Engine):
        raise ExportError("the session factory is not bound to a database engine")
    return bind


def run_export(
    session_factory: so.sessionmaker[so.Session],
    engine: Engine,
    exporter_name: str,
    selection: ExportSelection,
    stream: IO[bytes],
    *,
    actor: str,
    address: str | None = None,
    plan: ExportPlan | None = None,
    progress: Callable[[int], None] | None = None,
    audit: bool = True,
) -> int:
    """Write the selected responses to ``stream`` in the named format; return the rows written.

    The export is audited afterwards in its own transaction (action ``export``, with the
    selection and the row count), also when it fails half-way (``completed`` false); a caller
    that audits the export itself (an export job) passes ``audit=False``. ``progress(rows)`` is
    called every ``PROGRESS_EVERY`` rows the exporter has taken (and not at all by an exporter
    that reads no rows). Raises :class:`ExportError` before writing anything when the format or
    selection is refused.
    """
    plan = plan or prepare_export(engine, exporter_name, selection)
    rows = _Counted(stream_rows(_bind_of(session_factory), selection), progress)
    try:
        plan.exporter.write(rows, stream, plan.context)
        stream.flush()
    except BaseException:
        # Record the attempt (some rows may have left already), but never hide why it failed.
        if audit:
            with contextlib.suppress(Exception):
                _audit(session_factory, plan, rows.count, False, actor, address)
        raise
    if audit:
        _audit(session_factory, plan, rows.count, True, actor, address)
    return rows.count


def _audit(
    session_factory: so.sessionmaker[so.Session],
    plan: ExportPlan,
    count: int,
    completed: bool,
    actor: str,
    address: str | None,
) -> None:
    with session_factory() as session, session.begin():
        record(
            session,
            actor,
            "export",
            f"export:{plan.exporter.name}",
            address,
            format=plan.exporter.name,
            selection=plan.context.selection.to_json(),
            rows=count,
            completed=completed,
        )


class _QueueStream(io.RawIOBase):
    """A write-only stream that hands fixed-size chunks to a bounded queue (constant memory)."""

    def __init__(self, chunks: queue.Queue[Any], cancelled: threading.Event) -> None:
        self._chunks = chunks
        self._cancelled = cancelled
        self._buffer = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        if self._cancelled.is_set():
            raise BrokenPipeError("the download was closed")
        self._buffer += data
        if len(self._buffer) >= CHUNK_SIZE:
            self._put(bytes(self._buffer))
            self._buffer.clear()
        return len(data)

    def flush(self) -> None:
        if self._buffer:
            self._put(bytes(self._buffer))
            self._buffer.clear()

    def _put(self, chunk: bytes) -> None:
        while not self._cancelled.is_set():
            try:
                self._chunks.put(chunk, timeout=0.5)
                return
            except queue.Full:
                continue
        raise BrokenPipeError("the download was closed")


_DONE = object()


def iter_export(
    session_factory: so.sessionmaker[so.Session],
    engine: Engine,
    exporter_name: str,
    selection: ExportSelection,
    *,
    actor: str,
    address: str | None = None,
) -> tuple[ExportPlan, Iterator[bytes]]:
    """Check the export now (raising :class:`ExportError`), then return its plan and a byte iterator.

    For a streaming HTTP response: ``plan.filename`` and ``plan.exporter.media_type`` give the
    headers; the iterator runs the export in a worker thread and yields chunks as they are
    written. Closing the iterator early (the client went away) stops the export, which is
    audited as not completed.
    """
    plan = prepare_export(engine, exporter_name, selection)
    return plan, _chunks(session_factory, engine, exporter_name, selection, plan, actor, address)


def _chunks(
    session_factory: so.sessionmaker[so.Session],
    engine: Engine,
    exporter_name: str,
    selection: ExportSelection,
    plan: ExportPlan,
    actor: str,
    address: str | None,
) -> Iterator[bytes]:
    chunks: queue.Queue[Any] = queue.Queue(maxsize=16)
    cancelled = threading.Event()
    failure: list[BaseException] = []

    def work() -> None:
        stream = _QueueStream(chunks, cancelled)
        try:
            run_export(
                session_factory, engine, exporter_name, selection, stream, actor=actor, address=address, plan=plan
            )
        except BaseException as exc:
            failure.append(exc)
        finally:
            while not cancelled.is_set():
                try:
                    chunks.put(_DONE, timeout=0.5)
                    break
                except queue.Full:
                    continue

    worker = threading.Thread(target=work, name=f"export-{exporter_name}", daemon=True)
    worker.start()
    try:
        while True:
            chunk = chunks.get()
            if chunk is _DONE:
                break
            yield chunk
    finally:
        cancelled.set()
        worker.join()
    if failure:
        raise failure[0]


def write_text_lines(stream: IO[bytes], lines: Iterable[str]) -> None:
    """Encode and write text lines in batches (exporters that produce text use this)."""
    batch: list[str] = []
    for line in lines:
        batch.append(line)
        if len(batch) >= 512:
            stream.write("".join(batch).encode("utf-8"))
            batch.clear()
    if batch:
        stream.write("".join(batch).encode("utf-8"))


__all__ = [
    "ExportColumn",
    "ExportContext",
    "ExportError",
    "ExportPlan",
    "as_utc",
    "count_rows",
    "item_label",
    "iter_export",
    "list_exporters",
    "neutralise_cell",
    "prepare_export",
    "run_export",
    "stream_rows",
    "wide_columns",
    "wide_values",
    "write_text_lines",
]
