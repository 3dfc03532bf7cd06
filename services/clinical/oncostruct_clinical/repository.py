"""SQL for the versioned FHIR resource store (http://hl7.org/fhir/R4/http.html#versioning).

Every write runs inside the caller's transaction and does three things
together: it locks and bumps the current row (``SELECT … FOR UPDATE``, so two
concurrent updates serialise and an ``If-Match`` loser sees the new version:
no lost update), appends the version to ``resource_history``, and replaces
the resource's search index rows. The caller commits (one request, or one
whole transaction Bundle).
"""

from __future__ import annotations

import uuid
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession

from oncostruct_shared.errors import Conflict, Gone, NotFound, PreconditionFailed

from .search.indexing import IndexRows, index_resource


def fhir_instant(moment: datetime) -> str:
    """Format a moment as a FHIR ``instant`` (milliseconds, explicit offset)."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds")


@dataclass
class StoredVersion:
    """One version of a resource as stored."""

    resource_type: str
    id: str
    version_id: int
    last_updated: datetime
    deleted: bool
    content: dict[str, Any] | None

    def require_live(self) -> dict[str, Any]:
        """The content; :class:`Gone` if this version is a deletion."""
        if self.deleted or self.content is None:
            raise Gone(f"{self.resource_type}/{self.id} was deleted (version {self.version_id}).")
        return self.content


_INDEX_INSERTS: dict[str, str] = {
    "token": "INSERT INTO sp_token"
    " (resource_type, resource_id, param, system, code, text_norm, type_system, type_code)"
    " VALUES (:t, :i, :p, :a, :b, :c, :d, :e)",
    "string": "INSERT INTO sp_string (resource_type, resource_id, param, value_norm, value)"
    " VALUES (:t, :i, :p, :a, :b)",
    "date": "INSERT INTO sp_date (resource_type, resource_id, param, low, high) VALUES (:t, :i, :p, :a, :b)",
    "reference": "INSERT INTO sp_reference (resource_type, resource_id, param, target_type, target_id, url)"
    " VALUES (:t, :i, :p, :a, :b, :c)",
    "number": "INSERT INTO sp_number (resource_type, resource_id, param, value) VALUES (:t, :i, :p, :a)",
    "quantity": "INSERT INTO sp_quantity (resource_type, resource_id, param, value, system, code, unit)"
    " VALUES (:t, :i, :p, :a, :b, :c, :d)",
    "uri": "INSERT INTO sp_uri (resource_type, resource_id, param, value) VALUES (:t, :i, :p, :a)",
}
_COLUMNS = "abcde"


async def _replace_indexes(
    session: AsyncSession, resource_type: str, resource_id: str, rows: IndexRows | None, fresh: bool
) -> None:
    key = {"t": resource_type, "i": resource_id}
    for kind, insert in _INDEX_INSERTS.items():
        if not fresh:
            await session.execute(text(f"DELETE FROM sp_{kind} WHERE resource_type = :t AND resource_id = :i"), key)  # noqa: S608 - values are bound parameters; table and column names are fixed
        values: list[tuple[Any, ...]] = getattr(rows, kind) if rows is not None else []
        if values:
            batch = [{**key, "p": row[0], **dict(zip(_COLUMNS, row[1:], strict=False))} for row in values]
            await session.execute(text(insert), batch)


async def _write(
    session: AsyncSession,
    resource_type: str,
    resource_id: str,
    content: dict[str, Any] | None,
    version_id: int,
    now: datetime,
    *,
    exists: bool,
    base_url: str,
) -> StoredVersion:
    stored: dict[str, Any] | None = None
    if content is not None:
        meta = dict(content.get("meta") or {})
        meta.update(versionId=str(version_id), lastUpdated=fhir_instant(now))
        stored = {**content, "resourceType": resource_type, "id": resource_id, "meta": meta}
    values = {
        "t": resource_type,
        "i": resource_id,
        "v": version_id,
        "u": now,
        "d": content is None,
        "c": stored,
    }
    if exists:
        await session.execute(
            text(
                "UPDATE resource SET version_id = :v, last_updated = :u, deleted = :d, content = :c "
                "WHERE resource_type = :t AND id = :i"
            ).bindparams(bindparam("c", type_=JSONB)),
            values,
        )
    await session.execute(
        text(
            "INSERT INTO resource_history (resource_type, id, version_id, last_updated, deleted, content) "
            "VALUES (:t, :i, :v, :u, :d, :c)"
        ).bindparams(bindparam("c", type_=JSONB)),
        values,
    )
    rows = index_resource(stored, base_url) if stored is not None else None
    await _replace_indexes(session, resource_type, resource_id, rows, fresh=version_id == 1)
    return StoredVersion(resource_type, resource_id, version_id, now, content is None, stored)


async def _insert_new(
    session: AsyncSession, resource_type: str, resource_id: str, content: dict[str, Any], base_url: str
) -> StoredVersion | None:
    now = datetime.now(UTC)
    inserted = await session.execute(
        text(
            "INSERT INTO resource (resource_type, id, version_id, last_updated, deleted, content) "
            "VALUES (:t, :i, 1, :u, false, NULL) ON CONFLICT DO NOTHING RETURNING id"
        ),
        {"t": resource_type, "i": resource_id, "u": now},
    )
    if inserted.first() is None:
        return None
    version = await _write(session, resource_type, resource_id, content, 1, now, exists=True, base_url=base_url)
    return version


async def create_resource(
    session: AsyncSession, resource_type: str, content: dict[str, Any], base_url: str, resource_id: str | None = None
) -> StoredVersion:
    """Store ``content`` as version 1 of a new resource (server-assigned id unless given).

    Any ``meta.versionId``/``meta.lastUpdated`` the client sent are replaced
    (http://hl7.org/fhir/R4/http.html#create).
    """
    new_id = resource_id or str(uuid.uuid4())
    version = await _insert_new(session, resource_type, new_id, content, base_url)
    if version is None:
        raise Conflict(f"{resource_type}/{new_id} already exists.")
    return version


async def _lock_current(session: AsyncSession, resource_type: str, resource_id: str) -> tuple[int, bool] | None:
    row = (
        await session.execute(
            text("SELECT version_id, deleted FROM resource WHERE resource_type = :t AND id = :i FOR UPDATE"),
            {"t": resource_type, "i": resource_id},
        )
    ).first()
    return (int(row[0]), bool(row[1])) if row else None


async def update_resource(
    session: AsyncSession,
    resource_type: str,
    resource_id: str,
    content: dict[str, Any],
    base_url: str,
    *,
    if_match: int | None = None,
) -> tuple[StoredVersion, bool]:
    """Write a new current version (update-as-create when unknown, R4 §3.1.0.4.1); returns (version, created).

    ``if_match`` is the version the client last saw (``If-Match``, R4
    §3.1.0.4.3 "managing resource contention"): 412 when the stored version
    differs, checked under the row lock.
    """
    for _ in range(2):
        current = await _lock_current(session, resource_type, resource_id)
        if current is None:
            if if_match is not None:
                raise PreconditionFailed(f"{resource_type}/{resource_id} does not exist (If-Match {if_match}).")
            created = await _insert_new(session, resource_type, resource_id, content, base_url)
            if created is not None:
                return created, True
            continue  # a concurrent create won the insert; update it instead
        version_id, _deleted = current
        if if_match is not None and if_match != version_id:
            raise PreconditionFailed(
                f"{resource_type}/{resource_id} is at version {version_id}, not {if_match} (If-Match)."
            )
        now = datetime.now(UTC)
        version = await _write(
            session, resource_type, resource_id, content, version_id + 1, now, exists=True, base_url=base_url
        )
        return version, False
    raise Conflict(f"{resource_type}/{resource_id} is being written concurrently; retry.")


async def delete_resource(
    session: AsyncSession, resource_type: str, resource_id: str, base_url: str, *, if_match: int | None = None
) -> StoredVersion | None:
    """Record a deletion as a new version (R4 §3.1.0.7); None when there was nothing to delete."""
    current = await _lock_current(session, resource_type, resource_id)
    if current is None:
        if if_match is not None:
            raise PreconditionFailed(f"{resource_type}/{resource_id} does not exist (If-Match {if_match}).")
        return None
    version_id, deleted = current
    if if_match is not None and if_match != version_id:
        raise PreconditionFailed(f"{resource_type}/{resource_id} is at version {version_id}, not {if_match}.")
    if deleted:
        return None
    now = datetime.now(UTC)
    return await _write(session, resource_type, resource_id, None, version_id + 1, now, exists=True, base_url=base_url)


def _version(row: Any) -> StoredVersion:
    return StoredVersion(
        row.resource_type, row.id, int(row.version_id), row.last_updated, bool(row.deleted), row.content
    )


async def read_resource(session: AsyncSession, resource_type: str, resource_id: str) -> StoredVersion:
    """The current version of a resource; :class:`NotFound`, or :class:`Gone` when deleted."""
    row = (
        await session.execute(
            text(
                "SELECT resource_type, id, version_id, last_updated, deleted, content FROM resource "
                "WHERE resource_type = :t AND id = :i"
            ),
            {"t": resource_type, "i": resource_id},
        )
    ).first()
    if row is None:
        raise NotFound(f"{resource_type}/{resource_id} is not known.")
    version = _version(row)
    version.require_live()
    return version


async def read_current(session: AsyncSession, resource_type: str, resource_id: str) -> StoredVersion | None:
    """The current version (live or deleted), or None if never written."""
    row = (
        await session.execute(
            text(
                "SELECT resource_type, id, version_id, last_updated, deleted, content FROM resource "
                "WHERE resource_type = :t AND id = :i"
            ),
            {"t": resource_type, "i": resource_id},
        )
    ).first()
    return _version(row) if row else None


async def vread_resource(session: AsyncSession, resource_type: str, resource_id: str, version_id: int) -> StoredVersion:
    """One version of a resource (R4 §3.1.0.3 vread); :class:`Gone` if that version is a deletion."""
    row = (
        await session.execute(
            text(
                "SELECT resource_type, id, version_id, last_updated, deleted, content FROM resource_history "
                "WHERE resource_type = :t AND id = :i AND version_id = :v"
            ),
            {"t": resource_type, "i": resource_id, "v": version_id},
        )
    ).first()
    if row is None:
        raise NotFound(f"{resource_type}/{resource_id} has no version {version_id}.")
    version = _version(row)
    version.require_live()
    return version


async def history(
    session: AsyncSession,
    *,
    resource_type: str | None,
    resource_id: str | None,
    since: datetime | None,
    before: tuple[datetime, str, str, int] | None,
    count: int,
) -> list[StoredVersion]:
    """Versions newest first (R4 §3.1.0.11 history), after the optional page cursor ``before``."""
    clauses = ["TRUE"]
    values: dict[str, Any] = {"n": count}
    if resource_type is not None:
        clauses.append("resource_type = :t")
        values["t"] = resource_type
    if resource_id is not None:
        clauses.append("id = :i")
        values["i"] = resource_id
    if since is not None:
        clauses.append("last_updated >= :s")
        values["s"] = since
    if before is not None:
        clauses.append("(last_updated, resource_type, id, version_id) < (:bu, :bt, :bi, :bv)")
        values.update(bu=before[0], bt=before[1], bi=before[2], bv=before[3])
    rows = await session.execute(
        text(
            "SELECT resource_type, id, version_id, last_updated, deleted, content FROM resource_history "  # noqa: S608 - values are bound parameters; table and column names are fixed
            f"WHERE {' AND '.join(clauses)} "
            "ORDER BY last_updated DESC, resource_type DESC, id DESC, version_id DESC LIMIT :n"
        ),
        values,
    )
    return [_version(row) for row in rows]


async def lock_condition(session: AsyncSession, key: str) -> None:
    """Serialise conditional writes on the same condition until the transaction ends.

    Two concurrent ``If-None-Exist`` creates must not both find no match and
    both create (R4 §3.1.0.8.1); a transaction-scoped advisory lock on the
    condition makes the second one see the first one's result.
    """
    await session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": zlib.crc32(key.encode()) - 2**31})
