"""FHIR R4 export: Questionnaires from the instrument definitions, and a Bundle of responses.

One ``collection`` Bundle holds a ``Questionnaire`` per instrument version in the selection,
then for every response a ``QuestionnaireResponse`` and an ``Observation`` for each score that
has a LOINC code (PHQ-9 total 44261-6, GAD-7 total 70274-6). Clients appear by their
pseudonymous code (an identifier, never a resource of their own); display names only in an
identifying export. Licensed item wording is never exported: those items carry their topic.
The Bundle is written entry by entry, so its size does not matter.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable, Iterator
from decimal import Decimal
from typing import IO, Any

from core import (
    ExportContext,
    Exporter,
    ExportRow,
    Instrument,
    Item,
    Option,
    as_utc,
    decimal_to_json,
    hookimpl,
    item_label,
    write_text_lines,
)

LOINC = "http://loinc.org"
CLIENT_SYSTEM = "urn:rapportal:client-code"
CLINICIAN_EXTENSION = "urn:rapportal:fhir:clinician"
SCORE_PREFIX = "score."
_NAMESPACE = uuid.UUID("6b0e2f7c-3f0e-4bb8-9c8e-6a1f4c2d9e10")


def canonical_url(instrument: Instrument) -> str:
    return f"urn:rapportal:instrument:{instrument.id}"


def _resource_id(text: str) -> str:
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
        "id": _resource_id(f"{instrument.id}-{instrument.version}"),
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


def response_entries(row: ExportRow, context: ExportContext) -> Iterator[dict[str, Any]]:
    """The QuestionnaireResponse of one row and an Observation per LOINC-coded score."""
    instrument = context.instrument(row.instrument, row.version)
    response_url = f"urn:uuid:{uuid.uuid5(_NAMESPACE, f'response:{row.response_id}')}"
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
            "fullUrl": f"urn:uuid:{uuid.uuid5(_NAMESPACE, f'observation:{row.response_id}:{name}')}",
            "resource": observation,
        }


def _bundle_text(rows: Iterable[ExportRow], context: ExportContext) -> Iterator[str]:
    dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    head = {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "type": "collection",
        "timestamp": context.generated_at.isoformat(),
    }
    yield dumps(head)[:-1] + ',"entry":['
    first = True
    for instrument in context.instruments:
        resource = questionnaire(instrument)
        entry = {"fullUrl": f"urn:uuid:{uuid.uuid5(_NAMESPACE, resource['url'] + '|' + instrument.version)}"}
        yield ("" if first else ",\n") + dumps({**entry, "resource": resource})
        first = False
    for row in rows:
        for entry in response_entries(row, context):
            yield ("" if first else ",\n") + dumps(entry)
            first = False
    yield "]}\n"


def write_fhir(rows: Iterable[ExportRow], stream: IO[bytes], context: ExportContext) -> None:
    write_text_lines(stream, _bundle_text(rows, context))


@hookimpl
def register_exporters() -> list[Exporter]:
    return [
        Exporter(
            name="fhir",
            title="FHIR R4 Bundle: Questionnaires, QuestionnaireResponses, score Observations",
            extension="json",
            media_type="application/fhir+json",
            write=write_fhir,
        )
    ]
