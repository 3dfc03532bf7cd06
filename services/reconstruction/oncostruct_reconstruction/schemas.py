"""Request and response models of the reconstruction API."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import AliasChoices, BaseModel, ConfigDict, Field

from .model.repository import SHIPPED_VERSION

UID_PATTERN = r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$"


class JobStatus(StrEnum):
    """Life cycle of a job: ``queued`` (also while waiting to retry) → ``running`` → ``succeeded`` | ``failed``;
    ``cancelled`` from ``queued`` or ``running`` by ``POST /jobs/{id}/cancel``."""

    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


class JobCreate(BaseModel):
    """A request to analyse one series with one model version."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "study_uid": "1.2.826.0.1.3680043.10.1.1",
                    "series_uid": "1.2.826.0.1.3680043.10.1.1.2",
                    "model_version": SHIPPED_VERSION,
                    "project_id": "6f1c2b1e-4a55-4c47-9b8e-0f4f5c2a9d10",
                }
            ]
        },
    )

    study_uid: str = Field(max_length=64, pattern=UID_PATTERN, description="Study Instance UID.")
    series_uid: str = Field(max_length=64, pattern=UID_PATTERN, description="Series Instance UID.")
    model_version: str | None = Field(
        None,
        min_length=1,
        max_length=32,
        pattern=r"^[0-9]+$",
        description="Triton model version (default: the configured one).",
    )
    project_id: uuid.UUID | None = Field(
        None,
        description="Annotation project that receives the ROI proposals "
        "(default: the configured one; none configured: no proposals).",
    )


class SliceScore(BaseModel):
    """The anomaly score of one slice."""

    sop_instance_uid: str
    score: float


class JobPublic(BaseModel):
    """A job as the API returns it; ``result`` fills in as the job stores its outputs."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    status: JobStatus
    study_uid: str = Field(validation_alias=AliasChoices("study_instance_uid", "study_uid"))
    series_uid: str = Field(validation_alias=AliasChoices("series_instance_uid", "series_uid"))
    model_name: str
    model_version: str
    project_id: uuid.UUID | None = None
    trigger: str = Field(
        "api", description="`api` (POST /jobs) or `event` (the imaging service's series-complete event)."
    )
    stage: str | None = Field(None, description="What the job does now, or did last.")
    progress: float = Field(0.0, description="0 to 1.")
    attempts: int = Field(0, description="Runs that stopped because a peer (Triton, imaging, annotations) was away.")
    waiting: str | None = Field(None, description="Why a queued job waits, until its next attempt.")
    next_attempt_at: datetime | None = None
    error: str | None
    series_score: float | None = Field(None, description="Mean of the three highest slice scores.")
    slice_scores: list[SliceScore] | None = None
    result: dict[str, Any] = Field(
        default_factory=dict,
        description="`parametric_map` and `segmentation` ({series_uid, sop_instance_uid, retrieve_url}), "
        "`proposals` ([{annotation_id, segment_number, peak, mean, box, voxels, volume_mm3}]), `threshold`, `model`.",
    )
    timings: dict[str, Any] = Field(default_factory=dict, description="Seconds per stage of the last run.")
    created_by: str
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None


class JobPage(BaseModel):
    """One page of jobs, newest first; ``next`` is the cursor of the following page."""

    items: list[JobPublic]
    next: str | None = None
