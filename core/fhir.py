"""FHIR R4 resources from instrument definitions and scored responses, shared by the exporter and the API.

The FHIR exporter (plugins/export_fhir.py) writes them into a Bundle file; the API's FHIR face
(web/fhir.py) serves the same resources one by one and in search Bundles. A ``Questionnaire`` per
instrument version, a ``QuestionnaireResponse`` per response and an ``Observation`` for each score
that has a LOINC code. Clients appear by their pseudonymous code (an identifier, never a resource of
their own). Licensed item wording is never used: those items carry their topic.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

from core.export import as_utc, item_label
from core.exporters import ExportRow
from core.instruments import Instrument, Item, Option
from core.scoring import decimal_to_json

LOINC = "http://loinc.org"
CLIENT_SYSTEM = "urn:rapportal:client-code"
CLINICIAN_EXTENSION = "urn:rapportal:fhir:clinician"
SCORE_PREFIX = "score."
NAMESPACE = uuid.UUID("6b0e2f7c-3f0e-4bb8-9c8e-6a1f4c2d9e10")


def canonical_url(instrument: Instrument) -> str:
    return f"urn:rapportal:instrument:{instrument.id}"


def resource_id(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9\-.]", "-", text)[:64]


def _computable_name(instrument: Instrument) -> str:
    name = re.sub(r"[^A-Za-z0-9_]", "", instrument.short_title.title().replace("-", "_")) or "Instrument"
    return name if name[0].isalpha() and name[0].isupper() else "Q" + name


def _item_type(item: Item) -> str:
    types = item.schema.get("type", [])
    types = [types] if isinstance(types, str) else list(types)
    if item.options:
        return "choice"
    if "boolean" in types:
        return "boolean"
    if "integer" in types:
        return "integer"
    if "number" in types:
        return "decimal"
    return "text" if item.schema.get("maxLength", 0) > 255 else "string"


def _option(instrument: Instrument, option: Option) -> dict[str, Any]:
    system = instrument.codes.get("system", LOINC)
    if option.code:
        return {"valueCoding": {"system": system, "code": option.code, "display": option.label}}
    if isinstance(option.value, int) and not isinstance(option.value, bool):
        return {"valueInteger": option.value}
    return {"valueString": str(option.value)}


def questionnaire(instrument: Instrument) -> dict[str, Any]:
    """The FHIR R4 Questionnaire for one instrument version."""
    codes = instrument.codes
    system = codes.get("system", LOINC)
    resource: dict[str, Any] = {
        "resourceType": "Questionnaire",
        "id": resource_id(f"{instrument.id}-{instrument.version}"),
        "url": canonical_url(instrument),
        "version": instrument.version,
        "name": _computable_name(instrument),
        "title": instrument.title,
        "status": "active",
        "subjectType": ["Patient"],
        "description": instrument.citation,
        "copyright": " ".join(filter(None, [instrument.licence.notice, codes.get("attribution")])),
    }
    if codes.get("panel"):
        resource["code"] = [{"system": system, "code": codes["panel"], "display": instrument.title}]
    items: list[dict[str, Any]] = []
    for item in instrument.items:
        entry: dict[str, Any] = {"linkId": item.id, "text": item_label(instrument, item), "type": _item_type(item)}
        if item.code:
            entry["code"] = [{"system": system, "code": item.code}]
        if item.options:
            entry["answerOption"] = [_option(instrument, option) for option in item.options]
        items.append(entry)
    for spec in instrument.scoring.scores:
        entry = {"linkId": SCORE_PREFIX + spec.name, "text": spec.label, "type": "decimal", "readOnly": True}
        code = (codes.get("scores") or {}).get(spec.name)
        if code:
            entry["code"] = [{"system": system, "code": code, "display": spec.label}]
        items.append(entry)
    resource["item"] = items
    return resource


def _answer(item: Item | None, value: Any, instrument: Instrument | None) -> dict[str, Any] | None:
    if value is None:
        return None
    if item is not None and item.options and instrument is not None:
        for option in item.options:
            if option.value == value:
                return _option(instrument, option)
    if isinstance(value, bool):
        return {"valueBoolean": value}
    if isinstance(value, int):
        return {"valueInteger": value}
    if isinstance(value, float):
        return {"valueDecimal": value}
    if isinstance(value, list):
        return {"valueString": ";".join(map(str, value))}
    return {"valueString": str(value)}


def _reference(code: str, name: str | None) -> dict[str, Any]:
    reference: dict[str, Any] = {"identifier": {"system": CLIENT_SYSTEM, "value": code}}
    if name:
        reference["display"] = name
    return reference


def _score_value(value: Decimal) -> dict[str, Any]:
    return {
        "value": decimal_to_json(value),
        "unit": "{score}",
        "system": "http://unitsofmeasure.org",
        "code": "{score}",
    }


def questionnaire_entry(instrument: Instrument) -> dict[str, Any]:
    """A Bundle entry for the instrument version's Questionnaire (its ``fullUrl`` fixed by url and version)."""
    resource = questionnaire(instrument)
    return {
        "fullUrl": f"urn:uuid:{uuid.uuid5(NAMESPACE, resource['url'] + '|' + instrument.version)}",
        "resource": resource,
    }


def response_entries(row: ExportRow, instrument: Instrument | None) -> Iterator[dict[str, Any]]:
    """Bundle entries: the QuestionnaireResponse of one row and an Observation per LOINC-coded score.

    ``instrument`` is the definition the row was answered on (None when that version is gone).
    Each resource has an ``id`` (the response id; the response id and score name for an Observation),
    under which the API's FHIR face serves it.
    """
    response_url = f"urn:uuid:{uuid.uuid5(NAMESPACE, f'response:{row.response_id}')}"
    subject = _reference(row.client, row.extra.get("client_name"))
    authored = as_utc(row.submitted_at).isoformat()
    items: list[dict[str, Any]] = []
    known = {item.id: item for item in instrument.items} if instrument else {}
    order = list(known) or list(row.answers)
    for item_id in order:
        answer = _answer(known.get(item_id), row.answers.get(item_id), instrument)
        if answer is not None:
            items.append({"linkId": item_id, "answer": [answer]})
    for name, value in row.scores.items():
        if value is not None:
            items.append({"linkId": SCORE_PREFIX + name, "answer": [{"valueDecimal": decimal_to_json(value)}]})
    resource: dict[str, Any] = {
        "resourceType": "QuestionnaireResponse",
        "id": str(row.response_id),
        "identifier": {"system": "urn:rapportal:response", "value": str(row.response_id)},
        "questionnaire": f"urn:rapportal:instrument:{row.instrument}|{row.version}",
        "status": "completed",
        "subject": subject,
        "authored": authored,
        "source": subject,
    }
    if row.clinician:
        resource["extension"] = [{"url": CLINICIAN_EXTENSION, "valueString": row.clinician}]
    if items:
        resource["item"] = items
    yield {"fullUrl": response_url, "resource": resource}
    codes = instrument.codes if instrument else {}
    system = codes.get("system", LOINC)
    labels = {spec.name: spec.label for spec in instrument.scoring.scores} if instrument else {}
    for name, code in (codes.get("scores") or {}).items():
        value = row.scores.get(name)
        if value is None:
            continue
        observation = {
            "resourceType": "Observation",
            "id": observation_id(row.response_id, name),
            "status": "final",
            "category": [
                {
                    "coding": [
                        {
                            "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                            "code": "survey",
                            "display": "Survey",
                        }
                    ]
                }
            ],
            "code": {"coding": [{"system": system, "code": code, "display": labels.get(name, name)}]},
            "subject": subject,
            "effectiveDateTime": authored,
            "valueQuantity": _score_value(value),
            "derivedFrom": [{"reference": response_url}],
        }
        if row.band:
            observation["interpretation"] = [{"text": row.band}]
        yield {
            "fullUrl": f"urn:uuid:{uuid.uuid5(NAMESPACE, f'observation:{row.response_id}:{name}')}",
            "resource": observation,
        }


def observation_id(response_id: int, score: str) -> str:
    """The id of a response's Observation of one score."""
    return resource_id(f"{response_id}-{score}")
