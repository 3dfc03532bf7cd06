"""The imaging service app: DICOMweb at ``/dicomweb``."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from oncostruct_shared.service import ServiceSpec, build_service_app
from oncostruct_shared.surfaces import DicomwebSurface

from . import __version__
from .api import qido
from .config import Settings


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the imaging service (nothing connects until the lifespan starts)."""
    return build_service_app(
        ServiceSpec(
            settings=settings or Settings(),
            surface=DicomwebSurface("oncostruct-imaging"),
            title="OncoStruct imaging (DICOMweb)",
            description="DICOMweb (PS3.18) archive: QIDO-RS search. Errors carry the PS3.18 status code and a "
            "Warning header.",
            version=__version__,
            routers=[qido.router],
            migrations_dir=Path(__file__).parent / "migrations",
            validation_status=400,
        )
    )
