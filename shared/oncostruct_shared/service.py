"""The skeleton every service app is built on.

:func:`build_service_app` wires what is the same everywhere — logging, the
database and its migrations, token verification, the request middleware,
error rendering in the service's surface, health/readiness/metrics, OpenAPI
under the service's prefix — and leaves the service its routers, readiness
checks and the extra resources its lifespan opens (HTTP clients, storage,
Triton). Nothing connects at import time; everything opens in the lifespan.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import sqlalchemy.exc
from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp

from .auth import JwksKeySource, TokenVerifier
from .db import Database
from .errors import Invalid, MethodNotAllowed, NotFound, OncoStructError, Unprocessable, error_for_status
from .http import build_http_client
from .logging import configure_logging, request_id_var
from .observability import Metrics, Readiness, RequestMiddleware, health_router
from .settings import ServiceSettings
from .surfaces import Surface

log = logging.getLogger("oncostruct.service")

#: Opens (and closes) a service's own resources around the app's life.
LifespanHook = Callable[[FastAPI], AbstractAsyncContextManager[None]]


@dataclass
class ServiceSpec:
    """What a service adds to the common skeleton.

    Attributes
    ----------
    settings
        The service's settings (its ``service_name`` and ``api_prefix`` too).
    surface
        How errors are rendered (problem+json, OperationOutcome, DICOMweb).
    title, description, version
        OpenAPI document metadata.
    routers
        The service's API routers; mounted under ``settings.api_prefix``.
    migrations_dir
        The service's Alembic folder (None: no database schema of its own).
    readiness_checks
        Extra ``/readyz`` checks beside the database (always required), by name.
    lifespan
        Opens the service's own resources and stores them on ``app.state``.
    validation_status
        Status for well-formed requests that fail parameter/body validation:
        422 for the REST APIs, 400 where the standard says so (FHIR, DICOMweb).
    fast_paths
        Pure ASGI middleware classes placed just inside the request middleware (request id,
        access log, metrics and the body limit apply), each made as ``cls(app, service=<the
        FastAPI app>)``: hot requests answered without the router, the rest passed on.
    """

    settings: ServiceSettings
    surface: Surface
    title: str
    description: str
    routers: Sequence[APIRouter]
    migrations_dir: Path | None = None
    readiness_checks: Mapping[str, Readiness] = field(default_factory=dict)
    lifespan: LifespanHook | None = None
    version: str = "0.1.0"
    validation_status: int = 422
    fast_paths: Sequence[Callable[..., ASGIApp]] = ()


_frozen = False


def _freeze_start_up_objects() -> None:
    """``gc.freeze()`` once per process (a process that starts several apps, as tests do, freezes once)."""
    global _frozen
    if not _frozen:
        gc.collect()
        gc.freeze()
        _frozen = True


async def _database_ready(app: FastAPI) -> None:
    await app.state.db.ping()


def _validation_error(exc: RequestValidationError, status: int) -> OncoStructError:
    errors = exc.errors()
    if any(error.get("type") == "json_invalid" for error in errors):
        return Invalid("The request body is not valid JSON.")
    locations = [".".join(str(part) for part in error.get("loc", ())) for error in errors]
    messages = "; ".join(f"{loc}: {error.get('msg', 'invalid')}" for loc, error in zip(locations, errors, strict=True))
    cls = Unprocessable if status == 422 else Invalid
    return cls(f"The request is not valid: {messages}.", expression=locations)


def _install_error_handlers(app: FastAPI, surface: Surface, validation_status: int) -> None:
    def render(request: Request, error: OncoStructError) -> Response:
        return surface.render(error, instance=request.url.path, request_id=request_id_var.get())

    async def on_domain_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, OncoStructError)
        return render(request, exc)

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        error: OncoStructError
        if isinstance(exc.__cause__, OncoStructError):
            # FastAPI wraps whatever fails while it reads the body (e.g. the size limit) in a 400.
            error = exc.__cause__
        elif exc.status_code == 404:
            error = NotFound(f"No route matches {request.method} {request.url.path}.")
        elif exc.status_code == 405:
            error = MethodNotAllowed(f"{request.method} is not allowed on {request.url.path}.", headers=exc.headers)
        else:
            error = error_for_status(exc.status_code)(str(exc.detail), headers=exc.headers)
        return render(request, error)

    async def on_validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return render(request, _validation_error(exc, validation_status))

    async def on_database_error(request: Request, exc: Exception) -> Response:
        data = _data_exception(exc)
        if data is None:
            raise exc  # a server fault: the request middleware answers 500 and logs it
        # SQLSTATE class 22 (data exception): a value from the request PostgreSQL cannot store or
        # compare (a NUL in text, a number beyond its column). The transaction was rolled back.
        log.info("request value refused by the database", extra={"sqlstate": data.sqlstate})
        return render(
            request,
            Invalid(f"A value in the request cannot be stored or compared (SQLSTATE {data.sqlstate})."),
        )

    app.add_exception_handler(OncoStructError, on_domain_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(asyncpg.exceptions.DataError, on_database_error)
    app.add_exception_handler(sqlalchemy.exc.DBAPIError, on_database_error)


def _data_exception(exc: BaseException) -> asyncpg.exceptions.DataError | None:
    """The asyncpg data exception (SQLSTATE class 22) behind ``exc`` (SQLAlchemy wraps it), if any."""
    seen: BaseException | None = exc
    for _ in range(5):
        if seen is None:
            return None
        if isinstance(seen, asyncpg.exceptions.DataError):
            return seen
        seen = getattr(seen, "orig", None) or seen.__cause__
    return None


def build_service_app(spec: ServiceSpec) -> FastAPI:
    """Build a service's FastAPI app from its :class:`ServiceSpec`."""
    settings = spec.settings
    prefix = settings.api_prefix
    configure_logging(settings.service_name, settings.log_level)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        database = Database(settings)
        auth_client = build_http_client(settings)
        try:
            if settings.run_migrations and spec.migrations_dir is not None:
                await database.migrate(spec.migrations_dir)
                log.info("migrations applied", extra={"schema": settings.schema_name})
            app.state.db = database
            keys = JwksKeySource(settings.jwks_url, auth_client, cache_seconds=settings.auth_jwks_cache_s)
            app.state.verifier = TokenVerifier(
                keys,
                issuer=settings.auth_issuer,
                audience=settings.auth_audience,
                algorithms=settings.auth_algorithms,
                leeway_seconds=settings.auth_leeway_s,
            )
            hook = spec.lifespan(app) if spec.lifespan else nullcontext()
            async with hook:
                # What start-up made (modules, the app, pools) lives as long as the process: kept out of
                # the collector's full passes, each a stall of every request in flight (imaging, 3,000
                # QIDO-RS requests in a row: the slowest 13-14 ms without, 5-10 ms with).
                _freeze_start_up_objects()
                log.info("service started", extra={"prefix": prefix})
                yield
        finally:
            await auth_client.aclose()
            await database.dispose()

    app = FastAPI(
        title=spec.title,
        description=spec.description,
        version=spec.version,
        openapi_url=f"{prefix}/openapi.json",
        docs_url=f"{prefix}/docs",
        redoc_url=None,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.metrics = Metrics(settings.service_name)
    _install_error_handlers(app, spec.surface, spec.validation_status)
    for fast_path in reversed(spec.fast_paths):  # added first: innermost, inside the request middleware
        app.add_middleware(fast_path, service=app)
    app.add_middleware(
        RequestMiddleware, metrics=app.state.metrics, surface=spec.surface, max_body_bytes=settings.max_body_bytes
    )
    if settings.cors_origins:  # outermost: a preflight needs no token, and errors carry the CORS headers too
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Accept", "If-None-Match", "If-Match", "Prefer"],
            expose_headers=["Warning", "ETag", "Location", "Content-Location", "X-Progress", "X-Request-ID"],
            max_age=600,
        )
    checks: dict[str, Readiness] = {"database": Readiness(_database_ready), **spec.readiness_checks}
    documentation = list(app.router.routes)  # openapi.json and docs: fixed paths under the prefix
    app.include_router(health_router(checks, settings.readiness_timeout_s))
    platform_routes = list(app.router.routes)
    for router in spec.routers:
        app.include_router(router, prefix=prefix)
        for route in router.routes:
            # Routes keep their router-relative path; metrics and logs want the full template.
            route.oncostruct_template = prefix + getattr(route, "path", "")  # type: ignore[attr-defined]
    # Routing tries routes in order, a few microseconds each: after the documentation (fixed paths that
    # a service's templates could shadow) the service's own routes, in the order of its routers (hottest
    # first), then health and metrics.
    service_routes = [route for route in app.router.routes if route not in platform_routes]
    health_routes = [route for route in platform_routes if route not in documentation]
    app.router.routes[:] = documentation + service_routes + health_routes
    return app
