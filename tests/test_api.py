"""The JSON API (/api/v1) and its FHIR face in-process: keys, scopes, problems, the clinical flow, same numbers."""

from __future__ import annotations

import csv
import io
import json
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa
from fhir.resources.R4B.bundle import Bundle as R4BBundle
from fhir.resources.R4B.questionnaire import Questionnaire as R4BQuestionnaire
from fhirclient.models.bundle import Bundle as R4Bundle
from fhirclient.models.capabilitystatement import CapabilityStatement
from staff_support import ORS_ANSWERS, SRS_LOW, answer, audit_actions, make_world, page_token, sign_in

from core import ExportSelection
from core.api_keys import create_api_key, revoke_api_key
from core.export import run_export
from core.models import ApiKey, AuditEntry, User
from web.state import job_context


@pytest.fixture
def world(app: Any, licensed_wording: None) -> Any:
    return make_world(app)


def make_key(app: Any, owner: str, scopes: str = "read,write,export", **kwargs: Any) -> str:
    with app.extensions["rapportal"].sessions.begin() as session:
        return create_api_key(session, owner=owner, name="", scopes=scopes, actor="test", address=None, **kwargs).secret


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def run_flow(app: Any, world: Any) -> dict[str, Any]:
    """Client, episode, session and links through the API; answers through the links; returns what was made."""
    api = app.test_client()
    admin, ann = bearer(make_key(app, "admin")), bearer(make_key(app, "ann"))
    # a client without an episode first, so that the flow's client and episode ids differ
    assert api.post("/api/v1/clients", json={"code": "C-8", "clinician": "ann"}, headers=admin).status_code == 201
    made = api.post("/api/v1/clients", json={"code": "C-9", "clinician": "ann"}, headers=admin)
    assert made.status_code == 201, made.text
    client_id = made.json["id"]
    episode = api.post(f"/api/v1/clients/{client_id}/episodes", json={"plan": "pcoms"}, headers=ann)
    assert episode.status_code == 201, episode.text
    started = api.post(f"/api/v1/episodes/{episode.json['id']}/sessions", json={"number": 1}, headers=ann)
    assert started.status_code == 201, started.text
    links = {link["instrument"]: link["url"].split("://", 1)[1].split("/", 1)[1] for link in started.json["links"]}
    assert set(links) == {"ors", "srs"}
    assert answer(app, "/" + links["ors"], ORS_ANSWERS).status_code == 200
    held = app.test_client().get("/" + links["srs"])  # the SRS waits for the end of the session
    assert held.status_code == 200 and 'name="csrf_token"' not in held.text
    released = api.post(f"/api/v1/sessions/{started.json['id']}/release", json={}, headers=ann)
    assert released.status_code == 200 and released.json["changed"] is True and released.json["released_at"]
    again = api.post(f"/api/v1/sessions/{started.json['id']}/release", json={}, headers=ann)
    assert again.status_code == 200 and again.json["changed"] is False
    assert answer(app, "/" + links["srs"], SRS_LOW).status_code == 200
    return {"api": api, "ann": ann, "admin": admin, "client_id": client_id}


def test_the_whole_clinical_flow_runs_through_the_api_with_keys(app: Any, world: Any) -> None:
    flow = run_flow(app, world)
    api, ann, client_id = flow["api"], flow["ann"], flow["client_id"]
    listed = api.get(f"/api/v1/responses?client_id={client_id}", headers=ann).json["items"]
    totals = {row["instrument"]: row["scores"]["total"] for row in listed}
    assert totals == {"ors": 18.5, "srs": 32.0}
    assert {(row["client_id"], row["client"], row["complete"]) for row in listed} == {(client_id, "C-9", True)}
    alerts = api.get("/api/v1/alerts", headers=ann).json["items"]
    (alert,) = [a for a in alerts if a["client_id"] == client_id]
    assert "SRS 32.0 in session 1" in alert["message"]
    done = api.post(f"/api/v1/alerts/{alert['id']}/acknowledge", json={"note": "Talked it over."}, headers=ann)
    assert done.status_code == 200 and done.json["changed"] is True
    assert done.json["alert"]["note"] == "Talked it over."
    assert [a for a in api.get("/api/v1/alerts", headers=ann).json["items"] if a["client_id"] == client_id] == []
    admin = flow["admin"]
    started = api.post("/api/v1/exports", json={"format": "csv", "clients": ["C-9"]}, headers=admin)
    assert started.status_code == 202, started.text
    export_id = started.json["id"]
    assert api.get(f"/api/v1/exports/{export_id}/file", headers=admin).status_code == 409  # not written yet
    with app.app_context():
        app.extensions["rapportal"].jobs.run_until_idle(job_context(app))
    status = api.get(f"/api/v1/exports/{export_id}", headers=admin).json
    assert status["status"] == "done" and status["rows_written"] == 2
    download = api.get(f"/api/v1/exports/{export_id}/file", headers=admin)
    assert download.status_code == 200 and download.headers["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(download.data.decode("utf-8-sig"))))
    assert sorted(Decimal(row["score_total"]) for row in rows) == [Decimal("18.5"), Decimal("32.0")]
    assert api.get(f"/api/v1/exports/{export_id}", headers=ann).status_code == 403  # exports are for administrators
    actions = [action for actor, action, _target in audit_actions(app) if actor == "user:ann"]
    for expected in ("episode.create", "session.create", "responses.list", "caseload.view", "alert.acknowledge"):
        assert expected in actions
    by_admin = [action for actor, action, _target in audit_actions(app) if actor == "user:admin"]
    for expected in ("client.create", "export.started", "export.downloaded"):
        assert expected in by_admin


def test_api_numbers_equal_the_web_pages_the_export_and_the_fhir_face(app: Any, world: Any) -> None:
    flow = run_flow(app, world)
    api, ann = flow["api"], flow["ann"]
    rows = api.get(f"/api/v1/responses?client_id={flow['client_id']}", headers=ann).json["items"]
    state = app.extensions["rapportal"]
    out = io.BytesIO()
    run_export(state.sessions, state.engine, "csv", ExportSelection(clients=("C-9",)), out, actor="test")
    exported = {int(r["response_id"]): r for r in csv.DictReader(io.StringIO(out.getvalue().decode("utf-8-sig")))}
    web = app.test_client()
    sign_in(web, "ann")
    for row in rows:
        total = Decimal(str(row["scores"]["total"]))
        assert Decimal(exported[row["id"]]["score_total"]) == total
        detail = api.get(f"/api/v1/responses/{row['id']}", headers=ann).json
        assert Decimal(str(detail["scores"]["total"])) == total
        page = web.get(f"/responses/{row['id']}")
        assert page.status_code == 200 and str(total) in page.text
        resource = api.get(f"/fhir/R4/QuestionnaireResponse/{row['id']}", headers=ann).json
        items = {item["linkId"]: item["answer"][0] for item in resource["item"]}
        assert Decimal(str(items["score.total"]["valueDecimal"])) == total


def test_stateless_scoring_equals_rapportal_score(app: Any, world: Any, runner: Any) -> None:
    key = bearer(make_key(app, "ann", "read"))
    body = {"answers": {f"phq9_{i}": 2 for i in range(1, 10)}, "history": []}
    scored = app.test_client().post("/api/v1/instruments/phq9/score", json=body, headers=key)
    assert scored.status_code == 200, scored.text
    printed = runner.invoke(args=["score", "phq9"], input=json.dumps(body))
    assert printed.exit_code == 0, printed.output
    assert scored.json == json.loads(printed.output)
    wrong = app.test_client().post("/api/v1/instruments/phq9/score", json={"answers": {"phq9_1": 9}}, headers=key)
    assert wrong.status_code == 422
    assert wrong.headers["Content-Type"] == "application/problem+json"
    assert any(error["field"].startswith("answers.phq9_") for error in wrong.json["errors"])


def test_no_key_a_bad_key_a_revoked_or_expired_key_is_401(app: Any, world: Any) -> None:
    api = app.test_client()
    assert api.get("/api/v1/instruments").status_code == 401
    assert api.get("/api/v1/instruments", headers=bearer("rpk_nonsense")).status_code == 401
    key = make_key(app, "ann")
    assert api.get("/api/v1/instruments", headers=bearer(key)).status_code == 200
    with app.extensions["rapportal"].sessions.begin() as session:
        revoke_api_key(session, session.scalar(sa.select(ApiKey.id)), actor="test", address=None)
    refused = api.get("/api/v1/instruments", headers=bearer(key))
    assert refused.status_code == 401 and refused.json["errors"][0]["field"] == "Authorization"
    expiring = make_key(app, "ann", expires_at=datetime.now(UTC) + timedelta(seconds=1))
    with app.extensions["rapportal"].sessions.begin() as session:
        session.execute(sa.update(ApiKey).values(expires_at=datetime.now(UTC) - timedelta(days=1)))
    assert api.get("/api/v1/instruments", headers=bearer(expiring)).status_code == 401
    fresh = make_key(app, "ann")
    assert api.get("/api/v1/instruments", headers=bearer(fresh)).status_code == 200
    with app.extensions["rapportal"].sessions.begin() as session:  # the owner may no longer sign in
        session.execute(sa.update(User).where(User.username == "ann").values(active=False))
    assert api.get("/api/v1/instruments", headers=bearer(fresh)).status_code == 401


def test_a_read_key_cannot_write_and_a_clinician_key_cannot_add_clients(app: Any, world: Any) -> None:
    api = app.test_client()
    read = bearer(make_key(app, "ann", "read"))
    refused = api.post(f"/api/v1/clients/{world.client_id}/episodes", json={"plan": "pcoms"}, headers=read)
    assert refused.status_code == 403 and refused.json["errors"][0]["field"] == "scope"
    clinician = bearer(make_key(app, "ann", "read,write"))
    assert api.post("/api/v1/clients", json={"code": "C-77"}, headers=clinician).status_code == 403
    assert api.get(f"/api/v1/clients/{world.other_client_id}", headers=clinician).status_code == 404


def test_bad_input_is_a_problem_naming_the_field_never_a_500(app: Any, world: Any) -> None:
    api = app.test_client()
    key = bearer(make_key(app, "ann"))
    malformed = api.post(
        f"/api/v1/clients/{world.client_id}/episodes",
        data="{not json",
        headers={**key, "Content-Type": "application/json"},
    )
    assert malformed.status_code == 400 and malformed.json["errors"][0]["field"] == "body"
    listed = api.post(f"/api/v1/clients/{world.client_id}/episodes", json=[], headers=key)
    assert listed.status_code == 422 and listed.json["errors"][0]["field"] == "body"
    typed = api.post(f"/api/v1/episodes/{world.episode_id}/sessions", json={"number": "many"}, headers=key)
    assert typed.status_code == 422 and typed.json["errors"][0]["field"] == "number"
    huge = api.post(f"/api/v1/episodes/{world.episode_id}/sessions", json={"number": 10**40}, headers=key)
    assert huge.status_code == 422
    assert api.get("/api/v1/responses/99999999999999", headers=key).status_code == 404
    assert api.get("/api/v1/responses?cursor=forged", headers=key).json["errors"][0]["field"] == "cursor"
    nul = api.post("/api/v1/alerts/1/acknowledge", json={"note": "a\x00b"}, headers=key)
    assert nul.status_code == 400
    plan = api.post(f"/api/v1/clients/{world.client_id}/episodes", json={"plan": "nope"}, headers=key)
    assert plan.status_code == 422 and plan.json["errors"][0]["field"] == "plan"


def test_the_cursor_pages_through_every_response_once_and_cannot_be_moved_to_other_filters(
    app: Any, world: Any
) -> None:
    flow = run_flow(app, world)
    api, ann = flow["api"], flow["ann"]
    first = api.get("/api/v1/responses?limit=1", headers=ann).json
    assert len(first["items"]) == 1 and first["next_cursor"]
    second = api.get(f"/api/v1/responses?limit=1&cursor={first['next_cursor']}", headers=ann).json
    assert second["items"][0]["id"] > first["items"][0]["id"] and second["next_cursor"] is None
    moved = api.get(f"/api/v1/responses?limit=1&instrument=srs&cursor={first['next_cursor']}", headers=ann)
    assert moved.status_code == 400


def test_each_key_has_a_rate_limit_in_the_database(app: Any, world: Any) -> None:
    app.config["API_RATE_LIMIT"] = 3
    api = app.test_client()
    key = bearer(make_key(app, "ann", "read"))
    statuses = [api.get("/api/v1/instruments", headers=key).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    refused = api.get("/api/v1/instruments", headers=key)
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
    other = bearer(make_key(app, "bob", "read"))
    assert api.get("/api/v1/instruments", headers=other).status_code == 200


def test_the_fhir_face_validates_as_r4_and_keeps_licensed_wording_out(app: Any, world: Any) -> None:
    flow = run_flow(app, world)
    api, ann = flow["api"], flow["ann"]
    CapabilityStatement(api.get("/fhir/R4/metadata").json)
    for path in (
        "/fhir/R4/Questionnaire",
        "/fhir/R4/QuestionnaireResponse?subject:identifier=urn:rapportal:client-code|C-9",
        f"/fhir/R4/Observation?subject=C-9&date=ge{datetime.now(UTC).date()}",
    ):
        found = api.get(path, headers=ann)
        assert found.status_code == 200, (path, found.text)
        assert found.headers["Content-Type"].startswith("application/fhir+json")
        R4Bundle(found.json)
        R4BBundle.model_validate(found.json)
    questionnaires = api.get("/fhir/R4/Questionnaire", headers=ann).json["entry"]
    (srs,) = [e["resource"] for e in questionnaires if e["resource"]["url"].endswith(":srs")]
    R4BQuestionnaire.model_validate(api.get(f"/fhir/R4/Questionnaire/{srs['id']}", headers=ann).json)
    wording = app.extensions["rapportal"].engine.instruments.get("srs")
    served = json.dumps(questionnaires)
    for item in wording.items:
        assert item.text and item.text not in served
    responses = api.get("/fhir/R4/QuestionnaireResponse?subject=C-9", headers=ann).json
    assert {e["resource"]["subject"]["identifier"]["value"] for e in responses["entry"]} == {"C-9"}
    assert api.get("/fhir/R4/QuestionnaireResponse?subject=C-2", headers=ann).json["entry"] == []
    assert api.get("/fhir/R4/Observation").status_code == 401
    assert api.get("/fhir/R4/Observation?date=never", headers=ann).json["resourceType"] == "OperationOutcome"


def test_the_openapi_document_is_3_1_and_served_with_a_local_reference_page(app: Any) -> None:
    api = app.test_client()
    document = api.get("/api/v1/openapi.json").json
    assert document["openapi"].startswith("3.1")
    assert "/api/v1/responses" in document["paths"]
    page = api.get("/api/v1/reference")
    assert page.status_code == 200 and "/api/v1/alerts/{alert_id}/acknowledge" in page.text
    assert "http" not in "".join(line for line in page.text.splitlines() if "<script" in line)


def test_api_keys_from_the_command_line(app: Any, world: Any, runner: Any) -> None:
    made = runner.invoke(args=["api-keys", "create", "--owner", "ann", "--scopes", "read,write"])
    assert made.exit_code == 0, made.output
    secret = made.stdout.strip().splitlines()[0]
    assert secret.startswith("rpk_")
    assert app.test_client().get("/api/v1/instruments", headers=bearer(secret)).status_code == 200
    listed = runner.invoke(args=["api-keys", "list"])
    assert "ann" in listed.output and secret not in listed.output
    assert runner.invoke(args=["api-keys", "create", "--owner", "ann", "--scopes", "root"]).exit_code == 1
    assert runner.invoke(args=["api-keys", "revoke", "1"]).exit_code == 0
    assert app.test_client().get("/api/v1/instruments", headers=bearer(secret)).status_code == 401
    with app.extensions["rapportal"].sessions() as session:
        details = [e.detail for e in session.scalars(sa.select(AuditEntry).where(AuditEntry.action.like("api_key%")))]
    assert details and all(secret not in json.dumps(detail) for detail in details)


def test_an_administrator_makes_and_revokes_a_key_on_the_api_keys_page(app: Any, world: Any) -> None:
    web = app.test_client()
    sign_in(web, "admin")
    made = web.post(
        "/admin/api-keys",
        data={"csrf_token": page_token(web, "/admin/api-keys"), "owner": "ann", "scopes": ["read"], "name": "EHR"},
    )
    assert made.status_code == 303
    page = web.get("/admin/api-keys")
    secret = re.search(r'id="new-key" type="text" value="(rpk_[^"]+)"', page.text).group(1)
    assert "rpk_" not in web.get("/admin/api-keys").text.replace(secret[:10], "")  # shown once
    api = app.test_client()
    assert api.get("/api/v1/instruments", headers=bearer(secret)).status_code == 200
    assert api.get("/api/v1/alerts/1/acknowledge", headers=bearer(secret)).status_code == 405
    refused = web.post(
        "/admin/api-keys", data={"csrf_token": page_token(web, "/admin/api-keys"), "owner": "ann", "scopes": []}
    )
    assert refused.status_code == 422
    with app.extensions["rapportal"].sessions() as session:
        key_id = session.scalar(sa.select(ApiKey.id))
    revoked = web.post(f"/admin/api-keys/{key_id}/revoke", data={"csrf_token": page_token(web, "/admin/api-keys")})
    assert revoked.status_code == 303
    assert api.get("/api/v1/instruments", headers=bearer(secret)).status_code == 401
    clinician = app.test_client()
    sign_in(clinician, "ann")
    assert clinician.get("/admin/api-keys").status_code == 403
