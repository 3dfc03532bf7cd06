"""FHIR RESTful HTTP details: media types, ``_format``, bodies, ETags (http://hl7.org/fhir/R4/http.html)."""

from __future__ import annotations

import json
from typing import Any

from fastapi import Request
from fastapi.responses import Response

from oncostruct_shared.errors import Invalid, NotAcceptable, UnsupportedMediaType

FHIR_JSON = "application/fhir+json"
_JSON_TYPES = frozenset({FHIR_JSON, "application/json", "application/json+fhir", "json", "text/json"})
_XML_TYPES = frozenset({"application/fhir+xml", "application/xml", "application/xml+fhir", "xml", "text/xml"})


def _media_types(header: str) -> list[str]:
    return [part.split(";")[0].strip().lower() for part in header.split(",") if part.strip()]


def negotiate(request: Request) -> None:
    """Check that the client accepts JSON (``_format`` wins over ``Accept``, §2.21.0.6); 406 otherwise."""
    requested = request.query_params.get("_format")
    wanted = _media_types(requested) if requested else _media_types(request.headers.get("accept", ""))
    if not wanted or any(t in _JSON_TYPES or t in ("*/*", "application/*") for t in wanted):
        return
    if any(t in _XML_TYPES for t in wanted):
        raise NotAcceptable("This server produces FHIR JSON only (application/fhir+json); XML is not supported.")
    raise NotAcceptable(f"Cannot produce any of: {', '.join(wanted)}. Use application/fhir+json.")


async def read_resource_body(request: Request) -> dict[str, Any]:
    """Parse a FHIR JSON resource from the request body (415/400 when it is not one)."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type not in _JSON_TYPES:
        raise UnsupportedMediaType("Send the resource as application/fhir+json.")
    raw = await request.body()
    try:
        content = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise Invalid(f"The body is not valid JSON: {exc}.") from None
    if not isinstance(content, dict):
        raise Invalid("The body must be a JSON object holding one FHIR resource.")
    return content


def weak_etag(version_id: int) -> str:
    """The weak ETag FHIR uses for a version (§2.21.0.10): ``W/"3"``."""
    return f'W/"{version_id}"'


def fhir_response(content: dict[str, Any] | None, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A FHIR JSON response (empty body when ``content`` is None)."""
    body = b"" if content is None else json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode()
    return Response(body, status_code=status, media_type=FHIR_JSON, headers=headers)
