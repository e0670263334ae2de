"""Server-rendered SVG line charts: no script, no external library, readable on a phone and on paper.

Colour means state, never decoration: a point is drawn in the "within" colour or, when its value is where a cutoff
line's flag is raised, in the "outside" colour (with a hollow centre, so a black-and-white print tells them apart
too). Series differ by marker shape and line dash. A point that raised an alert gets a ring. Axis ticks are whole
numbers. Labels are drawn last, on a white halo, in the first place where no point or other label is, so no point
covers a label. Every point is a link to its response; the page shows the same numbers in a data table.

Two layouts: ``WIDE`` for desktops and print, ``NARROW`` for phones, whose viewBox is about the width it is drawn
at (360 user units in a 350 px column), so 12-unit text stays about 12 px on screen.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from markupsafe import Markup, escape

WIDTH, HEIGHT = 640, 300
LEFT, RIGHT, TOP, BOTTOM = 48, 16, 16, 44
PALETTE = ("#1f5f8b", "#a4262c", "#1e6b3a", "#6b3fa0", "#8a5a00")  # share charts, and nothing that means state
DASHES = ("", "6 4", "2 3", "8 3 2 3", "")
MARKERS = ("circle", "square", "triangle", "diamond", "circle")
BAND_SHADES = ("#eef3f7", "#dde7ef", "#ccdbe7", "#bbcfdf", "#aac3d7", "#99b7cf")
LINE_INK = "#33404d"  # series lines: neutral; what a value means is told by its point
STATE_INK = {"within": "#1f5f8b", "outside": "#b3261e"}
ALERT_INK = {"urgent": "#b3261e", "warning": "#8a5a00", "info": "#33404d"}
TEXT_INK = "#1d2733"


@dataclass(frozen=True)
class Layout:
    """Sizes in SVG user units; the plot sits between the margins, the legend under the x labels."""

    width: int
    height: int  # without the legend rows, which add to it
    left: int
    right: int
    top: int
    bottom: int
    font: int
    marker: float


WIDE = Layout(WIDTH, HEIGHT, LEFT, RIGHT, TOP, BOTTOM, 12, 5)
NARROW = Layout(360, 250, 30, 6, 12, 36, 12, 5)


@dataclass(frozen=True)
class Point:
    x: str  # category key: points of different series with the same key line up
    y: Decimal
    href: str
    label: str  # what a screen reader and the tooltip say
    state: str = "within"  # "within" or "outside" a cutoff line's flag
    alert: str | None = None  # the most severe alert this point's response raised


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


@dataclass(frozen=True)
class Legend:
    """The translated words of the state legend (the series names are their own legend); None leaves one out."""

    within: str | None = None
    outside: str | None = None
    alert: str | None = None


@dataclass(frozen=True)
class Frame:
    """Where things go on one chart, handed to extra layers so they draw in the same coordinates."""

    layout: Layout
    y_min: Decimal
    y_max: Decimal
    xpos: dict[str, float]

    @property
    def plot_width(self) -> float:
        return self.layout.width - self.layout.left - self.layout.right

    @property
    def plot_height(self) -> float:
        return self.layout.height - self.layout.top - self.layout.bottom

    def ypos(self, value: Decimal | float) -> float:
        span = float(self.y_max - self.y_min) or 1.0
        return self.layout.top + self.plot_height - (float(value) - float(self.y_min)) / span * self.plot_height


#: An extra layer (an expected-change band, say): given the frame, returns SVG drawn behind the lines and points.
Layer = Callable[[Frame], str]


def expected_layer(points: Sequence[ExpectedPoint]) -> Layer:
    """The expected band as a chart layer, drawn in the chart's own coordinates."""

    def draw(frame: Frame) -> str:
        step = frame.plot_width / max(len(frame.xpos), 1)
        return "".join(_expected_band(list(points), frame.xpos, step, frame.ypos))

    return draw


def whole_ticks(low: Decimal, high: Decimal, most: int = 6) -> list[int]:
    """Whole-number ticks from ``low`` to ``high``, at most ``most`` of them, a step of 1, 2 or 5 times a power
    of ten: 0-27 gives 0, 5, ..., 25; 0-40 gives 0, 10, ..., 40; 1-5 gives 1, 2, 3, 4, 5."""
    first, last = math.ceil(low), math.floor(high)
    if last < first:
        return []
    power = 1
    while True:
        for factor in (1, 2, 5):
            step = factor * power
            start = math.ceil(first / step) * step
            count = (last - start) // step + 1
            if count <= most:
                return list(range(start, last + 1, step))
        power *= 10


def _text_width(text: str, font: float) -> float:
    return len(text) * font * 0.56 + 4


def _marker(shape: str, x: float, y: float, colour: str, size: float = 5, hollow: bool = False) -> str:
    paint = f'fill="#ffffff" stroke="{colour}" stroke-width="2.5"' if hollow else f'fill="{colour}"'
    r = size
    if shape == "square":
        return f'<rect x="{x - r:.1f}" y="{y - r:.1f}" width="{2 * r:.1f}" height="{2 * r:.1f}" {paint}/>'
    if shape == "triangle":
        return f'<polygon points="{x:.1f},{y - r - 1:.1f} {x + r + 1:.1f},{y + r:.1f} {x - r - 1:.1f},{y + r:.1f}" {paint}/>'
    if shape == "diamond":
        return f'<polygon points="{x:.1f},{y - r - 1:.1f} {x + r + 1:.1f},{y:.1f} {x:.1f},{y + r + 1:.1f} {x - r - 1:.1f},{y:.1f}" {paint}/>'
    return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{r:.1f}" {paint}/>'


class _Placer:
    """Puts labels where no point marker and no earlier label is (boxes in user units)."""

    def __init__(self, obstacles: list[tuple[float, float, float, float]]) -> None:
        self.taken = list(obstacles)

    def place(
        self, candidates: Sequence[tuple[float, float, str]], width: float, font: float
    ) -> tuple[float, float, str]:
        """The first candidate (x, baseline y, anchor) whose box hits nothing, else the one that hits least."""

        def box(x: float, y: float, anchor: str) -> tuple[float, float, float, float]:
            left = x - width if anchor == "end" else x
            return (left, y - font, left + width, y + 3)

        def hits(b: tuple[float, float, float, float]) -> int:
            return sum(1 for o in self.taken if b[0] < o[2] and o[0] < b[2] and b[1] < o[3] and o[1] < b[3])

        best = min(candidates, key=lambda c: hits(box(*c)))
        for candidate in candidates:
            if hits(box(*candidate)) == 0:
                best = candidate
                break
        self.taken.append(box(*best))
        return best


def _label(x: float, y: float, anchor: str, text: str, font: float, fill: str = TEXT_INK) -> str:
    """Text on a white halo: the halo is a copy drawn first with a wide white stroke (``paint-order`` would do it
    in one element, but WeasyPrint ignores it), hidden from screen readers."""
    at = f'x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" font-size="{font}"'
    return (
        f'<text {at} fill="#ffffff" stroke="#ffffff" stroke-width="4" stroke-linejoin="round" aria-hidden="true">'
        f'{escape(text)}</text><text {at} fill="{fill}">{escape(text)}</text>'
    )


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
    *,
    layers: Sequence[Layer] = (),
    legend: Legend | None = None,
    layout: Layout = WIDE,
    css_class: str = "chart",
) -> Markup:
    """An SVG chart: ``x_keys`` are (key, axis label) in order; ``bands`` shade value ranges (severity bands);
    ``shaded`` is a highlighted range (reliable change); ``layers`` draw more bands (expected change) behind the
    lines and points; ``legend`` words the state legend (none: no state legend)."""
    lay = layout
    count = max(len(x_keys), 1)
    step = (lay.width - lay.left - lay.right) / count
    frame = Frame(
        lay, y_min, y_max, {key: lay.left + step * (index + 0.5) for index, (key, _label) in enumerate(x_keys)}
    )
    plot_w, plot_h, ypos, xpos = frame.plot_width, frame.plot_height, frame.ypos, frame.xpos
    font, right_edge = lay.font, lay.left + plot_w
    coords = [[(xpos[p.x], ypos(p.y), p) for p in one.points if p.x in xpos] for one in series]
    obstacles = [
        (x - lay.marker - 5, y - lay.marker - 5, x + lay.marker + 5, y + lay.marker + 5)
        for drawn in coords
        for x, y, _p in drawn
    ]
    placer = _Placer(obstacles)
    legend_rows = _legend_rows(series, legend, lay)
    height = lay.height + 18 * max(len(legend_rows) - 1, 0)
    out = [
        f'<svg class="{escape(css_class)}" id="{escape(chart_id)}" viewBox="0 0 {lay.width} {height}" width="100%" '
        f'role="group" aria-labelledby="{escape(chart_id)}-title" xmlns="http://www.w3.org/2000/svg">',
        f'<title id="{escape(chart_id)}-title">{escape(title)}</title>',
        f'<rect x="{lay.left}" y="{lay.top}" width="{plot_w:.1f}" height="{plot_h:.1f}" fill="#ffffff" stroke="#c5ccd4"/>',
    ]
    labels: list[str] = []
    for index, band in enumerate(bands):
        top, bottom = ypos(min(band.high, y_max)), ypos(max(band.low, y_min))
        out.append(
            f'<rect x="{lay.left}" y="{top:.1f}" width="{plot_w:.1f}" height="{max(bottom - top, 0):.1f}" '
            f'fill="{BAND_SHADES[index % len(BAND_SHADES)]}"><title>{escape(band.label)}</title></rect>'
        )
        if bottom - top >= font:  # a band too thin for its label is named in the notes under the chart
            middle = (top + bottom) / 2 + font / 3
            heights = [middle] + [
                h
                for k in range(1, int((bottom - top) // (font + 4)) + 1)
                for h in (middle - k * (font + 4), middle + k * (font + 4))
                if top + font <= h <= bottom - 2
            ]
            x, y, anchor = placer.place(
                [
                    (edge, h, anchor)
                    for h in heights
                    for edge, anchor in ((right_edge - 4, "end"), (lay.left + 4, "start"))
                ],
                _text_width(band.label, font),
                font,
            )
            labels.append(_label(x, y, anchor, band.label, font, "#33404d"))
    for band in shaded:
        top, bottom = ypos(min(band.high, y_max)), ypos(max(band.low, y_min))
        out.append(
            f'<rect x="{lay.left}" y="{top:.1f}" width="{plot_w:.1f}" height="{max(bottom - top, 0):.1f}" '
            f'fill="#e9e2f3" fill-opacity="0.7" stroke="#6b3fa0" stroke-dasharray="3 3"><title>{escape(band.label)}</title></rect>'
        )
        width = _text_width(band.label, font)
        x, y, anchor = placer.place(
            [
                (lay.left + 4, top + font + 1, "start"),
                (right_edge - 4, top + font + 1, "end"),
                (lay.left + 4, bottom - 4, "start"),
                (right_edge - 4, bottom - 4, "end"),
            ],
            width,
            font,
        )
        labels.append(_label(x, y, anchor, band.label, font, "#4b2a75"))
    # extra band layers (expected change, ...) go behind the cutoff lines, series and points
    out.extend(layer(frame) for layer in layers)
    for line in lines:
        y = ypos(line.value)
        out.append(
            f'<line x1="{lay.left}" x2="{right_edge:.1f}" y1="{y:.1f}" y2="{y:.1f}" stroke="{LINE_INK}" '
            f'stroke-width="1.5" stroke-dasharray="8 4"/>'
        )
        width = _text_width(line.label, font)
        # just above or below the line at either end, then further off it, until no point is in the way
        candidates = [
            (edge, y - 4 - shift, anchor) if above else (edge, y + font + 2 + shift, anchor)
            for shift in (0, font + 6, 2 * (font + 6), 3 * (font + 6))
            for above in (True, False)
            for edge, anchor in ((right_edge - 4, "end"), (lay.left + 4, "start"))
        ]
        inside = [c for c in candidates if lay.top + font <= c[1] <= lay.top + plot_h - 2]
        x, ty, anchor = placer.place(inside or candidates, width, font)
        labels.append(_label(x, ty, anchor, line.label, font))
    for value in whole_ticks(y_min, y_max):
        y = ypos(value)
        out.append(f'<line x1="{lay.left - 3}" x2="{lay.left}" y1="{y:.1f}" y2="{y:.1f}" stroke="#8a949e"/>')
        out.append(
            f'<text class="tick" x="{lay.left - 5}" y="{y + font / 3:.1f}" text-anchor="end" font-size="{font}" '
            f'fill="{TEXT_INK}">{value}</text>'
        )
    widest = max((_text_width(label, font) for _key, label in x_keys), default=0)
    every = max(1, math.ceil(widest / step))
    for index, (key, label) in enumerate(x_keys):
        if (len(x_keys) - 1 - index) % every:
            continue  # every n-th label, counted from the latest, so labels never overlap
        out.append(
            f'<text x="{xpos[key]:.1f}" y="{lay.height - lay.bottom + font + 4}" text-anchor="middle" '
            f'font-size="{font}" fill="{TEXT_INK}">{escape(label)}</text>'
        )
    for index, drawn in enumerate(coords):
        dash, shape = DASHES[index % 5], MARKERS[index % 5]
        if len(drawn) > 1:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y, _p in drawn)
            dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
            out.append(f'<polyline points="{path}" fill="none" stroke="{LINE_INK}" stroke-width="2"{dash_attr}/>')
        for x, y, point in drawn:
            ring = ""
            if point.alert:
                ring = (
                    f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{lay.marker + 4:.1f}" fill="none" '
                    f'stroke="{ALERT_INK.get(point.alert, LINE_INK)}" stroke-width="2" class="alert-ring"/>'
                )
            out.append(
                f'<a href="{escape(point.href)}" aria-label="{escape(point.label)}" class="chart-point" '
                f'data-state="{escape(point.state)}"><title>{escape(point.label)}</title>{ring}'
                f"{_marker(shape, x, y, STATE_INK.get(point.state, LINE_INK), lay.marker, point.state == 'outside')}</a>"
            )
    out.extend(labels)
    legend_y = lay.height - 6
    for row in legend_rows:
        out.extend(draw(legend_y) for draw in row)
        legend_y += 18
    out.append("</svg>")
    return Markup("".join(out))


def _legend_rows(series: Sequence[Series], legend: Legend | None, lay: Layout) -> list[list[Callable[[float], str]]]:
    """Legend entries (a sample and its words) flowed into rows that fit the width; each draws at a baseline y."""
    small = lay.font - 1
    entries: list[tuple[float, Callable[[float, float], str]]] = []

    def add(sample: Callable[[float, float], str], text: str) -> None:
        def draw(x: float, y: float) -> str:
            words = f'<text x="{x + 26:.1f}" y="{y:.1f}" font-size="{small}" fill="{TEXT_INK}">{escape(text)}</text>'
            return sample(x, y - small / 3) + words

        entries.append((_text_width(text, small) + 34, draw))

    for index, _one in enumerate(series):
        shape, dash = MARKERS[index % 5], DASHES[index % 5]
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        add(
            lambda x, y, s=shape, d=dash_attr: (
                f'<line x1="{x:.1f}" x2="{x + 22:.1f}" y1="{y:.1f}" y2="{y:.1f}" stroke="{LINE_INK}" stroke-width="2"{d}/>'
                + _marker(s, x + 11, y, LINE_INK, 4)
            ),
            _one.name,
        )
    legend = legend or Legend()
    if legend.within:
        add(lambda x, y: _marker("circle", x + 11, y, STATE_INK["within"], 4), legend.within)
    if legend.outside:
        add(lambda x, y: _marker("circle", x + 11, y, STATE_INK["outside"], 4, hollow=True), legend.outside)
    if legend.alert:
        add(
            lambda x, y: (
                f'<circle cx="{x + 11:.1f}" cy="{y:.1f}" r="7" fill="none" stroke="{ALERT_INK["urgent"]}" stroke-width="2"/>'
            ),
            legend.alert,
        )
    rows: list[list[Callable[[float], str]]] = [[]]
    x = float(lay.left)
    for width, draw in entries:
        if rows[-1] and x + width > lay.width - lay.right:
            rows.append([])
            x = float(lay.left)
        rows[-1].append(lambda y, d=draw, at=x: d(at, y))
        x += width
    return rows


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
