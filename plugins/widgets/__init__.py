"""Built-in form widgets: radio groups, the visual analogue scale, numbers, text, yes/no, multi-select.

Each widget pairs a Jinja template (the markup for one item, in this folder) with ``parse``,
which turns the submitted form strings into the JSON answer. The server-side JSON Schema
check runs afterwards, so ``parse`` only has to get the type right.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from core import Widget, WidgetValueError, hookimpl
from core.instruments import Item

_HERE = Path(__file__).parent


def _first(values: list[str]) -> str:
    return values[0].strip() if values else ""


def _parse_choice(item: Item, values: list[str]) -> Any:
    raw = _first(values)
    if raw == "":
        return None
    for option in item.options:
        if str(option.value) == raw:
            return option.value
    raise WidgetValueError("Please choose one of the answers shown.")


def _parse_vas(item: Item, values: list[str]) -> Any:
    raw = _first(values).replace(",", ".")
    if raw == "":
        return None
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise WidgetValueError("Please mark the line, or type a number such as 7.3.") from None
    if not value.is_finite():
        raise WidgetValueError("Please mark the line, or type a number such as 7.3.")
    if value.as_tuple().exponent < -1:
        raise WidgetValueError("Use at most one decimal place, such as 7.3.")
    if (item.minimum is not None and value < item.minimum) or (item.maximum is not None and value > item.maximum):
        raise WidgetValueError(f"Mark a point from {item.minimum} to {item.maximum}.")
    return float(value)


def _parse_number(item: Item, values: list[str]) -> Any:
    raw = _first(values).replace(",", ".")
    if raw == "":
        return None
    types = item.schema.get("type", [])
    try:
        if "integer" in types and "number" not in types:
            return int(raw)
        value = Decimal(raw)
        if not value.is_finite():
            raise ValueError(raw)
        return float(value)
    except (ValueError, InvalidOperation):
        kind = "a whole number" if "integer" in types and "number" not in types else "a number"
        raise WidgetValueError(f"Please enter {kind}.") from None


def _parse_text(item: Item, values: list[str]) -> Any:
    raw = values[0] if values else ""
    return raw if raw.strip() else None


def _parse_yesno(item: Item, values: list[str]) -> Any:
    raw = _first(values)
    if raw == "":
        return None
    if raw in ("yes", "no"):
        return raw == "yes"
    raise WidgetValueError("Please answer yes or no.")


def _parse_multiselect(item: Item, values: list[str]) -> Any:
    allowed = {str(v): v for v in item.schema.get("items", {}).get("enum", [])}
    chosen = []
    for raw in values:
        if raw not in allowed:
            raise WidgetValueError("Please choose from the answers shown.")
        chosen.append(allowed[raw])
    return chosen or None


def _template(name: str) -> str:
    return (_HERE / f"{name}.html").read_text(encoding="utf-8")


@hookimpl
def register_widgets() -> list[Widget]:
    return [
        Widget("radio", _template("radio"), _parse_choice),
        Widget("vas", _template("vas"), _parse_vas),
        Widget("number", _template("number"), _parse_number),
        Widget("text", _template("text"), _parse_text),
        Widget("yesno", _template("yesno"), _parse_yesno),
        Widget("multiselect", _template("multiselect"), _parse_multiselect),
    ]
