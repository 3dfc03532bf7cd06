"""A local development token issuer (not for production).

It holds one RSA signing key in the project's local data folder (created on
first use), publishes it as a JWKS, answers OAuth2 client-credentials grants
(RFC 6749 §4.4) for service-to-service calls, and mints tokens for people on
the command line (``make token``)::

    python -m oncostruct_shared.devissuer token --scopes "dicomweb.read annotations.read"

In a cluster, point the services' ``AUTH_ISSUER`` at a real OIDC provider
(Keycloak, an Entra ID tenant …) instead.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import json
import os
import secrets
import sys
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from .logging import configure_logging

#: Every scope the suite knows; ``make token`` grants all of them by default.
ALL_SCOPES: tuple[str, ...] = (
    "system/*.cruds",
    "dicomweb.read",
    "dicomweb.write",
    "dicomweb.delete",
    "annotations.read",
    "annotations.write",
    "annotations.review",
    "reconstruction.read",
    "reconstruction.run",
)


class IssuerSettings(BaseSettings):
    """Settings of the development issuer (env prefix ``ONCOSTRUCT_ISSUER_``)."""

    model_config = SettingsConfigDict(env_prefix="ONCOSTRUCT_ISSUER_", extra="ignore", frozen=True)

    url: str = Field("http://127.0.0.1:8090", description="Issuer URL written into `iss`.")
    key_file: Path = Field(Path(".local/issuer/signing-key.pem"), description="PEM file of the RSA signing key.")
    audience: str = Field("oncostruct", description="`aud` claim of issued tokens.")
    token_ttl_s: int = Field(3600, ge=60, le=86400, description="Lifetime of issued tokens.")
    clients: dict[str, str] = Field(
        default_factory=dict, description="Client credentials accepted at /token, as JSON {client_id: secret}."
    )
    clients_file: Path | None = Field(None, description="JSON file of further {client_id: secret} pairs.")


def load_or_create_key(path: Path) -> rsa.RSAPrivateKey:
    """Load the RSA signing key at ``path``, creating it (mode 0600) if absent."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
        try:  # another process may have won the race: keep the first key
            os.link(tmp, path)
        except FileExistsError:
            pass
        finally:
            tmp.unlink()
    loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(loaded, rsa.RSAPrivateKey):
        raise ValueError(f"{path} does not hold an RSA private key")
    return loaded


def _b64url_uint(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def public_jwk(key: rsa.RSAPrivateKey) -> dict[str, str]:
    """The public JWK of ``key``, with its RFC 7638 thumbprint as ``kid``."""
    numbers = key.public_key().public_numbers()
    members = {"e": _b64url_uint(numbers.e), "kty": "RSA", "n": _b64url_uint(numbers.n)}
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True).encode("ascii")
    kid = base64.urlsafe_b64encode(hashlib.sha256(canonical).digest()).rstrip(b"=").decode("ascii")
    return {**members, "kid": kid, "use": "sig", "alg": "RS256"}


def mint_token(
    key: rsa.RSAPrivateKey,
    *,
    issuer: str,
    audience: str,
    subject: str,
    scopes: list[str] | tuple[str, ...],
    ttl_seconds: int = 3600,
    client_id: str | None = None,
) -> str:
    """Sign a bearer JWT with ``key``."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": issuer,
        "sub": subject,
        "aud": audience,
        "iat": now,
        "nbf": now,
        "exp": now + ttl_seconds,
        "jti": uuid.uuid4().hex,
        "scope": " ".join(scopes),
    }
    if client_id:
        claims["client_id"] = client_id
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": public_jwk(key)["kid"]})


def _oauth_error(error: str, description: str, status: int = 400) -> JSONResponse:
    # RFC 6749 §5.2 error response: the OAuth standard's own format.
    headers = {"Cache-Control": "no-store"}
    if error == "invalid_client":
        headers["WWW-Authenticate"] = 'Basic realm="oncostruct"'
    return JSONResponse({"error": error, "error_description": description}, status_code=status, headers=headers)


def _client_credentials(request: Request, form: dict[str, list[str]]) -> tuple[str, str] | None:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("basic "):
        try:
            decoded = base64.b64decode(header[6:], validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        client_id, _, secret = decoded.partition(":")
        return client_id, secret
    if "client_id" in form and "client_secret" in form:
        return form["client_id"][0], form["client_secret"][0]
    return None


def _known_clients(settings: IssuerSettings) -> dict[str, str]:
    clients = dict(settings.clients)
    if settings.clients_file and settings.clients_file.exists():
        clients.update(json.loads(settings.clients_file.read_text()))
    return clients


def create_app(settings: IssuerSettings | None = None) -> FastAPI:
    """The issuer's HTTP app: discovery document, JWKS, token endpoint, health."""
    settings = settings or IssuerSettings()
    configure_logging("issuer")
    key = load_or_create_key(settings.key_file)
    jwks = {"keys": [public_jwk(key)]}
    app = FastAPI(title="OncoStruct development issuer", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/.well-known/openid-configuration")
    async def discovery() -> dict[str, Any]:
        return {
            "issuer": settings.url,
            "jwks_uri": f"{settings.url}/.well-known/jwks.json",
            "token_endpoint": f"{settings.url}/token",
            "grant_types_supported": ["client_credentials"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "scopes_supported": list(ALL_SCOPES),
        }

    @app.get("/.well-known/jwks.json")
    async def jwks_document() -> JSONResponse:
        return JSONResponse(jwks, headers={"Cache-Control": "public, max-age=300"})

    @app.post("/token")
    async def token(request: Request) -> JSONResponse:
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/x-www-form-urlencoded":
            return _oauth_error("invalid_request", "The body must be application/x-www-form-urlencoded.")
        form = parse_qs((await request.body()).decode("utf-8", "replace"))
        if form.get("grant_type", [""])[0] != "client_credentials":
            return _oauth_error("unsupported_grant_type", "Only client_credentials is supported.")
        credentials = _client_credentials(request, form)
        expected = _known_clients(settings).get(credentials[0]) if credentials else None
        if credentials is None or expected is None or not secrets.compare_digest(expected, credentials[1]):
            return _oauth_error("invalid_client", "Unknown client or wrong secret.", status=401)
        scopes = form.get("scope", [" ".join(ALL_SCOPES)])[0].split()
        access_token = mint_token(
            key,
            issuer=settings.url,
            audience=settings.audience,
            subject=credentials[0],
            scopes=scopes,
            ttl_seconds=settings.token_ttl_s,
            client_id=credentials[0],
        )
        body = {
            "access_token": access_token,
            "token_type": "Bearer",
            "expires_in": settings.token_ttl_s,
            "scope": " ".join(scopes),
        }
        return JSONResponse(body, headers={"Cache-Control": "no-store"})

    return app


def main(argv: list[str] | None = None) -> int:
    """Command line: ``token`` prints a development bearer token."""
    parser = argparse.ArgumentParser(prog="python -m oncostruct_shared.devissuer")
    sub = parser.add_subparsers(dest="command", required=True)
    token = sub.add_parser("token", help="print a development bearer token")
    token.add_argument("--scopes", default="", help="space-separated scopes (default: every scope of the suite)")
    token.add_argument("--subject", default="dev-user", help="the token's subject (sub)")
    token.add_argument("--ttl", type=int, default=None, help="lifetime in seconds (default: the issuer's)")
    args = parser.parse_args(argv)
    settings = IssuerSettings()
    key = load_or_create_key(settings.key_file)
    scopes = args.scopes.split() or list(ALL_SCOPES)
    print(
        mint_token(
            key,
            issuer=settings.url,
            audience=settings.audience,
            subject=args.subject,
            scopes=scopes,
            ttl_seconds=args.ttl or settings.token_ttl_s,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
