"""The rapportal command line: instruments list/show/check, plugins, score."""

from __future__ import annotations

import json

from core.schemas import INSTRUMENTS_DIR


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
