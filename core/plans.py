"""Measurement plans: which instruments a session sends, at its start or its end.

A plan is a list of rules ``{"instrument": "ors", "moment": "start", "every": 1, "first": 1}``:
the instrument is sent in session ``first`` and then in every ``every``-th session after it
(``every: 4, first: 1`` is sessions 1, 5, 9, ...). An episode keeps a copy of its plan's rules,
so a later change to a built-in plan never changes a running episode.
The text form, one rule per line or separated by ``;``, is ``ors start every 1`` or
``phq9 start every 4 from 1``.

A rule may also ask for reminders: ``{"remind_after_hours": 24, "remind_max": 2}``, written
``ors start every 1 remind 24h x2``: a link sent by e-mail or SMS (core/notify.py) that is still
unanswered 24 hours after it was sent is sent again, at most twice, 24 hours apart. Rules without
these keys (every plan made before reminders existed) send no reminders.
"""

from __future__ import annotations

import re
from collections.abc import Container
from typing import Any

MOMENTS = ("start", "end")
MAX_REMIND_HOURS = 24 * 30
MAX_REMINDERS = 10
_REMIND = re.compile(r"^remind\s+(\d+)\s*h\s*(?:x\s*(\d+))?$")


def rule(
    instrument: str, moment: str, every: int = 1, first: int = 1, remind_after_hours: int = 0, remind_max: int = 0
) -> dict[str, Any]:
    made: dict[str, Any] = {"instrument": instrument, "moment": moment, "every": every, "first": first}
    if remind_after_hours and remind_max:
        made.update(remind_after_hours=remind_after_hours, remind_max=remind_max)
    return made


def reminders_of(rule: dict[str, Any]) -> tuple[int, int]:
    """(hours after which an unanswered link is sent again, at most how many times); (0, 0) for none."""
    hours, count = int(rule.get("remind_after_hours") or 0), int(rule.get("remind_max") or 0)
    return (hours, count) if hours and count else (0, 0)


BUILTIN_PLANS: dict[str, tuple[str, list[dict[str, Any]]]] = {
    "pcoms": (
        "PCOMS: ORS at the start and SRS at the end of every session",
        [rule("ors", "start"), rule("srs", "end")],
    ),
    "pcoms-phq9": (
        "PCOMS, plus PHQ-9 at the start of every fourth session (1, 5, 9, ...)",
        [rule("ors", "start"), rule("phq9", "start", 4), rule("srs", "end")],
    ),
    "pcoms-wai": (
        "PCOMS, plus WAI-SR at the end of every third session (3, 6, 9, ...)",
        [rule("ors", "start"), rule("srs", "end"), rule("wai-sr", "end", 3, 3)],
    ),
    "symptoms": (
        "PHQ-9, GAD-7 and CORE-10 at the start of every fourth session (1, 5, 9, ...)",
        [rule("phq9", "start", 4), rule("gad7", "start", 4), rule("core10", "start", 4)],
    ),
}
DEFAULT_PLAN = "pcoms"


class PlanError(ValueError):
    """A plan that cannot be used; the message names the line and the problem."""


def parse_plan(text: str, known_instruments: Container[str]) -> list[dict[str, Any]]:
    """Read the text form of a plan; raise :class:`PlanError` naming the rule at fault."""
    rules = []
    lines = [part.strip() for line in text.splitlines() for part in line.split(";")]
    for number, line in enumerate((line for line in lines if line), start=1):
        words = line.lower().split()
        remind_hours, remind_max = 0, 0
        if "remind" in words:
            at = words.index("remind")
            found = _REMIND.match(" ".join(words[at:]))
            if found is None:
                raise PlanError(f"rule {number} ({line!r}): write reminders as 'remind 24h x2' (hours, how many times)")
            remind_hours, remind_max = int(found.group(1)), int(found.group(2) or 1)
            if not 1 <= remind_hours <= MAX_REMIND_HOURS or not 1 <= remind_max <= MAX_REMINDERS:
                raise PlanError(
                    f"rule {number}: remind after 1 to {MAX_REMIND_HOURS} hours, at most {MAX_REMINDERS} times"
                )
            words = words[:at]
        if (
            len(words) not in (2, 4, 6)
            or (len(words) >= 4 and words[2] != "every")
            or (len(words) == 6 and words[4] != "from")
        ):
            raise PlanError(
                f"rule {number} ({line!r}): write it as 'INSTRUMENT start|end every N [from M] [remind 24h x2]'"
            )
        instrument, moment = words[0], words[1]
        if instrument not in known_instruments:
            raise PlanError(f"rule {number}: no instrument {instrument!r} is installed")
        if moment not in MOMENTS:
            raise PlanError(f"rule {number}: the moment must be 'start' or 'end', not {moment!r}")
        try:
            every = int(words[3]) if len(words) >= 4 else 1
            first = int(words[5]) if len(words) == 6 else 1
        except ValueError:
            raise PlanError(f"rule {number}: 'every' and 'from' take whole numbers") from None
        if not 1 <= every <= 52 or not 1 <= first <= 200:
            raise PlanError(f"rule {number}: 'every' must be 1 to 52 and 'from' 1 to 200")
        rules.append(rule(instrument, moment, every, first, remind_hours, remind_max))
    if not rules:
        raise PlanError("the plan has no rules: add at least one, such as 'ors start every 1'")
    return rules


def plan_text(rules: list[dict[str, Any]]) -> str:
    return "; ".join(_rule_text(r) for r in rules)


def _rule_text(r: dict[str, Any]) -> str:
    text = f"{r['instrument']} {r['moment']} every {r['every']} from {r['first']}"
    hours, count = reminders_of(r)
    return f"{text} remind {hours}h x{count}" if count else text


def moment_of(rules: list[dict[str, Any]] | None, instrument: str) -> str:
    """When ``rules`` give the instrument: ``start``, ``end``, or ``""`` when they do not name it (first rule wins)."""
    for one in rules or []:
        if one["instrument"] == instrument:
            return one["moment"]
    return ""


def due_in_session(rules: list[dict[str, Any]], number: int) -> list[dict[str, Any]]:
    """The rules due in session ``number`` (1-based): start-of-session ones first, plan order kept."""
    due = [r for r in rules if number >= r["first"] and (number - r["first"]) % r["every"] == 0]
    return sorted(due, key=lambda r: MOMENTS.index(r["moment"]))
