"""Built-in alert rules fire on the flags the instrument definitions raise."""

from __future__ import annotations

import pytest


def answers(prefix, values):
    return {f"{prefix}_{n}": v for n, v in enumerate(values, 1)}


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
    alerts = engine.alerts_for(engine.score(instrument, given, history))
    assert [alert.rule for alert in alerts] == [rule]
    assert alerts[0].message


def test_no_alert_for_an_unremarkable_response(engine):
    assert engine.alerts_for(engine.score("srs", answers("srs", [9.5, 9.5, 9.5, 9.5]))) == []
    assert engine.alerts_for(engine.score("phq9", answers("phq9", [1] * 8 + [0]))) == []


def test_alert_rules_apply_only_to_their_instrument(engine):
    rule = engine.alert_rules["srs_alliance_concern"]
    assert rule.applies_to("srs") and not rule.applies_to("ors")
