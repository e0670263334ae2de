"""Form widgets: how one item is drawn and how its submitted form value becomes an answer."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from core.instruments import Item


class WidgetValueError(ValueError):
    """A submitted form value that the widget cannot turn into an answer; the message is shown to the client."""


@dataclass(frozen=True)
class Widget:
    """A named widget for items whose ``x-widget`` (or default) is ``name``.

    ``template`` is Jinja source for one item: it receives ``item``, ``value`` (the answer
    so far, or None), ``error`` and ``field_name``. ``parse(item, values)`` turns the
    submitted form strings into the JSON answer (None when unanswered) or raises
    :class:`WidgetValueError`.
    """

    name: str
    template: str
    parse: Callable[[Item, list[str]], Any]
