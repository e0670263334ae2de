"""JSON Schema plumbing: the shipped meta-schema and the validator used for answers."""

from __future__ import annotations

import json
from collections.abc import Mapping
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
