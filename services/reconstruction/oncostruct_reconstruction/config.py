"""Settings of the reconstruction service (env prefix ``ONCOSTRUCT_RECONSTRUCTION_``)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from oncostruct_shared.settings import ServiceSettings

from .model.data import MIN_FOREGROUND
from .model.regions import LOW_FRACTION, PEAK_FRACTION
from .model.repository import DEFAULT_REPOSITORY, SHIPPED_VERSION

#: How the stored Parametric Map's pixel data is encoded (see :mod:`.outputs`).
MapEncoding = Literal["jpeg-ls", "none"]
RegionGrowth = Literal["residual", "map", "none"]


class Settings(ServiceSettings):
    """Reconstruction service settings."""

    model_config = SettingsConfigDict(env_prefix="ONCOSTRUCT_RECONSTRUCTION_", extra="ignore", frozen=True)
    service_name: ClassVar[str] = "reconstruction"
    api_prefix: ClassVar[str] = "/reconstruction/v1"

    base_url: str = Field("http://127.0.0.1:8084/reconstruction/v1", description="Public base URL of this API.")
    storage_path: Path = Field(Path(".local/storage/reconstruction"), description="Folder for model artefacts.")
    imaging_url: str = Field("http://127.0.0.1:8082/dicomweb", description="DICOMweb base of the imaging service.")
    annotations_url: str = Field(
        "http://127.0.0.1:8083/annotations/v1", description="Base URL of the annotation service."
    )
    triton_url: str = Field("127.0.0.1:8000", description="Triton HTTP endpoint (host:port, KServe v2).")
    triton_model_name: str = Field("nearest_normal", description="Name of the model in Triton's repository.")
    triton_model_version: str = Field(
        SHIPPED_VERSION, description="Model version to use; results reference it. Empty: the server's latest."
    )
    triton_timeout_s: float = Field(30.0, gt=0, description="Limit of each Triton request, connection included.")
    triton_batch_size: int = Field(32, ge=1, le=1024, description="Slices per inference request.")
    triton_concurrency: int = Field(4, ge=1, le=64, description="Inference requests in flight at once per job.")
    model_repository: Path = Field(
        DEFAULT_REPOSITORY, description="Triton model repository the local server serves (make run, tests)."
    )
    anomaly_top_fraction: float = Field(
        0.01, gt=0, le=1, description="Fraction of a slice's foreground pixels whose mean map value is its score."
    )
    fallback_threshold: float = Field(
        0.3,
        gt=0,
        description="Voxel threshold when the served model's config has no calibrated `anomaly_threshold` parameter.",
    )
    analysable_modalities: tuple[str, ...] = Field(
        ("CT", "MR"), description="Modalities a job analyses (DICOM Modality values); others fail with a reason."
    )
    min_slice_foreground: float = Field(
        MIN_FOREGROUND,
        ge=0,
        le=1,
        description="Slices whose foreground is below this fraction of the series' largest are not analysed "
        "(map 0, score 0): the shipped model was trained without the head's tiny end caps and flags them; "
        "0 analyses every slice.",
    )
    min_region_mm3: float = Field(20.0, ge=0, description="Smallest abnormal region proposed, in cubic millimetres.")
    max_proposals: int = Field(20, ge=0, le=200, description="Most ROI proposals (and SEG segments) per series.")
    region_growth: RegionGrowth = Field(
        "residual",
        description="How a proposal grows beyond where the map exceeds the threshold: `residual` (over connected "
        "voxels above REGION_LOW_FRACTION of it whose residual |input − reconstruction| exceeds the model's "
        "calibrated `residual_threshold`; no growth for a model without one), `map` (over any such voxels) or "
        "`none`.",
    )
    region_low_fraction: float = Field(
        LOW_FRACTION,
        gt=0,
        le=1,
        description="The lowest map level a proposal grows into, as a fraction of the threshold.",
    )
    region_peak_fraction: float = Field(
        PEAK_FRACTION,
        ge=0,
        lt=1,
        description="A proposal's extent: where the anomaly map also reaches this fraction of the region's peak "
        "(voxels grown by the residual excepted); 0 keeps all of it.",
    )
    map_encoding: MapEncoding = Field(
        "jpeg-ls",
        description="Pixel data of the stored Parametric Map: `jpeg-ls` (lossless, about a tenth of the size) or "
        "`none` (uncompressed, for archives and viewers without JPEG-LS).",
    )
    proposals_project_id: str = Field(
        "",
        description="Annotation project (UUID) receiving ROI proposals of jobs that name none; empty: no proposals. "
        "The service's client id must be an annotator there.",
    )
    proposal_label: str = Field("lesion", description="ROI label of proposals in the project's schema.")
    proposal_value: str = Field(
        "other_lesion", description="Value of that label for proposals (the annotator corrects it)."
    )
    auto_jobs: bool = Field(True, description="Start jobs from the imaging service's series-complete events.")
    auto_modalities: tuple[str, ...] = Field(
        ("CT", "MR"), description="Series-complete events of these modalities start jobs."
    )
    auto_body_parts: tuple[str, ...] = Field(
        (), description="Only these Body Part Examined values start jobs (upper case; empty: any)."
    )
    queue_schema: str = Field("oncostruct_jobs", description="PostgreSQL schema of the suite's job queue.")
    queue_worker: bool = Field(True, description="Run this service's job worker inside the service process.")
    worker_concurrency: int = Field(1, ge=1, le=16, description="Jobs one worker runs at once.")
    retry_base_s: float = Field(5.0, gt=0, description="First wait before retrying a job whose peer was away.")
    retry_max_s: float = Field(300.0, gt=0, description="Longest wait between retries (the wait doubles up to it).")
    stalled_after_s: float = Field(
        60.0, gt=0, description="A running job whose worker sent no heartbeat for this long is run again."
    )
    page_size_default: int = Field(50, ge=1, le=1000, description="Items per page when `limit` is not sent.")
    page_size_max: int = Field(500, ge=1, le=10000, description="Largest `limit` accepted.")
