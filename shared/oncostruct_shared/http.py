"""HTTP clients for calls to other services and upstreams.

- Timeouts on every call (settings).
- Retries only for idempotent requests (RFC 9110 §9.2.2) whose body can be
  replayed, on 408/429/503/504 and on failures to connect, with exponential
  backoff, jitter and ``Retry-After``.
- Service-to-service calls carry a client-credentials token (RFC 6749 §4.4)
  fetched from the issuer and cached until shortly before it expires.
- The caller's request id travels on as ``X-Request-ID``.
- Upstream failures become :class:`UpstreamError` / :class:`UpstreamUnavailable`
  in one place: :func:`raise_for_upstream`.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncGenerator, Generator

import httpx

from .errors import UpstreamError, UpstreamUnavailable
from .logging import request_id_var
from .settings import ServiceSettings

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
RETRY_STATUSES = frozenset({408, 429, 503, 504})
MAX_RETRY_AFTER_S = 30.0


def _retry_after_seconds(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after", "")
    try:
        return min(float(value), MAX_RETRY_AFTER_S)
    except ValueError:
        return None  # an HTTP-date: fall back to our own backoff


class RetryTransport(httpx.AsyncBaseTransport):
    """Wraps a transport and retries idempotent requests that failed transiently.

    Parameters
    ----------
    transport
        The transport that sends requests.
    retries
        Retries after the first attempt.
    backoff_seconds
        Delay before the first retry; doubled for each further retry, with up
        to 50 % random jitter, never less than a ``Retry-After`` the server sent.
    """

    def __init__(self, transport: httpx.AsyncBaseTransport, retries: int = 3, backoff_seconds: float = 0.2) -> None:
        self.transport = transport
        self.retries = retries
        self.backoff_seconds = backoff_seconds

    def _delay(self, attempt: int, response: httpx.Response | None) -> float:
        delay: float = self.backoff_seconds * (2**attempt) * (1 + random.random() / 2)  # noqa: S311 (jitter, not crypto)
        hinted = _retry_after_seconds(response) if response is not None else None
        return max(delay, hinted or 0.0)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        replayable = request.method in IDEMPOTENT_METHODS and isinstance(request.stream, httpx.ByteStream)
        attempts = self.retries + 1 if replayable else 1
        for attempt in range(attempts):
            last = attempt == attempts - 1
            try:
                response = await self.transport.handle_async_request(request)
            except (httpx.ConnectError, httpx.ConnectTimeout):
                if last:
                    raise
                await asyncio.sleep(self._delay(attempt, None))
                continue
            if response.status_code not in RETRY_STATUSES or last:
                return response
            delay = self._delay(attempt, response)
            await response.aclose()
            await asyncio.sleep(delay)
        raise AssertionError("unreachable")  # pragma: no cover

    async def aclose(self) -> None:
        await self.transport.aclose()


class ClientCredentialsAuth(httpx.Auth):
    """Adds a client-credentials bearer token, fetched and cached from the issuer.

    A 401 from the upstream drops the cached token and retries once with a
    fresh one (the issuer may have rotated keys).
    """

    def __init__(self, token_url: str, client_id: str, client_secret: str, scope: str = "") -> None:
        self.token_url = token_url
        self.client_id = client_id
        self.client_secret = client_secret
        self.scope = scope
        self._token: str | None = None
        self._expires_at = 0.0
        self._lock = asyncio.Lock()

    def _token_request(self) -> httpx.Request:
        data = {"grant_type": "client_credentials"}
        if self.scope:
            data["scope"] = self.scope
        basic = httpx.BasicAuth(self.client_id, self.client_secret)
        request = httpx.Request("POST", self.token_url, data=data)
        return next(basic.auth_flow(request))

    def _store(self, response: httpx.Response) -> None:
        if response.status_code != 200:
            raise UpstreamUnavailable(f"The token issuer refused this service's credentials ({response.status_code}).")
        body = response.json()
        self._token = str(body["access_token"])
        self._expires_at = time.monotonic() + float(body.get("expires_in", 300)) - 30

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        raise RuntimeError("ClientCredentialsAuth works with httpx.AsyncClient only")

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        async with self._lock:
            if self._token is None or time.monotonic() >= self._expires_at:
                token_response = yield self._token_request()
                await token_response.aread()
                self._store(token_response)
        request.headers["Authorization"] = f"Bearer {self._token}"
        response = yield request
        if response.status_code == 401:
            async with self._lock:
                token_response = yield self._token_request()
                await token_response.aread()
                self._store(token_response)
            request.headers["Authorization"] = f"Bearer {self._token}"
            yield request


async def _add_request_id(request: httpx.Request) -> None:
    request_id = request_id_var.get()
    if request_id != "-":
        request.headers.setdefault("X-Request-ID", request_id)


def build_http_client(
    settings: ServiceSettings,
    base_url: str = "",
    *,
    auth: httpx.Auth | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> httpx.AsyncClient:
    """An :class:`httpx.AsyncClient` with the suite's timeouts, retries and request id.

    Parameters
    ----------
    settings
        The calling service's settings (timeouts, retries, backoff).
    base_url
        Base URL of the upstream.
    auth
        E.g. :func:`service_auth` for calls to other OncoStruct services.
    transport
        The innermost transport (default: a pooled HTTP/1.1 transport).
    """
    return httpx.AsyncClient(
        base_url=base_url,
        auth=auth,
        timeout=httpx.Timeout(settings.http_timeout_s, connect=settings.http_connect_timeout_s),
        transport=RetryTransport(
            transport or httpx.AsyncHTTPTransport(), settings.http_retries, settings.http_backoff_s
        ),
        headers={"User-Agent": f"oncostruct-{settings.service_name}/0.1"},
        event_hooks={"request": [_add_request_id]},
    )


def service_auth(settings: ServiceSettings, scope: str = "") -> ClientCredentialsAuth:
    """Client-credentials auth for calls from this service to another one."""
    return ClientCredentialsAuth(
        settings.token_url, settings.client_id, settings.auth_client_secret.get_secret_value(), scope
    )


def raise_for_upstream(response: httpx.Response, upstream: str) -> httpx.Response:
    """Return ``response`` if it succeeded; otherwise raise the matching upstream error.

    429/503/504 (and 408) become :class:`UpstreamUnavailable` (retry later), any
    other failure :class:`UpstreamError`. A DICOM ``Warning`` header's text is
    kept in the detail. Clients that expect a specific status (404 …) check it
    before calling this.
    """
    if response.is_success:
        return response
    warning = response.headers.get("warning")
    detail = f"{upstream} answered {response.status_code}" + (f" ({warning})" if warning else "") + "."
    if response.status_code in RETRY_STATUSES:
        retry_after = response.headers.get("retry-after")
        raise UpstreamUnavailable(detail, headers={"Retry-After": retry_after} if retry_after else None)
    raise UpstreamError(detail)


def transport_error(exc: httpx.HTTPError, upstream: str) -> UpstreamUnavailable:
    """Map a transport failure (connect, timeout …) to :class:`UpstreamUnavailable`."""
    return UpstreamUnavailable(f"{upstream} could not be reached ({type(exc).__name__}).")
