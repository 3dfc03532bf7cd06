"""Reconstruction jobs over the REST API (rows put in with SQL until jobs can be submitted)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import httpx
import pytest
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from oncostruct_reconstruction.models import JobRow
from oncostruct_reconstruction.repository import cancel_job, create_job, set_job, superseded
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


async def test_a_run_writes_only_while_it_is_the_jobs_current_run(
    reconstruction_url: str, postgres: PostgresServer
) -> None:
    engine = create_async_engine(
        postgres.url("test_reconstruction"), connect_args={"server_settings": {"search_path": "reconstruction"}}
    )
    maker = async_sessionmaker(engine, expire_on_commit=False)
    values = {
        "study_instance_uid": "1.2.9", "series_instance_uid": f"1.2.9.{uuid.uuid4().int % 10**9}",
        "model_name": "nnr", "model_version": "1", "project_id": None, "trigger": "api", "created_by": "tester",
    }  # fmt: skip
    try:
        async with maker() as session:
            job_id, queued = await create_job(session, values)
        assert queued
        run = datetime.now(UTC)
        assert await set_job(maker, job_id, status="running", started_at=run)
        assert await set_job(maker, job_id, run=run, stage="inferring")
        assert not await superseded(maker, job_id, run)
        async with maker() as session:
            assert await cancel_job(session, job_id)
            assert not await cancel_job(session, job_id)  # once
        assert await superseded(maker, job_id, run)
        assert not await set_job(maker, job_id, run=run, status="succeeded")  # the stopping run writes nothing
        async with maker() as session:
            again, queued = await create_job(session, values)  # submitted again: started anew
        assert (again, queued) == (job_id, True)
        assert await superseded(maker, job_id, run)  # the old run, still going, is not the job's run any more
        assert not await set_job(maker, job_id, run=run, status="failed", error="from the old run")
        async with maker() as session:
            row = await session.get(JobRow, job_id)
        assert row is not None
        assert (row.status, row.error, row.started_at) == ("queued", None, None)
    finally:
        await engine.dispose()
