"""Request and response models of the annotation API (``XCreate`` / ``XUpdate`` / ``XPublic``)."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from .geometry import Geometry, Uid
from .vocabulary import Level, SchemaDefinition
from .workflow import Status


class LabelSchemaCreate(BaseModel):
    """A new version of a label schema (the version number is assigned: previous + 1)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200, pattern=r"^[a-z][a-z0-9_\-]*$", examples=["oncology"])
    description: str = Field("", max_length=10000)
    definition: SchemaDefinition


class LabelSchemaPublic(BaseModel):
    """A label schema version as the API returns it."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    version: int
    description: str
    definition: SchemaDefinition
    created_by: str
    created_at: datetime


class ProjectCreate(BaseModel):
    """A new project; its creator becomes its first manager."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200, examples=["Lung CT staging 2026"])
    description: str = Field("", max_length=10000)
    schema_id: uuid.UUID | None = Field(
        None, description="Label schema version to use (default: the newest `oncology` version)."
    )


class ProjectPublic(BaseModel):
    """A project as the API returns it."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    name: str
    description: str
    schema_id: uuid.UUID | None
    created_by: str
    created_at: datetime


class ProjectPage(BaseModel):
    """One page of projects, ordered by name; ``next`` is the cursor of the following page."""

    items: list[ProjectPublic]
    next: str | None = None


class Role(StrEnum):
    """A member's role in a project."""

    annotator = "annotator"
    reviewer = "reviewer"
    manager = "manager"


class MemberPut(BaseModel):
    """A member's role."""

    model_config = ConfigDict(extra="forbid")

    role: Role


class MemberPublic(BaseModel):
    """A project member."""

    model_config = ConfigDict(from_attributes=True)

    subject: str
    role: Role


class AnnotationCreate(BaseModel):
    """A new annotation at one of the three levels.

    - ``patient``: needs ``patient_id`` (the clinical service's Patient id); no series, no geometry.
    - ``series``: needs ``study_uid`` and ``series_uid``; no geometry.
    - ``roi``: needs ``study_uid``, ``series_uid`` and ``geometry``; ``attributes`` from the schema's
      attribute labels (margin, internal structure …); optional ``tracking_id`` (the same lesion across
      studies) and ``scores`` (model proposals).
    """

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "project_id": "6f1c…",
                    "level": "roi",
                    "label": "lesion",
                    "value": "primary_tumour",
                    "attributes": {"margin": "spiculated", "internal_structure": ["solid"]},
                    "study_uid": "1.2.826.0.1.3680043.10.1.1",
                    "series_uid": "1.2.826.0.1.3680043.10.1.1.2",
                    "geometry": {
                        "type": "polygon",
                        "sop_instance_uid": "1.2.826.0.1.3680043.10.1.1.2.40",
                        "points": [[100, 100], [140, 102], [128, 150]],
                    },
                    "tracking_id": "lesion-1",
                }
            ]
        },
    )

    project_id: uuid.UUID
    level: Level
    label: str = Field(min_length=1, max_length=100)
    value: Any = None
    attributes: dict[str, Any] = Field(default_factory=dict)
    patient_id: str | None = Field(None, pattern=r"^[A-Za-z0-9\-.]{1,64}$")
    study_uid: Uid | None = None
    series_uid: Uid | None = None
    geometry: Geometry | None = None
    tracking_id: str | None = Field(None, min_length=1, max_length=64)
    scores: dict[str, float] | None = None
    status: Status = Field(Status.draft, description="`draft` (a person's work) or `proposed` (a model's).")
    client_key: str | None = Field(
        None, min_length=1, max_length=200, description="Idempotency key: the same key in a project creates once."
    )
    author: str | None = Field(
        None, max_length=200, description="`model@version` for proposals made by a service client; else the caller."
    )


class AnnotationUpdate(BaseModel):
    """Changes to an annotation's content (send ``If-Match`` with its ETag)."""

    model_config = ConfigDict(extra="forbid")

    value: Any = None
    attributes: dict[str, Any] | None = None
    geometry: Geometry | None = None
    tracking_id: str | None = Field(None, min_length=1, max_length=64)


class AnnotationPublic(BaseModel):
    """An annotation as the API returns it."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    project_id: uuid.UUID
    schema_id: uuid.UUID
    level: Level
    label: str
    value: Any
    attributes: dict[str, Any]
    patient_id: str | None
    study_uid: str | None
    series_uid: str | None
    geometry: dict[str, Any] | None
    tracking_id: str | None
    scores: dict[str, Any] | None
    measurements: dict[str, float] | None = Field(
        None,
        description="Computed from the images' Pixel Spacing and Slice Thickness: `length_mm` (lines); "
        "`area_mm2`, `perimeter_mm` (polygons); `area_mm2`, `volume_mm3` (contours, masks).",
    )
    status: Status
    author: str
    client_key: str | None
    version: int
    created_at: datetime
    updated_at: datetime


class AnnotationPage(BaseModel):
    """One page of annotations, oldest first; ``next`` is the cursor of the following page."""

    items: list[AnnotationPublic]
    next: str | None = None


class BulkCreate(BaseModel):
    """Many annotations at once (model proposals); each item's ``client_key`` makes a retry harmless."""

    model_config = ConfigDict(extra="forbid")

    items: list[AnnotationCreate] = Field(min_length=1, max_length=5000)


class BulkResult(BaseModel):
    """What a bulk create did: ids in request order, how many were new."""

    ids: list[uuid.UUID]
    created: int
    existing: int


class RevisionPublic(BaseModel):
    """One immutable revision of an annotation."""

    model_config = ConfigDict(from_attributes=True)

    version: int
    author: str
    action: str
    status: Status
    snapshot: dict[str, Any]
    at: datetime


class CommentCreate(BaseModel):
    """A comment."""

    model_config = ConfigDict(extra="forbid")

    text: str = Field(min_length=1, max_length=10000)


class CommentPublic(BaseModel):
    """A comment as the API returns it."""

    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    author: str
    text: str
    at: datetime
