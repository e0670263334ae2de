"""Built-in alert rules: risk items, alliance concerns, reliable deterioration and "not on track".

Each rule fires on a flag that the instrument's own scoring raises. The thresholds live in the instrument
definitions, where a clinic can see and override them, and so does the wording: ``flag_alert`` builds each
message from the flag's label and parameters (a copied SRS with its cutoff at 34 says "cutoff 34"). Only the
advice, what to do next, is written here. "Not on track" compares a score with the clinic's expected change for
clients of the same intake range (core.expected), for every instrument whose charts declare a direction.
"""

from __future__ import annotations

from core import AlertRule, flag_alert, hookimpl, not_on_track_alert

REVIEW_RISK = "Review risk before the client leaves."

BUILTIN_ALERTS = (
    flag_alert("phq9_item9_risk", "phq9", "item9_risk", "urgent", advice=REVIEW_RISK),
    flag_alert("core10_item6_risk", "core10", "item6_risk", "urgent", advice=REVIEW_RISK),
    flag_alert(
        "srs_alliance_concern",
        "srs",
        "alliance_concern",
        "warning",
        advice="Ask about the alliance while the client is still here.",
    ),
    flag_alert(
        "srs_alliance_drop",
        "srs",
        "alliance_drop",
        "warning",
        advice="Ask what changed in the session.",
    ),
    flag_alert(
        "wai_sr_alliance_drop",
        "wai-sr",
        "alliance_drop",
        "warning",
        advice="Talk about the goals, tasks and bond of the work.",
    ),
    flag_alert(
        "ors_reliable_deterioration",
        "ors",
        "reliable_deterioration",
        "warning",
        advice="Review the plan with the client.",
    ),
    not_on_track_alert("not_on_track", "warning", advice="Ask the client how the work is going for them."),
)


@hookimpl
def register_alert_rules() -> list[AlertRule]:
    return list(BUILTIN_ALERTS)
