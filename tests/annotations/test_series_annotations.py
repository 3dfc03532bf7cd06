"""Series and ROI annotations on a series stored in the live imaging service, and their DICOM SEG + SR export."""

from __future__ import annotations

import subprocess
import tempfile
import uuid
from pathlib import Path
from typing import Any

import highdicom as hd
import httpx
import numpy as np
import pytest
import requests
from dicomweb_client import DICOMwebClient

from tests.annotations.fhir_link import approve as approve_annotation
from tests.imaging.factory import ct_dataset, new_uid
from tests.support import Issuer, bearer

V1 = "/annotations/v1"


@pytest.fixture(scope="module")
def series(imaging_url: str, issuer: Issuer) -> dict[str, Any]:
    """Five 64×64 CT slices of one series, stored through STOW-RS."""
    study, series_uid, frame_of_reference = new_uid(), new_uid(), new_uid()
    datasets = [
        ct_dataset(study, series_uid, n, size=64, patient_id="ANN-1", FrameOfReferenceUID=frame_of_reference)
        for n in range(1, 6)
    ]
    session = requests.Session()
    session.headers.update(bearer(issuer.token("dicomweb.read", "dicomweb.write")))
    DICOMwebClient(f"{imaging_url}/dicomweb", session=session).store_instances(datasets)
    return {"study": study, "series": series_uid, "sops": [ds.SOPInstanceUID for ds in datasets]}


@pytest.fixture
def api(annotations_url: str, issuer: Issuer) -> httpx.Client:
    scopes = ("annotations.read", "annotations.write", "annotations.review")
    return httpx.Client(
        base_url=annotations_url + V1, headers=bearer(issuer.token(*scopes, subject="dr-roi")), timeout=60
    )


@pytest.fixture
def project(api: httpx.Client) -> str:
    return str(api.post("/projects", json={"name": f"roi-{uuid.uuid4().hex[:8]}"}).json()["id"])


def roi(project: str, series: dict[str, Any], geometry: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"project_id": project, "level": "roi", "label": "lesion", "value": "primary_tumour",
            "study_uid": series["study"], "series_uid": series["series"], "geometry": geometry, **extra}  # fmt: skip


def polygon(sop: str, points: list[list[float]]) -> dict[str, Any]:
    return {"type": "polygon", "sop_instance_uid": sop, "points": points}


def test_roi_on_a_stored_series_is_accepted(api: httpx.Client, project: str, series: dict[str, Any]) -> None:
    created = api.post(
        "/annotations", json=roi(project, series, polygon(series["sops"][2], [[10, 10], [30, 10], [20, 30]]))
    )
    assert created.status_code == 201, created.text


@pytest.mark.parametrize(
    ("geometry", "reason"),
    [
        (lambda s: polygon(s["sops"][0], [[10, 10], [70, 10], [20, 30]]), "outside"),  # beyond 64 columns
        (lambda s: polygon(new_uid(), [[1, 1], [5, 1], [3, 4]]), "not in the series"),
        (lambda s: {**polygon(s["sops"][0], [[1, 1], [5, 1], [3, 4]]), "frame": 2}, "frame"),
    ],
)
def test_geometry_that_does_not_fit_the_series_is_unprocessable(
    api: httpx.Client, project: str, series: dict[str, Any], geometry: Any, reason: str
) -> None:
    response = api.post("/annotations", json=roi(project, series, geometry(series)))
    assert response.status_code == 422
    assert reason in response.json()["detail"]


def approve(api: httpx.Client, body: dict[str, Any]) -> str:
    return str(approve_annotation(api, body)["id"])


def test_export_writes_a_valid_seg_and_sr_to_imaging(
    api: httpx.Client, project: str, series: dict[str, Any], imaging_url: str, issuer: Issuer
) -> None:
    approve(api, roi(project, series, polygon(series["sops"][1], [[10, 10], [30, 10], [30, 30], [10, 30]]),
                     attributes={"margin": "spiculated"}, tracking_id="lesion-1"))  # fmt: skip
    approve(api, {"project_id": project, "level": "series", "label": "exam_purpose", "value": "staging",
                  "study_uid": series["study"], "series_uid": series["series"]})  # fmt: skip
    exported = api.post("/exports/dicom", json={"project_id": project, "study_uid": series["study"],
                                                "series_uid": series["series"]})  # fmt: skip
    assert exported.status_code == 200, exported.text
    result = exported.json()
    assert result["annotations"] == 2
    session = requests.Session()
    session.headers.update(bearer(issuer.token("dicomweb.read")))
    client = DICOMwebClient(f"{imaging_url}/dicomweb", session=session)
    seg_ds = client.retrieve_instance(
        series["study"], result["segmentation"]["series_instance_uid"], result["segmentation"]["sop_instance_uid"]
    )
    sr_ds = client.retrieve_instance(
        series["study"], result["report"]["series_instance_uid"], result["report"]["sop_instance_uid"]
    )
    seg = hd.seg.Segmentation.from_dataset(seg_ds)
    assert seg.number_of_segments == 1
    assert int(seg_ds.pixel_array.sum()) == 20 * 20  # the square's pixel centres, one frame
    assert seg.get_source_image_uids()[0][1] == series["series"]
    report = hd.sr.Comprehensive3DSR.from_dataset(sr_ds)
    groups = report.content.get_planar_roi_measurement_groups()
    assert len(groups) == 1
    assert groups[0].tracking_identifier == "lesion-1"
    with tempfile.TemporaryDirectory() as folder:
        for name, dataset in (("seg.dcm", seg_ds), ("sr.dcm", sr_ds)):
            path = Path(folder) / name
            dataset.save_as(path, enforce_file_format=True)
            output = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
            errors = [line for line in (output.stdout + output.stderr).splitlines() if line.startswith("Error")]
            assert errors == [], (name, errors)


def test_export_without_matching_annotations_is_unprocessable(
    api: httpx.Client, project: str, series: dict[str, Any]
) -> None:
    response = api.post("/exports/dicom", json={"project_id": project, "study_uid": series["study"],
                                                "series_uid": series["series"], "statuses": ["approved"]})  # fmt: skip
    assert response.status_code == 422


def test_seg_and_sr_import_into_another_project(api: httpx.Client, project: str, series: dict[str, Any]) -> None:
    square = [[10, 10], [30, 10], [30, 30], [10, 30]]
    approve(api, roi(project, series, polygon(series["sops"][2], square), attributes={"margin": "lobulated"},
                     tracking_id="lesion-9"))  # fmt: skip
    approve(api, {"project_id": project, "level": "series", "label": "exam_purpose", "value": "follow_up",
                  "study_uid": series["study"], "series_uid": series["series"]})  # fmt: skip
    exported = api.post("/exports/dicom", json={"project_id": project, "study_uid": series["study"],
                                                "series_uid": series["series"]}).json()  # fmt: skip
    target = str(api.post("/projects", json={"name": f"import-{uuid.uuid4().hex[:8]}"}).json()["id"])

    def import_series(series_uid: str) -> httpx.Response:
        body = {"project_id": target, "study_uid": series["study"], "series_uid": series_uid}
        return api.post("/imports/dicom", json=body)

    from_seg = import_series(exported["segmentation"]["series_instance_uid"])
    assert from_seg.status_code == 200, from_seg.text
    assert from_seg.json()["created"] == 1
    mask = api.get(f"/annotations/{from_seg.json()['ids'][0]}").json()
    assert (mask["level"], mask["label"], mask["value"], mask["status"]) == ("roi", "lesion", "primary_tumour", "draft")
    assert mask["series_uid"] == series["series"]  # on the source images, not on the SEG series
    assert mask["geometry"]["type"] == "mask"
    assert mask["geometry"]["sop_instance_uids"] == [series["sops"][2]]
    assert mask["tracking_id"] == "lesion-9"
    from_sr = import_series(exported["report"]["series_instance_uid"])
    assert from_sr.status_code == 200, from_sr.text
    imported = [api.get(f"/annotations/{i}").json() for i in from_sr.json()["ids"]]
    by_level = {item["level"]: item for item in imported}
    assert by_level["series"]["label"] == "exam_purpose"
    assert by_level["series"]["value"] == "follow_up"
    assert by_level["roi"]["geometry"]["type"] == "polygon"
    assert np.allclose(by_level["roi"]["geometry"]["points"], square, atol=1e-4)
    assert by_level["roi"]["attributes"] == {"margin": "lobulated"}
    again = import_series(exported["report"]["series_instance_uid"])
    assert (again.json()["created"], again.json()["existing"]) == (0, len(imported))  # idempotent


def test_importing_a_series_that_is_not_seg_or_sr_is_unprocessable(
    api: httpx.Client, project: str, series: dict[str, Any]
) -> None:
    body = {"project_id": project, "study_uid": series["study"], "series_uid": series["series"]}
    response = api.post("/imports/dicom", json=body)
    assert response.status_code == 422
    assert "no DICOM SEG or SR" in response.json()["detail"]
    assert api.get("/annotations", params={"project_id": project}).json()["items"] == []


def test_measurements_in_mm_come_from_the_image_geometry(
    api: httpx.Client, project: str, series: dict[str, Any]
) -> None:
    # The factory's CT has Pixel Spacing 0.7 mm and Slice Thickness 1 mm.
    square = api.post(
        "/annotations", json=roi(project, series, polygon(series["sops"][0], [[10, 10], [30, 10], [30, 30], [10, 30]]))
    )
    assert square.status_code == 201, square.text
    assert square.json()["measurements"] == {"area_mm2": pytest.approx(196.0), "perimeter_mm": pytest.approx(56.0)}
    line = {"type": "line", "sop_instance_uid": series["sops"][1], "points": [[0, 0], [30, 40]]}
    measured = api.post("/annotations", json=roi(project, series, line)).json()["measurements"]
    assert measured == {"length_mm": pytest.approx(35.0)}
    contours = {
        "type": "contours",
        "polygons": [polygon(sop, [[0, 0], [10, 0], [10, 10], [0, 10]]) for sop in series["sops"][:3]],
    }
    measured = api.post("/annotations", json=roi(project, series, contours)).json()["measurements"]
    assert measured == {"area_mm2": pytest.approx(147.0), "volume_mm3": pytest.approx(147.0)}
    # Editing the geometry measures again.
    identifier = square.json()["id"]
    edit = {"geometry": polygon(series["sops"][0], [[10, 10], [20, 10], [20, 20], [10, 20]])}
    smaller = api.patch(f"/annotations/{identifier}", headers={"If-Match": '"1"'}, json=edit)
    assert smaller.status_code == 200, smaller.text
    assert smaller.json()["measurements"]["area_mm2"] == pytest.approx(49.0)
