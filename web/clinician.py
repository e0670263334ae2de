"""The clinician's side: caseload, client page with charts, sessions and their links, alerts.

A clinician sees only the clients they are assigned to (main or further clinician); any
other client's pages answer 404, the same as a client that does not exist.
Links are shown once, when they are made: only their hashes are stored. To hand a link out
again the clinician re-issues it, which replaces the hash (the old link stops working).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import segno
import sqlalchemy as sa
import wtforms
from flask import Blueprint, abort, current_app, g, redirect, render_template, request, url_for
from flask_babel import gettext as _
from flask_babel import lazy_gettext as _l
from wtforms import validators as v

from core.accounts import end_session
from core.audit import record
from core.models import Alert, Assignment, CareSession, Client, Episode, KioskSession, Response, Score
from core.plans import BUILTIN_PLANS, DEFAULT_PLAN, PlanError, due_in_session, parse_plan, plan_text
from core.responses import create_assignment, is_expired, stored_score_values
from core.tokens import hash_token, new_token
from web.access import (
    StaffForm,
    actor,
    address,
    allow,
    choices,
    clinician_client_ids,
    current_session,
    current_user,
    form_problem,
    make_form,
    own_client,
)
from web.charts import Band, Line, Point, Series, line_chart
from web.state import db_session, portal

bp = Blueprint("clinician", __name__)

ORS_CUTOFF = Decimal(25)
SRS_CUTOFF = Decimal(36)
RELIABLE_CHANGE = Decimal(5)

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


# -- helpers ---------------------------------------------------------------------


def _own(model: Any, object_id: int) -> Any:
    """Load an object that belongs to a client; 404 unless the clinician is assigned to that client."""
    found = db_session().get(model, object_id)
    if found is None:
        abort(404)
    client_id = found.episode.client_id if isinstance(found, CareSession) else found.client_id
    own_client(client_id)
    return found


def _link(token: str) -> str:
    return url_for("client.answer", token=token, _external=True)


def _qr(url: str) -> str:
    # An SVG data URI, drawn here: no external service ever sees the link.
    return segno.make(url, error="m").svg_data_uri(scale=4, border=2)


def _issue(assignment: Assignment, token: str) -> dict[str, Any]:
    url = _link(token)
    instrument = portal().engine.instruments.get(assignment.instrument_id, assignment.instrument_version)
    return {"assignment": assignment, "title": instrument.short_title, "url": url, "qr": _qr(url)}


def _moment(episode: Episode, instrument_id: str) -> str:
    for rule in episode.plan or []:
        if rule["instrument"] == instrument_id:
            return rule["moment"]
    return ""


def _open_alerts(session: Any, client_ids: Any) -> list[Alert]:
    return list(
        session.scalars(
            sa.select(Alert)
            .where(Alert.client_id.in_(client_ids), Alert.acknowledged_at.is_(None))
            .order_by(Alert.created_at.desc(), Alert.id.desc())
        )
    )


def _titles() -> dict[str, str]:
    rules = portal().engine.alert_rules
    return {name: rule.title for name, rule in rules.items()}


# -- caseload --------------------------------------------------------------------


@bp.get("/caseload")
@allow("clinician")
def caseload() -> Any:
    session = db_session()
    user = current_user()
    assert user is not None
    ids = clinician_client_ids(session, user)
    clients = session.scalars(sa.select(Client).where(Client.id.in_(ids)).order_by(Client.code)).all()
    alerts = _open_alerts(session, ids)
    by_client: dict[int, list[Alert]] = defaultdict(list)
    for alert in alerts:
        by_client[alert.client_id].append(alert)
    pending = dict(
        session.execute(
            sa.select(Assignment.client_id, sa.func.count())
            .where(Assignment.client_id.in_(ids), Assignment.completed_at.is_(None))
            .group_by(Assignment.client_id)
        ).all()
    )
    last_seen = dict(
        session.execute(
            sa.select(Response.client_id, sa.func.max(Response.submitted_at))
            .where(Response.client_id.in_(ids))
            .group_by(Response.client_id)
        ).all()
    )
    codes = {c.id: c.code for c in clients}
    # the caseload shows client codes and alert messages: a view of client data like any other
    record(session, actor(), "caseload.view", None, address(), clients=len(clients), alerts=len(alerts))
    session.commit()
    return render_template(
        "clinician/caseload.html",
        clients=clients,
        alerts=alerts,
        by_client=by_client,
        pending=pending,
        last_seen=last_seen,
        codes=codes,
        titles=_titles(),
        ack_form=make_form(AcknowledgeForm),
    )


# -- client page -----------------------------------------------------------------


def _x_key(response: Response) -> tuple[str, str, Any]:
    care = response.assignment.session if response.assignment is not None else None
    if care is not None:
        return (f"s{care.number:04d}", f"S{care.number}", (0, care.number))
    day = response.submitted_at.strftime("%Y-%m-%d")
    return (f"d{day}", day, (1, response.submitted_at))


def _charts(client: Client, episode: Episode | None, rows: list[tuple[Response, Score | None]]) -> list[dict[str, Any]]:
    engine = portal().engine
    by_instrument: dict[str, list[tuple[Response, dict[str, Decimal | None]]]] = defaultdict(list)
    for response, score in rows:
        if score is not None:
            by_instrument[response.instrument_id].append((response, stored_score_values(score)))
    charts: list[dict[str, Any]] = []

    def href(response: Response) -> str:
        return url_for("clinician.response", response_id=response.id)

    def chart(
        chart_id: str, title: str, parts: list[tuple[str, str, str]], y_min: Decimal, y_max: Decimal, **extra: Any
    ) -> None:
        """parts: (series name, instrument id, score name)."""
        keys: dict[str, tuple[str, Any]] = {}
        series = []
        table_rows: dict[str, dict[str, Any]] = {}
        for name, instrument_id, score_name in parts:
            one = Series(name)
            for response, values in by_instrument.get(instrument_id, []):
                value = values.get(score_name)
                if value is None:
                    continue
                key, label, order = _x_key(response)
                keys[key] = (label, order)
                one.points.append(
                    Point(
                        key,
                        value,
                        href(response),
                        _("%(name)s %(value)s (%(when)s)", name=name, value=value, when=label),
                    )
                )
                row = table_rows.setdefault(key, {"label": label, "order": order, "values": {}})
                row["values"][name] = (value, href(response))
            series.append(one)
        if not any(s.points for s in series):
            return
        x_keys = [(k, label) for k, (label, _order) in sorted(keys.items(), key=lambda kv: kv[1][1])]
        charts.append(
            {
                "id": chart_id,
                "title": title,
                "svg": line_chart(chart_id, title, x_keys, series, y_min, y_max, **extra),
                "columns": [name for name, _i, _s in parts],
                "rows": [table_rows[k] for k, _label in x_keys],
                "notes": extra.get("notes_text", []),
            }
        )

    # ORS and SRS, with the cutoffs and the reliable-change band around the intake ORS.
    ors = by_instrument.get("ors", [])
    shaded = []
    notes = [_("ORS clinical cutoff %(value)s", value=ORS_CUTOFF), _("SRS cutoff %(value)s", value=SRS_CUTOFF)]
    if ors and ors[0][1].get("total") is not None:
        intake = ors[0][1]["total"]
        assert intake is not None
        band_label = _("intake ORS %(intake)s ± %(change)s", intake=intake, change=RELIABLE_CHANGE)
        shaded = [Band(intake - RELIABLE_CHANGE, intake + RELIABLE_CHANGE, band_label)]
        notes.append(
            _(
                "Reliable-change band: intake ORS %(intake)s ± %(change)s (%(low)s to %(high)s)",
                intake=intake,
                change=RELIABLE_CHANGE,
                low=intake - RELIABLE_CHANGE,
                high=intake + RELIABLE_CHANGE,
            )
        )
    chart(
        "chart-ors-srs",
        _("ORS and SRS totals by session"),
        [("ORS", "ors", "total"), ("SRS", "srs", "total")],
        Decimal(0),
        Decimal(40),
        lines=[
            Line(ORS_CUTOFF, _("ORS cutoff %(value)s", value=ORS_CUTOFF)),
            Line(SRS_CUTOFF, _("SRS cutoff %(value)s", value=SRS_CUTOFF)),
        ],
        shaded=shaded,
    )
    if charts and charts[-1]["id"] == "chart-ors-srs":
        charts[-1]["notes"] = notes
    chart(
        "chart-wai",
        _("WAI-SR subscales (sums, 4 to 20)"),
        [("Goal", "wai-sr", "goal"), ("Task", "wai-sr", "task"), ("Bond", "wai-sr", "bond")],
        Decimal(4),
        Decimal(20),
    )
    for instrument_id in ("phq9", "gad7", "core10"):
        if instrument_id not in engine.instruments:
            continue
        instrument = engine.instruments.get(instrument_id)
        scoring = instrument.scoring
        if not scoring.bands or scoring.band_score is None:
            continue
        bands = [Band(b.minimum, b.maximum, b.label or b.id) for b in scoring.bands]
        chart(
            f"chart-{instrument_id}",
            _("%(title)s %(score)s with its bands", title=instrument.short_title, score=scoring.band_score),
            [(instrument.short_title, instrument_id, scoring.band_score)],
            scoring.bands[0].minimum,
            scoring.bands[-1].maximum,
            bands=bands,
        )
        if charts and charts[-1]["id"] == f"chart-{instrument_id}":
            charts[-1]["notes"] = [
                _("%(band)s: %(low)s to %(high)s", band=b.label, low=b.low, high=b.high) for b in bands
            ]
    return charts


def _item_detail(rows: list[tuple[Response, Score | None]]) -> list[dict[str, Any]]:
    engine = portal().engine
    grouped: dict[str, list[Response]] = defaultdict(list)
    for response, _score in rows:
        grouped[response.instrument_id].append(response)
    detail = []
    for instrument_id, responses in grouped.items():
        try:
            instrument = engine.instruments.get(instrument_id, responses[-1].instrument_version)
        except KeyError:
            continue
        detail.append(
            {
                "title": instrument.short_title,
                "items": [(item.id, item.topic) for item in instrument.items],
                "responses": [(r, _x_key(r)[1]) for r in responses],
            }
        )
    return detail


@bp.get("/clients/<int:client_id>")
@allow("clinician")
def client(client_id: int) -> Any:
    found = own_client(client_id)
    session = db_session()
    episodes = found.episodes
    episode = None
    wanted = request.args.get("episode", type=int)
    for one in episodes:
        if wanted is None or one.id == wanted:
            episode = one
    query = (
        sa.select(Response, Score)
        .outerjoin(Score, Score.response_id == Response.id)
        .where(Response.client_id == found.id)
        .order_by(Response.submitted_at, Response.id)
    )
    if episode is not None:
        query = query.where(sa.or_(Response.episode_id == episode.id, Response.episode_id.is_(None)))
    rows = [(r, s) for r, s in session.execute(query).all()]
    alerts = _open_alerts(session, [found.id])
    record(session, actor(), "client.view", f"client:{found.id}", address(), episode=episode.id if episode else None)
    session.commit()
    return render_template(
        "clinician/client.html",
        client=found,
        episodes=episodes,
        episode=episode,
        charts=_charts(found, episode, rows),
        detail=_item_detail(rows),
        alerts=alerts,
        titles=_titles(),
        episode_form=make_form(EpisodeForm),
        action_form=make_form(ActionForm),
        ack_form=make_form(AcknowledgeForm),
        plan_text=plan_text,
        moment=_moment,
        now=datetime.now(UTC),
        is_expired=is_expired,
    )


@bp.post("/clients/<int:client_id>/episodes")
@allow("clinician")
def new_episode(client_id: int) -> Any:
    found = own_client(client_id)
    form = make_form(EpisodeForm)
    if not form.validate():
        return form_problem(form)
    if form.plan.data == "custom":
        try:
            rules = parse_plan(form.custom.data or "", portal().engine.instruments)
        except PlanError as exc:
            form.custom.errors = [str(exc)]
            return form_problem(form)
        name = "custom"
    else:
        name = form.plan.data
        rules = BUILTIN_PLANS[name][1]
    session = db_session()
    now = datetime.now(UTC)
    for open_episode in found.episodes:
        if open_episode.ended_at is None:
            open_episode.ended_at = now
    episode = Episode(client_id=found.id, title=(form.title.data or "").strip() or None, plan_name=name, plan=rules)
    session.add(episode)
    session.flush()
    record(session, actor(), "episode.create", f"client:{found.id}", address(), episode=episode.id, plan=name)
    session.commit()
    return redirect(url_for("clinician.client", client_id=found.id, episode=episode.id))


@bp.post("/episodes/<int:episode_id>/sessions")
@allow("clinician")
def new_session(episode_id: int) -> Any:
    episode = _own(Episode, episode_id)
    form = make_form(ActionForm)
    if not form.validate():
        return form_problem(form)
    session = db_session()
    engine = portal().engine
    number = (
        session.scalar(sa.select(sa.func.max(CareSession.number)).where(CareSession.episode_id == episode.id)) or 0
    ) + 1
    care = CareSession(episode_id=episode.id, number=number)
    session.add(care)
    session.flush()
    issued, skipped = [], []
    lifetime = timedelta(days=int(current_app.config["LINK_LIFETIME_DAYS"]))
    for rule in due_in_session(episode.plan or BUILTIN_PLANS[DEFAULT_PLAN][1], number):
        try:
            assignment, token = create_assignment(
                session,
                engine,
                episode.client,
                rule["instrument"],
                episode_id=episode.id,
                care_session_id=care.id,
                language=episode.client.language,
                lifetime=lifetime,
            )
        except KeyError:
            skipped.append((rule["instrument"], _("no such instrument is installed")))
            continue
        except ValueError:
            skipped.append((rule["instrument"], _("its licensed wording is not installed (see Plugins)")))
            continue
        issued.append(_issue(assignment, token) | {"moment": rule["moment"]})
    record(
        session,
        actor(),
        "session.create",
        f"client:{episode.client_id}",
        address(),
        care_session=care.id,
        number=number,
        assignments=[i["assignment"].id for i in issued],
        skipped=[s[0] for s in skipped],
    )
    session.commit()
    return render_template(
        "clinician/links.html",
        client=episode.client,
        care=care,
        issued=issued,
        skipped=skipped,
        action_form=make_form(ActionForm),
    ), 201


@bp.get("/sessions/<int:session_id>")
@allow("clinician")
def care_session(session_id: int) -> Any:
    care = _own(CareSession, session_id)
    session = db_session()
    record(session, actor(), "session.view", f"client:{care.episode.client_id}", address(), care_session=care.id)
    session.commit()
    titles = {a.id: _short_title(a) for a in care.assignments}
    return render_template(
        "clinician/session.html",
        care=care,
        client=care.episode.client,
        titles=titles,
        action_form=make_form(ActionForm),
        is_expired=is_expired,
        moment=_moment,
    )


def _short_title(assignment: Assignment) -> str:
    try:
        return portal().engine.instruments.get(assignment.instrument_id, assignment.instrument_version).short_title
    except KeyError:
        return assignment.instrument_id


@bp.post("/assignments/<int:assignment_id>/reissue")
@allow("clinician")
def reissue(assignment_id: int) -> Any:
    assignment = _own(Assignment, assignment_id)
    form = make_form(ActionForm)
    if not form.validate():
        return form_problem(form)
    if assignment.completed_at is not None:
        form.csrf_token.errors = []
        return render_template(
            "auth/problem.html",
            problems=[
                (_("Link"), "assignment", _("This questionnaire is already answered; its link cannot be re-issued."))
            ],
        ), 409
    token = new_token()
    assignment.token_hash = hash_token(token)
    assignment.expires_at = datetime.now(UTC) + timedelta(days=int(current_app.config["LINK_LIFETIME_DAYS"]))
    session = db_session()
    record(session, actor(), "link.reissue", f"client:{assignment.client_id}", address(), assignment=assignment.id)
    session.commit()
    care = assignment.session
    return render_template(
        "clinician/links.html",
        client=assignment.client,
        care=care,
        issued=[_issue(assignment, token) | {"moment": ""}],
        skipped=[],
        action_form=make_form(ActionForm),
        reissued=True,
    ), 201


@bp.post("/sessions/<int:session_id>/kiosk")
@allow("clinician")
def start_kiosk(session_id: int) -> Any:
    """Hand this device to the client: the clinician is signed out here, the kiosk cookie set."""
    care = _own(CareSession, session_id)
    form = make_form(ActionForm)
    if not form.validate():
        return form_problem(form)
    pending = [a.id for a in care.assignments if a.completed_at is None and not is_expired(a)]
    if not pending:
        return render_template(
            "auth/problem.html",
            problems=[(_("Kiosk"), "session", _("This session has no questionnaires left to answer."))],
        ), 409
    session = db_session()
    token = new_token()
    hours = int(current_app.config["KIOSK_HOURS"])
    user = current_user()
    assert user is not None
    kiosk = KioskSession(
        token_hash=hash_token(token),
        client_id=care.episode.client_id,
        created_by=user.id,
        assignment_ids=pending,
        expires_at=datetime.now(UTC) + timedelta(hours=hours),
    )
    session.add(kiosk)
    signed_in = current_session()
    assert signed_in is not None
    end_session(signed_in, "kiosk")
    session.flush()
    record(
        session,
        actor(),
        "kiosk.unlock",
        f"client:{care.episode.client_id}",
        address(),
        kiosk=kiosk.id,
        assignments=pending,
    )
    session.commit()
    g.clear_session_cookie = True
    g.new_kiosk_token = token
    return redirect(url_for("kiosk.kiosk"))


@bp.get("/responses/<int:response_id>")
@allow("clinician")
def response(response_id: int) -> Any:
    found = _own(Response, response_id)
    session = db_session()
    try:
        instrument = portal().engine.instruments.get(found.instrument_id, found.instrument_version)
    except KeyError:
        instrument = None
    score = found.score
    values = stored_score_values(score) if score is not None else {}
    alerts = session.scalars(sa.select(Alert).where(Alert.response_id == found.id)).all()
    record(session, actor(), "response.view", f"client:{found.client_id}", address(), response=found.id)
    session.commit()
    return render_template(
        "clinician/response.html",
        response=found,
        client=found.client,
        instrument=instrument,
        score=score,
        values=values,
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
    if alert.acknowledged_at is not None:
        return redirect(url_for("clinician.client", client_id=alert.client_id))
    user = current_user()
    assert user is not None
    alert.acknowledged_at = datetime.now(UTC)
    alert.acknowledged_by = user.id
    alert.note = form.note.data.strip()
    session = db_session()
    record(
        session, actor(), "alert.acknowledge", f"client:{alert.client_id}", address(), alert=alert.id, rule=alert.rule
    )
    session.commit()
    back = request.form.get("back")
    if back == "caseload":
        return redirect(url_for("clinician.caseload"))
    return redirect(url_for("clinician.client", client_id=alert.client_id))
