"""Built-in alert rules: risk items, alliance concerns and reliable deterioration.

Each rule fires on a flag that the instrument's own scoring raises, so the thresholds
live in the instrument definitions, where a clinic can see and override them.
"""

from __future__ import annotations

from core import AlertRule, flag_alert, hookimpl

BUILTIN_ALERTS = (
    flag_alert(
        "phq9_item9_risk",
        "phq9",
        "item9_risk",
        "urgent",
        "PHQ-9 item 9 above zero",
        "PHQ-9 item 9 (thoughts of being better off dead or of self-harm) was answered above zero: "
        "review risk before the client leaves.",
    ),
    flag_alert(
        "core10_item6_risk",
        "core10",
        "item6_risk",
        "urgent",
        "CORE-10 item 6 above zero",
        "CORE-10 item 6 (made plans to end my life) was answered above zero: review risk before the client leaves.",
    ),
    flag_alert(
        "srs_alliance_concern",
        "srs",
        "alliance_concern",
        "warning",
        "SRS below 36",
        "The Session Rating Scale total is below 36: ask about the alliance while the client is still here.",
    ),
    flag_alert(
        "srs_alliance_drop",
        "srs",
        "alliance_drop",
        "warning",
        "SRS dropped",
        "The Session Rating Scale total dropped by at least 1 point since the previous session.",
    ),
    flag_alert(
        "wai_sr_alliance_drop",
        "wai-sr",
        "alliance_drop",
        "warning",
        "WAI-SR dropped",
        "The WAI-SR total dropped by at least 6 points (half a scale point per item) since the previous WAI-SR.",
    ),
    flag_alert(
        "ors_reliable_deterioration",
        "ors",
        "reliable_deterioration",
        "warning",
        "ORS reliably worse",
        "The Outcome Rating Scale total is at least 5 points below the client's first ORS of the episode.",
    ),
)


@hookimpl
def register_alert_rules() -> list[AlertRule]:
    return list(BUILTIN_ALERTS)
