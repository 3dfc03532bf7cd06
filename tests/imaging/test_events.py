"""After a store: the study appears as a FHIR ImagingStudy in the live clinical service, and a quiet series
is announced once as complete on the reconstruction queue."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from dicomweb_client import DICOMwebClient
from fhirpy import SyncFHIRClient

from oncostruct_clinical.app import create_app as create_clinical
from oncostruct_shared.settings import ServiceSettings
from tests.imaging.conftest import PrivateImaging
from tests.imaging.factory import ct_dataset, new_uid
from tests.support import Issuer, LiveServer, PostgresServer, free_port


@pytest.fixture
def fhir(clinical_url: str, issuer: Issuer) -> SyncFHIRClient:
    return SyncFHIRClient(f"{clinical_url}/fhir", authorization=f"Bearer {issuer.token('system/*.cruds')}")


def eventually(check: Callable[[], Any], timeout_s: float = 30) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            result = check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
        else:
            return result
        time.sleep(0.2)


def imaging_studies(fhir: SyncFHIRClient, study: str) -> list[Any]:
    return list(fhir.resources("ImagingStudy").search(identifier=f"urn:dicom:uid|urn:oid:{study}").fetch_all())


def test_stored_study_is_linked_as_an_imaging_study(client: DICOMwebClient, fhir: SyncFHIRClient) -> None:
    study, series, patient = new_uid(), new_uid(), f"LINK-{new_uid()[-6:]}"
    client.store_instances(
        [ct_dataset(study, series, n, patient_id=patient, patient_name="Tanaka^Hanako") for n in (1, 2)]
    )

    def linked() -> Any:
        found = imaging_studies(fhir, study)
        assert len(found) == 1
        assert found[0]["numberOfInstances"] == 2
        return found[0]

    resource = eventually(linked)
    assert resource["series"][0]["uid"] == series
    assert resource["modality"][0]["code"] == "CT"
    subject = fhir.reference(reference=resource["subject"]["reference"]).to_resource()
    assert subject["identifier"][0]["value"] == patient
    assert subject["name"][0]["family"] == "Tanaka"

    # More instances later: the same ImagingStudy is updated, not duplicated; the Patient is reused.
    client.store_instances([ct_dataset(study, new_uid(), 1, patient_id=patient)])

    def updated() -> Any:
        found = imaging_studies(fhir, study)
        assert len(found) == 1
        assert found[0]["numberOfSeries"] == 2
        return found[0]

    again = eventually(updated)
    assert again["id"] == resource["id"]
    assert again["subject"] == resource["subject"]


def _complete_events(postgres: PostgresServer, series: str) -> list[dict[str, Any]]:
    rows = postgres.fetch(
        "test_imaging",
        "SELECT args FROM oncostruct_jobs.procrastinate_jobs WHERE task_name = 'series_complete' "
        "AND queue_name = 'reconstruction'",
    )
    events = [json.loads(row["args"]) if isinstance(row["args"], str) else dict(row["args"]) for row in rows]
    return [event for event in events if event["series_uid"] == series]


def test_quiet_series_is_announced_once_per_content(client: DICOMwebClient, postgres: PostgresServer) -> None:
    study, series = new_uid(), new_uid()
    client.store_instances([ct_dataset(study, series, 1)])
    client.store_instances([ct_dataset(study, series, 2)])  # a second batch within the quiet period

    def announced(count: int) -> Callable[[], list[dict[str, Any]]]:
        def check() -> list[dict[str, Any]]:
            events = _complete_events(postgres, series)
            assert len(events) == count
            return events

        return check

    [event] = eventually(announced(1))
    assert event["study_uid"] == study
    assert event["instances"] == 2
    assert event["modality"] == "CT"
    time.sleep(2.5)  # well past the quiet period: nothing new, no second event
    assert len(_complete_events(postgres, series)) == 1
    client.store_instances([ct_dataset(study, series, 3)])  # new content: a new announcement
    events = eventually(announced(2))
    assert sorted(e["instances"] for e in events) == [2, 3]


def test_linking_retries_until_the_clinical_service_answers(
    postgres: PostgresServer,
    service_settings: Callable[..., ServiceSettings],
    private_imaging: PrivateImaging,
    issuer: Issuer,
    fhir: SyncFHIRClient,
) -> None:
    """Stores succeed while the clinical service is down; the link is retried (a second store meanwhile
    neither fails nor leaves a job stuck) and lands once the clinical service is up."""
    clinical_port = free_port()
    study, patient = new_uid(), f"DOWN-{new_uid()[-6:]}"

    def jobs() -> list[dict[str, Any]]:
        rows = postgres.fetch(
            "test_imaging_link",
            "SELECT status::text AS status, args FROM oncostruct_jobs.procrastinate_jobs "
            "WHERE task_name = 'link_imaging_study'",
        )
        return [{"status": row["status"], "args": _args(row["args"])} for row in rows]

    with private_imaging(
        "test_imaging_link",
        clinical_url=f"http://127.0.0.1:{clinical_port}/fhir",
        link_retry_base_s=0.5,
        link_retry_max_s=1.0,
    ) as base_url:
        client = DICOMwebClient(base_url, headers={"Authorization": f"Bearer {issuer.token('dicomweb.write')}"})
        client.store_instances([ct_dataset(study, new_uid(), 1, patient_id=patient)])

        def retrying() -> None:
            assert any(job["args"].get("attempt", 1) >= 3 for job in jobs())

        eventually(retrying)
        client.store_instances([ct_dataset(study, new_uid(), 1, patient_id=patient)])  # while a retry waits
        eventually(retrying)
        with LiveServer(create_clinical(service_settings("clinical")), port=clinical_port):

            def linked() -> None:
                found = imaging_studies(fhir, study)
                assert len(found) == 1
                assert found[0]["numberOfSeries"] == 2

            eventually(linked)

            def settled() -> None:  # every attempt ended; none stuck in 'doing' or failed
                statuses = {job["status"] for job in jobs()}
                assert statuses == {"succeeded"}, statuses

            eventually(settled)


def _args(value: Any) -> dict[str, Any]:
    return json.loads(value) if isinstance(value, str) else dict(value)


def test_a_standalone_archive_does_not_link(
    postgres: PostgresServer, private_imaging: PrivateImaging, issuer: Issuer
) -> None:
    """LINK_STUDIES=false: stores defer no ImagingStudy link (the series-complete check still runs)."""
    with private_imaging("test_imaging_standalone", link_studies=False) as base_url:
        client = DICOMwebClient(base_url, headers={"Authorization": f"Bearer {issuer.token('dicomweb.write')}"})
        client.store_instances([ct_dataset(new_uid(), new_uid(), 1)])
        tasks = [
            row["task_name"]
            for row in postgres.fetch(
                "test_imaging_standalone", "SELECT task_name FROM oncostruct_jobs.procrastinate_jobs"
            )
        ]
        assert tasks == ["series_quiet_check"]
