"""What a process keeps of its pages, under keys that name everything it is made of.

Several processes on several hosts each keep the same parts and none needs to tell the others: the same key always
makes the same markup, so a hit is right whichever process changed the database in between, and a change to the
data makes another key. Nothing is invalidated; old keys age out.

- **Kept pages** (:func:`kept_page`, kept in a :class:`KeptParts` too): the pages a client sees most (a fresh
  questionnaire, the receipt) are the same for every client in one language at one site but for a link, a form token
  or a receipt; their markup is kept with stand-ins for those values.
- **Kept parts** (:class:`KeptParts`, :func:`kept_parts`): parts of a clinician's page made from what the request
  read (a client's charts, item tables and alert lines), kept under a key of every input of the part: the rows as
  read (ids, times, stored values), definitions by identity (held by the kept value, so no other object can take
  their identity while it is kept), and the page's locale, time zone and link prefixes.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from threading import Lock
from typing import Any, TypeVar

from flask import Flask, current_app, g
from flask_babel import get_locale
from markupsafe import escape

T = TypeVar("T")


class KeptParts:
    """At most ``size`` parts by key, the least recently used dropped first; safe to share between threads."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._found: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = Lock()  # the development server serves requests in threads

    def get(self, key: Hashable) -> Any:
        with self._lock:
            found = self._found.get(key)
            if found is not None:
                self._found.move_to_end(key)
            return found

    def put(self, key: Hashable, part: Any) -> None:
        with self._lock:
            self._found[key] = part
            self._found.move_to_end(key)
            while len(self._found) > self.size:
                self._found.popitem(last=False)

    def get_or_make(self, key: Hashable, make: Callable[[], T]) -> T:
        """The part kept under ``key``, else ``make()``, kept."""
        found = self.get(key)
        if found is None:
            found = make()
            self.put(key, found)
        return found

    def clear(self) -> None:
        with self._lock:
            self._found.clear()

    def __len__(self) -> int:
        return len(self._found)


def kept_parts(name: str, size: int, app: Flask | None = None) -> KeptParts:
    """The :class:`KeptParts` called ``name`` of ``app`` (default: the current app), made with ``size`` on first use."""
    extensions = (app or current_app).extensions
    found = extensions.get(f"rapportal.kept.{name}")
    if found is None:
        found = extensions[f"rapportal.kept.{name}"] = KeptParts(size)
    return found


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
    cache = kept_parts("pages", KEPT_PAGES)
    page = cache.get(key)
    if page is None:
        page = render()
        for name in values:
            if mark(name) not in page:
                raise RuntimeError(f"{key[0]}: the kept page does not show {name}")
        cache.put(key, page)
    for name, value in values.items():
        page = page.replace(mark(name), str(escape(value)))
    return page
