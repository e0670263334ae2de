"""The read-only FHIR R4 face at /fhir/R4/: Questionnaires, QuestionnaireResponses and score Observations.

The resources are built by core/fhir.py, the same code as the FHIR export, from the same rows
(core/records.py); the same API keys and scopes apply (``read``), and the same access rules: a
clinician reads their clients' responses, a supervisor their clinicians' clients'. Clients are
found by their pseudonymous code (``subject:identifier=urn:rapportal:client-code|C-0042``).
Licensed item wording is never served: those items carry their topic.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Blueprint, Flask, current_app, request, url_for
from itsdangerous import BadSignature, URLSafeSerializer

from core.care import view_response
from core.errors import DomainError, InvalidInput, NotFound
from core.fhir import CLIENT_SYSTEM, questionnaire, resource_id, response_entries
from core.records import MAX_PAGE_SIZE, list_scored_responses, response_row
from core.version import __version__
from web.access import allow
from web.api import Refusal, actor, address, authenticate, owner
from web.api_errors import operation_outcome
from web.state import db_session, portal

bp = Blueprint("fhir", __name__, url_prefix="/fhir/R4")

FHIR_JSON = "application/fhir+json"
CLINICAL = ("read", ("clinician", "supervisor"))
DEFINITIONS = ("read", ())


def _fhir(body: dict[str, Any], status: int = 200) -> Any:
    response = current_app.json.response(body)
    response.status_code = status
    response.mimetype = FHIR_JSON
    return response


def _refused(refusal: Refusal) -> Any:
    return operation_outcome(refusal.status, refusal.detail, refusal.headers)


def _domain_error(error: DomainError) -> Any:
    status = 404 if isinstance(error, NotFound) else 400
    return operation_outcome(status, f"{error.field}: {error.message}" if error.field else error.message)


def _before() -> Any:
    if request.endpoint in (None, "fhir.metadata"):
        return None
    required = (
        CLINICAL
        if request.endpoint.startswith("fhir.questionnaire_response") or "observation" in (request.endpoint)
        else DEFINITIONS
    )
    refusal = authenticate(required)
    return _refused(refusal) if refusal is not None else None


bp.before_request(_before)
bp.register_error_handler(DomainError, _domain_error)


@bp.get("/metadata")
@allow("public")
def metadata() -> Any:
    """The CapabilityStatement: what this server reads and searches."""
    search = [
        {"name": "subject", "type": "reference", "documentation": "subject:identifier=urn:rapportal:client-code|CODE"},
        {"name": "date", "type": "date", "documentation": "ge, gt, le, lt or eq a day (YYYY-MM-DD, UTC)"},
        {"name": "_count", "type": "number", "documentation": f"page size, at most {MAX_PAGE_SIZE}"},
    ]
    read = [{"code": "read"}, {"code": "search-type"}]
    return _fhir(
        {
            "resourceType": "CapabilityStatement",
            "status": "active",
            "date": datetime.now(UTC).date().isoformat(),
            "kind": "instance",
            "software": {"name": "Rapportal", "version": __version__},
            "implementation": {"description": "Rapportal read-only FHIR R4 face", "url": request.url_root + "fhir/R4"},
            "fhirVersion": "4.0.1",
            "format": [FHIR_JSON],
            "rest": [
                {
                    "mode": "server",
                    "security": {"description": "Authorization: Bearer <API key> with the read scope"},
                    "resource": [
                        {"type": "Questionnaire", "interaction": read, "searchParam": []},
                        {"type": "QuestionnaireResponse", "interaction": read, "searchParam": search},
                        {"type": "Observation", "interaction": read, "searchParam": search},
                    ],
                }
            ],
        }
    )


def _bundle(entries: list[dict[str, Any]], next_url: str | None = None) -> dict[str, Any]:
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "link": [{"relation": "self", "url": request.url}],
        "entry": [{**entry, "search": {"mode": "match"}} for entry in entries],
    }
    if next_url:
        bundle["link"].append({"relation": "next", "url": next_url})
    elif "_cursor" not in request.args:
        bundle["total"] = len(entries)  # everything matched is on this one page
    return bundle


@bp.get("/Questionnaire")
@allow("key")
def questionnaire_search() -> Any:
    """Every installed instrument version as a Questionnaire."""
    entries = []
    for instrument in sorted(portal().engine.instruments.all_versions(), key=lambda i: (i.id, i.version)):
        resource = questionnaire(instrument)
        entries.append({"fullUrl": url_for("fhir.questionnaire_read", resource=resource["id"], _external=True),
                        "resource": resource})  # fmt: skip
    return _fhir(_bundle(entries))


@bp.get("/Questionnaire/<resource>")
@allow("key")
def questionnaire_read(resource: str) -> Any:
    for instrument in portal().engine.instruments.all_versions():
        if resource_id(f"{instrument.id}-{instrument.version}") == resource:
            return _fhir(questionnaire(instrument))
    return operation_outcome(404, f"No Questionnaire {resource[:64]!r}.")


def _day(text: str) -> datetime:
    try:
        return datetime.strptime(text[:10], "%Y-%m-%d").replace(tzinfo=UTC)
    except ValueError:
        raise InvalidInput("Use a day as YYYY-MM-DD, with ge, gt, le, lt or eq before it.", "date") from None


def _date_range() -> tuple[datetime | None, datetime | None]:
    since = until = None
    for value in request.args.getlist("date"):
        prefix, day = (value[:2], value[2:]) if value[:2] in ("ge", "gt", "le", "lt", "eq") else ("eq", value)
        start = _day(day)
        if prefix in ("ge", "eq"):
            since = max(since, start) if since else start
        if prefix == "gt":
            since = max(since, start + timedelta(days=1)) if since else start + timedelta(days=1)
        if prefix in ("le", "eq"):
            until = min(until, start + timedelta(days=1)) if until else start + timedelta(days=1)
        if prefix == "lt":
            until = min(until, start) if until else start
    return since, until


def _subject() -> str | None:
    value = request.args.get("subject:identifier") or request.args.get("subject")
    if value is None:
        return None
    system, bar, code = value.rpartition("|")
    if bar and system and system != CLIENT_SYSTEM:
        raise InvalidInput(f"Clients are identified in the system {CLIENT_SYSTEM}.", "subject")
    return code or None


def _cursors() -> URLSafeSerializer:
    return URLSafeSerializer(current_app.config["SECRET_KEY"], salt="rapportal.fhir.cursor")


def _search(kind: str) -> Any:
    try:
        count = int(request.args.get("_count", "50"))
    except ValueError:
        count = 0
    if not 1 <= count <= MAX_PAGE_SIZE:
        raise InvalidInput(f"Use a whole number from 1 to {MAX_PAGE_SIZE}.", "_count")
    subject, (since, until) = _subject(), _date_range()
    filters = [subject, str(since), str(until)]
    after = 0
    if "_cursor" in request.args:
        try:
            after, cursor_filters = _cursors().loads(request.args["_cursor"])
        except (BadSignature, ValueError, TypeError):
            raise InvalidInput("The cursor is not one this server gave out.", "_cursor") from None
        if cursor_filters != filters or not isinstance(after, int):
            raise InvalidInput("The cursor belongs to other search parameters.", "_cursor")
    session = db_session()
    page = list_scored_responses(
        session,
        owner(),
        client_code=subject,
        since=since,
        until=until,
        after_id=after,
        limit=count,
        actor=actor(),
        address=address(),
    )
    session.commit()
    engine = portal().engine
    entries = []
    for scored in page.rows:
        row = scored.row
        try:
            instrument = engine.instruments.get(row.instrument, row.version)
        except KeyError:
            instrument = None
        for entry in response_entries(row, instrument):
            if entry["resource"]["resourceType"] == kind:
                entries.append(entry)
    next_url = None
    if page.more:
        args = request.args.to_dict(flat=False)
        args["_cursor"] = [_cursors().dumps([page.rows[-1].row.response_id, filters])]
        next_url = url_for(request.endpoint, _external=True, **args)
    return _fhir(_bundle(entries, next_url))


def _entries_of(response_id: int) -> list[dict[str, Any]]:
    session = db_session()
    found, _alerts = view_response(session, owner(), response_id, actor=actor(), address=address())
    row = response_row(session, owner(), found).row
    session.commit()
    try:
        instrument = portal().engine.instruments.get(row.instrument, row.version)
    except KeyError:
        instrument = None
    return list(response_entries(row, instrument))


@bp.get("/QuestionnaireResponse")
@allow("key")
def questionnaire_response_search() -> Any:
    """QuestionnaireResponses of the key owner's clients, by subject and date."""
    return _search("QuestionnaireResponse")


@bp.get("/QuestionnaireResponse/<int:response_id>")
@allow("key")
def questionnaire_response_read(response_id: int) -> Any:
    return _fhir(_entries_of(response_id)[0]["resource"])


@bp.get("/Observation")
@allow("key")
def observation_search() -> Any:
    """Observations of scored totals (those with a LOINC code), by subject and date."""
    return _search("Observation")


@bp.get("/Observation/<resource>")
@allow("key")
def observation_read(resource: str) -> Any:
    number, dash, _score = resource.partition("-")
    if not dash or not number.isdigit() or len(number) > 10 or int(number) > 2**31 - 1:
        return operation_outcome(404, f"No Observation {resource[:64]!r}.")
    for entry in _entries_of(int(number))[1:]:
        if entry["resource"]["id"] == resource:
            return _fhir(entry["resource"])
    return operation_outcome(404, f"No Observation {resource[:64]!r}.")


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
