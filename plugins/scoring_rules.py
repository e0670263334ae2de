"""Built-in scoring rules: sums, means, reverse keying, proration, thresholds and change over time.

Definitions name these rules in ``x-scoring``; ``docs/instruments.md`` describes each one's
parameters. Change rules compare with the client's earlier administrations (oldest first).
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from core import COMPARISONS, ScoringContext, ScoringRule, hookimpl, reliable_change_threshold, round_half_up

_ITEMS = {"type": "array", "items": {"type": "string"}, "minItems": 1, "uniqueItems": True}
_SCORE = {"type": "string"}
_OP = {"enum": sorted(COMPARISONS)}
_THRESHOLD_OR_RELIABILITY = {
    "oneOf": [
        {"required": ["threshold"], "not": {"anyOf": [{"required": ["sd"]}, {"required": ["reliability"]}]}},
        {"required": ["sd", "reliability"], "not": {"required": ["threshold"]}},
    ]
}
_CHANGE_PROPERTIES = {
    "score": _SCORE,
    "higher_is_better": {"type": "boolean"},
    "threshold": {"type": "number", "exclusiveMinimum": 0},
    "sd": {"type": "number", "exclusiveMinimum": 0},
    "reliability": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
    "z": {"type": "number", "exclusiveMinimum": 0},
}


def _dec(value: Any) -> Decimal:
    return Decimal(str(value))


def _keyed_values(params: Mapping[str, Any], ctx: ScoringContext) -> list[Decimal | None]:
    """The answers to ``items``, with ``reverse`` items keyed as (lowest + highest - answer)."""
    reverse = set(params.get("reverse", ()))
    values = []
    for item_id in params["items"]:
        value = ctx.answers.get(item_id)
        if value is not None and item_id in reverse:
            item = ctx.instrument.item(item_id)
            value = item.lowest + item.highest - value
        values.append(value)
    return values


def _prorated_mean(params: Mapping[str, Any], ctx: ScoringContext) -> Decimal | None:
    values = _keyed_values(params, ctx)
    answered = [v for v in values if v is not None]
    missing = len(values) - len(answered)
    if not answered or missing > params.get("max_missing", 0):
        return None
    if missing:
        ctx.raise_flag("prorated")
    return sum(answered, Decimal(0)) / len(answered)


def _sum(params: Mapping[str, Any], ctx: ScoringContext) -> Decimal | None:
    values = _keyed_values(params, ctx)
    if all(v is not None for v in values):
        return sum(values, Decimal(0))
    mean = _prorated_mean(params, ctx)
    if mean is None:
        return None
    return round_half_up(mean * len(values), params.get("decimals", 1))


def _mean(params: Mapping[str, Any], ctx: ScoringContext) -> Decimal | None:
    mean = _prorated_mean(params, ctx)
    return None if mean is None else round_half_up(mean, params.get("decimals", 2))


def _against(params: Mapping[str, Any], ctx: ScoringContext, default: str = "baseline") -> Decimal | None:
    earlier = ctx.earlier_scores(params["score"])
    if not earlier:
        return None
    return earlier[0] if params.get("against", default) == "baseline" else earlier[-1]


def _change(params: Mapping[str, Any], ctx: ScoringContext, against: str) -> Decimal | None:
    current = ctx.scores.get(params["score"])
    before = _against({**params, "against": against}, ctx)
    return None if current is None or before is None else current - before


def _improvement(params: Mapping[str, Any], ctx: ScoringContext, against: str) -> Decimal | None:
    """Change in the direction of improvement (positive = better), or None."""
    change = _change(params, ctx, against)
    if change is None:
        return None
    return change if params.get("higher_is_better", True) else -change


def _is_reliable(params: Mapping[str, Any], amount: Decimal) -> bool:
    """A published fixed threshold counts inclusively; a computed one needs |change| / S_diff > z."""
    if "threshold" in params:
        return amount >= _dec(params["threshold"])
    return amount > reliable_change_threshold(params["sd"], params["reliability"], params.get("z", "1.96"))


def _reliable_change(params: Mapping[str, Any], ctx: ScoringContext) -> bool:
    gain = _improvement(params, ctx, params.get("against", "baseline"))
    if gain is None:
        return False
    amount = gain if params["direction"] == "improvement" else -gain
    return amount > 0 and _is_reliable(params, amount)


def _clinically_significant(params: Mapping[str, Any], ctx: ScoringContext) -> bool:
    """Reliable improvement from the baseline that also leaves the clinical range (Jacobson & Truax)."""
    gain = _improvement(params, ctx, "baseline")
    baseline = _against(params, ctx, "baseline")
    current = ctx.scores.get(params["score"])
    if gain is None or baseline is None or current is None or gain <= 0:
        return False
    in_range = COMPARISONS[params["clinical"]["op"]]
    cutoff = _dec(params["clinical"]["value"])
    return _is_reliable(params, gain) and in_range(baseline, cutoff) and not in_range(current, cutoff)


def _threshold(params: Mapping[str, Any], ctx: ScoringContext) -> bool:
    value = ctx.scores.get(params["score"])
    return value is not None and COMPARISONS[params["op"]](value, _dec(params["value"]))


def _item_threshold(params: Mapping[str, Any], ctx: ScoringContext) -> bool:
    compare = COMPARISONS[params["op"]]
    limit = _dec(params["value"])
    return any(ctx.answers.get(i) is not None and compare(ctx.answers[i], limit) for i in params["items"])


def _drop_from_previous(params: Mapping[str, Any], ctx: ScoringContext) -> bool:
    gain = _improvement(params, ctx, "previous")
    return gain is not None and -gain >= _dec(params["drop"])


def _prorates(params: Mapping[str, Any]) -> tuple[str, ...]:
    return ("prorated",) if params.get("max_missing", 0) > 0 else ()


_ITEM_AGGREGATE = {
    "type": "object",
    "required": ["items"],
    "properties": {
        "items": _ITEMS,
        "reverse": _ITEMS,
        "max_missing": {"type": "integer", "minimum": 0},
        "decimals": {"type": "integer", "minimum": 0, "maximum": 6},
    },
    "additionalProperties": False,
}

BUILTIN_RULES = (
    ScoringRule(
        name="sum",
        kind="score",
        compute=_sum,
        parameters=_ITEM_AGGREGATE,
        description="Sum of the items (reverse-keyed where listed). With up to max_missing items "
        "unanswered, the mean of the answered items times the item count, rounded to decimals (default 1) "
        "and flagged 'prorated'; with more missing, null.",
        emits_flags=_prorates,
    ),
    ScoringRule(
        name="mean",
        kind="score",
        compute=_mean,
        parameters=_ITEM_AGGREGATE,
        description="Mean of the items (reverse-keyed where listed), rounded half up to decimals (default 2); "
        "null when more than max_missing (default 0) items are unanswered.",
        emits_flags=_prorates,
    ),
    ScoringRule(
        name="change_from_baseline",
        kind="score",
        compute=lambda params, ctx: _change(params, ctx, "baseline"),
        parameters={
            "type": "object",
            "required": ["score"],
            "properties": {"score": _SCORE},
            "additionalProperties": False,
        },
        description="This score minus the same score at the client's first administration; null without one.",
        uses_history=True,
    ),
    ScoringRule(
        name="change_from_previous",
        kind="score",
        compute=lambda params, ctx: _change(params, ctx, "previous"),
        parameters={
            "type": "object",
            "required": ["score"],
            "properties": {"score": _SCORE},
            "additionalProperties": False,
        },
        description="This score minus the same score at the client's previous administration; null without one.",
        uses_history=True,
    ),
    ScoringRule(
        name="threshold",
        kind="flag",
        compute=_threshold,
        parameters={
            "type": "object",
            "required": ["score", "op", "value"],
            "properties": {"score": _SCORE, "op": _OP, "value": {"type": "number"}},
            "additionalProperties": False,
        },
        description="Raised when the score compares to value with op (>=, >, <=, <, ==).",
    ),
    ScoringRule(
        name="item_threshold",
        kind="flag",
        compute=_item_threshold,
        parameters={
            "type": "object",
            "required": ["items", "op", "value"],
            "properties": {"items": _ITEMS, "op": _OP, "value": {"type": "number"}},
            "additionalProperties": False,
        },
        description="Raised when any listed item's raw answer compares to value with op (a risk item, say).",
    ),
    ScoringRule(
        name="drop_from_previous",
        kind="flag",
        compute=_drop_from_previous,
        parameters={
            "type": "object",
            "required": ["score", "drop"],
            "properties": {
                "score": _SCORE,
                "drop": {"type": "number", "exclusiveMinimum": 0},
                "higher_is_better": {"type": "boolean"},
            },
            "additionalProperties": False,
        },
        description="Raised when the score is worse than at the previous administration by at least drop.",
        uses_history=True,
    ),
    ScoringRule(
        name="reliable_change",
        kind="flag",
        compute=_reliable_change,
        parameters={
            "type": "object",
            "required": ["score", "direction"],
            "properties": {
                **_CHANGE_PROPERTIES,
                "direction": {"enum": ["improvement", "deterioration"]},
                "against": {"enum": ["baseline", "previous"]},
            },
            "additionalProperties": False,
            **_THRESHOLD_OR_RELIABILITY,
        },
        description="Raised when the change against the baseline (or previous) administration in the given "
        "direction reaches a published threshold (inclusive), or exceeds z (1.96) x S_diff computed from sd "
        "and reliability (Jacobson & Truax 1991).",
        uses_history=True,
    ),
    ScoringRule(
        name="clinically_significant_change",
        kind="flag",
        compute=_clinically_significant,
        parameters={
            "type": "object",
            "required": ["score", "clinical"],
            "properties": {
                **_CHANGE_PROPERTIES,
                "clinical": {
                    "type": "object",
                    "required": ["op", "value"],
                    "properties": {"op": _OP, "value": {"type": "number"}},
                    "additionalProperties": False,
                },
            },
            "additionalProperties": False,
            **_THRESHOLD_OR_RELIABILITY,
        },
        description="Raised on reliable improvement against the baseline when the baseline was in the clinical "
        "range (score op value) and the current score is not.",
        uses_history=True,
    ),
)


@hookimpl
def register_scoring_rules() -> list[ScoringRule]:
    return list(BUILTIN_RULES)
