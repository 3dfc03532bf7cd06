"""Batch and transaction Bundles: all-or-nothing, urn:uuid and conditional references, order, limits."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from fhirclient.models.bundle import Bundle as R4Bundle


def _transaction(*entries: dict[str, Any], kind: str = "transaction") -> dict[str, Any]:
    return {"resourceType": "Bundle", "type": kind, "entry": list(entries)}


def test_transaction_resolves_urn_uuid_and_conditional_references(api: httpx.Client) -> None:
    mrn = uuid.uuid4().hex
    patient_url = f"urn:uuid:{uuid.uuid4()}"
    bundle = _transaction(
        {
            "fullUrl": f"urn:uuid:{uuid.uuid4()}",
            "resource": {
                "resourceType": "Condition",
                "subject": {"reference": patient_url},
                "code": {"coding": [{"system": "http://snomed.info/sct", "code": "254637007"}]},
            },
            "request": {"method": "POST", "url": "Condition"},
        },
        {
            "fullUrl": patient_url,
            "resource": {"resourceType": "Patient", "identifier": [{"system": "urn:test:mrn", "value": mrn}]},
            "request": {"method": "POST", "url": "Patient", "ifNoneExist": f"identifier=urn:test:mrn|{mrn}"},
        },
    )
    response = api.post("/", json=bundle)
    assert response.status_code == 200, response.text
    result = R4Bundle(response.json(), strict=True)
    assert result.type == "transaction-response"
    assert [e.response.status for e in result.entry] == ["201 Created", "201 Created"]
    patient_id = result.entry[1].resource.id
    assert result.entry[0].resource.subject.reference == f"Patient/{patient_id}"
    # Conditional reference and conditional create matching the existing patient.
    again = _transaction(
        {
            "fullUrl": f"urn:uuid:{uuid.uuid4()}",
            "resource": {
                "resourceType": "Observation",
                "status": "final",
                "code": {"text": "x"},
                "subject": {"reference": f"Patient?identifier=urn:test:mrn|{mrn}"},
            },
            "request": {"method": "POST", "url": "Observation"},
        },
        {
            "resource": {"resourceType": "Patient", "identifier": [{"system": "urn:test:mrn", "value": mrn}]},
            "request": {"method": "POST", "url": "Patient", "ifNoneExist": f"identifier=urn:test:mrn|{mrn}"},
        },
    )
    second = api.post("/", json=again).json()
    assert second["entry"][0]["resource"]["subject"]["reference"] == f"Patient/{patient_id}"
    assert second["entry"][1]["response"]["status"] == "200 OK"
    assert api.get("/Patient", params={"identifier": f"urn:test:mrn|{mrn}"}).json()["total"] == 1


def test_failing_entry_rolls_back_the_whole_transaction(api: httpx.Client) -> None:
    mrn = uuid.uuid4().hex
    bundle = _transaction(
        {
            "resource": {"resourceType": "Patient", "identifier": [{"system": "urn:test:mrn", "value": mrn}]},
            "request": {"method": "POST", "url": "Patient"},
        },
        {
            "resource": {"resourceType": "Observation", "status": "final"},  # code missing
            "request": {"method": "POST", "url": "Observation"},
        },
    )
    response = api.post("/", json=bundle)
    assert response.status_code == 400
    issue = response.json()["issue"][0]
    assert "Bundle.entry[1]" in issue["diagnostics"]
    assert issue["expression"] == ["Bundle.entry[1].resource.code"]
    assert api.get("/Patient", params={"identifier": f"urn:test:mrn|{mrn}"}).json()["total"] == 0


def test_transaction_processes_delete_post_put_get_in_order(api: httpx.Client) -> None:
    pid = f"t-{uuid.uuid4().hex[:12]}"
    api.put(f"/Patient/{pid}", json={"resourceType": "Patient", "id": pid, "gender": "male"})
    bundle = _transaction(
        {"request": {"method": "GET", "url": f"Patient/{pid}"}},
        {
            "resource": {"resourceType": "Patient", "id": pid, "gender": "female"},
            "request": {"method": "PUT", "url": f"Patient/{pid}"},
        },
        {"request": {"method": "DELETE", "url": f"Patient/{pid}"}},
    )
    result = api.post("/", json=bundle).json()
    statuses = [e["response"]["status"] for e in result["entry"]]
    # DELETE first, then PUT (re-creates as version 3), then GET reads what PUT wrote.
    assert statuses == ["200 OK", "200 OK", "204 No Content"]
    assert result["entry"][0]["resource"]["gender"] == "female"
    assert result["entry"][0]["resource"]["meta"]["versionId"] == "3"


def test_batch_entries_succeed_or_fail_independently(api: httpx.Client) -> None:
    bundle = _transaction(
        {"resource": {"resourceType": "Patient"}, "request": {"method": "POST", "url": "Patient"}},
        {"request": {"method": "GET", "url": "Patient/does-not-exist"}},
        {"resource": {"resourceType": "Patient", "gender": "robot"}, "request": {"method": "POST", "url": "Patient"}},
        {"request": {"method": "GET", "url": "Patient?_count=1"}},
        kind="batch",
    )
    result = R4Bundle(api.post("/", json=bundle).json(), strict=True)
    assert result.type == "batch-response"
    assert [e.response.status.split()[0] for e in result.entry] == ["201", "404", "400", "200"]
    assert result.entry[2].response.outcome.issue[0].expression == ["Patient.gender"]


def test_bundle_limits_and_bad_bundles(api: httpx.Client) -> None:
    entry = {"resource": {"resourceType": "Patient"}, "request": {"method": "POST", "url": "Patient"}}
    too_many = api.post("/", json=_transaction(*([entry] * 1001)))
    assert too_many.status_code == 413
    assert too_many.json()["issue"][0]["code"] == "too-costly"
    assert api.post("/", json={"resourceType": "Bundle", "type": "collection"}).status_code == 400
    assert api.post("/", json={"resourceType": "Patient"}).status_code == 400
    assert api.post("/", content=b"{not json").status_code == 400
    bad_reference = _transaction(
        {
            "resource": {"resourceType": "Condition", "subject": {"reference": "Patient?identifier=urn:none|0"}},
            "request": {"method": "POST", "url": "Condition"},
        }
    )
    assert api.post("/", json=bad_reference).status_code == 412


def test_body_over_the_size_limit_is_413(api: httpx.Client) -> None:
    huge = {"resourceType": "Patient", "text": {"status": "generated", "div": "<div>" + "x" * 11_000_000 + "</div>"}}
    response = api.post("/Patient", json=huge)
    assert response.status_code == 413


@pytest.mark.parametrize(
    ("field", "value"),
    [("ifMatch", 5), ("ifNoneExist", ["identifier=x"]), ("fullUrl", {"urn": "x"})],
)
def test_bundle_elements_of_the_wrong_json_type_are_400(api: httpx.Client, field: str, value: object) -> None:
    request: dict[str, object] = {"method": "POST", "url": "Patient"}
    entry: dict[str, object] = {"resource": {"resourceType": "Patient"}, "request": request}
    if field == "fullUrl":
        entry["fullUrl"] = value
    else:
        request[field] = value
    response = api.post("/", json={"resourceType": "Bundle", "type": "transaction", "entry": [entry]},
                        headers={"Content-Type": "application/fhir+json"})  # fmt: skip
    assert response.status_code == 400, response.text
    assert response.json()["resourceType"] == "OperationOutcome"
