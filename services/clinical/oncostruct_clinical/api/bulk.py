"""FHIR Bulk Data export (https://hl7.org/fhir/uv/bulkdata/STU2/export.html): ``$export`` at system,
``Patient`` and ``Group/[id]`` level.

Kick-off (``Prefer: respond-async``) → 202 with ``Content-Location`` of the status endpoint; status
→ 202 with ``X-Progress`` while it runs, then 200 with the manifest; the NDJSON files are served
with the same bearer auth (``requiresAccessToken``). The job and its files live in the database, so
any replica answers status and file requests, and a job a stopped replica left unfinished is run
again when a replica starts. ``_type``, ``_since`` and ``_outputFormat`` are honoured.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Path, Query, Request
from fastapi.responses import Response
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from oncostruct_shared.errors import Forbidden, Invalid, NotFound, OncoStructError

from .. import interactions
from ..compartment import PATIENT_COMPARTMENT
from ..deps import ContextDep
from ..repository import Db, fhir_instant
from ..search.indexing import date_range
from .background import BackgroundJobs
from .fhir_http import fhir_response, information
from .security import smart_grant

log = logging.getLogger("oncostruct.clinical.bulk")
router = APIRouter(tags=["FHIR bulk data"])
NDJSON = "application/fhir+ndjson"
FORMATS = {"application/fhir+ndjson", "application/ndjson", "ndjson"}
EXPORTABLE = sorted(interactions.SUPPORTED_TYPES - {"Bundle"})


class ExportFailed(OncoStructError):
    """A bulk export that ended in error (the Bulk Data status endpoint answers 5xx with an OperationOutcome)."""

    status = 500
    title = "Export failed"
    fhir_code = "exception"
    slug = "export-failed"


def _types(requested: str | None, level: str, ctx: interactions.Context) -> list[str]:
    """The types to export: ``_type`` (each readable, else 403) or every readable type of the level."""
    scope = EXPORTABLE if level == "system" else ["Patient", *sorted(PATIENT_COMPARTMENT)]
    if requested:
        names = [name.strip() for name in requested.split(",") if name.strip()]
        unknown = [name for name in names if name not in EXPORTABLE]
        if unknown:
            raise Invalid(f"_type names types this server does not export: {', '.join(unknown)}.", expression=["_type"])
        names = [name for name in names if name in scope]
        for name in names:
            if ctx.authorize(name, "r"):
                raise Forbidden("Bulk export needs system/ or user/ scopes.")
        return names
    return [name for name in scope if smart_grant(ctx.scopes, name, "r") == "all"]


async def _kick_off(
    request: Request, ctx: interactions.Context, level: str, group: str | None, types: str | None, since: str | None
) -> Response:
    if "respond-async" not in request.headers.get("prefer", ""):
        raise Invalid("Bulk export is asynchronous: send Prefer: respond-async.", expression=["Prefer"])
    output_format = request.query_params.get("_outputFormat")
    if output_format is not None and output_format not in FORMATS:
        raise Invalid(f"_outputFormat {output_format!r} is not supported; use {NDJSON}.", expression=["_outputFormat"])
    if since is not None and date_range(since) is None:
        raise Invalid(f"_since {since!r} is not a FHIR instant.", expression=["_since"])
    members: list[str] | None = None
    if group is not None:
        found = await interactions.read(ctx, "Group", group)
        content = found.version.content if found.version is not None else None
        if content is None:
            raise NotFound(f"Group/{group} has no content.")
        members = [
            str(member["entity"]["reference"]).split("/")[-1]
            for member in content.get("member", [])
            if str(member.get("entity", {}).get("reference", "")).startswith("Patient/")
        ]
    chosen = _types(types, level, ctx)
    job_id = uuid.uuid4()
    spec = {
        "level": level,
        "types": chosen,
        "since": since,
        "members": members,
        "request": str(request.url),
        "owner": ctx.subject,
    }
    await ctx.session.execute(
        text(
            "INSERT INTO bulk_export (id, spec, status, progress, created_at, updated_at) "
            "VALUES (:id, CAST(:spec AS jsonb), 'queued', 0, now(), now())"
        ),
        {"id": job_id, "spec": json.dumps(spec)},
    )
    await ctx.session.commit()
    request.app.state.bulk.start(job_id)
    location = f"{ctx.settings.base_url}/$export-status/{job_id}"
    return fhir_response(information(f"Export {job_id} accepted."), 202, {"Content-Location": location})


SinceQuery = Annotated[str | None, Query(alias="_since", description="Only resources updated at or after.")]
TypeQuery = Annotated[str | None, Query(alias="_type", description="Comma-separated resource types.")]


@router.get("/$export", response_class=Response)
async def export_system(
    request: Request, ctx: ContextDep, since: SinceQuery = None, types: TypeQuery = None
) -> Response:
    """Kick off an export of every resource (system level)."""
    return await _kick_off(request, ctx, "system", None, types, since)


@router.get("/Patient/$export", response_class=Response)
async def export_patients(
    request: Request, ctx: ContextDep, since: SinceQuery = None, types: TypeQuery = None
) -> Response:
    """Kick off an export of every patient's compartment."""
    return await _kick_off(request, ctx, "patient", None, types, since)


@router.get("/Group/{group_id}/$export", response_class=Response)
async def export_group(
    group_id: Annotated[str, Path(description="The Group whose member patients are exported.")],
    request: Request,
    ctx: ContextDep,
    since: SinceQuery = None,
    types: TypeQuery = None,
) -> Response:
    """Kick off an export of the compartments of a Group's member patients."""
    return await _kick_off(request, ctx, "patient", group_id, types, since)


async def _job(ctx: interactions.Context, job_id: uuid.UUID) -> Any:
    if not any(smart_grant(ctx.scopes, name, "r") == "all" for name in EXPORTABLE):
        raise Forbidden("Bulk export status and files need system/ or user/ read scopes.")
    row = (
        await ctx.session.execute(
            text("SELECT status, progress, spec, error, transaction_time FROM bulk_export WHERE id = :id"),
            {"id": job_id},
        )
    ).first()
    if row is None or row.spec.get("owner") != ctx.subject:
        raise NotFound(f"No export {job_id}.")  # another client's export is not revealed
    return row


@router.get("/$export-status/{job_id}", response_class=Response)
async def export_status(job_id: uuid.UUID, ctx: ContextDep) -> Response:
    """202 with ``X-Progress`` while the export runs; 200 with the manifest when it is done."""
    row = await _job(ctx, job_id)
    if row.status in ("queued", "running"):
        types = row.spec["types"]
        done = round(row.progress * len(types))
        headers = {"X-Progress": f"{done} of {len(types)} resource types", "Retry-After": "1"}
        return Response(status_code=202, headers=headers)
    if row.status == "failed":
        raise ExportFailed(row.error or "The export failed.")
    files = (
        await ctx.session.execute(
            text("SELECT name, resource_type, count FROM bulk_export_file WHERE job_id = :id ORDER BY name"),
            {"id": job_id},
        )
    ).all()
    base = ctx.settings.base_url
    manifest = {
        "transactionTime": row.transaction_time,
        "request": row.spec["request"],
        "requiresAccessToken": True,
        "output": [
            {"type": f.resource_type, "url": f"{base}/$export-file/{job_id}/{f.name}", "count": f.count} for f in files
        ],
        "error": [],
    }
    return Response(json.dumps(manifest), media_type="application/json")


@router.delete("/$export-status/{job_id}", response_class=Response)
async def export_cancel(job_id: uuid.UUID, ctx: ContextDep) -> Response:
    """Cancel an export or delete a finished one's files (202)."""
    await _job(ctx, job_id)
    await ctx.session.execute(text("DELETE FROM bulk_export_file WHERE job_id = :id"), {"id": job_id})
    await ctx.session.execute(text("DELETE FROM bulk_export WHERE id = :id"), {"id": job_id})
    await ctx.session.commit()
    return fhir_response(information(f"Export {job_id} deleted."), 202)


@router.get("/$export-file/{job_id}/{name}", response_class=Response)
async def export_file(job_id: uuid.UUID, name: str, ctx: ContextDep) -> Response:
    """One NDJSON output file (same bearer auth as the kick-off)."""
    await _job(ctx, job_id)
    content = (
        await ctx.session.execute(
            text("SELECT content FROM bulk_export_file WHERE job_id = :id AND name = :name"),
            {"id": job_id, "name": name},
        )
    ).scalar_one_or_none()
    if content is None:
        raise NotFound(f"Export {job_id} has no file {name}.")
    return Response(content, media_type=NDJSON)


class BulkExports(BackgroundJobs):
    """Runs export jobs in the background of this process; resumes unfinished ones at start."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        super().__init__(sessionmaker, "bulk_export")

    async def run(self, job_id: uuid.UUID) -> None:
        try:
            await self._run(job_id)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("bulk export failed", extra={"job_id": str(job_id)})
            async with self.sessionmaker() as session:
                await session.execute(
                    text("UPDATE bulk_export SET status = 'failed', error = :e, updated_at = now() WHERE id = :id"),
                    {"id": job_id, "e": f"The export failed ({type(exc).__name__})."},
                )
                await session.commit()

    async def _run(self, job_id: uuid.UUID) -> None:
        async with self.sessionmaker() as session:
            spec = (
                await session.execute(text("SELECT spec FROM bulk_export WHERE id = :id"), {"id": job_id})
            ).scalar_one_or_none()
            if spec is None:
                return
            started = fhir_instant(datetime.now(UTC))
            await session.execute(
                text(
                    "UPDATE bulk_export SET status = 'running', transaction_time = :t, updated_at = now() "
                    "WHERE id = :id"
                ),
                {"id": job_id, "t": started},
            )
            await session.execute(text("DELETE FROM bulk_export_file WHERE job_id = :id"), {"id": job_id})
            await session.commit()
        types: list[str] = spec["types"]
        bounds = date_range(spec["since"]) if spec.get("since") else None
        since = bounds[0] if bounds is not None else None
        for index, resource_type in enumerate(types):
            async with self.sessionmaker() as session:
                lines = [
                    json.dumps(row[0], separators=(",", ":"))
                    for row in await _rows(session, resource_type, spec, since)
                ]
                if lines:
                    await session.execute(
                        text(
                            "INSERT INTO bulk_export_file (job_id, name, resource_type, count, content) "
                            "VALUES (:id, :name, :t, :n, :c)"
                        ),
                        {"id": job_id, "name": f"{resource_type}.ndjson", "t": resource_type, "n": len(lines),
                         "c": "\n".join(lines) + "\n"},
                    )  # fmt: skip
                await session.execute(
                    text("UPDATE bulk_export SET progress = :p, updated_at = now() WHERE id = :id"),
                    {"id": job_id, "p": (index + 1) / max(1, len(types))},
                )
                await session.commit()
        async with self.sessionmaker() as session:
            await session.execute(
                text("UPDATE bulk_export SET status = 'succeeded', progress = 1, updated_at = now() WHERE id = :id"),
                {"id": job_id},
            )
            await session.commit()


IN_COMPARTMENT = (
    "EXISTS (SELECT 1 FROM sp_reference x WHERE x.resource_type = r.resource_type AND x.resource_id = r.id"
    " AND x.target_type = 'Patient' AND x.param = ANY(CAST(:params AS text[])))"
)
IN_MEMBERS_COMPARTMENT = (
    "EXISTS (SELECT 1 FROM sp_reference x WHERE x.resource_type = r.resource_type AND x.resource_id = r.id"
    " AND x.target_type = 'Patient' AND x.param = ANY(CAST(:params AS text[]))"
    " AND x.target_id = ANY(CAST(:members AS text[])))"
)


async def _rows(session: Db, resource_type: str, spec: dict[str, Any], since: datetime | None) -> Any:
    """Current, not deleted resources of a type for the export's level (the patients' compartments)."""
    clauses = ["r.resource_type = :t", "NOT r.deleted"]
    values: dict[str, Any] = {"t": resource_type}
    if since is not None:
        clauses.append("r.last_updated >= :since")
        values["since"] = since
    members = spec.get("members")
    if spec["level"] == "patient":
        if resource_type == "Patient":
            if members is not None:
                clauses.append("r.id = ANY(CAST(:members AS text[]))")
        else:
            clauses.append(IN_COMPARTMENT if members is None else IN_MEMBERS_COMPARTMENT)
            values["params"] = list(PATIENT_COMPARTMENT.get(resource_type, ()))
        if members is not None:
            values["members"] = members
    query = f"SELECT r.content FROM resource r WHERE {' AND '.join(clauses)} ORDER BY r.id"  # noqa: S608 - fixed clauses, bound values
    return (await session.execute(text(query), values)).all()


@contextlib.asynccontextmanager
async def bulk_lifespan(app: FastAPI) -> AsyncIterator[None]:
    """The app's export runner: resumes unfinished jobs, cancels running ones at shutdown."""
    app.state.bulk = BulkExports(app.state.db.sessionmaker)
    await app.state.bulk.resume()
    try:
        yield
    finally:
        await app.state.bulk.close()
