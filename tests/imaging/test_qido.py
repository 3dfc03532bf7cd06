"""QIDO-RS (PS3.18 §10.6) driven by dicomweb-client, on real instances stored with STOW-RS."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from dicomweb_client import DICOMwebClient

from tests.imaging.factory import ct_dataset, new_uid
from tests.support import Issuer, bearer

Result = dict[str, dict[str, Any]]


@pytest.fixture(scope="module")
def studies(dicomweb_url: str, auth: dict[str, str]) -> dict[str, str]:
    """Three studies of one patient (unique per run) plus named series and instances, stored via STOW-RS."""
    patient = f"QIDO-{uuid.uuid4().hex[:8]}"
    client = DICOMwebClient(dicomweb_url, headers=auth)
    uids: dict[str, str] = {"patient": patient}
    plan = {
        "ct_2024": ("20240301", "093000", "ACC-1", [("CT", 1, 2)]),
        "mr_2025": ("20250615", "141500.5", "ACC-2", [("MR", 1, 1), ("SR", 2, 1)]),
        "ct_2026": ("20260110", "235959", "BCC-3", [("CT", 1, 1), ("SEG", 7, 1)]),
    }
    for name, (study_date, study_time, accession, series_plan) in plan.items():
        study = uids[name] = new_uid()
        datasets = []
        for modality, series_number, count in series_plan:
            series = uids[f"{name}_{modality}"] = new_uid()
            for number in range(1, count + 1):
                ds = ct_dataset(
                    study,
                    series,
                    number,
                    patient_id=patient,
                    patient_name="Yamada^Taro",
                    StudyDate=study_date,
                    StudyTime=study_time,
                    AccessionNumber=accession,
                    Modality=modality,
                    SeriesNumber=series_number,
                )
                if modality == "MR":
                    item = ct_dataset(study, series).__class__()
                    item.ScheduledProcedureStepID = "SPS-77"
                    item.RequestedProcedureID = "RP-5"
                    ds.RequestAttributesSequence = [item]
                uids[f"{name}_{modality}_{number}"] = ds.SOPInstanceUID
                datasets.append(ds)
        client.store_instances(datasets)
    return uids


@pytest.fixture
def dicomweb(dicomweb_url: str, issuer: Issuer) -> DICOMwebClient:
    return DICOMwebClient(dicomweb_url, headers=bearer(issuer.token("dicomweb.read")))


def _uids(results: list[Result], tag: str = "0020000D") -> set[str]:
    return {result[tag]["Value"][0] for result in results}


def _get(url: str, issuer: Issuer, params: dict[str, str] | list[tuple[str, str]]) -> httpx.Response:
    return httpx.get(url, params=params, headers=bearer(issuer.token("dicomweb.read")), timeout=30)


def test_search_by_patient_id(dicomweb: DICOMwebClient, studies: dict[str, str]) -> None:
    results = dicomweb.search_for_studies(search_filters={"PatientID": studies["patient"]})
    assert _uids(results) == {studies["ct_2024"], studies["mr_2025"], studies["ct_2026"]}
    first = results[0]  # newest first
    assert first["0020000D"]["Value"] == [studies["ct_2026"]]
    assert first["00080061"] == {"vr": "CS", "Value": ["CT", "SEG"]}
    assert first["00100010"]["Value"] == [{"Alphabetic": "Yamada^Taro"}]
    assert first["00201206"]["Value"] == [2]
    assert first["00201208"]["Value"] == [2]
    assert first["00081190"]["Value"][0].endswith(f"/dicomweb/studies/{studies['ct_2026']}")


def test_search_by_date_range(dicomweb: DICOMwebClient, studies: dict[str, str]) -> None:
    closed = dicomweb.search_for_studies(
        search_filters={"PatientID": studies["patient"], "StudyDate": "20250101-20251231"}
    )
    assert _uids(closed) == {studies["mr_2025"]}
    open_ended = dicomweb.search_for_studies(search_filters={"PatientID": studies["patient"], "StudyDate": "20250101-"})
    assert _uids(open_ended) == {studies["mr_2025"], studies["ct_2026"]}
    until = dicomweb.search_for_studies(search_filters={"PatientID": studies["patient"], "StudyDate": "-20250615"})
    assert _uids(until) == {studies["ct_2024"], studies["mr_2025"]}
    single = dicomweb.search_for_studies(search_filters={"PatientID": studies["patient"], "00080020": "20240301"})
    assert _uids(single) == {studies["ct_2024"]}


@pytest.mark.parametrize(
    ("value", "expected"),
    [("0930", {"ct_2024"}), ("1200-", {"mr_2025", "ct_2026"}), ("-1415", {"ct_2024"}), ("1415-1416", {"mr_2025"})],
)
def test_search_by_time_and_time_range(
    dicomweb: DICOMwebClient, studies: dict[str, str], value: str, expected: set[str]
) -> None:
    results = dicomweb.search_for_studies(search_filters={"PatientID": studies["patient"], "StudyTime": value})
    assert _uids(results) == {studies[name] for name in expected}


def test_search_by_uid_list_and_wildcard(dicomweb: DICOMwebClient, studies: dict[str, str]) -> None:
    listed = dicomweb.search_for_studies(
        search_filters={"StudyInstanceUID": f"{studies['ct_2024']},{studies['ct_2026']}"}
    )
    assert _uids(listed) == {studies["ct_2024"], studies["ct_2026"]}
    backslash = dicomweb.search_for_studies(
        search_filters={"StudyInstanceUID": f"{studies['ct_2024']}\\{studies['mr_2025']}"}
    )
    assert _uids(backslash) == {studies["ct_2024"], studies["mr_2025"]}
    wildcard = dicomweb.search_for_studies(search_filters={"PatientID": studies["patient"], "AccessionNumber": "ACC-?"})
    assert _uids(wildcard) == {studies["ct_2024"], studies["mr_2025"]}
    star = dicomweb.search_for_studies(search_filters={"PatientID": studies["patient"][:9] + "*"})
    assert {studies["ct_2024"], studies["mr_2025"], studies["ct_2026"]} <= _uids(star)


def test_search_by_modalities_in_study(dicomweb: DICOMwebClient, studies: dict[str, str]) -> None:
    seg = dicomweb.search_for_studies(search_filters={"PatientID": studies["patient"], "ModalitiesInStudy": "SEG"})
    assert _uids(seg) == {studies["ct_2026"]}
    either = dicomweb.search_for_studies(
        search_filters={"PatientID": studies["patient"], "ModalitiesInStudy": "SR\\SEG"}
    )
    assert _uids(either) == {studies["mr_2025"], studies["ct_2026"]}


def test_no_match_is_an_empty_list(dicomweb: DICOMwebClient) -> None:
    assert dicomweb.search_for_studies(search_filters={"PatientID": "nobody-" + uuid.uuid4().hex}) == []


def test_series_search_nested_and_across_studies(dicomweb: DICOMwebClient, studies: dict[str, str]) -> None:
    nested = dicomweb.search_for_series(studies["mr_2025"])
    assert [series["0020000E"]["Value"][0] for series in nested] == [studies["mr_2025_MR"], studies["mr_2025_SR"]]
    assert nested[0]["00201209"]["Value"] == [1]
    assert nested[0]["00080060"]["Value"] == ["MR"]
    across = dicomweb.search_for_series(search_filters={"PatientID": studies["patient"], "Modality": "SEG"})
    assert _uids(across, "0020000E") == {studies["ct_2026_SEG"]}
    assert across[0]["0020000D"]["Value"] == [studies["ct_2026"]]  # study attributes when not nested
    assert across[0]["00100020"]["Value"] == [studies["patient"]]
    by_number = dicomweb.search_for_series(studies["ct_2026"], search_filters={"SeriesNumber": "7"})
    assert _uids(by_number, "0020000E") == {studies["ct_2026_SEG"]}


@pytest.mark.parametrize(
    "key", ["RequestAttributesSequence.ScheduledProcedureStepID", "00400275.00400009", "ScheduledProcedureStepID"]
)
def test_series_sequence_matching(dicomweb: DICOMwebClient, studies: dict[str, str], key: str) -> None:
    results = dicomweb.search_for_series(search_filters={"PatientID": studies["patient"], key: "SPS-77"})
    assert _uids(results, "0020000E") == {studies["mr_2025_MR"]}
    wildcard = dicomweb.search_for_series(search_filters={"PatientID": studies["patient"], key: "SPS-*"})
    assert _uids(wildcard, "0020000E") == {studies["mr_2025_MR"]}


def test_instance_search_levels(dicomweb: DICOMwebClient, studies: dict[str, str]) -> None:
    in_series = dicomweb.search_for_instances(studies["ct_2024"], studies["ct_2024_CT"])
    assert [result["00080018"]["Value"][0] for result in in_series] == [
        studies["ct_2024_CT_1"],
        studies["ct_2024_CT_2"],
    ]
    first = in_series[0]
    assert first["00080016"]["Value"] == ["1.2.840.10008.5.1.4.1.1.2"]
    assert first["00200013"]["Value"] == [1]
    assert first["00280010"]["Value"] == [32]
    assert first["00081190"]["Value"][0].endswith(f"/instances/{studies['ct_2024_CT_1']}")
    in_study = dicomweb.search_for_instances(studies["ct_2024"], search_filters={"InstanceNumber": "2"})
    assert _uids(in_study, "00080018") == {studies["ct_2024_CT_2"]}
    everywhere = dicomweb.search_for_instances(
        search_filters={"PatientID": studies["patient"], "SOPInstanceUID": studies["ct_2026_SEG_1"]}
    )
    assert len(everywhere) == 1
    assert everywhere[0]["0020000D"]["Value"] == [studies["ct_2026"]]
    assert everywhere[0]["00201209"]["Value"] == [1]


def test_includefield_by_keyword_tag_and_all(dicomweb: DICOMwebClient, studies: dict[str, str]) -> None:
    (study,) = dicomweb.search_for_studies(
        search_filters={"StudyInstanceUID": studies["ct_2024"]}, fields=["PatientBirthDate", "00101010"]
    )
    assert study["00100030"]["Value"] == ["19700101"]
    (instance,) = dicomweb.search_for_instances(
        studies["ct_2024"],
        studies["ct_2024_CT"],
        search_filters={"InstanceNumber": "1"},
        fields=["PixelSpacing", "00281050"],
    )
    assert instance["00280030"]["Value"] == [0.7, 0.7]
    assert instance["00281050"]["Value"] == [40]
    (everything,) = dicomweb.search_for_instances(
        studies["ct_2024"], studies["ct_2024_CT"], search_filters={"InstanceNumber": "1"}, fields=["all"]
    )
    assert "00200032" in everything  # ImagePositionPatient: only with includefield=all
    assert everything["7FE00010"]["BulkDataURI"].startswith("http://")


def test_paging_warns_when_results_are_cut(dicomweb_url: str, issuer: Issuer, studies: dict[str, str]) -> None:
    response = _get(f"{dicomweb_url}/studies", issuer, {"PatientID": studies["patient"], "limit": "2"})
    assert response.status_code == 200
    assert len(response.json()) == 2
    assert "more results" in response.headers["warning"]
    rest = _get(f"{dicomweb_url}/studies", issuer, {"PatientID": studies["patient"], "limit": "2", "offset": "2"})
    assert len(rest.json()) == 1
    assert "warning" not in rest.headers


@pytest.mark.parametrize(
    ("path", "key"),
    [("/studies", "PatientWeight"), ("/studies", "00101030"), ("/studies", "Modality"), ("/series", "SOPClassUID")],
)
def test_unsupported_key_is_reported_not_silently_ignored(
    dicomweb_url: str, issuer: Issuer, path: str, key: str
) -> None:
    response = _get(f"{dicomweb_url}{path}", issuer, {key: "X*"})
    assert response.status_code == 200
    assert response.headers["warning"].startswith('299 oncostruct-imaging "')
    assert key in response.headers["warning"]


@pytest.mark.parametrize(
    ("path", "params", "reason"),
    [
        ("/studies", {"StudyDate": "2025-01-01"}, "DICOM date"),
        ("/studies", {"StudyDate": "20251301"}, "valid date"),
        ("/studies", {"StudyTime": "2561"}, "DICOM time"),
        ("/studies", {"StudyInstanceUID": "1.2.abc"}, "valid UID"),
        ("/studies", {"limit": "-1"}, "non-negative"),
        ("/studies", {"fuzzymatching": "maybe"}, "true or false"),
        ("/studies", {"includefield": "NoSuchKeyword"}, "keyword"),
        ("/series", {"SeriesNumber": "seven"}, "integer"),
        ("/instances", {"InstanceNumber": "9999999999"}, "out of range"),
        ("/studies", {"offset": "99999999999999999999"}, "out of range"),
        ("/studies", {"PatientID": "P\x00"}, "control character"),
        ("/studies", {"PatientName": "Doe\x00*"}, "control character"),
        ("/studies", {"limit": "١٢"}, "non-negative integer"),  # Arabic-Indic digits: str.isdigit() says yes
        ("/studies/1.2.x/series", {}, "valid UID"),
        ("/studies/1.2/series/01.2/instances", {}, "valid UID"),
    ],
)
def test_invalid_values_are_bad_requests(
    dicomweb_url: str, issuer: Issuer, path: str, params: dict[str, str], reason: str
) -> None:
    response = _get(f"{dicomweb_url}{path}", issuer, params)
    assert response.status_code == 400
    assert reason in response.headers["warning"]


def test_a_huge_limit_is_cut_with_a_warning(dicomweb_url: str, issuer: Issuer) -> None:
    response = _get(f"{dicomweb_url}/studies", issuer, {"limit": "99999999999999999999"})
    assert response.status_code == 200
    assert "limit was reduced" in response.headers["warning"]


def test_unacceptable_media_type(dicomweb_url: str, issuer: Issuer) -> None:
    response = httpx.get(
        f"{dicomweb_url}/studies",
        headers={**bearer(issuer.token("dicomweb.read")), "Accept": "application/dicom+xml"},
    )
    assert response.status_code == 406


def test_accept_with_q_values_picks_json(dicomweb_url: str, issuer: Issuer) -> None:
    response = httpx.get(
        f"{dicomweb_url}/studies",
        params={"limit": "1"},
        headers={**bearer(issuer.token("dicomweb.read")), "Accept": "application/dicom+xml;q=0.9, */*;q=0.1"},
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/dicom+json"
