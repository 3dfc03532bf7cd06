"""Approved series- and ROI-level findings become imaging Observations derived from the ImagingStudy;
tracked lesions become one BodyStructure per lesion across studies."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from dicomweb_client.api import DICOMwebClient
from fhirpy import SyncFHIRClient

from tests.annotations.fhir_link import approve as _approve
from tests.annotations.fhir_link import wait_for_imaging_study
from tests.reconstruction.brain_series import BrainSeries, brain_series
from tests.support import Issuer, bearer

SCOPES = ("annotations.read", "annotations.write", "annotations.review", "dicomweb.read", "dicomweb.write")
SQUARE = [[10, 10], [20, 10], [20, 20], [10, 20]]


@pytest.fixture(scope="module")
def setting(annotations_url: str, imaging_url: str, clinical_url: str, issuer: Issuer) -> dict[str, Any]:
    """A baseline and a follow-up study of one patient, linked in clinical, and a project."""
    token = issuer.token(*SCOPES, "system/*.cruds", subject="reader-1")
    dicomweb = DICOMwebClient(f"{imaging_url}/dicomweb", headers={"Authorization": f"Bearer {token}"})
    studies = [brain_series(slices=(40, 43), lesion=False, patient_id="FINDINGS-1") for _ in range(2)]
    for study in studies:
        dicomweb.store_instances(study.datasets)
    with httpx.Client(base_url=f"{clinical_url}/fhir", headers=bearer(token), timeout=30) as clinical:
        links = [wait_for_imaging_study(clinical, study.study_uid) for study in studies]
    api = httpx.Client(base_url=f"{annotations_url}/annotations/v1", headers=bearer(token), timeout=30)
    project = api.post("/projects", json={"name": "Findings"}).json()["id"]
    fhir = SyncFHIRClient(f"{clinical_url}/fhir", authorization=f"Bearer {token}")
    return {"api": api, "project": project, "studies": studies, "links": links, "fhir": fhir}


def _on(study: BrainSeries, project: str) -> dict[str, Any]:
    return {"project_id": project, "study_uid": study.study_uid, "series_uid": study.series_uid}


def _roi(study: BrainSeries, project: str, tracking_id: str) -> dict[str, Any]:
    polygon = {"type": "polygon", "sop_instance_uid": str(study.datasets[1].SOPInstanceUID), "points": SQUARE}
    return {**_on(study, project), "level": "roi", "label": "lesion", "value": "metastasis", "geometry": polygon,
            "attributes": {"margin": "spiculated", "internal_structure": ["solid", "necrosis"]},
            "tracking_id": tracking_id}  # fmt: skip


def test_series_finding_is_an_imaging_observation_derived_from_the_study(setting: dict[str, Any]) -> None:
    study, (imaging_study, patient) = setting["studies"][0], setting["links"][0]
    body = {**_on(study, setting["project"]), "level": "series", "label": "diffuse_findings",
            "value": ["emphysema", "atrophy"]}  # fmt: skip
    annotation = _approve(setting["api"], body)
    observation = setting["fhir"].reference("Observation", annotation["id"]).to_resource()
    assert observation["status"] == "final"
    assert observation["category"][0]["coding"][0]["code"] == "imaging"
    assert observation["subject"]["reference"] == f"Patient/{patient}"
    assert observation["derivedFrom"][0]["reference"] == f"ImagingStudy/{imaging_study}"
    assert [c["valueCodeableConcept"]["text"] for c in observation["component"]] == ["Pulmonary emphysema", "Atrophy"]


def test_tracked_lesion_is_one_body_structure_across_studies(setting: dict[str, Any]) -> None:
    api, project, (baseline, follow_up) = setting["api"], setting["project"], setting["studies"]
    first = _approve(api, _roi(baseline, project, "met-1"))
    second = _approve(api, _roi(follow_up, project, "met-1"))
    fhir = setting["fhir"]
    observations = [fhir.reference("Observation", a["id"]).to_resource() for a in (first, second)]
    focus = {o["focus"][0]["reference"] for o in observations}
    assert len(focus) == 1
    lesion = fhir.reference("BodyStructure", focus.pop().split("/")[1]).to_resource()
    assert lesion["patient"]["reference"] == f"Patient/{setting['links'][0][1]}"
    assert lesion["identifier"][0]["value"] == f"{project}/met-1"
    assert lesion["morphology"]["coding"][0]["code"]
    attributes = [(c["code"]["coding"][0]["code"], c["valueCodeableConcept"]["coding"][0]["code"])
                  for c in observations[0]["component"]]  # fmt: skip
    assert len(attributes) == 3  # margin, and two internal structures
    assert [o["derivedFrom"][0]["reference"] for o in observations] == [
        f"ImagingStudy/{link[0]}" for link in setting["links"]
    ]


def test_deleting_an_approved_finding_marks_it_entered_in_error(setting: dict[str, Any]) -> None:
    api = setting["api"]
    annotation = _approve(api, _roi(setting["studies"][0], setting["project"], "met-2"))
    deleted = api.delete(f"/annotations/{annotation['id']}", headers={"If-Match": f'"{annotation["version"]}"'})
    assert deleted.status_code == 200, deleted.text
    observation = setting["fhir"].reference("Observation", annotation["id"]).to_resource()
    assert observation["status"] == "entered-in-error"


def test_drafts_write_nothing(setting: dict[str, Any]) -> None:
    body = {**_on(setting["studies"][0], setting["project"]), "level": "series", "label": "exam_purpose",
            "value": "staging"}  # fmt: skip
    draft = setting["api"].post("/annotations", json=body).json()
    found = setting["fhir"].resources("Observation").search(identifier=f"urn:oncostruct:annotation|{draft['id']}")
    assert found.fetch() == []
