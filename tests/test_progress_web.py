"""The client page draws every instrument from its definition: a plugin instrument built outside the tree gets
its chart, band shading, cutoff line, summary with band labels and alert text, with no change to core/ or web/;
a clinic's copy of the SRS with another cutoff moves the chart line and the alert text."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from plugin_support import InstrumentFiles
from staff_support import SRS_LOW, answer, links_on, make_world, page_token, release_latest, sign_in, start_session

from core.models import Alert, Client, Episode
from core.responses import create_assignment, submit_response
from core.schemas import INSTRUMENTS_DIR
from web.charts import BOTTOM, HEIGHT, TOP

PLUGIN_SOURCE = '''
"""Acme's distress scale: ten 1-5 items, four bands, a threshold flag and an urgent alert on it."""
from pathlib import Path

from core import flag_alert, hookimpl


@hookimpl
def register_instruments():
    return [Path(__file__).parent / "distress10.json"]


@hookimpl
def register_alert_rules():
    return [flag_alert("acme_distress_alert", "acme-k10", "very_high_distress", "urgent", advice="Ask about safety today.")]
'''

ANSWER_LABELS = ["None of the time", "A little of the time", "Some of the time", "Most of the time", "All of the time"]


def distress10_definition() -> dict:
    """A K10-shaped instrument with invented item texts; no x-presentation, so the defaults apply."""
    items = [f"k10_{n}" for n in range(1, 11)]
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Acme Distress Scale",
        "type": "object",
        "required": items,
        "additionalProperties": False,
        "$defs": {
            "often": {
                "type": ["integer", "null"],
                "enum": [1, 2, 3, 4, 5, None],
                "x-options": [{"value": n, "label": label} for n, label in enumerate(ANSWER_LABELS, 1)],
            }
        },
        "properties": {item: {"$ref": "#/$defs/often", "x-text": f"Test question {item}"} for item in items},
        "x-instrument": {
            "id": "acme-k10",
            "version": "1.0.0",
            "short_title": "K10",
            "citation": "Acme test measure, 2026.",
            "licence": {"name": "CC0", "notice": "Test material.", "wording_bundled": True},
        },
        "x-scoring": {
            "scores": [{"name": "total", "label": "Distress total (10-50)", "rule": "sum", "params": {"items": items}}],
            "bands": {
                "score": "total",
                "ranges": [
                    {"id": "well", "label": "Likely to be well (10-15)", "min": 10, "max": 15},
                    {"id": "mild", "label": "Mild distress (16-21)", "min": 16, "max": 21},
                    {"id": "moderate", "label": "Moderate distress (22-29)", "min": 22, "max": 29},
                    {"id": "very_high", "label": "Very high distress (30-50)", "min": 30, "max": 50},
                ],
            },
            "flags": [
                {
                    "id": "very_high_distress",
                    "label": "Very high psychological distress",
                    "rule": "threshold",
                    "params": {"score": "total", "op": ">=", "value": 30},
                }
            ],
        },
    }


@pytest.fixture
def distress_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The plugin installed as pip would: a package and its dist-info with a ``rapportal`` entry point."""
    site = tmp_path / "site"
    package = site / "acme_distress"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(PLUGIN_SOURCE)
    (package / "distress10.json").write_text(json.dumps(distress10_definition()))
    dist_info = site / "acme_distress-0.3.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-distress\nVersion: 0.3.0\n")
    (dist_info / "entry_points.txt").write_text("[rapportal]\nacme_distress = acme_distress\n")
    monkeypatch.syspath_prepend(str(site))
    yield site
    sys.modules.pop("acme_distress", None)


def chart_svg(page: str, chart_id: str) -> str:
    start = page.index(f'id="{chart_id}"')
    return page[start : page.index("</svg>", start)]


def summary_table(page: str) -> str:
    start = page.index('id="score-summary"')  # the status strip at the top of the client page
    return page[start : page.index("</ul>", start)]


def y_of(value: float, low: float, high: float) -> str:
    """Where web/charts.py draws ``value`` on an axis from low to high."""
    plot = HEIGHT - TOP - BOTTOM
    return f"{TOP + plot - (value - low) / (high - low) * plot:.1f}"


def new_episode(app, clinician, client_id: int, plan: str) -> int:
    token = page_token(clinician, f"/clients/{client_id}")
    clinician.post(f"/clients/{client_id}/episodes", data={"csrf_token": token, "plan": "custom", "custom": plan})
    with app.extensions["rapportal"].sessions() as session:
        return session.scalar(sa.select(sa.func.max(Episode.id)))


def all_items(value: int) -> dict[str, str]:
    return {f"k10_{n}": str(value) for n in range(1, 11)}


# -- a plugin instrument from outside the tree ----------------------------------------------


class TestAPluginInstrument:
    @pytest.fixture
    def app_config(self, app_config, distress_plugin):
        return {**app_config, "LOAD_ENTRYPOINTS": True}

    @pytest.fixture
    def ann(self, app):
        world = make_world(app)
        ann = app.test_client()
        sign_in(ann, "ann")
        ann.episode_id = new_episode(app, ann, world.client_id, "acme-k10 start every 1")
        ann.client_page = f"/clients/{world.client_id}?episode={ann.episode_id}"
        ann.client_id = world.client_id
        return ann

    def answer_session(self, app, ann, value: int) -> None:
        links = links_on(start_session(ann, ann.episode_id, ann.client_id).text)
        assert answer(app, links["acme-k10"], all_items(value)).status_code == 200

    @pytest.fixture
    def page(self, app, ann):
        """Two sessions answered through real links (40, then 30); the clinician's client page."""
        self.answer_session(app, ann, 4)
        self.answer_session(app, ann, 3)
        return ann.get(ann.client_page).text

    def test_its_first_answer_makes_a_chart_not_no_answers_yet(self, app, ann):
        assert "No answers yet" in ann.get(ann.client_page).text
        self.answer_session(app, ann, 4)
        page = ann.get(ann.client_page).text
        assert 'id="chart-acme-k10-total"' in page and "No answers yet" not in page

    def test_its_chart_has_the_band_shading_and_the_cutoff_line(self, page):
        chart = chart_svg(page, "chart-acme-k10-total")
        for band in distress10_definition()["x-scoring"]["bands"]["ranges"]:
            assert f"<title>{band['label']}</title>" in chart
        assert "&gt;= 30: Very high psychological distress" in chart
        assert f'y1="{y_of(30, 10, 50)}"' in chart  # the line sits at 30 on the 10-50 axis of the bands
        points = re.findall(r'aria-label="([^"]+)"', chart)
        # both are at or over the cutoff and raised the plugin's urgent alert: the points say so
        facts = ": Very high psychological distress (&gt;= 30); raised an alert (urgent)"
        assert points == [f"K10 40 (S1){facts}", f"K10 30 (S2){facts}"]

    def test_its_summary_shows_band_labels_never_ids(self, page):
        summary = summary_table(page)
        assert "K10" in summary and "Distress total (10-50)" in summary
        assert "Very high distress (30-50)" in summary
        assert "-10" in summary  # since the first and since the previous
        assert not re.search(r"\bvery_high\b", page)

    def test_its_alert_is_worded_from_the_plugins_own_labels(self, app, page):
        assert "K10: Very high psychological distress" in page  # the title: short title and flag label
        assert "Very high psychological distress: K10 30 in session 2 (previous 40; cutoff 30)." in page
        assert "Very high psychological distress: K10 40 in session 1 (cutoff 30). Ask about safety today." in page
        with app.extensions["rapportal"].sessions() as session:
            assert session.scalars(sa.select(Alert.severity)).all() == ["urgent", "urgent"]

    def test_its_response_page_shows_the_band_and_flag_labels(self, ann, page):
        href = re.search(r'<a href="(/responses/\d+)" aria-label="K10 30', page).group(1)
        response = ann.get(href).text
        assert "Very high distress (30-50)" in response and "Very high psychological distress" in response
        assert not re.search(r"\bvery_high\b", response)


def test_a_response_that_could_not_be_scored_still_counts_as_answered(app, licensed_wording):
    """A stored but not scorable response draws no chart, yet the page must not claim there are no answers."""
    world = make_world(app)
    portal = app.extensions["rapportal"]
    with portal.sessions.begin() as session:
        client = session.get(Client, world.client_id)
        assignment, _token = create_assignment(session, portal.engine, client, "srs", episode_id=world.episode_id)
        submit_response(session, portal.engine, assignment, {"srs_1": 8.0, "srs_2": None, "srs_3": 8.0, "srs_4": 8.0})
    ann = app.test_client()
    sign_in(ann, "ann")
    page = ann.get(f"/clients/{world.client_id}").text
    assert 'id="chart-srs-total"' not in page and "No answers yet" not in page


# -- a clinic's copy of the SRS with its own cutoff ------------------------------------------


def srs_with_cutoff(tmp_path: Path, cutoff: int) -> Path:
    document = json.loads((INSTRUMENTS_DIR / "srs" / "srs.json").read_text())
    document["x-instrument"]["version"] = "3.1.0"
    document.pop("$id")
    document["x-examples"] = []
    next(f for f in document["x-scoring"]["flags"] if f["id"] == "alliance_concern")["params"]["value"] = cutoff
    path = tmp_path / "srs-clinic.json"
    path.write_text(json.dumps(document))
    return path


class TestACopiedSrsWithCutoff34:
    @pytest.fixture
    def app_config(self, app_config, tmp_path):
        return {**app_config, "EXTRA_PLUGINS": [InstrumentFiles(srs_with_cutoff(tmp_path, 34))]}

    @pytest.fixture
    def page(self, app, licensed_wording):
        world = make_world(app)
        ann = app.test_client()
        sign_in(ann, "ann")
        links = links_on(start_session(ann, world.episode_id, world.client_id).text)
        release_latest(app, ann)
        answer(app, links["srs"], SRS_LOW)  # 32.0: below 34 as well as below 36
        return ann.get(f"/clients/{world.client_id}").text

    def test_the_chart_line_moves_to_34(self, page):
        chart = chart_svg(page, "chart-srs-total")
        assert "&lt; 34: Alliance concern" in chart and "&lt; 36" not in chart
        assert f'y1="{y_of(34, 0, 40)}"' in chart

    def test_the_alert_text_gives_the_new_cutoff(self, app, page):
        assert "SRS 32.0 in session 1 (cutoff 34)" in page
        with app.extensions["rapportal"].sessions() as session:
            [message] = session.scalars(sa.select(Alert.message).where(Alert.rule == "srs_alliance_concern")).all()
        assert "cutoff 34" in message and "36" not in message
