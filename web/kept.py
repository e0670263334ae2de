"""Pages that differ between requests in a few values only, rendered once and filled in per request.

The pages a client sees most (a fresh questionnaire, the receipt) are the same for every client in
one language at one site but for a link, a form token or a receipt. :func:`kept_page` keeps their
markup per process with stand-ins for those values; the key names everything the markup is made of,
so several processes on several hosts each keep the same page and none needs to tell the others.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from flask import g
from flask_babel import get_locale
from markupsafe import escape

from web.state import portal

KEPT_PAGES = 512  # per process; far more than sites x languages x questionnaires in one portal


def mark(name: str) -> str:
    """A stand-in for a value of :func:`kept_page`: letters and dashes only, so escaping leaves it as it is."""
    return f"rapportal-kept-{name}"


def kept_page(key: tuple[Any, ...], render: Callable[[], str], values: Mapping[str, str]) -> str:
    """A page rendered once per ``key`` with :func:`mark` stand-ins, then filled in with this request's ``values``.

    For the pages a client sees most (a fresh questionnaire, the receipt), which are the same for every
    client in one language at one site but for a link, a form token or a receipt. ``render`` must put
    each ``mark(name)`` where ``values[name]`` goes; the values are escaped when filled in. The key is
    extended by the page language and the site's name, which the page frame shows. Nothing about a
    client may be in what ``render`` produces: everything client-specific goes in ``values``.
    """
    # A client's page is in its link's language (g.language), which the locale selector reads first (web/app.py): as
    # a key it serves as well as the locale, which Flask-Babel would work out anew for every request.
    language = g.get("language") or str(get_locale())
    key = (*key, language, g.get("site_name"))
    cache = portal().kept_pages
    page = cache.get(key)
    if page is None:
        page = render()
        for name in values:
            if mark(name) not in page:
                raise RuntimeError(f"{key[0]}: the kept page does not show {name}")
        if len(cache) >= KEPT_PAGES:
            cache.clear()
        cache[key] = page
    for name, value in values.items():
        page = page.replace(mark(name), str(escape(value)))
    return page
