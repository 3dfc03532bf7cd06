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
import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from oncostruct_shared.db import Database
from oncostruct_shared.storage import FilesystemObjectStore, ObjectStore, StorageError, fsync_path

from . import parsing
from .config import Settings
from .repository import (
    NewFile,
    QueuedJob,
    StoredInstance,
    find_stored,
    find_stored_many,
    index_instance,
    insert_new_instances,
)

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
    #: Its follow-up jobs (FHIR link, series-complete check) went into the queue with its index rows.
    queued: bool = False


class ParserPool:
    """Worker processes that parse stored files (``parse_processes`` of them; 0: threads).

    Parsing is pure Python under the GIL: in threads, the parts of one STOW-RS request queue for
    it behind each other and behind the event loop; in processes they run beside both.
    """

    def __init__(self, processes: int) -> None:
        self.processes = processes
        self._pool: ProcessPoolExecutor | None = None

    def _executor(self) -> Executor | None:
        if self.processes and self._pool is None:
            self._pool = ProcessPoolExecutor(
                self.processes,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_watch_parent,
                initargs=(os.getpid(),),
            )
        return self._pool

    async def start(self) -> None:
        """Start the processes and import the parser in each (first requests then pay nothing)."""
        executor = self._executor()
        if executor is not None:
            loop = asyncio.get_running_loop()
            await asyncio.gather(*(loop.run_in_executor(executor, _warm) for _ in range(self.processes)))

    async def parse(
        self, paths: list[Path], threshold: int, expected_study: str | None, flush: bool = False
    ) -> list[tuple[str, Any]]:
        """:func:`parse_file` of each path, in order: the paths split into one task per worker process
        (a task costs about a third of a millisecond of inter-process traffic; a small instance takes
        one to parse). In a thread without processes, or if the pool broke."""
        names = [str(path) for path in paths]
        executor = self._executor()
        if executor is not None and names:
            chunks = [names[start :: self.processes] for start in range(min(self.processes, len(names)))]
            loop = asyncio.get_running_loop()
            try:
                results = await asyncio.gather(
                    *(
                        loop.run_in_executor(executor, parse_files, chunk, threshold, expected_study, flush)
                        for chunk in chunks
                    )
                )
            except BrokenProcessPool:  # a worker died (killed, out of memory): new pool; these files in a thread
                log.error("parser process pool broke; restarting it")
                self.close(wait=False)
            else:
                ordered: list[tuple[str, Any]] = [("", None)] * len(names)
                for start, chunk_results in enumerate(results):
                    ordered[start :: len(chunks)] = chunk_results
                return ordered
        return await asyncio.to_thread(parse_files, names, threshold, expected_study, flush)

    def close(self, *, wait: bool = True) -> None:
        """Stop the processes."""
        if self._pool is not None:
            pool, self._pool = self._pool, None
            pool.shutdown(wait=wait, cancel_futures=True)


def _warm() -> None:
    """Runs in each worker once: the imports are done by then."""


def _watch_parent(parent: int) -> None:
    """A worker ends itself when the server process is gone (even killed with SIGKILL)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def parse_files(
    paths: list[str], threshold: int, expected_study: str | None, flush: bool = False
) -> list[tuple[str, Any]]:
    """:func:`parse_file` of each path (one task of a worker process); with ``flush``, each parsed file's
    contents are also flushed to disk here (fsync), beside the server process instead of in it."""
    results = [parse_file(path, threshold, expected_study) for path in paths]
    if flush:
        for path, (outcome, _) in zip(paths, results, strict=True):
            if outcome == "parsed":
                fsync_path(path)
    return results


def parse_file(path: str, threshold: int, expected_study: str | None) -> tuple[str, Any]:
    """Add a missing preamble and parse (in a worker process): ``("parsed", (ParsedInstance, (size, sha256)
    or None))`` or ``("rejected", (reason, detail, SOP Class UID, SOP Instance UID))``."""
    try:
        rewritten = parsing.add_missing_preamble(Path(path))
        parsed = parsing.parse_instance(Path(path), bulkdata_threshold=threshold, expected_study=expected_study)
    except parsing.InstanceRejected as rejected:
        return "rejected", (rejected.reason, rejected.detail, rejected.sop_class_uid, rejected.sop_instance_uid)
    except Exception as exc:
        return "rejected", (parsing.CANNOT_UNDERSTAND, f"Not a readable DICOM instance ({type(exc).__name__}).", "", "")
    return "parsed", (parsed, rewritten)


@dataclass(frozen=True)
class IngestContext:
    """What storing needs: settings, the object store, the index and the parser processes."""

    settings: Settings
    store: ObjectStore
    database: Database
    parsers: ParserPool = field(default_factory=lambda: ParserPool(0))
    #: The follow-up jobs of a store of these studies and series (queued in the store's transaction).
    follow_up: Callable[[set[str], set[str]], list[QueuedJob]] | None = None

    @property
    def sessionmaker(self) -> async_sessionmaker[AsyncSession]:
        """ORM sessions on the index (the careful one-by-one paths)."""
        return self.database.sessionmaker


def _storage_key(parsed: parsing.ParsedInstance, sha256: str) -> str:
    return (
        f"studies/{parsed.study_instance_uid}/series/{parsed.series_instance_uid}/"
        f"{parsed.sop_instance_uid}.{sha256[:16]}.dcm"
    )


async def _parse(
    context: IngestContext, files: list[tuple[Path, int, str]], expected_study: str | None, flush: bool = False
) -> list[tuple[parsing.ParsedInstance, int, str] | PartResult]:
    """Parse spooled files (adding missing preambles; with ``flush``, fsynced by the parser too); a failed
    :class:`PartResult` for bad content."""
    threshold = context.settings.bulkdata_threshold_bytes
    outcomes = await context.parsers.parse([path for path, _, _ in files], threshold, expected_study, flush)
    return [
        _parsed(outcome, value, size, sha256)
        for (_, size, sha256), (outcome, value) in zip(files, outcomes, strict=True)
    ]


def _parsed(outcome: str, value: Any, size: int, sha256: str) -> tuple[parsing.ParsedInstance, int, str] | PartResult:
    if outcome == "rejected":
        reason, detail, sop_class, sop_instance = value
        return PartResult(sop_class, sop_instance, failure=reason, detail=detail)
    parsed, rewritten = value
    if rewritten is not None:
        size, sha256 = rewritten
    return parsed, size, sha256


def _result(parsed: parsing.ParsedInstance) -> PartResult:
    return PartResult(
        parsed.sop_class_uid, parsed.sop_instance_uid, parsed.study_instance_uid, parsed.series_instance_uid
    )


def _duplicate(
    context: IngestContext, parsed: parsing.ParsedInstance, sha256: str, existing: StoredInstance | None
) -> PartResult | None:
    """The result when the UID is stored already: success for the same content, a failure under ``reject``."""
    if existing is not None and existing.content_sha256 == sha256:
        return _result(parsed)  # the same content again: already stored (idempotent)
    if existing is not None and context.settings.duplicate_policy == "reject":
        result = _result(parsed)
        result.failure, result.detail = parsing.DUPLICATE_SOP_INSTANCE, "different content under a stored UID"
        return result
    return None


async def _settle(context: IngestContext, file: NewFile, outcome: str, old_key: str | None) -> PartResult:
    """Clean up after indexing: a conflicting file goes, a replaced one's old file goes."""
    result = _result(file.parsed)
    if outcome == "conflict":
        await context.store.delete(file.key)
        result.failure, result.detail = parsing.DUPLICATE_SOP_INSTANCE, "different content under a stored UID"
    elif outcome == "replaced" and old_key and old_key != file.key:
        await context.store.delete(old_key)
    return result


async def ingest_file(
    context: IngestContext, path: Path, size: int, sha256: str, expected_study: str | None = None
) -> PartResult:
    """Store the DICOM file at ``path`` (``size`` bytes, SHA-256 ``sha256``); never raises for bad content."""
    settings, store = context.settings, context.store
    (parsed_file,) = await _parse(context, [(path, size, sha256)], expected_study)
    if isinstance(parsed_file, PartResult):
        return parsed_file
    parsed, size, sha256 = parsed_file
    async with context.sessionmaker() as session:
        existing = await find_stored(session, parsed.sop_instance_uid)
    duplicate = _duplicate(context, parsed, sha256, existing)
    if duplicate is not None:
        return duplicate
    file = NewFile(parsed, _storage_key(parsed, sha256), size, sha256)
    try:
        await store.put_file(file.key, path)
    except StorageError as exc:
        log.error("object store write failed", extra={"error": exc.detail})
        result = _result(parsed)
        result.failure, result.detail = parsing.OUT_OF_RESOURCES, "object store write failed"
        return result
    try:
        async with context.sessionmaker() as session, session.begin():
            outcome, old_key = await index_instance(
                session, parsed, key=file.key, size=size, sha256=sha256, replace=settings.duplicate_policy == "replace"
            )
    except Exception as exc:
        # The file stays (an unreferenced object is harmless; one referenced by a racing request must not go).
        log.error("indexing failed", exc_info=exc)
        result = _result(parsed)
        result.failure, result.detail = parsing.PROCESSING_FAILURE, "indexing failed"
        return result
    return await _settle(context, file, outcome, old_key)


async def ingest_files(
    context: IngestContext, files: list[tuple[Path, int, str]], expected_study: str | None = None
) -> list[PartResult]:
    """Store several spooled files (one STOW-RS request) with group commit; results in order.

    Each file is parsed and published (flushed) as in :func:`ingest_file`, but their folders are
    flushed once and their index rows go in one transaction (one statement per series on the
    asyncpg pool): one commit for the request instead of one per instance. The instances still
    become visible only after their files are on disk. If that transaction fails, each file is
    indexed on its own, so one bad instance cannot fail the others.
    """
    # A filesystem store that flushes: the parser processes flush the spooled files, the store renames.
    flush = isinstance(context.store, FilesystemObjectStore) and context.store.fsync
    parsed_files = await _parse(context, files, expected_study, flush)
    results: list[PartResult | None] = [None] * len(files)
    uids = [p[0].sop_instance_uid for p in parsed_files if not isinstance(p, PartResult)]
    existing = await find_stored_many(await context.database.driver_pool(), uids)
    batch: list[tuple[int, NewFile, Path]] = []
    later: list[int] = []  # a UID sent twice in the request: its repeats go one by one, after the batch
    seen: set[str] = set()
    for index, parsed_file in enumerate(parsed_files):
        if isinstance(parsed_file, PartResult):
            results[index] = parsed_file
            continue
        parsed, size, sha256 = parsed_file
        if parsed.sop_instance_uid in seen:
            later.append(index)
            continue
        seen.add(parsed.sop_instance_uid)
        duplicate = _duplicate(context, parsed, sha256, existing.get(parsed.sop_instance_uid))
        if duplicate is not None:
            results[index] = duplicate
            continue
        batch.append((index, NewFile(parsed, _storage_key(parsed, sha256), size, sha256), files[index][0]))
    published = await context.store.put_files([(file.key, path) for _, file, path in batch], flushed=flush)
    ready: list[tuple[int, NewFile]] = []
    for (index, file, _), written in zip(batch, published, strict=True):
        if isinstance(written, StorageError):
            log.error("object store write failed", extra={"error": written.detail})
            result = _result(file.parsed)
            result.failure, result.detail = parsing.OUT_OF_RESOURCES, "object store write failed"
            results[index] = result
        else:
            ready.append((index, file))
    replace = context.settings.duplicate_policy == "replace"
    inserted: set[str] = set()
    try:
        outcomes: list[tuple[str, str | None]] = []
        if ready:  # nothing new (every instance a duplicate or failed): no transaction
            pool = await context.database.driver_pool()
            new = [file.parsed for _, file in ready]
            jobs = (
                context.follow_up({p.study_instance_uid for p in new}, {p.series_instance_uid for p in new})
                if context.follow_up is not None
                else []
            )
            inserted = await insert_new_instances(
                pool, [file for _, file in ready], jobs, context.settings.queue_schema
            )
            for _, file in ready:  # UIDs present already (a race with another request): the careful path
                if file.parsed.sop_instance_uid in inserted:
                    outcomes.append(("stored", None))
                else:
                    async with context.sessionmaker() as session, session.begin():
                        outcomes.append(
                            await index_instance(
                                session, file.parsed, key=file.key, size=file.size, sha256=file.sha256, replace=replace
                            )
                        )
    except Exception as exc:
        log.warning("group indexing failed; indexing one by one", exc_info=exc)
        outcomes, inserted = [], set()
        for _, file in ready:
            try:
                async with context.sessionmaker() as session, session.begin():
                    outcomes.append(
                        await index_instance(
                            session, file.parsed, key=file.key, size=file.size, sha256=file.sha256, replace=replace
                        )
                    )
            except Exception as single:
                log.error("indexing failed", exc_info=single)
                outcomes.append(("failed", None))
    for (index, file), (outcome, old_key) in zip(ready, outcomes, strict=True):
        if outcome == "failed":
            result = _result(file.parsed)
            result.failure, result.detail = parsing.PROCESSING_FAILURE, "indexing failed"
            results[index] = result
        else:
            settled = await _settle(context, file, outcome, old_key)
            settled.queued = outcome == "stored" and file.parsed.sop_instance_uid in inserted
            results[index] = settled
    for index in later:
        path, size, sha256 = files[index]
        results[index] = await ingest_file(context, path, size, sha256, expected_study)
    return [result for result in results if result is not None]
