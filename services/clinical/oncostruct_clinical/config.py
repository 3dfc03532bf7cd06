"""Settings of the clinical service (env prefix ``ONCOSTRUCT_CLINICAL_``)."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from oncostruct_shared.settings import ServiceSettings, UpstreamSource


class Settings(ServiceSettings):
    """Clinical service settings."""

    model_config = SettingsConfigDict(env_prefix="ONCOSTRUCT_CLINICAL_", extra="ignore", frozen=True)
    service_name: ClassVar[str] = "clinical"
    api_prefix: ClassVar[str] = "/fhir"

    base_url: str = Field(
        "http://127.0.0.1:8081/fhir", description="Public FHIR base URL (used in Location headers and links)."
    )
    search_default_count: int = Field(20, ge=1, le=1000, description="Page size of a search without `_count`.")
    search_max_count: int = Field(500, ge=1, le=10000, description="Largest page size a search may ask for.")
    search_include_iterations: int = Field(
        3, ge=1, le=10, description="How many rounds `_include:iterate`/`_revinclude:iterate` follow at most."
    )
    search_max_included: int = Field(1000, ge=1, description="Most resources `_include`/`_revinclude` add to one page.")
    search_default_total: Literal["none", "accurate"] = Field(
        "accurate", description="`Bundle.total` when the client sends no `_total` (`none` saves a count query)."
    )
    history_max_count: int = Field(500, ge=1, le=10000, description="Largest page size of a history interaction.")
    bundle_max_entries: int = Field(
        1000, ge=1, description="Most entries a batch or transaction Bundle may hold (413 above)."
    )
    everything_max_resources: int = Field(
        10000, ge=1, description="Largest page of `Patient/$everything` (`next` links page through the rest)."
    )
    fhir_sources: dict[str, UpstreamSource] = Field(
        default_factory=dict,
        description="FHIR servers patients can be pulled from (`$pull-import`), as JSON {name: {url, bearer_token}}.",
    )
