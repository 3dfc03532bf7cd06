"""Settings of the imaging service (env prefix ``ONCOSTRUCT_IMAGING_``)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from oncostruct_shared.settings import ServiceSettings


class Settings(ServiceSettings):
    """Imaging service settings."""

    model_config = SettingsConfigDict(env_prefix="ONCOSTRUCT_IMAGING_", extra="ignore", frozen=True)
    service_name: ClassVar[str] = "imaging"
    api_prefix: ClassVar[str] = "/dicomweb"

    base_url: str = Field("http://127.0.0.1:8082/dicomweb", description="Public DICOMweb base URL (RetrieveURL).")
    max_body_bytes: int = Field(4 * 1024**3, ge=1024, description="Largest STOW-RS request body accepted.")
    storage_path: Path = Field(Path(".local/storage/imaging"), description="Folder of the filesystem object store.")
    clinical_url: str = Field("http://127.0.0.1:8081/fhir", description="FHIR base of the clinical service.")
    qido_default_limit: int = Field(100, ge=1, description="QIDO-RS results per response when no `limit` is sent.")
    qido_max_limit: int = Field(1000, ge=1, description="Largest `limit` honoured; larger ones are cut (Warning).")
