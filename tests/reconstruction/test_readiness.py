"""The reconstruction service reports Triton and the model version in /readyz, without depending on it."""

from __future__ import annotations

from typing import Any

import httpx

from oncostruct_reconstruction.app import create_app
from oncostruct_reconstruction.triton_local import LocalTriton
from tests.support import LiveServer, PostgresServer, free_port


def test_readyz_reports_the_served_model(postgres: PostgresServer, service_settings: Any, triton: LocalTriton) -> None:
    postgres.create_database("recon_ready")
    settings = service_settings("reconstruction", database="recon_ready", triton_url=triton.url)
    with LiveServer(create_app(settings)) as server:
        body = httpx.get(server.url + "/readyz").json()
    assert body == {"status": "ready", "checks": {"database": "ok", "queue": "ok", "triton": "ok"}}


def test_triton_away_is_reported_but_the_service_stays_ready(postgres: PostgresServer, service_settings: Any) -> None:
    postgres.create_database("recon_no_triton")
    settings = service_settings(
        "reconstruction", database="recon_no_triton", triton_url=f"127.0.0.1:{free_port()}", triton_timeout_s=2
    )
    with LiveServer(create_app(settings)) as server:
        response = httpx.get(server.url + "/readyz")
    assert response.status_code == 200
    assert response.json()["checks"]["triton"].startswith("failed")
    assert response.json()["checks"]["triton"].endswith("(not required)")
