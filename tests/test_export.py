"""Exports: selection, streaming, CSV and JSON Lines read back, neutralisation, CLI, audit, plugins."""

from __future__ import annotations

import csv
import getpass
import io
import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from test_export_support import (
    INJECTIONS,
    NotesPlugin,
    ThirdPartyExporter,
    decimal,
    seed,
    set_submitted,
    stored,
)

from core import Exporter, ExportSelection
from core.export import (
    ExportError,
    export_query,
    iter_export,
    json_value,
    list_exporters,
    neutralise_cell,
    row_to_export_row,
    run_export,
    stream_rows,
)
from core.models import AuditEntry, Client, ClientClinician, User


@pytest.fixture
def app_config(app_config: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    return {**app_config, "EXTRA_PLUGINS": [NotesPlugin(tmp_path), ThirdPartyExporter()]}


@pytest.fixture
def seeded(app: Any, licensed_wording: None) -> Any:
    return seed(app)


def export_bytes(app: Any, name: str, selection: ExportSelection | None = None, actor: str = "test") -> bytes:
    portal = app.extensions["rapportal"]
    out = io.BytesIO()
    run_export(portal.sessions, portal.engine, name, selection or ExportSelection(), out, actor=actor)
    return out.getvalue()


def read_csv(data: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(data.decode("utf-8"), newline="")))


def audits(app: Any) -> list[AuditEntry]:
    with app.extensions["rapportal"].sessions() as session:
        return list(session.scalars(sa.select(AuditEntry).where(AuditEntry.action == "export").order_by(AuditEntry.id)))


# -- the neutralisation rule -----------------------------------------------------------


@pytest.mark.parametrize("text", INJECTIONS)
def test_neutralise_cell_prefixes_anything_a_spreadsheet_would_run(text: str) -> None:
    assert neutralise_cell(text) == "'" + text


@pytest.mark.parametrize("text", ["", "fine", "C-001", "2 + 2", "a=b", "it's -5 today", "12"])
def test_neutralise_cell_leaves_ordinary_text_alone(text: str) -> None:
    assert neutralise_cell(text) == text


# -- selection and streaming -----------------------------------------------------------


def test_rows_carry_exact_decimal_scores_and_pseudonyms_only(app: Any, seeded: Any) -> None:
    rows = {row.response_id: row for row in stream_rows(app.extensions["rapportal"].db, ExportSelection())}
    prorated = rows[seeded.ids["phq9_prorated"]]
    assert prorated.scores["total"] == Decimal("10.3")
    assert isinstance(prorated.scores["total"], Decimal)
    assert "prorated" in prorated.flags
    assert rows[seeded.ids["notes_0"]].scores["total"] == Decimal("-2.5")
    assert rows[seeded.ids["phq9_full"]].session == "3"
    assert rows[seeded.ids["phq9_full"]].clinician == "alice"
    assert all(set(row.extra) == {"episode", "episode_ended_at"} for row in rows.values())  # no names


def test_identifying_selection_adds_display_names(app: Any, seeded: Any) -> None:
    rows = list(stream_rows(app.extensions["rapportal"].db, ExportSelection(identifying=True)))
    carol = next(row for row in rows if row.client == "C-001")
    assert {k: carol.extra[k] for k in ("client_name", "clinician_name")} == {
        "client_name": "Carol Client",
        "clinician_name": "Dr Alice Able",
    }


@pytest.mark.parametrize(
    "text", ['{"phq9_1": 2, "note": "x"}', ' {"a": 1}', '{"a": [1, 2.50, null]} ', "[]", '["a", "b"]', '"text"', "7"]
)
def test_json_value_reads_stored_text_as_json_loads_does(text: str) -> None:
    assert json_value(text) == json.loads(text)
    assert type(json_value(text)) is type(json.loads(text))


@pytest.mark.parametrize("value", [None, {"a": 1}, ["x"], 3, 2.5])
def test_json_value_passes_decoded_values_through(value: Any) -> None:
    assert json_value(value) is value  # PostgreSQL's driver decodes JSON; SQLite may give a bare number


@pytest.mark.parametrize("text", ['{"a": 1', '{"a": 1} extra', ""])
def test_json_value_refuses_what_json_loads_refuses(text: str) -> None:
    with pytest.raises(json.JSONDecodeError):
        json_value(text)


def test_rows_from_stored_json_text_are_the_rows_sqlalchemys_json_type_gives(app: Any, seeded: Any) -> None:
    selection = ExportSelection(identifying=True)
    with app.extensions["rapportal"].db.connect() as conn:
        typed = [row_to_export_row(r, True) for r in conn.execute(export_query(selection))]
        text = [
            row_to_export_row(r, True, json_as_text=True)
            for r in conn.execute(export_query(selection, json_as_text=True))
        ]
    assert len(typed) == len(seeded.ids)
    assert [row.__dict__ for row in text] == [row.__dict__ for row in typed]


def test_selection_filters_by_instrument_clinician_client_and_dates(app: Any, seeded: Any) -> None:
    db = app.extensions["rapportal"].db

    def ids(**kw: Any) -> set[int]:
        return {row.response_id for row in stream_rows(db, ExportSelection(**kw), batch_size=2)}

    assert ids(instruments=("phq9",)) == {seeded.ids["phq9_full"], seeded.ids["phq9_prorated"]}
    assert ids(clinicians=("alice",)) == {seeded.ids[k] for k in ("phq9_full", "phq9_prorated", "srs")}
    assert ids(clients=("=D-002",)) == {seeded.ids["gad7"]} | {v for k, v in seeded.ids.items() if "notes" in k}
    portal = app.extensions["rapportal"]
    with portal.sessions.begin() as session:  # alice also becomes a further clinician of bob's client
        alice = session.scalar(sa.select(User).where(User.username == "alice"))
        dan = session.scalar(sa.select(Client).where(Client.code == "=D-002"))
        session.add(ClientClinician(client_id=dan.id, user_id=alice.id))
    assert ids(clinicians=("alice",)) == {seeded.ids[k] for k in ("phq9_full", "phq9_prorated", "srs")} | ids(
        clients=("=D-002",)
    )
    assert ids(clinicians=("bob",)) == ids(clients=("=D-002",))
    set_submitted(app, seeded.ids["gad7"], datetime(2024, 3, 10, 12, tzinfo=UTC))
    march = ids(since=datetime(2024, 3, 1, tzinfo=UTC), until=datetime(2024, 4, 1, tzinfo=UTC))
    assert march == {seeded.ids["gad7"]}
    assert seeded.ids["gad7"] not in ids(since=datetime(2024, 3, 11, tzinfo=UTC))


# -- CSV, wide and long ------------------------------------------------------------------


def test_csv_wide_has_one_row_per_response_with_items_scores_band_and_flags(app: Any, seeded: Any) -> None:
    rows = {int(r["response_id"]): r for r in read_csv(export_bytes(app, "csv"))}
    db = stored(app)
    assert set(rows) == set(db)
    for response_id, (response, score) in db.items():
        row = rows[response_id]
        assert row["instrument"] == response.instrument_id
        assert row["version"] == response.instrument_version
        assert datetime.fromisoformat(row["submitted_at"]) == response.submitted_at.replace(tzinfo=UTC)
        for item, value in response.answers.items():
            if isinstance(value, str):
                assert row[item] == neutralise_cell(value)
            else:
                assert decimal(row[item]) == decimal(value), item
        for name, value in score.values.items():
            assert decimal(row[f"score_{name}"]) == decimal(value), name
        assert row["band"] == (score.band or "")
        assert row["flags"].split(";") if row["flags"] else list(score.flags) == []
    full = rows[seeded.ids["phq9_full"]]
    assert (full["score_total"], full["band"], full["flags"]) == ("11", "moderate", "clinical_cutoff;item9_risk")
    assert full["client"] == "C-001" and full["clinician"] == "alice" and full["session"] == "3"
    assert rows[seeded.ids["srs"]]["srs_3"] == "7.3"
    assert "client_name" not in full


def test_csv_neutralises_injection_but_keeps_negative_and_decimal_scores_numeric(app: Any, seeded: Any) -> None:
    rows = {int(r["response_id"]): r for r in read_csv(export_bytes(app, "csv"))}
    for index, text in enumerate(INJECTIONS):
        row = rows[seeded.ids[f"notes_{index}"]]
        assert row["comment"] == "'" + text
        assert row["score_total"] == str(index % 5 - Decimal("2.5"))
        assert row["change"] == "-2.5"
        assert row["client"] == "'=D-002"
    assert rows[seeded.ids["phq9_prorated"]]["score_total"] == "10.3"


def test_csv_long_has_one_row_per_item_answer_or_score_with_labels(app: Any, seeded: Any) -> None:
    rows = read_csv(export_bytes(app, "csv-long", ExportSelection(instruments=("phq9",))))
    full = [r for r in rows if int(r["response_id"]) == seeded.ids["phq9_full"]]
    assert [r["variable"] for r in full] == [f"phq9_{i}" for i in range(1, 10)] + ["total"]
    assert (full[2]["value"], full[2]["label"]) == ("3", "Nearly every day")
    assert (full[-1]["kind"], full[-1]["value"]) == ("score", "11")
    prorated = [r for r in rows if int(r["response_id"]) == seeded.ids["phq9_prorated"]]
    assert prorated[-1]["value"] == "10.3" and prorated[8]["value"] == ""


def test_csv_identifying_export_adds_names(app: Any, seeded: Any) -> None:
    rows = read_csv(export_bytes(app, "csv", ExportSelection(identifying=True, clients=("C-001",))))
    assert {(r["client_name"], r["clinician_name"]) for r in rows} == {("Carol Client", "Dr Alice Able")}


# -- JSON Lines ------------------------------------------------------------------------


def test_jsonl_round_trips_answers_and_exact_scores(app: Any, seeded: Any) -> None:
    lines = export_bytes(app, "jsonl").decode("utf-8").splitlines()
    records = {r["response_id"]: r for r in map(json.loads, lines)}
    for response_id, (response, score) in stored(app).items():
        record = records[response_id]
        assert record["answers"] == response.answers
        assert {k: decimal(v) for k, v in record["scores"].items()} == {k: decimal(v) for k, v in score.values.items()}
        assert record["flags"] == list(score.flags)
    assert records[seeded.ids["notes_0"]]["answers"]["comment"] == INJECTIONS[0]  # JSON is not a spreadsheet


# -- running, streaming and auditing -----------------------------------------------------


def test_run_export_audits_the_selection_and_row_count(app: Any, seeded: Any) -> None:
    export_bytes(app, "csv", ExportSelection(instruments=("phq9",)), actor="admin:alice")
    (entry,) = audits(app)
    assert entry.actor == "admin:alice"
    assert entry.detail["rows"] == 2
    assert entry.detail["completed"] is True
    assert entry.detail["selection"]["instruments"] == ["phq9"]
    assert entry.detail["format"] == "csv"


def test_unknown_format_is_refused_before_anything_is_written(app: Any) -> None:
    portal = app.extensions["rapportal"]
    with pytest.raises(ExportError, match="unknown export format 'nope'"):
        run_export(portal.sessions, portal.engine, "nope", ExportSelection(), io.BytesIO(), actor="t")
    assert audits(app) == []


def test_iter_export_yields_the_same_bytes_for_a_streaming_response(app: Any, seeded: Any) -> None:
    portal = app.extensions["rapportal"]
    plan, chunks = iter_export(portal.sessions, portal.engine, "csv", ExportSelection(), actor="web:alice")
    assert plan.exporter.media_type.startswith("text/csv") and plan.filename.endswith(".csv")
    assert b"".join(chunks) == export_bytes(app, "csv")
    assert [a.detail["rows"] for a in audits(app)] == [len(stored(app))] * 2


def test_closing_a_download_early_stops_the_export_and_audits_it_as_incomplete(app: Any, seeded: Any) -> None:
    portal = app.extensions["rapportal"]
    slow = Exporter("slow", "Slow", "txt", "text/plain", write=_write_many)
    portal.engine.exporters["slow"] = slow
    _plan, chunks = iter_export(portal.sessions, portal.engine, "slow", ExportSelection(), actor="web")
    next(chunks)
    chunks.close()
    (entry,) = audits(app)
    assert entry.detail["completed"] is False


def _write_many(rows: Any, stream: Any, context: Any) -> None:
    for _row in rows:
        pass
    for _ in range(10_000):
        stream.write(b"x" * 65536)


def test_a_failing_exporter_is_audited_as_incomplete_and_the_error_surfaces(app: Any, seeded: Any) -> None:
    portal = app.extensions["rapportal"]

    def broken(rows: Any, stream: Any, context: Any) -> None:
        for _row in rows:
            raise RuntimeError("disk full")

    portal.engine.exporters["broken"] = Exporter("broken", "Broken", "txt", "text/plain", write=broken)
    with pytest.raises(RuntimeError, match="disk full"):
        run_export(portal.sessions, portal.engine, "broken", ExportSelection(), io.BytesIO(), actor="t")
    (entry,) = audits(app)
    assert (entry.detail["completed"], entry.detail["rows"]) == (False, 1)


def test_an_exporter_may_refuse_a_selection(app: Any) -> None:
    portal = app.extensions["rapportal"]
    portal.engine.exporters["picky"] = Exporter(
        "picky", "Picky", "txt", "text/plain", write=_write_many, can_export=lambda s: bool(s.instruments)
    )
    with pytest.raises(ExportError, match="cannot export this selection"):
        run_export(portal.sessions, portal.engine, "picky", ExportSelection(), io.BytesIO(), actor="t")


# -- third-party exporters and the CLI ---------------------------------------------------


def test_third_party_exporter_is_listed_with_the_built_ins(app: Any) -> None:
    names = [e.name for e in list_exporters(app.extensions["rapportal"].engine)]
    assert "acme-tsv" in names
    assert {"csv", "csv-long", "jsonl"} <= set(names)


def test_cli_lists_formats_including_third_party(runner: Any) -> None:
    result = runner.invoke(args=["export", "--list"])
    assert result.exit_code == 0, result.output
    assert "acme-tsv" in result.output and "ACME tab-separated" in result.output
    assert "csv-long" in result.output


def test_cli_exports_with_a_third_party_exporter(runner: Any, app: Any, seeded: Any, tmp_path: Path) -> None:
    out = tmp_path / "out.tsv"
    result = runner.invoke(args=["export", "--format", "acme-tsv", "--instrument", "gad7", "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert out.read_text().splitlines() == ["response\tclient", f"{seeded.ids['gad7']}\t=D-002"]


def test_cli_export_writes_the_file_and_audits_as_the_os_user(
    runner: Any, app: Any, seeded: Any, tmp_path: Path
) -> None:
    out = tmp_path / "phq9.csv"
    args = ["export", "--format", "csv", "--instrument", "phq9", "--clinician", "alice", "--output", str(out)]
    result = runner.invoke(args=[*args, "--since", "2000-01-01", "--until", "2999-12-31"])
    assert result.exit_code == 0, result.output
    assert "Wrote 2 responses" in result.output
    assert len(read_csv(out.read_bytes())) == 2
    (entry,) = audits(app)
    assert entry.actor == f"cli:{getpass.getuser()}"
    assert entry.detail["selection"]["clinicians"] == ["alice"]
    assert entry.detail["rows"] == 2


def test_cli_until_includes_the_whole_day(runner: Any, app: Any, seeded: Any, tmp_path: Path) -> None:
    set_submitted(app, seeded.ids["gad7"], datetime(2024, 3, 10, 23, 59, tzinfo=UTC))
    out = tmp_path / "day.csv"
    args = ["export", "--format", "csv", "--since", "2024-03-10", "--until", "2024-03-10", "--output", str(out)]
    assert runner.invoke(args=args).exit_code == 0
    assert [int(r["response_id"]) for r in read_csv(out.read_bytes())] == [seeded.ids["gad7"]]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--format", "nope"], "unknown export format 'nope'"),
        (["--format", "csv", "--since", "2024-02-30"], "--since '2024-02-30' is not a date"),
        (["--format", "csv", "--until", "yesterday"], "--until 'yesterday' is not a date"),
        (["--format", "csv", "--since", "2024-02-02", "--until", "2024-02-01"], "--since is after --until"),
        (["--format", "csv", "--instrument", "phq10"], "no instrument 'phq10' is installed"),
        (["--format", "csv"], "give --format NAME and --output FILE"),
    ],
)
def test_cli_bad_input_fails_cleanly(runner: Any, tmp_path: Path, args: list[str], message: str) -> None:
    out = tmp_path / "out.csv"
    full = [*args, "--output", str(out)] if "give" not in message else args
    result = runner.invoke(args=["export", *full])
    assert result.exit_code == 1
    assert message in result.output
    assert "Traceback" not in result.output
    assert not out.exists()


def test_cli_unwritable_output_fails_cleanly(runner: Any, tmp_path: Path) -> None:
    result = runner.invoke(args=["export", "--format", "csv", "--output", str(tmp_path / "missing" / "out.csv")])
    assert result.exit_code == 1
    assert "cannot write" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_cli_leaves_no_half_written_file_when_the_export_fails(
    runner: Any, app: Any, seeded: Any, tmp_path: Path
) -> None:
    def broken(rows: Any, stream: Any, context: Any) -> None:
        stream.write(b"partial")
        raise OSError("disk full")

    app.extensions["rapportal"].engine.exporters["broken"] = Exporter("broken", "Broken", "txt", "text/plain", broken)
    out = tmp_path / "out.txt"
    out.write_text("previous export")
    result = runner.invoke(args=["export", "--format", "broken", "--output", str(out)])
    assert result.exit_code == 1
    assert "disk full" in result.output
    assert out.read_text() == "previous export"
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".part"] == []
