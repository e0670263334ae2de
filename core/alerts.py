"""Alert rules: turn a scored response into alerts that a clinician must acknowledge."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from core.scoring import ScoreResult

Severity = Literal["info", "warning", "urgent"]


@dataclass(frozen=True)
class Alert:
    """One raised alert: which rule, how urgent, and a sentence for the clinician."""

    rule: str
    severity: Severity
    message: str


@dataclass(frozen=True)
class AlertRule:
    """A named rule; ``evaluate`` returns a message when the result should alert, else None.

    ``instruments`` limits the rule to those instrument ids (empty: every instrument).
    """

    name: str
    title: str
    severity: Severity
    evaluate: Callable[[ScoreResult], str | None]
    instruments: tuple[str, ...] = ()

    def applies_to(self, instrument_id: str) -> bool:
        return not self.instruments or instrument_id in self.instruments


def flag_alert(name: str, instrument: str, flag: str, severity: Severity, title: str, message: str) -> AlertRule:
    """An alert rule that fires when an instrument's result carries ``flag``."""

    def evaluate(result: ScoreResult) -> str | None:
        return message if flag in result.flags else None

    return AlertRule(name=name, title=title, severity=severity, evaluate=evaluate, instruments=(instrument,))


def evaluate_alerts(rules: dict[str, AlertRule], result: ScoreResult) -> list[Alert]:
    """Every alert that ``result`` raises, in rule-name order."""
    alerts = []
    for name in sorted(rules):
        rule = rules[name]
        if rule.applies_to(result.instrument):
            message = rule.evaluate(result)
            if message:
                alerts.append(Alert(rule=name, severity=rule.severity, message=message))
    return alerts
