"""The CapabilityStatement (``/metadata``) and SMART discovery document.

Both are public: FHIR clients read them before they hold a token
(http://hl7.org/fhir/R4/http.html#capabilities; SMART App Launch §2.1).
They state exactly what this server does today, no more.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from .. import __version__
from ..config import Settings
from ..interactions import SUPPORTED_TYPES, searchable_parameters
from ..search.parameters import parameters_for
from .fhir_http import fhir_response, negotiate

router = APIRouter(tags=["FHIR capabilities"])
_STARTED = datetime.now(UTC).isoformat(timespec="seconds")


_INTERACTIONS = (
    "read",
    "vread",
    "update",
    "patch",
    "delete",
    "history-instance",
    "history-type",
    "create",
    "search-type",
)


def _resource(resource_type: str) -> dict[str, Any]:
    references = sorted(p.code for p in parameters_for(resource_type).values() if p.type == "reference")
    entry: dict[str, Any] = {
        "type": resource_type,
        "versioning": "versioned-update",
        "readHistory": True,
        "updateCreate": True,
        "conditionalCreate": True,
        "conditionalRead": "full-support",
        "conditionalUpdate": True,
        "conditionalDelete": "single",
        "referencePolicy": ["literal", "logical"],
        "interaction": [{"code": code} for code in _INTERACTIONS],
        "searchInclude": [f"{resource_type}:{code}" for code in references],
        "searchRevInclude": sorted(
            f"{source}:{p.code}"
            for source in SUPPORTED_TYPES
            for p in parameters_for(source).values()
            if p.type == "reference" and (not p.target or resource_type in p.target)
        ),
        "searchParam": [
            {"name": code, "definition": url, "type": kind} for code, kind, url in searchable_parameters(resource_type)
        ],
    }
    if resource_type == "Patient":
        entry["operation"] = [
            {"name": "everything", "definition": "http://hl7.org/fhir/OperationDefinition/Patient-everything"}
        ]
    return entry


def capability_statement(settings: Settings) -> dict[str, Any]:
    """The server's CapabilityStatement (kind ``instance``)."""
    resources = [_resource(resource_type) for resource_type in sorted(SUPPORTED_TYPES)]
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": _STARTED,
        "kind": "instance",
        "software": {"name": "OncoStruct clinical", "version": __version__},
        "implementation": {"description": "OncoStruct clinical-context FHIR server", "url": settings.base_url},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        "rest": [
            {
                "mode": "server",
                "security": {
                    "service": [
                        {
                            "coding": [
                                {
                                    "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                                    "code": "SMART-on-FHIR",
                                }
                            ]
                        }
                    ],
                    "extension": [
                        {
                            "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
                            "extension": [{"url": "token", "valueUri": settings.token_url}],
                        }
                    ],
                },
                "resource": resources,
                "interaction": [{"code": "transaction"}, {"code": "batch"}, {"code": "history-system"}],
            }
        ],
    }


@router.get("/metadata", response_class=Response)
async def metadata(request: Request) -> Response:
    """The CapabilityStatement of this server (no token needed)."""
    negotiate(request)
    return fhir_response(capability_statement(request.app.state.settings))


@router.get("/.well-known/smart-configuration", response_class=Response)
async def smart_configuration(request: Request) -> Response:
    """SMART App Launch discovery: token endpoint, scopes and capabilities (no token needed)."""
    settings: Settings = request.app.state.settings
    body = {
        "issuer": settings.auth_issuer,
        "jwks_uri": settings.jwks_url,
        "token_endpoint": settings.token_url,
        "grant_types_supported": ["client_credentials"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "scopes_supported": [
            "system/*.cruds",
            "user/*.cruds",
            "patient/*.cruds",
            "system/*.read",
            "system/*.write",
            "patient/*.read",
        ],
        "capabilities": [
            "client-confidential-symmetric",
            "permission-v1",
            "permission-v2",
            "permission-patient",
            "permission-user",
            "context-standalone-patient",
        ],
    }
    return JSONResponse(body)
