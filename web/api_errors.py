"""Refusals of the JSON API and the FHIR face as documents: RFC 9457 problem details, FHIR OperationOutcome."""

from __future__ import annotations

from collections.abc import Iterable
from http import HTTPStatus
from typing import Any

from flask import current_app, request

from web.api_models import FieldError, Problem


def problem(
    status: int, detail: str, errors: Iterable[tuple[str, str]] = (), headers: dict[str, str] | None = None
) -> Any:
    """An RFC 9457 problem-details response naming each field at fault and why."""
    body = Problem(
        title=HTTPStatus(status).phrase,
        status=status,
        detail=detail,
        errors=[FieldError(field=field, reason=reason) for field, reason in errors],
    )
    response = current_app.response_class(body.model_dump_json(), status=status, mimetype="application/problem+json")
    response.headers.update(headers or {})
    return response


FHIR_ISSUE_CODES = {400: "invalid", 401: "login", 403: "forbidden", 404: "not-found", 422: "invalid", 429: "throttled"}


def operation_outcome(status: int, detail: str, headers: dict[str, str] | None = None) -> Any:
    """A FHIR OperationOutcome response (the FHIR face's way of refusing)."""
    body = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": FHIR_ISSUE_CODES.get(status, "processing"), "diagnostics": detail}],
    }
    response = current_app.json.response(body)
    response.status_code = status
    response.mimetype = "application/fhir+json"
    response.headers.update(headers or {})
    return response


def api_error(status: int, error: Any) -> Any:
    """A framework refusal (404, 405, 413, ...) under /api/ or /fhir/, in that face's format.

    A 405 lists the methods the path answers to in ``Allow`` (RFC 9110).
    """
    detail = getattr(error, "description", None) or HTTPStatus(status).phrase
    methods = getattr(error, "valid_methods", None)
    headers = {"Allow": ", ".join(sorted(methods))} if methods else None
    if request.path.startswith("/fhir/"):
        return operation_outcome(status, str(detail), headers)
    return problem(status, str(detail), headers=headers)
