"""Turning an interaction :class:`~oncostruct_clinical.interactions.Outcome` into an HTTP response."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import Response

from ..config import Settings
from ..interactions import Outcome
from .fhir_http import fhir_response, http_date, information, return_preference, weak_etag


def outcome_headers(outcome: Outcome, settings: Settings, *, location: bool) -> dict[str, str]:
    """``ETag``, ``Last-Modified`` and (for writes) ``Location`` of an outcome's version."""
    headers = dict(outcome.headers)
    version = outcome.version
    if version is not None:
        headers["ETag"] = weak_etag(version.version_id)
        headers["Last-Modified"] = http_date(version.last_updated)
        if location:
            headers["Location"] = (
                f"{settings.base_url}/{version.resource_type}/{version.id}/_history/{version.version_id}"
            )
    return headers


def write_response(outcome: Outcome, request: Request) -> Response:
    """Response to a write, honouring ``Prefer: return=`` (R4 §3.1.0.2.1)."""
    settings: Settings = request.app.state.settings
    headers = outcome_headers(outcome, settings, location=outcome.version is not None)
    preference = return_preference(request)
    if outcome.status == 204:
        body = information(outcome.message) if preference == "OperationOutcome" else None
        return fhir_response(body, status=200 if body else 204, headers=headers)
    if preference == "minimal":
        return fhir_response(None, status=outcome.status, headers=headers)
    if preference == "OperationOutcome" or outcome.version is None or outcome.version.content is None:
        return fhir_response(information(outcome.message), status=outcome.status, headers=headers)
    return fhir_response(outcome.version.content, status=outcome.status, headers=headers)
