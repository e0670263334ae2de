"""Check one response's answers against its instrument before anything is scored or stored."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from core.instruments import Instrument

_TYPE_WORDS = {
    "integer": "a whole number",
    "number": "a number",
    "string": "text",
    "boolean": "yes or no (true/false)",
    "array": "a list",
    "null": "null (unanswered)",
}


@dataclass(frozen=True)
class AnswerError:
    """One problem with one item: ``item`` is None when the response as a whole is malformed."""

    item: str | None
    reason: str

    def __str__(self) -> str:
        return f"{self.item}: {self.reason}" if self.item else self.reason


class ResponseValidationError(Exception):
    """The answers do not fit the instrument; ``errors`` lists each item and why."""

    def __init__(self, instrument_id: str, errors: list[AnswerError], answers: Any = None) -> None:
        super().__init__("; ".join(str(e) for e in errors))
        self.instrument_id = instrument_id
        self.errors = errors
        self.answers = answers

    def by_item(self) -> dict[str | None, str]:
        messages: dict[str | None, str] = {}
        for error in self.errors:
            messages.setdefault(error.item, error.reason)
        return messages


def validate_answers(instrument: Instrument, answers: Any) -> None:
    """Raise :class:`ResponseValidationError` unless ``answers`` is valid for ``instrument``.

    Every item must be present; ``null`` marks an unanswered item.
    """
    if not isinstance(answers, Mapping):
        raise ResponseValidationError(
            instrument.id, [AnswerError(None, "answers must be a JSON object of item id to value")], answers
        )
    quick = instrument.quick_check
    if quick is not None and quick(answers):
        return  # surely valid: jsonschema would find nothing (it words the errors when there are some)
    errors = [_describe(instrument, error) for error in instrument.validator.iter_errors(answers)]
    if errors:
        errors.sort(key=lambda e: _item_order(instrument, e.item))
        raise ResponseValidationError(instrument.id, errors, answers)


def _item_order(instrument: Instrument, item_id: str | None) -> int:
    ids = [item.id for item in instrument.items]
    return ids.index(item_id) if item_id in ids else len(ids)


def _describe(instrument: Instrument, error: Any) -> AnswerError:
    """Turn a jsonschema error into a sentence a person can act on."""
    keyword = error.validator
    got = f" (got {error.instance!r})"
    if not error.absolute_path:
        if keyword == "required":
            item = error.message.split("'")[1]
            return AnswerError(item, "is missing: send every item, with null for an unanswered one")
        if keyword == "additionalProperties":
            extra = sorted(set(error.instance) - set(error.schema.get("properties", {})))
            return AnswerError(extra[0] if extra else None, f"is not an item of {instrument.id}")
        return AnswerError(None, error.message)
    item = str(error.absolute_path[0])
    schema = error.schema
    if keyword == "enum":
        allowed = ", ".join(str(v) for v in error.validator_value if v is not None)
        return AnswerError(item, f"must be one of {allowed}{got}")
    if keyword == "type":
        types = [error.validator_value] if isinstance(error.validator_value, str) else error.validator_value
        words = " or ".join(_TYPE_WORDS.get(t, t) for t in types if t != "null")
        return AnswerError(item, f"must be {words}{got}")
    if keyword in ("minimum", "exclusiveMinimum"):
        return AnswerError(item, f"must be at least {schema[keyword]}{got}")
    if keyword in ("maximum", "exclusiveMaximum"):
        return AnswerError(item, f"must be at most {schema[keyword]}{got}")
    if keyword == "multipleOf":
        return AnswerError(item, f"must be in steps of {schema['multipleOf']}{got}")
    if keyword == "maxLength":
        return AnswerError(item, f"must be at most {schema['maxLength']} characters long")
    return AnswerError(item, error.message)
