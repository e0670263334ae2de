"""Measurement plans: the text form, and reminder rules that leave older plans valid."""

from __future__ import annotations

import pytest

from core.plans import BUILTIN_PLANS, PlanError, parse_plan, plan_text, reminders_of, rule

KNOWN = {"ors", "srs", "phq9"}


def test_a_rule_can_remind_after_hours_at_most_so_often():
    rules = parse_plan("ors start every 1 remind 24h x2; phq9 start every 4 from 1 remind 12h", KNOWN)
    assert rules[0] == rule("ors", "start", 1, 1, remind_after_hours=24, remind_max=2)
    assert reminders_of(rules[0]) == (24, 2)
    assert reminders_of(rules[1]) == (12, 1)  # no "xN": one reminder


def test_plans_without_reminders_stay_as_they_were():
    assert parse_plan("ors start every 1; srs end", KNOWN) == BUILTIN_PLANS["pcoms"][1]
    assert all(reminders_of(r) == (0, 0) for _title, rules in BUILTIN_PLANS.values() for r in rules)
    assert "remind" not in plan_text(BUILTIN_PLANS["pcoms"][1])


def test_the_text_form_round_trips_with_reminders():
    rules = parse_plan("ors start every 1 remind 24h x2; srs end", KNOWN)
    assert plan_text(rules) == "ors start every 1 from 1 remind 24h x2; srs end every 1 from 1"
    assert parse_plan(plan_text(rules), KNOWN) == rules


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("ors start remind 24", "write reminders as 'remind 24h x2'"),
        ("ors start remind 0h x1", "remind after 1 to 720 hours"),
        ("ors start remind 24h x11", "at most 10 times"),
        ("ors start every 1 remind", "write reminders as"),
    ],
)
def test_malformed_reminders_are_refused_naming_the_rule(text, problem):
    with pytest.raises(PlanError, match="rule 1") as refused:
        parse_plan(text, KNOWN)
    assert problem in str(refused.value)
