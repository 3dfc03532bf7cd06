"""The reconstruction service app: REST/JSON jobs at ``/reconstruction/v1``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

from oncostruct_shared.http import build_http_client, service_auth
from oncostruct_shared.observability import Readiness
from oncostruct_shared.queue import QueueService, create_queue_app
from oncostruct_shared.service import ServiceSpec, build_service_app
from oncostruct_shared.surfaces import ProblemSurface

from . import __version__
from .api import jobs
from .clients.triton import TritonModelClient
from .config import Settings
from .runner import QUEUE, JobRunner


class TritonClients:
    """One :class:`TritonModelClient` per model version, made when first asked for, closed together."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.clients: dict[str, TritonModelClient] = {}

    def __call__(self, version: str) -> TritonModelClient:
        if version not in self.clients:
            s = self.settings
            self.clients[version] = TritonModelClient(
                s.triton_url,
                s.triton_model_name,
                version,
                s.triton_timeout_s,
                s.triton_batch_size,
                s.triton_concurrency,
            )
        return self.clients[version]

    async def close(self) -> None:
        for client in self.clients.values():
            await client.close()


@asynccontextmanager
async def _open_resources(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    tritons = TritonClients(settings)
    app.state.triton = tritons(settings.triton_model_version)
    database_url = settings.database_url.get_secret_value()
    queue = create_queue_app(database_url, settings.queue_schema)
    async with (
        build_http_client(
            settings, settings.imaging_url, auth=service_auth(settings, "dicomweb.read dicomweb.write")
        ) as imaging,
        build_http_client(
            settings, settings.annotations_url, auth=service_auth(settings, "annotations.read annotations.write")
        ) as annotations,
    ):
        app.state.jobs = JobRunner(queue, app.state.db.sessionmaker, settings, imaging, annotations, tritons)
        app.state.queue = QueueService(
            queue,
            database_url,
            settings.queue_schema,
            [QUEUE],
            worker=settings.queue_worker,
            concurrency=settings.worker_concurrency,
            stalled_after_s=settings.stalled_after_s,
        )
        try:
            async with app.state.queue:
                yield
        finally:
            await tritons.close()


async def _queue_ready(app: FastAPI) -> None:
    await app.state.queue.check()


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
            lifespan=_open_resources,
            # Reported, not required: jobs wait and retry while Triton is away; reads still work.
            readiness_checks={
                "queue": Readiness(_queue_ready),
                "triton": Readiness(_triton_ready, required=False),
            },
        )
    )
