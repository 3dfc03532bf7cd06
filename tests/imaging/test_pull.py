"""Pull import from a real Orthanc (+ DICOMweb plugin) acting as the hospital PACS."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from dicomweb_client import DICOMwebClient

from oncostruct_imaging.app import create_app
from tests.imaging.conftest import Orthanc
from tests.imaging.factory import ct_dataset, new_uid
from tests.support import Issuer, LiveServer, PostgresServer, bearer, free_port


@pytest.fixture(scope="module")
def pulling(
    postgres: PostgresServer, service_settings: Any, orthanc: Orthanc, issuer: Issuer
) -> Iterator[httpx.Client]:
    """An imaging service whose sources are the Orthanc peer and an unreachable PACS."""
    postgres.create_database("pull_imaging")
    sources = {"hospital": {"url": orthanc.dicomweb}, "offline": {"url": f"http://127.0.0.1:{free_port()}/dicom-web"}}
    port = free_port()
    settings = service_settings(
        "imaging",
        database="pull_imaging",
        pacs_sources=sources,
        pull_max_attempts=2,
        series_quiet_s=1.0,
        base_url=f"http://127.0.0.1:{port}/dicomweb",
    )
    with (
        LiveServer(create_app(settings), port=port) as server,
        httpx.Client(
            base_url=server.url + "/dicomweb",
            headers=bearer(issuer.token("dicomweb.read", "dicomweb.write")),
            timeout=60,
        ) as client,
    ):
        yield client


def wait_for(client: httpx.Client, location: str, statuses: set[str], timeout_s: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        body: dict[str, Any] = client.get(location).json()
        if body["status"] in statuses or time.monotonic() > deadline:
            return body
        time.sleep(0.3)


def upstream_study(orthanc_client: DICOMwebClient, patient: str, instances: int) -> str:
    study, series = new_uid(), new_uid()
    orthanc_client.store_instances([ct_dataset(study, series, n, patient_id=patient) for n in range(1, instances + 1)])
    return study


def test_pull_by_study_uid_is_complete_and_idempotent(pulling: httpx.Client, orthanc_client: DICOMwebClient) -> None:
    study = upstream_study(orthanc_client, "PULL-1", 3)
    started = pulling.post("/imports", json={"source": "hospital", "studies": [study]})
    assert started.status_code == 202, started.text
    done = wait_for(pulling, started.headers["location"], {"succeeded", "failed"})
    assert done["status"] == "succeeded", done["error"]
    assert (done["studies_done"], done["instances_stored"], done["instances_failed"]) == (1, 3, 0)
    ours = pulling.get(f"/studies/{study}/instances").json()
    theirs = orthanc_client.search_for_instances(study_instance_uid=study)
    assert {i["00080018"]["Value"][0] for i in ours} == {i["00080018"]["Value"][0] for i in theirs}
    again = pulling.post("/imports", json={"source": "hospital", "studies": [study]})
    repeat = wait_for(pulling, again.headers["location"], {"succeeded", "failed"})
    assert (repeat["instances_stored"], repeat["instances_existing"]) == (0, 3)


def test_pull_by_query(pulling: httpx.Client, orthanc_client: DICOMwebClient) -> None:
    patient = f"PULLQ-{new_uid()[-6:]}"
    studies = {upstream_study(orthanc_client, patient, 1), upstream_study(orthanc_client, patient, 2)}
    started = pulling.post("/imports", json={"source": "hospital", "query": {"PatientID": patient}})
    done = wait_for(pulling, started.headers["location"], {"succeeded", "failed"})
    assert done["status"] == "succeeded", done
    assert (done["studies_total"], done["studies_done"], done["instances_stored"]) == (2, 2, 3)
    found = pulling.get("/studies", params={"PatientID": patient}).json()
    assert {s["0020000D"]["Value"][0] for s in found} == studies


def test_unreachable_source_retries_then_fails_with_a_reason(pulling: httpx.Client) -> None:
    started = pulling.post("/imports", json={"source": "offline", "studies": [new_uid()]})
    done = wait_for(pulling, started.headers["location"], {"failed"}, timeout_s=90)
    assert done["status"] == "failed"
    assert done["attempts"] == 2
    assert "ConnectionError" in done["error"]


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"source": "nowhere", "studies": ["1.2.3"]}, 422),
        ({"source": "hospital"}, 400),
        ({"source": "hospital", "studies": ["1.2.3"], "query": {"PatientID": "x"}}, 400),
        ({"source": "hospital", "studies": ["not-a-uid"]}, 400),
    ],
)
def test_bad_import_requests(pulling: httpx.Client, body: dict[str, Any], status: int) -> None:
    response = pulling.post("/imports", json=body)
    assert response.status_code == status
    assert response.headers["warning"].startswith("299 ")
