"""Request and response models of the reconstruction API."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict


class JobStatus(StrEnum):
    """Life cycle of a job."""

    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


class JobPublic(BaseModel):
    """A job as the API returns it."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    status: JobStatus
    study_instance_uid: str
    series_instance_uid: str
    model_name: str
    model_version: str
    error: str | None
    created_by: str
    created_at: datetime
    updated_at: datetime


class JobPage(BaseModel):
    """One page of jobs, newest first; ``next`` is the cursor of the following page."""

    items: list[JobPublic]
    next: str | None = None
