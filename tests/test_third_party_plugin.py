"""A plugin installed from outside the tree adds an instrument with its own scoring rule.

The test writes a small distribution (module + dist-info with an entry point in the
``rapportal`` group) into a folder on the path, exactly as pip would install it, and
nothing in core/ changes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core import build_engine
from core.plugins import describe_plugins

PLUGIN_SOURCE = '''
"""Acme's measures: a three-item worry index scored by counting answers at or above a value."""
from pathlib import Path

from core import ScoringRule, hookimpl

__version__ = "1.2.0"


def _count_at_least(params, ctx):
    values = [ctx.answers[item] for item in params["items"]]
    if any(value is None for value in values):
        return None
    return sum(1 for value in values if value >= params["value"])


@hookimpl
def register_scoring_rules():
    return [ScoringRule(
        name="count_at_least", kind="score", compute=_count_at_least,
        parameters={"type": "object", "required": ["items", "value"],
                    "properties": {"items": {"type": "array"}, "value": {"type": "number"}}},
        description="How many items were answered at or above value.")]


@hookimpl
def register_instruments():
    return [Path(__file__).parent / "worry3.json"]
'''


def worry3_definition() -> dict:
    items = ["worry_1", "worry_2", "worry_3"]
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Acme Worry Index",
        "type": "object",
        "required": items,
        "additionalProperties": False,
        "$defs": {
            "level": {
                "type": ["integer", "null"],
                "enum": [0, 1, 2, None],
                "x-options": [
                    {"value": 0, "label": "No"},
                    {"value": 1, "label": "A little"},
                    {"value": 2, "label": "A lot"},
                ],
            }
        },
        "properties": {item: {"$ref": "#/$defs/level", "x-text": f"Worry {n}"} for n, item in enumerate(items, 1)},
        "x-instrument": {
            "id": "acme-worry",
            "version": "1.0.0",
            "citation": "Acme internal measure, 2026.",
            "licence": {"name": "CC0", "notice": "Public domain.", "wording_bundled": True},
        },
        "x-scoring": {
            "scores": [
                {"name": "total", "rule": "sum", "params": {"items": items}},
                {"name": "high_count", "rule": "count_at_least", "params": {"items": items, "value": 2}},
            ],
            "flags": [
                {"id": "many_high", "rule": "threshold", "params": {"score": "high_count", "op": ">=", "value": 2}}
            ],
        },
        "x-examples": [
            {
                "title": "two high",
                "answers": {"worry_1": 2, "worry_2": 2, "worry_3": 0},
                "expect": {"scores": {"total": 4, "high_count": 2}, "flags": ["many_high"]},
            },
        ],
    }


@pytest.fixture
def installed_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    site = tmp_path / "site"
    package = site / "acme_measures"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(PLUGIN_SOURCE)
    (package / "worry3.json").write_text(json.dumps(worry3_definition()))
    dist_info = site / "acme_measures-1.2.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-measures\nVersion: 1.2.0\n")
    (dist_info / "entry_points.txt").write_text("[rapportal]\nacme_measures = acme_measures\n")
    monkeypatch.syspath_prepend(str(site))
    yield site
    sys.modules.pop("acme_measures", None)


def test_installed_plugin_is_loaded_from_its_entry_point(installed_plugin):
    engine = build_engine()
    infos = {info.name: info for info in describe_plugins(engine.plugin_manager)}
    assert infos["acme_measures"].distribution == "acme-measures"
    assert infos["acme_measures"].version == "1.2.0"
    assert infos["acme_measures"].hooks == ("register_instruments", "register_scoring_rules")
    assert "acme-worry" in engine.instruments


def test_installed_plugin_instrument_is_scored_with_its_own_rule(installed_plugin):
    engine = build_engine()
    result = engine.score("acme-worry", {"worry_1": 2, "worry_2": 1, "worry_3": 2})
    assert result.scores == {"total": 5, "high_count": 2}
    assert result.flags == ("many_high",)


def test_blocking_the_plugin_by_name_removes_it(installed_plugin):
    engine = build_engine(blocked_plugins=["acme_measures"])
    assert "acme-worry" not in engine.instruments


def test_the_command_line_lists_checks_and_scores_the_plugin(installed_plugin, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(installed_plugin), "RAPPORTAL_INSTANCE_PATH": str(tmp_path / "inst")}
    rapportal = [sys.executable, "-c", "from web.main import main; main()"]

    def run(*args, stdin=None):
        return subprocess.run([*rapportal, *args], input=stdin, capture_output=True, text=True, env=env, timeout=60)

    listed = run("instruments", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert "acme-worry" in [row["id"] for row in json.loads(listed.stdout)["instruments"]]
    checked = run("instruments", "check")
    assert checked.returncode == 0, checked.stderr
    assert "ok  acme-worry 1.0.0: definition valid, 1 worked examples agree" in checked.stdout
    scored = run("score", "acme-worry", stdin=json.dumps({"answers": {"worry_1": 0, "worry_2": 2, "worry_3": 2}}))
    assert scored.returncode == 0, scored.stderr
    assert json.loads(scored.stdout)["scores"] == {"total": 4, "high_count": 2}
    plugins = run("plugins")
    assert "acme_measures" in plugins.stdout and "1.2.0" in plugins.stdout
