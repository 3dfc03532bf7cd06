"""AI-ready dataset export on the live suite: cohort by labels and a FHIR search, NIfTI + masks + manifest + NDJSON.

The archive is read back with nibabel and checked voxel by voxel against the stored DICOM pixels
and the annotated polygons.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import time
import zipfile
from typing import Any

import httpx
import nibabel as nib
import numpy as np
import pytest
from dicomweb_client.api import DICOMwebClient

from tests.annotations.fhir_link import approve as _approve
from tests.annotations.fhir_link import wait_for_imaging_study
from tests.reconstruction.brain_series import BrainSeries, brain_series
from tests.support import Issuer, bearer

SCOPES = ("annotations.read", "annotations.write", "annotations.review", "dicomweb.read", "dicomweb.write")
FHIR = {"Content-Type": "application/fhir+json"}
GLIOBLASTOMA = ("http://snomed.info/sct", "393563007", "Glioblastoma multiforme of brain")
TUMOUR = [[10, 20], [30, 20], [30, 40], [10, 40]]  # a 20 × 20 pixel square (pixel-centre rule)
SNOMED, AJCC = "http://snomed.info/sct", "http://cancerstaging.org"
MCODE = "http://hl7.org/fhir/us/mcode/StructureDefinition"
NODE = [[50, 60], [54, 60], [54, 63], [50, 63]]


@pytest.fixture(scope="module")
def cohort(annotations_url: str, imaging_url: str, clinical_url: str, issuer: Issuer) -> dict[str, Any]:
    """Two patients' brain MR series: A with a glioblastoma, a tumour and a node drawn; B normal."""
    token = issuer.token(*SCOPES, "system/*.cruds", subject="curator")
    dicomweb = DICOMwebClient(f"{imaging_url}/dicomweb", headers={"Authorization": f"Bearer {token}"})
    series = {
        "A": brain_series(slices=(40, 48), lesion=True, patient_id="DS-A"),
        "B": brain_series(slices=(40, 46), lesion=False, patient_id="DS-B"),
    }
    for item in series.values():
        dicomweb.store_instances(item.datasets)
    with httpx.Client(base_url=f"{clinical_url}/fhir", headers=bearer(token), timeout=30) as clinical:
        patients = {name: wait_for_imaging_study(clinical, item.study_uid)[1] for name, item in series.items()}
        subject = {"reference": f"Patient/{patients['A']}"}
        clinical.post(
            "/Condition",
            headers=FHIR,
            json={
                "resourceType": "Condition",
                "meta": {
                    "profile": ["http://hl7.org/fhir/us/mcode/StructureDefinition/mcode-primary-cancer-condition"]
                },
                "code": {"coding": [dict(zip(("system", "code", "display"), GLIOBLASTOMA, strict=True))]},
                "subject": subject,
            },
        ).raise_for_status()
        for when, code, display in (("2026-01-01", "271299001", "Patient's condition worsened"),
                                    ("2026-06-01", "359746009", "Patient's condition stable")):  # fmt: skip
            clinical.post(
                "/Observation",
                headers=FHIR,
                json={
                    "resourceType": "Observation", "status": "final", "subject": subject, "effectiveDateTime": when,
                    "code": {"coding": [{"system": "http://loinc.org", "code": "97509-4"}]},
                    "valueCodeableConcept": {"coding": [{"system": SNOMED, "code": code, "display": display}]},
                },
            ).raise_for_status()  # fmt: skip
        clinical.post(
            "/Observation",
            headers=FHIR,
            json={
                "resourceType": "Observation", "status": "final", "subject": subject,
                "code": {"coding": [{"system": "http://loinc.org", "code": "21908-9"}]},
                "valueCodeableConcept": {"coding": [{"system": AJCC, "code": "4", "display": "IV"}]},
            },
        ).raise_for_status()  # fmt: skip
    with httpx.Client(base_url=f"{annotations_url}/annotations/v1", headers=bearer(token), timeout=60) as api:
        project = api.post("/projects", json={"name": "Brain dataset"}).json()["id"]
        a, b = series["A"], series["B"]
        uids = [str(ds.SOPInstanceUID) for ds in a.datasets]
        common = {"project_id": project, "study_uid": a.study_uid, "series_uid": a.series_uid}
        _approve(api, {**common, "level": "series", "label": "normality", "value": "abnormal"})
        tumour = _approve(api, {**common, "level": "roi", "label": "lesion", "value": "primary_tumour",
                                "tracking_id": "t1", "geometry": {"type": "contours", "polygons": [
                                    {"type": "polygon", "sop_instance_uid": uids[3], "points": TUMOUR},
                                    {"type": "polygon", "sop_instance_uid": uids[4], "points": TUMOUR}]}})  # fmt: skip
        node_polygon = {"type": "polygon", "sop_instance_uid": uids[5], "points": NODE}
        node = _approve(
            api, {**common, "level": "roi", "label": "lesion", "value": "lymph_node", "geometry": node_polygon}
        )
        draft = api.post("/annotations", json={**common, "level": "roi", "label": "lesion", "value": "metastasis",
                         "geometry": {"type": "point", "sop_instance_uid": uids[0], "point": [5, 5]}})  # fmt: skip
        assert draft.status_code == 201
        normal = {"project_id": project, "study_uid": b.study_uid, "series_uid": b.series_uid}
        _approve(api, {**normal, "level": "series", "label": "normality", "value": "normal"})
    return {"token": token, "project": project, "series": series, "patients": patients, "tumour": tumour, "node": node}


def _export(annotations_url: str, token: str, body: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
    with httpx.Client(base_url=f"{annotations_url}/annotations/v1", headers=bearer(token), timeout=60) as api:
        started = api.post("/exports/datasets", json=body)
        assert started.status_code == 202, started.text
        assert started.headers["Location"].endswith(f"/exports/datasets/{started.json()['id']}")
        deadline = time.monotonic() + 120
        while (job := api.get(f"/exports/datasets/{started.json()['id']}").json())["status"] in ("queued", "running"):
            assert time.monotonic() < deadline, job
            time.sleep(0.3)
        if job["status"] != "succeeded":
            return job, b""
        archive = api.get(job["archive_url"].split("/annotations/v1", 1)[1])
        assert archive.status_code == 200
        assert archive.headers["content-type"] == "application/zip"
        return job, archive.content


@pytest.fixture(scope="module")
def glioblastoma_export(annotations_url: str, cohort: dict[str, Any]) -> tuple[dict[str, Any], zipfile.ZipFile]:
    body = {
        "project_id": cohort["project"],
        "series_labels": [{"label": "normality", "value": "abnormal"}],
        "fhir_query": f"Condition?code={GLIOBLASTOMA[0]}|{GLIOBLASTOMA[1]}",
    }
    job, content = _export(annotations_url, cohort["token"], body)
    assert job["status"] == "succeeded", job["error"]
    assert hashlib.sha256(content).hexdigest() == job["archive_sha256"]
    assert len(content) == job["archive_bytes"]
    return job, zipfile.ZipFile(io.BytesIO(content))


def _nifti(archive: zipfile.ZipFile, name: str) -> nib.Nifti1Image:
    return nib.Nifti1Image.from_bytes(__import__("gzip").decompress(archive.read(name)))


def test_cohort_is_the_fhir_search_and_label_filter(
    glioblastoma_export: tuple[dict[str, Any], zipfile.ZipFile], cohort: dict[str, Any]
) -> None:
    job, archive = glioblastoma_export
    manifest = json.loads(archive.read("manifest.json"))
    a: BrainSeries = cohort["series"]["A"]
    assert [row["series_uid"] for row in manifest["rows"]] == [a.series_uid]
    assert job["progress"] == 1.0
    assert job["summary"]["series"] == 1
    row = manifest["rows"][0]
    assert row["patient_id"] == cohort["patients"]["A"]
    assert row["diagnosis"] == GLIOBLASTOMA[2]
    assert row["stage_group"] == "IV"
    assert row["disease_status"] == "Patient's condition stable"  # the latest of two
    assert row["series_labels"] == {"normality": "abnormal"}
    assert sorted(r["class"] for r in row["rois"]) == ["lesion-lymph_node", "lesion-primary_tumour"]
    assert row["schemas"] == ["oncology@1"]
    assert row["authors"] == ["curator"]
    # Only approved annotations: the draft metastasis point is not selected.
    selected = {item["id"]: item["version"] for item in manifest["selection"]["annotations"]}
    assert selected[cohort["tumour"]["id"]] == cohort["tumour"]["version"]
    assert len(selected) == 3


@pytest.fixture(scope="module")
def series_a(
    glioblastoma_export: tuple[dict[str, Any], zipfile.ZipFile], cohort: dict[str, Any]
) -> tuple[zipfile.ZipFile, BrainSeries, nib.Nifti1Image]:
    """The archive, series A and its exported image."""
    archive = glioblastoma_export[1]
    a: BrainSeries = cohort["series"]["A"]
    return archive, a, _nifti(archive, f"images/{a.series_uid}.nii.gz")


def test_image_is_the_dicom_pixels_with_their_geometry(
    series_a: tuple[zipfile.ZipFile, BrainSeries, nib.Nifti1Image],
) -> None:
    _, a, image = series_a
    data = np.asarray(image.dataobj)
    assert data.shape == (int(a.datasets[0].Columns), int(a.datasets[0].Rows), len(a.datasets))
    for index, dataset in enumerate(a.datasets):  # stored in slice order already
        assert np.array_equal(data[:, :, index], dataset.pixel_array.T.astype(np.float32))
    # Voxel (i, j, k) → RAS: LPS position of the first slice with x and y negated, 2 mm steps.
    first = np.asarray(a.datasets[0].ImagePositionPatient, dtype=float)
    assert np.allclose(image.affine @ [0, 0, 0, 1], [-first[0], -first[1], first[2], 1])
    assert np.allclose(image.affine @ [1, 1, 1, 1], [-first[0] - 2, -first[1] - 2, first[2] + 2, 1])


def test_each_roi_class_is_an_aligned_mask_voxel_by_voxel(
    series_a: tuple[zipfile.ZipFile, BrainSeries, nib.Nifti1Image],
) -> None:
    archive, a, image = series_a
    tumour = _nifti(archive, f"masks/{a.series_uid}/lesion-primary_tumour.nii.gz")
    node = _nifti(archive, f"masks/{a.series_uid}/lesion-lymph_node.nii.gz")
    assert np.allclose(tumour.affine, image.affine)
    expected = np.zeros(image.shape, np.uint8)
    expected[10:30, 20:40, 3:5] = 1  # columns 10–29, rows 20–39: the pixel centres inside the square
    assert np.array_equal(np.asarray(tumour.dataobj), expected)
    expected_node = np.zeros(image.shape, np.uint8)
    expected_node[50:54, 60:63, 5] = 1
    assert np.array_equal(np.asarray(node.dataobj), expected_node)


def test_manifest_csv_fhir_ndjson_and_hashes(
    glioblastoma_export: tuple[dict[str, Any], zipfile.ZipFile], cohort: dict[str, Any]
) -> None:
    _, archive = glioblastoma_export
    manifest = json.loads(archive.read("manifest.json"))
    rows = list(csv.DictReader(io.StringIO(archive.read("manifest.csv").decode())))
    assert [row["series_uid"] for row in rows] == [cohort["series"]["A"].series_uid]
    assert json.loads(rows[0]["masks"]) == manifest["rows"][0]["masks"]
    for name, digest in manifest["files"].items():
        assert hashlib.sha256(archive.read(name)).hexdigest() == digest, name
    conditions = [json.loads(line) for line in archive.read("fhir/Condition.ndjson").decode().splitlines()]
    assert [c["code"]["coding"][0]["code"] for c in conditions] == [GLIOBLASTOMA[1]]
    patients = [json.loads(line)["id"] for line in archive.read("fhir/Patient.ndjson").decode().splitlines()]
    assert patients == [cohort["patients"]["A"]]
    assert manifest["request"]["fhir_query"].startswith("Condition?code=")


def test_without_filters_every_labelled_series_is_exported(annotations_url: str, cohort: dict[str, Any]) -> None:
    job, content = _export(annotations_url, cohort["token"], {"project_id": cohort["project"]})
    assert job["status"] == "succeeded", job["error"]
    manifest = json.loads(zipfile.ZipFile(io.BytesIO(content)).read("manifest.json"))
    by_series = {row["series_uid"]: row for row in manifest["rows"]}
    b: BrainSeries = cohort["series"]["B"]
    assert set(by_series) == {cohort["series"]["A"].series_uid, b.series_uid}
    assert by_series[b.series_uid]["masks"] == {}
    assert by_series[b.series_uid]["diagnosis"] is None


def test_a_failing_fhir_search_fails_the_export_and_leaves_no_archive(
    annotations_url: str, cohort: dict[str, Any]
) -> None:
    body = {"project_id": cohort["project"], "fhir_query": "Condition?onset-date=not-a-date"}
    job, _ = _export(annotations_url, cohort["token"], body)
    assert job["status"] == "failed"
    assert "clinical service" in job["error"]
    assert job["archive_url"] is None
    with httpx.Client(base_url=f"{annotations_url}/annotations/v1", headers=bearer(cohort["token"])) as api:
        refused = api.get(f"/exports/datasets/{job['id']}/archive")
    assert refused.status_code == 409
    assert refused.headers["content-type"].startswith("application/problem+json")


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"fhir_query": "http://elsewhere/Condition?code=x"}, 422),
        ({"fhir_query": "condition?code=x"}, 422),
        ({"statuses": []}, 422),
        ({"series_labels": [{"value": "x"}]}, 422),
    ],
)
def test_bad_requests_are_problems(
    annotations_url: str, cohort: dict[str, Any], body: dict[str, Any], status: int
) -> None:
    response = httpx.post(
        f"{annotations_url}/annotations/v1/exports/datasets",
        json={"project_id": cohort["project"], **body},
        headers=bearer(cohort["token"]),
    )
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")


def test_exports_are_for_project_members_only(annotations_url: str, cohort: dict[str, Any], issuer: Issuer) -> None:
    stranger = bearer(issuer.token("annotations.read", subject="stranger"))
    response = httpx.post(
        f"{annotations_url}/annotations/v1/exports/datasets", json={"project_id": cohort["project"]}, headers=stranger
    )
    assert response.status_code == 403
