"""Approved patient-level labels become mCODE resources in the live clinical service; failures claim nothing."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from fhirpy import SyncFHIRClient

from oncostruct_annotations.app import create_app
from tests.support import Issuer, LiveServer, PostgresServer, bearer, free_port

V1 = "/annotations/v1"
SCOPES = ("annotations.read", "annotations.write", "annotations.review")


@pytest.fixture
def api(annotations_url: str, issuer: Issuer) -> httpx.Client:
    return httpx.Client(base_url=annotations_url + V1, headers=bearer(issuer.token(*SCOPES, subject="dr-tnm")))


@pytest.fixture
def fhir(clinical_url: str, issuer: Issuer) -> SyncFHIRClient:
    return SyncFHIRClient(f"{clinical_url}/fhir", authorization=f"Bearer {issuer.token('system/*.cruds')}")


def approve(api: httpx.Client, project_id: str, label: str, value: Any, patient: str) -> dict[str, Any]:
    body = {"project_id": project_id, "level": "patient", "label": label, "value": value, "patient_id": patient}
    annotation = api.post("/annotations", json=body).json()
    assert api.post(f"/annotations/{annotation['id']}/submit", headers={"If-Match": '"1"'}).status_code == 200
    approved = api.post(f"/annotations/{annotation['id']}/approve", headers={"If-Match": '"2"'})
    assert approved.status_code == 200, approved.text
    return dict(approved.json())


def test_approved_tnm_and_stage_group_are_written_as_mcode(api: httpx.Client, fhir: SyncFHIRClient) -> None:
    project = api.post("/projects", json={"name": f"wt-{uuid.uuid4().hex[:8]}"}).json()
    patient = fhir.resource("Patient", name=[{"family": "Suzuki"}])
    patient.save()
    t = approve(api, project["id"], "t_category", "t2a", patient.id)
    n = approve(api, project["id"], "n_category", "n1", patient.id)
    m = approve(api, project["id"], "m_category", "m0", patient.id)
    stage = approve(api, project["id"], "stage_group", "stage_iiia", patient.id)
    observation = fhir.reference("Observation", t["id"]).to_resource()
    assert observation["status"] == "final"
    assert observation["code"]["coding"][0]["code"] == "21905-5"
    assert observation["subject"]["reference"] == f"Patient/{patient.id}"
    group = fhir.reference("Observation", stage["id"]).to_resource()
    assert [member["reference"] for member in group["hasMember"]] == [
        f"Observation/{t['id']}",
        f"Observation/{n['id']}",
        f"Observation/{m['id']}",
    ]


def test_drafts_are_not_clinical_truth(api: httpx.Client, fhir: SyncFHIRClient) -> None:
    project = api.post("/projects", json={"name": f"wt-{uuid.uuid4().hex[:8]}"}).json()
    body = {"project_id": project["id"], "level": "patient", "label": "t_category", "value": "t1", "patient_id": "p"}
    draft = api.post("/annotations", json=body).json()
    from fhirpy.base.exceptions import ResourceNotFound

    with pytest.raises(ResourceNotFound):
        fhir.reference("Observation", draft["id"]).to_resource()


def test_deleting_an_approved_label_marks_it_entered_in_error(api: httpx.Client, fhir: SyncFHIRClient) -> None:
    project = api.post("/projects", json={"name": f"wt-{uuid.uuid4().hex[:8]}"}).json()
    approved = approve(api, project["id"], "disease_status", "worsened", "pat-x")
    assert api.delete(f"/annotations/{approved['id']}", headers={"If-Match": '"3"'}).status_code == 200
    assert fhir.reference("Observation", approved["id"]).to_resource()["status"] == "entered-in-error"


def test_clinical_outage_leaves_the_annotation_unapproved(
    postgres: PostgresServer, service_settings: Any, issuer: Issuer, imaging_url: str
) -> None:
    postgres.create_database("wt_clinical_down")
    settings = service_settings(
        "annotations",
        database="wt_clinical_down",
        clinical_url=f"http://127.0.0.1:{free_port()}/fhir",
        imaging_url=f"{imaging_url}/dicomweb",
        http_retries=1,
    )
    with (
        LiveServer(create_app(settings)) as server,
        httpx.Client(base_url=server.url + V1, headers=bearer(issuer.token(*SCOPES, subject="dr-down"))) as client,
    ):
        project = client.post("/projects", json={"name": "outage"}).json()
        body = {
            "project_id": project["id"],
            "level": "patient",
            "label": "m_category",
            "value": "m1",
            "patient_id": "p",
        }
        annotation = client.post("/annotations", json=body).json()
        client.post(f"/annotations/{annotation['id']}/submit", headers={"If-Match": '"1"'})
        refused = client.post(f"/annotations/{annotation['id']}/approve", headers={"If-Match": '"2"'})
        assert refused.status_code == 503
        assert refused.headers["content-type"] == "application/problem+json"
        after = client.get(f"/annotations/{annotation['id']}").json()
    assert after["status"] == "submitted"
    assert after["version"] == 2


def test_approved_treatments_are_procedures_and_medication_requests(api: httpx.Client, fhir: SyncFHIRClient) -> None:
    project = api.post("/projects", json={"name": f"wt-{uuid.uuid4().hex[:8]}"}).json()
    patient = fhir.resource("Patient", name=[{"family": "Tanaka"}])
    patient.save()
    approved = approve(api, project["id"], "treatment", ["surgery", "chemotherapy"], patient.id)
    procedures = fhir.resources("Procedure").search(subject=f"Patient/{patient.id}").fetch()
    requests = fhir.resources("MedicationRequest").search(subject=f"Patient/{patient.id}").fetch()
    assert [p["code"]["coding"][0]["code"] for p in procedures] == ["surgery"]
    assert procedures[0]["status"] == "completed"
    assert procedures[0]["category"]["coding"][0]["code"] == "387713003"
    assert [r["medicationCodeableConcept"]["coding"][0]["code"] for r in requests] == ["chemotherapy"]
    assert requests[0]["intent"] == "order"
    assert api.delete(f"/annotations/{approved['id']}", headers={"If-Match": '"3"'}).status_code == 200
    withdrawn = fhir.resources("MedicationRequest").search(subject=f"Patient/{patient.id}").fetch()
    assert [r["status"] for r in withdrawn] == ["entered-in-error"]
