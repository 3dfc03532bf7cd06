"""FHIR RESTful HTTP details: media types, ``_format``, bodies, ETags, Prefer (http://hl7.org/fhir/R4/http.html)."""

from __future__ import annotations

import json
import re
from datetime import datetime
from email.utils import format_datetime, parsedate_to_datetime
from typing import Any, Literal

from fastapi import Request
from fastapi.responses import Response

from oncostruct_shared.errors import Invalid, NotAcceptable, UnsupportedMediaType

FHIR_JSON = "application/fhir+json"
JSON_PATCH = "application/json-patch+json"
_JSON_TYPES = frozenset({FHIR_JSON, "application/json", "application/json+fhir", "json", "text/json"})
_XML_TYPES = frozenset({"application/fhir+xml", "application/xml", "application/xml+fhir", "xml", "text/xml"})
_WEAK_ETAG = re.compile(r'^(?:W/)?"(\d+)"$')

ReturnPreference = Literal["minimal", "representation", "OperationOutcome"]


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


def parse_json(raw: bytes) -> Any:
    """Parse a JSON body; :class:`Invalid` (400) when it is not JSON."""
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise Invalid(f"The body is not valid JSON: {exc}.") from None


async def read_resource_body(request: Request) -> dict[str, Any]:
    """Parse a FHIR JSON resource from the request body (415/400 when it is not one)."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type not in _JSON_TYPES:
        raise UnsupportedMediaType("Send the resource as application/fhir+json.")
    content = parse_json(await request.body())
    if not isinstance(content, dict):
        raise Invalid("The body must be a JSON object holding one FHIR resource.")
    return content


async def read_patch_body(request: Request) -> list[dict[str, Any]]:
    """Parse a JSON Patch document (RFC 6902; R4 §3.1.0.6 patch)."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != JSON_PATCH:
        raise UnsupportedMediaType(f"Send the patch as {JSON_PATCH} (FHIRPath Patch is not supported).")
    operations = parse_json(await request.body())
    if not isinstance(operations, list) or not all(isinstance(op, dict) for op in operations):
        raise Invalid("A JSON Patch document is an array of operation objects.")
    return operations


def weak_etag(version_id: int) -> str:
    """The weak ETag FHIR uses for a version (§2.21.0.10): ``W/"3"``."""
    return f'W/"{version_id}"'


def parse_etag(value: str | None) -> int | None:
    """The version in an ``If-Match`` value (``W/"3"`` or ``"3"``); 400 if it is not one."""
    if value is None:
        return None
    match = _WEAK_ETAG.match(value.strip())
    if match is None:
        raise Invalid(f'If-Match must be a version ETag like W/"3", not {value!r}.', expression=["If-Match"])
    return int(match[1])


def http_date(moment: datetime) -> str:
    """An HTTP-date (RFC 9110 §5.6.7) for ``Last-Modified``."""
    return format_datetime(moment, usegmt=True)


def parse_http_date(value: str | None) -> datetime | None:
    """The moment in an ``If-Modified-Since`` header, or None if absent/unparseable (RFC 9110 §13.1.3)."""
    if not value:
        return None
    try:
        return parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None


def return_preference(request: Request) -> ReturnPreference:
    """``Prefer: return=…`` (R4 §3.1.0.2.1), ``representation`` when absent."""
    for part in request.headers.get("prefer", "").split(";"):
        for item in part.split(","):
            key, _, value = item.strip().partition("=")
            if key == "return" and value in ("minimal", "representation", "OperationOutcome"):
                return value  # type: ignore[return-value]
    return "representation"


def handling_preference(request: Request) -> Literal["strict", "lenient"]:
    """``Prefer: handling=strict|lenient`` (R4 §3.1.1.3), lenient by default."""
    prefer = request.headers.get("prefer", "").replace(" ", "")
    return "strict" if "handling=strict" in prefer else "lenient"


def fhir_response(content: dict[str, Any] | None, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A FHIR JSON response (empty body when ``content`` is None)."""
    body = b"" if content is None else json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode()
    return Response(body, status_code=status, media_type=FHIR_JSON, headers=headers)


def information(message: str) -> dict[str, Any]:
    """An informational OperationOutcome (for ``Prefer: return=OperationOutcome``)."""
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "information", "code": "informational", "diagnostics": message}],
    }
