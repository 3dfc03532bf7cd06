"""The annotation service app: REST/JSON at ``/annotations/v1``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from oncostruct_shared.dicomweb import DicomwebClient
from oncostruct_shared.http import build_http_client, service_auth
from oncostruct_shared.observability import Readiness, readyz_url, upstream_ready
from oncostruct_shared.queue import QueueService, create_queue_app
from oncostruct_shared.service import ServiceSpec, build_service_app
from oncostruct_shared.surfaces import ProblemSurface

from . import __version__
from .api import annotations as annotations_api
from .api import datasets, exports, imports, projects, schemas
from .clients.clinical import ClinicalClient
from .clients.imaging import ImagingClient
from .config import Settings
from .dataset.clinical_context import ClinicalReader
from .dataset.export import QUEUE as DATASET_QUEUE
from .dataset.export import DatasetExports
from .repository import ensure_default_schema
from .schemas import AnnotationCreate


async def _no_image_check(
    _: AnnotationCreate, cache: dict[tuple[str, str], Any] | None = None
) -> dict[str, float] | None:
    return None


async def _queue_ready(app: FastAPI) -> None:
    await app.state.queue.check()


async def _imaging_ready(app: FastAPI) -> None:
    await upstream_ready(app.state.imaging_http, readyz_url(app.state.settings.imaging_url))


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the annotation service (nothing connects until the lifespan starts)."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with app.state.db.sessionmaker() as session:
            await ensure_default_schema(session)
        imaging_http = build_http_client(
            settings, settings.imaging_url, auth=service_auth(settings, scope="dicomweb.read dicomweb.write")
        )
        clinical_http = build_http_client(
            settings,
            settings.clinical_url,
            auth=service_auth(
                settings,
                scope="system/Observation.cru system/Condition.cru system/BodyStructure.cru "
                "system/Procedure.cru system/MedicationRequest.cru system/*.rs",
            ),
        )
        app.state.imaging_http = imaging_http
        app.state.imaging = ImagingClient(imaging_http)
        app.state.image_check = app.state.imaging.check if settings.verify_images else _no_image_check
        app.state.clinical = ClinicalClient(clinical_http)
        app.state.clinical_reader = ClinicalReader(clinical_http)
        database_url = settings.database_url.get_secret_value()
        queue = create_queue_app(database_url, settings.queue_schema)
        app.state.datasets = DatasetExports(
            queue,
            app.state.db.sessionmaker,
            DicomwebClient(imaging_http),
            app.state.clinical_reader,
            settings.storage_path,
        )
        app.state.queue = QueueService(
            queue, database_url, settings.queue_schema, [DATASET_QUEUE], worker=settings.queue_worker
        )
        try:
            async with app.state.queue:
                yield
        finally:
            await imaging_http.aclose()
            await clinical_http.aclose()

    return build_service_app(
        ServiceSpec(
            settings=settings,
            surface=ProblemSurface(),
            title="OncoStruct annotations",
            description="Patient-, series- and ROI-level labels with review and provenance. "
            "Errors are RFC 9457 problem details (application/problem+json).",
            version=__version__,
            routers=[
                schemas.router,
                projects.router,
                annotations_api.router,
                exports.router,
                imports.router,
                datasets.router,
            ],
            migrations_dir=Path(__file__).parent / "migrations",
            lifespan=lifespan,
            readiness_checks={
                "queue": Readiness(_queue_ready),
                "imaging": Readiness(_imaging_ready, required=False),
            },
        )
    )
