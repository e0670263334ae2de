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


# -- the quick check: "valid" without jsonschema, never where jsonschema finds an error ------------------

TRICKY_VALUES = [
    *WRONG_VALUES,
    -0.0,
    0.0,
    3.0,
    7.3,
    0.30000000000000004,
    9.95,
    10.0,
    10.1,
    1e308,
    -1e308,
    10**30,
    float("nan"),
    float("inf"),
    "0",
    "a" * 5,
    [1],
    (1,),
    {"value": 1},
]


def _tricky_answers(instrument, rng: random.Random) -> dict[str, object]:
    answers: dict[str, object] = {}
    odd = rng.choice([0.0, 0.1, 0.5, 1.0])  # how often an item gets something other than a valid answer
    for item in instrument.items:
        roll = rng.random()
        if roll >= odd:
            valid = [option.value for option in item.options] or [round(rng.uniform(0, 10), 1), None]
            answers[item.id] = rng.choice(valid)
            continue
        roll = rng.random()
        if roll < 0.04:
            continue  # missing
        if roll < 0.55 and item.options:
            answers[item.id] = rng.choice(item.options).value
        elif roll < 0.75:
            answers[item.id] = rng.choice([round(rng.uniform(-0.5, 10.5), rng.choice([0, 1, 1, 2])), rng.randint(0, 5)])
        else:
            answers[item.id] = rng.choice(TRICKY_VALUES)
    if rng.random() < 0.05:
        answers["not_an_item"] = 1
    return answers


def _plain(answers: dict[str, object]) -> bool:
    """Every value is one the quick check decides itself (a finite number, text, a boolean or null)."""
    import math

    return all(
        value is None or type(value) in (bool, str, int) or (type(value) is float and math.isfinite(value))
        for value in answers.values()
    )


@pytest.mark.parametrize("instrument_id", ["phq9", "gad7", "core10", "wai-sr", "ors", "srs"])
def test_the_quick_check_says_valid_exactly_where_jsonschema_does(engine, instrument_id):
    instrument = engine.instruments.get(instrument_id)
    quick = instrument.quick_check
    assert quick is not None  # every built-in definition uses only keywords the quick check knows
    rng = random.Random(f"quick-{instrument_id}")
    seen = {True: 0, False: 0}
    for _ in range(3000):
        answers = _tricky_answers(instrument, rng)
        valid = instrument.validator.is_valid(answers)
        said = quick(answers)
        assert not said or valid, answers  # never "valid" where jsonschema finds an error
        if _plain(answers):
            assert said == valid, answers  # and on plain values, the same verdict
        seen[valid] += 1
    assert seen[True] > 100 and seen[False] > 100, seen


KEYWORD_SCHEMA = {
    "type": "object",
    "required": ["count", "text", "flag"],
    "properties": {
        "count": {"type": "integer", "exclusiveMinimum": 0, "exclusiveMaximum": 5, "x-note": "annotation"},
        "text": {"type": ["string", "null"], "minLength": 2, "maxLength": 4},
        "flag": {"enum": [False, 1, "1", None, 2.5]},  # 0 is not False, True is not 1
        "level": {"type": "number", "minimum": -1.5, "maximum": 1.5, "multipleOf": 0.5},
        "anything": {"description": "no constraint at all"},
    },
}
KEYWORD_VALID = {
    "count": [1, 2, 2.0, 4],
    "text": [None, "ab", "abc", "abcd"],
    "flag": [False, 1, 1.0, "1", None, 2.5],
    "level": [-1.5, -1, 0, 0.5, 1.5],
}
KEYWORD_VALUES = [None, True, False, 0, 1, 1.0, 2, 2.0, 2.5, 4, 5, -1.5, -1, 1.5, 0.25, "", "1", "ab", "abcd", "abcde"]


@pytest.mark.parametrize("closed", [True, False])
def test_the_quick_check_follows_jsonschema_on_every_keyword_it_knows(closed):
    from core.schemas import answer_validator, quick_answer_check

    schema = {**KEYWORD_SCHEMA, **({"additionalProperties": False} if closed else {})}
    validator, quick = answer_validator(schema), quick_answer_check(schema)
    assert quick is not None
    rng = random.Random("keywords")
    names = [*schema["properties"], "extra"]
    agreed = {True: 0, False: 0}
    for _ in range(4000):
        odd = rng.choice([0.0, 0.1, 0.5, 1.0])
        answers = {
            name: rng.choice(KEYWORD_VALUES if rng.random() < odd else KEYWORD_VALID.get(name, KEYWORD_VALUES))
            for name in names
            if rng.random() < (0.2 if name == "extra" else 0.97)
        }
        valid = validator.is_valid(answers)
        assert quick(answers) == valid, answers
        agreed[valid] += 1
    assert agreed[True] > 50 and agreed[False] > 50, agreed


@pytest.mark.parametrize(
    "change",
    [
        {"allOf": [{"required": ["a"]}]},
        {"additionalProperties": {"type": "integer"}},
        {"patternProperties": {"^x": {"type": "integer"}}},
        {"minProperties": 1},
        {"properties": {"a": {"type": "string", "pattern": "^a"}}},
        {"properties": {"a": {"type": "string", "format": "date"}}},
        {"properties": {"a": {"$ref": "#/$defs/a"}}, "$defs": {"a": {"$ref": "#/$defs/b"}, "b": {"type": "string"}}},
        {"properties": {"a": {"type": "object"}}},
        {"properties": {"a": True}},
        {"type": "array"},
    ],
)
def test_the_quick_check_is_left_out_where_a_definition_uses_more(change):
    from core.schemas import quick_answer_check

    schema = {"type": "object", "required": ["a"], "properties": {"a": {"type": "integer"}}} | change
    assert quick_answer_check(schema) is None


def test_valid_answers_skip_jsonschema_and_invalid_ones_are_worded_by_it(engine, monkeypatch):
    phq9 = engine.instruments.get("phq9")
    compiled = phq9.validator
    asked = []

    class Watching:
        def iter_errors(self, answers):
            asked.append(answers)
            return compiled.iter_errors(answers)

    monkeypatch.setitem(phq9.__dict__, "validator", Watching())
    validate_answers(phq9, {f"phq9_{n}": 1 for n in range(1, 10)})
    assert asked == []
    with pytest.raises(ResponseValidationError) as refused:
        validate_answers(phq9, {f"phq9_{n}": 1 for n in range(1, 10)} | {"phq9_2": True})
    assert len(asked) == 1
    assert refused.value.by_item() == {"phq9_2": "must be a whole number (got True)"}
