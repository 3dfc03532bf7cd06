"""Request and response models of the annotation API (``XCreate`` / ``XPublic``)."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field


class ProjectCreate(BaseModel):
    """A new project."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200, examples=["Lung CT staging 2026"])
    description: str = Field("", max_length=10000)


class ProjectPublic(BaseModel):
    """A project as the API returns it."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    description: str
    created_by: str
    created_at: datetime


class ProjectPage(BaseModel):
    """One page of projects, ordered by name; ``next`` is the cursor of the following page."""

    items: list[ProjectPublic]
    next: str | None = None
