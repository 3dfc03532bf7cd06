"""Type-level search by GET and ``POST _search`` (R4 §3.1.1, http://hl7.org/fhir/R4/search.html)."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import parse_qsl

from fastapi import APIRouter, Path, Request
from fastapi.responses import Response

from oncostruct_shared.errors import UnsupportedMediaType

from .. import interactions
from ..deps import ContextDep, FhirRoute
from .fhir_http import fhir_response, handling_preference, negotiate

router = APIRouter(tags=["FHIR search"], route_class=FhirRoute)
TypePath = Annotated[str, Path(description="FHIR resource type, e.g. Observation.")]


@router.get("/{resource_type}", response_class=Response)
async def search_type(resource_type: TypePath, request: Request, ctx: ContextDep) -> Response:
    """Search resources of one type with the parameters in the query (FHIR search)."""
    interactions.check_type(resource_type)
    negotiate(request)
    params = parse_qsl(request.url.query, keep_blank_values=True)
    outcome = await interactions.search(ctx, resource_type, params, handling_preference(request))
    return fhir_response(outcome.body)


@router.post("/{resource_type}/_search", response_class=Response)
async def search_type_post(resource_type: TypePath, request: Request, ctx: ContextDep) -> Response:
    """Search with form-encoded parameters in the body (and the query), R4 §3.1.1.1."""
    interactions.check_type(resource_type)
    negotiate(request)
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = await request.body()
    if body and media_type != "application/x-www-form-urlencoded":
        raise UnsupportedMediaType("POST _search takes application/x-www-form-urlencoded parameters.")
    params = parse_qsl(request.url.query, keep_blank_values=True) + parse_qsl(body.decode(), keep_blank_values=True)
    outcome = await interactions.search(ctx, resource_type, params, handling_preference(request))
    return fhir_response(outcome.body)
