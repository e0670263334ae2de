"""The scoring engine: run an instrument's named scores, band and flags over one response.

Numbers are :class:`~decimal.Decimal` throughout, so a visual analogue change of exactly
5.0 compares as 5.0. Raw answers are never changed; scores are derived and can be
recomputed whenever a rule is corrected.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from core.instruments import Instrument

Number = Decimal
Answers = Mapping[str, Any]

#: The comparison operators definitions may name (``"op": ">="``), each mapped to its function.
COMPARISONS: dict[str, Callable[[Any, Any], bool]] = {
    ">=": operator.ge,
    ">": operator.gt,
    "<=": operator.le,
    "<": operator.lt,
    "==": operator.eq,
}

#: The flag every result carries when a score that depends only on the answers could not be computed.
NOT_SCORABLE = "not_scorable"


@dataclass(frozen=True)
class ScoringRule:
    """A named computation that instrument definitions refer to from their ``x-scoring`` block.

    ``kind`` is ``"score"`` (``compute`` returns a number or ``None``) or ``"flag"``
    (``compute`` returns whether the flag is raised). ``parameters`` is the JSON Schema of
    the parameters a definition passes to the rule; it is checked when the definition loads.
    Parameters named ``item``/``items``/``reverse`` must name items and ``score`` must name an
    earlier score. ``emits_flags(params)`` lists flags the rule may raise itself (``prorated``).
    """

    name: str
    kind: Literal["score", "flag"]
    compute: Callable[[Mapping[str, Any], ScoringContext], Any]
    parameters: Mapping[str, Any]
    description: str
    uses_history: bool = False
    emits_flags: Callable[[Mapping[str, Any]], tuple[str, ...]] = lambda params: ()


@dataclass
class ScoringContext:
    """What a rule sees: the answers, the scores computed so far, and earlier administrations."""

    instrument: Instrument
    answers: Mapping[str, Number | None]
    scores: dict[str, Number | None] = field(default_factory=dict)
    history: Sequence[Mapping[str, Number | None]] = ()
    flags: set[str] = field(default_factory=set)

    def raise_flag(self, flag_id: str) -> None:
        """Raise a flag from inside a score rule (``prorated``, for example)."""
        self.flags.add(flag_id)

    def earlier_scores(self, score: str) -> list[Number]:
        """The given score in each earlier administration where it could be computed, oldest first."""
        return [entry[score] for entry in self.history if entry.get(score) is not None]


@dataclass(frozen=True)
class ScoreResult:
    """The outcome of scoring one response: plain values that every export and page reads."""

    instrument: str
    version: str
    complete: bool
    scores: Mapping[str, Number | None]
    band: str | None
    flags: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict; scores become ints when whole, floats otherwise."""
        return {
            "instrument": self.instrument,
            "version": self.version,
            "complete": self.complete,
            "scores": {name: decimal_to_json(value) for name, value in self.scores.items()},
            "band": self.band,
            "flags": list(self.flags),
        }


def decimal_to_json(value: Number | None) -> int | float | None:
    """Render a score for JSON: ``12`` stays ``12``, ``24.5`` and ``36.0`` stay decimals."""
    if value is None:
        return None
    if value.as_tuple().exponent >= 0:
        return int(value)
    return float(value)


def decimal_scores(stored: Mapping[str, Any] | None) -> dict[str, Number | None]:
    """Scores as stored (decimal strings, so 5.0 stays 5.0) back as exact Decimals."""
    return {name: None if value is None else Decimal(value) for name, value in (stored or {}).items()}


def to_decimal(value: Any) -> Number | None:
    """Turn a validated JSON answer into an exact Decimal (``7.3`` becomes ``Decimal('7.3')``)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return Decimal(int(value))
    if isinstance(value, (int, Decimal)):
        return Decimal(value)
    if isinstance(value, float):
        return Decimal(repr(value))
    return None  # text and lists are not scored


def round_half_up(value: Number, decimals: int) -> Number:
    """Round half up to ``decimals`` places, the way the manuals round (2.25 -> 2.3, not 2.2)."""
    return value.quantize(Decimal(1).scaleb(-decimals), rounding=ROUND_HALF_UP)


def numeric_answers(instrument: Instrument, answers: Answers) -> dict[str, Number | None]:
    """The scoreable answers of a response as Decimals; unanswered items are ``None``."""
    return {item.id: to_decimal(answers.get(item.id)) for item in instrument.items}


def score_response(
    instrument: Instrument,
    answers: Answers,
    history: Sequence[Answers] = (),
) -> ScoreResult:
    """Score one response; ``history`` holds earlier answers of the same client, oldest first.

    The answers must already be valid for the instrument (see :mod:`core.validation`).
    """
    earlier = (
        [_item_scores(instrument, numeric_answers(instrument, entry)) for entry in history]
        if instrument.scoring.uses_history
        else []
    )
    ctx = ScoringContext(instrument, numeric_answers(instrument, answers), history=earlier)
    for spec in instrument.scoring.scores:
        ctx.scores[spec.name] = _compute_score(spec, ctx)
    not_scorable = any(
        ctx.scores[spec.name] is None for spec in instrument.scoring.scores if not spec.rule.uses_history
    )
    for spec in instrument.scoring.flags:
        if spec.rule.compute(spec.params, ctx):
            ctx.flags.add(spec.id)
    if not_scorable:
        ctx.flags.add(NOT_SCORABLE)
    band = instrument.scoring.band_for(ctx.scores)
    complete = all(answers.get(item.id) is not None for item in instrument.items if not item.optional)
    return ScoreResult(
        instrument=instrument.id,
        version=instrument.version,
        complete=complete,
        scores=dict(ctx.scores),
        band=band,
        flags=tuple(flag for flag in instrument.scoring.flag_ids if flag in ctx.flags),
    )


def _item_scores(instrument: Instrument, answers: Mapping[str, Number | None]) -> dict[str, Number | None]:
    """Scores of an earlier administration that depend on its own answers only."""
    ctx = ScoringContext(instrument, answers)
    for spec in instrument.scoring.scores:
        if not spec.rule.uses_history:
            ctx.scores[spec.name] = _compute_score(spec, ctx)
    return ctx.scores


def _compute_score(spec: Any, ctx: ScoringContext) -> Number | None:
    """Run a score rule; plugin rules may return ints or floats, which become exact Decimals."""
    return to_decimal(spec.rule.compute(spec.params, ctx))
