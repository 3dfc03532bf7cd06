"""Settings of the clinical service (env prefix ``ONCOSTRUCT_CLINICAL_``)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from oncostruct_shared.settings import ServiceSettings


class Settings(ServiceSettings):
    """Clinical service settings."""

    model_config = SettingsConfigDict(env_prefix="ONCOSTRUCT_CLINICAL_", extra="ignore", frozen=True)
    service_name: ClassVar[str] = "clinical"
    api_prefix: ClassVar[str] = "/fhir"

    base_url: str = Field(
        "http://127.0.0.1:8081/fhir", description="Public FHIR base URL (used in Location headers and links)."
    )
