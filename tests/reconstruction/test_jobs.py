"""Reconstruction jobs over the REST API (rows put in with SQL until jobs can be submitted)."""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests.support import Issuer, PostgresServer, bearer

BASE = "/reconstruction/v1/jobs"


@pytest.fixture
def api(reconstruction_url: str, issuer: Issuer) -> httpx.Client:
    return httpx.Client(base_url=reconstruction_url, headers=bearer(issuer.token("reconstruction.read")), timeout=30)


@pytest.fixture(scope="module")
def jobs(reconstruction_url: str, postgres: PostgresServer) -> list[str]:
    ids = [str(uuid.uuid4()) for _ in range(3)]
    for offset, (job_id, status) in enumerate(zip(ids, ["queued", "failed", "succeeded"], strict=True)):
        postgres.fetch(
            "test_reconstruction",
            "INSERT INTO reconstruction.job (id, status, study_instance_uid, series_instance_uid, model_name,"
            " model_version, created_by, created_at) VALUES ($1, $2, '1.2.3', $3, 'nnr', '1', 'tester',"
            " now() - make_interval(secs => $4))",
            uuid.UUID(job_id), status, f"1.2.3.{offset}", float(offset),
        )  # fmt: skip
    return ids


def test_list_jobs_newest_first_and_page(api: httpx.Client, jobs: list[str]) -> None:
    first = api.get(BASE, params={"limit": 2}).json()
    assert [item["id"] for item in first["items"]] == jobs[:2]
    second = api.get(BASE, params={"limit": 2, "cursor": first["next"]}).json()
    assert [item["id"] for item in second["items"]][:1] == jobs[2:]


def test_filter_by_status(api: httpx.Client, jobs: list[str]) -> None:
    failed = api.get(BASE, params={"status": "failed"}).json()["items"]
    assert jobs[1] in [item["id"] for item in failed]
    assert {item["status"] for item in failed} == {"failed"}


def test_read_one_job(api: httpx.Client, jobs: list[str]) -> None:
    job = api.get(f"{BASE}/{jobs[0]}").json()
    assert job["status"] == "queued"
    assert job["model_name"] == "nnr"


@pytest.mark.parametrize(
    ("path", "params", "status"),
    [
        (f"{BASE}/{uuid.uuid4()}", {}, 404),
        (f"{BASE}/not-a-uuid", {}, 422),
        (BASE, {"status": "exploded"}, 422),
        (BASE, {"cursor": "garbage"}, 400),
    ],
)
def test_errors_are_problem_details(api: httpx.Client, path: str, params: dict[str, str], status: int) -> None:
    response = api.get(path, params=params)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == status
