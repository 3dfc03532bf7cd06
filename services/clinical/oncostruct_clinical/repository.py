"""SQL for the versioned FHIR resource store (http://hl7.org/fhir/R4/http.html#versioning).

Every write runs inside the caller's transaction and does three things
together: it locks and bumps the current row (``SELECT … FOR UPDATE``, so two
concurrent updates serialise and an ``If-Match`` loser sees the new version:
no lost update), appends the version to ``resource_history``, and replaces
the resource's search index rows. The caller commits (one request, or one
whole transaction Bundle).
"""

from __future__ import annotations

import re
import uuid
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any

from sqlalchemy import TextClause, bindparam, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from oncostruct_shared.db import LazyConnection
from oncostruct_shared.errors import Conflict, Gone, NotFound, PreconditionFailed

from .search.indexing import IndexRows, index_resource

#: What the store runs SQL on: a request's connection, or a background job's session.
Db = LazyConnection | AsyncConnection | AsyncSession


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


#: Columns of each search index table after (resource_type, resource_id, param), with their SQL types.
_INDEX_COLUMNS: dict[str, tuple[tuple[str, str], ...]] = {
    "token": (
        ("system", "text"),
        ("code", "text"),
        ("text_norm", "text"),
        ("type_system", "text"),
        ("type_code", "text"),
    ),
    "string": (("value_norm", "text"), ("value", "text")),
    "date": (("low", "timestamptz"), ("high", "timestamptz")),
    "reference": (("target_type", "text"), ("target_id", "text"), ("url", "text")),
    "number": (("value", "numeric"),),
    "quantity": (("value", "numeric"), ("system", "text"), ("code", "text"), ("unit", "text")),
    "uri": (("value", "text"),),
    "composite": (
        ("node", "integer"),
        ("part", "smallint"),
        ("system", "text"),
        ("code", "text"),
        ("text_norm", "text"),
        ("value", "numeric"),
        ("unit", "text"),
        ("low", "timestamptz"),
        ("high", "timestamptz"),
        ("value_norm", "text"),
    ),
}
_HEADS = {
    # A new resource: the insert claims the id; when another writer holds it, nothing else is written.
    "insert": "INSERT INTO resource (resource_type, id, version_id, last_updated, deleted, content) "
    "VALUES (:t, :i, :v, :u, :d, CAST(:c AS jsonb)) ON CONFLICT DO NOTHING RETURNING 1",
    # An existing resource, locked by the caller (SELECT … FOR UPDATE).
    "update": "UPDATE resource SET version_id = :v, last_updated = :u, deleted = :d, content = CAST(:c AS jsonb) "
    "WHERE resource_type = :t AND id = :i RETURNING 1",
}


@cache
def _write_sql(head: str, kinds: tuple[str, ...], replace: bool) -> str:
    """One statement that writes a version: the current row, its history row and its index rows.

    Data-modifying CTEs (PostgreSQL §7.8.4) make a write one round trip instead of one per
    table; they all see the same snapshot, so deleting a resource's old index rows and
    inserting its new ones in one statement cannot touch the new ones. Being one statement,
    it is atomic on its own too.
    """
    parts = [
        f"target AS ({_HEADS[head]})",
        "history AS (INSERT INTO resource_history (resource_type, id, version_id, last_updated, deleted, content) "
        "SELECT :t, :i, CAST(:v AS integer), CAST(:u AS timestamptz), CAST(:d AS boolean), CAST(:c AS jsonb) "
        "FROM target)",
    ]
    if replace:
        parts += [
            f"drop_{kind} AS (DELETE FROM sp_{kind} WHERE resource_type = :t AND resource_id = :i)"  # noqa: S608 - fixed table names; values are bound
            for kind in _INDEX_COLUMNS
        ]
    for kind in kinds:
        columns = _INDEX_COLUMNS[kind]
        names = ", ".join(name for name, _ in columns)
        arrays = ", ".join(f"CAST(:{kind}_{n} AS {sql}[])" for n, (_, sql) in enumerate(columns))
        parts.append(
            f"add_{kind} AS (INSERT INTO sp_{kind} (resource_type, resource_id, param, {names}) "  # noqa: S608 - fixed names
            f"SELECT :t, :i, rows.* FROM target, unnest(CAST(:{kind}_p AS text[]), {arrays}) AS rows)"
        )
    return "WITH " + ", ".join(parts) + " SELECT count(*) FROM target"  # noqa: S608 - built from fixed names


@cache
def _write_statement(head: str, kinds: tuple[str, ...], replace: bool) -> TextClause:
    """:func:`_write_sql` for SQLAlchemy, built once per shape (constructing and cache-keying a
    TextClause showed in profiles)."""
    return text(_write_sql(head, kinds, replace)).bindparams(bindparam("c", type_=JSONB))


@cache
def _write_driver_sql(head: str, kinds: tuple[str, ...], replace: bool) -> tuple[str, tuple[str, ...]]:
    """:func:`_write_sql` with ``$n`` placeholders for the driver, and the names in their order."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        if match[1] not in names:
            names.append(match[1])
        return f"${names.index(match[1]) + 1}"

    return re.sub(r"(?<!:):(\w+)", number, _write_sql(head, kinds, replace)), tuple(names)


async def _write(
    session: Db,
    resource_type: str,
    resource_id: str,
    content: dict[str, Any] | None,
    version_id: int,
    now: datetime,
    *,
    exists: bool,
    base_url: str,
    alone: bool = False,
) -> StoredVersion | None:
    """Write version ``version_id``: over the locked current row (``exists``) or as a new resource.

    ``alone``: this write is all the request's transaction holds (a plain create, not a Bundle
    entry). Returns None when a new resource's id was taken meanwhile (nothing written).
    """
    stored: dict[str, Any] | None = None
    if content is not None:
        meta = dict(content.get("meta") or {})
        meta.update(versionId=str(version_id), lastUpdated=fhir_instant(now))
        stored = {**content, "resourceType": resource_type, "id": resource_id, "meta": meta}
    values: dict[str, Any] = {
        "t": resource_type,
        "i": resource_id,
        "v": version_id,
        "u": now,
        "d": content is None,
        "c": stored,
    }
    rows = index_resource(stored, base_url) if stored is not None else IndexRows()
    kinds = []
    for kind, columns in _INDEX_COLUMNS.items():
        found: list[tuple[Any, ...]] = getattr(rows, kind)
        if found:
            kinds.append(kind)
            values[f"{kind}_p"] = [row[0] for row in found]
            for n in range(len(columns)):
                values[f"{kind}_{n}"] = [row[n + 1] if n + 1 < len(row) else None for row in found]
    shape = ("update" if exists else "insert", tuple(kinds), exists and version_id > 1)
    if alone and isinstance(session, LazyConnection) and not session.started:
        # The one statement is the whole transaction, so it runs in autocommit on the driver:
        # no BEGIN/COMMIT round trips, no SQLAlchemy layers (+25 % creates/s).
        sql, names = _write_driver_sql(*shape)
        async with (await session.database.driver_pool()).acquire() as driver:
            count = await driver.fetchval(sql, *(values[name] for name in names))
    else:
        count = (await session.execute(_write_statement(*shape), values)).scalar_one()
    if count == 0:
        return None
    return StoredVersion(resource_type, resource_id, version_id, now, content is None, stored)


async def _insert_new(
    session: Db, resource_type: str, resource_id: str, content: dict[str, Any], base_url: str, *, alone: bool = False
) -> StoredVersion | None:
    now = datetime.now(UTC)
    return await _write(
        session, resource_type, resource_id, content, 1, now, exists=False, base_url=base_url, alone=alone
    )


async def create_resource(
    session: Db,
    resource_type: str,
    content: dict[str, Any],
    base_url: str,
    resource_id: str | None = None,
    *,
    alone: bool = False,
) -> StoredVersion:
    """Store ``content`` as version 1 of a new resource (server-assigned id unless given).

    Any ``meta.versionId``/``meta.lastUpdated`` the client sent are replaced
    (http://hl7.org/fhir/R4/http.html#create). ``alone``: nothing else is written in this
    request's transaction (then it may run as one autocommitted statement).
    """
    new_id = resource_id or str(uuid.uuid4())
    version = await _insert_new(session, resource_type, new_id, content, base_url, alone=alone)
    if version is None:
        raise Conflict(f"{resource_type}/{new_id} already exists.")
    return version


_LOCK_CURRENT = text("SELECT version_id, deleted FROM resource WHERE resource_type = :t AND id = :i FOR UPDATE")
_READ_CURRENT_SQL = (
    "SELECT resource_type, id, version_id, last_updated, deleted, content FROM resource "
    "WHERE resource_type = $1 AND id = $2"
)


async def _lock_current(session: Db, resource_type: str, resource_id: str) -> tuple[int, bool] | None:
    row = (
        await session.execute(
            _LOCK_CURRENT,
            {"t": resource_type, "i": resource_id},
        )
    ).first()
    return (int(row[0]), bool(row[1])) if row else None


async def update_resource(
    session: Db,
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
        assert version is not None  # the row is locked
        return version, False
    raise Conflict(f"{resource_type}/{resource_id} is being written concurrently; retry.")


async def delete_resource(
    session: Db, resource_type: str, resource_id: str, base_url: str, *, if_match: int | None = None
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


async def _fetch_current(session: Db, resource_type: str, resource_id: str) -> StoredVersion | None:
    # Reads by id are the hottest query of a FHIR server: they go to the driver, skipping SQLAlchemy's
    # statement and result layers, and — when the request has no connection checked out yet — its pool.
    if isinstance(session, LazyConnection) and not session.started:
        async with (await session.database.driver_pool()).acquire() as driver:
            row = await driver.fetchrow(_READ_CURRENT_SQL, resource_type, resource_id)
    else:
        connection = await session.connection() if not isinstance(session, AsyncConnection) else session
        raw: Any = (await connection.get_raw_connection()).driver_connection
        row = await raw.fetchrow(_READ_CURRENT_SQL, resource_type, resource_id)
    if row is None:
        return None
    return StoredVersion(row[0], row[1], int(row[2]), row[3], bool(row[4]), row[5])


async def read_resource(session: Db, resource_type: str, resource_id: str) -> StoredVersion:
    """The current version of a resource; :class:`NotFound`, or :class:`Gone` when deleted."""
    version = await _fetch_current(session, resource_type, resource_id)
    if version is None:
        raise NotFound(f"{resource_type}/{resource_id} is not known.")
    version.require_live()
    return version


async def read_current(session: Db, resource_type: str, resource_id: str) -> StoredVersion | None:
    """The current version (live or deleted), or None if never written."""
    return await _fetch_current(session, resource_type, resource_id)


async def vread_resource(session: Db, resource_type: str, resource_id: str, version_id: int) -> StoredVersion:
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
    session: Db,
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


async def lock_condition(session: Db, key: str) -> None:
    """Serialise conditional writes on the same condition until the transaction ends.

    Two concurrent ``If-None-Exist`` creates must not both find no match and
    both create (R4 §3.1.0.8.1); a transaction-scoped advisory lock on the
    condition makes the second one see the first one's result.
    """
    await session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": zlib.crc32(key.encode()) - 2**31})
