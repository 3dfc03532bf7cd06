"""Pull import from a hospital FHIR server — a second instance of this service playing the hospital."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from oncostruct_clinical.app import create_app
from oncostruct_shared.settings import ServiceSettings
from tests.clinical.fhir_create import create
from tests.support import Issuer, LiveServer, PostgresServer, bearer, free_port

MRN = "urn:oid:2.16.840.1.113883.19.5"


def _server(settings: Callable[..., ServiceSettings], database: str, **extra: Any) -> LiveServer:
    port = free_port()
    return LiveServer(
        create_app(settings("clinical", database=database, base_url=f"http://127.0.0.1:{port}/fhir", **extra)),
        port=port,
    )


@pytest.fixture(scope="module")
def sites(
    postgres: PostgresServer, service_settings: Callable[..., ServiceSettings], issuer: Issuer
) -> Iterator[dict[str, Any]]:
    """A hospital server with two patients' records, and our server configured to pull from it."""
    postgres.create_database("fhir_hospital")
    postgres.create_database("fhir_importer")
    token = issuer.token("system/*.cruds")
    with _server(service_settings, "fhir_hospital") as hospital:
        source = {"hospital": {"url": f"{hospital.url}/fhir", "bearer_token": token}}
        with _server(service_settings, "fhir_importer", fhir_sources=source) as ours:
            remote = httpx.Client(base_url=f"{hospital.url}/fhir", headers=bearer(token), timeout=30)
            local = httpx.Client(base_url=f"{ours.url}/fhir", headers=bearer(token), timeout=30)
            patient = create(remote, {"resourceType": "Patient", "identifier": [{"system": MRN, "value": "H-1"}]})
            doctor = create(remote, {"resourceType": "Practitioner", "name": [{"family": "Oncologist"}]})
            subject = {"reference": f"Patient/{patient}"}
            condition = create(remote, {"resourceType": "Condition", "subject": subject, "code": {"text": "NSCLC"},
                                        "asserter": {"reference": f"Practitioner/{doctor}"}})  # fmt: skip
            loinc = "http://loinc.org"
            t = create(remote, {"resourceType": "Observation", "status": "final", "subject": subject,
                                "code": {"coding": [{"system": loinc, "code": "21905-5"}]}})  # fmt: skip
            stage = create(remote, {"resourceType": "Observation", "status": "final", "subject": subject,
                                    "code": {"coding": [{"system": loinc, "code": "21908-9"}]},
                                    "hasMember": [{"reference": f"Observation/{t}"}]})  # fmt: skip
            create(remote, {"resourceType": "Patient", "identifier": [{"system": MRN, "value": "H-2"}]})
            # Ours knows patient H-1 already (as the imaging service would have created it from DICOM).
            known = create(local, {"resourceType": "Patient", "identifier": [{"system": MRN, "value": "H-1"}]})
            yield {"remote": remote, "local": local, "patient": patient, "known": known, "condition": condition,
                   "stage": stage, "t": t, "doctor": doctor}  # fmt: skip


def _pull(local: httpx.Client, **parameters: list[str]) -> dict[str, Any]:
    body = {
        "resourceType": "Parameters",
        "parameter": [{"name": name, "valueString": value} for name, values in parameters.items() for value in values],
    }
    started = local.post("/$pull-import", json=body, headers={"Content-Type": "application/fhir+json"})
    assert started.status_code == 202, started.text
    status_url = started.headers["Content-Location"]
    deadline = time.monotonic() + 60
    while True:
        status = {
            p["name"]: next(v for k, v in p.items() if k.startswith("value"))
            for p in local.get(status_url).json()["parameter"]
        }
        if status["status"] in ("succeeded", "failed"):
            return status
        assert time.monotonic() < deadline, status
        time.sleep(0.2)


def _only(local: httpx.Client, path: str, **params: str) -> list[dict[str, Any]]:
    return [entry["resource"] for entry in local.get(path, params=params).json().get("entry", [])]


def test_a_patients_record_is_imported_with_references_remapped(sites: dict[str, Any]) -> None:
    local = sites["local"]
    status = _pull(local, source=["hospital"], patient=[sites["patient"]])
    assert status["status"] == "succeeded", status
    assert (status["patients"], status["done"]) == (1, 1)
    patients = _only(local, "/Patient", identifier=f"{MRN}|H-1")
    assert [p["id"] for p in patients] == [sites["known"]]  # merged into the patient known here
    conditions = _only(local, "/Condition", subject=f"Patient/{sites['known']}")
    assert [c["code"]["text"] for c in conditions] == ["NSCLC"]
    doctor = conditions[0]["asserter"]["reference"]
    assert local.get(f"/{doctor}").status_code == 200  # the referenced practitioner came along
    assert conditions[0]["meta"]["source"].endswith(f"/Condition/{sites['condition']}")
    stages = _only(local, "/Observation", code="http://loinc.org|21908-9")
    member = stages[0]["hasMember"][0]["reference"]
    assert local.get(f"/{member}").json()["code"]["coding"][0]["code"] == "21905-5"
    assert member != f"Observation/{sites['t']}"  # a local id, not the hospital's


def test_importing_again_changes_nothing_but_versions(sites: dict[str, Any]) -> None:
    local = sites["local"]
    before = {t: len(_only(local, f"/{t}", _count="100")) for t in ("Patient", "Condition", "Observation")}
    assert _pull(local, source=["hospital"], patient=[sites["patient"]])["status"] == "succeeded"
    after = {t: len(_only(local, f"/{t}", _count="100")) for t in ("Patient", "Condition", "Observation")}
    assert after == before


def test_patients_chosen_by_an_upstream_search(sites: dict[str, Any]) -> None:
    local = sites["local"]
    status = _pull(local, source=["hospital"], patientSearch=[f"Patient?identifier={MRN}|H-2"])
    assert status["status"] == "succeeded", status
    assert len(_only(local, "/Patient", identifier=f"{MRN}|H-2")) == 1


@pytest.mark.parametrize(
    "parameters",
    [
        {"source": ["elsewhere"], "patient": ["x"]},
        {"source": ["hospital"]},
        {"source": ["hospital"], "patient": ["x"], "patientSearch": ["Patient?name=x"]},
        {"source": ["hospital"], "patientSearch": ["Observation?code=x"]},
    ],
)
def test_bad_requests_are_refused(sites: dict[str, Any], parameters: dict[str, list[str]]) -> None:
    pairs = [(name, value) for name, values in parameters.items() for value in values]
    body = {"resourceType": "Parameters", "parameter": [{"name": n, "valueString": v} for n, v in pairs]}
    response = sites["local"].post("/$pull-import", json=body, headers={"Content-Type": "application/fhir+json"})
    assert response.status_code == 400
    assert response.json()["resourceType"] == "OperationOutcome"
