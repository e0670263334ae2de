"""The JSON API's request and response bodies as pydantic models.

Spectree validates every request against these and generates the OpenAPI 3.1 document from the
same classes (web/api.py), so the document cannot drift from what the API accepts.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

DB_INT = 2**31 - 1  # what an id column holds (INTEGER on PostgreSQL)
Id = int
Scalar = int | float | str | bool | None
# A day as the query string carries it; checked as a date by the view (pydantic's date would also take 0 as 1970)
Day = Annotated[str, Field(pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$", json_schema_extra={"format": "date"})]


class Body(BaseModel):
    """A request body or query: unknown fields are refused (a misspelt field is a mistake, never ignored)."""

    model_config = ConfigDict(extra="forbid")


class FieldError(BaseModel):
    field: str = Field(description="The input at fault: a body field, a query parameter, an item id, ...")
    reason: str


class Problem(BaseModel):
    """RFC 9457 problem details, with the fields at fault."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    errors: list[FieldError] = []


# -- instruments and scoring ----------------------------------------------------------


class InstrumentSummary(BaseModel):
    id: str
    version: str
    title: str
    short_title: str
    language: str
    languages: list[str]
    licensed_wording: bool = Field(description="Its item wording is licensed and never served by the API")
    sendable: bool = Field(description="Clients can be sent it (its wording is bundled or installed)")


class InstrumentList(BaseModel):
    items: list[InstrumentSummary]


class OptionOut(BaseModel):
    value: Scalar
    label: str


class ItemOut(BaseModel):
    id: str
    text: str = Field(description="The wording, or the item's topic when the wording is licensed")
    json_schema: dict[str, Any] = Field(description="The JSON Schema an answer must fit")
    optional: bool
    options: list[OptionOut]


class NamedLabel(BaseModel):
    id: str
    label: str


class BandOut(BaseModel):
    id: str
    label: str
    minimum: float
    maximum: float


class InstrumentDefinition(InstrumentSummary):
    citation: str
    licence: str = Field(description="The licence's name")
    items: list[ItemOut]
    scores: list[NamedLabel]
    band_score: str | None
    bands: list[BandOut]
    flags: list[NamedLabel]


class ScoreRequest(Body):
    answers: dict[str, Scalar] = Field(description="Every item id, null for an unanswered item")
    history: list[dict[str, Scalar]] = Field(default=[], max_length=500, description="Earlier answers, oldest first")


class ScoreOut(BaseModel):
    instrument: str
    version: str
    complete: bool
    scores: dict[str, int | float | None]
    band: str | None
    flags: list[str]


class VersionQuery(Body):
    version: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.+-]{1,32}$")


# -- clients, episodes, sessions, links ------------------------------------------------


class ClientIn(Body):
    code: str = Field(max_length=64, description="A pseudonymous code: letters, digits and . _ -")
    display_name: str | None = Field(default=None, max_length=128)
    language: str = Field(default="en", max_length=16)
    clinician: str | None = Field(default=None, max_length=64, description="The main clinician's username")
    further: list[str] = Field(default=[], max_length=50, description="Further clinicians' usernames")
    site_id: int = Field(default=1, ge=1, le=DB_INT)


class ClientOut(BaseModel):
    id: Id
    code: str
    display_name: str | None
    language: str
    site_id: Id
    clinician: str | None = Field(description="The main clinician's username")


class ClientList(BaseModel):
    items: list[ClientOut]


class SessionOut(BaseModel):
    id: Id
    number: int
    held_at: datetime


class EpisodeOut(BaseModel):
    id: Id
    client_id: Id
    title: str | None
    plan: str | None
    started_at: datetime
    ended_at: datetime | None
    sessions: list[SessionOut]


class ClientDetail(ClientOut):
    episodes: list[EpisodeOut]


class EpisodeIn(Body):
    title: str | None = Field(default=None, max_length=128)
    plan: str = Field(default="pcoms", max_length=64, description="A built-in plan, or custom")
    custom_plan: str | None = Field(default=None, max_length=2000)


class SessionIn(Body):
    number: int = Field(ge=1, le=100000, description="The session to start: the next one, or one started already")


class LinkOut(BaseModel):
    assignment_id: Id
    instrument: str
    version: str
    moment: str
    url: str = Field(description="The client's link, shown only now")
    expires_at: datetime


class SkippedOut(BaseModel):
    instrument: str
    reason: Literal["not_installed", "no_wording"] | str


class SessionStarted(BaseModel):
    id: Id
    episode_id: Id
    number: int
    created: bool = Field(description="False when the session existed already: then no links are made again")
    links: list[LinkOut]
    skipped: list[SkippedOut]


class ReleaseIn(Body):
    """No fields: send ``{}``."""


class SessionReleased(BaseModel):
    id: Id
    changed: bool = Field(description="False when the session's end-of-session questionnaires were released already")
    released_at: datetime | None = Field(description="When they were released (null: the plan has none)")


class AssignmentIn(Body):
    instrument: str = Field(max_length=64)


# -- responses and alerts ----------------------------------------------------------------


class ResponseQuery(Body):
    client_id: int | None = Field(default=None, ge=1, le=DB_INT)
    instrument: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    since: Day | None = Field(default=None, description="Submitted on or after this day (UTC), YYYY-MM-DD")
    until: Day | None = Field(default=None, description="Submitted before this day (UTC), YYYY-MM-DD")
    # ASCII only (what a cursor is made of), so a request line stays within what the server reads (gunicorn: 4 KiB)
    cursor: str | None = Field(
        default=None, pattern=r"^[A-Za-z0-9._-]{1,512}$", description="next_cursor of the previous page"
    )
    limit: int = Field(default=50, ge=1, le=100)


class ResponseOut(BaseModel):
    id: Id
    client_id: Id
    client: str = Field(description="The client's code")
    instrument: str
    version: str
    session: int | None
    submitted_at: datetime
    complete: bool | None
    scores: dict[str, int | float | None]
    band: str | None
    flags: list[str]


class ResponsePage(BaseModel):
    items: list[ResponseOut]
    next_cursor: str | None


class AlertOut(BaseModel):
    id: Id
    client_id: Id
    response_id: Id
    severity: str
    title: str
    message: str
    created_at: datetime
    acknowledged_at: datetime | None
    note: str | None


class AlertList(BaseModel):
    items: list[AlertOut]


class ResponseDetail(ResponseOut):
    answers: dict[str, Any]
    alerts: list[AlertOut]


class AcknowledgeIn(Body):
    note: str = Field(max_length=2000, description="What you did or decided")


class Acknowledged(BaseModel):
    changed: bool = Field(description="False when the alert had been acknowledged already")
    alert: AlertOut


# -- exports -------------------------------------------------------------------------------


class ExportIn(Body):
    format: str = Field(max_length=32, description="An exporter: csv, xlsx, fhir, ...")
    instruments: list[str] = Field(default=[], max_length=50)
    since: Day | None = None
    until: Day | None = None
    clients: list[str] = Field(default=[], max_length=500, description="Client codes")
    clinicians: list[str] = Field(default=[], max_length=100, description="Clinicians' usernames")
    identifying: bool = Field(default=False, description="With display names")


class ExportOut(BaseModel):
    id: Id
    status: str = Field(description="queued, running, done (ready to download), failed or expired")
    rows_written: int | None
    rows_expected: int | None
    filename: str | None
    media_type: str | None
    error: str | None
