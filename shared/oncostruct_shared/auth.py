"""OAuth2 bearer-token authentication and scope checks (RFC 6750, RFC 7519).

Tokens are JWTs signed by the configured issuer (RS256 or ES256), verified
against the issuer's JWKS, with ``iss``, ``aud``, ``exp`` checked. Scopes come
from the ``scope`` claim (space-separated, RFC 8693 §4.2) or ``scp`` (a list).
Which scope a route needs is the route's business: it declares it with
:func:`require_scopes` or, for richer rules (SMART on FHIR), with its own
:data:`ScopeRule`.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Protocol

import httpx
import jwt
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from .errors import Forbidden, Unauthorized, UpstreamUnavailable

REALM = "oncostruct"


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token's subject, client and granted scopes."""

    subject: str
    scopes: frozenset[str]
    client_id: str | None = None
    claims: Mapping[str, Any] = field(default_factory=dict)


class KeySource(Protocol):
    """Where token signing keys come from."""

    async def get_key(self, kid: str | None) -> jwt.PyJWK:
        """Return the key with id ``kid``; raise :class:`Unauthorized` if unknown."""
        ...


def _challenge(error: str | None = None, description: str | None = None, scope: str | None = None) -> str:
    parts = [f'realm="{REALM}"']
    if error:
        parts.append(f'error="{error}"')
    if description:
        parts.append(f'error_description="{description}"')
    if scope:
        parts.append(f'scope="{scope}"')
    return "Bearer " + ", ".join(parts)


def invalid_token(description: str) -> Unauthorized:
    """An :class:`Unauthorized` error with the RFC 6750 ``invalid_token`` challenge."""
    return Unauthorized(
        f"Invalid bearer token: {description}.",
        headers={"WWW-Authenticate": _challenge("invalid_token", description)},
    )


class JwksKeySource:
    """Signing keys fetched from a JWKS URL, cached, refetched for unknown key ids.

    Parameters
    ----------
    url
        The issuer's JWKS endpoint.
    client
        HTTP client used for the fetch (its timeouts apply).
    cache_seconds
        How long a fetched key set is trusted before it is fetched again.
    min_refetch_seconds
        Lower bound between fetches triggered by an unknown ``kid`` (key
        rotation), so a flood of forged key ids cannot hammer the issuer.
    """

    def __init__(
        self, url: str, client: httpx.AsyncClient, cache_seconds: float = 300, min_refetch_seconds: float = 10
    ) -> None:
        self.url = url
        self.client = client
        self.cache_seconds = cache_seconds
        self.min_refetch_seconds = min_refetch_seconds
        self._keys: dict[str | None, jwt.PyJWK] = {}
        self._fetched_at = float("-inf")
        self._lock = asyncio.Lock()

    async def _fetch(self) -> None:
        try:
            response = await self.client.get(self.url)
            response.raise_for_status()
            key_set = jwt.PyJWKSet.from_dict(response.json())
        except (httpx.HTTPError, ValueError, jwt.PyJWKSetError) as exc:
            raise UpstreamUnavailable("The token issuer's signing keys could not be fetched.") from exc
        self._keys = {key.key_id: key for key in key_set.keys}
        self._fetched_at = time.monotonic()

    async def get_key(self, kid: str | None) -> jwt.PyJWK:
        async with self._lock:
            age = time.monotonic() - self._fetched_at
            stale = age > self.cache_seconds
            unknown = kid not in self._keys and age > self.min_refetch_seconds
            if stale or unknown:
                await self._fetch()
        key = self._keys.get(kid)
        if key is None and kid is None and len(self._keys) == 1:
            key = next(iter(self._keys.values()))
        if key is None:
            raise invalid_token("unknown signing key")
        return key


class TokenVerifier:
    """Verifies bearer JWTs for one resource server (audience).

    A token whose signature and claims were verified is remembered (by its SHA-256) until it
    expires, so a client that sends the same token on every request pays for the signature
    check once; expiry is still enforced on every use.
    """

    def __init__(
        self,
        keys: KeySource,
        *,
        issuer: str,
        audience: str,
        algorithms: list[str],
        leeway_seconds: int = 30,
        cache_size: int = 4096,
    ) -> None:
        self.keys = keys
        self.issuer = issuer
        self.audience = audience
        self.algorithms = algorithms
        self.leeway_seconds = leeway_seconds
        self.cache_size = cache_size
        self._verified: OrderedDict[bytes, tuple[float, Principal]] = OrderedDict()

    async def verify(self, token: str) -> Principal:
        """Return the token's :class:`Principal`; raise :class:`Unauthorized` if it is not valid."""
        digest = hashlib.sha256(token.encode()).digest()
        cached = self._verified.get(digest)
        if cached is not None:
            if time.time() <= cached[0] + self.leeway_seconds:
                self._verified.move_to_end(digest)
                return cached[1]
            del self._verified[digest]
            raise invalid_token("token expired")
        principal = await self._verify(token)
        self._verified[digest] = (float(principal.claims["exp"]), principal)
        if len(self._verified) > self.cache_size:
            self._verified.popitem(last=False)
        return principal

    async def _verify(self, token: str) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.DecodeError:
            raise invalid_token("malformed token") from None
        algorithm = header.get("alg")
        if algorithm not in self.algorithms:
            raise invalid_token("signature algorithm not accepted")
        key = await self.keys.get_key(header.get("kid"))
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key.key,
                algorithms=[algorithm],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway_seconds,
                options={"require": ["exp", "iat", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise invalid_token("token expired") from None
        except jwt.InvalidAudienceError:
            raise invalid_token("wrong audience") from None
        except jwt.InvalidIssuerError:
            raise invalid_token("wrong issuer") from None
        except jwt.InvalidSignatureError:
            raise invalid_token("bad signature") from None
        except jwt.MissingRequiredClaimError as exc:
            raise invalid_token(f"missing claim {exc.claim}") from None
        except jwt.InvalidTokenError:
            raise invalid_token("token not valid") from None
        return Principal(
            subject=str(claims["sub"]),
            scopes=scopes_of(claims),
            client_id=claims.get("client_id") or claims.get("azp"),
            claims=claims,
        )


def scopes_of(claims: Mapping[str, Any]) -> frozenset[str]:
    """The scopes granted by a token's claims (``scope`` string or ``scp`` list)."""
    scope = claims.get("scope", claims.get("scp", ""))
    if isinstance(scope, str):
        return frozenset(scope.split())
    if isinstance(scope, list):
        return frozenset(str(item) for item in scope)
    return frozenset()


_bearer = HTTPBearer(auto_error=False, description="OAuth2 bearer JWT from the OncoStruct issuer.")
#: The ``Authorization: Bearer`` credentials, if any (declares the scheme in the OpenAPI document).
BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


async def bearer_credentials(request: Request) -> HTTPAuthorizationCredentials | None:
    """The request's ``Authorization: Bearer`` credentials, if any (what :data:`BearerDep` injects)."""
    return await _bearer(request)


async def get_principal(request: Request, credentials: BearerDep) -> Principal:
    """FastAPI dependency: the verified caller, or 401."""
    if credentials is None:
        raise Unauthorized(
            "This endpoint needs a bearer token (Authorization: Bearer <token>).",
            headers={"WWW-Authenticate": _challenge()},
        )
    verifier: TokenVerifier = request.app.state.verifier
    principal = await verifier.verify(credentials.credentials)
    request.state.principal = principal
    return principal


PrincipalDep = Annotated[Principal, Depends(get_principal)]

#: A scope rule decides from the principal and the request whether access is granted.
ScopeRule = Callable[[Principal, Request], Awaitable[bool] | bool]


def insufficient_scope(needed: str) -> Forbidden:
    """A :class:`Forbidden` error with the RFC 6750 ``insufficient_scope`` challenge."""
    return Forbidden(
        f"The token lacks the scope this operation needs ({needed}).",
        headers={"WWW-Authenticate": _challenge("insufficient_scope", scope=needed)},
    )


def require_scopes(*scopes: str) -> Callable[..., Awaitable[Principal]]:
    """A dependency that needs every scope in ``scopes``; 403 if one is missing."""
    needed = frozenset(scopes)

    async def dependency(principal: PrincipalDep) -> Principal:
        if not needed <= principal.scopes:
            raise insufficient_scope(" ".join(sorted(needed)))
        return principal

    return dependency
