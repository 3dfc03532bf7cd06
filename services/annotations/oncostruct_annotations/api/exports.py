"""Standard exports: a series' annotations as DICOM SEG + SR TID1500, stored to the imaging service."""

from __future__ import annotations

import uuid
from collections import defaultdict
from typing import Annotated

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from oncostruct_shared.db import SessionDep
from oncostruct_shared.errors import Unprocessable

from ..deps import WriterDep
from ..dicom_export import build_measurement_report, build_segmentation, resolve_annotations
from ..geometry import Uid
from ..repository import get_schema, list_annotations, require_role
from ..schemas import Role
from ..vocabulary import SchemaDefinition
from ..workflow import Status

router = APIRouter(prefix="/exports", tags=["exports"])


class DicomExportRequest(BaseModel):
    """Which series' annotations to export, and in which statuses."""

    model_config = ConfigDict(extra="forbid")

    project_id: uuid.UUID
    study_uid: Uid
    series_uid: Uid
    statuses: Annotated[list[Status], Field(min_length=1)] = [Status.approved]


class StoredObject(BaseModel):
    """A DICOM object the export stored in the imaging service."""

    sop_class_uid: str
    sop_instance_uid: str
    series_instance_uid: str


class DicomExportResult(BaseModel):
    """The SEG (when some ROI has an area) and the SR that were stored."""

    segmentation: StoredObject | None
    report: StoredObject
    annotations: int


def _stored(dataset: object) -> StoredObject:
    return StoredObject(
        sop_class_uid=str(dataset.SOPClassUID),  # type: ignore[attr-defined]
        sop_instance_uid=str(dataset.SOPInstanceUID),  # type: ignore[attr-defined]
        series_instance_uid=str(dataset.SeriesInstanceUID),  # type: ignore[attr-defined]
    )


@router.post("/dicom", response_model=DicomExportResult)
async def export_dicom(
    data: DicomExportRequest, request: Request, session: SessionDep, principal: WriterDep
) -> DicomExportResult:
    """Write a series' ROI and series annotations as a DICOM SEG and an SR TID1500 Measurement Report into
    the imaging service (STOW-RS), referencing the source series, for PACS and viewers such as OHIF."""
    await require_role(session, data.project_id, principal.subject, Role.annotator, Role.reviewer, Role.manager)
    filters = {"project_ids": [data.project_id], "study_uid": data.study_uid, "series_uid": data.series_uid}
    rows = [
        row
        for row in await list_annotations(session, filters, None, 100_000)
        if row.status in {status.value for status in data.statuses}
    ]
    if not rows:
        raise Unprocessable("No annotations of the series have the requested statuses.", expression=["statuses"])
    imaging = request.app.state.imaging
    sources = await imaging.series_metadata(data.study_uid, data.series_uid)
    patient = str(getattr(sources[0], "PatientID", "") or "unknown")
    by_schema = defaultdict(list)
    for row in rows:
        by_schema[row.schema_id].append(row)
    rois, labels = [], []
    for schema_id, group in by_schema.items():
        schema = SchemaDefinition.model_validate((await get_schema(session, schema_id)).definition)
        found_rois, found_labels = resolve_annotations(schema, group, tracking_scope=f"{data.project_id}/{patient}")
        rois += found_rois
        labels += found_labels
    seg = build_segmentation(sources, rois) if any(roi.has_area for roi in rois) else None
    report = build_measurement_report(sources, rois, labels, seg, observer=principal.subject, image_library=False)
    await imaging.store_instances(data.study_uid, [ds for ds in (seg, report) if ds is not None])
    return DicomExportResult(
        segmentation=_stored(seg) if seg is not None else None, report=_stored(report), annotations=len(rows)
    )
