"""The reconstruction service app: REST/JSON jobs at ``/reconstruction/v1``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

from oncostruct_shared.observability import Readiness
from oncostruct_shared.service import ServiceSpec, build_service_app
from oncostruct_shared.surfaces import ProblemSurface

from . import __version__
from .api import jobs
from .clients.triton import triton_model_client
from .config import Settings


@asynccontextmanager
async def _open_triton(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    async with triton_model_client(
        settings.triton_url,
        settings.triton_model_name,
        settings.triton_model_version,
        settings.triton_timeout_s,
        settings.triton_batch_size,
        settings.triton_concurrency,
    ) as client:
        app.state.triton = client
        yield


async def _triton_ready(app: FastAPI) -> None:
    await app.state.triton.check_ready()


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the reconstruction service (nothing connects until the lifespan starts)."""
    return build_service_app(
        ServiceSpec(
            settings=settings or Settings(),
            surface=ProblemSurface(),
            title="OncoStruct reconstruction",
            description="Nearest-normal-image anomaly detection jobs; the model is served by Triton. "
            "Errors are RFC 9457 problem details (application/problem+json).",
            version=__version__,
            routers=[jobs.router],
            migrations_dir=Path(__file__).parent / "migrations",
            lifespan=_open_triton,
            # Reported, not required: jobs wait and retry while Triton is away; reads still work.
            readiness_checks={"triton": Readiness(_triton_ready, required=False)},
        )
    )
