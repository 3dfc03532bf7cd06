"""Settings of the imaging service (env prefix ``ONCOSTRUCT_IMAGING_``)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from oncostruct_shared.settings import ServiceSettings, UpstreamSource

#: An upstream DICOMweb server studies can be pulled from.
PacsSource = UpstreamSource


class Settings(ServiceSettings):
    """Imaging service settings."""

    model_config = SettingsConfigDict(env_prefix="ONCOSTRUCT_IMAGING_", extra="ignore", frozen=True)
    service_name: ClassVar[str] = "imaging"
    api_prefix: ClassVar[str] = "/dicomweb"

    base_url: str = Field("http://127.0.0.1:8082/dicomweb", description="Public DICOMweb base URL (RetrieveURL).")
    max_body_bytes: int = Field(4 * 1024**3, ge=1024, description="Largest STOW-RS request body accepted.")
    storage_path: Path = Field(Path(".local/storage/imaging"), description="Folder of the filesystem object store.")
    storage_backend: Literal["filesystem", "s3"] = Field(
        "filesystem", description="Where instances are stored: a local folder, or an S3-compatible bucket."
    )
    s3_bucket: str = Field("", description="Bucket of the S3 store (it must exist).")
    s3_prefix: str = Field("imaging/", description="Key prefix of this service's objects in the bucket.")
    s3_endpoint_url: str = Field(
        "", description="S3 endpoint (MinIO, Ceph …; empty: AWS). Credentials: the standard AWS variables or role."
    )
    s3_region: str = Field("", description="S3 region (empty: from the AWS environment).")
    storage_fsync: bool = Field(
        True, description="fsync each stored file and its folder before a STOW-RS response acknowledges it."
    )
    spool_path: Path | None = Field(
        None,
        description="Folder where STOW-RS parts are spooled while they stream in "
        "(default: the object store's own staging folder, so storing is a rename).",
    )
    clinical_url: str = Field("http://127.0.0.1:8081/fhir", description="FHIR base of the clinical service.")
    series_quiet_s: float = Field(
        60.0, gt=0, description="A series with no new instance for this long is announced as complete."
    )
    layout_cache_s: float = Field(
        30.0,
        ge=0,
        description="How long a server process keeps a viewed series' frame locations (0: no cache).",
    )
    parse_processes: int = Field(
        2,
        ge=0,
        le=64,
        description="Worker processes that parse stored instances (0: threads of the server process).",
    )
    link_studies: bool = Field(
        True,
        description="Link stored studies to the clinical service as FHIR ImagingStudy (off: a standalone archive).",
    )
    link_max_attempts: int = Field(
        30, ge=1, description="Tries (with exponential backoff) to link a study to the clinical service."
    )
    link_retry_base_s: float = Field(
        2.0, gt=0, description="Wait before the second try to link a study; doubled for each later try."
    )
    link_retry_max_s: float = Field(600.0, gt=0, description="Longest wait between two tries to link a study.")
    patient_identifier_system: str = Field(
        "urn:oncostruct:dicom:patient-id",
        description="FHIR identifier system for DICOM Patient IDs (`:<issuer>` appended when the instance has one).",
    )
    pacs_sources: dict[str, PacsSource] = Field(
        default_factory=dict,
        description='Upstream PACS to pull from, by name, as JSON: {"hospital": {"url": "https://…/dicom-web"}}.',
    )
    pull_max_attempts: int = Field(10, ge=1, description="Tries (with exponential backoff) of a pull import job.")
    queue_schema: str = Field("oncostruct_jobs", description="PostgreSQL schema of the suite's job queue.")
    queue_worker: bool = Field(True, description="Run this service's job worker inside the service process.")
    qido_default_limit: int = Field(100, ge=1, description="QIDO-RS results per response when no `limit` is sent.")
    qido_max_limit: int = Field(1000, ge=1, description="Largest `limit` honoured; larger ones are cut (Warning).")
    duplicate_policy: Literal["reject", "replace"] = Field(
        "reject",
        description="What STOW-RS does with different content under an already stored SOP Instance UID: "
        "`reject` (FailureReason 0x0111, the stored instance stays) or `replace` (the newer content wins). "
        "Identical content is always accepted again (idempotent).",
    )
    bulkdata_threshold_bytes: int = Field(
        1024, ge=0, description="Binary values longer than this appear in metadata as BulkDataURI, not InlineBinary."
    )
    stow_max_part_header_bytes: int = Field(
        16 * 1024, ge=256, description="Largest header block of one multipart part accepted by STOW-RS."
    )
    thumbnail_size: int = Field(128, ge=16, le=2048, description="Longest side of /thumbnail images, in pixels.")
    rendered_jpeg_quality: int = Field(
        90, ge=1, le=100, description="JPEG quality of /rendered when the request sends no `quality`."
    )
