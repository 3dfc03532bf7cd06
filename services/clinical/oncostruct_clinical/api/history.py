"""History at instance, type and system level (R4 §3.1.0.11, http://hl7.org/fhir/R4/http.html#history)."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response

from oncostruct_shared.errors import Forbidden, Invalid

from .. import interactions, repository
from ..deps import ContextDep
from ..repository import StoredVersion, fhir_instant
from ..search.indexing import date_range
from .fhir_http import fhir_response, negotiate, weak_etag

router = APIRouter(tags=["FHIR history"])
TypePath = Annotated[str, Path(description="FHIR resource type, e.g. Patient.")]
IdPath = Annotated[str, Path(description="Logical id of the resource.")]
SinceQuery = Annotated[str | None, Query(alias="_since", description="Only versions written at or after this instant.")]
CountQuery = Annotated[str | None, Query(alias="_count", description="Page size.")]
CursorQuery = Annotated[str | None, Query(alias="_cursor", description="Page cursor from a next link.")]


def _entry(version: StoredVersion, base: str) -> dict[str, Any]:
    url = f"{version.resource_type}/{version.id}"
    if version.deleted:
        request = {"method": "DELETE", "url": url}
        response = {"status": "204", "etag": weak_etag(version.version_id)}
    else:
        request = {
            "method": "POST" if version.version_id == 1 else "PUT",
            "url": version.resource_type if version.version_id == 1 else url,
        }
        response = {"status": "201" if version.version_id == 1 else "200", "etag": weak_etag(version.version_id)}
    response["lastModified"] = fhir_instant(version.last_updated)
    entry: dict[str, Any] = {"fullUrl": f"{base}/{url}", "request": request, "response": response}
    if version.content is not None:
        entry["resource"] = version.content
    return entry


async def _history(
    request: Request,
    ctx: ContextDep,
    resource_type: str | None,
    resource_id: str | None,
    since: str | None,
    count: str | None,
    cursor: str | None,
) -> Response:
    negotiate(request)
    settings = ctx.settings
    since_at: datetime | None = None
    if since is not None:
        bounds = date_range(since)
        if bounds is None:
            raise Invalid(f"_since must be a FHIR instant, not {since!r}.", expression=["_since"])
        since_at = bounds[0]
    if count is not None and not count.isdigit():
        raise Invalid("_count must be a non-negative integer.", expression=["_count"])
    size = min(int(count) if count is not None else settings.search_default_count, settings.history_max_count)
    before: tuple[datetime, str, str, int] | None = None
    if cursor:
        try:
            raw = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
            before = (datetime.fromisoformat(raw[0]), str(raw[1]), str(raw[2]), int(raw[3]))
        except (ValueError, IndexError, TypeError):
            raise Invalid("The page cursor is not valid.", expression=["_cursor"]) from None
    versions = await repository.history(
        ctx.session,
        resource_type=resource_type,
        resource_id=resource_id,
        since=since_at,
        before=before,
        count=size + 1,
    )
    more = len(versions) > size
    versions = versions[:size]
    path = "/".join(p for p in (resource_type, resource_id) if p) + ("/" if resource_type else "") + "_history"
    applied = [(k, v) for k, v in (("_since", since), ("_count", count)) if v is not None]
    links = [{"relation": "self", "url": f"{settings.base_url}/{path}" + (f"?{urlencode(applied)}" if applied else "")}]
    if more:
        last = versions[-1]
        key = [last.last_updated.isoformat(), last.resource_type, last.id, last.version_id]
        token = base64.urlsafe_b64encode(json.dumps(key).encode()).decode().rstrip("=")
        links.append(
            {"relation": "next", "url": f"{settings.base_url}/{path}?{urlencode([*applied, ('_cursor', token)])}"}
        )
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "history", "link": links}
    if versions:
        bundle["entry"] = [_entry(v, settings.base_url) for v in versions]
    return fhir_response(bundle)


@dataclass
class HistoryRequest:
    """What every history route reads: the caller and the paging parameters."""

    request: Request
    ctx: ContextDep
    since: SinceQuery = None
    count: CountQuery = None
    cursor: CursorQuery = None

    async def page(self, resource_type: str | None, resource_id: str | None) -> Response:
        return await _history(self.request, self.ctx, resource_type, resource_id, self.since, self.count, self.cursor)

    def refuse_patient_scopes(self, resource_type: str, level: str) -> None:
        """Type and system history cross patients: not with patient/ scopes."""
        if self.ctx.authorize(resource_type, "r"):
            raise Forbidden(f"{level} history needs a system/ or user/ scope; patient/ scopes read one patient's data.")


HistoryDep = Annotated[HistoryRequest, Depends()]


@router.get("/_history", response_class=Response)
async def history_system(history: HistoryDep) -> Response:
    """Every version of every resource the caller may read, newest first (FHIR history, system level)."""
    history.refuse_patient_scopes("*", "System")
    return await history.page(None, None)


@router.get("/{resource_type}/_history", response_class=Response)
async def history_type(resource_type: TypePath, history: HistoryDep) -> Response:
    """Every version of every resource of one type, newest first (FHIR history, type level)."""
    interactions.check_type(resource_type)
    history.refuse_patient_scopes(resource_type, "Type")
    return await history.page(resource_type, None)


@router.get("/{resource_type}/{resource_id}/_history", response_class=Response)
async def history_instance(resource_type: TypePath, resource_id: IdPath, history: HistoryDep) -> Response:
    """Every version of one resource, newest first (FHIR history, instance level)."""
    interactions.check_type(resource_type)
    restricted = history.ctx.authorize(resource_type, "r")
    interactions.check_id(resource_id)
    if restricted:
        await history.ctx.require_member(resource_type, resource_id)
    return await history.page(resource_type, resource_id)
