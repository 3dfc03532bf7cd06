"""The reconstruction service app: REST/JSON jobs at ``/reconstruction/v1``."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from oncostruct_shared.service import ServiceSpec, build_service_app
from oncostruct_shared.surfaces import ProblemSurface

from . import __version__
from .api import jobs
from .config import Settings


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
        )
    )
