"""FHIR export validated as R4 (fhirclient's 4.0.1 models, fhir.resources R4B) and checked against storage."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B.bundle import Bundle as R4BBundle
from fhirclient.models.bundle import Bundle as R4Bundle
from test_export import export_bytes
from test_export_support import NotesPlugin, seed, stored

from core import ExportSelection


@pytest.fixture
def app_config(app_config: dict[str, Any], tmp_path: Path) -> dict[str, Any]:
    return {**app_config, "EXTRA_PLUGINS": [NotesPlugin(tmp_path)]}


@pytest.fixture
def seeded(app: Any, licensed_wording: None) -> Any:
    return seed(app)


def bundle(app: Any, selection: ExportSelection | None = None) -> dict[str, Any]:
    document = json.loads(export_bytes(app, "fhir", selection))
    R4Bundle(document, strict=True)  # raises FHIRValidationError on anything R4 does not allow
    R4BBundle.model_validate(document)
    return document


def resources(document: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in document["entry"] if e["resource"]["resourceType"] == kind]


def test_bundle_validates_as_r4_and_holds_every_response(app: Any, seeded: Any) -> None:
    document = bundle(app)
    assert document["type"] == "collection"
    responses = resources(document, "QuestionnaireResponse")
    db = stored(app)
    assert {int(r["identifier"]["value"]) for r in responses} == set(db)
    for resource in responses:
        response, score = db[int(resource["identifier"]["value"])]
        answers = {i["linkId"]: i["answer"][0] for i in resource.get("item", [])}
        for name, value in score.values.items():
            if value is not None:
                assert Decimal(str(answers[f"score.{name}"]["valueDecimal"])) == Decimal(value)
        for item_id, value in response.answers.items():
            if value is None:
                assert item_id not in answers
        assert (
            resource["questionnaire"]
            == f"urn:rapportal:instrument:{response.instrument_id}|{response.instrument_version}"
        )
        assert "display" not in resource["subject"]


def test_questionnaires_carry_loinc_codes_and_answer_options(app: Any, seeded: Any) -> None:
    document = bundle(app, ExportSelection(instruments=("phq9",)))
    (phq9,) = resources(document, "Questionnaire")
    assert phq9["code"] == [{"system": "http://loinc.org", "code": "44249-1", "display": phq9["title"]}]
    first = phq9["item"][0]
    assert first["code"] == [{"system": "http://loinc.org", "code": "44250-9"}]
    assert first["answerOption"][3]["valueCoding"] == {
        "system": "http://loinc.org",
        "code": "LA6571-9",
        "display": "Nearly every day",
    }
    total = phq9["item"][-1]
    assert (total["linkId"], total["readOnly"], total["code"][0]["code"]) == ("score.total", True, "44261-6")
    assert "LOINC" in phq9["copyright"]


def test_coded_answers_use_the_loinc_answer_codes(app: Any, seeded: Any) -> None:
    document = bundle(app, ExportSelection(instruments=("phq9",)))
    full = next(
        r
        for r in resources(document, "QuestionnaireResponse")
        if r["identifier"]["value"] == str(seeded.ids["phq9_full"])
    )
    answers = {i["linkId"]: i["answer"][0] for i in full["item"]}
    assert answers["phq9_3"]["valueCoding"]["code"] == "LA6571-9"  # answered 3
    assert full["extension"] == [{"url": "urn:rapportal:fhir:clinician", "valueString": "alice"}]


def test_total_scores_with_a_loinc_code_become_observations(app: Any, seeded: Any) -> None:
    document = bundle(app)
    observations = resources(document, "Observation")
    by_code = {}
    for obs in observations:
        by_code.setdefault(obs["code"]["coding"][0]["code"], []).append(obs)
    assert set(by_code) == {"44261-6", "70274-6"}  # PHQ-9 and GAD-7 totals; other scores have no LOINC code
    values = sorted(Decimal(str(o["valueQuantity"]["value"])) for o in by_code["44261-6"])
    assert values == [Decimal("10.3"), Decimal("11")]
    (gad,) = by_code["70274-6"]
    assert gad["valueQuantity"]["value"] == 12
    assert gad["subject"]["identifier"]["value"] == "=D-002"
    urls = {e["fullUrl"] for e in document["entry"]}
    assert gad["derivedFrom"][0]["reference"] in urls


def test_licensed_wording_is_not_exported(app: Any, seeded: Any) -> None:
    document = bundle(app, ExportSelection(instruments=("srs",)))
    (srs,) = resources(document, "Questionnaire")
    assert [i["text"] for i in srs["item"][:4]] == ["Relationship", "Goals and topics", "Approach or method", "Overall"]
    response = resources(document, "QuestionnaireResponse")[0]
    assert {i["linkId"]: i["answer"][0] for i in response["item"]}["srs_3"] == {"valueDecimal": 7.3}


def test_identifying_export_names_the_client(app: Any, seeded: Any) -> None:
    document = bundle(app, ExportSelection(clients=("C-001",), identifying=True))
    assert {r["subject"]["display"] for r in resources(document, "QuestionnaireResponse")} == {"Carol Client"}


def test_an_invalid_resource_is_caught_by_the_validators() -> None:
    broken = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": {"resourceType": "Observation"}}]}
    with pytest.raises(Exception):  # noqa: B017 - either validator's error type
        R4Bundle(broken, strict=True)
