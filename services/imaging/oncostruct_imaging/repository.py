"""SQL of the imaging index: storing instances, finding them for WADO-RS, deleting them."""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
from sqlalchemy import delete, func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from oncostruct_shared.errors import NotFound

from .models import InstanceRow, PatientRow, SeriesRow, StudyRow
from .parsing import ParsedInstance


@dataclass(frozen=True)
class StoredInstance:
    """An instance already in the index (for the duplicate check)."""

    pk: int
    series_pk: int
    content_sha256: str
    storage_key: str


async def find_stored(session: AsyncSession, sop_instance_uid: str, *, lock: bool = False) -> StoredInstance | None:
    """The stored instance with this SOP Instance UID, if any (``lock``: FOR UPDATE)."""
    query = select(InstanceRow.pk, InstanceRow.series_pk, InstanceRow.content_sha256, InstanceRow.storage_key).where(
        InstanceRow.sop_instance_uid == sop_instance_uid
    )
    if lock:
        query = query.with_for_update()
    row = (await session.execute(query)).first()
    return StoredInstance(row.pk, row.series_pk, row.content_sha256, row.storage_key) if row else None


async def find_stored_many(pool: asyncpg.Pool, sop_instance_uids: list[str]) -> dict[str, StoredInstance]:
    """The stored instances among these SOP Instance UIDs, by UID (one statement on the asyncpg pool)."""
    if not sop_instance_uids:
        return {}
    rows = await pool.fetch(
        "SELECT sop_instance_uid, pk, series_pk, content_sha256, storage_key FROM instance "
        "WHERE sop_instance_uid = ANY($1::text[])",
        sop_instance_uids,
    )
    return {row[0]: StoredInstance(row[1], row[2], row[3], row[4]) for row in rows}


async def _upsert_patient(session: AsyncSession, parsed: ParsedInstance) -> int:
    values = parsed.patient
    statement = insert(PatientRow).values(**values)
    upsert = statement.on_conflict_do_update(
        constraint="uq_patient_id_issuer",
        set_={key: statement.excluded[key] for key in values if key not in ("patient_id", "issuer_of_patient_id")}
        | {"updated_at": func.now()},
    ).returning(PatientRow.pk)
    return int((await session.execute(upsert)).scalar_one())


async def _upsert_by_uid(session: AsyncSession, row: type[StudyRow] | type[SeriesRow], values: dict[str, Any]) -> int:
    """Insert a study or series row, or touch the existing one; return its primary key.

    The first instance sets the attributes; later ones only touch the timestamp (the row lock
    this takes also serialises concurrent first instances of the same study or series).
    """
    uid_column = StudyRow.study_instance_uid if row is StudyRow else SeriesRow.series_instance_uid
    upsert = (
        insert(row)
        .values(**values)
        .on_conflict_do_update(index_elements=[uid_column], set_={"updated_at": func.now()})
        .returning(row.pk)
    )
    return int((await session.execute(upsert)).scalar_one())


async def _upsert_study(session: AsyncSession, parsed: ParsedInstance, patient_pk: int) -> int:
    values = {"study_instance_uid": parsed.study_instance_uid, "patient_pk": patient_pk}
    return await _upsert_by_uid(session, StudyRow, {**values, "attributes": parsed.study_attributes, **parsed.study})


async def _upsert_series(session: AsyncSession, parsed: ParsedInstance, study_pk: int) -> int:
    values = {"series_instance_uid": parsed.series_instance_uid, "study_pk": study_pk}
    return await _upsert_by_uid(session, SeriesRow, {**values, "attributes": parsed.series_attributes, **parsed.series})


def _instance_values(parsed: ParsedInstance, series_pk: int, key: str, size: int, sha256: str) -> dict[str, Any]:
    return {
        "sop_instance_uid": parsed.sop_instance_uid,
        "series_pk": series_pk,
        "storage_key": key,
        "size": size,
        "content_sha256": sha256,
        "frames": parsed.frames,
        "bulkdata": parsed.bulkdata,
        "metadata_json": parsed.metadata_json,
        **parsed.instance,
    }


async def index_instance(
    session: AsyncSession, parsed: ParsedInstance, *, key: str, size: int, sha256: str, replace: bool
) -> tuple[str, str | None]:
    """Insert (or, with ``replace``, overwrite) the index rows of one stored file.

    Returns ``(outcome, old storage key)`` where outcome is ``stored``,
    ``identical`` (same content already stored), ``replaced`` or ``conflict``
    (different content and ``replace`` is off). The caller commits.
    """
    patient_pk = await _upsert_patient(session, parsed)
    study_pk = await _upsert_study(session, parsed, patient_pk)
    series_pk = await _upsert_series(session, parsed, study_pk)
    values = _instance_values(parsed, series_pk, key, size, sha256)
    inserted = (
        await session.execute(
            insert(InstanceRow)
            .values(**values)
            .on_conflict_do_nothing(index_elements=[InstanceRow.sop_instance_uid])
            .returning(InstanceRow.pk)
        )
    ).scalar_one_or_none()
    if inserted is not None:
        return "stored", None
    existing = await find_stored(session, parsed.sop_instance_uid, lock=True)
    assert existing is not None  # the conflicting row is there and now locked
    if existing.content_sha256 == sha256:
        return "identical", None
    if not replace:
        return "conflict", None
    await session.execute(
        update(InstanceRow).where(InstanceRow.pk == existing.pk).values(**values, updated_at=datetime.now(UTC))
    )
    if existing.series_pk != series_pk:  # the newer content moved the instance to another series
        await _drop_empty_parents(session, {existing.series_pk})
    return "replaced", existing.storage_key


@dataclass(frozen=True)
class NewFile:
    """A published file to index."""

    parsed: ParsedInstance
    key: str
    size: int
    sha256: str


_PATIENT_COLUMNS = (
    "patient_id",
    "issuer_of_patient_id",
    "name_alphabetic",
    "name_ideographic",
    "name_phonetic",
    "birth_date",
    "sex",
)
_STUDY_COLUMNS = (
    "study_date",
    "study_time",
    "accession_number",
    "study_id",
    "study_description",
    "referring_alphabetic",
    "referring_ideographic",
    "referring_phonetic",
)
_SERIES_COLUMNS = (
    "modality",
    "series_number",
    "series_description",
    "body_part_examined",
    "pps_start_date",
    "pps_start_time",
    "scheduled_procedure_step_ids",
    "requested_procedure_ids",
)
#: Per-instance columns sent as arrays (unnest), with their array types; frames and bulkdata as JSON text.
_INSTANCE_ARRAYS = (
    ("sop_instance_uid", "text"),
    ("storage_key", "text"),
    ("size", "bigint"),
    ("content_sha256", "text"),
    ("frames", "text"),
    ("bulkdata", "text"),
    ("metadata", "text"),
    ("sop_class_uid", "text"),
    ("instance_number", "int"),
    ("transfer_syntax_uid", "text"),
    ("rows", "int"),
    ("columns", "int"),
    ("bits_allocated", "int"),
    ("number_of_frames", "int"),
)


def _numbered(names: tuple[str, ...], start: int) -> str:
    return ", ".join(f"${start + index}" for index in range(len(names)))


def _insert_series_sql() -> str:
    patient_params = _numbered(_PATIENT_COLUMNS, 1)
    study_start = len(_PATIENT_COLUMNS) + 1  # then: study UID, attributes, study columns
    series_start = study_start + 2 + len(_STUDY_COLUMNS)  # then: series UID, attributes, series columns
    arrays_start = series_start + 2 + len(_SERIES_COLUMNS)
    updated = ", ".join(f"{column} = EXCLUDED.{column}" for column in _PATIENT_COLUMNS[2:])
    arrays = ", ".join(f"${arrays_start + index}::{kind}[]" for index, (_, kind) in enumerate(_INSTANCE_ARRAYS))
    names = ", ".join(name for name, _ in _INSTANCE_ARRAYS)
    values = ", ".join(
        f"u.{name}::jsonb" if name in ("frames", "bulkdata") else f"u.{name}" for name, _ in _INSTANCE_ARRAYS
    )
    return (
        f"WITH p AS (INSERT INTO patient ({', '.join(_PATIENT_COLUMNS)}) VALUES ({patient_params}) "  # noqa: S608
        f"ON CONFLICT ON CONSTRAINT uq_patient_id_issuer DO UPDATE SET {updated}, updated_at = now() RETURNING pk), "
        f"st AS (INSERT INTO study (study_instance_uid, patient_pk, attributes, {', '.join(_STUDY_COLUMNS)}) "
        f"SELECT ${study_start}, p.pk, ${study_start + 1}::jsonb, {_numbered(_STUDY_COLUMNS, study_start + 2)} FROM p "
        "ON CONFLICT (study_instance_uid) DO UPDATE SET updated_at = now() RETURNING pk), "
        f"se AS (INSERT INTO series (series_instance_uid, study_pk, attributes, {', '.join(_SERIES_COLUMNS)}) "
        f"SELECT ${series_start}, st.pk, ${series_start + 1}::jsonb, {_numbered(_SERIES_COLUMNS, series_start + 2)} "
        "FROM st ON CONFLICT (series_instance_uid) DO UPDATE SET updated_at = now() RETURNING pk) "
        f"INSERT INTO instance (series_pk, {names}) SELECT se.pk, {values} "
        f"FROM se CROSS JOIN unnest({arrays}) AS u({names}) "
        "ON CONFLICT (sop_instance_uid) DO NOTHING RETURNING sop_instance_uid"
    )


#: One series' new instances, with their patient, study and series rows, in one statement.
_INSERT_SERIES_SQL = _insert_series_sql()


def _series_arguments(files: list[NewFile]) -> list[Any]:
    first = files[0].parsed
    arguments: list[Any] = [first.patient.get(column) for column in _PATIENT_COLUMNS]
    arguments += [first.study_instance_uid, first.study_attributes]
    arguments += [first.study.get(column) for column in _STUDY_COLUMNS]
    arguments += [first.series_instance_uid, first.series_attributes]
    arguments += [first.series.get(column) for column in _SERIES_COLUMNS]
    rows = [_instance_values(item.parsed, 0, item.key, item.size, item.sha256) for item in files]
    for name, _ in _INSTANCE_ARRAYS:
        if name in ("frames", "bulkdata"):
            arguments.append([None if row[name] is None else json.dumps(row[name]) for row in rows])
        else:
            arguments.append([row["metadata_json" if name == "metadata" else name] for row in rows])
    return arguments


@dataclass(frozen=True)
class QueuedJob:
    """A procrastinate job to insert with SQL: queue, task, queueing lock, arguments, delay (None: now)."""

    queue: str
    task: str
    queueing_lock: str
    args: dict[str, Any]
    delay_s: float | None


def _insert_jobs_sql(queue_schema: str) -> str:
    # procrastinate_defer_jobs_v1 is this INSERT; ON CONFLICT makes "a job with this queueing lock is
    # waiting already" a no-op instead of an error that would abort the store's transaction.
    return (
        f'INSERT INTO "{queue_schema}".procrastinate_jobs '  # noqa: S608 - a validated schema name
        "(queue_name, task_name, priority, lock, queueing_lock, args, scheduled_at) "
        "SELECT j.queue, j.task, 0, NULL, j.lock, j.args::jsonb, "
        "CASE WHEN j.delay IS NULL THEN NULL ELSE now() + j.delay * interval '1 second' END "
        "FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::float8[]) "
        "AS j(queue, task, lock, args, delay) ON CONFLICT (queueing_lock) WHERE status = 'todo' DO NOTHING"
    )


async def insert_new_instances(
    pool: asyncpg.Pool, files: list[NewFile], jobs: Sequence[QueuedJob] = (), queue_schema: str = "oncostruct_jobs"
) -> set[str]:
    """Insert the index rows of new instances in one transaction, one statement per series (its patient,
    study and series rows upserted in the same statement); returns the SOP Instance UIDs inserted.

    ``jobs`` (the store's follow-up jobs) go into the queue in the same transaction when anything was
    inserted: no committed store without them, no jobs for a store that failed. A UID already in the
    index is left alone (not returned): the caller takes the careful path of :func:`index_instance`.
    """
    by_series: dict[str, list[NewFile]] = {}
    for item in files:
        by_series.setdefault(item.parsed.series_instance_uid, []).append(item)
    inserted: set[str] = set()
    async with pool.acquire() as connection, connection.transaction():
        for group in by_series.values():
            rows = await connection.fetch(_INSERT_SERIES_SQL, *_series_arguments(group))
            inserted.update(row[0] for row in rows)
        if inserted and jobs:
            # procrastinate's triggers name its tables unqualified: its schema first, for this transaction.
            await connection.execute(
                "SELECT set_config('search_path', $1 || ', ' || current_setting('search_path'), true)",
                f'"{queue_schema}"',
            )
            await connection.execute(
                _insert_jobs_sql(queue_schema),
                [job.queue for job in jobs],
                [job.task for job in jobs],
                [job.queueing_lock for job in jobs],
                [json.dumps(job.args) for job in jobs],
                [job.delay_s for job in jobs],
            )
    return inserted


async def _drop_empty_parents(session: AsyncSession, series_pks: set[int]) -> None:
    """Remove the given series if they lost their last instance, then emptied studies and patients."""
    no_instances = ~select(InstanceRow.pk).where(InstanceRow.series_pk == SeriesRow.pk).exists()
    studies = set(
        (
            await session.execute(
                delete(SeriesRow).where(SeriesRow.pk.in_(series_pks), no_instances).returning(SeriesRow.study_pk)
            )
        ).scalars()
    )
    if not studies:
        return
    no_series = ~select(SeriesRow.pk).where(SeriesRow.study_pk == StudyRow.pk).exists()
    patients = set(
        (
            await session.execute(
                delete(StudyRow).where(StudyRow.pk.in_(studies), no_series).returning(StudyRow.patient_pk)
            )
        ).scalars()
    )
    if patients:
        no_studies = ~select(StudyRow.pk).where(StudyRow.patient_pk == PatientRow.pk).exists()
        await session.execute(delete(PatientRow).where(PatientRow.pk.in_(patients), no_studies))


# --- reading, for WADO-RS ------------------------------------------------------


@dataclass(frozen=True)
class InstanceFile:
    """What WADO-RS needs to serve one instance without parsing it."""

    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    storage_key: str
    size: int
    content_sha256: str
    number_of_frames: int | None
    frames: list[list[list[int]]] | None
    bulkdata: dict[str, list[int]]
    metadata_json: str | None


def _instance_files_sql(series: bool, instance: bool, with_metadata: bool, with_layout: bool) -> str:
    layout = "i.frames, i.bulkdata" if with_layout else "NULL::jsonb, NULL::jsonb"
    metadata = "i.metadata" if with_metadata else "NULL::text"
    where = ["st.study_instance_uid = $1"]
    if series:
        where.append("se.series_instance_uid = $2")
    if instance:
        where.append(f"i.sop_instance_uid = ${len(where) + 1}")
    columns = (
        "st.study_instance_uid, se.series_instance_uid, i.sop_instance_uid, i.sop_class_uid, i.transfer_syntax_uid, "
        f"i.storage_key, i.size, i.content_sha256, i.number_of_frames, {layout}, {metadata}"
    )
    tables = "instance i JOIN series se ON i.series_pk = se.pk JOIN study st ON se.study_pk = st.pk"
    order = "se.series_number NULLS LAST, se.pk, i.instance_number NULLS LAST, i.sop_instance_uid"
    return f"SELECT {columns} FROM {tables} WHERE {' AND '.join(where)} ORDER BY {order}"  # noqa: S608 - fixed SQL


#: The statement of every (series?, instance?, metadata?, layout?) combination, built once.
_INSTANCE_FILES_SQL = {flags: _instance_files_sql(*flags) for flags in itertools.product((False, True), repeat=4)}


async def find_instances(
    pool: asyncpg.Pool,
    study: str,
    series: str | None = None,
    instance: str | None = None,
    *,
    with_metadata: bool = False,
    with_layout: bool = False,
) -> list[InstanceFile]:
    """The instances of a study, series or one instance, in series/instance number order; 404 if none.

    One statement on the plain asyncpg pool (WADO-RS reads are the archive's hottest path).
    """
    sql = _INSTANCE_FILES_SQL[(series is not None, instance is not None, with_metadata, with_layout)]
    arguments = [uid for uid in (study, series, instance) if uid is not None]
    rows = await pool.fetch(sql, *arguments)
    if not rows:
        what = "instance" if instance else "series" if series else "study"
        raise NotFound(f"No such {what} in this archive.")
    return [
        InstanceFile(
            row[0],
            row[1],
            row[2],
            row[3],
            row[4],
            row[5],
            row[6],
            row[7],
            row[8],
            frames=row[9],
            bulkdata=row[10] or {},
            metadata_json=row[11],
        )
        for row in rows
    ]


async def delete_instances(
    session: AsyncSession, study: str, series: str | None = None, instance: str | None = None
) -> list[str]:
    """Delete a study, series or instance from the index; return the storage keys to remove. 404 if none."""
    selected = (
        select(InstanceRow.pk, InstanceRow.series_pk, InstanceRow.storage_key)
        .join(SeriesRow, InstanceRow.series_pk == SeriesRow.pk)
        .join(StudyRow, SeriesRow.study_pk == StudyRow.pk)
        .where(StudyRow.study_instance_uid == study)
    )
    if series is not None:
        selected = selected.where(SeriesRow.series_instance_uid == series)
    if instance is not None:
        selected = selected.where(InstanceRow.sop_instance_uid == instance)
    rows = (await session.execute(selected.with_for_update(of=InstanceRow))).all()
    if not rows:
        what = "instance" if instance else "series" if series else "study"
        raise NotFound(f"No such {what} in this archive.")
    await session.execute(delete(InstanceRow).where(InstanceRow.pk.in_([row.pk for row in rows])))
    await _drop_empty_parents(session, {row.series_pk for row in rows})
    return [row.storage_key for row in rows]
