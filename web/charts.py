"""Server-rendered SVG line charts: no script, no external library, readable when printed.

Series differ by marker shape and line dash as well as colour, so a black-and-white print
still tells them apart. Every point is a link to its response; the page shows the same
numbers in a data table as the text alternative.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal

from markupsafe import Markup, escape

WIDTH, HEIGHT = 640, 300
LEFT, RIGHT, TOP, BOTTOM = 48, 16, 16, 44
PALETTE = ("#1f5f8b", "#a4262c", "#1e6b3a", "#6b3fa0", "#8a5a00")
DASHES = ("", "6 4", "2 3", "8 3 2 3", "")
MARKERS = ("circle", "square", "triangle", "diamond", "circle")
BAND_SHADES = ("#eef3f7", "#dde7ef", "#ccdbe7", "#bbcfdf", "#aac3d7", "#99b7cf")


@dataclass(frozen=True)
class Point:
    x: str  # category key: points of different series with the same key line up
    y: Decimal
    href: str
    label: str  # what a screen reader and the tooltip say


@dataclass
class Series:
    name: str
    points: list[Point] = field(default_factory=list)


@dataclass(frozen=True)
class Band:
    low: Decimal
    high: Decimal
    label: str


@dataclass(frozen=True)
class Line:
    value: Decimal
    label: str


@dataclass(frozen=True)
class ExpectedPoint:
    x: str  # the category key of the client's administration at that session
    low: Decimal  # 25th percentile
    median: Decimal
    high: Decimal  # 75th percentile
    label: str


def _expected_band(
    points: list[ExpectedPoint], xpos: dict[str, float], step: float, ypos: Callable[[Decimal], float]
) -> list[str]:
    """The clinic's expected band: a light 25th-75th percentile bar at each session and a dotted median line."""
    out, medians = [], []
    half = step * 0.3
    for point in points:
        if point.x not in xpos:
            continue
        x, top, bottom, middle = xpos[point.x], ypos(point.high), ypos(point.low), ypos(point.median)
        out.append(
            f'<rect class="chart-expected" x="{x - half:.1f}" y="{top:.1f}" width="{2 * half:.1f}" '
            f'height="{max(bottom - top, 1):.1f}" fill="#fdf1d8" stroke="#8a5a00" stroke-width="1">'
            f"<title>{escape(point.label)}</title></rect>"
        )
        out.append(
            f'<line x1="{x - half:.1f}" x2="{x + half:.1f}" y1="{middle:.1f}" y2="{middle:.1f}" '
            f'stroke="#8a5a00" stroke-width="2"/>'
        )
        medians.append(f"{x:.1f},{middle:.1f}")
    if len(medians) > 1:
        out.append(
            f'<polyline points="{" ".join(medians)}" fill="none" stroke="#8a5a00" stroke-width="1.5" '
            f'stroke-dasharray="2 3"/>'
        )
    return out


def _marker(shape: str, x: float, y: float, colour: str) -> str:
    if shape == "square":
        return f'<rect x="{x - 5:.1f}" y="{y - 5:.1f}" width="10" height="10" fill="{colour}"/>'
    if shape == "triangle":
        return (
            f'<polygon points="{x:.1f},{y - 6:.1f} {x + 6:.1f},{y + 5:.1f} {x - 6:.1f},{y + 5:.1f}" fill="{colour}"/>'
        )
    if shape == "diamond":
        return f'<polygon points="{x:.1f},{y - 6:.1f} {x + 6:.1f},{y:.1f} {x:.1f},{y + 6:.1f} {x - 6:.1f},{y:.1f}" fill="{colour}"/>'
    return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="5" fill="{colour}"/>'


def line_chart(
    chart_id: str,
    title: str,
    x_keys: list[tuple[str, str]],
    series: list[Series],
    y_min: Decimal,
    y_max: Decimal,
    lines: list[Line] = (),  # type: ignore[assignment]
    bands: list[Band] = (),  # type: ignore[assignment]
    shaded: list[Band] = (),  # type: ignore[assignment]
    expected: list[ExpectedPoint] = (),  # type: ignore[assignment]
) -> Markup:
    """An SVG chart: ``x_keys`` are (key, axis label) in order; ``bands`` shade value ranges
    (severity bands, labelled on the right); ``shaded`` is a highlighted range (reliable change); ``expected`` the
    clinic's expected band at the client's sessions."""
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    span = float(y_max - y_min) or 1.0

    def ypos(value: Decimal | float) -> float:
        return TOP + plot_h - (float(value) - float(y_min)) / span * plot_h

    count = max(len(x_keys), 1)
    step = plot_w / count
    xpos = {key: LEFT + step * (index + 0.5) for index, (key, _label) in enumerate(x_keys)}
    out = [
        f'<svg class="chart" id="{escape(chart_id)}" viewBox="0 0 {WIDTH} {HEIGHT}" width="100%" '
        f'role="group" aria-labelledby="{escape(chart_id)}-title" xmlns="http://www.w3.org/2000/svg">',
        f'<title id="{escape(chart_id)}-title">{escape(title)}</title>',
        f'<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="#ffffff" stroke="#c5ccd4"/>',
    ]
    for index, band in enumerate(bands):
        top, bottom = ypos(min(band.high, y_max)), ypos(max(band.low, y_min))
        out.append(
            f'<rect x="{LEFT}" y="{top:.1f}" width="{plot_w}" height="{max(bottom - top, 0):.1f}" '
            f'fill="{BAND_SHADES[index % len(BAND_SHADES)]}"><title>{escape(band.label)}</title></rect>'
        )
        out.append(
            f'<text x="{LEFT + plot_w - 4}" y="{(top + bottom) / 2 + 4:.1f}" text-anchor="end" '
            f'font-size="11" fill="#33404d">{escape(band.label)}</text>'
        )
    for band in shaded:
        top, bottom = ypos(min(band.high, y_max)), ypos(max(band.low, y_min))
        out.append(
            f'<rect x="{LEFT}" y="{top:.1f}" width="{plot_w}" height="{max(bottom - top, 0):.1f}" '
            f'fill="#e9e2f3" stroke="#6b3fa0" stroke-dasharray="3 3"><title>{escape(band.label)}</title></rect>'
        )
        out.append(f'<text x="{LEFT + 4}" y="{top + 12:.1f}" font-size="11" fill="#4b2a75">{escape(band.label)}</text>')
    out.extend(_expected_band(list(expected), xpos, step, ypos))
    for line in lines:
        y = ypos(line.value)
        out.append(
            f'<line x1="{LEFT}" x2="{LEFT + plot_w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#33404d" '
            f'stroke-width="1.5" stroke-dasharray="8 4"/>'
        )
        out.append(
            f'<text x="{LEFT + plot_w - 4}" y="{y - 4:.1f}" text-anchor="end" font-size="11" '
            f'fill="#1d2733">{escape(line.label)}</text>'
        )
    # y axis: five ticks
    for tick in range(5):
        value = float(y_min) + span * tick / 4
        y = ypos(value)
        out.append(
            f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="11" fill="#1d2733">{value:g}</text>'
        )
    for key, label in x_keys:
        out.append(
            f'<text x="{xpos[key]:.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle" font-size="11" '
            f'fill="#1d2733">{escape(label)}</text>'
        )
    for index, one in enumerate(series):
        colour, dash, shape = PALETTE[index % 5], DASHES[index % 5], MARKERS[index % 5]
        coords = [(xpos[p.x], ypos(p.y), p) for p in one.points if p.x in xpos]
        if len(coords) > 1:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y, _p in coords)
            dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
            out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"{dash_attr}/>')
        for x, y, point in coords:
            out.append(
                f'<a href="{escape(point.href)}" aria-label="{escape(point.label)}" class="chart-point">'
                f"<title>{escape(point.label)}</title>{_marker(shape, x, y, colour)}</a>"
            )
    # legend
    legend_x = LEFT
    for index, one in enumerate(series):
        colour, shape = PALETTE[index % 5], MARKERS[index % 5]
        out.append(_marker(shape, legend_x + 6, HEIGHT - 10, colour))
        out.append(
            f'<text x="{legend_x + 16}" y="{HEIGHT - 6}" font-size="12" fill="#1d2733">{escape(one.name)}</text>'
        )
        legend_x += 24 + 8 * len(one.name)
    out.append("</svg>")
    return Markup("".join(out))


def share_chart(chart_id: str, title: str, rows: list[tuple[str, Decimal | None]], withheld: str) -> Markup:
    """An SVG bar chart of shares (0 to 1) drawn from 0 % to 100 %; a row without a value says ``withheld``."""
    label_w, bar_w, row_h = 260, WIDTH - 260 - RIGHT - 48, 28
    height = TOP + row_h * len(rows) + 8
    parts = [
        f'<svg class="chart" id="{escape(chart_id)}" viewBox="0 0 {WIDTH} {height}" role="img" '
        f'aria-labelledby="{escape(chart_id)}-title"><title id="{escape(chart_id)}-title">{escape(title)}</title>'
    ]
    for n, (label, value) in enumerate(rows):
        y = TOP + n * row_h
        parts.append(f'<text x="{label_w - 8}" y="{y + 17}" text-anchor="end" font-size="12">{escape(label)}</text>')
        parts.append(f'<rect x="{label_w}" y="{y + 4}" width="{bar_w}" height="18" fill="{BAND_SHADES[0]}"/>')
        if value is None:
            parts.append(f'<text x="{label_w + 6}" y="{y + 17}" font-size="12">{escape(withheld)}</text>')
            continue
        share = max(Decimal(0), min(Decimal(1), Decimal(value)))
        parts.append(
            f'<rect x="{label_w}" y="{y + 4}" width="{float(share) * bar_w:.1f}" height="18" fill="{PALETTE[0]}"/>'
        )
        parts.append(f'<text x="{label_w + bar_w + 6}" y="{y + 17}" font-size="12">{share * 100:.0f} %</text>')
    parts.append("</svg>")
    return Markup("".join(parts))
