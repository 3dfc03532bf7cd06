"""Pull import: copy studies from an upstream PACS over DICOMweb into this archive.

The studies are named by UID or found by a QIDO-RS query on the source. The work is a
durable job (``pull_import`` on the ``imaging`` queue), retried with backoff when the source
fails; it is resumable and idempotent: studies already pulled are skipped, and so is every
instance whose SOP Instance UID is already stored. Progress is kept on the import's row.

QIDO-RS searches on the source use dicomweb-client; each instance is retrieved with WADO-RS
(``transfer-syntax=*``) and streamed into the archive byte for byte, as stored upstream.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import procrastinate
import requests
from dicomweb_client import DICOMwebClient
from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert

from oncostruct_shared.errors import UpstreamError
from oncostruct_shared.http import raise_for_upstream
from oncostruct_shared.multipart import parse_media_type, spool_multipart

from .config import PacsSource, Settings
from .ingest import IngestContext, PartResult, ingest_file
from .models import PullImportRow, PullImportStudyRow
from .repository import find_stored

log = logging.getLogger("oncostruct.imaging.pull")
STUDY_UID, SERIES_UID, SOP_UID = "0020000D", "0020000E", "00080018"


def _value(dataset: dict[str, Any], tag: str) -> str:
    return str((dataset.get(tag, {}).get("Value") or [""])[0])


def source_client(source: PacsSource) -> DICOMwebClient:
    """A dicomweb-client for the source, with its token and timeout."""
    session = requests.Session()
    if source.bearer_token is not None:
        session.headers["Authorization"] = f"Bearer {source.bearer_token.get_secret_value()}"
    client = DICOMwebClient(source.url, session=session, timeout=source.timeout_s)
    client.set_http_retry_params(retry=False)  # the job retries, with its own backoff and progress
    return client


class PullImports:
    """Runs pull imports as durable jobs."""

    def __init__(
        self,
        queue: procrastinate.App,
        ingest: IngestContext,
        settings: Settings,
        spool: Path,
        on_stored: Callable[[set[str], set[str]], Awaitable[None]],
    ) -> None:
        self.queue = queue
        self.ingest = ingest
        self.settings = settings
        self.spool = spool
        self.on_stored = on_stored
        retry = procrastinate.RetryStrategy(max_attempts=settings.pull_max_attempts, exponential_wait=2)
        queue.task(name="pull_import", queue="imaging", retry=retry, pass_context=False)(self.run)

    async def start(self, import_id: uuid.UUID) -> None:
        """Defer the job of a newly created import."""
        await self.queue.configure_task("pull_import", queue="imaging", queueing_lock=f"pull:{import_id}").defer_async(
            import_id=str(import_id)
        )

    async def _update(self, import_id: uuid.UUID, **values: Any) -> None:
        async with self.ingest.sessionmaker() as session, session.begin():
            await session.execute(
                update(PullImportRow)
                .where(PullImportRow.id == import_id)
                .values(**values, updated_at=datetime.now(UTC))
            )

    async def run(self, import_id: str) -> None:
        """The job: pull every study of the import that is not yet done."""
        identifier = uuid.UUID(import_id)
        async with self.ingest.sessionmaker() as session, session.begin():
            row = await session.get(PullImportRow, identifier, with_for_update=True)
            if row is None or row.status in ("succeeded", "failed"):
                return
            row.status, row.attempts, row.error = "running", row.attempts + 1, None
            attempt = row.attempts
            source_name, query = row.source, row.query
        source = self.settings.pacs_sources.get(source_name)
        if source is None:
            await self._update(identifier, status="failed", error=f"source {source_name!r} is no longer configured")
            return
        client = source_client(source)
        try:
            await self._pull(identifier, client, source, query)
        except Exception as exc:
            final = attempt >= self.settings.pull_max_attempts
            detail = f"{type(exc).__name__}: {str(exc)[:500]}"
            await self._update(identifier, status="failed" if final else "retrying", error=detail)
            log.warning("pull import attempt failed", extra={"attempt": attempt, "final": final})
            raise
        await self._update(identifier, status="succeeded")

    async def _pull(
        self, identifier: uuid.UUID, client: DICOMwebClient, source: PacsSource, query: dict[str, Any] | None
    ) -> None:
        if query:
            studies = await asyncio.to_thread(client.search_for_studies, search_filters=query, get_remaining=True)
            uids = [_value(study, STUDY_UID) for study in studies]
            async with self.ingest.sessionmaker() as session, session.begin():
                if uids:
                    await session.execute(
                        insert(PullImportStudyRow)
                        .values([{"import_id": identifier, "study_instance_uid": uid} for uid in uids])
                        .on_conflict_do_nothing()
                    )
                total = await session.scalar(select(func.count()).where(PullImportStudyRow.import_id == identifier))
                await session.execute(
                    update(PullImportRow).where(PullImportRow.id == identifier).values(studies_total=total)
                )
        async with self.ingest.sessionmaker() as session:
            pending = list(
                (
                    await session.scalars(
                        select(PullImportStudyRow.study_instance_uid).where(
                            PullImportStudyRow.import_id == identifier, PullImportStudyRow.done.is_(False)
                        )
                    )
                ).all()
            )
        for study_uid in pending:
            await self._pull_study(identifier, client, source, study_uid)

    async def _retrieve_and_store(
        self, source: PacsSource, study_uid: str, series_uid: str, sop_uid: str
    ) -> PartResult:
        """WADO-RS retrieve one instance as stored upstream (PS3.18 §10.4), streamed to a spool file, and store it.

        The bytes are kept exactly as the source sent them (no decode and re-encode).
        """
        url = f"{source.url.rstrip('/')}/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}"
        headers = {"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'}
        if source.bearer_token is not None:
            headers["Authorization"] = f"Bearer {source.bearer_token.get_secret_value()}"
        async with (
            httpx.AsyncClient(timeout=source.timeout_s) as http,
            http.stream("GET", url, headers=headers) as response,
        ):
            if response.status_code == 406:  # sources that cannot send "as stored": take their default syntax
                await response.aclose()
                headers["Accept"] = 'multipart/related; type="application/dicom"'
                async with http.stream("GET", url, headers=headers) as fallback:
                    return await self._store_stream(fallback)
            return await self._store_stream(response)

    async def _store_stream(self, response: httpx.Response) -> PartResult:
        raise_for_upstream(response, "The source PACS")
        boundary = parse_media_type(response.headers.get("content-type", "")).params.get("boundary", "")
        if not boundary:
            raise UpstreamError("The source PACS answered without a multipart boundary.")
        parts = await spool_multipart(
            response.aiter_bytes(), boundary, lambda: self.spool / f"pull-{uuid.uuid4().hex}.part"
        )
        try:
            if len(parts) != 1:
                raise UpstreamError(f"The source PACS sent {len(parts)} parts for one instance.")
            part = parts[0]
            return await ingest_file(self.ingest, part.path, part.size, part.sha256)
        finally:
            for part in parts:
                part.path.unlink(missing_ok=True)

    async def _pull_study(
        self, identifier: uuid.UUID, client: DICOMwebClient, source: PacsSource, study_uid: str
    ) -> None:
        instances = await asyncio.to_thread(
            client.search_for_instances, study_instance_uid=study_uid, get_remaining=True
        )
        counts = {"instances_stored": 0, "instances_existing": 0, "instances_failed": 0}
        series_seen: set[str] = set()
        for instance in instances:
            series_uid, sop_uid = _value(instance, SERIES_UID), _value(instance, SOP_UID)
            async with self.ingest.sessionmaker() as session:
                if await find_stored(session, sop_uid) is not None:
                    counts["instances_existing"] += 1
                    continue
            result = await self._retrieve_and_store(source, study_uid, series_uid, sop_uid)
            if result.failure is None:
                counts["instances_stored"] += 1
                series_seen.add(series_uid)
            else:
                counts["instances_failed"] += 1
                log.info("pulled instance refused", extra={"reason": f"0x{result.failure:04X}"})
        async with self.ingest.sessionmaker() as session, session.begin():
            await session.execute(
                update(PullImportStudyRow)
                .where(PullImportStudyRow.import_id == identifier, PullImportStudyRow.study_instance_uid == study_uid)
                .values(done=True)
            )
            await session.execute(
                update(PullImportRow)
                .where(PullImportRow.id == identifier)
                .values(
                    studies_done=PullImportRow.studies_done + 1,
                    updated_at=datetime.now(UTC),
                    **{name: getattr(PullImportRow, name) + value for name, value in counts.items()},
                )
            )
        if series_seen:
            await self.on_stored({study_uid}, series_seen)
