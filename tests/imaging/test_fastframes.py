"""The frame fast path (a cached series' single frames answered below the router) gives the same
answers as the full route, and never skips what the full route checks: token, scope, frame, Accept."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from dicomweb_client import DICOMwebClient

from tests.imaging.factory import ct_dataset, new_uid
from tests.support import Issuer, bearer

CORNERSTONE_ACCEPT = "multipart/related; type=application/octet-stream; transfer-syntax=*"


def _fast_count(imaging_url: str) -> float:
    text = httpx.get(f"{imaging_url}/metrics").text
    match = re.search(r"^oncostruct_imaging_fast_frames_total (\S+)$", text, re.MULTILINE)
    assert match is not None
    return float(match.group(1))


def _frames_requests(imaging_url: str, status: int) -> float:
    text = httpx.get(f"{imaging_url}/metrics").text
    pattern = (
        r'^oncostruct_http_requests_total\{[^}]*method="GET"[^}]*'
        r'route="/dicomweb/studies/\{study\}/series/\{series\}/instances/\{instance\}/frames/\{frames\}"'
        rf'[^}}]*status="{status}"[^}}]*\}} (\S+)$'
    )
    return sum(float(value) for value in re.findall(pattern, text, re.MULTILINE))


@pytest.fixture
def viewed(client: DICOMwebClient, dicomweb_url: str, auth: dict[str, str]) -> dict[str, Any]:
    """A stored series of three CTs whose first frame was read once (its layout is now cached)."""
    study, series = new_uid(), new_uid()
    instances = [ct_dataset(study, series, n, size=32, seed=n) for n in (1, 2, 3)]
    client.store_instances(instances)
    base = f"{dicomweb_url}/studies/{study}/series/{series}/instances"
    first = httpx.get(f"{base}/{instances[0].SOPInstanceUID}/frames/1", headers={**auth, "Accept": "*/*"})
    assert first.status_code == 200
    return {"base": base, "instances": instances}


def test_cached_frames_are_answered_by_the_fast_path_with_the_same_response(
    viewed: dict[str, Any], imaging_url: str, auth: dict[str, str], client: DICOMwebClient
) -> None:
    before, counted = _fast_count(imaging_url), _frames_requests(imaging_url, 200)
    for ds in viewed["instances"]:
        response = httpx.get(
            f"{viewed['base']}/{ds.SOPInstanceUID}/frames/1", headers={**auth, "Accept": CORNERSTONE_ACCEPT}
        )
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("multipart/related; type=")
        assert response.headers["x-request-id"]
        assert ds.PixelData in response.content
        (frame,) = client.retrieve_instance_frames(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID, [1])
        assert frame == ds.PixelData
    assert _fast_count(imaging_url) - before == 6  # three by httpx, three by dicomweb-client
    assert _frames_requests(imaging_url, 200) - counted == 6  # metrics name the frames route


@pytest.mark.parametrize(
    ("scopes", "token", "status"),
    [
        (None, None, 401),  # no token
        (None, "not-a-jwt", 401),
        (("dicomweb.write",), None, 403),  # a valid token without the read scope
    ],
)
def test_the_fast_path_never_skips_the_token_check(
    viewed: dict[str, Any],
    imaging_url: str,
    issuer: Issuer,
    scopes: tuple[str, ...] | None,
    token: str | None,
    status: int,
) -> None:
    headers = {"Accept": CORNERSTONE_ACCEPT}
    if scopes is not None:
        headers |= bearer(issuer.token(*scopes))
    elif token is not None:
        headers["Authorization"] = f"Bearer {token}"
    before = _fast_count(imaging_url)
    response = httpx.get(f"{viewed['base']}/{viewed['instances'][1].SOPInstanceUID}/frames/1", headers=headers)
    assert response.status_code == status
    assert "www-authenticate" in response.headers
    assert viewed["instances"][1].PixelData not in response.content
    assert _fast_count(imaging_url) == before


@pytest.mark.parametrize(
    ("frame", "accept", "status"),
    [
        ("2", CORNERSTONE_ACCEPT, 404),  # single-frame instances have frame 1 only
        ("1", 'multipart/related; type="image/jpeg"', 406),  # stored uncompressed
        ("1", "multipart/related; type=application/octet-stream; transfer-syntax=1.2.840.10008.1.2.4.50", 406),
    ],
)
def test_what_the_fast_path_cannot_answer_gets_the_full_route_error(
    viewed: dict[str, Any], imaging_url: str, auth: dict[str, str], frame: str, accept: str, status: int
) -> None:
    before = _fast_count(imaging_url)
    response = httpx.get(
        f"{viewed['base']}/{viewed['instances'][2].SOPInstanceUID}/frames/{frame}", headers={**auth, "Accept": accept}
    )
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["warning"].startswith("299 oncostruct-imaging")
    assert _fast_count(imaging_url) == before


def test_a_repeated_authorization_header_is_read_as_the_full_route_reads_it(
    viewed: dict[str, Any], imaging_url: str, auth: dict[str, str]
) -> None:
    before = _fast_count(imaging_url)
    headers = httpx.Headers([("Authorization", "Bearer not-a-jwt"), ("Authorization", auth["Authorization"])])
    response = httpx.get(f"{viewed['base']}/{viewed['instances'][0].SOPInstanceUID}/frames/1", headers=headers)
    assert response.status_code == 401  # the first one counts, as in the framework's bearer scheme
    assert _fast_count(imaging_url) == before
