"""Settings of the annotation service (env prefix ``ONCOSTRUCT_ANNOTATIONS_``)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from oncostruct_shared.settings import ServiceSettings


class Settings(ServiceSettings):
    """Annotation service settings."""

    model_config = SettingsConfigDict(env_prefix="ONCOSTRUCT_ANNOTATIONS_", extra="ignore", frozen=True)
    service_name: ClassVar[str] = "annotations"
    api_prefix: ClassVar[str] = "/annotations/v1"

    base_url: str = Field("http://127.0.0.1:8083/annotations/v1", description="Public base URL of this API.")
    clinical_url: str = Field("http://127.0.0.1:8081/fhir", description="FHIR base of the clinical service.")
    imaging_url: str = Field("http://127.0.0.1:8082/dicomweb", description="DICOMweb base of the imaging service.")
    verify_images: bool = Field(
        True, description="Check series and ROI annotations against the imaging service (series exists, geometry fits)."
    )
    storage_path: Path = Field(
        Path(".local/storage/annotations"), description="Folder of dataset export archives and their staging."
    )
    queue_schema: str = Field("oncostruct_jobs", description="PostgreSQL schema of the suite's job queue.")
    queue_worker: bool = Field(True, description="Run this service's job worker (dataset exports) in the process.")
    page_size_default: int = Field(50, ge=1, le=1000, description="Items per page when `limit` is not sent.")
    page_size_max: int = Field(500, ge=1, le=10000, description="Largest `limit` accepted.")
