"""The answer validator: items' shared definitions inlined, with the same verdicts and messages as jsonschema's $ref."""

from __future__ import annotations

import random

import pytest

from core import ResponseValidationError, validate_answers
from core.schemas import _NO_REMOTE, _AnswerValidator, inline_item_refs

WRONG_VALUES = [None, -1, 0, 1, 2, 3, 4, 7, 10, 10.05, 2.5, 1.0, True, False, "1", "", [], {}, 99]


def _random_answers(instrument, rng: random.Random) -> dict[str, object]:
    answers: dict[str, object] = {}
    for item in instrument.items:
        if rng.random() < 0.08:
            continue  # missing
        if item.options and rng.random() < 0.6:
            answers[item.id] = rng.choice(item.options).value
        else:
            answers[item.id] = rng.choice(WRONG_VALUES)
    if rng.random() < 0.1:
        answers["not_an_item"] = 1
    return answers


def _verdict(validator, answers) -> list[tuple[list, str, object, str]]:
    """Everything `core.validation._describe` reads from an error, in the order jsonschema reports them
    (`ResponseValidationError.by_item` keeps the first error of each item)."""
    return [
        (list(e.absolute_path), e.validator, repr(e.validator_value), e.message) for e in validator.iter_errors(answers)
    ]


@pytest.mark.parametrize("instrument_id", ["phq9", "gad7", "core10", "wai-sr", "ors", "srs"])
def test_inlined_items_give_the_verdicts_and_messages_of_the_referencing_schema(engine, instrument_id):
    instrument = engine.instruments.get(instrument_id)
    referencing = _AnswerValidator(instrument.document, registry=_NO_REMOTE)
    inlined = _AnswerValidator(inline_item_refs(instrument.document), registry=_NO_REMOTE)
    assert any("$ref" in item for item in instrument.document["properties"].values())
    assert not any("$ref" in item for item in inline_item_refs(instrument.document)["properties"].values())
    rng = random.Random(instrument_id)
    invalid = 0
    for _ in range(600):
        answers = _random_answers(instrument, rng)
        assert _verdict(inlined, answers) == _verdict(referencing, answers), answers
        invalid += not referencing.is_valid(answers)
    assert 100 < invalid < 600  # both kinds of response were tried


def test_the_compiled_validator_is_the_inlined_one_and_still_names_the_item(engine):
    phq9 = engine.instruments.get("phq9")
    assert "$ref" not in phq9.validator.schema["properties"]["phq9_1"]
    with pytest.raises(ResponseValidationError) as refused:
        validate_answers(phq9, {f"phq9_{n}": 0 for n in range(1, 10)} | {"phq9_4": 5})
    assert refused.value.by_item() == {"phq9_4": "must be one of 0, 1, 2, 3 (got 5)"}


def test_only_a_plain_definition_beside_nothing_but_annotations_is_inlined():
    document = {
        "type": "object",
        "$defs": {
            "nested": {"anyOf": [{"$ref": "#/$defs/plain"}]},
            "plain": {"type": "integer", "enum": [0, 1, 2]},
            "closed": {"type": "object", "additionalProperties": False},
        },
        "properties": {
            "a": {"$ref": "#/$defs/nested"},
            "b": {"$ref": "#/$defs/plain", "title": "Own title", "x-text": "Kept", "description": "Also kept"},
            "c": {"$ref": "#/$defs/plain", "minimum": 1},  # validates beside the reference: errors could reorder
            "d": {"$ref": "#/$defs/closed", "properties": {"p": {}}},  # would change what additionalProperties allows
            "e": {"$ref": "#/$defs/plain", "$id": "urn:elsewhere"},
            "f": {"$ref": "#/$defs/missing"},
        },
    }
    items = inline_item_refs(document)["properties"]
    assert items["a"] == {"$ref": "#/$defs/nested"}
    assert items["b"] == {
        "type": "integer",
        "enum": [0, 1, 2],
        "title": "Own title",
        "x-text": "Kept",
        "description": "Also kept",
    }
    for name in "cdef":
        assert items[name] == document["properties"][name]
