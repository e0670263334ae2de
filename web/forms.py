"""Questionnaire forms built from instrument definitions.

WTForms does the processing (CSRF, turning form strings into answers, required checks);
Jinja templates supplied by widget plugins produce the markup, compiled once per widget.
A post that passes every check is read by :func:`quick_answers` with the same functions, without
binding the form's fields; the form is built only to show a page again with its errors.
The JSON Schema check in :func:`core.validate_answers` has the last word on every answer.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import wtforms
from flask import current_app, render_template
from flask_babel import get_locale
from flask_babel import gettext as _
from markupsafe import Markup
from wtforms.csrf.core import CSRF

from core import Instrument, ResponseValidationError, Widget, WidgetValueError
from core.instruments import Item
from web.kept import kept_page, mark
from web.state import portal

CSRF_FIELD = "csrf_token"


class ContextCSRF(CSRF):
    """A stateless CSRF token bound to a context: HMAC(secret, context, issued time).

    The context is a link's hash for questionnaires, and the sign-in session, the kiosk or the
    browser for staff forms (``web.access.csrf_context``). No server state is needed, so a client
    on a shared tablet or a phone that blocks cookies can still answer; an expired token
    re-shows the form with the answers kept.
    """

    def setup_form(self, form: wtforms.Form) -> Any:
        self.secret = form.meta.csrf_secret
        self.context = form.meta.csrf_context
        self.time_limit = form.meta.csrf_time_limit
        return super().setup_form(form)

    def generate_csrf_token(self, csrf_token_field: Any) -> str:
        return csrf_token_for(self.secret, self.context)

    def validate_csrf_token(self, form: wtforms.Form, field: Any) -> None:
        problem = csrf_problem(self.secret, self.context, self.time_limit, field.data)
        if problem == "unverified":
            raise wtforms.ValidationError(
                _("This form could not be verified. Please check your answers and send again.")
            )
        if problem == "expired":
            raise wtforms.ValidationError(
                _("This page was open for a long time. Your answers are kept: please send again.")
            )


def csrf_problem(secret: bytes, context: str, time_limit: float, token: str | None) -> str | None:
    """What is wrong with a form token: ``unverified`` (not ours, or for another context), ``expired``, or None."""
    issued_text, _sep, mac = (token or "").partition(".")
    if not issued_text.isdigit() or not hmac.compare_digest(mac, _csrf_mac(secret, context, int(issued_text))):
        return "unverified"
    if time.time() - int(issued_text) > time_limit:
        return "expired"
    return None


def _csrf_mac(secret: bytes, context: str, issued: int) -> str:
    return hmac.new(secret, f"{context}:{issued}".encode(), hashlib.sha256).hexdigest()


def csrf_token_for(secret: bytes, context: str) -> str:
    """A new form token for ``context`` (what :class:`ContextCSRF` puts in a form, without building one)."""
    issued = int(time.time())
    return f"{issued}.{_csrf_mac(secret, context, issued)}"


class ItemField(wtforms.Field):
    """One item: the widget's ``parse`` turns the submitted strings into the answer."""

    def __init__(self, *args: Any, item: Item, widget: Widget, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.item = item
        self.widget_def = widget
        self.raw: list[str] = []

    def process_formdata(self, valuelist: list[str]) -> None:
        self.raw = list(valuelist)
        try:
            self.data = self.widget_def.parse(self.item, self.raw)
        except WidgetValueError as error:
            self.data = None
            # Built-in widgets keep the untranslated message and its parameters for the catalogs.
            message, params = getattr(error, "translatable", (str(error), {}))
            raise ValueError(_(message, **params)) from None

    def pre_validate(self, form: wtforms.Form) -> None:
        if self.data is None and not self.item.optional and not self.process_errors:
            raise wtforms.validators.StopValidation(_("Please answer this question."))


class CSRFForm(wtforms.Form):
    """Every Rapportal form: a :class:`ContextCSRF` token in the ``csrf_token`` field."""

    class Meta:
        csrf = True
        csrf_class = ContextCSRF
        csrf_field_name = CSRF_FIELD


def csrf_meta(context: str) -> dict[str, Any]:
    """The per-request meta that binds a form's CSRF token to ``context``."""
    return {
        "csrf_secret": current_app.config["SECRET_KEY"].encode(),
        "csrf_context": context,
        "csrf_time_limit": current_app.config["CSRF_TIME_LIMIT"],
    }


def form_class(instrument: Instrument, widgets: Mapping[str, Widget]) -> type[wtforms.Form]:
    """Build (once per instrument version, see :func:`questionnaire_form`) the form class."""
    attrs: dict[str, Any] = {}
    for item in instrument.items:
        widget = widgets.get(item.widget)
        if widget is None:
            raise LookupError(f"{instrument.id}: no widget {item.widget!r} is installed for item {item.id}")
        attrs[item.id] = ItemField(item=item, widget=widget)
    return type(f"{instrument.id}_form", (CSRFForm,), attrs)


def questionnaire_form(instrument: Instrument, formdata: Any, link_hash: str) -> wtforms.Form:
    """The form for one link, bound to the submitted data (or empty)."""
    cache = portal().form_classes
    key = (instrument.id, instrument.version, instrument.wording_source)
    cls = cache.get(key)
    if cls is None:
        cls = cache[key] = form_class(instrument, portal().engine.widgets)
    return cls(formdata=formdata, meta=csrf_meta(link_hash))


def answers_from(form: wtforms.Form, instrument: Instrument) -> dict[str, Any]:
    return {item.id: form[item.id].data for item in instrument.items}


def quick_answers(
    instrument: Instrument, formdata: Any, csrf_context: str, allowed: tuple[str, ...] = ()
) -> dict[str, Any] | None:
    """The answers of a posted questionnaire that passes every check its form makes, without building the form.

    The same checks as :func:`questionnaire_form` then ``validate()`` and :func:`has_unknown_fields`, made
    with the same functions (the token's :func:`csrf_problem`, each widget's ``parse``), but only to say "it
    passes": None means "not surely", and :class:`PostedAnswers` then builds the form, whose validation
    decides and words the errors. Binding the form's fields cost more than the rest of a submission's checks.
    """
    config = current_app.config
    secret = config["SECRET_KEY"].encode()
    if csrf_problem(secret, csrf_context, config["CSRF_TIME_LIMIT"], formdata.get(CSRF_FIELD)) is not None:
        return None
    if has_unknown_fields(instrument, formdata, allowed):
        return None
    widgets = portal().engine.widgets
    answers = {}
    for item in instrument.items:
        widget = widgets.get(item.widget)
        if widget is None:
            return None
        try:
            value = widget.parse(item, formdata.getlist(item.id))
        except WidgetValueError:
            return None
        if value is None and not item.optional:
            return None
        answers[item.id] = value
    return answers


class PostedAnswers:
    """A posted questionnaire (a link's or the kiosk's): ``answers`` when it passes the form's checks and has no
    answer to an item the instrument lacks (``unknown``), else None; ``form`` is the bound, validated form that
    shows the page again with its errors, built only when a page needs it."""

    def __init__(self, instrument: Instrument, formdata: Any, csrf_context: str, allowed: tuple[str, ...] = ()) -> None:
        self.instrument = instrument
        self.formdata = formdata
        self.csrf_context = csrf_context
        self.valid = True  # the form's own checks, answers to unknown items aside
        self.unknown = False
        self.answers = quick_answers(instrument, formdata, csrf_context, allowed)
        if self.answers is None:
            form = self.form
            self.unknown = self.valid and has_unknown_fields(instrument, formdata, allowed)
            if self.valid and not self.unknown:  # passed after all: the form's word is final
                self.answers = answers_from(form, instrument)

    @cached_property
    def form(self) -> wtforms.Form:
        form = questionnaire_form(self.instrument, self.formdata, self.csrf_context)
        self.valid = form.validate()
        return form


def texts_for(instrument: Instrument, language: str) -> dict[str, Any]:
    """Title, stem, item texts and answer labels in ``language`` where the definition translates them.

    ``language`` in the result is the language of the wording shown: the definition's own one when
    it carries no translation into ``language``, so the page can mark it (WCAG 3.1.2).
    """
    translations = instrument.document.get("x-translations", {})
    translation = translations.get(language, {})
    options = translation.get("options", {})
    anchors = translation.get("anchors", {})
    return {
        "language": language if language in translations else instrument.language,
        "title": translation.get("title", instrument.title),
        "stem": translation.get("stem", instrument.stem),
        "items": {
            item.id: translation.get("items", {}).get(item.id, item.text or item.topic) for item in instrument.items
        },
        "options": {
            item.id: [(str(o.value), options.get(o.label, o.label)) for o in item.options] for item in instrument.items
        },
        "anchors": {item.id: tuple(anchors.get(item.id, item.anchors or ("", ""))) for item in instrument.items},
    }


def render_item(
    item: Item, number: int, form: wtforms.Form, texts: Mapping[str, Any], labels: Mapping[str, str]
) -> Markup:
    """The markup for one item, from its widget's template (compiled once per app)."""
    state = portal()
    template = state.widget_templates.get(item.widget)
    if template is None:
        template = state.widget_templates[item.widget] = current_app.jinja_env.from_string(
            state.engine.widgets[item.widget].template
        )
    field = form[item.id]
    errors = field.errors or field.process_errors
    return Markup(
        template.render(
            item=item,
            name=item.id,
            number=number,
            text=texts["items"][item.id],
            options=texts["options"][item.id],
            anchors=texts["anchors"][item.id],
            values=field.raw,
            error=errors[0] if errors else None,
            required=not item.optional,
            labels=labels,
        )
    )


def _widget_labels() -> dict[str, str]:
    return {
        "yes": _("Yes"),
        "no": _("No"),
        "vas_unset": _("Not marked yet"),
        "vas_help": _("Tap or click the line where it fits best, or use the arrow keys."),
        # formatted by the VAS template with the item's own range
        "vas_fallback": _("Your mark, from %(minimum)s (left end) to %(maximum)s (right end):"),
    }


@dataclass(frozen=True)
class PageParts:
    """What a questionnaire page shows the same way to every client in one language, computed once."""

    texts: Mapping[str, Any]
    labels: Mapping[str, str]
    untouched_items: dict[str, Markup]  # filled on first use: an item with no answer and no error


def _page_parts(instrument: Instrument, language: str) -> PageParts:
    cache = portal().page_parts
    key = (instrument.id, instrument.version, instrument.wording_source, language, str(get_locale()))
    parts = cache.get(key)
    if parts is None:
        # translated once per language, not once per page or item
        parts = cache[key] = PageParts(texts_for(instrument, language), _widget_labels(), {})
    return parts


def _untouched(field: wtforms.Field) -> bool:
    return not field.raw and not field.errors and not field.process_errors


def render_questionnaire(
    template: str, instrument: Instrument, language: str, form: wtforms.Form, **context: Any
) -> str:
    """Render a questionnaire page (a link's or the kiosk's) with its items, errors and summary.

    An item with no answer and no error looks the same on every page in one language, so its
    markup is rendered once and reused; items with answers or errors are rendered per page.
    """
    parts = _page_parts(instrument, language)
    texts = parts.texts
    numbers = {item.id: index for index, item in enumerate(instrument.items, start=1)}
    context.setdefault("summary", [field.name for field in form if field.errors and field.name != CSRF_FIELD])

    def item_markup(item: Item) -> Markup:
        field = form[item.id]
        if not _untouched(field):
            return render_item(item, numbers[item.id], form, texts, parts.labels)
        markup = parts.untouched_items.get(item.id)
        if markup is None:
            markup = parts.untouched_items[item.id] = render_item(item, numbers[item.id], form, texts, parts.labels)
        return markup

    return render_template(
        template,
        instrument=instrument,
        texts=texts,
        form=form,
        pages=sorted({section.page for section in instrument.sections}),
        numbers=numbers,
        render_item=item_markup,
        **context,
    )


def fresh_questionnaire(
    template: str, instrument: Instrument, language: str, *, action: str, csrf_context: str, **context: Any
) -> str:
    """A questionnaire page with nothing answered yet: what a client's link shows on every first visit.

    Such a page is the same for every client in one language at one site except for the form's action
    and its token, so it is rendered once through :func:`render_questionnaire` and kept
    (:func:`web.kept.kept_page`, keyed on the template, the instrument's version and installed wording,
    the wording language and ``context``); each request fills in its own action and a new token.
    """

    def render() -> str:
        form = questionnaire_form(instrument, None, csrf_context)
        form.csrf_token.current_token = mark("token")
        return render_questionnaire(template, instrument, language, form, action=mark("action"), **context)

    key = (template, instrument.id, instrument.version, instrument.wording_source, language, *sorted(context.items()))
    secret = current_app.config["SECRET_KEY"].encode()
    return kept_page(key, render, {"action": action, "token": csrf_token_for(secret, csrf_context)})


def has_unknown_fields(instrument: Instrument, formdata: Any, allowed: tuple[str, ...] = ()) -> bool:
    """Whether a post carries answers to items the instrument does not have (nothing is stored then)."""
    known = {item.id for item in instrument.items} | {CSRF_FIELD, *allowed}
    return any(name not in known for name in formdata)


def mark_refused_answers(form: wtforms.Form, error: ResponseValidationError) -> None:
    """Show the engine's refusal next to each item, as one plain translated sentence.

    The engine's reasons are technical English; a client needs to know only which answer to check.
    """
    for item_id in error.by_item():
        if item_id in form:
            form[item_id].errors = [_("Please check this answer: it is not one this question allows.")]
