"""Running jobs: durable tasks on the suite's PostgreSQL queue (procrastinate), one job row each.

- ``analyse_series`` (queue ``reconstruction``) runs one job: check the model on Triton,
  check the series' metadata, retrieve its pixels over WADO-RS, infer through Triton,
  score, find regions, store a Parametric Map and a SEG to the imaging service, and
  create the ROI proposals in the annotation service. Each stored output is recorded
  on the job at once and its UIDs derive from the job id, so a run that stops half-way
  resumes without duplicates.
- ``series_complete`` (the imaging service's event, same queue) starts a job for series
  of the configured modalities and body parts — never for this service's own results.

A peer that is away (Triton, imaging, annotations: :class:`UpstreamUnavailable`) puts the
job back in the queue with a doubling wait, forever: the job says why it waits and when
it tries again. Any other error fails the job with its reason. A worker that dies leaves
a stalled queue job that the suite's queue (:class:`~oncostruct_shared.queue.QueueService`) runs again.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import shutil
import time
import uuid
import zlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import procrastinate
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from oncostruct_shared.dicomweb import DicomwebClient, first_value
from oncostruct_shared.errors import OncoStructError, UpstreamError, UpstreamUnavailable
from oncostruct_shared.http import raise_for_upstream, transport_error

from .clients.triton import ModelInfo, TritonModelClient
from .config import Settings
from .model.data import enough_foreground
from .model.preprocess import prepare_series, restore_slices
from .model.regions import Region, find_regions, growth_slices
from .model.scoring import series_score, slice_scores
from .models import JobRow
from .outputs import ResultIdentity, parametric_map, segmentation
from .repository import create_job, set_job, superseded
from .schemas import JobStatus
from .series import SeriesPlan, SourceVolume, check_series, is_own_result, load_volume

log = logging.getLogger("oncostruct.reconstruction.jobs")


class JobCancelled(Exception):
    """The job was cancelled while it ran (raised between stages)."""

    def __init__(self, job_id: uuid.UUID) -> None:
        super().__init__(f"job {job_id} was cancelled")


QUEUE = "reconstruction"
RETRIEVE_URL = "00081190"


@dataclass
class Analysis:
    """What inference and scoring made of a series."""

    anomaly: np.ndarray[Any, np.dtype[np.float32]]
    scores: list[dict[str, Any]]
    series_score: float
    regions: list[Region]
    not_analysed: int = 0


class JobRunner:
    """Defers and runs the service's jobs.

    Parameters
    ----------
    queue
        The suite's procrastinate app.
    sessionmaker
        Sessions on the service's database.
    settings
        The service's settings.
    imaging, annotations
        Authenticated clients of the imaging service (DICOMweb root) and the annotation API.
    triton
        Returns the Triton client of a model version.
    """

    def __init__(
        self,
        queue: procrastinate.App,
        sessionmaker: async_sessionmaker[AsyncSession],
        settings: Settings,
        imaging: httpx.AsyncClient,
        annotations: httpx.AsyncClient,
        triton: Callable[[str], TritonModelClient],
    ) -> None:
        self.queue = queue
        self.sessionmaker = sessionmaker
        self.settings = settings
        self.imaging = DicomwebClient(imaging)
        self.imaging_http = imaging
        self.annotations = annotations
        self.triton = triton
        queue.task(name="analyse_series", queue=QUEUE, pass_context=False)(self.run)
        queue.task(name="series_complete", queue=QUEUE, pass_context=False)(self.series_complete)

    # --- queueing ---------------------------------------------------------------

    async def enqueue(self, job_id: uuid.UUID, delay_s: float | None = None) -> None:
        """Defer the job's run (once: a pending run of the same job covers this request)."""
        deferrer = self.queue.configure_task(
            "analyse_series",
            queue=QUEUE,
            queueing_lock=f"job:{job_id}",
            schedule_in={"seconds": delay_s} if delay_s else None,
        )
        with contextlib.suppress(procrastinate.exceptions.AlreadyEnqueued):
            await deferrer.defer_async(job_id=str(job_id))

    async def series_complete(
        self,
        study_uid: str,
        series_uid: str,
        modality: str | None = None,
        body_part: str | None = None,
        instances: int = 0,
        last_change: str | None = None,
    ) -> None:
        """The imaging service's event: start a job for a series this service is configured to analyse."""
        settings = self.settings
        wanted_part = not settings.auto_body_parts or (body_part or "").upper() in settings.auto_body_parts
        if not settings.auto_jobs or modality not in settings.auto_modalities or not wanted_part:
            log.info("series event ignored", extra={"modality": modality, "instances": instances})
            return
        try:
            metadata = await self.imaging.series_metadata(study_uid, series_uid)
        except (UpstreamUnavailable, UpstreamError):
            # The archive is away: the job is created unchecked rather than the event lost. It checks
            # the series itself (refusing this service's own results), waiting for the archive first.
            log.info("series event while the archive is away: job created unchecked")
        else:
            if not metadata or is_own_result(metadata):
                return  # deleted meanwhile, or one of this service's results: never analysed
        job_id, queued = await self._create(study_uid, series_uid, settings.triton_model_version, None, "event")
        if queued:
            await self.enqueue(job_id)
        log.info("series event", extra={"job_id": str(job_id), "queued": queued})

    async def _create(
        self, study_uid: str, series_uid: str, version: str, project_id: uuid.UUID | None, trigger: str, by: str = ""
    ) -> tuple[uuid.UUID, bool]:
        project = project_id or (
            uuid.UUID(self.settings.proposals_project_id) if self.settings.proposals_project_id else None
        )
        async with self.sessionmaker() as session:
            return await create_job(
                session,
                {
                    "study_instance_uid": study_uid,
                    "series_instance_uid": series_uid,
                    "model_name": self.settings.triton_model_name,
                    "model_version": version,
                    "project_id": project,
                    "trigger": trigger,
                    "created_by": by or f"event:{self.settings.client_id}",
                },
            )

    async def submit(
        self, study_uid: str, series_uid: str, version: str, project_id: uuid.UUID | None, by: str
    ) -> tuple[uuid.UUID, bool]:
        """Create (or find) the job of an API request and queue it if new or restarted."""
        job_id, queued = await self._create(study_uid, series_uid, version, project_id, "api", by)
        if queued:
            await self.enqueue(job_id)
        return job_id, queued

    async def withdraw(self, job_id: uuid.UUID) -> None:
        """Delete the job's pending (not yet started) run, so that a new request can queue one at once."""
        manager = self.queue.job_manager
        for pending in await manager.list_jobs_async(queueing_lock=f"job:{job_id}", status="todo"):
            if pending.id is not None:
                await manager.cancel_job_by_id_async(pending.id, delete_job=True)

    # --- running ----------------------------------------------------------------

    async def run(self, job_id: str) -> None:
        """Run one job (the ``analyse_series`` task); never raises for a job's own failure."""
        identifier = uuid.UUID(job_id)
        async with self.sessionmaker() as session:
            job = await session.get(JobRow, identifier)
        if job is None or job.status in (JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled):
            return
        # This run's token: every write of it requires started_at to be still this value.
        started = datetime.now(UTC)
        claimed = await set_job(
            self.sessionmaker, identifier, status=JobStatus.running.value, started_at=started, waiting=None,
            next_attempt_at=None, error=None,
        )  # fmt: skip
        if not claimed:
            return  # cancelled meanwhile
        job.started_at = started
        timings: dict[str, float] = {}
        # A folder of this run's own: a run started again beside a stopping one does not share it.
        work = self.settings.storage_path / "work" / job_id / uuid.uuid4().hex
        try:
            await self._analyse(job, work, timings)
        except JobCancelled:
            log.info("job run stopped: cancelled or started again", extra={"job_id": job_id})
        except UpstreamUnavailable as exc:
            attempts = job.attempts + 1
            delay = min(self.settings.retry_base_s * 2 ** min(attempts - 1, 30), self.settings.retry_max_s)
            waits = await set_job(
                self.sessionmaker, identifier, run=started, status=JobStatus.queued.value, attempts=attempts,
                waiting=f"{exc.detail} Attempt {attempts + 1} in {delay:g} s.",
                next_attempt_at=datetime.now(UTC) + timedelta(seconds=delay), timings=timings,
            )  # fmt: skip
            if waits:
                await self.enqueue(identifier, delay)
                log.info("job waits", extra={"job_id": job_id, "attempts": attempts, "delay_s": delay})
        except OncoStructError as exc:
            await self._fail(job, exc.detail, timings)
        except Exception:
            log.exception("job crashed", extra={"job_id": job_id})
            await self._fail(job, f"Internal error while running job {job_id}; see the service log.", timings)
        finally:
            await asyncio.to_thread(shutil.rmtree, work, True)

    async def _fail(self, job: JobRow, reason: str, timings: dict[str, float]) -> None:
        await set_job(
            self.sessionmaker, job.id, run=job.started_at, status=JobStatus.failed.value, error=reason,
            finished_at=datetime.now(UTC), timings=timings,
        )  # fmt: skip
        log.info("job failed", extra={"job_id": str(job.id)})

    @contextlib.asynccontextmanager
    async def _stage(self, job: JobRow, name: str, progress: float, timings: dict[str, float]) -> AsyncIterator[None]:
        # Cancellation is cooperative: a cancelled (or restarted) job's run stops before its next stage.
        if job.started_at is None or await superseded(self.sessionmaker, job.id, job.started_at):
            raise JobCancelled(job.id)
        await set_job(self.sessionmaker, job.id, run=job.started_at, stage=name, progress=progress)
        began = time.perf_counter()
        yield
        timings[name] = round(time.perf_counter() - began, 3)

    async def _analyse(self, job: JobRow, work: Path, timings: dict[str, float]) -> None:
        result: dict[str, Any] = dict(job.result or {})
        client = self.triton(job.model_version)
        async with self._stage(job, "checking model", 0.02, timings):
            info = await client.check_ready()
        async with self._stage(job, "checking series", 0.05, timings):
            metadata = await self.imaging.series_metadata(job.study_instance_uid, job.series_instance_uid)
            plan = check_series(metadata, job.series_instance_uid, self.settings.analysable_modalities)
        async with self._stage(job, "retrieving", 0.1, timings):
            await asyncio.to_thread(work.mkdir, parents=True, exist_ok=True)
            paths = await self.imaging.retrieve_series(job.study_instance_uid, job.series_instance_uid, work, "*")
            volume = await asyncio.to_thread(load_volume, paths, plan, job.series_instance_uid)
        async with self._stage(job, "inferring", 0.4, timings):
            prepared = await asyncio.to_thread(
                prepare_series, volume.voxels, plan.modality, info.size, mr_scaling=info.mr_scaling
            )
            output = await client.infer(prepared.slices)
            # Slices of the kind the model was not trained on (the head's end caps) are not analysed.
            analysed = enough_foreground(prepared.masks, self.settings.min_slice_foreground)
            maps = np.where(analysed[:, None, None, None], output.maps, np.float32(0))
            threshold = info.threshold if info.threshold is not None else self.settings.fallback_threshold
            residuals = None
            if self.settings.region_growth == "residual" and info.residual_threshold is not None:
                # The reconstruction travels back only for the slices a region could grow over.
                residuals = await self._residuals(client, prepared.slices, maps, prepared.masks, threshold)
        async with self._stage(job, "scoring", 0.6, timings):
            analysis = await asyncio.to_thread(
                self._score, maps, prepared.masks, analysed, volume, plan, threshold, residuals, info.residual_threshold
            )
        result.update(
            threshold=threshold, model=f"{info.name}@{info.version}", slices_not_analysed=analysis.not_analysed
        )
        await set_job(
            self.sessionmaker, job.id, run=job.started_at, series_score=analysis.series_score,
            slice_scores=analysis.scores, result=result,
        )  # fmt: skip
        identity = ResultIdentity(job.id, info.name, info.version, job.created_at)
        async with self._stage(job, "storing results", 0.7, timings):
            await self._store_outputs(job, volume, analysis, identity, threshold, result)
        async with self._stage(job, "proposing", 0.9, timings):
            await self._propose(job, plan, volume, analysis, identity, result)
        await set_job(
            self.sessionmaker, job.id, run=job.started_at, status=JobStatus.succeeded.value, stage="done",
            progress=1.0, result=result, finished_at=datetime.now(UTC), timings=timings,
        )  # fmt: skip
        log.info("job succeeded", extra={"job_id": str(job.id), "regions": len(analysis.regions)})

    async def _residuals(
        self,
        client: TritonModelClient,
        slices: np.ndarray[Any, np.dtype[np.float32]],
        maps: np.ndarray[Any, np.dtype[np.float32]],
        masks: np.ndarray[Any, np.dtype[np.bool_]],
        threshold: float,
    ) -> np.ndarray[Any, np.dtype[np.float32]]:
        """|input − reconstruction| on the slices regions could grow over (0 elsewhere)."""
        residuals = np.zeros_like(slices)
        wanted = growth_slices(maps[:, 0], masks, threshold, self.settings.region_low_fraction)
        if wanted.size:
            again = await client.infer(slices[wanted], reconstructions=True)
            residuals[wanted] = np.abs(slices[wanted] - again.reconstructions)
        return residuals

    def _score(
        self,
        maps: np.ndarray[Any, np.dtype[np.float32]],
        masks: np.ndarray[Any, np.dtype[np.bool_]],
        analysed: np.ndarray[Any, np.dtype[np.bool_]],
        volume: SourceVolume,
        plan: SeriesPlan,
        threshold: float,
        residuals: np.ndarray[Any, np.dtype[np.float32]] | None = None,
        residual_threshold: float | None = None,
    ) -> Analysis:
        per_slice = slice_scores(maps, masks, self.settings.anomaly_top_fraction)
        anomaly = restore_slices(maps[:, 0], plan.rows, plan.columns)
        foreground = restore_slices(masks.astype(np.float32), plan.rows, plan.columns, order=0) > 0.5
        grow = None
        if residuals is not None and residual_threshold is not None:
            grow = restore_slices(residuals[:, 0], plan.rows, plan.columns) > residual_threshold
        grows = grow is not None or self.settings.region_growth == "map"
        regions = find_regions(
            anomaly,
            foreground,
            threshold,
            volume.spacing_mm,
            self.settings.min_region_mm3,
            self.settings.max_proposals,
            self.settings.region_peak_fraction,
            self.settings.region_low_fraction if grows else 1.0,
            grow,
        )
        scores = [
            {"sop_instance_uid": str(dataset.SOPInstanceUID), "score": round(float(score), 6)}
            for dataset, score in zip(volume.datasets, per_slice, strict=True)
        ]
        return Analysis(anomaly, scores, round(series_score(per_slice).top_mean, 6), regions, int((~analysed).sum()))

    async def _store_outputs(
        self,
        job: JobRow,
        volume: SourceVolume,
        analysis: Analysis,
        identity: ResultIdentity,
        threshold: float,
        result: dict[str, Any],
    ) -> None:
        async def store(key: str, build: Callable[[], Any]) -> None:
            # Each object is recorded on the job as soon as it is stored: a retry builds only what is missing.
            if key in result:
                return
            dataset = await asyncio.to_thread(build)
            result[key] = await self._stow(job, dataset) if dataset is not None else None
            await set_job(self.sessionmaker, job.id, run=job.started_at, result=result)

        # Built and stored side by side: one object is encoded while the other travels to the archive. The
        # first failure cancels the other and is raised as itself, so the job's retry rules see what it was.
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(
                    store(
                        "parametric_map",
                        lambda: parametric_map(
                            volume.datasets, analysis.anomaly, identity, threshold, self.settings.map_encoding
                        ),
                    )
                )
                group.create_task(
                    store("segmentation", lambda: segmentation(volume.datasets, analysis.regions, identity))
                )
        except BaseExceptionGroup as failures:
            raise _first_leaf(failures) from None

    async def _stow(self, job: JobRow, dataset: Any) -> dict[str, Any]:
        stored = await self.imaging.store(job.study_instance_uid, [dataset])
        references = stored.get("00081199", {}).get("Value") or [{}]
        return {
            "series_uid": str(dataset.SeriesInstanceUID),
            "sop_instance_uid": str(dataset.SOPInstanceUID),
            "retrieve_url": first_value(references[0], RETRIEVE_URL),
        }

    async def _propose(
        self,
        job: JobRow,
        plan: SeriesPlan,
        volume: SourceVolume,
        analysis: Analysis,
        identity: ResultIdentity,
        result: dict[str, Any],
    ) -> None:
        if "proposals" in result:
            return
        regions = analysis.regions
        summary = [
            {
                "segment_number": number,
                "peak": round(region.peak, 6),
                "mean": round(region.mean, 6),
                "box": list(region.box),
                "voxels": region.voxels,
                "volume_mm3": region.volume_mm3,
            }
            for number, region in enumerate(regions, start=1)
        ]
        if job.project_id is None or not regions:
            result["proposals"] = summary
            if job.project_id is None:
                result["proposals_note"] = "No annotation project was named, so no ROI proposals were created."
            return
        items = [
            self._proposal(job, plan, volume, region, identity, number) for number, region in enumerate(regions, 1)
        ]
        try:
            response = await self.annotations.post("/annotations/bulk", json={"items": items})
        except httpx.HTTPError as exc:
            raise transport_error(exc, "The annotation service") from exc
        raise_for_upstream(response, "The annotation service")
        for entry, annotation_id in zip(summary, response.json()["ids"], strict=True):
            entry["annotation_id"] = annotation_id
        result["proposals"] = summary
        await set_job(self.sessionmaker, job.id, run=job.started_at, result=result)

    def _proposal(
        self, job: JobRow, plan: SeriesPlan, volume: SourceVolume, region: Region, identity: ResultIdentity, number: int
    ) -> dict[str, Any]:
        z0, z1, y0, y1, x0, x1 = region.box
        voxels = np.zeros((z1 - z0, plan.rows, plan.columns), dtype=np.uint8)
        voxels[:, y0:y1, x0:x1] = region.mask
        return {
            "project_id": str(job.project_id),
            "level": "roi",
            "label": self.settings.proposal_label,
            "value": self.settings.proposal_value,
            "study_uid": job.study_instance_uid,
            "series_uid": job.series_instance_uid,
            "geometry": {
                "type": "mask",
                "sop_instance_uids": [str(ds.SOPInstanceUID) for ds in volume.datasets[z0:z1]],
                "rows": plan.rows,
                "columns": plan.columns,
                "data": base64.b64encode(zlib.compress(voxels.tobytes(), 6)).decode("ascii"),
            },
            "scores": {"anomaly_peak": round(region.peak, 6), "anomaly_mean": round(region.mean, 6)},
            "status": "proposed",
            "author": identity.model,
            "client_key": f"reconstruction:{job.id}:{number}",
        }


__all__ = ["QUEUE", "JobRunner", "ModelInfo"]


def _first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The first exception inside a (possibly nested) exception group."""
    first = group.exceptions[0]
    return _first_leaf(first) if isinstance(first, BaseExceptionGroup) else first
