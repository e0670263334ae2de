"""Codebook: one entry per exported variable, with labels, allowed values, scoring rules and licences."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import pytest
from test_export import audits, export_bytes
from test_export_support import NotesPlugin, seed

from core import ExportSelection
from core.instruments import PLACEHOLDER


@pytest.fixture
def app_config(app_config: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    return {**app_config, "EXTRA_PLUGINS": [NotesPlugin(tmp_path)]}


@pytest.fixture
def seeded(app: Any, licensed_wording: None) -> Any:
    return seed(app)


def variables(markdown: str) -> dict[str, list[str]]:
    """The rows of the Variables table, by variable name."""
    section = markdown.split("## Variables", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| variable")]
    return {cells[0]: cells for cells in ([c.strip() for c in row.strip("|").split(" | ")] for row in rows)}


def test_codebook_lists_exactly_the_wide_export_variables(app: Any, seeded: Any) -> None:
    selection = ExportSelection(instruments=("phq9", "notes"))
    book = export_bytes(app, "codebook", selection).decode("utf-8")
    header = next(csv.reader(io.StringIO(export_bytes(app, "csv", selection).decode("utf-8"))))
    assert list(variables(book)) == header


def test_codebook_gives_labels_allowed_values_and_codes(app: Any, seeded: Any) -> None:
    book = export_bytes(app, "codebook", ExportSelection(instruments=("phq9",))).decode("utf-8")
    found = variables(book)
    _name, label, kind, allowed, code, instruments = found["phq9_9"]
    assert label.startswith("Thoughts that you would be better off dead")
    assert kind == "integer"
    assert allowed == "0 = Not at all; 1 = Several days; 2 = More than half the days; 3 = Nearly every day"
    assert (code, instruments) == ("44260-8", "phq9")
    assert found["score_total"][1:5] == ["PHQ-9 total (0-27)", "number", "computed by rule sum", "44261-6"]
    assert "| moderately_severe | Moderately severe (15-19) | 15 to 19 |" in book
    assert '| score_total | PHQ-9 total (0-27) | sum | `{"decimals": 1, "items"' in book
    assert "| item9_risk |" in book and "| prorated | raised by a score rule |" in book
    assert "No permission required to reproduce" in book
    assert "LOINC is copyright Regenstrief Institute" in book


def test_codebook_never_contains_licensed_wording(app: Any, seeded: Any) -> None:
    book = export_bytes(app, "codebook", ExportSelection(instruments=("srs", "wai-sr"))).decode("utf-8")
    assert PLACEHOLDER not in book  # the installed (here: test) wording stays out
    assert variables(book)["srs_1"][1] == "Relationship"
    assert "Item wording is licensed and not reproduced here" in book
    assert "organisational licence" in book


def test_codebook_free_text_and_decimal_items(app: Any, seeded: Any) -> None:
    found = variables(export_bytes(app, "codebook", ExportSelection(instruments=("notes",))).decode("utf-8"))
    assert found["comment"][2:4] == ["text", "free text"]
    assert found["change"][2:4] == ["number", "-5 to 5 in steps of 0.5"]


def test_codebook_export_is_audited(app: Any, seeded: Any) -> None:
    export_bytes(app, "codebook")
    (entry,) = audits(app)
    assert entry.detail["format"] == "codebook" and entry.detail["rows"] == 0
