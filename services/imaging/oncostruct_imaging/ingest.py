"""Storing one DICOM file: parse, publish in the object store, index — shared by STOW-RS and pull import.

Atomic per instance: the file is published (temp file, fsync, rename) before its index
rows are committed, so no half-written instance is ever visible, and an acknowledged
instance is on disk. Same SOP Instance UID again: identical content (SHA-256) is accepted
(idempotent); different content follows ``duplicate_policy`` (``reject``: FailureReason
0x0111, PS3.7 §C.4; ``replace``: the newer content wins).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from oncostruct_shared.storage import FilesystemObjectStore, StorageError

from . import parsing
from .config import Settings
from .repository import find_stored, index_instance

log = logging.getLogger("oncostruct.imaging.ingest")


@dataclass
class PartResult:
    """The outcome of one instance: stored (``failure`` None) or failed with a Failure Reason."""

    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str | None = None
    series_instance_uid: str | None = None
    failure: int | None = None
    detail: str = ""


@dataclass(frozen=True)
class IngestContext:
    """What storing needs: settings, the object store and the index's sessions."""

    settings: Settings
    store: FilesystemObjectStore
    sessionmaker: async_sessionmaker[AsyncSession]


def _storage_key(parsed: parsing.ParsedInstance, sha256: str) -> str:
    return (
        f"studies/{parsed.study_instance_uid}/series/{parsed.series_instance_uid}/"
        f"{parsed.sop_instance_uid}.{sha256[:16]}.dcm"
    )


async def ingest_file(
    context: IngestContext, path: Path, size: int, sha256: str, expected_study: str | None = None
) -> PartResult:
    """Store the DICOM file at ``path`` (``size`` bytes, SHA-256 ``sha256``); never raises for bad content."""
    settings, store = context.settings, context.store
    try:
        rewritten = await asyncio.to_thread(parsing.add_missing_preamble, path)
        if rewritten is not None:
            size, sha256 = rewritten
        parsed = await asyncio.to_thread(
            parsing.parse_instance,
            path,
            bulkdata_threshold=settings.bulkdata_threshold_bytes,
            expected_study=expected_study,
        )
    except parsing.InstanceRejected as rejected:
        return PartResult(
            rejected.sop_class_uid, rejected.sop_instance_uid, failure=rejected.reason, detail=rejected.detail
        )
    result = PartResult(
        parsed.sop_class_uid, parsed.sop_instance_uid, parsed.study_instance_uid, parsed.series_instance_uid
    )
    sessions = context.sessionmaker
    async with sessions() as session:
        existing = await find_stored(session, parsed.sop_instance_uid)
    if existing is not None and existing.content_sha256 == sha256:
        return result  # the same content again: already stored (idempotent)
    if existing is not None and settings.duplicate_policy == "reject":
        result.failure, result.detail = parsing.DUPLICATE_SOP_INSTANCE, "different content under a stored UID"
        return result
    key = _storage_key(parsed, sha256)
    try:
        await store.put_file(key, path)
    except StorageError as exc:
        log.error("object store write failed", extra={"error": exc.detail})
        result.failure, result.detail = parsing.OUT_OF_RESOURCES, "object store write failed"
        return result
    try:
        async with sessions() as session, session.begin():
            outcome, old_key = await index_instance(
                session,
                parsed,
                key=key,
                size=size,
                sha256=sha256,
                replace=settings.duplicate_policy == "replace",
            )
    except Exception as exc:
        # The file stays (an unreferenced object is harmless; one referenced by a racing request must not go).
        log.error("indexing failed", exc_info=exc)
        result.failure, result.detail = parsing.PROCESSING_FAILURE, "indexing failed"
        return result
    if outcome == "conflict":
        await store.delete(key)
        result.failure, result.detail = parsing.DUPLICATE_SOP_INSTANCE, "different content under a stored UID"
    elif outcome == "replaced" and old_key and old_key != key:
        await store.delete(old_key)
    return result
