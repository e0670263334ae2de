"""The clinician's side: caseload, client page with charts, sessions and their links, alerts.

A clinician sees only the clients they are assigned to (main or further clinician); any
other client's pages answer 404, the same as a client that does not exist. A supervisor opens the
same reading pages (caseload, client, session, response) for their clinicians' clients, read-only:
no button that changes something is shown to them, and every such view is audited in core.
Links are shown once, when they are made: only their hashes are stored. To hand a link out
again the clinician re-issues it, which replaces the hash (the old link stops working).
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, NamedTuple

import segno
import wtforms
from flask import Blueprint, current_app, g, redirect, render_template, request, url_for
from flask import Response as FlaskResponse
from flask import session as flask_session
from markupsafe import Markup, escape
from wtforms import validators as v

from core import Instrument
from core.care import (
    AlertRecord,
    AssignmentRecord,
    ResponseRecord,
    ScoreRecord,
    SessionRecord,
    acknowledge_alert,
    alert_session_numbers,
    cancel_care_session,
    expire_link,
    held_assignments,
    plan_moment,
    reissue_link,
    release_end_of_session,
    session_cancellable,
    start_care_session,
    start_episode,
    unlock_kiosk,
    view_care_session,
    view_caseload,
    view_client,
    view_response,
    visible_record,
)
from core.clients import set_progress_shown, treated_client
from core.models import Alert, Assignment, CareSession, Episode, User
from core.notify import available_channels, enqueue_deliveries, send_session_links, session_messages
from core.plans import BUILTIN_PLANS, DEFAULT_PLAN, plan_text
from core.responses import is_expired, stored_score_values
from core.triage import (
    acknowledge_alerts,
    caseload_order,
    client_report,
    count_by_severity,
    severity_rank,
    triage_order,
)
from web.access import (
    StaffForm,
    actor,
    address,
    allow,
    choices,
    current_session,
    current_user,
    form_problem,
    make_form,
    read_audit,
    read_only,
    reading_view,
)
from web.flow import untranslated_notes
from web.kept import kept_parts
from web.progress import client_progress, when_label
from web.report_pdf import render_report_pdf
from web.state import db_session, portal
from web.texts import gettext as _
from web.texts import id_url, phrases, template_gettext
from web.texts import lazy_gettext as _l

bp = Blueprint("clinician", __name__)

NO_ANSWER = "&ndash;"  # the item table's cell for an item not answered (a reference: see web.progress.ascii_html)

# The built-in plans' titles (core/plans.py keeps them in English), for the plan menu.
PLAN_TITLES = {
    "pcoms": _l("PCOMS: ORS at the start and SRS at the end of every session"),
    "pcoms-phq9": _l("PCOMS, plus PHQ-9 at the start of every fourth session (1, 5, 9, ...)"),
    "pcoms-wai": _l("PCOMS, plus WAI-SR at the end of every third session (3, 6, 9, ...)"),
    "symptoms": _l("PHQ-9, GAD-7 and CORE-10 at the start of every fourth session (1, 5, 9, ...)"),
}


class AcknowledgeForm(StaffForm):
    note = wtforms.TextAreaField(
        _l("Note"),
        [v.DataRequired(_l("Write a note: what you did or decided.")), v.Length(max=2000)],
        filters=[lambda text: text.strip() if isinstance(text, str) else text],  # blanks are no note
    )


class AcknowledgeManyForm(StaffForm):
    """One note for the alerts ticked on the client page."""

    alert = wtforms.SelectMultipleField(
        _l("Alerts"),
        [v.DataRequired(_l("Choose at least one alert to acknowledge."))],
        coerce=int,
        validate_choice=False,  # core checks that each alert exists and is this clinician's client's
    )
    note = wtforms.TextAreaField(
        _l("Note"),
        [v.DataRequired(_l("Write a note: what you did or decided.")), v.Length(max=2000)],
        filters=[lambda text: text.strip() if isinstance(text, str) else text],
    )


class EpisodeForm(StaffForm):
    title = wtforms.StringField(_l("Title (optional)"), [v.Optional(), v.Length(max=128)])
    plan = wtforms.SelectField(
        _l("Measurement plan"),
        choices=choices(
            [(key, PLAN_TITLES.get(key, title)) for key, (title, _rules) in BUILTIN_PLANS.items()]
            + [("custom", _l("Custom (below)"))]
        ),
        default=DEFAULT_PLAN,
    )
    custom = wtforms.TextAreaField(_l("Custom plan"), [v.Optional(), v.Length(max=2000)])


class ActionForm(StaffForm):
    """A button that changes something: only its CSRF token is checked."""


class SessionForm(StaffForm):
    """'Start session N': the number makes a reload or a re-post find session N instead of making N+1."""

    number = wtforms.IntegerField(
        _l("Session"), [v.InputRequired(_l("The session number is missing.")), v.NumberRange(1, 100000)]
    )


class ProgressForm(StaffForm):
    """Whether the client sees their own trend after answering (off by default)."""

    show = wtforms.SelectField(
        _l("Show the client their progress"),
        choices=choices([("off", _l("Off")), ("on", _l("On"))]),
        validate_choice=True,
    )


class SendForm(StaffForm):
    """'Send the links by e-mail': the channel is checked by core (installed and configured)."""

    channel = wtforms.StringField(_l("Channel"), [v.InputRequired(_l("Choose how to send the links."))])


# The built-in channels' names (plugins name theirs in English), and why a message was not sent.
CHANNEL_TITLES = {"email": _l("E-mail"), "sms": _l("SMS")}
MESSAGE_STATES = {
    "queued": _l("waiting to be sent"),
    "sending": _l("being sent"),
    "sent": _l("sent"),
    "failed": _l("failed"),
    "skipped": _l("not sent"),
}
SKIPPED_BECAUSE = {
    "answered": _l("the questionnaire was answered"),
    "expired": _l("the link expired"),
    "reissued": _l("the link was re-issued"),
    "no_consent": _l("the client withdrew consent to contact"),
    "no_contact": _l("no contact detail on record"),
    "no_channel": _l("the channel is not configured"),
    "gone": _l("the questionnaire was removed"),
}

SKIP_REASONS = {
    "not_installed": _l("no such instrument is installed"),
    "no_wording": _l("its licensed wording is not installed (see Plugins)"),
}


# -- helpers ---------------------------------------------------------------------


def _own(model: Any, object_id: int) -> Any:
    """Load a client's record to change it; 404 unless the signed-in clinician treats that client."""
    return visible_record(db_session(), _user(), model, object_id, to_change=True)


def _user() -> User:
    user = current_user()
    assert user is not None  # the access rule let only signed-in clinicians in
    return user


def _lifetime() -> timedelta:
    return timedelta(days=int(current_app.config["LINK_LIFETIME_DAYS"]))


def _qr(url: str) -> str:
    # An SVG data URI, drawn here: no external service ever sees the link.
    return segno.make(url, error="m").svg_data_uri(scale=4, border=2)


def _hand_over(links: Any) -> None:
    """Keep new links for the one links page that follows the redirect (the portal stores only their hashes).

    They ride in the signed, HttpOnly session cookie of this browser, which already holds the right to
    see them, and are removed when the links page shows them.
    """
    flask_session["links"] = [[link.assignment.id, link.token, link.moment] for link in links]


def _handed_over(assignments: Any) -> list[dict[str, Any]]:
    """The links handed over by the redirecting POST, for the assignments of the page's session."""
    by_id = {a.id: a for a in assignments}
    shown = []
    for assignment_id, token, moment in flask_session.pop("links", []):
        assignment = by_id.get(assignment_id)
        if assignment is None:
            continue
        url = url_for("client.answer", token=token, _external=True)
        shown.append(
            {"assignment": assignment, "title": _short_title(assignment), "url": url, "qr": _qr(url), "moment": moment}
        )
    return shown


def _titles() -> dict[str, str]:
    """Alert titles by rule; flag-based rules are titled from their instrument's definition."""
    return portal().engine.alert_titles()


# -- caseload --------------------------------------------------------------------


# Each severity's icon has a shape of its own besides its colour (a triangle, a circle, a square), for whoever
# cannot tell the colours apart; an unknown severity (a plugin's) is drawn as information.
_SEVERITY_ICONS = {
    "urgent": '<polygon points="8,1 15.5,15 0.5,15" fill="currentColor"/><rect x="7" y="5.5" width="2" height="5" '
    'fill="#fff"/><rect x="7" y="11.5" width="2" height="2" fill="#fff"/>',
    "warning": '<circle cx="8" cy="8" r="7.5" fill="currentColor"/><rect x="7" y="3.5" width="2" height="6" '
    'fill="#fff"/><rect x="7" y="11" width="2" height="2" fill="#fff"/>',
    "info": '<rect x="0.5" y="0.5" width="15" height="15" rx="3" fill="currentColor"/><rect x="7" y="7" width="2" '
    'height="6" fill="#fff"/><rect x="7" y="3.5" width="2" height="2" fill="#fff"/>',
}
_SEVERITY_WORDS = {"urgent": _l("Urgent"), "warning": _l("Warning"), "info": _l("Information")}


@bp.app_template_global()
def severity_badge(severity: str) -> Markup:
    """A severity's badge: its icon and its word, in its colour (a template global, also drawn in each alert line)."""
    known = severity if severity in _SEVERITY_ICONS else "info"
    # a translation is markup in the page, as the template's own ``_`` makes it
    return Markup(
        f'<span class="severity severity-{escape(severity)}"><svg class="severity-icon" viewBox="0 0 16 16" '
        f'width="16" height="16" aria-hidden="true" focusable="false">{_SEVERITY_ICONS[known]}</svg> '
        f"{_SEVERITY_WORDS[known]}</span>"
    )


class AlertLine(NamedTuple):
    """An alert with what its line on a page says, made once per alert in Python (the template's calls per alert and
    field cost more than the rest of the page)."""

    alert: Alert | AlertRecord
    start: Markup  # the list item's start tag: the severity and the rule as its class and data attributes
    badge: Markup  # the severity's badge
    facts: Markup  # the rule's title, the message, the session, the day and the link to the response
    item: Markup  # the client page's whole list item: the start, its tick box (for a clinician), the badge, the facts
    client_href: str
    acknowledge_href: str


#: Alert lines kept per process (see :mod:`web.kept`): the open alerts of the clients viewed lately.
ALERT_LINES = 4096


def _alert_lines(
    alerts: Sequence[Alert | AlertRecord],
    titles: Mapping[str, str],
    sessions: Mapping[int, int],
    *,
    tick_label: str | None = None,
) -> list[AlertLine]:
    """The alerts' lines; with ``tick_label`` (the client page, for a clinician) each item has its tick box.

    A line of an alert read as a row (:class:`core.care.AlertRecord`) is kept by the row, its session number, its
    rule's title and this page's locale, time zone, link prefixes and tick label: everything it is made of.
    """
    # translations are markup in the page, as the template's own ``_`` makes them
    answers = _("answers")
    session_word = _("session %(n)s")  # formatted with a number: nothing to escape
    say = phrases()
    response_href = id_url("clinician.response", "response_id")
    client_href = id_url("clinician.client", "client_id")
    acknowledge_href = id_url("clinician.acknowledge", "alert_id")
    context = (say.key, response_href(0), client_href(0), acknowledge_href(0), tick_label)
    kept = kept_parts("alert_lines", ALERT_LINES)
    badges: dict[str, Markup] = {}  # a page's alerts share a few severities

    def made(alert: Alert | AlertRecord, number: int | None, title: str) -> AlertLine:
        session = f"{session_word % {'n': int(number)}}, " if number else ""
        severity, rule, id_ = escape(alert.severity), escape(alert.rule), int(alert.id)
        badge = badges.get(alert.severity)
        if badge is None:
            badge = badges[alert.severity] = severity_badge(alert.severity)
        start = f'<li class="staff-alert severity-{severity}" data-alert="{rule}" data-severity="{severity}">'
        facts = (
            f"<strong>{escape(title)}</strong>\n"
            f'<span class="alert-message">{escape(alert.message)}</span>\n'
            f'<span class="muted alert-when">({session}{escape(say.date(alert.created_at, "d MMM yyyy"))},\n'
            f'<a href="{escape(response_href(alert.response_id))}">{answers}</a>)</span>'
        )
        tick = (
            f'<input type="checkbox" name="alert" value="{id_}" id="ack-{id_}" aria-describedby="facts-{id_}">\n'
            f'    <label for="ack-{id_}" class="visually-hidden">{tick_label}</label>\n    '
            if tick_label is not None
            else ""
        )
        item = f'{start}\n    {tick}<p id="facts-{id_}">{badge} {facts}</p>\n  </li>'
        return AlertLine(
            alert,
            Markup(start),
            badge,
            Markup(facts),
            Markup(item),
            client_href(alert.client_id),
            acknowledge_href(alert.id),
        )

    lines = []
    for alert in alerts:
        number = sessions.get(alert.id)
        title = titles.get(alert.rule, alert.rule)
        if type(alert) is AlertRecord:  # a row's values are its key; an ORM object's are not
            lines.append(kept.get_or_make((context, alert, number, title), partial(made, alert, number, title)))
        else:
            lines.append(made(alert, number, title))
    return lines


@bp.get("/caseload")
@allow("clinician", "supervisor")
@reading_view
def caseload() -> Any:
    session = db_session()
    with read_audit() as audit:
        found = view_caseload(session, _user(), actor=actor(), address=address(), pending_audit=audit)
    by_client: dict[int, list[Alert]] = defaultdict(list)
    for alert in found.alerts:
        by_client[alert.client_id].append(alert)
    client_href = id_url("clinician.client", "client_id")
    rows = []
    for one in caseload_order(found.clients, found.alerts):
        mine = count_by_severity(by_client.get(one.id, ()))
        css = " has-urgent" if mine.get("urgent") else " has-warning" if mine.get("warning") else ""
        last = found.last_answer.get(one.id)
        rows.append(
            (
                one,
                client_href(one.id),
                css,
                len(by_client.get(one.id, ())),
                [(severity, mine[severity]) for severity in ("urgent", "warning", "info") if mine.get(severity)],
                found.pending.get(one.id, 0),
                last.date().isoformat() if last else "",
            )
        )
    alerts = triage_order(found.alerts)
    return render_template(
        "clinician/caseload.html",
        _=template_gettext,  # the page's phrases translated once (web/texts.py)
        rows=rows,
        alerts=alerts,
        alert_lines=_alert_lines(alerts, _titles(), alert_session_numbers(session, found.alerts)),
        codes={c.id: c.code for c in found.clients},
    )


# -- client page -----------------------------------------------------------------


#: Item tables kept per process (see :mod:`web.kept`), one per client and questionnaire shown lately.
ITEM_TABLES = 256


def _item_detail(rows: list[tuple[ResponseRecord, ScoreRecord | None]]) -> list[ItemTable]:
    """The item-level answers, one table per questionnaire: each item's answer in each response."""
    engine = portal().engine
    href = id_url("clinician.response", "response_id")
    kept = kept_parts("item_tables", ITEM_TABLES)
    grouped: dict[str, list[ResponseRecord]] = defaultdict(list)
    for response, _score in rows:
        grouped[response.instrument_id].append(response)
    detail = []
    for instrument_id, responses in grouped.items():
        try:
            instrument = engine.instruments.get(instrument_id, responses[-1].instrument_version)
        except KeyError:
            continue
        # kept by every input of the table: the definition (by identity, held by the table), the link prefix, and the
        # responses as read; an answer that cannot be part of a key (a list of choices) makes it anew
        try:
            key = (
                id(instrument),
                href(0),
                tuple((r.id, r.session_number, r.submitted_at, tuple(r.answers.items())) for r in responses),
            )
            hash(key)
        except TypeError:
            detail.append(_item_table(instrument, responses, href))
            continue
        detail.append(kept.get_or_make(key, partial(_item_table, instrument, responses, href)))
    return detail


class ItemTable(NamedTuple):
    """One questionnaire's item-level answers as the client page shows them: each item's answer in each response."""

    title: str
    header: Markup  # a header cell per response: its label (a session number or a date) linking to it
    body: Markup  # a row per item: its id and topic, then its answer in each response or a dash
    definition: Instrument  # what it was made from: held, so that no other object takes the identity its key names


def _item_table(instrument: Instrument, responses: list[ResponseRecord], href: Callable[[int], str]) -> ItemTable:
    """One questionnaire's item table (see :func:`_item_detail`), written here once rather than by template calls
    per cell (a number needs no escaping)."""
    header = "".join(
        f'<th scope="col"><a href="{escape(href(r.id))}">{escape(when_label(r))}</a></th>' for r in responses
    )
    body = "\n".join(
        f'<tr><th scope="row">{escape(item.id)} <span class="muted">{escape(item.topic)}</span></th>'
        f"{''.join(_cell(r.answers.get(item.id)) for r in responses)}</tr>"
        for item in instrument.items
    )
    return ItemTable(instrument.short_title, Markup(header), Markup(body), instrument)


def _cell(answer: Any) -> str:
    """An item table's cell: the answer (a number needs no escaping), or a dash for an unanswered item."""
    if answer is None:
        return f"<td>{NO_ANSWER}</td>"
    if type(answer) in (int, float):
        return f"<td>{answer}</td>"
    return f"<td>{escape(answer)}</td>"


def _session_rows(sessions: Sequence[SessionRecord]) -> list[Markup]:
    """The episode's sessions as the table's rows: each one's label ("Session 3") linking to its page, its date and
    its questionnaires' states ("ORS: answered; SRS: waiting"), written here once per row rather than by template
    calls per cell."""
    href = id_url("clinician.care_session", "session_id")
    label = _("Session %(n)s")  # a translation is markup in the page, as the template's own ``_`` makes it
    # the states' words translated once; a questionnaire's short title looked up once per version
    answered, expired, held, waiting = _("answered"), _("link expired"), _("held until you release it"), _("waiting")
    titles: dict[tuple[str, str], str] = {}
    now = datetime.now(UTC)
    rows = []
    for care in sessions:
        states = []
        for assignment in care.assignments:
            if assignment.completed_at:
                state = answered
            elif is_expired(assignment, now):
                state = expired
            elif assignment.held:
                state = held
            else:
                state = waiting
            key = (assignment.instrument_id, assignment.instrument_version)
            title = titles.get(key)
            if title is None:
                title = titles[key] = escape(_short_title(assignment))
            # a translation is markup in the page, as the template's own ``_`` makes it; the title is escaped
            states.append(f"{title}: {state}")
        # the label is a translation with a number in it (formatted as text: a number needs no escaping), the date
        # is digits
        rows.append(
            Markup(
                f'<tr><td><a href="{escape(href(care.id))}">{label % {"n": int(care.number)}}</a></td>'
                f"<td>{care.held_at.date().isoformat()}</td><td>{'; '.join(states)}</td></tr>"
            )
        )
    return rows


def _most_severe(alerts: Any) -> dict[int, str]:
    """Response id to the most severe alert it raised (open or acknowledged): these chart points are marked."""
    found: dict[int, str] = {}
    for alert in alerts:
        before = found.get(alert.response_id)
        if before is None or severity_rank(alert.severity) < severity_rank(before):
            found[alert.response_id] = alert.severity
    return found


@bp.get("/clients/<int:client_id>")
@allow("clinician", "supervisor")
@reading_view
def client(client_id: int) -> Any:
    session = db_session()
    with read_audit() as audit:
        found = view_client(
            session,
            _user(),
            client_id,
            episode_id=request.args.get("episode", type=int),
            actor=actor(),
            address=address(),
            pending_audit=audit,
        )
    alerts = triage_order(found.alerts)
    return render_template(
        "clinician/client.html",
        _=template_gettext,  # the page's phrases translated once (web/texts.py)
        client=found.client,
        episodes=found.client.episodes,
        episode=found.episode,
        next_number=found.next_session,
        session_rows=_session_rows(found.sessions),
        **client_progress(found.responses, _most_severe(found.raised)),
        detail=_item_detail(found.responses),
        alerts=alerts,
        alert_lines=_alert_lines(
            alerts,
            _titles(),
            alert_session_numbers(session, alerts, found.responses),
            # a translation is markup in the page, as the template's own ``_`` makes it
            tick_label=None if read_only() else _("Acknowledge this alert"),
        ),
        alert_counts_by_severity=count_by_severity(alerts),
        episode_form=make_form(EpisodeForm),
        progress_form=make_form(ProgressForm, show="on" if found.client.show_progress else "off"),
        plan_text=plan_text,
    )


@bp.post("/clients/<int:client_id>/alerts/acknowledge")
@allow("clinician")
def acknowledge_many(client_id: int) -> Any:
    """One note closes the alerts ticked on the client page."""
    session = db_session()
    treated_client(session, _user(), client_id)  # someone else's client is a 404, whatever the form holds
    form = make_form(AcknowledgeManyForm)
    if not form.validate():
        return form_problem(form)
    acknowledge_alerts(
        session, _user(), form.alert.data, client_id=client_id, note=form.note.data, actor=actor(), address=address()
    )
    session.commit()
    return redirect(url_for("clinician.client", client_id=client_id), 303)


@bp.get("/clients/<int:client_id>/report.pdf")
@allow("clinician", "supervisor")
def report_pdf(client_id: int) -> Any:
    """The printable client report of the chosen episode, made on the server (see web/report_pdf.py)."""
    session = db_session()
    found = client_report(
        session, _user(), client_id, episode_id=request.args.get("episode", type=int), actor=actor(), address=address()
    )
    session.commit()
    pdf = render_report_pdf(
        found, _titles(), alert_session_numbers(db_session(), found.alerts, found.responses), _most_severe(found.alerts)
    )
    name = "report-" + re.sub(r"[^A-Za-z0-9._-]", "_", found.client.code) + ".pdf"
    return FlaskResponse(
        pdf,
        mimetype="application/pdf",
        headers={"Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store"},
    )


@bp.post("/clients/<int:client_id>/episodes")
@allow("clinician")
def new_episode(client_id: int) -> Any:
    session = db_session()
    found = treated_client(session, _user(), client_id)
    form = make_form(EpisodeForm)
    if not form.validate():
        return form_problem(form)
    episode = start_episode(
        session,
        portal().engine,
        found,
        title=form.title.data,
        plan=form.plan.data,
        custom_plan=form.custom.data,
        actor=actor(),
        address=address(),
    )
    session.commit()
    return redirect(url_for("clinician.client", client_id=found.id, episode=episode.id), 303)


@bp.post("/episodes/<int:episode_id>/sessions")
@allow("clinician")
def new_session(episode_id: int) -> Any:
    episode = _own(Episode, episode_id)
    form = make_form(SessionForm)
    if not form.validate():
        return form_problem(form)
    session = db_session()
    started = start_care_session(
        session,
        portal().engine,
        episode,
        number=form.number.data,
        lifetime=_lifetime(),
        actor=actor(),
        address=address(),
    )
    session.commit()
    if not started.created:  # a reload, Back/Forward or a re-post: nothing new was made
        return redirect(url_for("clinician.care_session", session_id=started.care.id, again=1), 303)
    _hand_over(started.links)
    flask_session["skipped"] = [list(pair) for pair in started.skipped]
    return redirect(url_for("clinician.links", session_id=started.care.id), 303)


@bp.get("/sessions/<int:session_id>/links")
@allow("clinician")
def links(session_id: int) -> Any:
    """The links just made, shown once; a reload finds none and goes to the session page."""
    care = _own(CareSession, session_id)
    issued = _handed_over(care.assignments)
    skipped = [
        (instrument_id, SKIP_REASONS.get(reason, reason)) for instrument_id, reason in flask_session.pop("skipped", [])
    ]
    if not issued and not skipped:
        return redirect(url_for("clinician.care_session", session_id=care.id))
    return render_template(
        "clinician/links.html",
        client=care.episode.client,
        care=care,
        issued=issued,
        skipped=skipped,
        language_notes=_language_notes(i["assignment"] for i in issued),
        held_ids={a.id for a in held_assignments(care)},
        action_form=make_form(ActionForm),
        reissued=request.args.get("reissued") == "1",
    )


@bp.get("/sessions/<int:session_id>")
@allow("clinician", "supervisor")
def care_session(session_id: int) -> Any:
    session = db_session()
    care = view_care_session(session, _user(), session_id, actor=actor(), address=address())
    session.commit()
    return render_template(
        "clinician/session.html",
        care=care,
        client=care.episode.client,
        titles={a.id: _short_title(a) for a in care.assignments},
        action_form=make_form(ActionForm),
        is_expired=is_expired,
        moment=plan_moment,
        again=request.args.get("again") == "1",
        cancellable=session_cancellable(session, care),
        held=held_assignments(care),
        released=request.args.get("released") == "1",
        language_notes=_language_notes(a for a in care.assignments if a.completed_at is None),
        messages=session_messages(session, care),
        channels=available_channels(portal().engine, current_app.config),
        channel_titles=CHANNEL_TITLES,
        message_states=MESSAGE_STATES,
        skipped_because=SKIPPED_BECAUSE,
        send_form=make_form(SendForm),
        sent=request.args.get("sent", type=int),
    )


def _language_notes(assignments: Any) -> list[str]:
    """Where links are made: the questionnaires a client will see in another language than their own."""
    instruments = portal().engine.instruments
    by_language: dict[str, dict[str, Any]] = {}
    for assignment in assignments:
        try:
            instrument = instruments.get(assignment.instrument_id, assignment.instrument_version)
        except KeyError:
            continue
        by_language.setdefault(assignment.language, {})[instrument.id] = instrument
    return [note for language, found in by_language.items() for note in untranslated_notes(found.values(), language)]


@bp.post("/sessions/<int:session_id>/release")
@allow("clinician")
def release(session_id: int) -> Any:
    """Release the session's end-of-session questionnaires: their links and the kiosk open them now."""
    care = _own(CareSession, session_id)
    form = make_form(ActionForm)
    if not form.validate():
        return form_problem(form)
    session = db_session()
    release_end_of_session(session, _user(), care, actor=actor(), address=address())
    session.commit()
    return redirect(url_for("clinician.care_session", session_id=care.id, released=1), 303)


@bp.post("/clients/<int:client_id>/progress")
@allow("clinician")
def client_progress_setting(client_id: int) -> Any:
    """Turn on or off whether the client sees their own trend after answering."""
    treated_client(db_session(), _user(), client_id)  # a stranger's client is not found, whatever the form says
    form = make_form(ProgressForm)
    if not form.validate():
        return form_problem(form)
    session = db_session()
    set_progress_shown(session, _user(), client_id, form.show.data == "on", actor=actor(), address=address())
    session.commit()
    return redirect(url_for("clinician.client", client_id=client_id, progress=form.show.data) + "#own-progress", 303)


@bp.post("/sessions/<int:session_id>/send")
@allow("clinician")
def send_links(session_id: int) -> Any:
    """Send the session's unanswered links to the client by e-mail or SMS (through the outbox and a job)."""
    care = _own(CareSession, session_id)
    form = make_form(SendForm)
    if not form.validate():
        return form_problem(form)
    session = db_session()
    sent = send_session_links(
        session,
        portal().engine,
        care,
        channel=form.channel.data,
        settings=current_app.config,
        base_url=current_app.config.get("PUBLIC_URL") or request.url_root,
        actor=actor(),
        address=address(),
    )
    session.commit()
    enqueue_deliveries(portal().jobs, sent.messages)
    return redirect(url_for("clinician.care_session", session_id=care.id, sent=len(sent.messages)), 303)


def _short_title(assignment: Assignment | AssignmentRecord) -> str:
    try:
        return portal().engine.instruments.get(assignment.instrument_id, assignment.instrument_version).short_title
    except KeyError:
        return assignment.instrument_id


@bp.post("/sessions/<int:session_id>/cancel")
@allow("clinician")
def cancel_session(session_id: int) -> Any:
    care = _own(CareSession, session_id)
    form = make_form(ActionForm)
    if not form.validate():
        return form_problem(form)
    client_id, episode_id = care.episode.client_id, care.episode_id
    session = db_session()
    cancel_care_session(session, care, actor=actor(), address=address())
    session.commit()
    return redirect(url_for("clinician.client", client_id=client_id, episode=episode_id, cancelled=1), 303)


@bp.post("/assignments/<int:assignment_id>/reissue")
@allow("clinician")
def reissue(assignment_id: int) -> Any:
    assignment = _own(Assignment, assignment_id)
    form = make_form(ActionForm)
    if not form.validate():
        return form_problem(form)
    session = db_session()
    link = reissue_link(session, assignment, lifetime=_lifetime(), actor=actor(), address=address())
    session.commit()
    _hand_over([link])
    return redirect(url_for("clinician.links", session_id=assignment.session_id, reissued=1), 303)


@bp.post("/assignments/<int:assignment_id>/expire")
@allow("clinician")
def expire(assignment_id: int) -> Any:
    """End an unanswered link now (sent to the wrong person, say); re-issuing makes a new one."""
    assignment = _own(Assignment, assignment_id)
    form = make_form(ActionForm)
    if not form.validate():
        return form_problem(form)
    session = db_session()
    expire_link(session, assignment, actor=actor(), address=address())
    session.commit()
    return redirect(url_for("clinician.care_session", session_id=assignment.session_id), 303)


@bp.post("/sessions/<int:session_id>/kiosk")
@allow("clinician")
def start_kiosk(session_id: int) -> Any:
    """Hand this device to the client: the clinician is signed out here, the kiosk cookie set."""
    care = _own(CareSession, session_id)
    form = make_form(ActionForm)
    if not form.validate():
        return form_problem(form)
    signed_in = current_session()
    assert signed_in is not None
    session = db_session()
    _kiosk, token = unlock_kiosk(
        session,
        care,
        user_session=signed_in,
        hours=float(current_app.config["KIOSK_HOURS"]),
        actor=actor(),
        address=address(),
    )
    session.commit()
    g.clear_session_cookie = True
    g.new_kiosk_token = token
    return redirect(url_for("kiosk.kiosk"))


@bp.get("/responses/<int:response_id>")
@allow("clinician", "supervisor")
def response(response_id: int) -> Any:
    session = db_session()
    found, alerts = view_response(session, _user(), response_id, actor=actor(), address=address())
    session.commit()
    try:
        instrument = portal().engine.instruments.get(found.instrument_id, found.instrument_version)
    except KeyError:
        instrument = None
    score = found.score
    return render_template(
        "clinician/response.html",
        response=found,
        client=found.client,
        instrument=instrument,
        score=score,
        values=stored_score_values(score) if score is not None else {},
        alerts=alerts,
        titles=_titles(),
    )


@bp.post("/alerts/<int:alert_id>/acknowledge")
@allow("clinician")
def acknowledge(alert_id: int) -> Any:
    alert = _own(Alert, alert_id)
    form = make_form(AcknowledgeForm)
    if not form.validate():
        return form_problem(form)
    session = db_session()
    acknowledge_alert(session, alert, user_id=_user().id, note=form.note.data, actor=actor(), address=address())
    session.commit()
    if request.form.get("back") == "caseload":
        return redirect(url_for("clinician.caseload"), 303)
    return redirect(url_for("clinician.client", client_id=alert.client_id), 303)
