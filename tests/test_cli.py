"""The rapportal command line: instruments list/show/check, plugins, score, demo, accounts on a fresh instance."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from core.accounts import setup_token
from core.migrations import current_revision, head_revision
from core.models import User
from core.schemas import INSTRUMENTS_DIR
from web import create_app

RAPPORTAL = Path(sys.executable).with_name("rapportal")


def phq9_payload(values, history=()):
    return json.dumps({"answers": {f"phq9_{n}": v for n, v in enumerate(values, 1)}, "history": list(history)})


def test_instruments_list_json_shows_licence_state(runner):
    result = runner.invoke(args=["instruments", "list", "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["id"]: row for row in json.loads(result.output)["instruments"]}
    assert set(rows) == {"phq9", "gad7", "core10", "wai-sr", "srs", "ors"}
    assert rows["srs"]["wording"] == "not installed" and rows["srs"]["sendable"] is False
    assert rows["phq9"]["wording"] == "bundled" and rows["phq9"]["plugin"] == "plugins.builtin_instruments"


def test_instruments_list_marks_licensed_instruments(runner):
    result = runner.invoke(args=["instruments", "list"])
    assert "srs" in result.output and "[licensed wording: not installed]" in result.output


def test_instruments_show(runner):
    result = runner.invoke(args=["instruments", "show", "core10"])
    assert result.exit_code == 0
    assert "I made plans to end my life" in result.output
    assert "moderate_severe" in result.output and "item6_risk" in result.output


def test_instruments_show_unknown_id_fails_cleanly(runner):
    result = runner.invoke(args=["instruments", "show", "phq10"])
    assert result.exit_code == 1
    assert "no instrument 'phq10' is installed" in result.output
    assert "Traceback" not in result.output


def test_instruments_check_passes_for_every_builtin(runner):
    result = runner.invoke(args=["instruments", "check"])
    assert result.exit_code == 0, result.output
    assert result.output.count("ok  ") == 6


def test_instruments_check_names_file_pointer_and_reason(runner, tmp_path):
    document = json.loads((INSTRUMENTS_DIR / "gad7" / "gad7.json").read_text())
    document["x-scoring"]["bands"]["ranges"][3]["min"] = 16
    path = tmp_path / "gad7-broken.json"
    path.write_text(json.dumps(document))
    result = runner.invoke(args=["instruments", "check", str(path)])
    assert result.exit_code == 1
    assert f"{path}: /x-scoring/bands/ranges/3/min: gap between band 'moderate'" in result.output


def test_instruments_check_runs_worked_examples_of_a_file(runner, tmp_path):
    document = json.loads((INSTRUMENTS_DIR / "gad7" / "gad7.json").read_text())
    document["x-examples"][4]["expect"]["band"] = "mild"
    path = tmp_path / "gad7.json"
    path.write_text(json.dumps(document))
    result = runner.invoke(args=["instruments", "check", str(path)])
    assert result.exit_code == 1
    assert "band is 'moderate', expected 'mild'" in result.output


def test_plugins_json_lists_builtins_with_hooks(runner):
    result = runner.invoke(args=["plugins", "--json"])
    assert result.exit_code == 0
    plugins = {p["name"]: p for p in json.loads(result.output)}
    assert plugins["plugins.scoring_rules"]["hooks"] == ["register_scoring_rules"]
    assert plugins["plugins.alert_rules"]["version"]


def test_score_prints_the_result(runner):
    result = runner.invoke(args=["score", "phq9"], input=phq9_payload([3, 3, 3, 3, 3, 0, 0, 0, 1]))
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == {
        "instrument": "phq9",
        "version": "1.0.0",
        "complete": True,
        "scores": {"total": 16},
        "band": "moderately_severe",
        "flags": ["clinical_cutoff", "item9_risk"],
    }


def test_score_reads_an_input_file_with_history(runner, tmp_path):
    path = tmp_path / "in.json"
    ors = lambda v: {f"ors_{n}": v for n in range(1, 5)}  # noqa: E731
    path.write_text(json.dumps({"answers": ors(6.3), "history": [ors(5.0)]}))
    result = runner.invoke(args=["score", "ors", "--input", str(path)])
    assert result.exit_code == 0, result.output
    output = json.loads(result.output)
    assert output["scores"] == {"total": 25.2, "change_from_baseline": 5.2}
    assert "clinically_significant_improvement" in output["flags"]


def test_score_reports_which_item_and_why(runner):
    result = runner.invoke(args=["score", "phq9"], input=phq9_payload([0, 0, 4, 0, 0, 0, 0, 0, "x"]))
    assert result.exit_code == 1
    assert "phq9_3: must be one of 0, 1, 2, 3 (got 4)" in result.output
    assert "phq9_9: must be a whole number (got 'x')" in result.output


def test_score_reports_an_unknown_item(runner):
    payload = json.loads(phq9_payload([0] * 9))
    payload["answers"]["phq9_10"] = 1
    result = runner.invoke(args=["score", "phq9"], input=json.dumps(payload))
    assert result.exit_code == 1
    assert "phq9_10: is not an item of phq9" in result.output


def test_score_reports_bad_history(runner):
    payload = phq9_payload([0] * 9, history=[{"phq9_1": 9}])
    result = runner.invoke(args=["score", "phq9"], input=payload)
    assert result.exit_code == 1
    assert "history[0]" in result.output


def test_score_rejects_invalid_json_and_wrong_shape(runner):
    assert runner.invoke(args=["score", "phq9"], input="{nope").exit_code == 1
    result = runner.invoke(args=["score", "phq9"], input="[1, 2]")
    assert result.exit_code == 1 and '"answers"' in result.output
    unknown = runner.invoke(args=["score", "nothing"], input=phq9_payload([0] * 9))
    assert unknown.exit_code == 1 and "no instrument 'nothing'" in unknown.output


def test_demo_prints_a_working_link_for_every_instrument(app_config, tmp_path, monkeypatch):
    from web import create_app

    monkeypatch.setenv("RAPPORTAL_INSTANCE_PATH", str(tmp_path / "demo-instance"))
    app = create_app({**app_config, "CREATE_SCHEMA": False})  # a fresh checkout: the demo makes the tables
    result = app.test_cli_runner().invoke(args=["demo", "--base-url", "http://portal.test"])
    assert result.exit_code == 0, result.output
    links = [line.split()[1] for line in result.output.splitlines() if "http://portal.test/a/" in line]
    assert len(links) == 6
    client = app.test_client()
    for link in links:
        page = client.get(link.removeprefix("http://portal.test"))
        assert page.status_code == 200
        assert 'name="csrf_token"' in page.get_data(as_text=True)
    srs = app.extensions["rapportal"].engine.instruments.get("srs")
    assert srs.wording_placeholder and not srs.sendable  # placeholder wording: demo links only
    assert "[PLACEHOLDER" in client.get(links[4].removeprefix("http://portal.test")).get_data(as_text=True)
    app.extensions["rapportal"].db.dispose()


# --- a fresh instance: no tables until a command makes them --------------------------------------------------------


@pytest.fixture
def fresh_app(app_config, tmp_path, monkeypatch):
    """An app on an empty database and an empty instance folder, as after a fresh checkout."""
    monkeypatch.setenv("RAPPORTAL_INSTANCE_PATH", str(tmp_path / "fresh-instance"))
    app = create_app({**app_config, "CREATE_SCHEMA": False})
    yield app
    app.extensions["rapportal"].db.dispose()


def test_create_user_on_a_fresh_instance_makes_the_tables_first(fresh_app):
    result = fresh_app.test_cli_runner().invoke(
        args=["create-user", "boss", "--role", "admin", "--password", "correct horse battery"]
    )
    assert result.exit_code == 0, result.output
    assert result.output.strip() == "Created admin boss"
    state = fresh_app.extensions["rapportal"]
    assert current_revision(state.db) == head_revision()
    with state.sessions() as session:
        assert session.scalars(sa.select(User.username)).all() == ["boss"]


def test_setup_link_on_a_fresh_instance_makes_the_tables_and_prints_the_link(fresh_app):
    result = fresh_app.test_cli_runner().invoke(args=["setup-link", "--base-url", "http://clinic.example"])
    assert result.exit_code == 0, result.output
    link = f"http://clinic.example/setup/{setup_token(fresh_app.config['SECRET_KEY'])}"
    assert result.output.strip() == f"No accounts yet: create the first administrator at {link}"
    assert current_revision(fresh_app.extensions["rapportal"].db) == head_revision()


def test_setup_link_command_on_a_fresh_checkout_prints_the_link_without_a_traceback(tmp_path):
    """The real command, nothing configured but the instance folder, as a newcomer runs it before `serve`."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("RAPPORTAL_")}
    env["RAPPORTAL_INSTANCE_PATH"] = str(tmp_path / "instance")
    env["RAPPORTAL_LOAD_ENTRYPOINTS"] = "false"
    done = subprocess.run([str(RAPPORTAL), "setup-link"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("No accounts yet: create the first administrator at http://127.0.0.1:8000/setup/")
    assert done.stderr == ""


def test_an_account_command_names_the_database_it_cannot_upgrade(app_config, tmp_path, monkeypatch):
    monkeypatch.setenv("RAPPORTAL_INSTANCE_PATH", str(tmp_path / "instance"))
    url = f"sqlite:///{tmp_path / 'no' / 'such' / 'folder' / 'x.db'}"
    app = create_app({**app_config, "CREATE_SCHEMA": False, "DATABASE_URL": url})
    result = app.test_cli_runner().invoke(args=["setup-link"])
    assert result.exit_code == 1
    [line] = result.output.splitlines()
    assert line.startswith("Error: cannot bring the database sqlite:///") and "x.db" in line
    assert "unable to open database file" in line
    app.extensions["rapportal"].db.dispose()


def test_demo_says_which_instance_folder_and_database_it_wrote_to(app_config, tmp_path, monkeypatch):
    url = sa.make_url(app_config["DATABASE_URL"])
    if url.get_backend_name() == "postgresql":
        url = url.set(password="not-for-the-screen")  # trust authentication: the server never asks for it
    monkeypatch.setenv("RAPPORTAL_INSTANCE_PATH", str(tmp_path / "demo-instance"))
    app = create_app({**app_config, "CREATE_SCHEMA": False, "DATABASE_URL": url.render_as_string(hide_password=False)})
    result = app.test_cli_runner().invoke(args=["demo", "--base-url", "http://portal.test"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert f"Instance folder: {tmp_path / 'demo-instance'}" in lines
    shown = url._replace(password=None).render_as_string(hide_password=False)
    assert f"Database:        {shown}" in lines
    assert "not-for-the-screen" not in result.output and "***" not in result.output
    app.extensions["rapportal"].db.dispose()


# --- clients from the command line: the same operation as the web page --------------------------------------------


def _client_entries(app):
    from core.models import AuditEntry

    with app.extensions["rapportal"].sessions() as session:
        return [
            (e.actor.split(":")[0], e.target.split(":")[0], sorted(e.detail))
            for e in session.scalars(sa.select(AuditEntry).where(AuditEntry.action == "client.create"))
        ]


def test_a_client_made_on_the_command_line_is_audited_like_one_made_on_the_web(app, runner):
    from staff_support import csrf, make_world, sign_in

    make_world(app)
    made = runner.invoke(
        args=["clients", "create", "C-77", "--clinician", "ann", "--further", "bob", "--language", "de"]
    )
    assert made.exit_code == 0, made.output
    assert "Created client C-77" in made.output
    admin = app.test_client()
    sign_in(admin, "admin")
    page = admin.get("/admin/clients").text
    data = {"csrf_token": csrf(page), "code": "C-78", "language": "en", "clinician": "3"}
    assert admin.post("/admin/clients", data=data).status_code == 303
    cli_entry, web_entry = _client_entries(app)
    assert cli_entry == ("cli", "client", ["clinician", "further", "site"])
    assert web_entry == ("user", "client", ["clinician", "further", "site"])
    listing = runner.invoke(args=["clients", "list"])
    assert "C-77" in listing.output and "ann" in listing.output


def test_a_bad_client_on_the_command_line_is_one_line_and_exit_1(app, runner):
    from staff_support import make_world

    make_world(app)
    for args, reason in (
        (["C-1"], "exists already"),
        (["has space"], "code: Use 1 to 64"),
        (["C-9", "--clinician", "admin"], "no active clinician"),
        (["C-9", "--language", "xx"], "language: Choose one of"),
    ):
        result = runner.invoke(args=["clients", "create", *args])
        assert result.exit_code == 1 and reason in result.output and "Traceback" not in result.output, args


def test_a_client_without_a_clinician_is_created_with_a_warning(app, runner):
    result = runner.invoke(args=["clients", "create", "C-5"])
    assert result.exit_code == 0 and "no clinician can see this client" in result.output


def test_sites_are_made_assigned_and_clients_moved_on_the_command_line_audited(app, runner):
    from staff_support import make_world

    world = make_world(app)
    assert runner.invoke(args=["sites", "create", "North"]).exit_code == 0
    assert runner.invoke(args=["sites", "create", "North"]).exit_code != 0  # the name is taken
    assert runner.invoke(args=["sites", "assign", "ann", "North"]).exit_code == 0
    refused = runner.invoke(args=["sites", "assign", "ann", "Nowhere"])
    assert refused.exit_code != 0 and "no such site" in refused.output
    refused = runner.invoke(args=["sites", "supervise", "ann", "bob"])
    assert refused.exit_code != 0 and "supervisor" in refused.output
    moved = runner.invoke(args=["sites", "move-client", "C-1", "North"])
    assert moved.exit_code == 0, moved.output
    made = runner.invoke(args=["clients", "create", "C-N", "--clinician", "ann", "--site", "North"])
    assert made.exit_code == 0, made.output
    assert runner.invoke(args=["clients", "create", "C-X", "--site", "Nowhere"]).exit_code != 0
    listed = runner.invoke(args=["sites", "list"]).output
    assert "North" in listed and "2 clients" in listed
    from core.models import AuditEntry, Client

    with app.extensions["rapportal"].sessions() as session:
        assert session.get(Client, world.client_id).site.name == "North"
        actions = [e.action for e in session.scalars(sa.select(AuditEntry).where(AuditEntry.actor.like("cli:%")))]
    assert {"site.create", "user.sites", "client.move"} <= set(actions)
