"""The annotation service app: REST/JSON at ``/annotations/v1``."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from oncostruct_shared.service import ServiceSpec, build_service_app
from oncostruct_shared.surfaces import ProblemSurface

from . import __version__
from .api import projects
from .config import Settings


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the annotation service (nothing connects until the lifespan starts)."""
    return build_service_app(
        ServiceSpec(
            settings=settings or Settings(),
            surface=ProblemSurface(),
            title="OncoStruct annotations",
            description="Patient-, series- and ROI-level labels with review and provenance. "
            "Errors are RFC 9457 problem details (application/problem+json).",
            version=__version__,
            routers=[projects.router],
            migrations_dir=Path(__file__).parent / "migrations",
        )
    )
