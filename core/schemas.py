"""JSON Schema plumbing: the shipped meta-schema and the validator used for answers."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from decimal import Decimal
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import referencing
import referencing.exceptions
from jsonschema import validators
from jsonschema.exceptions import ValidationError

# instruments/ is data, shipped next to core/ both in a checkout and in an installed wheel.
INSTRUMENTS_DIR = Path(__file__).resolve().parent.parent / "instruments"
META_SCHEMA_PATH = INSTRUMENTS_DIR / "meta-schema.json"


@cache
def load_meta_schema() -> dict[str, Any]:
    """The meta-schema that every instrument definition must satisfy."""
    return json.loads(META_SCHEMA_PATH.read_text(encoding="utf-8"))


def _exact_multiple_of(validator: Any, divisor: Any, instance: Any, schema: Mapping[str, Any]) -> Any:
    """``multipleOf`` on exact decimals: 7.3 is a multiple of 0.1 (floats say it is not)."""
    if not validator.is_type(instance, "number"):
        return
    if (Decimal(str(instance)) % Decimal(str(divisor))) != 0:
        yield ValidationError(f"{instance!r} is not a multiple of {divisor}")


def _refuse_retrieval(uri: str) -> referencing.Resource:
    raise referencing.exceptions.NoSuchResource(ref=uri)


_AnswerValidator = validators.extend(jsonschema.Draft202012Validator, {"multipleOf": _exact_multiple_of})
# An empty registry that refuses to fetch: a definition can never make us reach the network.
_NO_REMOTE = referencing.Registry(retrieve=_refuse_retrieval)


def answer_validator(document: Mapping[str, Any]) -> jsonschema.protocols.Validator:
    """Compile the validator for one instrument definition's answers."""
    return _AnswerValidator(inline_item_refs(document), registry=_NO_REMOTE)


_REFERRING_KEYWORDS = ('"$ref"', '"$dynamicRef"', '"$id"', '"$anchor"', '"$dynamicAnchor"')


def inline_item_refs(document: Mapping[str, Any]) -> Mapping[str, Any]:
    """The definition with each item's ``{"$ref": "#/$defs/NAME"}`` replaced by that definition's keywords.

    Items share their answer options through ``$defs``; following the ``$ref`` costs jsonschema a
    registry lookup per item and response, more than checking the answer itself. Inlining is done only
    where it cannot change a verdict, a message or the order of the errors: the target is a plain local
    definition (no reference or identifier anywhere inside it), and everything else on the item is an
    annotation (``title``, ``description``, ``x-...`` and the like), which validates nothing and whose
    meaning does not depend on its neighbours. Any other ``$ref`` stays for jsonschema to follow.
    """
    items = document.get("properties")
    definitions = document.get("$defs")
    if not isinstance(items, Mapping) or not isinstance(definitions, Mapping):
        return document
    inlined = {}
    for item_id, item in items.items():
        target = _plain_local_definition(item, definitions)
        if target is not None and all(_is_annotation(key) for key in item if key != "$ref"):
            item = {**target, **{key: value for key, value in item.items() if key != "$ref"}}
        inlined[item_id] = item
    return {**document, "properties": inlined}


_ANNOTATIONS = frozenset(
    {"title", "description", "default", "examples", "deprecated", "readOnly", "writeOnly", "$comment"}
)


def _is_annotation(keyword: str) -> bool:
    return keyword in _ANNOTATIONS or keyword.startswith("x-")


def _plain_local_definition(item: Any, definitions: Mapping[str, Any]) -> Mapping[str, Any] | None:
    reference = item.get("$ref") if isinstance(item, Mapping) else None
    if not isinstance(reference, str) or not reference.startswith("#/$defs/"):
        return None
    target = definitions.get(reference.removeprefix("#/$defs/"))
    if not isinstance(target, Mapping):
        return None  # a JSON pointer with escapes or a deeper path: left to jsonschema
    text = json.dumps(target)
    return None if any(keyword in text for keyword in _REFERRING_KEYWORDS) else target


# ---------------------------------------------------------------------------
# The quick check: a verdict of "valid" without jsonschema, where it is certain
# ---------------------------------------------------------------------------

QuickCheck = Callable[[Any], bool]

_DOCUMENT_KEYWORDS = frozenset({"$schema", "$id", "$defs", "type", "required", "additionalProperties", "properties"})
_ITEM_TYPES = frozenset({"integer", "number", "string", "boolean", "null"})
_BOUNDS = {
    "minimum": lambda value, bound: value >= bound,
    "maximum": lambda value, bound: value <= bound,
    "exclusiveMinimum": lambda value, bound: value > bound,
    "exclusiveMaximum": lambda value, bound: value < bound,
}


def quick_answer_check(document: Mapping[str, Any]) -> QuickCheck | None:
    """A function that says True only for answers the compiled validator surely accepts; None if none can be made.

    Answers are checked on every submission, and jsonschema's general machinery (an error generator per
    keyword and item) costs more than the rest of validating and scoring. The usual response is valid, so
    this check decides "valid" directly, for the keywords instrument definitions use: an object with
    ``required`` items, ``additionalProperties: false`` and items with ``type``, ``enum``, bounds,
    ``multipleOf`` and string lengths, on plain JSON scalars. Whatever it is not sure of (another keyword
    anywhere, a ``$ref`` left in an item, a value that is not a finite number, a string, a boolean or null)
    makes it say False, and the caller asks jsonschema, which also words every error. It never says
    True where jsonschema would find an error: ``tests/test_schemas.py`` compares the two verdicts.
    """
    document = inline_item_refs(document)
    if any(not (key in _DOCUMENT_KEYWORDS or _is_annotation(key)) for key in document):
        return None
    if document.get("type") != "object" or document.get("additionalProperties", True) not in (True, False):
        return None
    required, items = document.get("required", []), document.get("properties", {})
    if not isinstance(required, list) or not all(isinstance(name, str) for name in required):
        return None
    if not isinstance(items, Mapping):
        return None
    checks = {}
    for item_id, item in items.items():
        check = _quick_item_check(item)
        if check is None:
            return None
        checks[item_id] = check
    needed = frozenset(required)
    closed = document.get("additionalProperties", True) is False

    def check(answers: Any) -> bool:
        if type(answers) is not dict or not needed.issubset(answers):
            return False
        for item_id, value in answers.items():
            item_check = checks.get(item_id)
            if item_check is None:
                if closed:
                    return False
            elif not item_check(value):
                return False
        return True

    return check


def _quick_item_check(item: Any) -> Callable[[Any], bool] | None:
    if not isinstance(item, Mapping):
        return None
    types: frozenset[str] | None = None
    enum: list[Any] | None = None
    bounds: list[tuple[Callable[[Any, Any], bool], Any]] = []
    step: Decimal | None = None
    lengths: tuple[int, int | None] = (0, None)
    for key, value in item.items():
        if _is_annotation(key):
            continue
        if key == "type":
            names = [value] if isinstance(value, str) else value
            if not isinstance(names, list) or not names or not set(names) <= _ITEM_TYPES:
                return None
            types = frozenset(names)
        elif key == "enum":
            if not isinstance(value, list) or not all(_is_scalar(option) for option in value):
                return None
            enum = value
        elif key in _BOUNDS:
            if not _is_number(value):
                return None
            bounds.append((_BOUNDS[key], value))
        elif key == "multipleOf":
            if not _is_number(value) or value <= 0:
                return None
            step = Decimal(str(value))
        elif key in ("minLength", "maxLength"):
            if type(value) is not int or value < 0:
                return None
            lengths = (value, lengths[1]) if key == "minLength" else (lengths[0], value)
        else:
            return None

    def check(value: Any) -> bool:
        kind = _kind(value)
        if kind is None:
            return False
        if types is not None and not (
            kind in types
            or ("number" in types and kind == "integer")
            or ("integer" in types and kind == "number" and value.is_integer())
        ):
            return False
        if enum is not None and not any(_same(value, kind, option) for option in enum):
            return False
        if kind in ("integer", "number"):
            if not all(holds(value, bound) for holds, bound in bounds):
                return False
            if step is not None:
                try:
                    if Decimal(str(value)) % step != 0:
                        return False
                except ArithmeticError:  # too large for the decimal context: jsonschema's path decides
                    return False
        shortest, longest = lengths
        return kind != "string" or (len(value) >= shortest and (longest is None or len(value) <= longest))

    return check


def _kind(value: Any) -> str | None:
    """The JSON type of a plain scalar (``integer`` for ints, ``number`` for finite floats); None for the rest."""
    kind = type(value)
    if value is None:
        return "null"
    if kind is bool:
        return "boolean"
    if kind is int:
        return "integer"
    if kind is float:
        return "number" if math.isfinite(value) else None
    if kind is str:
        return "string"
    return None


def _is_number(value: Any) -> bool:
    return type(value) in (int, float) and math.isfinite(value)


def _is_scalar(value: Any) -> bool:
    return value is None or type(value) in (bool, str) or _is_number(value)


def _same(value: Any, kind: str, option: Any) -> bool:
    """jsonschema's equality for ``enum`` on scalars: booleans equal only booleans, 1 equals 1.0."""
    if kind in ("integer", "number"):
        return _is_number(option) and option == value
    if kind == "boolean":
        return option is value
    if kind == "null":
        return option is None
    return type(option) is str and option == value
