"""AI-ready dataset export: a cohort's series as NIfTI, its ROI classes as aligned masks, a manifest, FHIR NDJSON.

Runs as a durable job on the suite's queue (``export_dataset`` on the ``annotations`` queue) and
writes one zip archive::

    images/<series_uid>.nii.gz             the series (RAS+ affine, rescaled values)
    masks/<series_uid>/<label>-<value>.nii.gz  one uint8 mask per ROI class, on the image grid
    fhir/<ResourceType>.ndjson             the cohort's patients' resources ($everything)
    manifest.csv, manifest.json            one row per series: patient-level labels from FHIR
                                           (diagnosis, T, N, M, stage group, latest disease
                                           status), series labels, ROIs, provenance
The JSON manifest also records the request, what was selected (annotation ids and versions),
the schema versions used, the software version and the SHA-256 of every file, so a dataset can
be checked and reproduced. The archive is built in a staging folder and renamed into place when
complete: a failed export leaves no archive.
"""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import json
import logging
import os
import shutil
import uuid
import zipfile
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import procrastinate
import pydicom
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from oncostruct_shared.dicomweb import DicomwebClient
from oncostruct_shared.errors import OncoStructError, UpstreamUnavailable

from .. import __version__
from ..models import AnnotationRow, DatasetExportRow, LabelSchemaRow
from ..workflow import Status
from .clinical_context import ClinicalReader, patient_summary
from .volume import GeometryError, roi_mask, series_volume

log = logging.getLogger("oncostruct.annotations.datasets")
QUEUE = "annotations"
PATIENT_FIELDS = ("diagnosis", "t_category", "n_category", "m_category", "stage_group", "disease_status")
CSV_FIELDS = (
    "patient_id", "study_uid", "series_uid", "image", "image_sha256", *PATIENT_FIELDS, "series_labels", "masks",
    "rois", "authors", "last_change", "schemas",
)  # fmt: skip


def _class_name(row: AnnotationRow) -> str:
    value = row.value if not isinstance(row.value, list) else "+".join(str(v) for v in row.value)
    text = f"{row.label}-{value}" if value not in (None, "") else row.label
    return "".join(c if c.isalnum() or c in "-_+" else "_" for c in text)[:100]


def _matches(row: AnnotationRow, value: Any) -> bool:
    if value is None:
        return True
    return row.value == value or (isinstance(row.value, list) and value in row.value)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class SeriesEntry:
    """One selected series and what its manifest row joins."""

    study_uid: str
    series_uid: str
    annotations: list[AnnotationRow]
    patient: str | None
    summary: dict[str, str | None] | None
    schema_names: dict[uuid.UUID, str]


class DatasetExports:
    """Defers and runs dataset exports.

    Parameters
    ----------
    queue
        The suite's procrastinate app.
    sessionmaker
        Sessions on the annotation database.
    imaging
        DICOMweb client of the imaging service.
    clinical
        Reader of the clinical FHIR server.
    storage
        Folder of the finished archives (``exports/``) and of the staging folders.
    """

    def __init__(
        self,
        queue: procrastinate.App,
        sessionmaker: async_sessionmaker[AsyncSession],
        imaging: DicomwebClient,
        clinical: ClinicalReader,
        storage: Path,
    ) -> None:
        self.queue = queue
        self.sessionmaker = sessionmaker
        self.imaging = imaging
        self.clinical = clinical
        self.archives = storage / "exports"
        self.staging = storage / "staging"
        queue.task(name="export_dataset", queue=QUEUE, pass_context=False, retry=0)(self.run)

    def archive_path(self, export_id: uuid.UUID) -> Path:
        """Where the finished archive of an export lies."""
        return self.archives / f"{export_id}.zip"

    async def enqueue(self, export_id: uuid.UUID, delay_s: float | None = None) -> None:
        """Defer the export's run."""
        deferrer = self.queue.configure_task(
            "export_dataset",
            queue=QUEUE,
            queueing_lock=f"export:{export_id}",
            schedule_in={"seconds": delay_s} if delay_s else None,
        )
        await deferrer.defer_async(export_id=str(export_id))

    async def _set(self, export_id: uuid.UUID, **values: Any) -> None:
        async with self.sessionmaker() as session:
            await session.execute(
                update(DatasetExportRow)
                .where(DatasetExportRow.id == export_id)
                .values(updated_at=datetime.now(UTC), **values)
            )
            await session.commit()

    async def run(self, export_id: str) -> None:
        """Run one export (the ``export_dataset`` task)."""
        identifier = uuid.UUID(export_id)
        async with self.sessionmaker() as session:
            row = await session.get(DatasetExportRow, identifier)
        if row is None or row.status in ("succeeded", "failed"):
            return
        await self._set(identifier, status="running", stage="selecting", error=None)
        staging = self.staging / export_id
        try:
            await asyncio.to_thread(shutil.rmtree, staging, True)
            await asyncio.to_thread(staging.mkdir, parents=True)
            summary = await self._build(row, staging)
            archive = await asyncio.to_thread(self._zip, staging, identifier)
            await self._set(
                identifier, status="succeeded", stage="done", progress=1.0, finished_at=datetime.now(UTC),
                archive_sha256=archive[0], archive_bytes=archive[1], summary=summary,
            )  # fmt: skip
            log.info("dataset exported", extra={"export_id": export_id, "series": summary["series"]})
        except UpstreamUnavailable as exc:
            attempts = row.attempts + 1
            delay = min(5.0 * 2 ** (attempts - 1), 300.0)
            await self._set(identifier, status="queued", attempts=attempts, error=None, stage=f"waiting: {exc.detail}")
            await self.enqueue(identifier, delay)
        except OncoStructError as exc:
            await self._set(identifier, status="failed", error=exc.detail, finished_at=datetime.now(UTC))
        except Exception:
            log.exception("dataset export crashed", extra={"export_id": export_id})
            await self._set(
                identifier, status="failed", error=f"Internal error in export {export_id}; see the service log.",
                finished_at=datetime.now(UTC),
            )  # fmt: skip
        finally:
            await asyncio.to_thread(shutil.rmtree, staging, True)

    def _zip(self, staging: Path, export_id: uuid.UUID) -> tuple[str, int]:
        self.archives.mkdir(parents=True, exist_ok=True)
        partial = self.archives / f"{export_id}.zip.partial"
        with zipfile.ZipFile(partial, "w") as archive:
            for path in sorted(p for p in staging.rglob("*") if p.is_file()):
                compress = zipfile.ZIP_STORED if path.name.endswith(".gz") else zipfile.ZIP_DEFLATED
                archive.write(path, path.relative_to(staging).as_posix(), compress_type=compress)
        with partial.open("rb") as handle:
            os.fsync(handle.fileno())
        digest, size = _sha256(partial), partial.stat().st_size
        os.replace(partial, self.archive_path(export_id))
        return digest, size

    async def _select(self, row: DatasetExportRow) -> dict[tuple[str, str], list[AnnotationRow]]:
        """The series of the project that pass the label filters, with their annotations in the allowed statuses."""
        request = row.request
        statuses = [s for s in request["statuses"] if s != Status.deleted]
        async with self.sessionmaker() as session:
            rows = (
                await session.scalars(
                    select(AnnotationRow)
                    .where(AnnotationRow.project_id == row.project_id, AnnotationRow.status.in_(statuses))
                    .order_by(AnnotationRow.created_at, AnnotationRow.id)
                )
            ).all()
        by_series: dict[tuple[str, str], list[AnnotationRow]] = defaultdict(list)
        for annotation in rows:
            if annotation.study_uid and annotation.series_uid:
                by_series[(annotation.study_uid, annotation.series_uid)].append(annotation)
        for wanted in request.get("series_labels", []):
            by_series = {
                key: items
                for key, items in by_series.items()
                if any(
                    a.level == "series" and a.label == wanted["label"] and _matches(a, wanted.get("value"))
                    for a in items
                )
            }
        return dict(sorted(by_series.items()))

    async def _build(self, row: DatasetExportRow, staging: Path) -> dict[str, Any]:
        selected = await self._select(row)
        patients_of: dict[str, str | None] = {}
        for study_uid, _ in selected:
            if study_uid not in patients_of:
                patients_of[study_uid] = await self.clinical.study_patient(study_uid)
        criteria = row.request.get("fhir_query")
        if criteria:
            cohort = await self.clinical.cohort(criteria)
            selected = {key: items for key, items in selected.items() if patients_of.get(key[0]) in cohort}
        await self._set(row.id, stage="clinical context", progress=0.05, series_count=len(selected))
        patients = sorted({p for (study, _) in selected if (p := patients_of.get(study))})
        summaries: dict[str, dict[str, str | None]] = {}
        fhir: dict[str, dict[str, dict[str, Any]]] = defaultdict(dict)
        for patient in patients:
            resources = await self.clinical.everything(patient)
            summaries[patient] = patient_summary(resources)
            for resource in resources:
                fhir[resource["resourceType"]][str(resource.get("id"))] = resource
        await asyncio.to_thread(self._write_fhir, staging, fhir)
        schema_ids = {a.schema_id for items in selected.values() for a in items}
        async with self.sessionmaker() as session:
            schemas = (
                (await session.scalars(select(LabelSchemaRow).where(LabelSchemaRow.id.in_(schema_ids)))).all()
                if schema_ids
                else []
            )
        schema_names = {s.id: f"{s.name}@{s.version}" for s in schemas}
        rows, skipped = [], []
        for index, ((study_uid, series_uid), items) in enumerate(selected.items()):
            await self._set(
                row.id,
                stage=f"series {index + 1} of {len(selected)}",
                progress=0.1 + 0.85 * index / max(1, len(selected)),
            )
            try:
                owner = patients_of.get(study_uid)
                entry = SeriesEntry(study_uid, series_uid, items, owner, summaries.get(owner or ""), schema_names)
                rows.append(await self._series(staging, entry))
            except GeometryError as exc:
                skipped.append({"study_uid": study_uid, "series_uid": series_uid, "reason": str(exc)})
        await asyncio.to_thread(shutil.rmtree, staging / ".work", True)
        files = await asyncio.to_thread(
            lambda: {p.relative_to(staging).as_posix(): _sha256(p) for p in sorted(staging.rglob("*")) if p.is_file()}
        )
        manifest = {
            "export_id": str(row.id),
            "created_at": row.created_at.isoformat(),
            "created_by": row.created_by,
            "software": f"oncostruct-annotations {__version__}",
            "request": row.request,
            "project_id": str(row.project_id),
            "schemas": sorted(schema_names.values()),
            "selection": {
                "series": [{"study_uid": s, "series_uid": se} for (s, se) in selected],
                "annotations": [
                    {"id": annotation_id, "version": version}
                    for annotation_id, version in sorted(
                        (str(a.id), a.version) for items in selected.values() for a in items
                    )
                ],
                "patients": patients,
            },
            "skipped": skipped,
            "files": files,
            "rows": rows,
        }
        await asyncio.to_thread(self._write_manifest, staging, manifest)
        return {"series": len(rows), "skipped": len(skipped), "patients": len(patients), "files": len(files) + 2}

    async def _series(self, staging: Path, entry: SeriesEntry) -> dict[str, Any]:
        work = staging / ".work" / entry.series_uid
        await asyncio.to_thread(work.mkdir, parents=True, exist_ok=True)
        try:
            paths = await self.imaging.retrieve_series(entry.study_uid, entry.series_uid, work)
            return await asyncio.to_thread(self._write_series, staging, paths, entry)
        finally:
            await asyncio.to_thread(shutil.rmtree, work, True)

    def _write_series(self, staging: Path, paths: list[Path], entry: SeriesEntry) -> dict[str, Any]:
        study_uid, series_uid, annotations = entry.study_uid, entry.series_uid, entry.annotations
        datasets = [pydicom.dcmread(path) for path in paths]
        datasets = [ds for ds in datasets if "PixelData" in ds]
        volume = series_volume(datasets)
        image_path = staging / "images" / f"{series_uid}.nii.gz"
        image_path.parent.mkdir(parents=True, exist_ok=True)
        nib.save(volume.image, image_path)
        rois = [a for a in annotations if a.level == "roi" and a.geometry is not None]
        classes: dict[str, np.ndarray[Any, np.dtype[np.uint8]]] = {}
        roi_rows = []
        for roi in rois:
            mask = roi_mask(volume, roi.geometry or {})
            name = _class_name(roi)
            classes[name] = classes.get(name, np.zeros(volume.image.shape, np.uint8)) | mask
            roi_rows.append(
                {
                    "id": str(roi.id), "version": roi.version, "class": name, "label": roi.label, "value": roi.value,
                    "attributes": roi.attributes, "tracking_id": roi.tracking_id, "status": roi.status,
                    "author": roi.author, "voxels": int(mask.sum()), "geometry": (roi.geometry or {}).get("type"),
                }
            )  # fmt: skip
        masks = {}
        for name, mask in sorted(classes.items()):
            mask_path = staging / "masks" / series_uid / f"{name}.nii.gz"
            mask_path.parent.mkdir(parents=True, exist_ok=True)
            nib.save(nib.Nifti1Image(mask, volume.image.affine), mask_path)
            masks[name] = mask_path.relative_to(staging).as_posix()
        series_labels: dict[str, Any] = {}
        for annotation in annotations:
            if annotation.level == "series":
                series_labels[annotation.label] = annotation.value
        summary = entry.summary or dict.fromkeys(PATIENT_FIELDS)
        return {
            "patient_id": entry.patient,
            "study_uid": study_uid,
            "series_uid": series_uid,
            "image": image_path.relative_to(staging).as_posix(),
            "image_sha256": _sha256(image_path),
            **{field: summary.get(field) for field in PATIENT_FIELDS},
            "series_labels": series_labels,
            "masks": masks,
            "rois": roi_rows,
            "authors": sorted({a.author for a in annotations}),
            "last_change": max(a.updated_at for a in annotations).isoformat(),
            "schemas": sorted({entry.schema_names.get(a.schema_id, str(a.schema_id)) for a in annotations}),
        }

    @staticmethod
    def _write_fhir(staging: Path, fhir: dict[str, dict[str, dict[str, Any]]]) -> None:
        folder = staging / "fhir"
        folder.mkdir(parents=True, exist_ok=True)
        for resource_type, resources in sorted(fhir.items()):
            lines = [json.dumps(resources[key], separators=(",", ":"), sort_keys=True) for key in sorted(resources)]
            (folder / f"{resource_type}.ndjson").write_text("\n".join(lines) + "\n", encoding="utf-8")

    @staticmethod
    def _write_manifest(staging: Path, manifest: dict[str, Any]) -> None:
        (staging / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str) + "\n", encoding="utf-8")
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for item in manifest["rows"]:
            writer.writerow(
                {
                    key: json.dumps(item[key], default=str) if isinstance(item[key], dict | list) else item[key]
                    for key in CSV_FIELDS
                }
            )
        (staging / "manifest.csv").write_text(buffer.getvalue(), encoding="utf-8")
