"""Progress over an episode, read from the instrument's definition: charts, their lines and bands, a summary.

Everything a clinician's view draws comes from the definition in force: the charted scores and their axis range
(``x-presentation``, else defaults), cutoff lines from ``threshold`` flags, reliable-change bands from
``reliable_change`` flags, band shading and labels from ``x-scoring.bands``. A plugin instrument gets the same
views as a built-in. Nothing here knows the web pages or the database: callers pass the stored administrations.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from functools import lru_cache
from typing import Any, Literal

from core.instruments import Instrument, InstrumentDefinitionError, ScoreSpec
from core.scoring import COMPARISONS, to_decimal

Direction = Literal["higher_is_better", "lower_is_better"]
DIRECTIONS: tuple[Direction, ...] = ("higher_is_better", "lower_is_better")


@dataclass(frozen=True)
class ChartSpec:
    """One chart an instrument asks for: from ``x-presentation.charts``, else the default chart.

    ``range`` is the declared axis range (None: derive it); ``direction`` None means the definition does not say.
    """

    id: str
    title: str
    scores: tuple[str, ...]
    range: tuple[Decimal, Decimal] | None = None
    direction: Direction | None = None


@dataclass(frozen=True)
class Administration:
    """One scored response as the progress views need it; the caller loads it from storage, oldest first."""

    response_id: int
    version: str
    scores: Mapping[str, Decimal | None]
    band: str | None = None
    session_number: int | None = None
    submitted_at: datetime | None = None


@dataclass(frozen=True)
class CutoffLine:
    """A horizontal line where a ``threshold`` flag on a charted score is raised (``score op value``)."""

    flag: str
    score: str
    op: str
    value: Decimal
    label: str

    def crossed(self, value: Decimal) -> bool:
        """Whether ``value`` is where the flag is raised (outside the cutoff): ``value op self.value``."""
        compare = COMPARISONS.get(self.op)
        return bool(compare and compare(value, self.value))


@dataclass(frozen=True)
class ShadedBand:
    """A band of ``x-scoring.bands``, shaded behind the band score's series."""

    id: str
    label: str
    low: Decimal
    high: Decimal


@dataclass(frozen=True)
class ChangeBand:
    """The range within ``amount`` of the episode's first value: changes inside it are not reliable."""

    score: str
    first: Decimal
    amount: Decimal
    flags: tuple[str, ...]
    labels: tuple[str, ...]

    @property
    def low(self) -> Decimal:
        return self.first - self.amount

    @property
    def high(self) -> Decimal:
        return self.first + self.amount


@dataclass(frozen=True)
class SeriesPoint:
    """One administration's value of a charted score."""

    administration: Administration
    value: Decimal


@dataclass(frozen=True)
class ChartSeries:
    """One charted score: its values over the administrations that have one."""

    score: str
    label: str
    points: tuple[SeriesPoint, ...]


@dataclass(frozen=True)
class Chart:
    """Everything needed to draw one chart, in score units; ``administrations`` are its x positions."""

    id: str
    title: str
    instrument: str
    administrations: tuple[Administration, ...]
    series: tuple[ChartSeries, ...]
    y_min: Decimal
    y_max: Decimal
    direction: Direction | None
    lines: tuple[CutoffLine, ...]
    bands: tuple[ShadedBand, ...]
    change_bands: tuple[ChangeBand, ...]


@dataclass(frozen=True)
class ScoreSummary:
    """The latest value of one charted score, its band label, and the change since the first and previous."""

    score: str
    label: str
    latest: SeriesPoint
    band_label: str | None
    since_first: Decimal | None
    since_previous: Decimal | None
    direction: Direction | None
    count: int


@dataclass(frozen=True)
class Progress:
    """An instrument's charts and score summary over a client's administrations."""

    instrument: Instrument
    charts: tuple[Chart, ...]
    summary: tuple[ScoreSummary, ...]


@dataclass(frozen=True)
class OwnTrend:
    """A client's own trend on one outcome score, for the plain-language view they may see after answering.

    ``values`` are (session number or None, value), oldest first; ``since_first`` is None for a single value.
    """

    instrument: str
    title: str
    score_label: str
    direction: Direction
    values: tuple[tuple[int | None, Decimal], ...]
    since_first: Decimal | None


# ---------------------------------------------------------------------------
# Reading the definition
# ---------------------------------------------------------------------------


def reliable_change_threshold(sd: Any, reliability: Any, z: Any = "1.96") -> Decimal:
    """Jacobson & Truax (1991): the smallest reliable change, z x sqrt(2) x SD x sqrt(1 - r)."""
    s_diff = Decimal(2).sqrt() * _dec(sd) * (1 - _dec(reliability)).sqrt()
    return _dec(z) * s_diff


def reliable_change_amount(params: Mapping[str, Any]) -> Decimal | None:
    """The reliable change a flag's parameters stand for: a published ``threshold``, or one from ``sd`` and
    ``reliability`` (and ``z``); None when the parameters name neither."""
    if "threshold" in params:
        return _dec(params["threshold"])
    if "sd" in params and "reliability" in params:
        return reliable_change_threshold(params["sd"], params["reliability"], params.get("z", "1.96"))
    return None


def band_label(instrument: Instrument, band_id: str | None) -> str | None:
    """The label of a band id in this definition (None when it has no such band)."""
    for band in instrument.scoring.bands:
        if band.id == band_id:
            return band.label
    return None


@lru_cache(maxsize=128)
def chart_specs(instrument: Instrument) -> tuple[ChartSpec, ...]:
    """The instrument's charts: ``x-presentation.charts`` if given, else one chart of the band score (or the
    first score). Raises :class:`InstrumentDefinitionError` when the annotation names a score that does not exist.
    """
    scores = {spec.name: spec for spec in instrument.scoring.scores}
    declared = instrument.document.get("x-presentation", {}).get("charts")
    if not declared:
        default = instrument.scoring.band_score or next(iter(scores), None)
        if default is None:
            return ()
        return (ChartSpec(id=default, title=f"{instrument.short_title}: {scores[default].label}", scores=(default,)),)
    specs: list[ChartSpec] = []
    for index, entry in enumerate(declared):
        pointer = f"/x-presentation/charts/{index}"
        for position, name in enumerate(entry["scores"]):
            if name not in scores:
                raise InstrumentDefinitionError(
                    instrument.source, f"{pointer}/scores/{position}", f"no score named {name!r} to chart"
                )
        if entry["id"] in [spec.id for spec in specs]:
            raise InstrumentDefinitionError(
                instrument.source, f"{pointer}/id", f"chart {entry['id']!r} is defined twice"
            )
        declared_range = None
        if "range" in entry:
            low, high = (_dec(value) for value in entry["range"])
            if low >= high:
                raise InstrumentDefinitionError(
                    instrument.source, f"{pointer}/range", f"the range must rise: {low} is not below {high}"
                )
            declared_range = (low, high)
        first = scores[entry["scores"][0]]
        specs.append(
            ChartSpec(
                id=entry["id"],
                title=entry.get("title") or f"{instrument.short_title}: {first.label}",
                scores=tuple(entry["scores"]),
                range=declared_range,
                direction=entry.get("direction"),
            )
        )
    return tuple(specs)


def score_range(instrument: Instrument, score: str) -> tuple[Decimal, Decimal] | None:
    """The possible range of a score: its bands, else the items of a ``sum`` or ``mean``; None if unknown."""
    scoring = instrument.scoring
    if score == scoring.band_score and scoring.bands:
        return (scoring.bands[0].minimum, scoring.bands[-1].maximum)
    spec = next((s for s in scoring.scores if s.name == score), None)
    if spec is None or spec.rule.name not in ("sum", "mean") or "items" not in spec.params:
        return None
    items = [instrument.item(item_id) for item_id in spec.params["items"]]
    lows, highs = [item.lowest for item in items], [item.highest for item in items]
    if any(value is None for value in (*lows, *highs)):
        return None
    low, high = sum(lows, Decimal(0)), sum(highs, Decimal(0))  # type: ignore[arg-type]
    if spec.rule.name == "mean":
        return (low / len(items), high / len(items))
    return (low, high)


# ---------------------------------------------------------------------------
# Building the views
# ---------------------------------------------------------------------------


def episode_progress(instrument: Instrument, administrations: Sequence[Administration]) -> Progress:
    """Charts and summary of one instrument over a client's administrations (oldest first).

    ``instrument`` is the definition in force (normally the version of the latest administration): its lines,
    bands and labels are drawn over every administration.
    """
    specs = chart_specs(instrument)
    charts = tuple(chart for spec in specs if (chart := _chart(instrument, spec, administrations)) is not None)
    summary: list[ScoreSummary] = []
    seen: set[str] = set()
    for spec in specs:
        for score in spec.scores:
            if score not in seen:
                seen.add(score)
                entry = _summary(instrument, spec, score, administrations)
                if entry is not None:
                    summary.append(entry)
    return Progress(instrument=instrument, charts=charts, summary=tuple(summary))


def own_trends(instrument: Instrument, administrations: Sequence[Administration]) -> tuple[OwnTrend, ...]:
    """The trends a client may see of their own answers: charted band scores whose direction of improvement the
    definition declares (an outcome measure such as the ORS or the PHQ-9). A score without bands or direction (a
    session rating such as the SRS) is left out: no band labels, flags or alert texts are part of it either.
    """
    band_score = instrument.scoring.band_score
    trends = []
    for spec in chart_specs(instrument):
        direction = _direction(instrument, spec)
        if direction is None or band_score is None or band_score not in spec.scores:
            continue
        points = _points(band_score, administrations)
        if not points:
            continue
        trends.append(
            OwnTrend(
                instrument=instrument.id,
                title=instrument.short_title,
                score_label=_score_spec(instrument, band_score).label,
                direction=direction,
                values=tuple((p.administration.session_number, p.value) for p in points),
                since_first=points[-1].value - points[0].value if len(points) > 1 else None,
            )
        )
        break  # one trend per instrument: its band score
    return tuple(trends)


def _points(score: str, administrations: Sequence[Administration]) -> tuple[SeriesPoint, ...]:
    return tuple(SeriesPoint(one, value) for one in administrations if (value := one.scores.get(score)) is not None)


def _score_spec(instrument: Instrument, score: str) -> ScoreSpec:
    return next(spec for spec in instrument.scoring.scores if spec.name == score)


def _chart(instrument: Instrument, spec: ChartSpec, administrations: Sequence[Administration]) -> Chart | None:
    single = len(spec.scores) == 1
    series = tuple(
        ChartSeries(
            score=score,
            label=instrument.short_title if single else _score_spec(instrument, score).label,
            points=_points(score, administrations),
        )
        for score in spec.scores
    )
    if not any(one.points for one in series):
        return None
    scoring = instrument.scoring
    lines = tuple(
        CutoffLine(flag.id, flag.params["score"], flag.params["op"], _dec(flag.params["value"]), flag.label)
        for flag in scoring.flags
        if flag.rule.name == "threshold" and flag.params.get("score") in spec.scores
    )
    bands = (
        tuple(ShadedBand(band.id, band.label, band.minimum, band.maximum) for band in scoring.bands)
        if scoring.band_score in spec.scores
        else ()
    )
    change_bands = _change_bands(instrument, spec, series)
    y_min, y_max = _axis(instrument, spec, series, lines)
    return Chart(
        id=spec.id,
        title=spec.title,
        instrument=instrument.id,
        administrations=tuple(
            one for one in administrations if any(one.scores.get(s) is not None for s in spec.scores)
        ),
        series=series,
        y_min=y_min,
        y_max=y_max,
        direction=_direction(instrument, spec),
        lines=lines,
        bands=bands,
        change_bands=change_bands,
    )


def _change_bands(instrument: Instrument, spec: ChartSpec, series: Sequence[ChartSeries]) -> tuple[ChangeBand, ...]:
    """One band per charted score and amount, around the first value, from ``reliable_change`` flags that compare
    with the baseline (a band around the first value means nothing for changes against the previous one)."""
    firsts = {one.score: one.points[0].value for one in series if one.points}
    found: dict[tuple[str, Decimal], ChangeBand] = {}
    for flag in instrument.scoring.flags:
        score = flag.params.get("score")
        amount = reliable_change_amount(flag.params)
        if flag.rule.name != "reliable_change" or score not in firsts or amount is None:
            continue
        if flag.params.get("against", "baseline") != "baseline":
            continue
        key = (score, amount)
        before = found.get(key)
        flags = (*before.flags, flag.id) if before else (flag.id,)
        labels = (*before.labels, flag.label) if before else (flag.label,)
        found[key] = ChangeBand(score, firsts[score], amount, flags, labels)
    return tuple(found.values())


def _axis(
    instrument: Instrument, spec: ChartSpec, series: Sequence[ChartSeries], lines: Sequence[CutoffLine]
) -> tuple[Decimal, Decimal]:
    """The declared range, else the union of the scores' possible ranges, else the data; widened to show every
    value and line."""
    ranges = [spec.range] if spec.range else [score_range(instrument, score) for score in spec.scores]
    values = [point.value for one in series for point in one.points] + [line.value for line in lines]
    lows = [r[0] for r in ranges if r is not None] + values
    highs = [r[1] for r in ranges if r is not None] + values
    low, high = min(lows), max(highs)
    if low == high:
        low, high = low - 1, high + 1
    return low, high


def _direction(instrument: Instrument, spec: ChartSpec) -> Direction | None:
    """The annotation's direction, else one a flag on a charted score states with ``higher_is_better``."""
    if spec.direction is not None:
        return spec.direction
    for flag in instrument.scoring.flags:
        if flag.params.get("score") in spec.scores and "higher_is_better" in flag.params:
            return "higher_is_better" if flag.params["higher_is_better"] else "lower_is_better"
    return None


def _summary(
    instrument: Instrument, spec: ChartSpec, score: str, administrations: Sequence[Administration]
) -> ScoreSummary | None:
    points = _points(score, administrations)
    if not points:
        return None
    latest = points[-1]
    label = None
    if score == instrument.scoring.band_score:
        label = band_label(instrument, latest.administration.band) or band_label(
            instrument, instrument.scoring.band_for({score: latest.value})
        )
    return ScoreSummary(
        score=score,
        label=_score_spec(instrument, score).label,
        latest=latest,
        band_label=label,
        since_first=latest.value - points[0].value if len(points) > 1 else None,
        since_previous=latest.value - points[-2].value if len(points) > 1 else None,
        direction=_direction(instrument, spec),
        count=len(points),
    )


def _dec(value: Any) -> Decimal:
    found = to_decimal(value) if not isinstance(value, str) else Decimal(value)
    if found is None:
        raise ValueError(f"not a number: {value!r}")
    return found
