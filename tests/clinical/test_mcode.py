"""The oncology (mCODE) searches the patient level needs, $everything, and ImagingStudy linking."""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import httpx
import pytest
from fhirclient.models.bundle import Bundle as R4Bundle
from fhirpy import SyncFHIRClient

JENNY = "cancer-patient-jenny-m"


def _ids(bundle: dict[str, Any], mode: str = "match") -> list[str]:
    return [e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == mode]


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("http://snomed.info/sct|353431000119107", ["primary-cancer-condition-jenny-m"]),
        ("353431000119107", ["primary-cancer-condition-jenny-m"]),
        ("http://snomed.info/sct|", ["primary-cancer-condition-jenny-m"]),
        ("http://hl7.org/fhir/sid/icd-10-cm|C50.912", []),  # coded in SNOMED CT only
        ("http://snomed.info/sct|254637007", []),  # another patient's diagnosis
    ],
)
def test_primary_cancer_conditions_by_code(
    api: httpx.Client, mcode_loaded: list[Any], code: str, expected: list[str]
) -> None:
    params = {
        "subject": f"Patient/{JENNY}",
        "code": code,
        "_profile": "http://hl7.org/fhir/us/mcode/StructureDefinition/mcode-primary-cancer-condition",
    }
    assert _ids(api.get("/Condition", params=params).json()) == expected


def test_conditions_by_icd10_code(api: httpx.Client, mcode_loaded: list[Any]) -> None:
    coded = {
        e["id"]
        for e in mcode_loaded
        if e["resourceType"] == "Condition"
        and any(c["system"] == "http://hl7.org/fhir/sid/icd-10-cm" for c in e["code"].get("coding", []))
    }
    found = _ids(api.get("/Condition", params={"code": "http://hl7.org/fhir/sid/icd-10-cm|", "_count": 100}).json())
    assert coded
    assert set(found) == coded


def test_tnm_stage_group_with_members(api: httpx.Client, mcode_loaded: list[Any]) -> None:
    params = [
        ("subject", f"Patient/{JENNY}"),
        ("_profile", "http://hl7.org/fhir/us/mcode/StructureDefinition/mcode-tnm-stage-group"),
        ("_include", "Observation:has-member"),
    ]
    bundle = api.get("/Observation", params=tuple(params)).json()
    R4Bundle(bundle, strict=True)
    groups = {e["id"]: e for e in mcode_loaded if e["id"] in _ids(bundle)}
    assert groups
    members = {m["reference"].split("/")[1] for g in groups.values() for m in g.get("hasMember", [])}
    assert members
    assert set(_ids(bundle, "include")) == members


def test_disease_status_over_time(api: httpx.Client, fhir: SyncFHIRClient, mcode_loaded: list[Any]) -> None:
    statuses = fhir.resources("Observation").search(code="http://loinc.org|97509-4").sort("-date").fetch_all()
    dates = [s["effectiveDateTime"] for s in statuses if "effectiveDateTime" in s]
    assert len(dates) >= 2
    assert dates == sorted(dates, reverse=True)
    later = api.get("/Observation", params={"code": "http://loinc.org|97509-4", "date": "ge2019-01-01"}).json()
    assert all(e["resource"]["effectiveDateTime"] >= "2019" for e in later.get("entry", []))


def test_treatments_by_patient_and_date(api: httpx.Client, mcode_loaded: list[Any]) -> None:
    expected = sorted(
        e["id"]
        for e in mcode_loaded
        if e["resourceType"] == "Procedure"
        and e.get("subject", {}).get("reference") == f"Patient/{JENNY}"
        and ("performedDateTime" in e or "performedPeriod" in e)
        and (e.get("performedDateTime") or e["performedPeriod"].get("end", "9999")) >= "2018-04"
    )
    found = _ids(api.get("/Procedure", params={"subject": JENNY, "date": "ge2018-04", "_count": 100}).json())
    assert expected
    assert set(found) == set(expected)
    requests = api.get("/MedicationRequest", params={"subject": f"Patient/{JENNY}", "authoredon": "ge2000"}).json()
    assert requests["total"] == sum(
        1
        for e in mcode_loaded
        if e["resourceType"] == "MedicationRequest"
        and e["subject"]["reference"] == f"Patient/{JENNY}"
        and "authoredOn" in e
    )


def test_patients_by_diagnosis_via_has(api: httpx.Client, mcode_loaded: list[Any]) -> None:
    expected = sorted(
        {
            e["subject"]["reference"].split("/")[1]
            for e in mcode_loaded
            if e["resourceType"] == "Condition"
            and any("mcode-primary-cancer-condition" in p for p in e.get("meta", {}).get("profile", []))
        }
    )
    params: dict[str, str | int] = {
        "_has:Condition:subject:_profile": "http://hl7.org/fhir/us/mcode/StructureDefinition/mcode-primary-cancer-condition",
        "_count": 100,
    }
    # The server is shared with other tests' patients: judge the package's patients only.
    loaded = {e["id"] for e in mcode_loaded if e["resourceType"] == "Patient"}
    assert sorted(set(_ids(api.get("/Patient", params=params).json())) & loaded) == expected


def test_patient_everything(api: httpx.Client, mcode_loaded: list[Any]) -> None:
    bundle = api.get(f"/Patient/{JENNY}/$everything").json()
    R4Bundle(bundle, strict=True)
    got = {(e["resource"]["resourceType"], e["resource"]["id"]) for e in bundle["entry"]}
    referencing = {
        (e["resourceType"], e["id"])
        for e in mcode_loaded
        if e["resourceType"] != "Bundle" and f'"Patient/{JENNY}"' in json.dumps(e)
    }
    assert ("Patient", JENNY) in got
    assert referencing <= got
    assert ("Practitioner", "us-core-practitioner-owen-oncologist") in got
    assert not any(rid == "cancer-patient-john-anyperson" for _, rid in got)


def test_patient_everything_pages_with_next_links(api: httpx.Client, mcode_loaded: list[Any]) -> None:
    whole = api.get(f"/Patient/{JENNY}/$everything").json()
    assert whole["total"] == len(whole["entry"]) > 5
    assert [link["relation"] for link in whole["link"]] == ["self"]
    pages: list[dict[str, Any]] = []
    url: str | None = f"/Patient/{JENNY}/$everything?_count=4"
    while url is not None:
        page = api.get(url).json()
        R4Bundle(page, strict=True)
        assert len(page["entry"]) <= 5  # four, plus the patient on the first page
        pages.append(page)
        url = next((link["url"] for link in page["link"] if link["relation"] == "next"), None)
    assert len(pages) > 1
    assert all("total" not in page for page in pages)
    paged = [(e["resource"]["resourceType"], e["resource"]["id"]) for page in pages for e in page["entry"]]
    assert len(paged) == len(set(paged))  # no resource twice
    assert sorted(paged) == sorted((e["resource"]["resourceType"], e["resource"]["id"]) for e in whole["entry"])
    observations = api.get(f"/Patient/{JENNY}/$everything", params={"_type": "Observation", "_count": 3}).json()
    assert {e["resource"]["resourceType"] for e in observations["entry"]} == {"Observation"}
    numbers = base64.urlsafe_b64encode(b'{"d":"next","k":[1,2]}').decode()
    for cursor in ("nonsense", numbers):
        bad = api.get(f"/Patient/{JENNY}/$everything", params={"_cursor": cursor})
        assert bad.status_code == 400
        assert bad.json()["resourceType"] == "OperationOutcome"


def test_patient_bundle_loads_as_a_transaction(api: httpx.Client, mcode_examples: list[Any]) -> None:
    collection = next(e for e in mcode_examples if e["id"] == "mcode-patient-bundle-jenny-m")
    suffix = uuid.uuid4().hex[:6]
    entries = []
    for entry in collection["entry"]:
        resource = {**entry["resource"], "id": f"{entry['resource']['id'][:50]}-{suffix}"}
        entries.append(
            {
                "fullUrl": entry["fullUrl"],
                "resource": resource,
                "request": {"method": "PUT", "url": f"{resource['resourceType']}/{resource['id']}"},
            }
        )
    full_urls = {e["fullUrl"]: f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in entries}
    response = api.post("/", json={"resourceType": "Bundle", "type": "transaction", "entry": entries})
    assert response.status_code == 200, response.text
    stored = response.json()["entry"]
    assert all(e["response"]["status"].startswith("201") for e in stored)
    references = [ref for e in stored for ref in _references(e["resource"]) if ref.startswith(("http", "urn:"))]
    assert not [r for r in references if r in full_urls]  # every fullUrl reference was rewritten


def _references(value: Any) -> list[str]:
    if isinstance(value, dict):
        found = [value["reference"]] if isinstance(value.get("reference"), str) else []
        return found + [r for v in value.values() for r in _references(v)]
    if isinstance(value, list):
        return [r for v in value for r in _references(v)]
    return []


def test_imaging_study_conditional_update_on_study_instance_uid(api: httpx.Client) -> None:
    uid = f"1.2.826.0.1.3680043.8.498.{uuid.uuid4().int % 10**20}"
    study = {
        "resourceType": "ImagingStudy",
        "status": "available",
        "identifier": [{"system": "urn:dicom:uid", "value": f"urn:oid:{uid}"}],
        "subject": {"reference": f"Patient/{JENNY}"},
        "numberOfSeries": 1,
    }
    condition = f"identifier=urn:dicom:uid|urn:oid:{uid}"
    first = api.put(f"/ImagingStudy?{condition}", json=study)
    second = api.put(f"/ImagingStudy?{condition}", json={**study, "numberOfSeries": 2})
    assert (first.status_code, second.status_code) == (201, 200)
    assert first.json()["id"] == second.json()["id"]
    found = api.get("/ImagingStudy", params={"identifier": f"urn:dicom:uid|urn:oid:{uid}"}).json()
    assert found["total"] == 1
    assert found["entry"][0]["resource"]["numberOfSeries"] == 2
