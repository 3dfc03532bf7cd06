"""QIDO-RS study search, driven by dicomweb-client (rows put in the index with SQL)."""

from __future__ import annotations

import uuid
from datetime import date

import httpx
import pytest
import requests
from dicomweb_client import DICOMwebClient

from tests.support import Issuer, PostgresServer, bearer

ROOT = "1.2.826.0.1.3680043.10.1"


def _uid() -> str:
    return f"{ROOT}.{uuid.uuid4().int % 10**20}"


@pytest.fixture(scope="module")
def studies(imaging_url: str, postgres: PostgresServer) -> dict[str, str]:
    """Three studies of one patient (unique per run), indexed directly."""
    patient = f"QIDO-{uuid.uuid4().hex[:8]}"
    rows = {
        "ct_2024": (_uid(), date(2024, 3, 1), "ACC-1", ["CT"]),
        "mr_2025": (_uid(), date(2025, 6, 15), "ACC-2", ["MR", "SR"]),
        "ct_2026": (_uid(), date(2026, 1, 10), "BCC-3", ["CT", "SEG"]),
    }
    for uid, study_date, accession, modalities in rows.values():
        postgres.fetch(
            "test_imaging",
            "INSERT INTO imaging.study (study_instance_uid, patient_id, patient_name, study_date, accession_number,"
            " modalities, series_count, instance_count) VALUES ($1, $2, $3, $4, $5, $6, 2, 40)",
            uid, patient, "Yamada^Taro", study_date, accession, modalities,
        )  # fmt: skip
    return {"patient": patient, **{key: value[0] for key, value in rows.items()}}


@pytest.fixture
def dicomweb(imaging_url: str, issuer: Issuer) -> DICOMwebClient:
    session = requests.Session()
    session.headers.update(bearer(issuer.token("dicomweb.read")))
    return DICOMwebClient(f"{imaging_url}/dicomweb", session=session)


def _uids(results: list[dict[str, dict]]) -> set[str]:  # type: ignore[type-arg]
    return {result["0020000D"]["Value"][0] for result in results}


def test_search_by_patient_id(dicomweb: DICOMwebClient, studies: dict[str, str]) -> None:
    results = dicomweb.search_for_studies(search_filters={"PatientID": studies["patient"]})
    assert _uids(results) == {studies["ct_2024"], studies["mr_2025"], studies["ct_2026"]}
    first = results[0]  # newest first
    assert first["0020000D"]["Value"] == [studies["ct_2026"]]
    assert first["00080061"] == {"vr": "CS", "Value": ["CT", "SEG"]}
    assert first["00100010"]["Value"] == [{"Alphabetic": "Yamada^Taro"}]
    assert first["00201208"]["Value"] == [40]
    assert first["00081190"]["Value"][0].endswith(f"/dicomweb/studies/{studies['ct_2026']}")


def test_search_by_date_range(dicomweb: DICOMwebClient, studies: dict[str, str]) -> None:
    closed = dicomweb.search_for_studies(
        search_filters={"PatientID": studies["patient"], "StudyDate": "20250101-20251231"}
    )
    assert _uids(closed) == {studies["mr_2025"]}
    open_ended = dicomweb.search_for_studies(search_filters={"PatientID": studies["patient"], "StudyDate": "20250101-"})
    assert _uids(open_ended) == {studies["mr_2025"], studies["ct_2026"]}
    single = dicomweb.search_for_studies(search_filters={"PatientID": studies["patient"], "00080020": "20240301"})
    assert _uids(single) == {studies["ct_2024"]}


def test_search_by_uid_list_and_wildcard(dicomweb: DICOMwebClient, studies: dict[str, str]) -> None:
    listed = dicomweb.search_for_studies(
        search_filters={"StudyInstanceUID": f"{studies['ct_2024']},{studies['ct_2026']}"}
    )
    assert _uids(listed) == {studies["ct_2024"], studies["ct_2026"]}
    wildcard = dicomweb.search_for_studies(search_filters={"PatientID": studies["patient"], "AccessionNumber": "ACC-?"})
    assert _uids(wildcard) == {studies["ct_2024"], studies["mr_2025"]}


def test_no_match_is_an_empty_list(dicomweb: DICOMwebClient) -> None:
    assert dicomweb.search_for_studies(search_filters={"PatientID": "nobody-" + uuid.uuid4().hex}) == []


def test_paging_warns_when_results_are_cut(imaging_url: str, issuer: Issuer, studies: dict[str, str]) -> None:
    response = httpx.get(
        f"{imaging_url}/dicomweb/studies",
        params={"PatientID": studies["patient"], "limit": "2"},
        headers=bearer(issuer.token("dicomweb.read")),
    )
    assert response.status_code == 200
    assert len(response.json()) == 2
    assert "more results" in response.headers["warning"]
    rest = httpx.get(
        f"{imaging_url}/dicomweb/studies",
        params={"PatientID": studies["patient"], "limit": "2", "offset": "2"},
        headers=bearer(issuer.token("dicomweb.read")),
    )
    assert len(rest.json()) == 1
    assert "warning" not in rest.headers


def test_unsupported_key_is_reported_not_silently_ignored(imaging_url: str, issuer: Issuer) -> None:
    response = httpx.get(
        f"{imaging_url}/dicomweb/studies",
        params={"ReferringPhysicianName": "X*"},
        headers=bearer(issuer.token("dicomweb.read")),
    )
    assert response.status_code == 200
    assert response.headers["warning"].startswith('299 oncostruct-imaging "')
    assert "ReferringPhysicianName" in response.headers["warning"]


@pytest.mark.parametrize(
    ("params", "reason"),
    [
        ({"StudyDate": "2025-01-01"}, "DICOM date"),
        ({"StudyDate": "20251301"}, "valid date"),
        ({"StudyInstanceUID": "1.2.abc"}, "valid UID"),
        ({"limit": "-1"}, "non-negative"),
    ],
)
def test_invalid_values_are_bad_requests(imaging_url: str, issuer: Issuer, params: dict[str, str], reason: str) -> None:
    response = httpx.get(
        f"{imaging_url}/dicomweb/studies", params=params, headers=bearer(issuer.token("dicomweb.read"))
    )
    assert response.status_code == 400
    assert reason in response.headers["warning"]


def test_unacceptable_media_type(imaging_url: str, issuer: Issuer) -> None:
    response = httpx.get(
        f"{imaging_url}/dicomweb/studies",
        headers={**bearer(issuer.token("dicomweb.read")), "Accept": "application/dicom+xml"},
    )
    assert response.status_code == 406
