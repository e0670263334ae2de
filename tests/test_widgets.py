"""Form widgets come from plugins: the built-ins, and any a third-party plugin adds."""

from __future__ import annotations

import json
import re

import pytest
import sqlalchemy as sa
from plugin_support import InstrumentFiles

from core import Widget, WidgetValueError, build_engine, hookimpl
from core.models import Client, Response
from core.responses import create_assignment

STARS_TEMPLATE = """<fieldset class="item" id="item-{{ name }}"><legend>{{ number }}. {{ text }}</legend>
{% if error %}<p class="error">{{ error }}</p>{% endif %}
{% for n in range(1, 6) %}<label><input type="radio" name="{{ name }}" value="{{ n }}"> {{ n }} stars</label>{% endfor %}
</fieldset>"""


def parse_stars(item, values):
    if not values or not values[0]:
        return None
    if values[0] not in {"1", "2", "3", "4", "5"}:
        raise WidgetValueError("Choose from one to five stars.")
    return int(values[0])


def rating_definition(widget: str) -> dict:
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Session stars",
        "type": "object",
        "required": ["stars_1"],
        "additionalProperties": False,
        "properties": {
            "stars_1": {
                "type": ["integer", "null"],
                "minimum": 1,
                "maximum": 5,
                "x-widget": widget,
                "x-text": "How was today?",
            }
        },
        "x-instrument": {
            "id": "stars",
            "version": "1.0.0",
            "citation": "Test instrument.",
            "licence": {"name": "CC0", "notice": "Public domain.", "wording_bundled": True},
        },
        "x-scoring": {"scores": [{"name": "total", "rule": "sum", "params": {"items": ["stars_1"]}}]},
    }


@pytest.fixture
def stars_plugin(tmp_path):
    path = tmp_path / "stars.json"
    path.write_text(json.dumps(rating_definition("stars")))

    class StarsPlugin:
        @hookimpl
        def register_widgets(self):
            return [Widget("stars", STARS_TEMPLATE, parse_stars)]

        @hookimpl
        def register_instruments(self):
            return [path]

    return StarsPlugin()


def test_builtin_widgets_cover_every_builtin_item(engine):
    assert {"radio", "vas", "number", "text", "yesno", "multiselect"} <= set(engine.widgets)
    assert engine.instruments.errors == []


def test_an_item_naming_an_unknown_widget_is_reported_and_skipped(tmp_path):
    path = tmp_path / "stars.json"
    path.write_text(json.dumps(rating_definition("stars")))

    engine = build_engine(load_entrypoints=False, extra_plugins=[InstrumentFiles(path)])
    assert "stars" not in engine.instruments
    (error,) = engine.instruments.errors
    assert error.pointer == "/properties/stars_1" and "no widget 'stars' is installed" in error.reason


def test_a_plugin_widget_draws_and_parses_its_items(app_config, tmp_path, monkeypatch, stars_plugin):
    from web import create_app

    monkeypatch.setenv("RAPPORTAL_INSTANCE_PATH", str(tmp_path / "instance"))
    app = create_app({**app_config, "EXTRA_PLUGINS": [stars_plugin]})
    portal = app.extensions["rapportal"]
    with portal.sessions.begin() as session:
        _assignment, token = create_assignment(session, portal.engine, Client(code="W-1"), "stars")
    client = app.test_client()
    page = client.get(f"/a/{token}").get_data(as_text=True)
    assert "5 stars" in page
    csrf = re.search(r'name="csrf_token" value="([^"]+)"', page).group(1)
    refused = client.post(f"/a/{token}", data={"csrf_token": csrf, "stars_1": "9"})
    assert refused.status_code == 422 and "Choose from one to five stars." in refused.get_data(as_text=True)
    stored = client.post(f"/a/{token}", data={"csrf_token": csrf, "stars_1": "4"})
    assert stored.status_code == 200
    with portal.sessions() as session:
        assert session.scalar(sa.select(Response.answers)) == {"stars_1": 4}
    portal.db.dispose()
