"""Alert rules fire on the flags the instrument definitions raise, and word their message from the definition."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest
from plugin_support import InstrumentFiles

from core import AlertContext, AlertRule, build_engine, flag_alert, hookimpl
from core.schemas import INSTRUMENTS_DIR


def answers(prefix, values):
    return {f"{prefix}_{n}": v for n, v in enumerate(values, 1)}


def context(engine, instrument_id, given, history=(), *, session=None, earlier=None, version=None):
    """Score ``given`` and wrap it as a rule sees it; ``earlier`` defaults to the scores of ``history``."""
    result = engine.score(instrument_id, given, history, version=version)
    instrument = engine.instruments.get(instrument_id, result.version)
    if earlier is None:
        earlier = [engine.score(instrument_id, entry, version=version).scores for entry in history]
    return AlertContext(instrument, result, answers=given, session_number=session, load_earlier=lambda: earlier)


def srs_copy(tmp_path: Path, cutoff: int, label: str | None = None) -> Path:
    """The SRS definition as a clinic would copy it: a new version with its own alliance cutoff."""
    document = json.loads((INSTRUMENTS_DIR / "srs" / "srs.json").read_text())
    document["x-instrument"]["version"] = "3.1.0"
    document.pop("$id")
    document["x-examples"] = []
    flag = next(f for f in document["x-scoring"]["flags"] if f["id"] == "alliance_concern")
    flag["params"]["value"] = cutoff
    if label is not None:
        flag["label"] = label
    path = tmp_path / "srs-clinic.json"
    path.write_text(json.dumps(document))
    return path


@pytest.mark.parametrize(
    ("instrument", "given", "history", "rule"),
    [
        ("phq9", answers("phq9", [0] * 8 + [1]), [], "phq9_item9_risk"),
        ("core10", answers("core10", [0, 4, 4, 0, 0, 1, 0, 0, 0, 0]), [], "core10_item6_risk"),
        ("srs", answers("srs", [9.0, 9.0, 9.0, 8.9]), [], "srs_alliance_concern"),
        ("srs", answers("srs", [9.5, 9.5, 9.5, 9.5]), [answers("srs", [9.8, 9.8, 9.8, 9.8])], "srs_alliance_drop"),
        (
            "ors",
            answers("ors", [3.0, 3.0, 3.0, 3.0]),
            [answers("ors", [4.3, 4.2, 4.3, 4.2])],
            "ors_reliable_deterioration",
        ),
        ("wai-sr", answers("wai", [4] * 12), [answers("wai", [5] * 12)], "wai_sr_alliance_drop"),
    ],
)
def test_builtin_alert_fires_on_its_flag(engine, instrument, given, history, rule):
    alerts = engine.alerts_for(context(engine, instrument, given, history))
    assert [alert.rule for alert in alerts] == [rule]
    assert alerts[0].message


def test_no_alert_for_an_unremarkable_response(engine):
    assert engine.alerts_for(context(engine, "srs", answers("srs", [9.5, 9.5, 9.5, 9.5]))) == []
    assert engine.alerts_for(context(engine, "phq9", answers("phq9", [1] * 8 + [0]))) == []


def test_alert_rules_apply_only_to_their_instrument(engine):
    rule = engine.alert_rules["srs_alliance_concern"]
    assert rule.applies_to("srs") and not rule.applies_to("ors")


def test_the_srs_message_gives_the_score_session_previous_value_and_cutoff(engine):
    found = context(
        engine, "srs", answers("srs", [7.5, 7.5, 7.5, 7.5]), session=4, earlier=[{"total": Decimal("37.0")}]
    )
    [alert] = engine.alerts_for(found)
    label = engine.instruments.get("srs").scoring.flags[0].label
    assert alert.message.startswith(f"{label}: SRS 30.0 in session 4 (previous 37.0; cutoff 36).")
    assert "Ask about the alliance" in alert.message  # the rule's own advice follows the facts


def test_the_first_administration_has_no_previous_value(engine):
    [alert] = engine.alerts_for(context(engine, "srs", answers("srs", [7.5, 7.5, 7.5, 7.5])))
    assert (
        "SRS 30.0 (cutoff 36)" in alert.message and "previous" not in alert.message and "session" not in alert.message
    )


def test_a_copied_definition_with_another_cutoff_moves_the_alert_text(tmp_path):
    engine = build_engine(load_entrypoints=False, extra_plugins=[InstrumentFiles(srs_copy(tmp_path, 34))])
    found = context(engine, "srs", answers("srs", [8.0, 8.0, 8.0, 8.0]), session=2, version="3.1.0")
    [alert] = engine.alerts_for(found)
    assert "SRS 32.0 in session 2 (cutoff 34)" in alert.message
    assert "36" not in alert.message
    below_34 = engine.score("srs", answers("srs", [8.6, 8.6, 8.6, 8.6]), version="3.1.0")
    assert engine.alerts_for(AlertContext(engine.instruments.get("srs", "3.1.0"), below_34)) == []  # 34.4


def test_the_alert_title_comes_from_the_newest_definitions_flag_label(tmp_path):
    engine = build_engine(
        load_entrypoints=False, extra_plugins=[InstrumentFiles(srs_copy(tmp_path, 34, "Alliance below our 34"))]
    )
    assert engine.alert_titles()["srs_alliance_concern"] == "SRS: Alliance below our 34"


def test_a_rule_that_is_not_flag_based_keeps_its_own_title():
    rule = AlertRule("always", "Always look", "info", lambda context: "hello")
    engine = build_engine(load_entrypoints=False, extra_plugins=[_Rules(rule)])
    assert engine.alert_titles()["always"] == "Always look"
    assert engine.alert_titles()["phq9_item9_risk"].startswith("PHQ-9: Item 9")


def test_a_risk_item_message_names_the_item_and_the_answer(engine):
    [alert] = engine.alerts_for(context(engine, "phq9", answers("phq9", [0] * 8 + [2]), session=1))
    assert "PHQ-9 item 9 answered 2 (More than half the days) in session 1 (cutoff 1)" in alert.message
    assert alert.message.endswith("Review risk before the client leaves.")


def test_reliable_deterioration_is_measured_from_the_first_ors(engine):
    history = [answers("ors", [4.0, 4.0, 4.5, 4.5]), answers("ors", [3.0, 3.0, 3.5, 3.5])]  # 17.0, 13.0
    found = context(engine, "ors", answers("ors", [3.0, 3.0, 3.0, 3.0]), history, session=3)
    [alert] = engine.alerts_for(found)
    assert "ORS 12.0 in session 3 (first 17.0; reliable change 5)" in alert.message


def test_a_drop_names_the_previous_value_and_the_drop(engine):
    history = [answers("srs", [9.8, 9.8, 9.8, 9.8])]  # 39.2
    [alert] = engine.alerts_for(context(engine, "srs", answers("srs", [9.5, 9.5, 9.5, 9.5]), history))
    assert "SRS 38.0 (previous 39.2; drop of 1 or more)" in alert.message


def test_a_computed_reliable_change_is_shown_from_sd_and_reliability(tmp_path):
    document = json.loads((INSTRUMENTS_DIR / "ors" / "ors.json").read_text())
    document["x-instrument"]["version"] = "1.1.0"
    document["x-examples"] = []
    document.pop("$id")
    flag = next(f for f in document["x-scoring"]["flags"] if f["id"] == "reliable_deterioration")
    del flag["params"]["threshold"]
    flag["params"].update(sd=12.9, reliability=0.91)  # Jacobson & Truax: 10.73
    path = tmp_path / "ors.json"
    path.write_text(json.dumps(document))
    engine = build_engine(load_entrypoints=False, extra_plugins=[InstrumentFiles(path)])
    history = [answers("ors", [7.5, 7.5, 7.5, 7.5])]  # 30.0; then a drop of 14.0 > 10.73
    found = context(engine, "ors", answers("ors", [4.0, 4.0, 4.0, 4.0]), history, version="1.1.0")
    [alert] = engine.alerts_for(found)
    assert "ORS 16.0 (first 30.0; reliable change 10.73)" in alert.message


def test_earlier_scores_are_loaded_only_when_a_rule_reads_them(engine):
    calls = []

    def load():
        calls.append(1)
        return [{"total": Decimal("38.0")}]

    quiet = engine.score("srs", answers("srs", [9.5, 9.5, 9.5, 9.6]))
    instrument = engine.instruments.get("srs")
    assert engine.alerts_for(AlertContext(instrument, quiet, load_earlier=load)) == []
    assert calls == []
    low = engine.score("srs", answers("srs", [7.0, 7.0, 7.0, 7.0]))
    loud = AlertContext(instrument, low, load_earlier=load)
    assert len(engine.alerts_for(loud)) == 1 and loud.previous_scores == {"total": Decimal("38.0")}
    assert calls == [1]  # once, however often it is read


def test_flag_alert_stays_quiet_when_the_definition_lacks_the_flag(engine):
    rule = flag_alert("odd", "srs", "no_such_flag", "info")
    result = engine.score("srs", answers("srs", [1.0, 1.0, 1.0, 1.0]))
    assert rule.evaluate(AlertContext(engine.instruments.get("srs"), result)) is None


class _Rules:
    """A throwaway plugin that registers the given alert rules."""

    def __init__(self, *rules):
        self.rules = list(rules)

    @hookimpl
    def register_alert_rules(self):
        return self.rules
