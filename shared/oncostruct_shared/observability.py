"""Request id, access log, Prometheus metrics, body-size limit, and the health routes.

The middleware is pure ASGI so that streamed request and response bodies
(STOW-RS uploads, WADO-RS retrievals) pass through without buffering.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import httpx
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import OncoStructError, PayloadTooLarge
from .logging import request_id_var
from .surfaces import Surface

access_log = logging.getLogger("oncostruct.access")
log = logging.getLogger("oncostruct.service")
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._\-]{1,128}$")
_QUIET_ROUTES = frozenset({"/healthz", "/readyz", "/metrics"})


class Metrics:
    """The Prometheus collectors of one app (own registry: several apps may share a process)."""

    def __init__(self, service: str) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self.requests = Counter(
            "oncostruct_http_requests_total",
            "HTTP requests handled, by route template and status.",
            ["service", "method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "oncostruct_http_request_duration_seconds",
            "Time to the end of the response, by route template.",
            ["service", "method", "route"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
        )
        self.service = service

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        """Record one finished request."""
        self.requests.labels(self.service, method, route, str(status)).inc()
        self.latency.labels(self.service, method, route).observe(seconds)

    def exposition(self) -> bytes:
        """The registry in the Prometheus text format."""
        return generate_latest(self.registry)


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


class RequestMiddleware:
    """Request id (``X-Request-ID``), access log line, metrics and the body-size limit.

    Parameters
    ----------
    app
        The wrapped ASGI app.
    metrics
        Where request counts and latencies go.
    surface
        Renders the 413 sent before the app runs when ``Content-Length`` is too big.
    max_body_bytes
        Limit on request bodies; a chunked body is counted as it streams and
        cut with :class:`PayloadTooLarge` when it passes the limit.
    """

    def __init__(self, app: ASGIApp, *, metrics: Metrics, surface: Surface, max_body_bytes: int) -> None:
        self.app = app
        self.metrics = metrics
        self.surface = surface
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = (_header(scope, b"x-request-id") or b"").decode("latin-1")
        request_id = incoming if _REQUEST_ID.match(incoming) else uuid.uuid4().hex
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status = 500

        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                status, response_started = message["status"], True
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            length = _header(scope, b"content-length")
            if length is not None and length.isdigit() and int(length) > self.max_body_bytes:
                too_large = PayloadTooLarge(f"The request body is larger than {self.max_body_bytes} bytes.")
                response = self.surface.render(too_large, instance=scope["path"], request_id=request_id)
                await response(scope, receive, send_with_id)
                return
            try:
                await self.app(scope, self._limited(receive), send_with_id)
            except Exception as exc:
                if response_started:
                    raise
                log.error("unhandled error", exc_info=exc)
                error = OncoStructError(f"Internal error; quote request id {request_id}.")
                await self.surface.render(error, instance=scope["path"], request_id=request_id)(
                    scope, receive, send_with_id
                )
        finally:
            route = scope.get("route")
            template = getattr(route, "oncostruct_template", None) or getattr(route, "path", None) or "<unmatched>"
            elapsed = time.perf_counter() - started
            self.metrics.observe(scope["method"], template, status, elapsed)
            access_log.log(
                logging.DEBUG if template in _QUIET_ROUTES else logging.INFO,
                "%s %s %d",
                scope["method"],
                template,
                status,
                extra={"route": template, "status": status, "duration_ms": round(elapsed * 1000, 2)},
            )
            request_id_var.reset(token)

    def _limited(self, receive: Receive) -> Receive:
        received = 0
        limit = self.max_body_bytes

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise PayloadTooLarge(f"The request body is larger than {limit} bytes.")
            return message

        return limited_receive


#: A readiness check raises (or times out) when what it checks does not answer.
ReadinessCheck = Callable[[FastAPI], Awaitable[None]]


@dataclass(frozen=True)
class Readiness:
    """One ``/readyz`` check; only ``required`` ones make the service unready when they fail.

    Upstream services are reported but usually not required: a pod that cannot reach a peer
    still serves what it can, and marking it unready would only cascade one outage into all.
    """

    check: ReadinessCheck
    required: bool = True


def readyz_url(base_url: str) -> str:
    """The ``/readyz`` URL of the service whose API lives at ``base_url`` (probes sit at the root)."""
    return str(httpx.URL(base_url).copy_with(path="/readyz", query=None))


async def upstream_ready(client: httpx.AsyncClient, url: str) -> None:
    """Raise unless ``url`` (an upstream's ``/readyz``) answers 2xx."""
    response = await client.get(url)
    response.raise_for_status()


def health_router(checks: Mapping[str, Readiness], timeout_s: float) -> APIRouter:
    """``/healthz``, ``/readyz`` and ``/metrics``: no token needed, not in the OpenAPI document."""
    router = APIRouter(include_in_schema=False)

    @router.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/readyz")
    async def readyz(request: Request) -> JSONResponse:
        app: FastAPI = request.app
        results: dict[str, str] = {}
        ready = True
        for name, readiness in checks.items():
            try:
                await asyncio.wait_for(readiness.check(app), timeout_s)
                results[name] = "ok"
                continue
            except OncoStructError as exc:
                results[name] = f"failed: {exc.detail}"
            except Exception as exc:  # a readiness probe reports, it never raises
                results[name] = f"failed: {type(exc).__name__}"
            if readiness.required:
                ready = False
            else:
                results[name] += " (not required)"
        return JSONResponse(
            {"status": "ready" if ready else "not ready", "checks": results}, status_code=200 if ready else 503
        )

    @router.get("/metrics")
    async def metrics(request: Request) -> Response:
        return Response(request.app.state.metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    return router
