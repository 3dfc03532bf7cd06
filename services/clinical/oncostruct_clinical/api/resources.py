"""Instance-level FHIR interactions: create and read (http://hl7.org/fhir/R4/http.html)."""

from __future__ import annotations

import re
from email.utils import format_datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import Response

from oncostruct_shared.db import SessionDep
from oncostruct_shared.errors import Invalid, NotFound

from ..config import Settings
from ..repository import create_resource, read_resource
from .fhir_http import fhir_response, negotiate, read_resource_body, weak_etag
from .security import require_smart

#: The resource types this server stores (FHIR R4 names).
SUPPORTED_TYPES: frozenset[str] = frozenset(
    {
        "Patient",
        "Condition",
        "Observation",
        "Procedure",
        "MedicationRequest",
        "MedicationAdministration",
        "Medication",
        "BodyStructure",
        "ImagingStudy",
        "DiagnosticReport",
        "Specimen",
        "Practitioner",
        "PractitionerRole",
        "Organization",
        "Encounter",
        "Provenance",
        "Group",
        "FamilyMemberHistory",
        "ServiceRequest",
    }
)
_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")

router = APIRouter(tags=["FHIR resources"])
TypePath = Annotated[str, Path(description="FHIR resource type, e.g. Patient.")]
IdPath = Annotated[str, Path(description="Logical id of the resource.")]


def _check_type(resource_type: str) -> None:
    if resource_type not in SUPPORTED_TYPES:
        raise NotFound(f"Resource type {resource_type!r} is not supported by this server.")


@router.post(
    "/{resource_type}",
    status_code=201,
    dependencies=[Depends(require_smart("c"))],
    response_class=Response,
)
async def create(resource_type: TypePath, request: Request, session: SessionDep) -> Response:
    """Create a resource with a server-assigned id (FHIR create interaction)."""
    _check_type(resource_type)
    negotiate(request)
    content = await read_resource_body(request)
    if content.get("resourceType") != resource_type:
        raise Invalid(
            f"resourceType must be {resource_type!r} to create at /{resource_type}.", expression=["resourceType"]
        )
    row = await create_resource(session, resource_type, content)
    settings: Settings = request.app.state.settings
    headers = {
        "Location": f"{settings.base_url}/{resource_type}/{row.id}/_history/{row.version_id}",
        "ETag": weak_etag(row.version_id),
        "Last-Modified": format_datetime(row.last_updated, usegmt=True),
    }
    prefer = request.headers.get("prefer", "").replace(" ", "")
    body = None if "return=minimal" in prefer else row.content
    return fhir_response(body, status=201, headers=headers)


@router.get(
    "/{resource_type}/{resource_id}",
    dependencies=[Depends(require_smart("r"))],
    response_class=Response,
)
async def read(resource_type: TypePath, resource_id: IdPath, request: Request, session: SessionDep) -> Response:
    """Read the current version of a resource (FHIR read interaction)."""
    _check_type(resource_type)
    negotiate(request)
    if not _ID.match(resource_id):
        raise Invalid(f"{resource_id!r} is not a valid FHIR id.", expression=["id"])
    row = await read_resource(session, resource_type, resource_id)
    headers = {"ETag": weak_etag(row.version_id), "Last-Modified": format_datetime(row.last_updated, usegmt=True)}
    return fhir_response(row.content, headers=headers)
