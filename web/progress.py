"""The client page's charts and score summary, drawn from each instrument's definition.

:func:`core.episode_progress` decides what to show (series, cutoff lines, bands, reliable-change bands, the
summary); this module only turns it into SVG (:mod:`web.charts`), translated notes and template values. No
instrument is named here: a plugin instrument is drawn by the same code as a built-in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any, NamedTuple

from flask import Flask
from markupsafe import Markup, escape

from core import Administration, Chart, Instrument, Progress, episode_progress
from core.care import ResponseRecord, ScoreRecord
from core.expected import ExpectedTable, expected_scores
from core.responses import stored_score_values
from web.charts import NARROW, WIDE, Band, ExpectedPoint, Legend, Line, Point, Series, expected_layer, line_chart
from web.kept import KeptParts, kept_parts
from web.state import db_session, portal
from web.texts import gettext as _  # a chart repeats its phrases at every point: translated once per request
from web.texts import id_url, phrases


def client_progress(
    rows: Sequence[tuple[ResponseRecord, ScoreRecord | None]], alerted: Mapping[int, str] | None = None
) -> dict[str, Any]:
    """Template values for the client page: ``charts``, ``summary`` and ``answered`` (any scored response).

    ``alerted`` maps a response id to the most severe alert it raised: its chart points are marked.
    """
    alerted = alerted or {}
    grouped: dict[str, list[tuple[ResponseRecord, ScoreRecord]]] = {}
    for response, score in rows:
        if score is not None:
            grouped.setdefault(response.instrument_id, []).append((response, score))
    charts: list[dict[str, Any]] = []
    summary: list[dict[str, Any]] = []
    for instrument_id, entries in grouped.items():
        instrument = _in_force(instrument_id, entries[-1][0].instrument_version)
        if instrument is None:
            continue
        drawn = _drawn_progress(instrument, entries, alerted)
        charts.extend(drawn.charts)
        summary.extend(drawn.summary)
    return {"charts": charts, "summary": summary, "answered": bool(grouped)}


class DrawnProgress(NamedTuple):
    """One instrument's charts and score summary as the page shows them, with what they were drawn with."""

    charts: list[dict[str, Any]]
    summary: list[dict[str, Any]]
    # the definition and the expected-change tables the key names by identity: held here, so that no other object
    # can take their identity while the entry is kept
    pinned: tuple[Any, ...]


def _drawn_progress(
    instrument: Instrument, entries: list[tuple[ResponseRecord, ScoreRecord]], alerted: Mapping[int, str]
) -> DrawnProgress:
    """:func:`_progress`, drawn once per distinct input (:func:`drawn_charts`).

    The key holds every input of :func:`_progress`, taken as read, before anything is computed from it: the scored
    responses (ids, versions, session numbers, times, stored scores and bands), the alert each one raised, the
    definition and the clinic's expected-change tables (by identity: a wording install or a recomputed table is
    another object), and the page's locale and time zone (``web.texts.Phrases.key``) and link prefix. On a hit the page pays for neither the scores' Decimals
    nor the charts' series.
    """
    engine = portal().engine
    tables = {score: engine.expected.table(db_session(), instrument, score) for score in expected_scores(instrument)}
    key = (
        phrases().key,
        _href(0),
        id(instrument),
        tuple(id(table) for table in tables.values()),
        tuple(
            (
                response.id,
                response.instrument_version,
                response.session_number,
                response.submitted_at,
                tuple((score.values or {}).items()),
                score.band,
                alerted.get(response.id),
            )
            for response, score in entries
        ),
    )
    return drawn_charts().get_or_make(key, lambda: _progress(instrument, entries, alerted, tables))


def _progress(
    instrument: Instrument,
    entries: list[tuple[ResponseRecord, ScoreRecord]],
    alerted: Mapping[int, str],
    tables: Mapping[str, ExpectedTable | None],
) -> DrawnProgress:
    administrations = [_administration(response, score) for response, score in entries]
    labels = {response.id: when_label(response) for response, _score in entries}
    found = episode_progress(instrument, administrations)
    return DrawnProgress(
        [
            _chart(instrument, chart, labels, alerted, _expected(instrument, chart, labels, tables))
            for chart in found.charts
        ],
        _summary(found, labels),
        (instrument, *tables.values()),
    )


def _administration(response: ResponseRecord, score: ScoreRecord) -> Administration:
    return Administration(
        response_id=response.id,
        version=response.instrument_version,
        scores=stored_score_values(score),
        band=score.band,
        session_number=response.session_number,
        submitted_at=response.submitted_at,
    )


def _in_force(instrument_id: str, version: str) -> Instrument | None:
    """The version the latest response was answered with, else the newest installed; None when neither is."""
    instruments = portal().engine.instruments
    if instrument_id not in instruments:
        return None
    try:
        return instruments.get(instrument_id, version)
    except KeyError:
        return instruments.get(instrument_id)


def when_label(response: ResponseRecord) -> str:
    """A response's label on a chart's axis and an item table's column: the session ("S3"), else the day answered."""
    if response.session_number is not None:
        return f"S{response.session_number}"
    return response.submitted_at.date().isoformat()


def _href(response_id: int) -> str:
    return id_url("clinician.response", "response_id")(response_id)


def _number(value: Decimal) -> str:
    """Scores as stored (30.0 stays 30.0); a computed reliable change to two decimals."""
    if value.as_tuple().exponent < -2:  # type: ignore[operator]
        value = value.quantize(Decimal("0.01"))
    return str(value)


def _signed(value: Decimal | None) -> str | None:
    return None if value is None else f"{value:+}"


def _cutoff_fact(line: Any) -> str:
    """A value past a cutoff line, in the definition's words: "Alliance concern (< 36)"."""
    return _("%(label)s (%(op)s %(value)s)", label=line.label, op=line.op, value=_number(line.value))


def _severity_word(severity: str) -> str:
    words = {"urgent": _("urgent"), "warning": _("warning"), "info": _("information")}
    return words.get(severity, severity)


#: Instruments' drawn charts and summaries kept per process (see :mod:`web.kept`), the least recently used dropped
#: first when there are more.
DRAWN_CHARTS = 128


def drawn_charts(app: Flask | None = None) -> KeptParts:
    """The drawn charts and summaries of ``app`` (default: the current app), by everything they are drawn from."""
    return kept_parts("drawn_charts", DRAWN_CHARTS, app)


def _chart(
    instrument: Instrument,
    chart: Chart,
    labels: dict[int, str],
    alerted: Mapping[int, str],
    expected_and_notes: tuple[list[ExpectedPoint], list[str]],
) -> dict[str, Any]:
    chart_id = f"chart-{instrument.id}-{chart.id}"
    x_keys = [(f"r{a.response_id}", labels[a.response_id]) for a in chart.administrations]
    series = []
    table: dict[str, dict[str, Any]] = {key: {"label": label, "values": {}} for key, label in x_keys}
    for one in chart.series:
        drawn = Series(one.label)
        crossing = [line for line in chart.lines if line.score == one.score]
        for point in one.points:
            response_id = point.administration.response_id
            key, when = f"r{response_id}", labels[response_id]
            href = _href(response_id)
            crossed = [line for line in crossing if line.crossed(point.value)]
            facts = [_cutoff_fact(line) for line in crossed]
            severity = alerted.get(response_id)
            if severity:
                facts.append(_("raised an alert (%(severity)s)", severity=_severity_word(severity)))
            text = _("%(name)s %(value)s (%(when)s)", name=one.label, value=_number(point.value), when=when)
            if facts:
                text = f"{text}: {'; '.join(facts)}"
            state = "outside" if crossed else "within"
            drawn.points.append(Point(key, point.value, href, text, state=state, alert=severity))
            table[key]["values"][one.label] = (_number(point.value), href, "; ".join(facts))
        series.append(drawn)
    lines = [
        Line(line.value, _("%(op)s %(value)s: %(label)s", op=line.op, value=_number(line.value), label=line.label))
        for line in chart.lines
    ]
    expected, expected_notes = expected_and_notes
    bands = [Band(band.low, band.high, band.label) for band in chart.bands]
    shaded = [
        Band(
            band.low,
            band.high,
            _(
                "first %(title)s %(value)s ± %(change)s",
                title=instrument.short_title,
                value=_number(band.first),
                change=_number(band.amount),
            ),
        )
        for band in chart.change_bands
    ]
    notes = [line.label for line in lines]
    notes += [_("%(band)s: %(low)s to %(high)s", band=b.label, low=b.low, high=b.high) for b in chart.bands]
    notes += [
        _(
            "Reliable-change band: first %(title)s %(value)s ± %(change)s (%(low)s to %(high)s)",
            title=instrument.short_title,
            value=_number(band.first),
            change=_number(band.amount),
            low=_number(band.low),
            high=_number(band.high),
        )
        for band in chart.change_bands
    ]
    notes += expected_notes
    marked = any(point.alert for one in series for point in one.points)
    legend = Legend(
        within=_("within the cutoff") if chart.lines else None,
        outside=_("outside the cutoff") if chart.lines else None,
        alert=_("raised an alert") if marked else None,
    )

    def draw(layout: Any, suffix: str, css: str) -> Any:
        return line_chart(
            chart_id + suffix,
            chart.title,
            x_keys,
            series,
            chart.y_min,
            chart.y_max,
            lines=lines,
            bands=bands,
            shaded=shaded,
            layers=[expected_layer(expected)] if expected else (),
            legend=legend,
            layout=layout,
            css_class=css,
        )

    rows = [
        {**table[key], "cells": [table[key]["values"].get(one.label) for one in chart.series]} for key, _label in x_keys
    ]
    return {
        "id": chart_id,
        "title": chart.title,
        "svg": ascii_html(draw(WIDE, "", "chart chart-wide")),
        "svg_narrow": ascii_html(draw(NARROW, "-narrow", "chart chart-narrow")),
        "columns": [one.label for one in chart.series],
        # each row's cells in column order: (value, href, facts), or None where that series has no point
        "rows": rows,
        "table_body": ascii_html(_table_body(rows)),
        "notes": [ascii_html(escape(note)) for note in notes],
    }


def ascii_html(markup: Markup) -> Markup:
    """``markup`` with each character beyond ASCII written as a character reference ("±" as "&#177;"): the same page.

    A drawn chart is part of every client page. Where a page is all ASCII, Python joins its parts and encodes it to
    UTF-8 by copying bytes; one character beyond ASCII anywhere (a reliable-change note's "±") made the whole page of
    some 200 KB a two-byte string to build and encode, about 3% of the view's cost. Not for a script or a style
    (none is inline: the content security policy forbids it), where references are not read.
    """
    if markup.isascii():
        return markup
    return Markup(markup.encode("ascii", "xmlcharrefreplace").decode("ascii"))


def _table_body(rows: list[dict[str, Any]]) -> Markup:
    """The chart's data table rows as the client page shows them: made with the chart, so a drawn chart's page
    pays nothing for its table (two charts of 50 sessions cost a millisecond in template calls per view)."""
    lines = []
    for row in rows:
        cells = []
        for cell in row["cells"]:
            if cell is None:
                cells.append("<td></td>")
                continue
            value, href, facts = cell
            extra = f' <span class="point-facts">{escape(facts)}</span>' if facts else ""
            cells.append(f'<td><a href="{escape(href)}">{escape(value)}</a>{extra}</td>')
        lines.append(f'<tr><th scope="row">{escape(row["label"])}</th>{"".join(cells)}</tr>')
    return Markup("\n".join(lines))


def _expected(
    instrument: Instrument, chart: Chart, labels: dict[int, str], tables: Mapping[str, ExpectedTable | None]
) -> tuple[list[ExpectedPoint], list[str]]:
    """The clinic's expected band at the client's sessions and the notes that explain it, or why it is missing
    (``tables``: the clinic's expected-change table of each score that has one)."""
    if len(chart.series) != 1 or not chart.series[0].points:
        return [], []
    one = chart.series[0]
    table = tables.get(one.score)
    if table is None:
        return [], []
    intake = one.points[0].value
    curve = table.curve_for(intake)
    if curve is None:
        return [], []
    if not curve.enough:
        return [], [
            _(
                "Expected change not shown yet: %(count)s of %(minimum)s completed episodes needed for an intake of "
                "%(range)s (this client's intake: %(intake)s).",
                count=curve.episodes,
                minimum=curve.minimum,
                range=curve.intake.text,
                intake=_number(intake),
            )
        ]
    points: list[ExpectedPoint] = []
    notes = [
        _(
            "Expected change: median and 25th to 75th percentile of %(count)s completed episodes at this clinic "
            "with an intake of %(range)s (this client's intake: %(intake)s).",
            count=curve.episodes,
            range=curve.intake.text,
            intake=_number(intake),
        )
    ]
    for point in one.points:
        figures = curve.at(point.administration.session_number)
        if figures is None:
            continue
        when = labels[point.administration.response_id]
        text = _(
            "%(when)s: expected %(low)s to %(high)s, median %(median)s (%(count)s episodes)",
            when=when,
            low=_number(figures.p25),
            high=_number(figures.p75),
            median=_number(figures.median),
            count=figures.count,
        )
        points.append(
            ExpectedPoint(f"r{point.administration.response_id}", figures.p25, figures.median, figures.p75, text)
        )
        notes.append(text)
    if not points:
        notes.append(
            _(
                "No session of this episode has expected figures yet: each needs %(minimum)s episodes with a score.",
                minimum=curve.session_minimum,
            )
        )
    return points, notes


def _summary(found: Progress, labels: dict[int, str]) -> list[dict[str, Any]]:
    rows = []
    for entry in found.summary:
        response_id = entry.latest.administration.response_id
        crossed = [
            line
            for chart in found.charts
            for line in chart.lines
            if line.score == entry.score and line.crossed(entry.latest.value)
        ]
        rows.append(
            {
                "outside": "; ".join(_cutoff_fact(line) for line in crossed),
                "title": found.instrument.short_title,
                "label": entry.label,
                "value": _number(entry.latest.value),
                "when": labels[response_id],
                "href": _href(response_id),
                "band": entry.band_label,
                "since_first": _signed(entry.since_first),
                "since_previous": _signed(entry.since_previous),
                "direction": _direction(entry.direction),
            }
        )
    return rows


def _direction(direction: str | None) -> str | None:
    if direction == "higher_is_better":
        return _("higher is better")
    if direction == "lower_is_better":
        return _("lower is better")
    return None
