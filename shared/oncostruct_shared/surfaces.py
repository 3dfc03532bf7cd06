"""Renderers of :class:`~oncostruct_shared.errors.OncoStructError`, one per API surface.

- :class:`ProblemSurface`: RFC 9457 ``application/problem+json`` (annotations,
  reconstruction, and the dev issuer).
- :class:`FhirSurface`: FHIR R4 ``OperationOutcome`` as ``application/fhir+json``
  (clinical; http://hl7.org/fhir/R4/http.html#summary: "an OperationOutcome
  SHOULD be returned" with 4xx/5xx).
- :class:`DicomwebSurface`: the HTTP status code PS3.18 assigns, plus a
  ``Warning`` header (PS3.18 §8.3.5.1 / RFC 7234 §5.5 ``299`` miscellaneous
  persistent warning) carrying the reason, and a problem document body for
  humans; STOW-RS responses with a FailedSOPSequence are built by the imaging
  service itself because they are results, not errors.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

from starlette.responses import Response

from .errors import OncoStructError


class Surface(Protocol):
    """How one API surface turns an error into an HTTP response."""

    def render(self, error: OncoStructError, *, instance: str, request_id: str) -> Response:
        """Render ``error`` for the request at path ``instance``."""
        ...


def _json_response(body: dict[str, Any], status: int, media_type: str, headers: dict[str, str]) -> Response:
    payload = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return Response(payload, status_code=status, media_type=media_type, headers=headers)


def problem_document(error: OncoStructError, *, instance: str, request_id: str) -> dict[str, Any]:
    """Build the RFC 9457 problem document for ``error``.

    The ``type`` is ``about:blank`` (RFC 9457 §4.2.1: the problem is what the
    status code says) unless the error carries a more specific ``type`` in
    ``extra``.
    """
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": error.title,
        "status": error.status,
        "detail": error.detail,
        "instance": instance,
        "request_id": request_id,
    }
    if error.expression:
        body["errors"] = [{"location": expr, "detail": error.detail} for expr in error.expression]
    body.update(error.extra)
    return body


class ProblemSurface:
    """RFC 9457 problem details."""

    media_type = "application/problem+json"

    def render(self, error: OncoStructError, *, instance: str, request_id: str) -> Response:
        body = problem_document(error, instance=instance, request_id=request_id)
        return _json_response(body, error.status, self.media_type, error.headers)


class FhirSurface:
    """FHIR R4 OperationOutcome."""

    media_type = "application/fhir+json"

    def render(self, error: OncoStructError, *, instance: str, request_id: str) -> Response:
        issue: dict[str, Any] = {
            "severity": "fatal" if error.status >= 500 else "error",
            "code": error.fhir_code,
            "diagnostics": error.detail,
        }
        if error.expression:
            issue["expression"] = error.expression
        outcome: dict[str, Any] = {"resourceType": "OperationOutcome", "issue": [issue]}
        outcome.update(error.extra)
        return _json_response(outcome, error.status, self.media_type, error.headers)


def warning_header(agent: str, text: str) -> str:
    """Format an RFC 7234 §5.5 ``Warning`` value (code 299) that HTTP can carry.

    Header values must be ISO-8859-1; anything else is replaced, and quotes
    and backslashes are escaped as the quoted-string rule asks.
    """
    safe = text.encode("ascii", "replace").decode("ascii").replace("\\", "\\\\").replace('"', '\\"')
    safe = " ".join(safe.split())
    return f'299 {agent} "{safe}"'


class DicomwebSurface:
    """DICOMweb: status code + ``Warning`` header, problem document body."""

    media_type = "application/problem+json"

    def __init__(self, agent: str = "oncostruct-imaging") -> None:
        self.agent = agent

    def render(self, error: OncoStructError, *, instance: str, request_id: str) -> Response:
        headers = {"Warning": warning_header(self.agent, error.detail), **error.headers}
        body = problem_document(error, instance=instance, request_id=request_id)
        return _json_response(body, error.status, self.media_type, headers)
