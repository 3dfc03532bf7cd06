"""Bearer-token verification: against the live dev issuer and a JWKS server we control."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from oncostruct_shared.auth import JwksKeySource, TokenVerifier
from oncostruct_shared.devissuer import ALL_SCOPES
from oncostruct_shared.errors import Unauthorized, UpstreamUnavailable
from tests.support import Issuer, LiveServer, bearer, free_port

PROJECTS = "/annotations/v1/projects"


def _other_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.mark.parametrize(
    ("case", "make_token", "description"),
    [
        ("expired", lambda i: i.forge({"iat": int(time.time()) - 7200, "exp": int(time.time()) - 3600}), "expired"),
        ("wrong audience", lambda i: i.forge({"aud": "someone-else"}), "wrong audience"),
        ("wrong issuer", lambda i: i.forge({"iss": "https://evil.example"}), "wrong issuer"),
        ("no exp", lambda i: i.forge({"exp": None}), "missing claim exp"),
        ("no sub", lambda i: i.forge({"sub": None}), "missing claim sub"),
        ("forged signature", lambda i: i.forge({}, key=_other_rsa_key()), "bad signature"),
        ("unknown key id", lambda i: i.forge({}, kid="not-a-key"), "unknown signing key"),
        ("not a JWT", lambda i: "not-a-jwt", "malformed token"),
        ("alg none", lambda i: jwt.encode({"sub": "x"}, None, algorithm="none"), "algorithm not accepted"),
        ("HS256 with public key", lambda i: _hs256_confusion(i), "algorithm not accepted"),
    ],
)
def test_invalid_token_is_unauthorized(
    case: str, make_token: Any, description: str, annotations_url: str, issuer: Issuer, http: httpx.Client
) -> None:
    token = make_token(issuer)
    response = http.get(annotations_url + PROJECTS, headers=bearer(token))
    assert response.status_code == 401, case
    challenge = response.headers["www-authenticate"]
    assert 'error="invalid_token"' in challenge
    assert description in challenge
    assert response.headers["content-type"] == "application/problem+json"


def _hs256_confusion(issuer: Issuer) -> str:
    # The classic key-confusion attack: HMAC-sign with the published public key.
    public_pem = issuer.key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    now = int(time.time())
    header = {"alg": "HS256", "typ": "JWT", "kid": issuer.kid}
    claims = {
        "iss": issuer.url,
        "aud": "oncostruct",
        "sub": "x",
        "iat": now,
        "exp": now + 60,
        "scope": "annotations.read",
    }
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    signature = hmac.new(public_pem, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


def test_valid_token_from_issuer_is_accepted(annotations_url: str, issuer: Issuer, http: httpx.Client) -> None:
    response = http.get(annotations_url + PROJECTS, headers=bearer(issuer.token("annotations.read")))
    assert response.status_code == 200


def test_token_within_leeway_is_accepted(annotations_url: str, issuer: Issuer, http: httpx.Client) -> None:
    # Expired 5 s ago: inside the default 30 s clock-skew leeway.
    token = issuer.forge({"exp": int(time.time()) - 5, "scope": "annotations.read"})
    assert http.get(annotations_url + PROJECTS, headers=bearer(token)).status_code == 200


def test_scp_list_claim_grants_scopes(annotations_url: str, issuer: Issuer, http: httpx.Client) -> None:
    token = issuer.forge({"scp": ["annotations.read"]})
    assert http.get(annotations_url + PROJECTS, headers=bearer(token)).status_code == 200


def test_client_credentials_grant_yields_a_working_token(
    annotations_url: str, issuer: Issuer, http: httpx.Client
) -> None:
    grant = http.post(
        issuer.url + "/token",
        data={"grant_type": "client_credentials", "scope": "annotations.read"},
        auth=("oncostruct-reconstruction", "test-client-secret"),
    )
    assert grant.status_code == 200
    body = grant.json()
    assert body["token_type"] == "Bearer"
    assert body["scope"] == "annotations.read"
    assert http.get(annotations_url + PROJECTS, headers=bearer(body["access_token"])).status_code == 200


@pytest.mark.parametrize(
    ("data", "auth", "status", "error"),
    [
        ({"grant_type": "client_credentials"}, ("oncostruct-imaging", "wrong"), 401, "invalid_client"),
        ({"grant_type": "client_credentials"}, ("nobody", "test-client-secret"), 401, "invalid_client"),
        ({"grant_type": "client_credentials"}, None, 401, "invalid_client"),
        ({"grant_type": "password"}, ("oncostruct-imaging", "test-client-secret"), 400, "unsupported_grant_type"),
    ],
)
def test_token_endpoint_refuses_bad_grants(
    data: dict[str, str], auth: tuple[str, str] | None, status: int, error: str, issuer: Issuer, http: httpx.Client
) -> None:
    response = http.post(issuer.url + "/token", data=data, auth=auth)
    assert response.status_code == status
    assert response.json()["error"] == error
    assert response.headers["cache-control"] == "no-store"


def test_issuer_publishes_discovery_and_jwks(issuer: Issuer, http: httpx.Client) -> None:
    discovery = http.get(issuer.url + "/.well-known/openid-configuration").json()
    assert discovery["issuer"] == issuer.url
    keys = http.get(discovery["jwks_uri"]).json()["keys"]
    assert [key["kid"] for key in keys] == [issuer.kid]
    assert set(discovery["scopes_supported"]) == set(ALL_SCOPES)


# --- JwksKeySource / TokenVerifier against a JWKS server whose keys we rotate ---------------


class JwksServer:
    """An issuer stand-in at the network edge: serves whatever key set the test sets."""

    def __init__(self) -> None:
        self.keys: list[dict[str, Any]] = []
        self.fetches = 0
        self.fail = False
        app = FastAPI()

        @app.get("/jwks")
        async def jwks() -> JSONResponse:
            self.fetches += 1
            if self.fail:
                return JSONResponse({"error": "down"}, status_code=503)
            return JSONResponse({"keys": self.keys})

        self.server = LiveServer(app, free_port())
        self.url = self.server.url + "/jwks"


@pytest.fixture
def jwks_server() -> Iterator[JwksServer]:
    server = JwksServer()
    with server.server:
        yield server


def _jwk(key: Any, kid: str, alg: str) -> dict[str, Any]:
    algorithm = jwt.get_algorithm_by_name(alg)
    jwk: dict[str, Any] = json.loads(algorithm.to_jwk(key.public_key()))
    return {**jwk, "kid": kid, "alg": alg, "use": "sig"}


def _token(key: Any, kid: str, alg: str, **claims: Any) -> str:
    now = int(time.time())
    body = {"iss": "https://issuer.test", "aud": "oncostruct", "sub": "s", "iat": now, "exp": now + 60, **claims}
    return jwt.encode(body, key, algorithm=alg, headers={"kid": kid})


async def test_es256_tokens_verify(jwks_server: JwksServer) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    jwks_server.keys = [_jwk(key, "ec-1", "ES256")]
    async with httpx.AsyncClient() as client:
        verifier = TokenVerifier(
            JwksKeySource(jwks_server.url, client),
            issuer="https://issuer.test",
            audience="oncostruct",
            algorithms=["RS256", "ES256"],
        )
        principal = await verifier.verify(_token(key, "ec-1", "ES256", scope="a b", client_id="c"))
    assert principal.subject == "s"
    assert principal.scopes == {"a", "b"}
    assert principal.client_id == "c"


async def test_rotated_key_is_fetched_once_then_cached(jwks_server: JwksServer) -> None:
    old, new = _other_rsa_key(), _other_rsa_key()
    jwks_server.keys = [_jwk(old, "old", "RS256")]
    async with httpx.AsyncClient() as client:
        keys = JwksKeySource(jwks_server.url, client, cache_seconds=300, min_refetch_seconds=0)
        verifier = TokenVerifier(keys, issuer="https://issuer.test", audience="oncostruct", algorithms=["RS256"])
        await verifier.verify(_token(old, "old", "RS256"))
        jwks_server.keys.append(_jwk(new, "new", "RS256"))  # the issuer rotates
        await verifier.verify(_token(new, "new", "RS256"))
        await verifier.verify(_token(new, "new", "RS256"))
        await verifier.verify(_token(old, "old", "RS256"))
    assert jwks_server.fetches == 2


async def test_unknown_key_ids_do_not_hammer_the_issuer(jwks_server: JwksServer) -> None:
    key = _other_rsa_key()
    jwks_server.keys = [_jwk(key, "k", "RS256")]
    async with httpx.AsyncClient() as client:
        keys = JwksKeySource(jwks_server.url, client, cache_seconds=300, min_refetch_seconds=60)
        verifier = TokenVerifier(keys, issuer="https://issuer.test", audience="oncostruct", algorithms=["RS256"])
        await verifier.verify(_token(key, "k", "RS256"))
        for attempt in range(5):
            with pytest.raises(Unauthorized):
                await verifier.verify(_token(key, f"forged-{attempt}", "RS256"))
    assert jwks_server.fetches == 1


async def test_unreachable_issuer_is_upstream_unavailable(jwks_server: JwksServer) -> None:
    jwks_server.fail = True
    key = _other_rsa_key()
    async with httpx.AsyncClient() as client:
        verifier = TokenVerifier(
            JwksKeySource(jwks_server.url, client), issuer="https://issuer.test", audience="oncostruct",
            algorithms=["RS256"],
        )  # fmt: skip
        with pytest.raises(UpstreamUnavailable):
            await verifier.verify(_token(key, "k", "RS256"))


def test_service_answers_503_when_issuer_keys_cannot_be_fetched(
    service_settings: Any, postgres: Any, issuer: Issuer, http: httpx.Client
) -> None:
    from oncostruct_reconstruction.app import create_app

    dead = f"http://127.0.0.1:{free_port()}/jwks"
    postgres.create_database("test_auth_503")
    settings = service_settings("reconstruction", database="test_auth_503", auth_jwks_url=dead, http_retries=0)
    with LiveServer(create_app(settings)) as server:
        response = http.get(server.url + "/reconstruction/v1/jobs", headers=bearer(issuer.token("reconstruction.read")))
    assert response.status_code == 503
    assert response.headers["content-type"] == "application/problem+json"
    assert "signing keys" in response.json()["detail"]


async def test_remembered_tokens_still_expire(jwks_server: JwksServer) -> None:
    key = _other_rsa_key()
    jwks_server.keys = [_jwk(key, "k", "RS256")]
    async with httpx.AsyncClient() as client:
        verifier = TokenVerifier(
            JwksKeySource(jwks_server.url, client), issuer="https://issuer.test", audience="oncostruct",
            algorithms=["RS256"], leeway_seconds=0,
        )  # fmt: skip
        # Two to three seconds to live (exp is whole seconds): enough for a loaded machine to verify it first.
        expires = int(time.time()) + 3
        token = _token(key, "k", "RS256", exp=expires)
        first = await verifier.verify(token)
        assert await verifier.verify(token) is first  # remembered, not verified again
        await asyncio.sleep(max(0.0, expires + 0.6 - time.time()))
        with pytest.raises(Unauthorized, match="expired"):
            await verifier.verify(token)
