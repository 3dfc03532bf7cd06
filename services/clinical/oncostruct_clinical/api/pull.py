"""Pull import: copy patients' records from a hospital FHIR server (``POST /fhir/$pull-import``).

Sources are configured by the operator (``FHIR_SOURCES``: name → base URL and token), never sent by
callers (no server-side request forgery, no stored credentials in requests). The body is a FHIR
``Parameters`` resource: ``source`` (the configured name) and either ``patient`` (upstream Patient
ids, repeatable) or ``patientSearch`` (an upstream search such as ``Patient?identifier=…``).
The answer is 202 with ``Content-Location`` of the job's status (a ``Parameters`` resource).

Each patient's record is read with ``Patient/[id]/$everything`` and written in one transaction:
the Patient by a conditional update on its first identifier (so it merges with a patient already
known here, such as one the imaging service created from DICOM), every other resource under an id
derived from the source and its upstream id (so importing again updates instead of duplicating),
references rewritten to the local ids, and ``meta.source`` naming the upstream resource. Progress is
kept per patient in PostgreSQL; a job left unfinished by a stopped replica resumes at start.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import Response
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from oncostruct_shared.errors import Forbidden, Invalid, NotFound, OncoStructError, UpstreamError, UpstreamUnavailable
from oncostruct_shared.http import raise_for_upstream, transport_error
from oncostruct_shared.settings import UpstreamSource

from .. import interactions
from ..config import Settings
from ..deps import ContextDep
from .background import BackgroundJobs
from .fhir_http import fhir_response, read_resource_body

log = logging.getLogger("oncostruct.clinical.pull")
router = APIRouter(tags=["FHIR pull import"])
IMPORT_SCOPES = frozenset({"system/*.cruds"})
DONE_WITH_ERROR = "done = done || CAST(:d AS jsonb), errors = errors || CAST(:e AS jsonb)"
NAMESPACE = uuid.UUID("6b0b6f3e-2f7a-4d43-9a39-6f0b3d0c5e11")


def _parameters(body: dict[str, Any]) -> dict[str, list[str]]:
    if body.get("resourceType") != "Parameters":
        raise Invalid("The body must be a FHIR Parameters resource.", expression=["Parameters"])
    found: dict[str, list[str]] = {}
    items = body.get("parameter", [])
    if not isinstance(items, list) or not all(isinstance(item, dict) for item in items):
        raise Invalid("Parameters.parameter must be a list of parameters.", expression=["Parameters.parameter"])
    for item in items:
        value = item.get("valueString") or item.get("valueId") or item.get("valueUri")
        if isinstance(value, str):
            found.setdefault(str(item.get("name")), []).append(value)
    return found


@router.post("/$pull-import", response_class=Response)
async def pull_import(request: Request, ctx: ContextDep) -> Response:
    """Start importing patients' records from a configured FHIR source (202 + ``Content-Location``)."""
    for needed in ("c", "u"):
        if ctx.authorize("*", needed):
            raise Forbidden("Pull import needs system/ or user/ write scopes.")
    settings: Settings = ctx.settings
    parameters = _parameters(await read_resource_body(request))
    source = (parameters.get("source") or [""])[0]
    if source not in settings.fhir_sources:
        known = ", ".join(sorted(settings.fhir_sources)) or "none configured"
        raise Invalid(f"Unknown source {source!r} (configured: {known}).", expression=["Parameters.parameter.source"])
    patients = parameters.get("patient", [])
    search = parameters["patientSearch"][0] if parameters.get("patientSearch") else None
    if bool(patients) == bool(search):
        raise Invalid("Give either patient (repeatable) or patientSearch.", expression=["Parameters.parameter"])
    if search is not None and not search.startswith("Patient?"):
        raise Invalid(
            "patientSearch must be a Patient search such as Patient?identifier=…", expression=["patientSearch"]
        )
    job_id = uuid.uuid4()
    await ctx.session.execute(
        text(
            "INSERT INTO pull_import (id, source, request, status, patients, done, imported, errors) "
            "VALUES (:id, :s, CAST(:r AS jsonb), 'queued', CAST(:p AS jsonb), '[]', 0, '[]')"
        ),
        {"id": job_id, "s": source, "r": json.dumps({"patient": patients, "patientSearch": search}),
         "p": json.dumps(patients)},
    )  # fmt: skip
    await ctx.session.commit()
    request.app.state.pulls.start(job_id)
    location = f"{settings.base_url}/$pull-import/{job_id}"
    return fhir_response(
        {"resourceType": "OperationOutcome", "issue": [{"severity": "information", "code": "informational",
                                                         "diagnostics": f"Import {job_id} accepted."}]},
        202,
        {"Content-Location": location},
    )  # fmt: skip


@router.get("/$pull-import/{job_id}", response_class=Response)
async def pull_status(job_id: uuid.UUID, ctx: ContextDep) -> Response:
    """The job's state as a Parameters resource: status, patients, done, imported resources, errors."""
    if ctx.authorize("*", "r"):
        raise Forbidden("Pull import status needs a system/ or user/ scope.")
    row = (
        await ctx.session.execute(
            text("SELECT source, status, patients, done, imported, errors FROM pull_import WHERE id = :id"),
            {"id": job_id},
        )
    ).first()
    if row is None:
        raise NotFound(f"No pull import {job_id}.")
    parameter: list[dict[str, Any]] = [
        {"name": "source", "valueString": row.source},
        {"name": "status", "valueCode": row.status},
        {"name": "patients", "valueInteger": len(row.patients)},
        {"name": "done", "valueInteger": len(row.done)},
        {"name": "imported", "valueInteger": row.imported},
    ]
    parameter += [{"name": "error", "valueString": error} for error in row.errors]
    return fhir_response({"resourceType": "Parameters", "parameter": parameter})


def _escape(value: str) -> str:
    """A search value with FHIR's special characters escaped (R4 §3.1.1.4.6: \\ , $ |)."""
    for character in ("\\", ",", "$", "|"):
        value = value.replace(character, "\\" + character)
    return value


def _rewrite(value: Any, mapping: dict[str, str], base: str) -> Any:
    """A copy with every reference to an imported resource pointing at its local id."""
    if isinstance(value, dict):
        copy = {key: _rewrite(item, mapping, base) for key, item in value.items()}
        reference = value.get("reference")
        if isinstance(reference, str):
            relative = reference.removeprefix(base.rstrip("/") + "/")
            if relative in mapping:
                copy["reference"] = mapping[relative]
        return copy
    if isinstance(value, list):
        return [_rewrite(item, mapping, base) for item in value]
    return value


class PullImports(BackgroundJobs):
    """Runs pull imports in the background of this process; resumes unfinished ones at start."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], settings: Settings) -> None:
        super().__init__(sessionmaker, "pull_import")
        self.settings = settings

    async def _set(self, job_id: uuid.UUID, sql: str, **values: Any) -> None:
        async with self.sessionmaker() as session:
            await session.execute(
                text(f"UPDATE pull_import SET {sql}, updated_at = now() WHERE id = :id"),  # noqa: S608 - fixed SQL
                {"id": job_id, **values},
            )
            await session.commit()

    async def run(self, job_id: uuid.UUID) -> None:
        async with self.sessionmaker() as session:
            row = (
                await session.execute(
                    text("SELECT source, request, patients, done FROM pull_import WHERE id = :id"), {"id": job_id}
                )
            ).first()
        if row is None:
            return
        source = self.settings.fhir_sources.get(row.source)
        if source is None:
            await self._set(job_id, "status = 'failed', errors = errors || CAST(:e AS jsonb)",
                            e=json.dumps([f"Source {row.source!r} is no longer configured."]))  # fmt: skip
            return
        headers = {"Accept": "application/fhir+json"}
        if source.bearer_token is not None:
            headers["Authorization"] = f"Bearer {source.bearer_token.get_secret_value()}"
        await self._set(job_id, "status = 'running'")
        try:
            async with httpx.AsyncClient(
                base_url=source.url.rstrip("/"), headers=headers, timeout=source.timeout_s
            ) as client:
                patients: list[str] = list(row.patients)
                if row.request.get("patientSearch"):
                    patients = await _search_ids(client, row.request["patientSearch"])
                    await self._set(job_id, "patients = CAST(:p AS jsonb)", p=json.dumps(patients))
                done = set(row.done)
                for patient in patients:
                    if patient in done:
                        continue
                    try:
                        count = await self._import_patient(client, source, row.source, patient)
                        await self._set(job_id, "done = done || CAST(:d AS jsonb), imported = imported + :n",
                                        d=json.dumps([patient]), n=count)  # fmt: skip
                    except UpstreamUnavailable:
                        raise
                    except OncoStructError as exc:
                        failed = json.dumps([f"Patient {patient}: {exc.detail}"])
                        await self._set(job_id, DONE_WITH_ERROR, d=json.dumps([patient]), e=failed)
            await self._set(job_id, "status = 'succeeded'")
        except UpstreamUnavailable as exc:  # the source is away: try again later (progress kept)
            await self._set(
                job_id, "status = 'queued', errors = errors || CAST(:e AS jsonb)", e=json.dumps([exc.detail])
            )
            await asyncio.sleep(5)
            self.start(job_id)
        except Exception as exc:
            log.exception("pull import failed", extra={"job_id": str(job_id)})
            await self._set(job_id, "status = 'failed', errors = errors || CAST(:e AS jsonb)",
                            e=json.dumps([f"The import failed ({type(exc).__name__})."]))  # fmt: skip

    async def _import_patient(self, client: httpx.AsyncClient, source: UpstreamSource, name: str, patient: str) -> int:
        resources = await _everything(client, patient)
        upstream_patient = next(
            (r for r in resources if r.get("resourceType") == "Patient" and r.get("id") == patient), None
        )
        if upstream_patient is None:
            raise UpstreamError(f"The source's $everything did not return Patient/{patient}.")
        keys = [
            f"{r['resourceType']}/{r['id']}"
            for r in resources
            if r.get("resourceType") in interactions.SUPPORTED_TYPES and r.get("id")
        ]
        mapping = {key: f"{key.split('/')[0]}/{uuid.uuid5(NAMESPACE, name + '/' + key)}" for key in keys}
        async with self.sessionmaker() as session, session.begin():
            ctx = interactions.Context(session=session, settings=self.settings, scopes=IMPORT_SCOPES)
            identifier = next(
                (i for i in upstream_patient.get("identifier", []) if i.get("system") and i.get("value")), None
            )
            content = _rewrite(upstream_patient, mapping, source.url)
            content["meta"] = {**content.get("meta", {}), "source": f"{source.url.rstrip('/')}/Patient/{patient}"}
            if identifier is not None:
                content.pop("id", None)
                query = urlencode({"identifier": f"{_escape(identifier['system'])}|{_escape(identifier['value'])}"})
                outcome = await interactions.conditional_update(ctx, "Patient", query, content)
                assert outcome.version is not None
                mapping[f"Patient/{patient}"] = f"Patient/{outcome.version.id}"
            count = 0 if identifier is None else 1
            for resource in resources:
                key = f"{resource.get('resourceType')}/{resource.get('id')}"
                if key not in mapping or (identifier is not None and key == f"Patient/{patient}"):
                    continue
                local_type, local_id = mapping[key].split("/", 1)
                content = _rewrite(resource, mapping, source.url)
                content["id"] = local_id
                content["meta"] = {**content.get("meta", {}), "source": f"{source.url.rstrip('/')}/{key}"}
                await interactions.update(ctx, local_type, local_id, content)
                count += 1
        return count


async def _get(client: httpx.AsyncClient, url: str, params: list[tuple[str, str]] | None = None) -> dict[str, Any]:
    try:
        response = await client.get(url, params=httpx.QueryParams(tuple(params or ())))
    except httpx.HTTPError as exc:
        raise transport_error(exc, "The FHIR source") from exc
    raise_for_upstream(response, "The FHIR source")
    body: dict[str, Any] = response.json()
    return body


async def _pages(
    client: httpx.AsyncClient, url: str, params: list[tuple[str, str]] | None = None
) -> list[dict[str, Any]]:
    bundle = await _get(client, url, params)
    resources = []
    while True:
        resources += [entry["resource"] for entry in bundle.get("entry", []) if "resource" in entry]
        following = next((link["url"] for link in bundle.get("link", []) if link.get("relation") == "next"), None)
        if following is None:
            return resources
        bundle = await _get(client, following)


async def _everything(client: httpx.AsyncClient, patient: str) -> list[dict[str, Any]]:
    return await _pages(client, f"/Patient/{patient}/$everything")


async def _search_ids(client: httpx.AsyncClient, search: str) -> list[str]:
    parts = urlsplit(search)
    found = await _pages(client, f"/{parts.path}", [*parse_qsl(parts.query), ("_elements", "id")])
    return [str(r["id"]) for r in found if r.get("resourceType") == "Patient"]


@contextlib.asynccontextmanager
async def pull_lifespan(app: FastAPI) -> AsyncIterator[None]:
    """The app's pull-import runner."""
    app.state.pulls = PullImports(app.state.db.sessionmaker, app.state.settings)
    await app.state.pulls.resume()
    try:
        yield
    finally:
        await app.state.pulls.close()
