"""Alert rules: turn a scored response into alerts that a clinician must acknowledge.

A rule sees an :class:`AlertContext`: the instrument version in force, the result, the answers, the session
number and, loaded only when a rule asks, the client's earlier scores in the episode. Rules made with
:func:`flag_alert` word their message from the instrument's own flag label and parameters, so a clinic that
changes a cutoff in its copy of a definition changes the alert text too.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from functools import cached_property
from typing import Any, Literal

import sqlalchemy as sa

from core.db import DirectStatement
from core.expected import ExpectedTable, expected_scores
from core.instruments import FlagSpec, Instrument
from core.models import Response, Score
from core.progress import reliable_change_amount
from core.scoring import COMPARISONS, ScoreResult, decimal_scores, to_decimal

Severity = Literal["info", "warning", "urgent"]
EarlierScores = Sequence[Mapping[str, Decimal | None]]


def _no_earlier() -> EarlierScores:
    return ()


def _no_expected(_score: str) -> ExpectedTable | None:
    return None


@dataclass(frozen=True)
class AlertContext:
    """What an alert rule sees about one scored response.

    ``load_earlier`` returns the scores of the client's earlier administrations of the same instrument in the same
    episode, oldest first; it runs (once) only when a rule reads :attr:`earlier_scores`, so a rule that does not
    fire costs no query.
    """

    instrument: Instrument
    result: ScoreResult
    answers: Mapping[str, Any] = field(default_factory=dict)
    session_number: int | None = None
    load_earlier: Callable[[], EarlierScores] = field(default=_no_earlier, repr=False, compare=False)
    # the clinic's expected change of a score (core.expected), for rules that compare with it; None: no figures
    load_expected: Callable[[str], ExpectedTable | None] = field(default=_no_expected, repr=False, compare=False)

    @cached_property
    def earlier_scores(self) -> tuple[Mapping[str, Decimal | None], ...]:
        """Earlier administrations' scores in the episode, oldest first (loaded on first use)."""
        return tuple(self.load_earlier())

    @property
    def previous_scores(self) -> Mapping[str, Decimal | None] | None:
        """The previous administration's scores, or None for the first one."""
        return self.earlier_scores[-1] if self.earlier_scores else None

    @property
    def first_scores(self) -> Mapping[str, Decimal | None] | None:
        """The episode's first administration's scores (the baseline), or None for the first one."""
        return self.earlier_scores[0] if self.earlier_scores else None


@dataclass(frozen=True)
class Alert:
    """One raised alert: which rule, how urgent, and a sentence for the clinician."""

    rule: str
    severity: Severity
    message: str


@dataclass(frozen=True)
class AlertRule:
    """A named rule; ``evaluate(context)`` returns a message when the response should alert, else None.

    ``instruments`` limits the rule to those instrument ids (empty: every instrument). A rule that fires on a
    scoring ``flag`` is titled from the definition (instrument short title and flag label); ``title`` is the
    title of other rules, and the fallback when the definition has no such flag.
    """

    name: str
    title: str
    severity: Severity
    evaluate: Callable[[AlertContext], str | None]
    instruments: tuple[str, ...] = ()
    flag: str | None = None

    def applies_to(self, instrument_id: str) -> bool:
        return not self.instruments or instrument_id in self.instruments

    def title_for(self, instrument: Instrument | None) -> str:
        """The title shown to clinicians, from ``instrument``'s flag label when this rule is flag-based."""
        spec = flag_spec(instrument, self.flag) if instrument is not None and self.flag else None
        if instrument is None or spec is None:
            return self.title or self.name
        return f"{instrument.short_title}: {spec.label}"


def flag_spec(instrument: Instrument, flag_id: str) -> FlagSpec | None:
    """The definition's flag with this id, or None."""
    return next((spec for spec in instrument.scoring.flags if spec.id == flag_id), None)


def flag_alert(name: str, instrument: str, flag: str, severity: Severity, *, advice: str = "") -> AlertRule:
    """An alert rule that fires when an instrument's result carries ``flag``.

    Its message is the flag's label and the facts (see :func:`flag_facts`), then ``advice``: what to do now.
    """

    def evaluate(context: AlertContext) -> str | None:
        spec = flag_spec(context.instrument, flag)
        if flag not in context.result.flags or spec is None:
            return None
        message = f"{spec.label}: {flag_facts(context, spec)}."
        return f"{message} {advice}" if advice else message

    return AlertRule(name=name, title="", severity=severity, evaluate=evaluate, instruments=(instrument,), flag=flag)


def not_on_track_alert(name: str, severity: Severity, *, advice: str = "") -> AlertRule:
    """An alert rule for every instrument whose definition asks for expected change (:mod:`core.expected`): it
    fires when a score lies beyond the worse edge of the expected band (25th or 75th percentile) of clients who
    started in the same intake range, at the same session number. Silent while the range has too few episodes.
    """

    def evaluate(context: AlertContext) -> str | None:
        if context.session_number is None or context.first_scores is None:
            return None
        messages = []
        for score in expected_scores(context.instrument):
            value, intake = context.result.scores.get(score), context.first_scores.get(score)
            if value is None or intake is None:
                continue
            table = context.load_expected(score)
            curve = table.curve_for(intake) if table is not None else None
            point = curve.at(context.session_number) if curve is not None and curve.enough else None
            if table is None or curve is None or point is None or not table.is_worse(value, point):
                continue
            main = context.instrument.scoring.scores[0].name
            head = context.instrument.short_title + ("" if score == main else f" {score}")
            messages.append(
                f"{head} {_number(value)} in session {context.session_number}: outside the expected range "
                f"{_number(point.p25)} to {_number(point.p75)} (median {_number(point.median)}) of "
                f"{point.count} completed episodes with an intake of {curve.intake.text} (intake {_number(intake)})."
            )
        if not messages:
            return None
        return " ".join([*messages, advice] if advice else messages)

    return AlertRule(
        name=name,
        title="Not on track: outside the expected range of similar clients",
        severity=severity,
        evaluate=evaluate,
    )


def flag_facts(context: AlertContext, spec: FlagSpec) -> str:
    """What a clinician acts on, read from the flag's parameters, for example
    ``SRS 30.0 in session 4 (previous 37.0; cutoff 36)``: the score (or the items that tripped the flag), the
    session, the earlier value it is compared with (the first for baseline comparisons, else the previous), and
    the cutoff, drop or reliable change the parameters set.
    """
    instrument, params = context.instrument, spec.params
    head = instrument.short_title
    facts: list[str] = []
    score = params.get("score")
    if score:
        main = instrument.scoring.scores[0].name
        head += ("" if score == main else f" {score}") + f" {_number(context.result.scores.get(score))}"
        baseline = ("direction" in params or "clinical" in params) and params.get("against", "baseline") == "baseline"
        earlier = context.first_scores if baseline else context.previous_scores
        if earlier is not None and earlier.get(score) is not None:
            facts.append(f"{'first' if baseline else 'previous'} {_number(earlier[score])}")
    elif params.get("items") and "op" in params and "value" in params:
        head += " " + ", ".join(_tripped_items(context, params))
    if context.session_number is not None:
        head += f" in session {context.session_number}"
    if "value" in params:
        facts.append(f"cutoff {_number(params['value'])}")
    if isinstance(params.get("clinical"), Mapping) and "value" in params["clinical"]:
        facts.append(f"cutoff {_number(params['clinical']['value'])}")
    if "drop" in params:
        facts.append(f"drop of {_number(params['drop'])} or more")
    amount = reliable_change_amount(params)
    if amount is not None:
        facts.append(f"reliable change {_number(amount)}")
    return head + (f" ({'; '.join(facts)})" if facts else "")


def _tripped_items(context: AlertContext, params: Mapping[str, Any]) -> list[str]:
    compare, limit = COMPARISONS[params["op"]], to_decimal(params["value"])
    tripped = []
    for item_id in params["items"]:
        value = context.answers.get(item_id)
        number = to_decimal(value)
        if number is not None and compare(number, limit):
            label = context.instrument.item(item_id).label_for(value)
            tripped.append(
                f"item {_item_number(context.instrument, item_id)} answered {value}" + (f" ({label})" if label else "")
            )
    return tripped


def _item_number(instrument: Instrument, item_id: str) -> str:
    """The item's number as printed on the form (its position, from 1), as clinicians say "item 9"."""
    ids = [item.id for item in instrument.items]
    return str(ids.index(item_id) + 1) if item_id in ids else item_id


def _number(value: Any) -> str:
    """A score or parameter as a clinician reads it: 30.0 stays 30.0, 36 stays 36, a computed 10.7337... is 10.73."""
    number = to_decimal(value)
    if number is None:
        return "not scorable"
    if number.as_tuple().exponent < -2:  # type: ignore[operator]
        number = number.quantize(Decimal("0.01"))
    return str(number)


def evaluate_alerts(rules: Mapping[str, AlertRule], context: AlertContext) -> list[Alert]:
    """Every alert that the context's result raises, in rule-name order."""
    alerts = []
    for name in sorted(rules):
        rule = rules[name]
        if rule.applies_to(context.result.instrument):
            message = rule.evaluate(context)
            if message:
                alerts.append(Alert(rule=name, severity=rule.severity, message=message))
    return alerts


def _earlier_scores_statement(in_episode: bool) -> sa.Select[Any]:
    query = (
        sa.select(Score.values)
        .join(Response, Response.id == Score.response_id)
        .where(
            Response.client_id == sa.bindparam("client_id"),
            Response.instrument_id == sa.bindparam("instrument_id"),
            Response.submitted_at <= sa.bindparam("submitted_at"),
        )
        .order_by(Response.submitted_at, Response.id)
    )
    if in_episode:
        query = query.where(Response.episode_id == sa.bindparam("episode_id"))
    return query


# built once (constructing a statement cost more than running it on SQLite); run in a submission's transaction, or
# by itself (core.db.DirectStatement) when the submission reads what is committed before its transaction begins
_EARLIER_SCORES = {in_episode: DirectStatement(_earlier_scores_statement(in_episode)) for in_episode in (True, False)}


def earlier_scores_loader(
    reader: sa.Connection | sa.Engine, response: Mapping[str, Any]
) -> Callable[[], EarlierScores]:
    """A loader for :attr:`AlertContext.load_earlier`: the stored scores of the client's administrations of the
    same instrument before ``response`` (in its episode, when it has one), oldest first. Queries only when called.

    ``response`` holds the new response's ``client_id``, ``instrument_id``, ``submitted_at`` and ``episode_id``;
    it is not stored yet (alerts are worked out before the submission writes, so they can go in with it).
    ``reader`` is the submission's own connection (the query runs in its transaction, if it has one), or its
    engine: then the query reads what is committed, outside any transaction (``core.responses.store_response``).
    """

    def load() -> EarlierScores:
        params = {
            "client_id": response["client_id"],
            "instrument_id": response["instrument_id"],
            "submitted_at": response["submitted_at"],
            "episode_id": response["episode_id"],
        }
        rows = _EARLIER_SCORES[response["episode_id"] is not None].all(reader, params)
        return [decimal_scores(values) for (values,) in rows]

    return load
