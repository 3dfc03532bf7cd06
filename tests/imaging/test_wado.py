"""WADO-RS (PS3.18 §10.4) and DELETE against the live service: dicomweb-client and raw httpx."""

from __future__ import annotations

import io
from typing import Any

import httpx
import numpy as np
import pydicom
import pytest
import requests
from dicomweb_client import DICOMwebClient
from PIL import Image
from pydicom.data import get_testdata_file

from tests.imaging.factory import ct_dataset, multipart, new_uid, to_bytes
from tests.support import Issuer, bearer

FRAMES = 4


@pytest.fixture(scope="module")
def stored(dicomweb_url: str, auth: dict[str, str]) -> dict[str, Any]:
    """A series of two single-frame CTs and one 4-frame instance, plus a JPEG 2000 instance, stored via STOW-RS."""
    client = DICOMwebClient(dicomweb_url, headers=auth)
    study, series = new_uid(), new_uid()
    singles = [ct_dataset(study, series, number, size=64) for number in (1, 2)]
    multi = ct_dataset(study, series, 3, size=16, frames=FRAMES)
    client.store_instances([*singles, multi])
    jp2 = pydicom.dcmread(get_testdata_file("JPEG2000.dcm"))
    jp2.StudyInstanceUID, jp2.SeriesInstanceUID, jp2.SOPInstanceUID = new_uid(), new_uid(), new_uid()
    jp2.file_meta.MediaStorageSOPInstanceUID = jp2.SOPInstanceUID
    client.store_instances([jp2])
    return {"study": study, "series": series, "singles": singles, "multi": multi, "jp2": jp2}


def _multipart_parts(response: httpx.Response) -> list[tuple[str, bytes]]:
    content_type = response.headers["content-type"]
    boundary = content_type.split("boundary=")[1].split(";")[0].strip('"')
    parts = []
    for chunk in response.content.split(f"--{boundary}".encode())[1:-1]:
        head, _, body = chunk.partition(b"\r\n\r\n")
        part_type = next(line for line in head.decode().split("\r\n") if line.lower().startswith("content-type"))
        parts.append((part_type.split(":", 1)[1].strip(), body[:-2]))
    return parts


def test_retrieve_study_series_and_instance(client: DICOMwebClient, stored: dict[str, Any]) -> None:
    study, series = stored["study"], stored["series"]
    instances = client.retrieve_study(study)
    assert sorted(ds.SOPInstanceUID for ds in instances) == sorted(
        ds.SOPInstanceUID for ds in [*stored["singles"], stored["multi"]]
    )
    in_series = client.retrieve_series(study, series)
    assert [ds.InstanceNumber for ds in in_series] == [1, 2, 3]
    one = client.retrieve_instance(study, series, stored["singles"][0].SOPInstanceUID)
    assert one.PixelData == stored["singles"][0].PixelData
    assert one.PatientName == "Doe^Jane"


def test_retrieve_as_stored_streams_the_stored_bytes_with_a_random_boundary(
    http: httpx.Client, dicomweb_url: str, stored: dict[str, Any]
) -> None:
    ds = ct_dataset(new_uid(), new_uid(), 9)
    sent = http.post(
        f"{dicomweb_url}/studies",
        content=multipart([to_bytes(ds)]),
        headers={"Content-Type": 'multipart/related; type="application/dicom"; boundary=test-boundary-42'},
    )
    assert sent.status_code == 200
    url = f"{dicomweb_url}/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}"
    accept = {"Accept": "multipart/related; type=application/dicom; transfer-syntax=*"}
    first, second = http.get(url, headers=accept), http.get(url, headers=accept)
    assert first.status_code == 200
    assert first.headers["content-type"].startswith('multipart/related; type="application/dicom"')
    assert first.headers["content-type"] != second.headers["content-type"]  # fresh boundary each time
    ((part_type, body),) = _multipart_parts(first)
    assert part_type == "application/dicom; transfer-syntax=1.2.840.10008.1.2.1"
    assert body == to_bytes(ds)
    # Sizes are known from the index: a Content-Length, not chunked transfer coding.
    assert first.headers["content-length"] == str(len(first.content))
    assert "transfer-encoding" not in first.headers
    series = http.get(url.rsplit("/instances/", 1)[0], headers=accept)
    assert series.headers["content-length"] == str(len(series.content))


def test_compressed_instance_is_transcoded_when_native_is_asked(
    client: DICOMwebClient, http: httpx.Client, dicomweb_url: str, stored: dict[str, Any]
) -> None:
    jp2 = stored["jp2"]
    native = client.retrieve_instance(
        jp2.StudyInstanceUID,
        jp2.SeriesInstanceUID,
        jp2.SOPInstanceUID,
        media_types=(("application/dicom", "1.2.840.10008.1.2.1"),),
    )
    assert native.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert np.array_equal(native.pixel_array, jp2.pixel_array)
    as_stored = http.get(
        f"{dicomweb_url}/studies/{jp2.StudyInstanceUID}/series/{jp2.SeriesInstanceUID}/instances/{jp2.SOPInstanceUID}",
        headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.91'},
    )
    assert as_stored.status_code == 200
    assert _multipart_parts(as_stored)[0][0].endswith("transfer-syntax=1.2.840.10008.1.2.4.91")
    jpeg_ls = http.get(
        f"{dicomweb_url}/studies/{jp2.StudyInstanceUID}",
        headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.80'},
    )
    assert jpeg_ls.status_code == 406


def test_metadata_with_bulkdata_uris_and_etag(
    client: DICOMwebClient, http: httpx.Client, dicomweb_url: str, stored: dict[str, Any]
) -> None:
    study, series = stored["study"], stored["series"]
    metadata = client.retrieve_series_metadata(study, series)
    assert [item["00200013"]["Value"][0] for item in metadata] == [1, 2, 3]
    pixel_uri = metadata[0]["7FE00010"]["BulkDataURI"]
    assert pixel_uri.startswith(f"{dicomweb_url}/studies/{study}/")
    (bulk,) = client.retrieve_bulkdata(pixel_uri)
    assert bulk == stored["singles"][0].PixelData
    url = f"{dicomweb_url}/studies/{study}/series/{series}/metadata"
    first = http.get(url)
    assert first.headers["content-type"] == "application/dicom+json"
    etag = first.headers["etag"]
    assert http.get(url, headers={"If-None-Match": etag}).status_code == 304
    assert len(client.retrieve_study_metadata(study)) == 3
    single = client.retrieve_instance_metadata(study, series, stored["multi"].SOPInstanceUID)
    assert single["00280008"]["Value"] == [FRAMES]


def test_frames_by_list_with_dicomweb_client(client: DICOMwebClient, stored: dict[str, Any]) -> None:
    multi = stored["multi"]
    frames = client.retrieve_instance_frames(stored["study"], stored["series"], multi.SOPInstanceUID, [2, 4])
    size = 16 * 16 * 2
    assert frames == [multi.PixelData[size : 2 * size], multi.PixelData[3 * size : 4 * size]]


@pytest.mark.parametrize(
    "accept",
    [
        "multipart/related; type=application/octet-stream; transfer-syntax=*",  # cornerstone, unquoted
        'multipart/related; type="application/octet-stream"',
        "image/jpeg;q=0.5, multipart/related; type=application/octet-stream;q=0.9",
        "*/*",
    ],
)
def test_frame_accept_variants(http: httpx.Client, dicomweb_url: str, stored: dict[str, Any], accept: str) -> None:
    multi = stored["multi"]
    url = (
        f"{dicomweb_url}/studies/{stored['study']}/series/{stored['series']}/instances/{multi.SOPInstanceUID}/frames/1"
    )
    response = http.get(url, headers={"Accept": accept})
    assert response.status_code == 200, response.text
    ((part_type, body),) = _multipart_parts(response)
    assert part_type.startswith("application/octet-stream")
    assert body == multi.PixelData[: 16 * 16 * 2]


def test_compressed_frames_as_stored_or_decoded(http: httpx.Client, dicomweb_url: str, stored: dict[str, Any]) -> None:
    jp2 = stored["jp2"]
    instance = f"/studies/{jp2.StudyInstanceUID}/series/{jp2.SeriesInstanceUID}/instances/{jp2.SOPInstanceUID}"
    url = f"{dicomweb_url}{instance}/frames/1"
    raw = http.get(url, headers={"Accept": 'multipart/related; type="image/jp2"'})
    assert raw.status_code == 200
    ((part_type, body),) = _multipart_parts(raw)
    assert part_type == "image/jp2; transfer-syntax=1.2.840.10008.1.2.4.91"
    assert body.rstrip(b"\0") == pydicom.encaps.generate_frames(jp2.PixelData, number_of_frames=1).__next__().rstrip(
        b"\0"
    )
    cornerstone = http.get(
        url, headers={"Accept": "multipart/related; type=application/octet-stream; transfer-syntax=*"}
    )
    assert _multipart_parts(cornerstone)[0][0] == "image/jp2; transfer-syntax=1.2.840.10008.1.2.4.91"
    decoded = http.get(url, headers={"Accept": 'multipart/related; type="application/octet-stream"'})
    ((_, pixels),) = _multipart_parts(decoded)
    assert pixels == jp2.pixel_array.tobytes()
    assert http.get(url, headers={"Accept": 'multipart/related; type="image/jls"'}).status_code == 406


@pytest.mark.parametrize(("frames", "status"), [("5", 404), ("0", 400), ("1,x", 400), ("", 404)])
def test_bad_frame_lists(
    http: httpx.Client, dicomweb_url: str, stored: dict[str, Any], frames: str, status: int
) -> None:
    multi = stored["multi"]
    instance = f"/studies/{stored['study']}/series/{stored['series']}/instances/{multi.SOPInstanceUID}"
    assert http.get(f"{dicomweb_url}{instance}/frames/{frames}").status_code == status


def test_rendered_and_thumbnails(http: httpx.Client, dicomweb_url: str, stored: dict[str, Any]) -> None:
    study, series = stored["study"], stored["series"]
    ds = stored["singles"][0]
    instance = f"{dicomweb_url}/studies/{study}/series/{series}/instances/{ds.SOPInstanceUID}"
    png = http.get(
        f"{instance}/rendered", params={"window": "40,400", "viewport": "32,16"}, headers={"Accept": "image/png"}
    )
    assert png.status_code == 200
    assert png.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(png.content))
    assert image.size == (16, 16)  # fitted into 32×16, aspect ratio kept
    jpeg = http.get(f"{instance}/frames/1/rendered", params={"quality": "50"})
    assert jpeg.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(jpeg.content)).size == (64, 64)
    for path in (
        f"{dicomweb_url}/studies/{study}/thumbnail",
        f"{dicomweb_url}/studies/{study}/series/{series}/thumbnail",
        f"{instance}/thumbnail",
    ):
        thumbnail = http.get(path)
        assert thumbnail.status_code == 200, path
        assert max(Image.open(io.BytesIO(thumbnail.content)).size) <= 128
    multi = stored["multi"]
    frame = http.get(
        f"{dicomweb_url}/studies/{study}/series/{series}/instances/{multi.SOPInstanceUID}/frames/3/thumbnail"
    )
    assert frame.status_code == 200
    jp2 = stored["jp2"]
    compressed = http.get(
        f"{dicomweb_url}/studies/{jp2.StudyInstanceUID}/series/{jp2.SeriesInstanceUID}/instances/{jp2.SOPInstanceUID}/rendered",
        headers={"Accept": "image/png"},
    )
    assert compressed.status_code == 200
    assert Image.open(io.BytesIO(compressed.content)).size == (jp2.Columns, jp2.Rows)


@pytest.mark.parametrize(
    ("params", "reason"),
    [({"window": "40"}, "window"), ({"viewport": "a,b"}, "viewport"), ({"quality": "0"}, "quality")],
)
def test_bad_render_parameters(
    http: httpx.Client, dicomweb_url: str, stored: dict[str, Any], params: dict[str, str], reason: str
) -> None:
    ds = stored["singles"][0]
    url = f"{dicomweb_url}/studies/{stored['study']}/series/{stored['series']}/instances/{ds.SOPInstanceUID}/rendered"
    response = http.get(url, params=params)
    assert response.status_code == 400
    assert reason in response.headers["warning"]


@pytest.mark.parametrize(
    ("suffix", "accept"),
    [
        ("", "image/png"),
        ("", 'multipart/related; type="application/dicom+xml"'),
        ("/metadata", "application/dicom+xml"),
        ("/frames/1", 'multipart/related; type="image/jpeg"'),
        ("/rendered", "application/pdf"),
        ("/bulkdata/7FE00010", "text/plain"),
    ],
)
def test_unsupported_accept_is_406(
    http: httpx.Client, dicomweb_url: str, stored: dict[str, Any], suffix: str, accept: str
) -> None:
    ds = stored["singles"][0]
    url = f"{dicomweb_url}/studies/{stored['study']}/series/{stored['series']}/instances/{ds.SOPInstanceUID}{suffix}"
    assert http.get(url, headers={"Accept": accept}).status_code == 406


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/studies/1.2.x", 400),
        ("/studies/1.2.3/series/abc/metadata", 400),
        ("/studies/1.2.3.4.5.6.7.8.9", 404),
        ("/studies/1.2.3.4.5.6.7.8.9/metadata", 404),
        ("/studies/1.2.3.4.5.6.7.8.9/series/1.2/instances/1.3/frames/1", 404),
    ],
)
def test_invalid_and_unknown_uids(http: httpx.Client, dicomweb_url: str, path: str, status: int) -> None:
    assert http.get(f"{dicomweb_url}{path}").status_code == status


def test_delete_needs_its_own_scope_and_removes_instances(
    client: DICOMwebClient, dicomweb_url: str, issuer: Issuer
) -> None:
    study, series_a, series_b = new_uid(), new_uid(), new_uid()
    a1, a2, b1 = ct_dataset(study, series_a, 1), ct_dataset(study, series_a, 2), ct_dataset(study, series_b, 1)
    client.store_instances([a1, a2, b1])
    instance_url = f"{dicomweb_url}/studies/{study}/series/{series_a}/instances/{a1.SOPInstanceUID}"
    write_only = bearer(issuer.token("dicomweb.read", "dicomweb.write"))
    assert httpx.delete(instance_url, headers=write_only).status_code == 403
    deleter = bearer(issuer.token("dicomweb.delete"))
    assert httpx.delete(instance_url, headers=deleter).status_code == 204
    assert httpx.delete(instance_url, headers=deleter).status_code == 404
    assert len(client.search_for_instances(study)) == 2
    assert httpx.delete(f"{dicomweb_url}/studies/{study}/series/{series_b}", headers=deleter).status_code == 204
    assert [s["0020000E"]["Value"][0] for s in client.search_for_series(study)] == [series_a]
    assert httpx.delete(f"{dicomweb_url}/studies/{study}", headers=deleter).status_code == 204
    assert client.search_for_studies(search_filters={"StudyInstanceUID": study}) == []
    with pytest.raises(requests.HTTPError, match="404"):
        client.retrieve_instance(study, series_a, a2.SOPInstanceUID)
    client.store_instances([a2])  # storing again after a delete works
    assert len(client.search_for_instances(study)) == 1


def test_frames_follow_deletes_and_new_content_of_a_viewed_series(
    client: DICOMwebClient, dicomweb_url: str, issuer: Issuer
) -> None:
    """Frame locations are cached per series while it is viewed; a delete or new content is seen at once."""
    study, series = new_uid(), new_uid()
    first = [ct_dataset(study, series, n, seed=n) for n in (1, 2)]
    client.store_instances(first)
    sop = first[0].SOPInstanceUID
    (frame,) = client.retrieve_instance_frames(study, series, sop, [1])
    assert frame == first[0].PixelData
    deleter = bearer(issuer.token("dicomweb.delete"))
    assert httpx.delete(f"{dicomweb_url}/studies/{study}/series/{series}", headers=deleter).status_code == 204
    with pytest.raises(requests.HTTPError, match="404"):
        client.retrieve_instance_frames(study, series, sop, [1])
    replacement = ct_dataset(study, series, 1, sop_instance=sop, seed=99)  # same UID, other pixels
    assert replacement.PixelData != first[0].PixelData
    client.store_instances([replacement])
    (frame,) = client.retrieve_instance_frames(study, series, sop, [1])
    assert frame == replacement.PixelData
    with pytest.raises(requests.HTTPError, match="404"):  # the other instance is gone for good
        client.retrieve_instance_frames(study, series, first[1].SOPInstanceUID, [1])
