"""web/charts.py: whole-number ticks, colour that means state, alert rings, labels no point covers, two layouts."""

from __future__ import annotations

import itertools
import re
from decimal import Decimal

import pytest

from web.charts import NARROW, STATE_INK, WIDE, Legend, Line, Point, Series, line_chart, whole_ticks


@pytest.mark.parametrize(
    ("low", "high", "ticks"),
    [
        (0, 27, [0, 5, 10, 15, 20, 25]),  # PHQ-9: no more 6.75 / 13.5 / 20.25
        (0, 40, [0, 10, 20, 30, 40]),  # ORS, SRS, CORE-10
        (0, 21, [0, 5, 10, 15, 20]),  # GAD-7
        (1, 5, [1, 2, 3, 4, 5]),  # WAI-SR mean
        (10, 50, [10, 20, 30, 40, 50]),
        (Decimal("0.5"), Decimal("3.5"), [1, 2, 3]),
        (0, 1000, [0, 200, 400, 600, 800, 1000]),
    ],
)
def test_ticks_are_whole_numbers_on_a_round_step(low, high, ticks):
    assert whole_ticks(Decimal(low), Decimal(high)) == ticks


def _chart(values, cutoff=Decimal(36), layout=WIDE, alert_at=None):
    keys = [(f"r{n}", f"S{n}") for n in range(1, len(values) + 1)]
    points = [
        Point(
            f"r{n}",
            Decimal(v),
            f"/responses/{n}",
            f"SRS {v}",
            state="outside" if Decimal(v) < cutoff else "within",
            alert="warning" if n == alert_at else None,
        )
        for n, v in enumerate(values, start=1)
    ]
    return str(
        line_chart(
            "c",
            "SRS",
            keys,
            [Series("SRS", points)],
            Decimal(0),
            Decimal(40),
            lines=[Line(cutoff, "< 36: Alliance concern")],
            legend=Legend("within the cutoff", "outside the cutoff", "raised an alert"),
            layout=layout,
        )
    )


def test_tick_labels_are_whole_numbers():
    svg = _chart([38, 39])
    ticks = re.findall(r'<text class="tick"[^>]*>([^<]+)</text>', svg)
    assert ticks == ["0", "10", "20", "30", "40"]


def test_a_fine_srs_is_never_drawn_in_the_outside_colour():
    svg = _chart([38, 39, 40])
    assert STATE_INK["outside"] not in svg.split('class="chart-point"', 1)[1].split("</svg>")[0].split("<text")[0]
    assert svg.count(f'fill="{STATE_INK["within"]}"') >= 3


def test_a_point_past_the_cutoff_is_drawn_hollow_in_the_outside_colour():
    svg = _chart([38, 30])
    outside = re.findall(r'data-state="outside">.*?</a>', svg)
    assert len(outside) == 1 and f'stroke="{STATE_INK["outside"]}"' in outside[0] and 'fill="#ffffff"' in outside[0]


def test_a_point_that_raised_an_alert_gets_a_ring():
    svg = _chart([38, 30, 31], alert_at=2)
    assert svg.count('class="alert-ring"') == 1


def _boxes(svg, font):
    """Boxes of the cutoff label and of every point marker."""
    label = re.search(r'<text x="([\d.]+)" y="([\d.]+)" text-anchor="(\w+)"[^>]*>&lt; 36: Alliance concern', svg)
    x, y, anchor = float(label.group(1)), float(label.group(2)), label.group(3)
    width = len("< 36: Alliance concern") * font * 0.56
    left = x - width if anchor == "end" else x
    points = [(float(cx), float(cy)) for cx, cy in re.findall(r'<circle cx="([\d.]+)" cy="([\d.]+)" r="5', svg)]
    return (left, y - font, left + width, y), points


@pytest.mark.parametrize("layout", [WIDE, NARROW])
def test_no_point_covers_the_cutoff_label(layout):
    # values that sit right on the cutoff line, where the label would go by default
    svg = _chart([36, 36, 36, 37, 36, 36], layout=layout)
    (left, top, right, bottom), points = _boxes(svg, layout.font)
    for cx, cy in points:
        assert not (left - 5 < cx < right + 5 and top - 5 < cy < bottom + 5), (cx, cy)
    assert svg.index("&lt; 36: Alliance concern") > svg.rindex('class="chart-point"')  # drawn on top, on a halo


def test_the_narrow_layout_keeps_text_at_12_units_in_a_viewbox_about_a_phone_wide():
    svg = _chart([38, 30], layout=NARROW)
    assert 'viewBox="0 0 360 ' in svg
    sizes = {float(size) for size in re.findall(r'font-size="([\d.]+)"', svg)}
    assert min(sizes) >= 11  # 11 units in a 360-unit box drawn ~350 px wide: ~11 px on a 390 px phone


def test_many_sessions_thin_the_x_labels_so_they_never_overlap():
    svg = _chart([38] * 50, layout=NARROW)
    labels = re.findall(r'<text x="([\d.]+)" y="[\d.]+" text-anchor="middle"[^>]*>(S\d+)</text>', svg)
    assert labels[-1][1] == "S50"  # the latest is always labelled
    xs = [float(x) for x, _label in labels]
    assert all(b - a >= len("S50") * NARROW.font * 0.56 for a, b in itertools.pairwise(xs))
