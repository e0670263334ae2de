"""SPSS export read back with pyreadstat (ReadStat): values, variable labels, value labels."""

from __future__ import annotations

import io
from datetime import UTC
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyreadstat
import pytest
from test_export import export_bytes
from test_export_support import NOTES_DEFINITION, NotesPlugin, decimal, seed, stored

from core import ExportSelection
from core.export import prepare_export, stream_rows
from plugins.export_sav import write_sav


@pytest.fixture
def app_config(app_config: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    return {**app_config, "EXTRA_PLUGINS": [NotesPlugin(tmp_path)]}


@pytest.fixture
def seeded(app: Any, licensed_wording: None) -> Any:
    return seed(app)


def read_sav(data: bytes, tmp_path: Path) -> tuple[dict[str, list[Any]], Any]:
    path = tmp_path / "export.sav"
    path.write_bytes(data)
    return pyreadstat.read_sav(str(path), output_format="dict")


def test_values_match_what_was_stored(app: Any, seeded: Any, tmp_path: Path) -> None:
    data, meta = read_sav(export_bytes(app, "sav"), tmp_path)
    db = stored(app)
    assert meta.number_rows == len(db)
    for index, response_id in enumerate(data["response_id"]):
        response, score = db[int(response_id)]
        assert data["instrument"][index] == response.instrument_id
        submitted = response.submitted_at.replace(tzinfo=UTC).replace(tzinfo=None)
        assert abs((data["submitted_at"][index] - submitted).total_seconds()) < 0.001  # a double of seconds
        for item, value in response.answers.items():
            if isinstance(value, str):
                assert data[item][index] == value
            else:
                assert decimal(data[item][index]) == decimal(value), item
        for name, value in score.values.items():
            got = data[f"score_{name}"][index]
            assert (None if got is None else Decimal(str(got))) == decimal(value), name
        assert data["band"][index] == (score.band or "")
        assert data["flags"][index] == ";".join(score.flags)


def test_variable_and_value_labels(app: Any, seeded: Any, tmp_path: Path) -> None:
    _data, meta = read_sav(export_bytes(app, "sav", ExportSelection(instruments=("phq9",))), tmp_path)
    labels = meta.column_names_to_labels
    assert labels["phq9_1"] == "Little interest or pleasure in doing things"
    assert labels["score_total"] == "PHQ-9 total (0-27)"
    assert labels["client"] == "Client code (pseudonym)"
    assert meta.variable_value_labels["phq9_9"] == {
        0.0: "Not at all",
        1.0: "Several days",
        2.0: "More than half the days",
        3.0: "Nearly every day",
    }
    assert "client_name" not in labels


def test_negative_and_decimal_scores_stay_numeric(app: Any, seeded: Any, tmp_path: Path) -> None:
    data, meta = read_sav(export_bytes(app, "sav", ExportSelection(instruments=("notes", "srs"))), tmp_path)
    assert meta.readstat_variable_types["score_total"] == "double"
    assert sorted(set(data["score_total"])) == [-2.5, -1.5, -0.5, 0.5, 1.5, 34.6]
    assert [v for v in data["srs_3"] if v is not None] == [7.3]
    assert meta.column_names_to_labels["score_total"] == "total score of the response's instrument"


def test_long_text_is_cut_at_a_character_boundary(app: Any, seeded: Any, tmp_path: Path) -> None:
    portal = app.extensions["rapportal"]
    plan = prepare_export(portal.engine, "sav", ExportSelection(instruments=("notes",)))
    rows = list(stream_rows(portal.db, plan.context.selection))
    long_text = "é" * 300  # 600 bytes in UTF-8
    rows[0] = type(rows[0])(**{**rows[0].__dict__, "answers": {**rows[0].answers, "comment": long_text}})
    out = io.BytesIO()
    write_sav(rows, out, plan.context)
    data, _meta = read_sav(out.getvalue(), tmp_path)
    assert data["comment"][0] == "é" * 127  # 254 bytes: the 255th would split a character
    assert NOTES_DEFINITION["properties"]["comment"]["maxLength"] == 500


class _Unseekable(io.RawIOBase):
    def __init__(self) -> None:
        self.data = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, chunk: Any) -> int:
        self.data += chunk
        return len(chunk)


def test_a_stream_that_cannot_seek_gets_an_unknown_case_count_readers_accept(
    app: Any, seeded: Any, tmp_path: Path
) -> None:
    portal = app.extensions["rapportal"]
    plan = prepare_export(portal.engine, "sav", ExportSelection())
    out = _Unseekable()
    write_sav(stream_rows(portal.db, plan.context.selection), out, plan.context)
    data, _meta = read_sav(bytes(out.data), tmp_path)
    assert len(data["response_id"]) == len(stored(app))
