"""Waiting for the imaging service's FHIR link of a stored study (its ImagingStudy job runs after the store)."""

from __future__ import annotations

import time

import httpx


def wait_for_imaging_study(clinical: httpx.Client, study_uid: str, timeout_s: float = 60) -> tuple[str, str]:
    """(ImagingStudy id, Patient id) of a stored study, once the imaging service has linked it."""
    deadline = time.monotonic() + timeout_s
    while True:
        bundle = clinical.get("/ImagingStudy", params={"identifier": f"urn:dicom:uid|urn:oid:{study_uid}"}).json()
        entries = bundle.get("entry", [])
        if entries:
            resource = entries[0]["resource"]
            return str(resource["id"]), str(resource["subject"]["reference"]).split("/")[-1]
        assert time.monotonic() < deadline, "the imaging service did not link the study to a FHIR ImagingStudy"
        time.sleep(0.3)


def approve(api: httpx.Client, body: dict[str, object], timeout_s: float = 60) -> dict[str, object]:
    """Create, submit and approve an annotation; while its study is not yet linked in clinical (503 with
    Retry-After: a series or ROI finding needs the ImagingStudy), wait and approve again, as a client should."""
    created = api.post("/annotations", json=body)
    assert created.status_code == 201, created.text
    identifier = created.json()["id"]
    api.post(f"/annotations/{identifier}/submit", headers={"If-Match": '"1"'}).raise_for_status()
    deadline = time.monotonic() + timeout_s
    while (approved := api.post(f"/annotations/{identifier}/approve", headers={"If-Match": '"2"'})).status_code == 503:
        assert time.monotonic() < deadline, approved.text
        time.sleep(float(approved.headers.get("retry-after", "1")))
    assert approved.status_code == 200, approved.text
    result: dict[str, object] = approved.json()
    return result
