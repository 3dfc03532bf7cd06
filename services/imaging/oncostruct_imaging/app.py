"""The imaging service app: DICOMweb at ``/dicomweb``."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

from oncostruct_shared.http import build_http_client, service_auth
from oncostruct_shared.observability import Readiness
from oncostruct_shared.queue import QueueService, create_queue_app
from oncostruct_shared.service import ServiceSpec, build_service_app
from oncostruct_shared.storage import FilesystemObjectStore, ObjectStore
from oncostruct_shared.surfaces import DicomwebSurface

from . import __version__
from .api import imports, qido, stow, wado
from .api.fastframes import FrameFastPath
from .config import Settings
from .events import QUEUE, ImagingEvents
from .ingest import IngestContext, ParserPool
from .layouts import SeriesLayouts
from .pull import PullImports


@asynccontextmanager
async def _open_resources(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    store: ObjectStore
    if settings.storage_backend == "s3":
        if not settings.s3_bucket:
            raise RuntimeError("ONCOSTRUCT_IMAGING_S3_BUCKET is required with STORAGE_BACKEND=s3")
        from oncostruct_shared.storage_s3 import S3ObjectStore

        store = S3ObjectStore(
            settings.s3_bucket,
            settings.storage_path / ".staging",
            prefix=settings.s3_prefix,
            endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region,
        )
        spool = settings.spool_path or store.staging
    else:
        filesystem = FilesystemObjectStore(settings.storage_path, fsync=settings.storage_fsync)
        store, spool = filesystem, settings.spool_path or filesystem.staging
    spool.mkdir(parents=True, exist_ok=True)
    app.state.store = store
    app.state.spool = spool
    app.state.layouts = SeriesLayouts(settings.layout_cache_s)
    parsers = ParserPool(settings.parse_processes)
    ingest = IngestContext(settings, store, app.state.db, parsers)
    database_url = settings.database_url.get_secret_value()
    queue = create_queue_app(database_url, settings.queue_schema)
    scope = "system/Patient.crs system/ImagingStudy.crus"
    async with build_http_client(settings, settings.clinical_url, auth=service_auth(settings, scope)) as clinical:
        app.state.events = ImagingEvents(queue, app.state.db.sessionmaker, clinical, settings)
        app.state.ingest = ingest = dataclasses.replace(ingest, follow_up=app.state.events.follow_up_jobs)
        app.state.pulls = PullImports(queue, ingest, settings, spool, on_stored=app.state.events.stored)
        app.state.queue = QueueService(
            queue, database_url, settings.queue_schema, [QUEUE], worker=settings.queue_worker
        )
        try:
            await parsers.start()
            async with app.state.queue:
                yield
        finally:
            parsers.close()


async def _queue_ready(app: FastAPI) -> None:
    await app.state.queue.check()


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the imaging service (nothing connects until the lifespan starts)."""
    return build_service_app(
        ServiceSpec(
            settings=settings or Settings(),
            surface=DicomwebSurface("oncostruct-imaging"),
            title="OncoStruct imaging (DICOMweb)",
            description="DICOMweb (PS3.18) archive: STOW-RS store, QIDO-RS search, WADO-RS retrieve and delete. "
            "Errors carry the PS3.18 status code and a Warning header.",
            version=__version__,
            routers=[wado.router, qido.router, stow.router, imports.router],  # hottest first
            migrations_dir=Path(__file__).parent / "migrations",
            lifespan=_open_resources,
            validation_status=400,
            readiness_checks={"queue": Readiness(_queue_ready)},
            fast_paths=[FrameFastPath],
        )
    )
