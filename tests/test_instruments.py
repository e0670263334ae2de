"""Loading and checking instrument definitions: every broken one is named by file, pointer and reason."""

from __future__ import annotations

import copy
import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from plugin_support import InstrumentFiles

from core import InstrumentDefinitionError, WordingError, build_engine
from core.instruments import WordingVersion, check_examples, check_wording, load_instrument, placeholder_wording
from core.schemas import INSTRUMENTS_DIR

BUILTIN_IDS = ["core10", "gad7", "ors", "phq9", "srs", "wai-sr"]


def phq9_document() -> dict:
    return json.loads((INSTRUMENTS_DIR / "phq9" / "phq9.json").read_text())


def load_broken(tmp_path: Path, engine, document) -> InstrumentDefinitionError:
    path = tmp_path / "broken.json"
    path.write_text(document if isinstance(document, str) else json.dumps(document))
    with pytest.raises(InstrumentDefinitionError) as excinfo:
        load_instrument(path, engine.scoring_rules)
    error = excinfo.value
    assert error.source == str(path)
    assert str(path) in str(error) and error.pointer in str(error) and error.reason in str(error)
    return error


def test_every_builtin_instrument_loads(engine):
    assert [i.id for i in engine.instruments] == BUILTIN_IDS
    assert engine.instruments.errors == []


def test_item_ids_match_the_instrument_facts(engine):
    expected = {
        "phq9": [f"phq9_{n}" for n in range(1, 10)],
        "gad7": [f"gad7_{n}" for n in range(1, 8)],
        "core10": [f"core10_{n}" for n in range(1, 11)],
        "wai-sr": [f"wai_{n}" for n in range(1, 13)],
        "srs": [f"srs_{n}" for n in range(1, 5)],
        "ors": [f"ors_{n}" for n in range(1, 5)],
    }
    for instrument_id, items in expected.items():
        assert [item.id for item in engine.instruments.get(instrument_id).items] == items


def test_scores_bands_and_flags_match_the_instrument_facts(engine):
    expected = {
        "phq9": (
            ["total"],
            ["minimal", "mild", "moderate", "moderately_severe", "severe"],
            ["clinical_cutoff", "item9_risk", "prorated", "not_scorable"],
        ),
        "gad7": (["total"], ["minimal", "mild", "moderate", "severe"], ["clinical_cutoff", "not_scorable"]),
        "core10": (
            ["total"],
            ["healthy", "low", "mild", "moderate", "moderate_severe", "severe"],
            ["clinical_cutoff", "item6_risk", "prorated", "not_scorable"],
        ),
        "wai-sr": (
            ["total", "goal", "task", "bond", "total_mean", "goal_mean", "task_mean", "bond_mean"],
            [],
            ["alliance_drop", "not_scorable"],
        ),
        "srs": (["total"], [], ["alliance_concern", "alliance_drop", "not_scorable"]),
        "ors": (
            ["total", "change_from_baseline"],
            ["clinical", "non_clinical"],
            [
                "clinical_range",
                "reliable_improvement",
                "reliable_deterioration",
                "clinically_significant_improvement",
                "not_scorable",
            ],
        ),
    }
    for instrument_id, (scores, bands, flags) in expected.items():
        scoring = engine.instruments.get(instrument_id).scoring
        assert [s.name for s in scoring.scores] == scores, instrument_id
        assert [b.id for b in scoring.bands] == bands, instrument_id
        assert sorted(scoring.flag_ids) == sorted(flags), instrument_id


def test_licensed_instruments_are_not_sendable_until_wording_is_installed(engine):
    for instrument_id in ("wai-sr", "srs", "ors"):
        instrument = engine.instruments.get(instrument_id)
        assert not instrument.licence.wording_bundled
        assert not instrument.sendable
        assert all(item.text is None for item in instrument.items)
    for instrument_id in ("phq9", "gad7", "core10"):
        assert engine.instruments.get(instrument_id).sendable


def test_bundled_wording_is_verbatim_from_the_sources(engine):
    assert engine.instruments.get("core10").item("core10_6").text == "I made plans to end my life"
    assert engine.instruments.get("phq9").item("phq9_9").text == (
        "Thoughts that you would be better off dead, or of hurting yourself in some way"
    )


@pytest.mark.parametrize("instrument_id", BUILTIN_IDS)
def test_each_builtin_has_a_readme_with_citation_and_licence(engine, instrument_id):
    readme = (INSTRUMENTS_DIR / instrument_id / "README.md").read_text()
    instrument = engine.instruments.get(instrument_id)
    assert "Licence" in readme and "Citation" in readme
    assert instrument.citation.split(",")[0] in readme  # first author


def test_invalid_json_is_reported_with_line_and_column(tmp_path, engine):
    error = load_broken(tmp_path, engine, '{"title": "x",\n "type": }')
    assert error.pointer == "/"
    assert "invalid JSON at line 2" in error.reason


def test_unknown_scoring_rule_is_reported_at_its_pointer(tmp_path, engine):
    document = phq9_document()
    document["x-scoring"]["scores"][0]["rule"] = "summ"
    error = load_broken(tmp_path, engine, document)
    assert error.pointer == "/x-scoring/scores/0/rule"
    assert "unknown scoring rule 'summ'" in error.reason


def test_score_referring_to_an_item_absent_from_the_schema(tmp_path, engine):
    document = phq9_document()
    document["x-scoring"]["scores"][0]["params"]["items"][8] = "phq9_10"
    error = load_broken(tmp_path, engine, document)
    assert error.pointer == "/x-scoring/scores/0/params/items/8"
    assert "'phq9_10' is not a property" in error.reason


def test_flag_referring_to_an_item_absent_from_the_schema(tmp_path, engine):
    document = phq9_document()
    document["x-scoring"]["flags"][1]["params"]["items"] = ["phq9_99"]
    error = load_broken(tmp_path, engine, document)
    assert error.pointer == "/x-scoring/flags/1/params/items/0"


def test_band_table_with_a_gap(tmp_path, engine):
    document = phq9_document()
    document["x-scoring"]["bands"]["ranges"][2]["min"] = 11  # mild ends at 9
    error = load_broken(tmp_path, engine, document)
    assert error.pointer == "/x-scoring/bands/ranges/2/min"
    assert "gap between band 'mild'" in error.reason


def test_band_table_with_an_overlap(tmp_path, engine):
    document = phq9_document()
    document["x-scoring"]["bands"]["ranges"][1]["min"] = 4  # minimal ends at 4
    error = load_broken(tmp_path, engine, document)
    assert error.pointer == "/x-scoring/bands/ranges/1/min"
    assert "overlaps band 'minimal'" in error.reason


def test_remote_ref_is_refused_without_fetching(tmp_path, engine):
    document = phq9_document()
    document["properties"]["phq9_1"] = {"$ref": "https://example.org/evil.json#/item"}
    error = load_broken(tmp_path, engine, document)
    assert error.pointer == "/properties/phq9_1/$ref"
    assert "remote reference" in error.reason


def test_meta_schema_violation_names_the_pointer(tmp_path, engine):
    document = phq9_document()
    document["x-instrument"]["licence"]["wording_bundled"] = "yes"
    error = load_broken(tmp_path, engine, document)
    assert error.pointer == "/x-instrument/licence/wording_bundled"


def test_wrong_rule_parameters_are_reported(tmp_path, engine):
    document = phq9_document()
    document["x-scoring"]["flags"][0]["params"]["op"] = "=>"
    error = load_broken(tmp_path, engine, document)
    assert error.pointer == "/x-scoring/flags/0/params/op"
    assert "threshold" in error.reason


def test_options_must_match_the_enum(tmp_path, engine):
    document = phq9_document()
    document["$defs"]["frequency"]["enum"] = [0, 1, 2, None]
    error = load_broken(tmp_path, engine, document)
    assert error.pointer == "/properties/phq9_1"


def test_a_broken_definition_from_a_plugin_does_not_stop_the_others(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")

    engine = build_engine(load_entrypoints=False, extra_plugins=[InstrumentFiles(broken)])
    assert [i.id for i in engine.instruments] == BUILTIN_IDS
    assert [e.source for e in engine.instruments.errors] == [str(broken)]


def test_validator_is_compiled_once_per_instrument_version(engine):
    instrument = engine.instruments.get("phq9")
    assert instrument.validator is instrument.validator


def test_several_versions_coexist_and_the_newest_is_the_default(tmp_path):
    document = phq9_document()
    document["x-instrument"]["version"] = "1.1.0"
    newer = tmp_path / "phq9-1.1.json"
    newer.write_text(json.dumps(document))

    engine = build_engine(load_entrypoints=False, extra_plugins=[InstrumentFiles(newer)])
    assert engine.instruments.get("phq9").version == "1.1.0"
    assert engine.instruments.get("phq9", "1.0.0").version == "1.0.0"


def test_worked_example_that_disagrees_is_reported(tmp_path, engine):
    document = phq9_document()
    document["x-examples"][0]["expect"]["scores"]["total"] = 1
    path = tmp_path / "phq9.json"
    path.write_text(json.dumps(document))
    problems = check_examples(load_instrument(path, engine.scoring_rules))
    assert problems == [f"{path}: /x-examples/0 (all zero: minimal): score 'total' is 0, expected 1"]


def stored(instrument_id, document, number=1):
    """A wording version as core.wording reads it from the database."""
    return WordingVersion(instrument_id, number, document, bool(document.get("placeholder")), datetime.now(UTC), "test")


def test_applied_wording_makes_a_licensed_instrument_sendable(engine):
    wording = placeholder_wording(engine.instruments.get("srs"))
    wording["placeholder"] = False
    wording["items"]["srs_1"]["text"] = "Licensed text for item 1"
    engine.instruments.use_wording([stored("srs", wording)])
    srs = engine.instruments.get("srs")
    assert srs.sendable and srs.item("srs_1").text == "Licensed text for item 1"
    assert srs.wording_source == "database: srs wording version 1"


def test_placeholder_wording_is_never_sendable(engine):
    engine.instruments.use_wording([stored("ors", placeholder_wording(engine.instruments.get("ors")))])
    ors = engine.instruments.get("ors")
    assert ors.wording_installed and ors.wording_placeholder and not ors.sendable


def test_a_newer_wording_version_replaces_the_applied_one_and_an_older_one_is_ignored(engine):
    first, second = (placeholder_wording(engine.instruments.get("srs")) for _ in range(2))
    second["items"]["srs_1"] = {"text": "Second text"}  # no anchors: the definition's own apply again
    engine.instruments.use_wording([stored("srs", first, 1)])
    engine.instruments.use_wording([stored("srs", second, 2)])
    engine.instruments.use_wording([stored("srs", first, 1)])
    item = engine.instruments.get("srs").item("srs_1")
    assert item.text == "Second text"
    assert item.anchors != ("[PLACEHOLDER low end]", "[PLACEHOLDER high end]")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda w: w["items"].pop("srs_4"), "no wording for item(s) srs_4"),
        (lambda w: w["items"].__setitem__("srs_9", "x"), "srs_9: not an item of srs"),
        (lambda w: w.__setitem__("instrument", "ors"), "is for 'ors', not 'srs'"),
        (lambda w: w["items"].__setitem__("srs_2", "  "), "srs_2: the text must be a non-empty string"),
        (lambda w: w.__setitem__("placeholder", "no"), "'placeholder' must be true or false"),
    ],
)
def test_wording_that_does_not_fit_the_item_ids_is_refused(engine, change, message):
    srs = engine.instruments.get("srs")
    wording = copy.deepcopy(placeholder_wording(srs))
    change(wording)
    with pytest.raises(WordingError, match=re.escape(message)):
        check_wording(srs, wording)


def test_stored_wording_that_does_not_fit_a_newer_definition_is_reported_not_applied(tmp_path, engine):
    wording = placeholder_wording(engine.instruments.get("ors"))
    document = json.loads((INSTRUMENTS_DIR / "ors" / "ors.json").read_text())
    document["x-instrument"]["version"] = "9.0.0"
    document["properties"]["ors_5"] = document["properties"]["ors_4"]
    newer = tmp_path / "ors-9.json"
    newer.write_text(json.dumps(document))
    upgraded = build_engine(load_entrypoints=False, extra_plugins=[InstrumentFiles(newer)])
    upgraded.instruments.use_wording([stored("ors", wording)])
    upgraded.instruments.use_wording([stored("ors", wording)], stamp="again")
    assert upgraded.instruments.get("ors", "1.0.0").wording_installed
    assert not upgraded.instruments.get("ors", "9.0.0").wording_installed
    reports = [str(e) for e in upgraded.instruments.errors if "wording not applied" in str(e)]
    assert reports == [
        "database: ors wording version 1: /: wording not applied to ors 9.0.0: no wording for item(s) ors_5"
    ]


def test_languages_are_the_definitions_own_and_its_translations(tmp_path):
    document = phq9_document()
    document["x-instrument"]["version"] = "1.0.1"
    document["x-translations"] = {"es": {"title": "Cuestionario"}, "de": {"title": "Fragebogen"}}
    path = tmp_path / "phq9.json"
    path.write_text(json.dumps(document))

    engine = build_engine(load_entrypoints=False, extra_plugins=[InstrumentFiles(path)])
    assert engine.instruments.get("phq9", "1.0.1").languages == ("en", "de", "es")
    assert engine.instruments.get("phq9", "1.0.0").languages == ("en",)
