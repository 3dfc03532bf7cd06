"""What happens after instances are stored: the FHIR link, and "series complete" events.

Both run as durable jobs on the suite's PostgreSQL queue (:mod:`oncostruct_shared.queue`),
deferred right after a STOW-RS commit, so neither the clinical service being down nor a
restart ever fails or loses a store:

- ``link_imaging_study`` creates or updates the study's FHIR ImagingStudy in the clinical
  service (conditional update on identifier ``urn:dicom:uid|urn:oid:<uid>``), with the
  subject Patient found by identifier or created. Retried with backoff until it succeeds.
- ``series_quiet_check`` waits until a series has received no instance for the quiet period
  and then defers ``series_complete`` on the ``reconstruction`` queue, once per content
  version of the series (a later instance makes a new version and a new event).

Consumers are at-least-once: the reconstruction service keys its work on the series UID and
its last change.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import procrastinate
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from oncostruct_shared.errors import UpstreamError
from oncostruct_shared.http import raise_for_upstream

from .config import Settings
from .models import InstanceRow, PatientRow, SeriesRow, StudyRow
from .repository import QueuedJob

log = logging.getLogger("oncostruct.imaging.events")
QUEUE = "imaging"
RECONSTRUCTION_QUEUE = "reconstruction"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
FHIR_JSON = "application/fhir+json"


def _first(attributes: dict[str, Any], tag: str) -> Any:
    values = attributes.get(tag, {}).get("Value") or [None]
    return values[0]


def imaging_study_resource(
    study: StudyRow, patient_reference: str, series: list[tuple[SeriesRow, list[InstanceRow]]]
) -> dict[str, Any]:
    """The FHIR R4 ImagingStudy of a stored study (http://hl7.org/fhir/R4/imagingstudy.html)."""
    modalities = sorted({row.modality for row, _ in series if row.modality})
    resource: dict[str, Any] = {
        "resourceType": "ImagingStudy",
        "identifier": [{"system": "urn:dicom:uid", "value": f"urn:oid:{study.study_instance_uid}"}],
        "status": "available",
        "subject": {"reference": patient_reference},
        "numberOfSeries": len(series),
        "numberOfInstances": sum(len(instances) for _, instances in series),
        "modality": [{"system": DCM, "code": modality} for modality in modalities],
        "series": [],
    }
    if study.accession_number:
        resource["identifier"].append(
            {
                "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "ACSN"}]},
                "value": study.accession_number,
            }
        )
    if study.study_date:
        time = (study.study_time or "000000").split(".")[0].ljust(6, "0")
        resource["started"] = f"{study.study_date.isoformat()}T{time[:2]}:{time[2:4]}:{time[4:6]}Z"
    if study.study_description:
        resource["description"] = study.study_description
    for row, instances in series:
        item: dict[str, Any] = {
            "uid": row.series_instance_uid,
            "modality": {"system": DCM, "code": row.modality or "OT"},
            "numberOfInstances": len(instances),
            "instance": [
                {
                    "uid": instance.sop_instance_uid,
                    "sopClass": {"system": "urn:ietf:rfc:3986", "code": f"urn:oid:{instance.sop_class_uid}"},
                    **({"number": instance.instance_number} if instance.instance_number is not None else {}),
                }
                for instance in instances
            ],
        }
        if row.series_number is not None:
            item["number"] = row.series_number
        if row.series_description:
            item["description"] = row.series_description
        resource["series"].append(item)
    return resource


class ImagingEvents:
    """The imaging service's jobs: defer after a store, run in the service's worker."""

    def __init__(
        self,
        queue: procrastinate.App,
        sessionmaker: async_sessionmaker[AsyncSession],
        clinical: httpx.AsyncClient,
        settings: Settings,
    ) -> None:
        self.queue = queue
        self.sessionmaker = sessionmaker
        self.clinical = clinical
        self.settings = settings
        # No procrastinate retry for the link: a failed attempt defers the next one itself (see
        # link_imaging_study); a retry of the same job would collide with a newer pending job's
        # queueing lock (UniqueViolation inside the worker, leaving the job stuck in 'doing').
        queue.task(name="link_imaging_study", queue=QUEUE, pass_context=False)(self.link_imaging_study)
        queue.task(name="series_quiet_check", queue=QUEUE, retry=3, pass_context=False)(self.series_quiet_check)

    def follow_up_jobs(self, studies: set[str], series: set[str]) -> list[QueuedJob]:
        """The jobs :meth:`stored` would defer, as rows for :func:`~.repository.insert_new_instances` to
        insert in the store's own transaction (a committed store always has its follow-ups)."""
        jobs = [
            QueuedJob(QUEUE, "link_imaging_study", f"link:{uid}", {"study_uid": uid}, None)
            for uid in sorted(studies)
            if self.settings.link_studies
        ]
        jobs += [
            QueuedJob(QUEUE, "series_quiet_check", f"quiet:{uid}", {"series_uid": uid}, self.settings.series_quiet_s)
            for uid in sorted(series)
        ]
        return jobs

    async def stored(self, studies: set[str], series: set[str]) -> None:
        """Defer the follow-up jobs of a STOW-RS request (one pending job per study and per series)."""
        await asyncio.gather(
            *(
                self._defer("link_imaging_study", f"link:{study_uid}", study_uid=study_uid)
                for study_uid in (studies if self.settings.link_studies else ())
            ),
            *(
                self._defer(
                    "series_quiet_check",
                    f"quiet:{series_uid}",
                    schedule_in={"seconds": self.settings.series_quiet_s},
                    series_uid=series_uid,
                )
                for series_uid in series
            ),
        )

    async def _defer(self, task: str, lock: str, schedule_in: dict[str, float] | None = None, **kwargs: Any) -> None:
        deferrer = self.queue.configure_task(task, queue=QUEUE, queueing_lock=lock, schedule_in=schedule_in)
        with contextlib.suppress(procrastinate.exceptions.AlreadyEnqueued):  # a pending job sees this store too
            await deferrer.defer_async(**kwargs)

    async def _patient_reference(self, patient: PatientRow) -> str:
        system = self.settings.patient_identifier_system
        if patient.issuer_of_patient_id:
            system = f"{system}:{patient.issuer_of_patient_id}"
        identifier = f"{system}|{patient.patient_id}"
        body: dict[str, Any] = {
            "resourceType": "Patient",
            "identifier": [{"system": system, "value": patient.patient_id}],
        }
        if patient.name_alphabetic:
            family, _, given = patient.name_alphabetic.partition("^")
            name: dict[str, Any] = {"family": family}
            if given:
                name["given"] = [part for part in given.split("^") if part][:1] or [given]
            body["name"] = [name]
        if patient.birth_date:
            body["birthDate"] = patient.birth_date.isoformat()
        if patient.sex in ("M", "F", "O"):
            body["gender"] = {"M": "male", "F": "female", "O": "other"}[patient.sex]
        # Conditional create (http://hl7.org/fhir/R4/http.html#ccreate): found or made, never twice.
        response = await self.clinical.post(
            "/Patient",
            json=body,
            headers={
                "Content-Type": FHIR_JSON,
                "If-None-Exist": f"identifier={identifier}",
                "Prefer": "return=representation",
            },
        )
        raise_for_upstream(response, "The clinical service")
        patient_id = response.json().get("id") if response.content else None
        if not patient_id:
            location = response.headers.get("location", "")
            patient_id = location.split("/Patient/")[-1].split("/")[0]
        if not patient_id:
            raise UpstreamError("The clinical service did not say which Patient it matched or created.")
        return f"Patient/{patient_id}"

    async def link_imaging_study(self, study_uid: str, attempt: int = 1) -> None:
        """Create or update the study's ImagingStudy in the clinical service (job).

        A failed attempt defers the next one (same queueing lock, exponential backoff capped at
        ``link_retry_max_s``) and ends; if a newer job for the study is pending already, that one
        links the study's latest state and no retry is needed. After ``link_max_attempts`` the
        job fails (visible in the queue) and the next store of the study starts again.
        """
        try:
            await self._link(study_uid)
        except Exception as exc:
            if attempt >= self.settings.link_max_attempts:
                raise
            delay = min(self.settings.link_retry_base_s * 2 ** (attempt - 1), self.settings.link_retry_max_s)
            log.warning(
                "linking failed; will retry",
                extra={"attempt": attempt, "retry_in_s": delay, "error": type(exc).__name__},
            )
            await self._defer(
                "link_imaging_study",
                f"link:{study_uid}",
                schedule_in={"seconds": delay},
                study_uid=study_uid,
                attempt=attempt + 1,
            )

    async def _link(self, study_uid: str) -> None:
        async with self.sessionmaker() as session:
            study = await session.scalar(select(StudyRow).where(StudyRow.study_instance_uid == study_uid))
            if study is None:
                log.info("study gone before linking", extra={"study_uid": study_uid})
                return
            patient = await session.get(PatientRow, study.patient_pk)
            assert patient is not None
            series_rows = list(
                (
                    await session.scalars(
                        select(SeriesRow).where(SeriesRow.study_pk == study.pk).order_by(SeriesRow.series_number)
                    )
                ).all()
            )
            series = []
            for row in series_rows:
                instances = list(
                    (
                        await session.scalars(
                            select(InstanceRow)
                            .where(InstanceRow.series_pk == row.pk)
                            .order_by(InstanceRow.instance_number)
                        )
                    ).all()
                )
                series.append((row, instances))
        reference = await self._patient_reference(patient)
        resource = imaging_study_resource(study, reference, series)
        # Conditional update on the DICOM identifier (http://hl7.org/fhir/R4/http.html#cond-update).
        response = await self.clinical.put(
            "/ImagingStudy",
            params={"identifier": f"urn:dicom:uid|urn:oid:{study_uid}"},
            json=resource,
            headers={"Content-Type": FHIR_JSON},
        )
        raise_for_upstream(response, "The clinical service")
        log.info("imaging study linked", extra={"status": response.status_code})

    async def series_quiet_check(self, series_uid: str) -> None:
        """Emit ``series_complete`` once the series has been quiet for the configured time (job)."""
        quiet = timedelta(seconds=self.settings.series_quiet_s)
        async with self.sessionmaker() as session:
            found = (
                await session.execute(
                    select(SeriesRow, StudyRow.study_instance_uid)
                    .join(StudyRow, StudyRow.pk == SeriesRow.study_pk)
                    .where(SeriesRow.series_instance_uid == series_uid)
                )
            ).first()
            if found is None:
                return  # deleted meanwhile
            series, study_uid = found
            last, count = (
                await session.execute(
                    select(func.max(InstanceRow.created_at), func.count()).where(InstanceRow.series_pk == series.pk)
                )
            ).one()
            if last is None:
                return
            now = datetime.now(UTC)
            if now - last < quiet:
                await self._defer(
                    "series_quiet_check",
                    f"quiet:{series_uid}",
                    schedule_in={"seconds": (last + quiet - now).total_seconds() + 0.1},
                    series_uid=series_uid,
                )
                return
            if series.complete_event_at is not None and series.complete_event_at >= last:
                return  # this content version was announced already
            await self.queue.configure_task("series_complete", queue=RECONSTRUCTION_QUEUE).defer_async(
                study_uid=study_uid,
                series_uid=series_uid,
                modality=series.modality,
                body_part=series.body_part_examined,
                instances=int(count),
                last_change=last.isoformat(),
            )
            await session.execute(update(SeriesRow).where(SeriesRow.pk == series.pk).values(complete_event_at=last))
            await session.commit()
        log.info("series complete", extra={"instances": int(count)})
