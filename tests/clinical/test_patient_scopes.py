"""SMART patient/ scopes: a token with a launch-context patient reaches that patient's compartment only."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from tests.clinical.fhir_create import create as create_resource
from tests.support import Issuer, bearer

FHIR = {"Content-Type": "application/fhir+json"}


def _observation(patient: str, code: str, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
        "subject": {"reference": f"Patient/{patient}"},
        **extra,
    }


@pytest.fixture(scope="module")
def world(clinical_url: str, issuer: Issuer) -> dict[str, Any]:
    """Two patients with observations, a practitioner, all written with a system scope."""
    tag = uuid.uuid4().hex[:8]
    with httpx.Client(
        base_url=f"{clinical_url}/fhir", headers=bearer(issuer.token("system/*.cruds")), timeout=30
    ) as admin:

        def create(resource: dict[str, Any]) -> str:
            return create_resource(admin, resource)

        alice = create({"resourceType": "Patient", "name": [{"family": f"Alice{tag}"}]})
        bob = create({"resourceType": "Patient", "name": [{"family": f"Bob{tag}"}]})
        doctor = create({"resourceType": "Practitioner", "name": [{"family": f"Doc{tag}"}]})
        mine = create(_observation(alice, "8302-2", performer=[{"reference": f"Practitioner/{doctor}"}]))
        theirs = create(_observation(bob, "8302-2"))
    return {"alice": alice, "bob": bob, "doctor": doctor, "mine": mine, "theirs": theirs}


def _client(clinical_url: str, issuer: Issuer, scope: str, patient: str | None) -> httpx.Client:
    token = issuer.forge({"scope": scope, "patient": patient, "sub": "app-user"})
    return httpx.Client(base_url=f"{clinical_url}/fhir", headers=bearer(token), timeout=30)


@pytest.fixture(scope="module")
def app(clinical_url: str, issuer: Issuer, world: dict[str, Any]) -> httpx.Client:
    return _client(clinical_url, issuer, "patient/*.rs patient/Observation.c", world["alice"])


def test_reads_reach_the_launch_patient_and_its_compartment_only(app: httpx.Client, world: dict[str, Any]) -> None:
    assert app.get(f"/Patient/{world['alice']}").status_code == 200
    assert app.get(f"/Observation/{world['mine']}").status_code == 200
    assert app.get(f"/Observation/{world['mine']}/_history/1").status_code == 200
    for path in (
        f"/Patient/{world['bob']}",
        f"/Observation/{world['theirs']}",
        f"/Observation/{world['theirs']}/_history",
    ):
        response = app.get(path)
        assert response.status_code == 404, path  # another patient's data: not even its existence
        assert response.json()["resourceType"] == "OperationOutcome"


def test_searches_stay_inside_the_compartment(app: httpx.Client, world: dict[str, Any]) -> None:
    found = app.get("/Observation", params={"code": "8302-2"}).json()
    assert [entry["resource"]["id"] for entry in found.get("entry", [])] == [world["mine"]]
    other = app.get("/Observation", params={"subject": f"Patient/{world['bob']}"}).json()
    assert other.get("entry", []) == []
    patients = app.get("/Patient").json()
    assert [entry["resource"]["id"] for entry in patients["entry"]] == [world["alice"]]


def test_includes_are_filtered_and_non_patient_types_readable(app: httpx.Client, world: dict[str, Any]) -> None:
    bundle = app.get(
        "/Patient",
        params={"_revinclude": "Observation:subject", "_id": f"{world['alice']},{world['bob']}"},
    ).json()
    ids = {(e["resource"]["resourceType"], e["resource"]["id"]) for e in bundle["entry"]}
    assert ids == {("Patient", world["alice"]), ("Observation", world["mine"])}
    included = app.get("/Observation", params={"_include": "Observation:performer"}).json()
    assert ("Practitioner", world["doctor"]) in {
        (e["resource"]["resourceType"], e["resource"]["id"]) for e in included["entry"]
    }
    assert app.get(f"/Practitioner/{world['doctor']}").status_code == 200  # no patient data in it


def test_writes_must_land_in_the_compartment(app: httpx.Client, world: dict[str, Any]) -> None:
    assert app.post("/Observation", json=_observation(world["alice"], "8310-5"), headers=FHIR).status_code == 201
    refused = app.post("/Observation", json=_observation(world["bob"], "8310-5"), headers=FHIR)
    assert refused.status_code == 403
    assert "compartment" in refused.json()["issue"][0]["diagnostics"]
    assert app.post("/Condition", json={"resourceType": "Condition"}, headers=FHIR).status_code == 403  # no c scope
    assert app.delete(f"/Observation/{world['mine']}").status_code == 403  # no d scope


def test_wider_interactions_are_refused(app: httpx.Client, world: dict[str, Any]) -> None:
    assert app.get("/Observation/_history").status_code == 403
    assert app.get("/_history").status_code == 403
    assert app.get(f"/Patient/{world['alice']}/$everything").status_code == 200
    assert app.get(f"/Patient/{world['bob']}/$everything").status_code == 404


def test_patient_scopes_without_a_launch_patient_grant_nothing(
    clinical_url: str, issuer: Issuer, world: dict[str, Any]
) -> None:
    with _client(clinical_url, issuer, "patient/*.rs", None) as client:
        assert client.get(f"/Patient/{world['alice']}").status_code == 403
        assert client.get("/Observation").status_code == 403


def test_reverse_chains_and_chains_are_refused(app: httpx.Client, world: dict[str, Any]) -> None:
    medications = app.get("/Practitioner", params={"_has:Observation:performer:subject": f"Patient/{world['bob']}"})
    assert medications.status_code == 403
    chained = app.get("/Observation", params={"subject.name": "Bob"})
    assert chained.status_code == 403


def test_a_write_cannot_also_point_at_another_patient(app: httpx.Client, world: dict[str, Any]) -> None:
    both = _observation(world["alice"], "8310-5", performer=[{"reference": f"Patient/{world['bob']}"}])
    assert app.post("/Observation", json=both, headers=FHIR).status_code == 403


def test_bundles_and_transactions_cannot_search_beyond_the_compartment(
    app: httpx.Client, world: dict[str, Any]
) -> None:
    assert app.get("/Bundle").status_code == 403
    transaction = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": _observation(world["alice"], "8310-5"),
                "request": {"method": "POST", "url": "Observation", "ifNoneExist": f"subject=Patient/{world['bob']}"},
            }
        ],
    }
    assert app.post("/", json=transaction, headers=FHIR).status_code == 403


def test_everything_leaves_out_other_patients_even_when_referenced(
    clinical_url: str, issuer: Issuer, world: dict[str, Any]
) -> None:
    # Alice's own observation points at Bob's: $everything must not bring Bob's along.
    with httpx.Client(
        base_url=f"{clinical_url}/fhir", headers=bearer(issuer.token("system/*.cruds")), timeout=30
    ) as admin:
        create_resource(
            admin, _observation(world["alice"], "8302-2", hasMember=[{"reference": f"Observation/{world['theirs']}"}])
        )
    with _client(clinical_url, issuer, "patient/*.rs", world["alice"]) as alice_app:
        bundle = alice_app.get(f"/Patient/{world['alice']}/$everything").json()
    ids = {(e["resource"]["resourceType"], e["resource"]["id"]) for e in bundle["entry"]}
    assert ("Observation", world["theirs"]) not in ids
    assert ("Observation", world["mine"]) in ids
