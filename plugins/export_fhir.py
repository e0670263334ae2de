"""FHIR R4 export: Questionnaires from the instrument definitions, and a Bundle of responses.

One ``collection`` Bundle holds a ``Questionnaire`` per instrument version in the selection,
then for every response a ``QuestionnaireResponse`` and an ``Observation`` for each score that
has a LOINC code (PHQ-9 total 44261-6, GAD-7 total 70274-6). Clients appear by their
pseudonymous code (an identifier, never a resource of their own); display names only in an
identifying export. Licensed item wording is never exported: those items carry their topic.
The Bundle is written entry by entry, so its size does not matter. The resources themselves are
built by core (``fhir_questionnaire_entry``, ``fhir_response_entries``), which the API's FHIR face serves too.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Iterator
from typing import IO

from core import (
    ExportContext,
    Exporter,
    ExportRow,
    fhir_questionnaire_entry,
    fhir_response_entries,
    hookimpl,
    write_text_lines,
)


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
        yield ("" if first else ",\n") + dumps(fhir_questionnaire_entry(instrument))
        first = False
    for row in rows:
        for entry in fhir_response_entries(row, context.instrument(row.instrument, row.version)):
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
