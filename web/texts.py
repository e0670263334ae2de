"""Translated phrases and links for pages that repeat them many times: the client page and the caseload.

flask_babel's ``gettext`` looks up the request's locale and catalog on every call, ``format_date`` the time zone
and the locale too, and ``url_for`` builds through the URL map: each costs 0.05 to 0.2 ms, and a client page with
100 chart points and 50 alerts called them well over a thousand times. :func:`phrases` binds the request's
catalog, locale and time zone once and keeps what it translated or formatted for the rest of the request, with
the same results as ``gettext`` (the catalog's ``ugettext``, then ``%`` with the variables when there are any) and
``format_date``. :func:`lazy_gettext` (the views' ``_l``) makes form labels and choices that translate the same
way when a page shows them. :func:`id_url` builds one address per endpoint and fills in the id.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime
from typing import Any

import flask_babel
from babel import dates
from flask import g, has_request_context, url_for
from flask_babel import get_locale, get_timezone, get_translations
from flask_babel.speaklater import LazyString
from jinja2 import pass_eval_context
from jinja2.nodes import EvalContext
from markupsafe import Markup

_SENTINEL = 987654321987  # an id no route would produce by accident: replaced by the real one


class Phrases:
    """The request's translations and date formats, looked up once per message and per day."""

    def __init__(self) -> None:
        self._translations = get_translations()
        self._locale = get_locale()
        self._timezone = get_timezone()
        self._utc = str(self._timezone) == "UTC"  # the default: a stored time's day is its day
        self.key = (str(self._locale), str(self._timezone))  # what the phrases depend on, as part of a kept part's key
        self._messages: dict[str, str] = {}
        self._dates: dict[tuple[date, str], str] = {}

    def __call__(self, message: str, **variables: Any) -> str:
        """As ``flask_babel.gettext(message, **variables)``."""
        text = self._messages.get(message)
        if text is None:
            text = self._messages[message] = self._translations.ugettext(message)
        return text % variables if variables else text

    def date(self, value: datetime, pattern: str) -> str:
        """As ``flask_babel.format_date(value, pattern)`` for a pattern such as ``"d MMM yyyy"``: the day in the
        user's time zone."""
        if self._utc:  # stored times are UTC (naive ones from SQLite too)
            day = value.date() if value.tzinfo is None else value.astimezone(UTC).date()
        else:
            aware = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
            day = self._timezone.normalize(aware.astimezone(self._timezone)).date()
        text = self._dates.get((day, pattern))
        if text is None:
            text = self._dates[(day, pattern)] = dates.format_date(day, pattern, locale=self._locale)
        return text


def gettext(message: str, **variables: Any) -> str:
    """As ``flask_babel.gettext``, through the request's :class:`Phrases`."""
    return phrases()(message, **variables)


def lazy_gettext(message: str, **variables: Any) -> LazyString:
    """As ``flask_babel.lazy_gettext``: a text translated each time it is shown, in a request through the request's
    :class:`Phrases` (a form's labels and choices are shown on every page that has the form)."""
    return LazyString(_translated, message, **variables)


def _translated(message: str, **variables: Any) -> str:
    if has_request_context():
        return phrases()(message, **variables)
    return flask_babel.gettext(message, **variables)  # outside a request, as Flask-Babel's own lazy text does


@pass_eval_context
def template_gettext(eval_ctx: EvalContext, message: str, **variables: Any) -> str:
    """As Jinja's new-style ``_`` (``jinja2.ext``), through the request's :class:`Phrases`: in an autoescaped
    template the translation is markup, and it is always a format string, the variables escaped into it.

    A view passes it as ``_`` to ``render_template``, so its template and the macros it imports with context
    translate at dictionary speed; the messages stay marked ``_(...)`` for extraction.
    """
    text: Any = phrases()(message)
    if eval_ctx.autoescape:
        text = Markup(text)
    if not variables and "%" not in text:
        return text  # what ``%`` with no variables would give, without its cost (a page has dozens of these)
    return text % variables


def phrases() -> Phrases:
    """The request's :class:`Phrases` (made on first use)."""
    found = g.get("phrases")
    if found is None:
        found = g.phrases = Phrases()
    return found


def id_url(endpoint: str, name: str) -> Callable[[int], str]:
    """``url_for(endpoint, **{name: id})`` as a function of the id: built once per request, the id put in by text."""
    made = g.setdefault("id_urls", {})
    found = made.get((endpoint, name))
    if found is None:
        found = made[(endpoint, name)] = _id_url(endpoint, name)
    return found


def _id_url(endpoint: str, name: str) -> Callable[[int], str]:
    built = url_for(endpoint, **{name: _SENTINEL})
    marker = str(_SENTINEL)
    if built.count(marker) != 1:  # pragma: no cover - a route that repeats or transforms the id
        return lambda value: url_for(endpoint, **{name: value})
    head, tail = built.split(marker)
    return lambda value: f"{head}{int(value)}{tail}"
