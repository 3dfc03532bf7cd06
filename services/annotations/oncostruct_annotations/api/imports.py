"""Standard input: DICOM SEG and TID 1500 SR made by other tools (OHIF, 3D Slicer, highdicom …) into annotations."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import pydicom
from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from oncostruct_shared.db import SessionDep
from oncostruct_shared.dicomweb import DicomwebClient
from oncostruct_shared.errors import OncoStructError, Unprocessable

from ..deps import WriterDep
from ..dicom_export import annotation_fields, read_measurement_report, read_segmentation
from ..dicom_export.inputs import LabelValue, RoiInput
from ..geometry import Uid, images_of
from ..repository import get_project, get_schema, prepare_annotation, require_role, store_annotations
from ..schemas import AnnotationCreate, Role
from ..vocabulary import SchemaDefinition
from ..workflow import Status

router = APIRouter(prefix="/imports", tags=["imports"])

SEG_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
SR_CLASSES = {"1.2.840.10008.5.1.4.1.1.88.22", "1.2.840.10008.5.1.4.1.1.88.33", "1.2.840.10008.5.1.4.1.1.88.34"}


class DefaultClass(BaseModel):
    """The ROI class of SR measurement groups that carry no Finding (OHIF measurements often have none)."""

    model_config = ConfigDict(extra="forbid")

    label: str = Field(min_length=1, max_length=100, examples=["lesion"])
    value: str = Field(min_length=1, max_length=100, examples=["other_lesion"])


class DicomImportRequest(BaseModel):
    """A SEG or SR series in the imaging service to import into a project."""

    model_config = ConfigDict(extra="forbid")

    project_id: uuid.UUID
    study_uid: Uid
    series_uid: Uid = Field(description="The SEG or SR series (not the images it annotates).")
    status: Literal[Status.draft, Status.proposed] = Field(
        Status.draft, description="Status of imported people's work; an algorithm's segments are always `proposed`."
    )
    default_class: DefaultClass | None = None


class DicomImportResult(BaseModel):
    """What the import created (or found already imported) and what it could not place."""

    ids: list[uuid.UUID]
    created: int
    existing: int
    skipped: list[str]


def _source_series(dataset: pydicom.Dataset) -> dict[str, str]:
    """SOP Instance UID → Series Instance UID of the images a SEG or SR references (PS3.3 C.7.4.2, C.17.2)."""
    found: dict[str, str] = {}
    sequences = list(dataset.get("ReferencedSeriesSequence", []))
    for keyword in ("CurrentRequestedProcedureEvidenceSequence", "PertinentOtherEvidenceSequence"):
        for study in dataset.get(keyword, []):
            sequences += list(study.get("ReferencedSeriesSequence", []))
    for series in sequences:
        for instance in series.get("ReferencedSOPSequence", series.get("ReferencedInstanceSequence", [])):
            if str(instance.ReferencedSOPClassUID) not in {SEG_CLASS, *SR_CLASSES}:
                found[str(instance.ReferencedSOPInstanceUID)] = str(series.SeriesInstanceUID)
    return found


def _referenced_segmentation(report: pydicom.Dataset, segs: Sequence[pydicom.Dataset]) -> pydicom.Dataset | None:
    """The SEG among ``segs`` that the SR's evidence references (the only one when there is one)."""
    referenced: set[str] = set()
    for keyword in ("CurrentRequestedProcedureEvidenceSequence", "PertinentOtherEvidenceSequence"):
        for study in report.get(keyword, []):
            for series in study.get("ReferencedSeriesSequence", []):
                referenced |= {str(i.ReferencedSOPInstanceUID) for i in series.get("ReferencedSOPSequence", [])}
    chosen = [seg for seg in segs if str(seg.SOPInstanceUID) in referenced]
    return chosen[0] if chosen else (segs[0] if len(segs) == 1 else None)


Item = tuple[RoiInput | LabelValue, dict[str, str], str]


def _read(paths: list[Path], schema: SchemaDefinition, default: tuple[str, str] | None) -> tuple[list[Item], list[str]]:
    """The ROI and series-label inputs of the retrieved SEG and SR instances, each with the source map of its
    object and a stable key (the object's SOP Instance UID and the item's place in it)."""
    datasets = [pydicom.dcmread(path) for path in paths]
    segs = [ds for ds in datasets if str(ds.SOPClassUID) == SEG_CLASS]
    reports = [ds for ds in datasets if str(ds.SOPClassUID) in SR_CLASSES]
    if not segs and not reports:
        classes = sorted({str(ds.SOPClassUID) for ds in datasets})
        raise Unprocessable(f"The series holds no DICOM SEG or SR (SOP Classes {classes}).", expression=["series_uid"])
    items: list[Item] = []
    skipped: list[str] = []
    for seg in segs:
        key = str(seg.SOPInstanceUID)
        items += [(roi, _source_series(seg), f"{key}/{n}") for n, roi in enumerate(read_segmentation(seg, schema))]
    for report in reports:
        segmentation = _referenced_segmentation(report, segs)
        imported = read_measurement_report(report, schema, segmentation=segmentation, default_class=default)
        sources, key = _source_series(report), str(report.SOPInstanceUID)
        found: list[RoiInput | LabelValue] = [*imported.rois, *imported.series_labels]
        items += [(item, sources, f"{key}/{n}") for n, item in enumerate(found)]
        skipped += imported.skipped
    return items, skipped


@router.post("/dicom", response_model=DicomImportResult)
async def import_dicom(
    data: DicomImportRequest, request: Request, session: SessionDep, principal: WriterDep
) -> DicomImportResult:
    """Import a DICOM SEG (one ROI per segment, as a mask) or a TID 1500 SR (planar ROIs as polygons or lines,
    volumetric ones from their SEG, qualitative evaluations as series labels) stored in the imaging service.

    Concepts are matched to the project's schema by coding system and code; anything the schema does not know
    fails the whole import (422, nothing written). ROIs land on the images the objects reference; importing the
    same object again creates nothing (its SOP Instance UID keys each item)."""
    await require_role(session, data.project_id, principal.subject, Role.annotator, Role.reviewer, Role.manager)
    project = await get_project(session, data.project_id)
    schema_row = await get_schema(session, project.schema_id) if project.schema_id else None
    if schema_row is None:
        raise Unprocessable(f"Project {data.project_id} has no label schema to map the concepts to.")
    schema = SchemaDefinition.model_validate(schema_row.definition)
    folder = Path(await asyncio.to_thread(tempfile.mkdtemp, prefix="oncostruct-import-"))
    try:
        imaging = DicomwebClient(request.app.state.imaging_http)
        paths = await imaging.retrieve_series(data.study_uid, data.series_uid, folder)
        if not paths:
            raise Unprocessable(f"Series {data.series_uid} is not in the imaging service.", expression=["series_uid"])
        default = (data.default_class.label, data.default_class.value) if data.default_class else None
        items, skipped = await asyncio.to_thread(_read, paths, schema, default)
    except OncoStructError:
        raise
    except (ValueError, AttributeError, KeyError) as exc:  # objects that highdicom cannot parse
        raise Unprocessable(f"The SEG/SR cannot be read: {exc}", expression=["series_uid"]) from None
    finally:
        await asyncio.to_thread(shutil.rmtree, folder, True)
    rows = []
    seen_series: dict[tuple[str, str], Any] = {}
    for index, (item, sources, item_key) in enumerate(items):
        fields = annotation_fields(item)
        if isinstance(item, RoiInput):
            images = images_of(item.geometry)
            series_uid = sources.get(images[0][0]) if images else None
            model = item.author_is_model
            author, status = (item.author, Status.proposed) if model else (principal.subject, data.status)
        else:
            series_uid = next(iter(set(sources.values()))) if len(set(sources.values())) == 1 else None
            author, status = principal.subject, data.status
        if series_uid is None:
            skipped.append(f"item {index} ({fields['label']}): the object does not say which image series it is on")
            continue
        body = AnnotationCreate.model_validate(
            {**fields, "project_id": data.project_id, "study_uid": data.study_uid, "series_uid": series_uid,
             "status": status, "client_key": f"import:{item_key}"}
        )  # fmt: skip
        try:
            row = await prepare_annotation(session, project, body, author)
            row.measurements = await request.app.state.image_check(body, seen_series)
            rows.append(row)
        except OncoStructError as exc:
            raise type(exc)(f"item {index}: {exc.detail}", expression=exc.expression, headers=exc.headers) from exc
    if not rows:
        raise Unprocessable("Nothing in the SEG/SR could become an annotation: " + "; ".join(skipped))
    results = await store_annotations(session, rows)
    created = sum(1 for _, new in results if new)
    return DicomImportResult(
        ids=[identifier for identifier, _ in results], created=created, existing=len(results) - created, skipped=skipped
    )
