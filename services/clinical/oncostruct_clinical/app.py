"""The clinical service app: FHIR R4 at ``/fhir``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

from oncostruct_shared.service import ServiceSpec, build_service_app
from oncostruct_shared.surfaces import FhirSurface

from . import __version__
from .api import bulk, bundle, everything, history, instance, metadata, pull, search
from .config import Settings


@asynccontextmanager
async def _background_jobs(app: FastAPI) -> AsyncIterator[None]:
    async with bulk.bulk_lifespan(app), pull.pull_lifespan(app):
        yield


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the clinical service (nothing connects until the lifespan starts)."""
    return build_service_app(
        ServiceSpec(
            settings=settings or Settings(),
            surface=FhirSurface(),
            title="OncoStruct clinical (FHIR R4)",
            description="FHIR R4 (4.0.1) server for oncology clinical context: diagnosis, TNM staging, "
            "treatment and outcome as mCODE resources. Errors are OperationOutcome resources.",
            version=__version__,
            # Fixed paths first: /metadata and /_history must win over /{resource_type}/{resource_id}.
            routers=[
                bulk.router,
                pull.router,
                metadata.router,
                history.router,
                everything.router,
                bundle.router,
                search.router,
                instance.router,
            ],
            lifespan=_background_jobs,
            migrations_dir=Path(__file__).parent / "migrations",
            validation_status=400,
        )
    )
