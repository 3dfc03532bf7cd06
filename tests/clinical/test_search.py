"""Search driven by the R4 SearchParameter definitions: types, modifiers, prefixes, results, paging."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from fhirclient.models.bundle import Bundle as R4Bundle

from tests.support import Issuer, bearer

RUN = uuid.uuid4().hex[:10]
SYSTEM = f"urn:test:{RUN}"


@pytest.fixture(scope="module")
def population(api: httpx.Client) -> dict[str, str]:
    """Three patients and their observations, tagged with this run's identifier system."""
    patients = [
        {"family": "Müller", "given": ["Anna"], "birthDate": "1960-04-01", "gender": "female"},
        {"family": "Mueller", "given": ["Bob"], "birthDate": "1975", "gender": "male"},
        {"family": "Smith", "given": ["Carol"], "birthDate": "1960-04-15", "gender": "female"},
    ]
    ids: dict[str, str] = {}
    for n, p in enumerate(patients):
        resource = {
            "resourceType": "Patient",
            "identifier": [
                {
                    "system": SYSTEM,
                    "value": f"mrn-{n}",
                    "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "MR"}]},
                }
            ],
            "name": [{"family": p["family"], "given": p["given"]}],
            "birthDate": p["birthDate"],
            "gender": p["gender"],
            "meta": {"tag": [{"system": SYSTEM, "code": f"tag-{n % 2}"}]},
        }
        ids[p["given"][0]] = api.post("/Patient", json=resource).json()["id"]
    for n, (who, value) in enumerate([("Anna", 5.4), ("Anna", 120), ("Bob", 7.25)]):
        api.post(
            "/Observation",
            json={
                "resourceType": "Observation",
                "status": "final",
                "identifier": [{"system": SYSTEM, "value": f"obs-{n}"}],
                "code": {"coding": [{"system": "http://loinc.org", "code": "718-7", "display": "Hemoglobin"}]},
                "subject": {"reference": f"Patient/{ids[who]}"},
                "effectiveDateTime": f"2024-0{n + 1}-10",
                "valueQuantity": {"value": value, "system": "http://unitsofmeasure.org", "code": "g/dL"},
            },
        )
    return ids


def _search(api: httpx.Client, resource_type: str, params: dict[str, Any] | list[tuple[str, str]]) -> list[str]:
    response = api.get(f"/{resource_type}", params=tuple(params.items() if isinstance(params, dict) else params))
    assert response.status_code == 200, response.text
    bundle = R4Bundle(response.json(), strict=True)
    return sorted(e.resource.identifier[0].value for e in bundle.entry or [] if e.search.mode == "match")


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"identifier": f"{SYSTEM}|mrn-1"}, ["mrn-1"]),
        ({"identifier": "mrn-2"}, ["mrn-2"]),
        ({"identifier": f"{SYSTEM}|"}, ["mrn-0", "mrn-1", "mrn-2"]),
        ({"identifier:of-type": "http://terminology.hl7.org/CodeSystem/v2-0203|MR|mrn-0"}, ["mrn-0"]),
        ({"gender": "female"}, ["mrn-0", "mrn-2"]),
        ({"gender:not": "female"}, ["mrn-1"]),
        ({"_tag": f"{SYSTEM}|tag-0"}, ["mrn-0", "mrn-2"]),
        ({"family": "muller"}, ["mrn-0"]),  # accent- and case-insensitive
        ({"family": "MUE"}, ["mrn-1"]),
        ({"family:exact": "Müller"}, ["mrn-0"]),
        ({"family:exact": "müller"}, []),
        ({"name:contains": "ell"}, ["mrn-1"]),
        ({"name": "carol"}, ["mrn-2"]),
        ({"birthdate": "1960-04"}, ["mrn-0", "mrn-2"]),
        ({"birthdate": "eq1960-04-01"}, ["mrn-0"]),
        ({"birthdate": "ne1960-04-01"}, ["mrn-1", "mrn-2"]),
        ({"birthdate": "lt1960-04-10"}, ["mrn-0"]),
        ({"birthdate": "gt1960-04-10"}, ["mrn-1", "mrn-2"]),
        ({"birthdate": "ge1975-01-01"}, ["mrn-1"]),
        ({"birthdate": "le1960-04-01"}, ["mrn-0"]),
        ({"birthdate": "sa1960-04"}, ["mrn-1"]),
        ({"birthdate": "eb1975"}, ["mrn-0", "mrn-2"]),
        ({"birthdate": "1975-06-01"}, []),  # a year does not lie inside one day
        ({"birthdate": "ap1960-04-03"}, ["mrn-0", "mrn-2"]),
        ([("birthdate", "ge1960-01-01"), ("birthdate", "le1960-12-31")], ["mrn-0", "mrn-2"]),
        ({"gender": "male,female", "family": "smi"}, ["mrn-2"]),
    ],
)
def test_patient_search_rules(api: httpx.Client, population: dict[str, str], params: Any, expected: list[str]) -> None:
    scoped = [*(params.items() if isinstance(params, dict) else params), ("identifier", f"{SYSTEM}|")]
    assert _search(api, "Patient", scoped) == expected


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"value-quantity": "5.4"}, ["obs-0"]),
        ({"value-quantity": "5"}, ["obs-0"]),  # precision: 5 means [4.5, 5.5)
        ({"value-quantity": "gt7|http://unitsofmeasure.org|g/dL"}, ["obs-1", "obs-2"]),
        ({"value-quantity": "lt100"}, ["obs-0", "obs-2"]),
        ({"value-quantity": "ap110"}, ["obs-1"]),
        ({"value-quantity": "7.25|http://other|g/dL"}, []),
        ({"code": "http://loinc.org|718-7", "date": "ge2024-02-01"}, ["obs-1", "obs-2"]),
        ({"code:text": "hemo"}, ["obs-0", "obs-1", "obs-2"]),
        ({"subject:Patient.name": "anna"}, ["obs-0", "obs-1"]),
        ({"subject:Patient.identifier": f"{SYSTEM}|mrn-1"}, ["obs-2"]),
        ({"patient.gender": "male"}, ["obs-2"]),
    ],
)
def test_observation_search_rules(
    api: httpx.Client, population: dict[str, str], params: dict[str, str], expected: list[str]
) -> None:
    assert _search(api, "Observation", [*params.items(), ("identifier", f"{SYSTEM}|")]) == expected


def test_reference_forms(api: httpx.Client, population: dict[str, str], fhir_base: str) -> None:
    anna = population["Anna"]
    for value in (f"Patient/{anna}", anna, f"{fhir_base}/Patient/{anna}"):
        assert _search(api, "Observation", {"subject": value, "identifier": f"{SYSTEM}|"}) == ["obs-0", "obs-1"]
    typed = {"subject:Patient": anna, "identifier": f"{SYSTEM}|"}
    assert _search(api, "Observation", typed) == ["obs-0", "obs-1"]
    assert _search(api, "Observation", {"subject:Group": anna, "identifier": f"{SYSTEM}|"}) == []


def test_reverse_chain_has(api: httpx.Client, population: dict[str, str]) -> None:
    params = {"_has:Observation:subject:value-quantity": "gt100", "identifier": f"{SYSTEM}|"}
    assert _search(api, "Patient", params) == ["mrn-0"]


def test_sort_paging_and_links_stay_correct_while_others_write(api: httpx.Client, population: dict[str, str]) -> None:
    params = {"identifier": f"{SYSTEM}|", "_sort": "-birthdate,family", "_count": "1"}
    first = api.get("/Patient", params=params).json()
    seen = [first["entry"][0]["resource"]["identifier"][0]["value"]]
    assert first["total"] == 3
    # A write between pages must not shift the next page (keyset, not offset).
    api.post(
        "/Patient",
        json={
            "resourceType": "Patient",
            "identifier": [{"system": SYSTEM, "value": "late"}],
            "birthDate": "2000-01-01",
        },
    )
    page = first
    while next_links := [link["url"] for link in page["link"] if link["relation"] == "next"]:
        page = httpx.get(next_links[0], headers=api.headers).json()
        seen += [e["resource"]["identifier"][0]["value"] for e in page.get("entry", [])]
    assert seen[:3] == ["mrn-1", "mrn-2", "mrn-0"]
    assert "late" not in seen  # sorted before the cursor: not seen again on later pages
    previous = [link["url"] for link in page["link"] if link["relation"] == "previous"]
    assert previous
    back = httpx.get(previous[0], headers=api.headers).json()
    assert [e["resource"]["identifier"][0]["value"] for e in back["entry"]] == ["mrn-2"]


def test_include_revinclude_summary_elements_total(api: httpx.Client, population: dict[str, str]) -> None:
    params = [("identifier", f"{SYSTEM}|obs-0"), ("_include", "Observation:subject")]
    bundle = api.get("/Observation", params=tuple(params)).json()
    modes = sorted((e["resource"]["resourceType"], e["search"]["mode"]) for e in bundle["entry"])
    assert modes == [("Observation", "match"), ("Patient", "include")]
    rev = api.get("/Patient", params=[("_id", population["Anna"]), ("_revinclude", "Observation:subject")]).json()
    assert sorted(e["resource"]["resourceType"] for e in rev["entry"]) == ["Observation", "Observation", "Patient"]
    count = api.get("/Patient", params={"identifier": f"{SYSTEM}|", "_summary": "count"}).json()
    assert count["total"] >= 3
    assert "entry" not in count
    summary = api.get("/Patient", params={"_id": population["Anna"], "_summary": "true"}).json()
    assert "name" in summary["entry"][0]["resource"]
    elements = api.get("/Patient", params={"_id": population["Anna"], "_elements": "gender"}).json()
    resource = elements["entry"][0]["resource"]
    assert set(resource) == {"resourceType", "id", "meta", "gender"}
    assert resource["meta"]["tag"][-1]["code"] == "SUBSETTED"
    none = api.get("/Patient", params={"_id": population["Anna"], "_total": "none"}).json()
    assert "total" not in none


def test_post_search_matches_get(api: httpx.Client, population: dict[str, str]) -> None:
    response = api.post(
        "/Patient/_search",
        content=f"identifier={SYSTEM}|mrn-0",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert [e["resource"]["id"] for e in response.json()["entry"]] == [population["Anna"]]


def test_unknown_parameter_lenient_and_strict(api: httpx.Client, population: dict[str, str]) -> None:
    lenient = api.get("/Patient", params={"identifier": f"{SYSTEM}|mrn-0", "colour": "blue"}).json()
    assert lenient["total"] == 1
    assert "colour" not in lenient["link"][0]["url"]
    strict = api.get("/Patient", params={"colour": "blue"}, headers={"Prefer": "handling=strict"})
    assert strict.status_code == 400
    assert strict.json()["issue"][0]["expression"] == ["colour"]


@pytest.mark.parametrize(
    "params",
    [
        {"birthdate": "not-a-date"},
        {"birthdate": "xx2020"},
        {"_count": "many"},
        {"_sort": "colour"},
        {"gender:exact": "male"},
        {"_include": "Patient"},
        {"_include": "Patient:nothing"},
        {"_summary": "everything"},
        {"_total": "lots"},
        {"_cursor": "garbage"},
        {"general-practitioner:missing": "maybe"},
        {"_has:Observation:subject:colour": "x"},
        {"gender.name": "x"},
        {"name": "Do\x00e"},
        {"identifier": "urn:x|\x00"},
        {"_count": "1\x00"},
    ],
)
def test_invalid_search_values_are_400(api: httpx.Client, params: dict[str, str]) -> None:
    response = api.get("/Patient", params=params)
    assert response.status_code == 400, response.text
    assert response.json()["issue"][0]["code"] == "invalid"


def test_included_resources_need_their_own_scope(
    fhir_base: str, issuer: Issuer, population: dict[str, str], http: httpx.Client
) -> None:
    token = issuer.token("system/Observation.rs")
    params = [("identifier", f"{SYSTEM}|obs-0"), ("_include", "Observation:subject")]
    bundle = http.get(f"{fhir_base}/Observation", params=tuple(params), headers=bearer(token)).json()
    assert [e["resource"]["resourceType"] for e in bundle["entry"]] == ["Observation"]
    forbidden = http.get(f"{fhir_base}/Patient", headers=bearer(token))
    assert forbidden.status_code == 403


def test_capability_statement_lists_search_parameters(http: httpx.Client, fhir_base: str) -> None:
    statement = http.get(f"{fhir_base}/metadata").json()
    observation = next(r for r in statement["rest"][0]["resource"] if r["type"] == "Observation")
    names = {p["name"] for p in observation["searchParam"]}
    assert {"code", "subject", "patient", "date", "value-quantity", "has-member", "_id", "_lastUpdated"} <= names
    assert "Observation:has-member" in observation["searchInclude"]
    assert {i["code"] for i in observation["interaction"]} >= {"read", "vread", "update", "patch", "delete"}
