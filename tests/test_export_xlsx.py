"""Excel export read back with openpyxl: sheets per instrument, numbers as numbers, text neutralised."""

from __future__ import annotations

import io
import re
from datetime import UTC
from decimal import Decimal
from pathlib import Path
from typing import Any

import openpyxl
import pytest
from test_export import export_bytes
from test_export_support import INJECTIONS, NotesPlugin, decimal, seed, stored

from core import ExportSelection


@pytest.fixture
def app_config(app_config: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    return {**app_config, "EXTRA_PLUGINS": [NotesPlugin(tmp_path)]}


@pytest.fixture
def seeded(app: Any, licensed_wording: None) -> Any:
    return seed(app)


def excel_text(value: Any) -> Any:
    """Undo OOXML's ``_xHHHH_`` escapes as Excel does (openpyxl leaves them in)."""
    if not isinstance(value, str):
        return value
    return re.sub(r"_x([0-9A-Fa-f]{4})_", lambda m: chr(int(m.group(1), 16)), value)


def sheets(data: bytes) -> dict[str, list[dict[str, Any]]]:
    workbook = openpyxl.load_workbook(io.BytesIO(data), read_only=True)
    found = {}
    for sheet in workbook.worksheets:
        rows = list(sheet.iter_rows(values_only=True))
        header = rows[0]
        found[sheet.title] = [dict(zip(header, map(excel_text, row), strict=False)) for row in rows[1:]]
    return found


def test_one_sheet_per_instrument_with_stored_values(app: Any, seeded: Any) -> None:
    book = sheets(export_bytes(app, "xlsx"))
    assert {"phq9", "gad7", "srs", "notes", "core10", "ors", "wai-sr"} <= set(book)
    db = stored(app)
    seen = 0
    for name, rows in book.items():
        for row in rows:
            response, score = db[row["response_id"]]
            assert response.instrument_id == name
            assert (
                row["submitted_at"] == response.submitted_at.replace(tzinfo=None).replace(microsecond=0)
                or abs(
                    (
                        row["submitted_at"] - response.submitted_at.replace(tzinfo=UTC).replace(tzinfo=None)
                    ).total_seconds()
                )
                < 0.001
            )
            for item, value in response.answers.items():
                if not isinstance(value, str):
                    assert decimal(row[item]) == decimal(value)
            for key, value in score.values.items():
                assert decimal(row[f"score_{key}"]) == decimal(value)
            seen += 1
    assert seen == len(db)
    phq9 = {r["response_id"]: r for r in book["phq9"]}
    assert phq9[seeded.ids["phq9_full"]]["band"] == "moderate"
    assert "gad7_1" not in book["phq9"][0]  # each sheet has its own instrument's columns


def test_numbers_stay_numbers_and_text_is_neutralised(app: Any, seeded: Any) -> None:
    book = sheets(export_bytes(app, "xlsx", ExportSelection(instruments=("notes", "phq9"))))
    assert set(book) == {"notes", "phq9"}
    notes = {r["response_id"]: r for r in book["notes"]}
    for index, text in enumerate(INJECTIONS):
        row = notes[seeded.ids[f"notes_{index}"]]
        assert row["comment"] == "'" + text
        assert row["client"] == "'=D-002"
        assert isinstance(row["score_total"], float)
        assert Decimal(str(row["score_total"])) == index % 5 - Decimal("2.5")
        assert row["change"] == -2.5
    prorated = {r["response_id"]: r for r in book["phq9"]}[seeded.ids["phq9_prorated"]]
    assert prorated["score_total"] == 10.3
    assert isinstance(prorated["phq9_1"], int | float) and prorated["phq9_9"] is None


def test_no_cell_is_a_formula(app: Any, seeded: Any) -> None:
    workbook = openpyxl.load_workbook(io.BytesIO(export_bytes(app, "xlsx")))
    for sheet in workbook.worksheets:
        for row in sheet.iter_rows():
            for cell in row:
                assert cell.data_type != "f", (sheet.title, cell.coordinate, cell.value)
