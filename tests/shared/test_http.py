"""Service-to-service HTTP: retries, backoff, client credentials, request ids, error mapping."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from oncostruct_annotations.config import Settings
from oncostruct_shared.errors import UpstreamError, UpstreamUnavailable
from oncostruct_shared.http import build_http_client, raise_for_upstream, service_auth, transport_error
from oncostruct_shared.logging import request_id_var
from tests.support import Issuer, LiveServer, free_port


class Upstream:
    """A peer at the network edge that answers from a script and records what it received."""

    def __init__(self) -> None:
        self.script: list[tuple[int, dict[str, str]]] = []
        self.received: list[dict[str, Any]] = []
        app = FastAPI()

        @app.api_route("/thing", methods=["GET", "POST", "PUT"])
        async def thing(request: Request) -> JSONResponse:
            self.received.append({"method": request.method, "headers": dict(request.headers), "at": time.monotonic()})
            status, headers = self.script.pop(0) if self.script else (200, {})
            return JSONResponse({"n": len(self.received)}, status_code=status, headers=headers)

        self.server = LiveServer(app)


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    peer = Upstream()
    with peer.server:
        yield peer


def _settings(**overrides: Any) -> Settings:
    return Settings(**{"http_backoff_s": 0.01, **overrides})


@pytest.mark.parametrize("status", [408, 429, 503, 504])
async def test_idempotent_request_is_retried_on_transient_status(upstream: Upstream, status: int) -> None:
    upstream.script = [(status, {}), (status, {})]
    async with build_http_client(_settings(), upstream.server.url) as client:
        response = await client.get("/thing")
    assert response.status_code == 200
    assert len(upstream.received) == 3


@pytest.mark.parametrize("status", [500, 502, 400, 404])
async def test_other_failures_are_not_retried(upstream: Upstream, status: int) -> None:
    upstream.script = [(status, {})]
    async with build_http_client(_settings(), upstream.server.url) as client:
        response = await client.get("/thing")
    assert response.status_code == status
    assert len(upstream.received) == 1


async def test_post_is_never_retried(upstream: Upstream) -> None:
    upstream.script = [(503, {})]
    async with build_http_client(_settings(), upstream.server.url) as client:
        response = await client.post("/thing", json={"a": 1})
    assert response.status_code == 503
    assert len(upstream.received) == 1


async def test_put_is_retried_with_its_body(upstream: Upstream) -> None:
    upstream.script = [(503, {})]
    async with build_http_client(_settings(), upstream.server.url) as client:
        response = await client.put("/thing", json={"a": 1})
    assert response.status_code == 200
    assert [r["method"] for r in upstream.received] == ["PUT", "PUT"]


async def test_retries_stop_after_the_configured_count(upstream: Upstream) -> None:
    upstream.script = [(503, {})] * 10
    async with build_http_client(_settings(http_retries=2), upstream.server.url) as client:
        response = await client.get("/thing")
    assert response.status_code == 503
    assert len(upstream.received) == 3
    with pytest.raises(UpstreamUnavailable):
        raise_for_upstream(response, "peer")


async def test_retry_after_is_honoured(upstream: Upstream) -> None:
    upstream.script = [(429, {"Retry-After": "1"})]
    async with build_http_client(_settings(), upstream.server.url) as client:
        await client.get("/thing")
    gap = upstream.received[1]["at"] - upstream.received[0]["at"]
    assert gap >= 0.95


async def test_connection_refused_is_retried_then_raised() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    started = time.monotonic()
    async with build_http_client(_settings(http_retries=2, http_backoff_s=0.1), url) as client:
        with pytest.raises(httpx.ConnectError) as caught:
            await client.get("/thing")
    assert time.monotonic() - started >= 0.3  # 0.1 + 0.2 of backoff
    assert isinstance(transport_error(caught.value, "peer"), UpstreamUnavailable)


async def test_request_id_travels_to_the_upstream(upstream: Upstream) -> None:
    token = request_id_var.set("req-42")
    try:
        async with build_http_client(_settings(), upstream.server.url) as client:
            await client.get("/thing")
    finally:
        request_id_var.reset(token)
    headers = upstream.received[0]["headers"]
    assert headers["x-request-id"] == "req-42"
    assert headers["user-agent"].startswith("oncostruct-annotations/")


async def test_client_credentials_token_is_fetched_once_and_sent(upstream: Upstream, issuer: Issuer) -> None:
    settings = _settings(auth_issuer=issuer.url, auth_client_secret="test-client-secret")
    auth = service_auth(settings, scope="dicomweb.read")
    async with build_http_client(settings, upstream.server.url, auth=auth) as client:
        await client.get("/thing")
        await client.get("/thing")
    authorizations = {r["headers"]["authorization"] for r in upstream.received}
    assert len(authorizations) == 1
    token = authorizations.pop().removeprefix("Bearer ")
    import jwt

    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["sub"] == "oncostruct-annotations"
    assert claims["scope"] == "dicomweb.read"


async def test_upstream_401_refreshes_the_token_once(upstream: Upstream, issuer: Issuer) -> None:
    upstream.script = [(401, {})]
    settings = _settings(auth_issuer=issuer.url, auth_client_secret="test-client-secret")
    async with build_http_client(settings, upstream.server.url, auth=service_auth(settings)) as client:
        response = await client.get("/thing")
    assert response.status_code == 200
    assert len(upstream.received) == 2


async def test_wrong_client_secret_is_upstream_unavailable(upstream: Upstream, issuer: Issuer) -> None:
    settings = _settings(auth_issuer=issuer.url, auth_client_secret="wrong")
    async with build_http_client(settings, upstream.server.url, auth=service_auth(settings)) as client:
        with pytest.raises(UpstreamUnavailable):
            await client.get("/thing")
    assert upstream.received == []


@pytest.mark.parametrize(
    ("status", "expected"),
    [(502, UpstreamError), (500, UpstreamError), (409, UpstreamError), (503, UpstreamUnavailable)],
)
def test_upstream_failures_map_to_one_hierarchy(status: int, expected: type[Exception]) -> None:
    response = httpx.Response(status, headers={"Warning": '299 pacs "bad"'}, request=httpx.Request("GET", "http://x"))
    with pytest.raises(expected) as caught:
        raise_for_upstream(response, "PACS")
    assert "PACS answered" in str(caught.value)
    assert "299 pacs" in str(caught.value)
