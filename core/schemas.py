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
    return _AnswerValidator(document, registry=_NO_REMOTE)
