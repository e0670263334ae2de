"""Built-in form widgets: radio groups, the visual analogue scale, numbers, text, yes/no, multi-select.

Each widget pairs a Jinja template (the markup for one item, in this folder) with ``parse``,
which turns the submitted form strings into the JSON answer. The server-side JSON Schema
check runs afterwards, so ``parse`` only has to get the type right.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from core import Item, Widget, WidgetValueError, hookimpl

_HERE = Path(__file__).parent


def N_(message: str) -> str:
    """Mark a message for the portal's translation catalogs; the web form translates it when shown."""
    return message


def _invalid(message: str, **params: Any) -> WidgetValueError:
    """A WidgetValueError whose English text is ``message % params``; ``translatable`` keeps both for gettext."""
    error = WidgetValueError(message % params if params else message)
    error.translatable = (message, params)  # type: ignore[attr-defined]
    return error


def _first(values: list[str]) -> str:
    if len(values) > 1:  # a forged or broken form: one item, several answers
        raise _invalid(N_("Please give only one answer to this question."))
    return values[0].strip() if values else ""


def _parse_choice(item: Item, values: list[str]) -> Any:
    raw = _first(values)
    if raw == "":
        return None
    for option in item.options:
        if str(option.value) == raw:
            return option.value
    raise _invalid(N_("Please choose one of the answers shown."))


def _parse_vas(item: Item, values: list[str]) -> Any:
    raw = _first(values).replace(",", ".")
    if raw == "":
        return None
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise _invalid(N_("Please mark the line, or type a number such as 7.3.")) from None
    if not value.is_finite():
        raise _invalid(N_("Please mark the line, or type a number such as 7.3."))
    if value.as_tuple().exponent < -1:
        raise _invalid(N_("Use at most one decimal place, such as 7.3."))
    if (item.minimum is not None and value < item.minimum) or (item.maximum is not None and value > item.maximum):
        raise _invalid(N_("Mark a point from %(minimum)s to %(maximum)s."), minimum=item.minimum, maximum=item.maximum)
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
        if "integer" in types and "number" not in types:
            raise _invalid(N_("Please enter a whole number.")) from None
        raise _invalid(N_("Please enter a number.")) from None


def _parse_text(item: Item, values: list[str]) -> Any:
    if len(values) > 1:
        raise _invalid(N_("Please give only one answer to this question."))
    raw = values[0] if values else ""
    return raw if raw.strip() else None


def _parse_yesno(item: Item, values: list[str]) -> Any:
    raw = _first(values)
    if raw == "":
        return None
    if raw in ("yes", "no"):
        return raw == "yes"
    raise _invalid(N_("Please answer yes or no."))


def _parse_multiselect(item: Item, values: list[str]) -> Any:
    allowed = {str(v): v for v in item.schema.get("items", {}).get("enum", [])}
    chosen = []
    for raw in values:
        if raw not in allowed:
            raise _invalid(N_("Please choose from the answers shown."))
        if allowed[raw] in chosen:
            raise _invalid(N_("Please choose each answer only once."))
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
