"""The session flow on the web: the client's own trend in plain words, and notes on untranslated instruments.

What is shown comes from the definitions (:func:`core.progress.own_trends`, :meth:`core.Instrument.translated_into`);
no instrument is named here.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from babel import Locale
from babel.lists import format_list
from flask_babel import format_decimal, get_locale, ngettext
from flask_babel import gettext as _

from core.care import own_progress
from core.instruments import Instrument
from core.models import Assignment
from core.progress import OwnTrend
from web.access import address
from web.state import db_session, drop_db_session, portal


def own_trends(assignment_id: int | None) -> list[dict[str, Any]]:
    """The client's own trend for the done page, in plain words, when their clinician turned it on (else none)."""
    if assignment_id is None:
        return []
    assignment = db_session(read_only=True).get(Assignment, assignment_id)
    if assignment is None or not assignment.client.show_progress:
        return []  # the usual case: nothing to show, nothing written
    drop_db_session()  # showing it is audited: a writing session
    session = db_session()
    assignment = session.get(Assignment, assignment_id)
    trends = own_progress(session, portal().engine, assignment, actor="client-link", address=address())
    session.commit()
    return [trend_words(trend) for trend in trends]


def _number(value: Decimal) -> str:
    return format_decimal(value)


def trend_words(trend: OwnTrend) -> dict[str, Any]:
    """A heading, the values by session, and two or three plain sentences about one trend."""
    first, latest = trend.values[0][1], trend.values[-1][1]
    values = [
        (_("Session %(n)s", n=number) if number is not None else _("Time %(n)s", n=position), _number(value))
        for position, (number, value) in enumerate(trend.values, start=1)
    ]
    change = trend.since_first
    if change is None:
        sentences = [
            _(
                "This is your first %(title)s: %(latest)s. Next time you will see how it changes.",
                title=trend.title,
                latest=_number(latest),
            )
        ]
    elif change == 0:
        sentences = [
            _(
                "Your %(title)s score is the same as the first time: %(latest)s.",
                title=trend.title,
                latest=_number(latest),
            )
        ]
    else:
        words = {
            "title": trend.title,
            "amount": _number(abs(change)),
            "first": _number(first),
            "latest": _number(latest),
        }
        sentences = [
            _(
                "Your %(title)s score has gone up by %(amount)s since the first time, from %(first)s to %(latest)s.",
                **words,
            )
            if change > 0
            else _(
                "Your %(title)s score has gone down by %(amount)s since the first time, from %(first)s to %(latest)s.",
                **words,
            )
        ]
    sentences.append(
        _("On this questionnaire, a higher score means you are doing better.")
        if trend.direction == "higher_is_better"
        else _("On this questionnaire, a lower score means you are doing better.")
    )
    sentences.append(_("Talk with your clinician about what this means for you."))
    return {"heading": _("Your %(title)s over time", title=trend.title), "values": values, "sentences": sentences}


def language_name(code: str) -> str:
    """A language's name in the page's language ("German" on an English page, "Deutsch" on a German one)."""
    try:
        return Locale.parse(code).get_display_name(str(get_locale() or "en")) or code
    except (ValueError, TypeError):
        return code


def untranslated_notes(instruments: Iterable[Instrument], language: str) -> list[str]:
    """Sentences naming the instruments a client reading ``language`` will see in another language.

    "PHQ-9 has no German translation; the client will see it in English." Instruments falling back to the same
    language share one sentence.
    """
    fallbacks: dict[str, list[str]] = {}
    for instrument in instruments:
        if not instrument.translated_into(language):
            fallbacks.setdefault(instrument.language, []).append(instrument.short_title)
    locale = str(get_locale() or "en")
    return [
        ngettext(
            "%(instruments)s has no %(language)s translation; the client will see it in %(fallback)s.",
            "%(instruments)s have no %(language)s translation; the client will see them in %(fallback)s.",
            len(titles),
            instruments=format_list(titles, locale=locale),
            language=language_name(language),
            fallback=language_name(fallback),
        )
        for fallback, titles in fallbacks.items()
    ]


def language_notes(languages: Iterable[str]) -> dict[str, list[str]]:
    """For the client form: by portal language, the sendable instruments a client in it sees untranslated."""
    instruments = [instrument for instrument in portal().engine.instruments if instrument.sendable]
    notes = {}
    for language in languages:
        found = untranslated_notes(instruments, language)
        if found:
            notes[language] = found
    return notes
