"""STOW-RS (PS3.18 §10.5) against the live service: dicomweb-client, raw httpx for header variants, bad input."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pydicom
import pytest
from dicomweb_client import DICOMwebClient

from oncostruct_imaging.app import create_app
from tests.imaging.factory import ct_dataset, multipart, new_uid, to_bytes
from tests.support import Issuer, LiveServer, PostgresServer, bearer

STOW_TYPE = 'multipart/related; type="application/dicom"; boundary=test-boundary-42'


def _failed(body: dict[str, Any]) -> list[tuple[str | None, int]]:
    items = body.get("00081198", {}).get("Value", [])
    return [(item["00081155"].get("Value", [None])[0], item["00081197"]["Value"][0]) for item in items]


def _stored(body: dict[str, Any]) -> list[str]:
    return [item["00081155"]["Value"][0] for item in body.get("00081199", {}).get("Value", [])]


def _post(http: httpx.Client, url: str, parts: list[bytes], content_type: str = STOW_TYPE) -> httpx.Response:
    return http.post(url, content=multipart(parts), headers={"Content-Type": content_type})


def _count(postgres: PostgresServer, sop_uid: str) -> int:
    rows = postgres.fetch("test_imaging", "SELECT count(*) FROM imaging.instance WHERE sop_instance_uid = $1", sop_uid)
    return int(rows[0][0])


def test_store_with_dicomweb_client_references_every_instance(
    client: DICOMwebClient, dicomweb_url: str, postgres: PostgresServer
) -> None:
    study, series = new_uid(), new_uid()
    datasets = [ct_dataset(study, series, number) for number in range(1, 4)]
    response = client.store_instances(datasets)
    assert response.RetrieveURL == f"{dicomweb_url}/studies/{study}"
    referenced = response.ReferencedSOPSequence
    assert [item.ReferencedSOPInstanceUID for item in referenced] == [ds.SOPInstanceUID for ds in datasets]
    assert referenced[0].RetrieveURL.endswith(
        f"/studies/{study}/series/{series}/instances/{datasets[0].SOPInstanceUID}"
    )
    assert "FailedSOPSequence" not in response
    assert all(_count(postgres, ds.SOPInstanceUID) == 1 for ds in datasets)


@pytest.mark.parametrize(
    "content_type",
    [
        "multipart/related; type=application/dicom; boundary=test-boundary-42",
        'multipart/related; type="application/dicom"; boundary="test-boundary-42"',
        'Multipart/Related;boundary=test-boundary-42;TYPE="application/dicom"',
        "multipart/related; boundary=test-boundary-42",
    ],
)
def test_quoted_and_unquoted_parameters_are_accepted(http: httpx.Client, dicomweb_url: str, content_type: str) -> None:
    ds = ct_dataset(new_uid(), new_uid())
    response = _post(http, f"{dicomweb_url}/studies", [to_bytes(ds)], content_type)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/dicom+json"
    assert _stored(response.json()) == [ds.SOPInstanceUID]


def test_storing_the_same_content_again_is_idempotent(
    http: httpx.Client, dicomweb_url: str, postgres: PostgresServer
) -> None:
    payload = to_bytes(ct_dataset(new_uid(), new_uid()))
    sop = pydicom.dcmread(pydicom.filebase.DicomBytesIO(payload)).SOPInstanceUID
    first = _post(http, f"{dicomweb_url}/studies", [payload])
    second = _post(http, f"{dicomweb_url}/studies", [payload, payload])
    assert first.status_code == second.status_code == 200
    assert _stored(second.json()) == [sop, sop]
    assert _count(postgres, sop) == 1


def test_different_content_under_a_stored_uid_is_rejected_by_default(
    http: httpx.Client, client: DICOMwebClient, dicomweb_url: str
) -> None:
    study, series, sop = new_uid(), new_uid(), new_uid()
    original = ct_dataset(study, series, sop_instance=sop, seed=1)
    changed = ct_dataset(study, series, sop_instance=sop, seed=2)
    assert _post(http, f"{dicomweb_url}/studies", [to_bytes(original)]).status_code == 200
    response = _post(http, f"{dicomweb_url}/studies", [to_bytes(changed)])
    assert response.status_code == 409
    assert _failed(response.json()) == [(sop, 0x0111)]
    kept = client.retrieve_instance(study, series, sop)
    assert kept.PixelData == original.PixelData


@pytest.fixture(scope="module")
def replacing_server_settings(imaging_url: str, service_settings: Callable[..., Any]) -> Any:
    """Settings of a second imaging app on the same database, with duplicate_policy=replace."""
    return service_settings("imaging", database="test_imaging", duplicate_policy="replace")


@pytest.fixture(scope="module")
def replacing_server(replacing_server_settings: Any) -> Iterator[str]:
    """That second app, live (its own storage folder, known to the tests)."""
    with LiveServer(create_app(replacing_server_settings)) as server:
        yield f"{server.url}/dicomweb"


def test_replace_policy_keeps_the_newer_content(replacing_server: str, auth: dict[str, str]) -> None:
    study, series, sop = new_uid(), new_uid(), new_uid()
    with httpx.Client(timeout=30, headers=auth) as http:
        for seed in (1, 2):
            response = _post(
                http, f"{replacing_server}/studies", [to_bytes(ct_dataset(study, series, sop_instance=sop, seed=seed))]
            )
            assert response.status_code == 200
        newer = ct_dataset(study, series, sop_instance=sop, seed=2)
        session_client = DICOMwebClient(replacing_server, headers=auth)
        assert session_client.retrieve_instance(study, series, sop).PixelData == newer.PixelData


def test_study_uid_mismatch_fails_that_instance_with_c409(http: httpx.Client, dicomweb_url: str) -> None:
    target, other = new_uid(), new_uid()
    matching = ct_dataset(target, new_uid())
    foreign = ct_dataset(other, new_uid())
    response = _post(http, f"{dicomweb_url}/studies/{target}", [to_bytes(matching), to_bytes(foreign)])
    assert response.status_code == 202
    body = response.json()
    assert _stored(body) == [matching.SOPInstanceUID]
    assert _failed(body) == [(foreign.SOPInstanceUID, 0xC409)]
    assert body["00081190"]["Value"] == [f"{dicomweb_url}/studies/{target}"]
    only_foreign = _post(http, f"{dicomweb_url}/studies/{target}", [to_bytes(ct_dataset(other, new_uid()))])
    assert only_foreign.status_code == 409


def _without(keyword: str) -> bytes:
    ds = ct_dataset(new_uid(), new_uid())
    delattr(ds, keyword)
    return to_bytes(ds)


def _meta_mismatch() -> bytes:
    # pydicom rewrites the meta from the data set on save: change the first (meta) copy in the bytes.
    payload = to_bytes(ct_dataset(new_uid(), new_uid()))
    return payload.replace(b"1.2.840.10008.5.1.4.1.1.2\0", b"1.2.840.10008.5.1.4.1.1.4\0", 1)


def _truncated() -> bytes:
    return to_bytes(ct_dataset(new_uid(), new_uid(), size=64))[:-3000]


def _bad_uid() -> bytes:
    ds = ct_dataset(new_uid(), new_uid())
    ds.SeriesInstanceUID = "1.2.abc"
    return to_bytes(ds)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (lambda: b"this is not a DICOM file at all" * 10, 0xC000),
        (lambda: b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00UI", 0xC000),
        (_truncated, 0xC000),
        (lambda: _without("SOPInstanceUID"), 0xC000),
        (lambda: _without("StudyInstanceUID"), 0xA900),
        (_bad_uid, 0xA900),
        (_meta_mismatch, 0xA900),
    ],
    ids=["not-dicom", "cut-in-meta", "truncated-pixels", "no-sop-uid", "no-study-uid", "bad-series-uid", "sop-class"],
)
def test_bad_parts_fail_with_their_reason_and_others_are_stored(
    http: httpx.Client, dicomweb_url: str, payload: Callable[[], bytes], reason: int
) -> None:
    good = ct_dataset(new_uid(), new_uid())
    response = _post(http, f"{dicomweb_url}/studies", [payload(), to_bytes(good)])
    assert response.status_code == 202, response.text
    assert [code for _, code in _failed(response.json())] == [reason]
    assert _stored(response.json()) == [good.SOPInstanceUID]


def test_a_part_of_another_media_type_fails(http: httpx.Client, dicomweb_url: str) -> None:
    body = multipart([b'{"00100010": {}}'], part_type="application/json")
    response = http.post(f"{dicomweb_url}/studies", content=body, headers={"Content-Type": STOW_TYPE})
    assert response.status_code == 409
    assert [code for _, code in _failed(response.json())] == [0xC000]


@pytest.mark.parametrize(
    ("content_type", "status"),
    [
        ("application/dicom", 415),
        ("application/json", 415),
        ('multipart/related; type="application/dicom+json"; boundary=test-boundary-42', 415),
        ('multipart/related; type="application/dicom"', 400),
    ],
)
def test_wrong_media_type_or_missing_boundary(
    http: httpx.Client, dicomweb_url: str, content_type: str, status: int
) -> None:
    payload = to_bytes(ct_dataset(new_uid(), new_uid()))
    response = _post(http, f"{dicomweb_url}/studies", [payload], content_type)
    assert response.status_code == status
    assert response.headers["warning"].startswith('299 oncostruct-imaging "')


@pytest.mark.parametrize(
    "body",
    [
        lambda part: b"--test-boundary-42\r\nContent-Type: application/dicom\r\n\r\n" + part,  # unterminated
        lambda part: b"no delimiter anywhere " + part,
        lambda part: (
            b"--test-boundary-42\r\nContent-Type application/dicom\r\n\r\n" + part + b"\r\n--test-boundary-42--"
        ),
        lambda part: b"--test-boundary-42--\r\n",  # no parts at all
    ],
    ids=["unterminated", "no-delimiter", "bad-header-line", "empty"],
)
def test_malformed_multipart_is_a_bad_request_and_stores_nothing(
    http: httpx.Client, dicomweb_url: str, postgres: PostgresServer, body: Callable[[bytes], bytes]
) -> None:
    ds = ct_dataset(new_uid(), new_uid())
    response = http.post(f"{dicomweb_url}/studies", content=body(to_bytes(ds)), headers={"Content-Type": STOW_TYPE})
    assert response.status_code == 400
    assert _count(postgres, ds.SOPInstanceUID) == 0
    assert http.get(dicomweb_url.replace("/dicomweb", "/readyz")).status_code == 200


def test_xml_response_when_asked(http: httpx.Client, dicomweb_url: str) -> None:
    ds = ct_dataset(new_uid(), new_uid())
    response = http.post(
        f"{dicomweb_url}/studies",
        content=multipart([to_bytes(ds)]),
        headers={"Content-Type": STOW_TYPE, "Accept": "application/dicom+xml"},
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/dicom+xml"
    assert b'keyword="ReferencedSOPSequence"' in response.content
    assert ds.SOPInstanceUID.encode() in response.content


def test_unacceptable_response_type_is_406(http: httpx.Client, dicomweb_url: str) -> None:
    response = http.post(
        f"{dicomweb_url}/studies",
        content=multipart([to_bytes(ct_dataset(new_uid(), new_uid()))]),
        headers={"Content-Type": STOW_TYPE, "Accept": "text/html"},
    )
    assert response.status_code == 406


def test_store_needs_the_write_scope(dicomweb_url: str, issuer: Issuer) -> None:
    response = httpx.post(
        f"{dicomweb_url}/studies",
        content=multipart([to_bytes(ct_dataset(new_uid(), new_uid()))]),
        headers={**bearer(issuer.token("dicomweb.read")), "Content-Type": STOW_TYPE},
    )
    assert response.status_code == 403


def test_invalid_study_uid_in_the_path_is_400(http: httpx.Client, dicomweb_url: str) -> None:
    response = _post(http, f"{dicomweb_url}/studies/1.2.abc", [to_bytes(ct_dataset(new_uid(), new_uid()))])
    assert response.status_code == 400
    assert "not a valid UID" in response.headers["warning"]


@pytest.fixture(scope="module")
def small_limit_server(imaging_url: str, service_settings: Callable[..., Any]) -> Iterator[str]:
    """A live imaging app whose body limit is 64 KiB."""
    settings = service_settings("imaging", database="test_imaging", max_body_bytes=64 * 1024)
    with LiveServer(create_app(settings)) as server:
        yield f"{server.url}/dicomweb"


def test_streamed_body_over_the_limit_is_413_and_stores_nothing(
    small_limit_server: str, auth: dict[str, str], postgres: PostgresServer
) -> None:
    ds = ct_dataset(new_uid(), new_uid(), size=256)  # 128 KiB of pixels
    body = multipart([to_bytes(ds)])

    def chunked() -> Iterator[bytes]:
        for start in range(0, len(body), 8192):
            yield body[start : start + 8192]

    response = httpx.post(
        f"{small_limit_server}/studies", content=chunked(), headers={**auth, "Content-Type": STOW_TYPE}, timeout=30
    )
    assert response.status_code == 413
    assert _count(postgres, ds.SOPInstanceUID) == 0


def test_no_half_written_files_or_dangling_rows(
    replacing_server_settings: Any, replacing_server: str, auth: dict[str, str], postgres: PostgresServer
) -> None:
    study, series = new_uid(), new_uid()
    DICOMwebClient(replacing_server, headers=auth).store_instances(
        [ct_dataset(study, series, number) for number in range(1, 3)]
    )
    rows = postgres.fetch(
        "test_imaging",
        "SELECT i.storage_key, i.size FROM imaging.instance i JOIN imaging.series s ON i.series_pk = s.pk"
        " WHERE s.series_instance_uid = $1",
        series,
    )
    assert len(rows) == 2
    root = replacing_server_settings.storage_path
    for row in rows:
        assert (root / row["storage_key"]).stat().st_size == row["size"]
    assert list((root / ".staging").iterdir()) == []
    assert list(root.rglob("*.tmp")) == []
