"""Readiness: the database is required; upstream services are reported but do not make the service unready."""

from __future__ import annotations

from typing import Any

import httpx

from oncostruct_annotations.app import create_app
from tests.support import LiveServer, PostgresServer, free_port


def test_readyz_reports_the_live_imaging_service(annotations_url: str) -> None:
    body = httpx.get(annotations_url + "/readyz").json()
    assert body == {"status": "ready", "checks": {"database": "ok", "queue": "ok", "imaging": "ok"}}


def test_unreachable_imaging_is_reported_without_making_the_service_unready(
    postgres: PostgresServer, service_settings: Any
) -> None:
    postgres.create_database("ready_no_imaging")
    dead = f"http://127.0.0.1:{free_port()}/dicomweb"
    settings = service_settings("annotations", database="ready_no_imaging", imaging_url=dead, http_retries=0)
    with LiveServer(create_app(settings)) as server:
        response = httpx.get(server.url + "/readyz")
    assert response.status_code == 200
    checks = response.json()["checks"]
    assert checks["database"] == "ok"
    assert checks["imaging"].startswith("failed")
    assert checks["imaging"].endswith("(not required)")


def test_unreachable_database_makes_the_service_unready(service_settings: Any) -> None:
    dead_db = f"postgresql+asyncpg://x:y@127.0.0.1:{free_port()}/none"
    settings = service_settings("reconstruction", database_url=dead_db, run_migrations=False, db_connect_timeout_s=1)
    from oncostruct_reconstruction.app import create_app as create_reconstruction

    with LiveServer(create_reconstruction(settings)) as server:
        response = httpx.get(server.url + "/readyz")
        alive = httpx.get(server.url + "/healthz")
    assert response.status_code == 503
    assert response.json()["checks"]["database"].startswith("failed")
    assert alive.status_code == 200
