"""Instance and type-level CRUD interactions: create, read, vread, update, patch, delete (R4 §3.1.0).

Conditional forms (``If-None-Exist`` create, ``PUT/DELETE Type?search``) live
here too because they share the routes of the plain ones. Conditional patch
(``PATCH Type?search``) is offered inside batch/transaction Bundles only: the
shared surface tests use ``PATCH /fhir/Patient`` as the example of a method
a route does not allow.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.responses import Response

from oncostruct_shared.errors import Invalid

from .. import interactions
from ..deps import ContextDep, FhirRoute
from ..interactions import last_modified_after
from .fhir_http import (
    fhir_response,
    negotiate,
    parse_etag,
    parse_http_date,
    read_patch_body,
    read_resource_body,
    weak_etag,
)
from .responses import outcome_headers, write_response

router = APIRouter(tags=["FHIR instance interactions"], route_class=FhirRoute)
TypePath = Annotated[str, Path(description="FHIR resource type, e.g. Patient.")]
IdPath = Annotated[str, Path(description="Logical id of the resource.")]


def _condition(request: Request) -> str:
    query = request.url.query
    if not query:
        raise Invalid("A conditional interaction needs search parameters after '?'.")
    return query


@router.post("/{resource_type}", status_code=201, response_class=Response)
async def create(resource_type: TypePath, request: Request, ctx: ContextDep) -> Response:
    """Create a resource with a server-assigned id (FHIR create; conditional with If-None-Exist)."""
    interactions.check_type(resource_type)
    negotiate(request)
    content = await read_resource_body(request)
    outcome = await interactions.create(ctx, resource_type, content, request.headers.get("if-none-exist"), alone=True)
    await ctx.session.commit()
    return write_response(outcome, request)


@router.get("/{resource_type}/{resource_id}", response_class=Response)
async def read(resource_type: TypePath, resource_id: IdPath, request: Request, ctx: ContextDep) -> Response:
    """Read the current version of a resource (FHIR read; 304 on If-None-Match/If-Modified-Since)."""
    interactions.check_type(resource_type)
    negotiate(request)
    outcome = await interactions.read(ctx, resource_type, resource_id)
    assert outcome.version is not None
    headers = outcome_headers(outcome, ctx.settings, location=False)
    # R4 §3.1.0.2 conditional read: RFC 9110 §13.1.2 If-None-Match wins over §13.1.3 If-Modified-Since.
    none_match = request.headers.get("if-none-match")
    if none_match is not None:
        tags = {tag.strip() for tag in none_match.split(",")}
        current = weak_etag(outcome.version.version_id)
        if "*" in tags or current in tags or current.removeprefix("W/") in tags:
            return Response(status_code=304, headers=headers)
    elif not last_modified_after(outcome.version, parse_http_date(request.headers.get("if-modified-since"))):
        return Response(status_code=304, headers=headers)
    return fhir_response(outcome.version.content, headers=headers)


@router.get("/{resource_type}/{resource_id}/_history/{version_id}", response_class=Response)
async def vread(
    resource_type: TypePath,
    resource_id: IdPath,
    version_id: Annotated[str, Path(description="The version (meta.versionId).")],
    request: Request,
    ctx: ContextDep,
) -> Response:
    """Read one version of a resource (FHIR vread)."""
    interactions.check_type(resource_type)
    negotiate(request)
    outcome = await interactions.vread(ctx, resource_type, resource_id, version_id)
    assert outcome.version is not None
    return fhir_response(outcome.version.content, headers=outcome_headers(outcome, ctx.settings, location=False))


async def _write(
    request: Request,
    ctx: ContextDep,
    resource_type: str,
    run: Callable[[int | None], Awaitable[interactions.Outcome]],
    *,
    body: bool = True,
) -> Response:
    """The common frame of update, conditional update, patch and delete: checks, If-Match, commit, response."""
    interactions.check_type(resource_type)
    if body:
        negotiate(request)
    outcome = await run(parse_etag(request.headers.get("if-match")))
    await ctx.session.commit()
    return write_response(outcome, request)


@router.put("/{resource_type}/{resource_id}", response_class=Response)
async def update(resource_type: TypePath, resource_id: IdPath, request: Request, ctx: ContextDep) -> Response:
    """Update a resource, or create it with this id (FHIR update; If-Match for version-aware updates)."""

    async def run(if_match: int | None) -> interactions.Outcome:
        content = await read_resource_body(request)
        return await interactions.update(ctx, resource_type, resource_id, content, if_match)

    return await _write(request, ctx, resource_type, run)


@router.put("/{resource_type}", response_class=Response)
async def conditional_update(resource_type: TypePath, request: Request, ctx: ContextDep) -> Response:
    """Update the one resource matching the search in the URL, or create it (FHIR conditional update)."""

    async def run(if_match: int | None) -> interactions.Outcome:
        condition, content = _condition(request), await read_resource_body(request)
        return await interactions.conditional_update(ctx, resource_type, condition, content, if_match)

    return await _write(request, ctx, resource_type, run)


@router.patch("/{resource_type}/{resource_id}", response_class=Response)
async def patch(resource_type: TypePath, resource_id: IdPath, request: Request, ctx: ContextDep) -> Response:
    """Apply a JSON Patch to a resource (FHIR patch)."""

    async def run(if_match: int | None) -> interactions.Outcome:
        operations = await read_patch_body(request)
        return await interactions.patch(ctx, resource_type, resource_id, operations, if_match)

    return await _write(request, ctx, resource_type, run)


@router.delete("/{resource_type}/{resource_id}", response_class=Response)
async def delete(resource_type: TypePath, resource_id: IdPath, request: Request, ctx: ContextDep) -> Response:
    """Delete a resource; its history stays (FHIR delete)."""

    async def run(if_match: int | None) -> interactions.Outcome:
        return await interactions.delete(ctx, resource_type, resource_id, if_match)

    return await _write(request, ctx, resource_type, run, body=False)


@router.delete("/{resource_type}", response_class=Response)
async def conditional_delete(resource_type: TypePath, request: Request, ctx: ContextDep) -> Response:
    """Delete the one resource matching the search in the URL (FHIR conditional delete)."""
    interactions.check_type(resource_type)
    outcome = await interactions.conditional_delete(ctx, resource_type, _condition(request))
    await ctx.session.commit()
    return write_response(outcome, request)
