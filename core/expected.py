"""Expected change from the clinic's own completed episodes: the median and 25th-75th percentile of a score by
session number, for clients who started in the same intake range.

Only scores the definition charts alone with a ``direction`` (``x-presentation.charts[].direction``) get a curve,
so a plugin instrument gets one by declaring the same. The figures are computed from plain
:class:`EpisodeSeries` values, whether they come from the database (:func:`load_series`) or from a CSV export
(:func:`series_from_export`), so the two give the same numbers. The method is described in
docs/expected-change.md.

Percentiles use linear interpolation between order statistics (Hyndman & Fan 1996 type 7, the default of R's
``quantile`` and numpy's ``percentile``; Python's ``statistics.quantiles(method="inclusive")``).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
import sqlalchemy.orm as so

from core.audit import record
from core.errors import InvalidInput
from core.instruments import Instrument, InstrumentRegistry
from core.models import Assignment, CareSession, Episode, Response, Score
from core.progress import Direction, chart_specs, score_range
from core.scoring import to_decimal

DEFAULT_MINIMUM_EPISODES = 30
DEFAULT_MINIMUM_PER_SESSION = 10
DEFAULT_INTAKE_STEP = Decimal(5)
DEFAULT_CACHE_SECONDS = 60.0


@dataclass(frozen=True)
class ExpectedSettings:
    """The settings of the computation (docs/settings.md): ``ranges`` maps an instrument id to the ascending
    boundaries of its intake ranges; an instrument not named there is cut into ranges of ``intake_step``. A range
    needs ``minimum_episodes`` completed episodes; then each session number with at least ``minimum_per_session``
    scores gets its figures."""

    minimum_episodes: int = DEFAULT_MINIMUM_EPISODES
    minimum_per_session: int = DEFAULT_MINIMUM_PER_SESSION
    intake_step: Decimal = DEFAULT_INTAKE_STEP
    ranges: Mapping[str, tuple[Decimal, ...]] = field(default_factory=dict)
    cache_seconds: float = DEFAULT_CACHE_SECONDS

    @classmethod
    def from_config(
        cls,
        minimum: Any = None,
        step: Any = None,
        ranges: Any = None,
        cache_seconds: Any = None,
        per_session: Any = None,
    ) -> ExpectedSettings:
        """Settings from configuration values (numbers, or text as environment variables give them); raises
        ``ValueError`` naming the setting when one is unusable."""
        found = cls()
        counts = []
        for value, default, name in (
            (minimum, found.minimum_episodes, "EXPECTED_MINIMUM_EPISODES"),
            (per_session, found.minimum_per_session, "EXPECTED_MINIMUM_PER_SESSION"),
        ):
            if value is None:
                counts.append(default)
                continue
            if isinstance(value, bool) or not str(value).isdigit() or int(value) < 1:
                raise ValueError(f"{name} must be a whole number of at least 1")
            counts.append(int(value))
        intake_step = found.intake_step
        if step is not None:
            intake_step = to_decimal(step) if not isinstance(step, str) else Decimal(step)
            if intake_step is None or intake_step <= 0:
                raise ValueError("EXPECTED_INTAKE_STEP must be a number above 0")
        parsed: dict[str, tuple[Decimal, ...]] = {}
        for instrument_id, bounds in (ranges or {}).items():
            values = tuple(Decimal(str(value)) for value in bounds)
            if len(values) < 2 or any(low >= high for low, high in itertools.pairwise(values)):
                raise ValueError(f"EXPECTED_INTAKE_RANGES[{instrument_id!r}] must be two or more rising numbers")
            parsed[str(instrument_id)] = values
        seconds = found.cache_seconds if cache_seconds is None else float(cache_seconds)
        if seconds < 0:
            raise ValueError("EXPECTED_CACHE_SECONDS must not be negative")
        return cls(counts[0], counts[1], intake_step, parsed, seconds)


@dataclass(frozen=True)
class IntakeRange:
    """Intake scores from ``low`` up to but not including ``high``; the last range includes ``high``."""

    low: Decimal
    high: Decimal
    last: bool = False

    def contains(self, value: Decimal) -> bool:
        return self.low <= value <= self.high if self.last else self.low <= value < self.high

    @property
    def text(self) -> str:
        return f"{self.low}-{self.high}"


@dataclass(frozen=True)
class ExpectedPoint:
    """The figures at one session number: how many episodes have a score there, the median and the quartiles."""

    session: int
    count: int
    median: Decimal
    p25: Decimal
    p75: Decimal


@dataclass(frozen=True)
class RangeCurve:
    """One intake range: its completed episodes and, once ``episodes`` reaches ``minimum``, its points (sessions
    with at least ``session_minimum`` scores)."""

    intake: IntakeRange
    episodes: int
    minimum: int
    session_minimum: int
    points: tuple[ExpectedPoint, ...]

    @property
    def enough(self) -> bool:
        return self.episodes >= self.minimum

    def at(self, session: int | None) -> ExpectedPoint | None:
        return next((point for point in self.points if point.session == session), None)


@dataclass(frozen=True)
class ExpectedTable:
    """The expected change of one score of one instrument: a curve per intake range."""

    instrument: str
    score: str
    direction: Direction
    curves: tuple[RangeCurve, ...]

    def curve_for(self, intake: Decimal) -> RangeCurve | None:
        """The curve of the range that holds this intake score (None when it lies outside every range)."""
        return next((curve for curve in self.curves if curve.intake.contains(intake)), None)

    def is_worse(self, value: Decimal, point: ExpectedPoint) -> bool:
        """Whether ``value`` lies beyond the worse edge of the band: below the 25th percentile when higher is
        better, above the 75th when lower is better."""
        return value < point.p25 if self.direction == "higher_is_better" else value > point.p75


@dataclass(frozen=True)
class EpisodeSeries:
    """One completed episode's values of a score by session number (the first administration in each session)."""

    episode: str
    values: Mapping[int, Decimal]

    @property
    def intake(self) -> Decimal:
        return self.values[min(self.values)]


# ---------------------------------------------------------------------------
# What the definition asks for
# ---------------------------------------------------------------------------


def expected_scores(instrument: Instrument) -> dict[str, Direction]:
    """Scores that get expected change: each one charted alone with a declared direction of improvement."""
    found: dict[str, Direction] = {}
    for spec in chart_specs(instrument):
        if len(spec.scores) == 1 and spec.direction is not None:
            found.setdefault(spec.scores[0], spec.direction)
    return found


def intake_ranges(instrument: Instrument, score: str, settings: ExpectedSettings) -> tuple[IntakeRange, ...]:
    """The intake ranges of a score: the configured boundaries, else steps of ``intake_step`` over the score's
    possible range (the last one shorter when the step does not divide it); () when the range is unknown."""
    bounds = settings.ranges.get(instrument.id)
    if bounds is None:
        possible = score_range(instrument, score)
        if possible is None:
            return ()
        low, high = possible
        values = [low]
        while values[-1] + settings.intake_step < high:
            values.append(values[-1] + settings.intake_step)
        values.append(high)
        bounds = tuple(values)
    return tuple(
        IntakeRange(low, high, last=index == len(bounds) - 2)
        for index, (low, high) in enumerate(itertools.pairwise(bounds))
    )


# ---------------------------------------------------------------------------
# The computation
# ---------------------------------------------------------------------------


def percentile(sorted_values: Sequence[Decimal], p: Decimal) -> Decimal:
    """The ``p``-quantile (0 to 1) of ascending values by linear interpolation (type 7): with h = (n - 1) p,
    x[floor h] + (h - floor h) (x[floor h + 1] - x[floor h]), counting from 0."""
    if not sorted_values:
        raise ValueError("no values")
    h = (len(sorted_values) - 1) * p
    below = int(h)
    fraction = h - below
    if below + 1 >= len(sorted_values):
        return sorted_values[-1]
    return _tidy(sorted_values[below] + fraction * (sorted_values[below + 1] - sorted_values[below]))


def _tidy(value: Decimal) -> Decimal:
    """The same number without the trailing zeros Decimal arithmetic leaves (17.200 is 17.2, 20.00 is 20.0)."""
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0")
        text += "0" if text.endswith(".") else ""
    return Decimal(text)


def expected_curves(
    series: Iterable[EpisodeSeries], ranges: Sequence[IntakeRange], minimum: int, per_session: int
) -> tuple[RangeCurve, ...]:
    """A curve per intake range from the completed episodes' series."""
    grouped: list[list[EpisodeSeries]] = [[] for _range in ranges]
    for one in series:
        if not one.values:
            continue
        for index, intake in enumerate(ranges):
            if intake.contains(one.intake):
                grouped[index].append(one)
                break
    curves = []
    for intake, members in zip(ranges, grouped, strict=True):
        points: list[ExpectedPoint] = []
        if len(members) >= minimum:
            by_session: dict[int, list[Decimal]] = {}
            for one in members:
                for number, value in one.values.items():
                    by_session.setdefault(number, []).append(value)
            for number in sorted(by_session):
                values = sorted(by_session[number])
                if len(values) >= per_session:
                    points.append(
                        ExpectedPoint(
                            session=number,
                            count=len(values),
                            median=percentile(values, Decimal("0.5")),
                            p25=percentile(values, Decimal("0.25")),
                            p75=percentile(values, Decimal("0.75")),
                        )
                    )
        curves.append(RangeCurve(intake, len(members), minimum, per_session, tuple(points)))
    return tuple(curves)


def build_table(
    instrument: Instrument, score: str, series: Iterable[EpisodeSeries], settings: ExpectedSettings
) -> ExpectedTable | None:
    """The expected-change table of a score, or None when the definition asks for none or its range is unknown."""
    direction = expected_scores(instrument).get(score)
    ranges = intake_ranges(instrument, score, settings)
    if direction is None or not ranges:
        return None
    return ExpectedTable(
        instrument.id,
        score,
        direction,
        expected_curves(series, ranges, settings.minimum_episodes, settings.minimum_per_session),
    )


def _completed(values: dict[int, Decimal]) -> bool:
    """A completed episode has ended and has the score at two or more session numbers."""
    return len(values) >= 2


def load_series(session: so.Session | sa.Connection, instrument_id: str, score: str) -> list[EpisodeSeries]:
    """The completed episodes' series of a score from the database: episodes that have ended (a later episode was
    started, which ends the open one), responses given in one of their sessions, the first in each session."""
    query = (
        sa.select(Response.episode_id, CareSession.number, Score.values[score].as_string())
        .join(Score, Score.response_id == Response.id)
        .join(Assignment, Assignment.id == Response.assignment_id)
        .join(CareSession, CareSession.id == Assignment.session_id)
        .join(Episode, Episode.id == Response.episode_id)
        .where(Response.instrument_id == instrument_id, Episode.ended_at.is_not(None))
        .order_by(Response.episode_id, CareSession.number, Response.submitted_at, Response.id)
    )
    found: dict[Any, dict[int, Decimal]] = {}
    for episode_id, number, text in session.execute(query):
        if text is not None:  # the score as stored, a decimal string; read in SQL to skip decoding the JSON
            found.setdefault(episode_id, {}).setdefault(int(number), Decimal(text))
    return [EpisodeSeries(str(key), values) for key, values in found.items() if _completed(values)]


def series_from_export(rows: Iterable[Mapping[str, str]], instrument_id: str, score: str) -> list[EpisodeSeries]:
    """The same series from the rows of a wide CSV export (``rapportal export --format csv``): rows of the
    instrument with an ``episode``, an ``episode_ended_at`` and a ``session``, the first per session by
    ``submitted_at`` and ``response_id``. Raises ``ValueError`` when the export lacks a needed column."""
    column = f"score_{score}"
    found: dict[str, list[tuple[int, str, int, Decimal]]] = {}
    for index, row in enumerate(rows):
        if index == 0:
            missing = [
                name
                for name in (
                    "instrument",
                    "episode",
                    "episode_ended_at",
                    "session",
                    "submitted_at",
                    "response_id",
                    column,
                )
                if name not in row
            ]
            if missing:
                raise ValueError(f"the export has no column {missing[0]!r}")
        if row["instrument"] != instrument_id or not row["episode_ended_at"] or not row["session"]:
            continue
        if not row["episode"] or not row[column]:
            continue
        found.setdefault(row["episode"], []).append(
            (int(row["session"]), row["submitted_at"], int(row["response_id"]), Decimal(row[column]))
        )
    result = []
    for episode, entries in found.items():
        values: dict[int, Decimal] = {}
        for number, _when, _id, value in sorted(entries):
            values.setdefault(number, value)
        if _completed(values):
            result.append(EpisodeSeries(episode, values))
    return result


class ExpectedChange:
    """The expected-change tables of one app in one process, each recomputed after ``cache_seconds``.

    Each process keeps its own copy for a short time and then reads the database again, so several processes
    never rely on each other; a figure is at most ``cache_seconds`` older than the episodes.
    """

    def __init__(self, settings: ExpectedSettings | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings or ExpectedSettings()
        self._clock = clock
        self._lock = threading.Lock()
        self._tables: dict[tuple[str, str, str], tuple[float, ExpectedTable | None]] = {}

    def table(self, session: so.Session | sa.Connection, instrument: Instrument, score: str) -> ExpectedTable | None:
        """The table of ``score`` of ``instrument`` (None when its definition asks for no expected change).

        ``session`` is an ORM session or a Core connection (a submission's, in its transaction)."""
        if score not in expected_scores(instrument):
            return None
        key = (instrument.id, instrument.version, score)
        now = self._clock()
        with self._lock:
            cached = self._tables.get(key)
        if cached is not None and now - cached[0] < self.settings.cache_seconds:
            return cached[1]
        table = build_table(instrument, score, load_series(session, instrument.id, score), self.settings)
        with self._lock:
            self._tables[key] = (now, table)
        return table


# ---------------------------------------------------------------------------
# Operations: the figures for a person, from the database or from an export
# ---------------------------------------------------------------------------


def expected_instrument(
    instruments: InstrumentRegistry, instrument_id: str, score: str | None
) -> tuple[Instrument, str]:
    """The newest installed version of an instrument and the score to compute (default: its first expected score).

    Raises :class:`InvalidInput` naming ``instrument`` or ``score`` when there is no such instrument or it asks
    for no expected change of that score.
    """
    if instrument_id not in instruments:
        raise InvalidInput(f"No instrument {instrument_id!r} is installed.", "instrument")
    instrument = instruments.get(instrument_id)
    wanted = expected_scores(instrument)
    if not wanted:
        raise InvalidInput(f"{instrument_id} declares no direction of improvement for a charted score.", "instrument")
    chosen = score or next(iter(wanted))
    if chosen not in wanted:
        raise InvalidInput(f"Choose one of: {', '.join(wanted)}.", "score")
    return instrument, chosen


def clinic_expected_table(
    session: so.Session,
    expected: ExpectedChange,
    instrument: Instrument,
    score: str,
    *,
    actor: str,
    address: str | None,
) -> ExpectedTable:
    """The clinic's figures as the client page uses them, for a person reading them (audited as ``expected.view``:
    which instrument, never a figure)."""
    table = expected.table(session, instrument, score)
    if table is None:
        raise InvalidInput(f"{instrument.id} asks for no expected change of {score!r}.", "score")
    record(session, actor, "expected.view", f"instrument:{instrument.id}", address)
    return table


def export_expected_table(
    rows: Iterable[Mapping[str, str]], instrument: Instrument, score: str, settings: ExpectedSettings
) -> ExpectedTable:
    """The same figures recomputed from the rows of a wide CSV export. Raises :class:`InvalidInput` naming
    ``export`` when a needed column is missing or a value is not a number."""
    try:
        series = series_from_export(rows, instrument.id, score)
    except (ValueError, ArithmeticError) as exc:
        raise InvalidInput(str(exc) if isinstance(exc, ValueError) else "a value is not a number", "export") from None
    table = build_table(instrument, score, series, settings)
    if table is None:
        raise InvalidInput(f"{instrument.id} asks for no expected change of {score!r}.", "score")
    return table


def table_to_json(table: ExpectedTable) -> dict[str, Any]:
    """The figures as plain JSON values (numbers as decimal strings, so nothing is rounded)."""
    return {
        "instrument": table.instrument,
        "score": table.score,
        "direction": table.direction,
        "ranges": [
            {
                "intake": curve.intake.text,
                "low": str(curve.intake.low),
                "high": str(curve.intake.high),
                "includes_high": curve.intake.last,
                "episodes": curve.episodes,
                "minimum": curve.minimum,
                "session_minimum": curve.session_minimum,
                "enough": curve.enough,
                "sessions": [
                    {
                        "session": point.session,
                        "count": point.count,
                        "median": str(point.median),
                        "p25": str(point.p25),
                        "p75": str(point.p75),
                    }
                    for point in curve.points
                ],
            }
            for curve in table.curves
        ],
    }
