"""The JSON API at /api/v1/: parse the request, call the care-domain function the web view calls, answer JSON.

Requests are validated by spectree against the pydantic models in :mod:`web.api_models`, and the
OpenAPI 3.1 document at ``/api/v1/openapi.json`` is generated from the same models and views. A
request carries an API key (``Authorization: Bearer <key>``): it acts as the key's owner, with the
owner's access, narrowed by the key's scopes (see core/api_keys.py). Every refusal is an RFC 9457
problem-details document naming the field and the reason.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from http import HTTPStatus
from pathlib import Path
from typing import Any

from flask import Blueprint, Flask, current_app, g, render_template, request, url_for
from itsdangerous import BadSignature, URLSafeSerializer
from spectree import Response as Responses
from spectree import SecurityScheme, SecuritySchemeData, SpecTree
from werkzeug.http import dump_options_header

from core.accounts import AccountError, user_by_username
from core.api_keys import find_api_key, spend_request
from core.care import (
    acknowledge_alert,
    issue_link,
    release_end_of_session,
    start_care_session,
    start_episode,
    view_caseload,
    view_client,
    view_response,
    visible_record,
)
from core.clients import create_client, list_clients, treated_client
from core.errors import Conflict, DatabaseUnavailable, DomainError, InvalidInput, NotAllowed, NotFound, RateLimited
from core.export import as_utc
from core.export_jobs import ExportFilters, export_status, open_export, start_export
from core.instruments import Instrument
from core.models import Alert, CareSession, Client, Episode, User
from core.records import ScoredRow, list_scored_responses, response_row
from core.scoring import decimal_to_json
from core.validation import ResponseValidationError
from web import api_models as m
from web.access import allow
from web.api_errors import problem
from web.state import db_session, portal

bp = Blueprint("api", __name__, url_prefix="/api/v1")

spec = SpecTree(
    "flask",
    title="Rapportal API",
    version="1",
    description="Clients, sessions, links, scores and alerts of a Rapportal portal. See docs/api.md.",
    mode="strict",
    page_templates={},
    annotations=True,
    validation_error_model=m.Problem,
    security_schemes=[SecurityScheme(name="bearer", data=SecuritySchemeData(type="http", scheme="bearer"))],
    security={"bearer": []},
)

SCOPE_ATTRIBUTE = "api_scope"
PUBLIC_ENDPOINTS = {"api.openapi", "api.reference"}


def needs(scope: str, *roles: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The scope a view needs, and the owner roles it serves (none given: any role; core checks access)."""

    def mark(view: Callable[..., Any]) -> Callable[..., Any]:
        setattr(view, SCOPE_ATTRIBUTE, (scope, roles))
        return allow("key")(view)

    return mark


def errors_for(*codes: int) -> dict[str, Any]:
    """Spectree response declarations: a problem document for each status."""
    return {f"HTTP_{code}": m.Problem for code in (400, 401, 403, 404, 429, *codes)}


def answers(model: Any, *codes: int) -> Responses:
    return Responses(HTTP_200=model, **errors_for(*codes))


# -- problems -----------------------------------------------------------------------------


DOMAIN_STATUS = {NotFound: 404, InvalidInput: 422, NotAllowed: 403, Conflict: 409, RateLimited: 429}


def _domain_problem(error: DomainError) -> Any:
    if isinstance(error, DatabaseUnavailable):
        return problem(503, error.message, headers={"Retry-After": "5"})
    status = next((code for kind, code in DOMAIN_STATUS.items() if isinstance(error, kind)), 422)
    headers = {"Retry-After": str(error.retry_after)} if isinstance(error, RateLimited) else None
    return problem(status, error.message, [(error.field or "request", error.message)], headers)


def _validation_problem(req: Any, resp: Any, error: Exception | None, _instance: Any, adapter: Any) -> None:
    """Spectree's hook: turn its validation error into a problem document naming each field."""
    if error is None or resp is None:
        return
    found = []
    for entry in adapter.validation_errors(error):
        location = ".".join(str(part) for part in entry.get("loc", ())) or "body"
        found.append((location, str(entry.get("msg", "invalid"))))
    fields = ", ".join(field for field, _reason in found[:5])
    body = m.Problem(
        title=HTTPStatus(422).phrase,
        status=422,
        detail=f"The request does not fit: {fields}.",
        errors=[m.FieldError(field=field, reason=reason) for field, reason in found],
    )
    resp.set_data(body.model_dump_json())
    resp.mimetype = "application/problem+json"


spec.before = _validation_problem


# -- keys, scopes and the request body ----------------------------------------------------


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _text_problem(value: Any, where: str = "body") -> str | None:
    """Where the JSON holds text the database cannot store (NUL, lone surrogates), or None."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return where
        return where if "\x00" in value else None
    if isinstance(value, dict):
        for key, inner in value.items():
            found = _text_problem(key, where) or _text_problem(inner, f"{where}.{key}"[:120])
            if found:
                return found
    if isinstance(value, list):
        for index, inner in enumerate(value):
            found = _text_problem(inner, f"{where}.{index}")
            if found:
                return found
    if isinstance(value, float) and not math.isfinite(value):
        return where
    return None


def _check_body() -> Any:
    if request.method not in ("POST", "PUT", "PATCH"):
        return None
    data = request.get_data(cache=True)
    if not data.strip():
        return problem(400, "The request needs a JSON body.", [("body", "missing")])
    if request.mimetype != "application/json":
        return problem(400, "Send the body as application/json.", [("Content-Type", "not application/json")])
    try:
        parsed = json.loads(data, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        return problem(400, "The body is not valid JSON.", [("body", str(exc)[:200])])
    if not isinstance(parsed, dict):
        return problem(422, "The body must be a JSON object.", [("body", f"got {type(parsed).__name__}")])
    where = _text_problem(parsed)
    if where:
        return problem(400, "The body holds text that cannot be stored.", [(where, "NUL, unpaired surrogate or NaN")])
    return None


@dataclass(frozen=True)
class Refusal:
    """Why a request was refused before its view ran: each face renders it in its own format."""

    status: int
    detail: str
    errors: tuple[tuple[str, str], ...] = ()
    headers: dict[str, str] = field(default_factory=dict)


CHALLENGE = {"WWW-Authenticate": 'Bearer realm="rapportal"'}


def authenticate(required: tuple[str, tuple[str, ...]] | None) -> Refusal | None:
    """Find the request's key, spend one request of its budget and check its scope; a refusal or None."""
    header = request.headers.get("Authorization", "")
    scheme, _space, secret = header.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        return Refusal(401, "Send an API key: Authorization: Bearer <key>.", (("Authorization", "missing"),), CHALLENGE)
    key = find_api_key(portal().db, secret.strip())  # read without a transaction: no write lock
    if key is None:
        return Refusal(401, "The API key is unknown, revoked or expired.", (("Authorization", "invalid"),), CHALLENGE)
    try:  # the count is committed by itself, whatever the request then does
        spend_request(portal().db, key.id, int(current_app.config["API_RATE_LIMIT"]))
    except RateLimited as exc:
        return Refusal(429, exc.message, (("Authorization", "rate limit"),), {"Retry-After": str(exc.retry_after)})
    g.api_key = key
    scope, roles = required or ("read", ())
    if scope not in key.scopes:
        return Refusal(403, f"This key lacks the {scope} scope.", (("scope", f"needs {scope}"),))
    if roles and key.owner_role not in roles:
        return Refusal(403, f"Only a key of a {' or '.join(roles)} can do this.", (("owner", "wrong role"),))
    return None


def _before_api_request() -> Any:
    if request.endpoint in PUBLIC_ENDPOINTS or request.endpoint is None:
        return None
    view = current_app.view_functions.get(request.endpoint)
    refused = authenticate(getattr(view, SCOPE_ATTRIBUTE, None))
    if refused is not None:
        return problem(refused.status, refused.detail, refused.errors, refused.headers)
    return _check_body()


bp.before_request(_before_api_request)
bp.register_error_handler(DomainError, _domain_problem)


def owner() -> User:
    """The key's owner, loaded in the request's session on first use (the scoring API never needs it)."""
    if "api_key_owner" not in g:
        g.api_key_owner = db_session().get(User, g.api_key.owner_id)
    return g.api_key_owner


def actor() -> str:
    """Audited like the owner's own pages: the owner's name (the key's id is in the rate-limit counter)."""
    return f"user:{g.api_key.owner_username}"


def address() -> str:
    return (request.remote_addr or "unknown")[:64]


def _utc(value: datetime | None) -> datetime | None:
    return as_utc(value) if value is not None else None


def _day(value: str | None, field_name: str) -> datetime | None:
    if value is None:
        return None
    try:
        return datetime.combine(date.fromisoformat(value), time(), tzinfo=UTC)
    except ValueError:
        raise InvalidInput("Use a day that exists, as YYYY-MM-DD.", field_name) from None


def _lifetime() -> timedelta:
    return timedelta(days=int(current_app.config["LINK_LIFETIME_DAYS"]))


# -- the document and its reference page ------------------------------------------------------


@bp.get("/openapi.json")
@allow("public")
def openapi() -> Any:
    """The OpenAPI 3.1 document, generated by spectree from the views and models below."""
    return current_app.json.response(openapi_document())


def openapi_document() -> dict[str, Any]:
    """Spectree's document, with problem responses typed ``application/problem+json`` as they are sent."""
    document = json.loads(json.dumps(spec.spec))
    document["servers"] = [{"url": "/"}]
    for operations in document.get("paths", {}).values():
        for operation in operations.values():
            for status, answer in operation.get("responses", {}).items():
                content = answer.get("content", {})
                if int(status) >= 400 and "application/json" in content:
                    answer["content"] = {"application/problem+json": content["application/json"]}
    download = document.get("paths", {}).get("/api/v1/exports/{export_id}/file", {}).get("get")
    if download:  # spectree knows JSON bodies only: the file is in the exporter's own format
        download["responses"]["200"] = {
            "description": "The export file, in its exporter's format (text/csv, application/fhir+json, ...)",
            "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
        }
    return document


@bp.get("/reference")
@allow("public")
def reference() -> Any:
    """A browsable reference drawn from the document here (no script, no CDN)."""
    return render_template("api/reference.html", document=openapi_document())


# -- instruments and scoring ---------------------------------------------------------------


def _summary(instrument: Instrument) -> dict[str, Any]:
    return {
        "id": instrument.id,
        "version": instrument.version,
        "title": instrument.title,
        "short_title": instrument.short_title,
        "language": instrument.language,
        "languages": list(instrument.languages),
        "licensed_wording": not instrument.licence.wording_bundled,
        "sendable": instrument.sendable,
    }


def _definition(instrument: Instrument) -> m.InstrumentDefinition:
    bundled = instrument.licence.wording_bundled
    items = [
        m.ItemOut(
            id=item.id,
            text=item.text if bundled and item.text else item.topic,
            json_schema=dict(item.schema),
            optional=item.optional,
            options=[m.OptionOut(value=option.value, label=option.label) for option in item.options],
        )
        for item in instrument.items
    ]
    scoring = instrument.scoring
    return m.InstrumentDefinition(
        **_summary(instrument),
        citation=instrument.citation,
        licence=instrument.licence.name,
        items=items,
        scores=[m.NamedLabel(id=score.name, label=score.label) for score in scoring.scores],
        band_score=scoring.band_score,
        bands=[
            m.BandOut(id=b.id, label=b.label, minimum=float(b.minimum), maximum=float(b.maximum)) for b in scoring.bands
        ],
        flags=[m.NamedLabel(id=flag.id, label=flag.label) for flag in scoring.flags],
    )


def _instrument(instrument_id: str, version: str | None = None) -> Instrument:
    try:
        return portal().engine.instruments.get(instrument_id, version)
    except KeyError:
        raise NotFound(f"No instrument {instrument_id!r} is installed in that version.", "instrument") from None


@bp.get("/instruments")
@spec.validate(resp=answers(m.InstrumentList), tags=["instruments"])
@needs("read")
def instruments() -> Any:
    """The installed instruments (the newest version of each)."""
    return m.InstrumentList(items=[m.InstrumentSummary(**_summary(i)) for i in portal().engine.instruments])


@bp.get("/instruments/<instrument_id>")
@spec.validate(resp=answers(m.InstrumentDefinition), tags=["instruments"])
@needs("read")
def instrument(instrument_id: str, query: m.VersionQuery) -> Any:
    """One instrument's definition: items (licensed wording replaced by the topic), scores, bands, flags."""
    return _definition(_instrument(instrument_id, query.version))


@bp.post("/instruments/<instrument_id>/score")
@spec.validate(resp=answers(m.ScoreOut), tags=["instruments"])
@needs("read")
def score(instrument_id: str, json: m.ScoreRequest, query: m.VersionQuery) -> Any:
    """Score answers (and earlier answers, oldest first) without storing anything: what `rapportal score` prints."""
    found = _instrument(instrument_id, query.version)
    try:
        result = portal().engine.score(found.id, json.answers, json.history, version=found.version)
    except ResponseValidationError as exc:
        where = "answers"
        for index, entry in enumerate(json.history):
            if entry is exc.answers:
                where = f"history.{index}"
        errors = [(f"{where}.{error.item}" if error.item else where, error.reason) for error in exc.errors]
        return problem(422, f"The {where} do not fit {found.id}.", errors)
    return m.ScoreOut(**result.to_json())


# -- clients, episodes, sessions and links ---------------------------------------------------


def _client(client: Client) -> dict[str, Any]:
    return {
        "id": client.id,
        "code": client.code,
        "display_name": client.display_name,
        "language": client.language,
        "site_id": client.site_id,
        "clinician": client.clinician.username if client.clinician else None,
    }


def _clinician_id(session: Any, username: str | None, field_name: str) -> int | None:
    if username is None:
        return None
    try:
        return user_by_username(session, username).id
    except AccountError:
        raise InvalidInput("There is no account with this username.", field_name) from None


def _episode(episode: Episode) -> m.EpisodeOut:
    return m.EpisodeOut(
        id=episode.id,
        client_id=episode.client_id,
        title=episode.title,
        plan=episode.plan_name,
        started_at=as_utc(episode.started_at),
        ended_at=_utc(episode.ended_at),
        sessions=[m.SessionOut(id=s.id, number=s.number, held_at=as_utc(s.held_at)) for s in episode.sessions],
    )


@bp.get("/clients")
@spec.validate(resp=answers(m.ClientList), tags=["clients"])
@needs("read")
def clients() -> Any:
    """The clients the key's owner sees: a clinician's caseload; every client at an administrator's sites."""
    session = db_session()
    user = owner()
    if user.role == "admin":
        found = [client for client, _clinician in list_clients(session, viewer=user, actor=actor(), address=address())]
    else:
        found = view_caseload(session, user, actor=actor(), address=address()).clients
    session.commit()
    return m.ClientList(items=[m.ClientOut(**_client(client)) for client in found])


@bp.post("/clients")
@spec.validate(resp=Responses(HTTP_201=m.ClientOut, **errors_for(422)), tags=["clients"])
@needs("write", "admin")
def new_client(json: m.ClientIn) -> Any:
    """Add a client (administrators), as the Clients page does."""
    session = db_session()
    client = create_client(
        session,
        code=json.code,
        display_name=json.display_name,
        language=json.language,
        languages=current_app.config["LANGUAGES"],
        clinician_id=_clinician_id(session, json.clinician, "clinician"),
        further_ids=[_clinician_id(session, name, "further") for name in json.further],
        site_id=json.site_id,
        actor=actor(),
        address=address(),
    )
    session.commit()
    return m.ClientOut(**_client(client)), 201


@bp.get("/clients/<int:client_id>")
@spec.validate(resp=answers(m.ClientDetail), tags=["clients"])
@needs("read", "clinician", "supervisor")
def client(client_id: int) -> Any:
    """One client with their episodes and sessions (the client page's record; audited as client.view)."""
    session = db_session()
    view = view_client(session, owner(), client_id, actor=actor(), address=address())
    session.commit()
    return m.ClientDetail(**_client(view.client), episodes=[_episode(e) for e in view.client.episodes])


@bp.post("/clients/<int:client_id>/episodes")
@spec.validate(resp=Responses(HTTP_201=m.EpisodeOut, **errors_for(422)), tags=["clients"])
@needs("write", "clinician", "supervisor")
def new_episode(client_id: int, json: m.EpisodeIn) -> Any:
    """Start an episode of care with a measurement plan; the open episode ends."""
    session = db_session()
    found = treated_client(session, owner(), client_id)
    episode = start_episode(
        session,
        portal().engine,
        found,
        title=json.title,
        plan=json.plan,
        custom_plan=json.custom_plan,
        actor=actor(),
        address=address(),
    )
    session.commit()
    return _episode(episode), 201


def _link(issued: Any) -> m.LinkOut:
    assignment = issued.assignment
    return m.LinkOut(
        assignment_id=assignment.id,
        instrument=assignment.instrument_id,
        version=assignment.instrument_version,
        moment=issued.moment,
        url=url_for("client.answer", token=issued.token, _external=True),
        expires_at=as_utc(assignment.expires_at),
    )


@bp.post("/episodes/<int:episode_id>/sessions")
@spec.validate(resp=Responses(HTTP_201=m.SessionStarted, **errors_for(409, 422)), tags=["clients"])
@needs("write", "clinician", "supervisor")
def new_session(episode_id: int, json: m.SessionIn) -> Any:
    """Start session ``number`` and make the links its plan gives; the links are in this answer only."""
    session = db_session()
    episode = visible_record(session, owner(), Episode, episode_id, to_change=True)
    started = start_care_session(
        session, portal().engine, episode, number=json.number, lifetime=_lifetime(), actor=actor(), address=address()
    )
    session.commit()
    body = m.SessionStarted(
        id=started.care.id,
        episode_id=episode.id,
        number=started.care.number,
        created=started.created,
        links=[_link(link) for link in started.links],
        skipped=[m.SkippedOut(instrument=i, reason=r) for i, r in started.skipped],
    )
    return body, 201 if started.created else 200


@bp.post("/sessions/<int:session_id>/release")
@spec.validate(resp=answers(m.SessionReleased, 422), tags=["clients"])
@needs("write", "clinician", "supervisor")
def release_session(session_id: int, json: m.ReleaseIn) -> Any:
    """Release the session's end-of-session questionnaires (the plan's ``end`` measures, the SRS of PCOMS):
    their links open from now on. Until then a held link tells the client it comes at the end of the session."""
    session = db_session()
    care = visible_record(session, owner(), CareSession, session_id, to_change=True)
    changed = release_end_of_session(session, owner(), care, actor=actor(), address=address())
    session.commit()
    return m.SessionReleased(id=care.id, changed=changed, released_at=_utc(care.end_released_at))


@bp.post("/clients/<int:client_id>/assignments")
@spec.validate(resp=Responses(HTTP_201=m.LinkOut, **errors_for(409, 422)), tags=["clients"])
@needs("write", "clinician", "supervisor")
def new_assignment(client_id: int, json: m.AssignmentIn) -> Any:
    """Make one link outside any session, in the client's language; the link is in this answer only."""
    session = db_session()
    found = treated_client(session, owner(), client_id)
    issued = issue_link(
        session, portal().engine, found, json.instrument, lifetime=_lifetime(), actor=actor(), address=address()
    )
    session.commit()
    return _link(issued), 201


# -- responses and alerts ------------------------------------------------------------------------


def _cursors() -> URLSafeSerializer:
    return URLSafeSerializer(current_app.config["SECRET_KEY"], salt="rapportal.api.cursor")


def _response(found: ScoredRow) -> dict[str, Any]:
    row = found.row
    return {
        "id": row.response_id,
        "client_id": found.client_id,
        "client": row.client,
        "instrument": row.instrument,
        "version": row.version,
        "session": int(row.session) if row.session is not None else None,
        "submitted_at": row.submitted_at,
        "complete": found.complete,
        "scores": {name: decimal_to_json(value) for name, value in row.scores.items()},
        "band": row.band,
        "flags": list(row.flags),
    }


@bp.get("/responses")
@spec.validate(resp=answers(m.ResponsePage, 422), tags=["responses"])
@needs("read", "clinician", "supervisor")
def responses(query: m.ResponseQuery) -> Any:
    """Scored responses the owner may see, oldest first, a page at a time (follow ``next_cursor``)."""
    filters = [query.client_id, query.instrument, str(query.since), str(query.until)]
    after = 0
    if query.cursor:
        try:
            after, cursor_filters = _cursors().loads(query.cursor)
        except (BadSignature, ValueError, TypeError):
            return problem(400, "The cursor is not one this API gave out.", [("cursor", "invalid")])
        if cursor_filters != filters or not isinstance(after, int):
            return problem(400, "The cursor belongs to other filters.", [("cursor", "other filters")])
    session = db_session()
    page = list_scored_responses(
        session,
        owner(),
        client_id=query.client_id,
        instrument=query.instrument,
        since=_day(query.since, "since"),
        until=_day(query.until, "until"),
        after_id=after,
        limit=query.limit,
        actor=actor(),
        address=address(),
    )
    session.commit()
    cursor = _cursors().dumps([page.rows[-1].row.response_id, filters]) if page.more else None
    return m.ResponsePage(items=[m.ResponseOut(**_response(row)) for row in page.rows], next_cursor=cursor)


def _alert(alert: Alert, titles: dict[str, str]) -> m.AlertOut:
    return m.AlertOut(
        id=alert.id,
        client_id=alert.client_id,
        response_id=alert.response_id,
        severity=alert.severity,
        title=titles.get(alert.rule, alert.rule),
        message=alert.message,
        created_at=as_utc(alert.created_at),
        acknowledged_at=_utc(alert.acknowledged_at),
        note=alert.note,
    )


@bp.get("/responses/<int:response_id>")
@spec.validate(resp=answers(m.ResponseDetail), tags=["responses"])
@needs("read", "clinician", "supervisor")
def response(response_id: int) -> Any:
    """One response: its answers, scores, band, flags and the alerts it raised (audited as response.view)."""
    session = db_session()
    found, alerts = view_response(session, owner(), response_id, actor=actor(), address=address())
    row = response_row(session, owner(), found)
    session.commit()
    titles = portal().engine.alert_titles()
    return m.ResponseDetail(
        **_response(row), answers=dict(row.row.answers), alerts=[_alert(alert, titles) for alert in alerts]
    )


@bp.get("/alerts")
@spec.validate(resp=answers(m.AlertList), tags=["alerts"])
@needs("read", "clinician", "supervisor")
def alerts() -> Any:
    """The open alerts of the owner's clients, as the caseload lists them (audited as caseload.view)."""
    session = db_session()
    caseload = view_caseload(session, owner(), actor=actor(), address=address())
    session.commit()
    titles = portal().engine.alert_titles()
    return m.AlertList(items=[_alert(alert, titles) for alert in caseload.alerts])


@bp.post("/alerts/<int:alert_id>/acknowledge")
@spec.validate(resp=answers(m.Acknowledged, 422), tags=["alerts"])
@needs("write", "clinician", "supervisor")
def acknowledge(alert_id: int, json: m.AcknowledgeIn) -> Any:
    """Close an alert with a note: what you did or decided."""
    session = db_session()
    alert = visible_record(session, owner(), Alert, alert_id, to_change=True)
    changed = acknowledge_alert(session, alert, user_id=owner().id, note=json.note, actor=actor(), address=address())
    session.commit()
    return m.Acknowledged(changed=changed, alert=_alert(alert, portal().engine.alert_titles()))


# -- exports ------------------------------------------------------------------------------------


def _export(row: Any) -> m.ExportOut:
    return m.ExportOut(
        id=row.id,
        status="expired" if row.status == "done" and row.expired else row.status,
        rows_written=row.rows_written,
        rows_expected=row.rows_expected,
        filename=row.filename,
        media_type=row.media_type,
        error=row.error,
    )


@bp.post("/exports")
@spec.validate(resp=Responses(HTTP_202=m.ExportOut, **errors_for(422)), tags=["exports"])
@needs("export", "admin")
def new_export(json: m.ExportIn) -> Any:
    """Start an export (administrators); a worker writes the file. Poll it, then download it."""
    session = db_session()
    filters = ExportFilters(
        instruments=tuple(json.instruments),
        since=_day(json.since, "since").date() if json.since else None,
        until=_day(json.until, "until").date() if json.until else None,
        clinicians=tuple(json.clinicians),
        clients=tuple(json.clients),
        identifying=json.identifying,
    )
    started = start_export(
        session,
        owner(),
        portal().jobs,
        exporter=json.format,
        filters=filters,
        engine=portal().engine,
        address=address(),
    )
    session.commit()
    return _export(started), 202


@bp.get("/exports/<int:export_id>")
@spec.validate(resp=answers(m.ExportOut), tags=["exports"])
@needs("export", "admin")
def export(export_id: int) -> Any:
    """How far an export has got: queued, running, done (then download it), failed or expired."""
    return _export(export_status(db_session(), owner(), export_id))


EXPORT_CHUNK = 64 * 1024


def _chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as handle:
        while chunk := handle.read(EXPORT_CHUNK):
            yield chunk


@bp.get("/exports/<int:export_id>/file")
@spec.validate(resp=Responses("HTTP_200", **errors_for(409)), tags=["exports"], skip_validation=True)
@needs("export", "admin")
def export_file(export_id: int) -> Any:
    """The finished export's file (audited as export.downloaded); 409 while it is not ready or after it expired."""
    session = db_session()
    path, filename, media_type = open_export(session, owner(), export_id, address=address())
    session.commit()
    headers = {
        "Content-Type": media_type,
        "Content-Disposition": dump_options_header("attachment", {"filename": filename}),
        "Content-Length": str(path.stat().st_size),
    }
    return _chunks(path), 200, headers  # streamed in chunks: the file never sits in memory whole


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
