"""The one error hierarchy of OncoStruct.

Domain code raises these; each API surface renders them in its own standard
format (see :mod:`oncostruct_shared.surfaces`). Routes never build error bodies
by hand.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar


class OncoStructError(Exception):
    """Base of every error a client or an upstream can cause.

    Parameters
    ----------
    detail
        Human-readable explanation of this occurrence. Never include patient
        data or credentials: it is returned to the client and may be logged.
    expression
        FHIRPath-style locations of the offending elements (e.g.
        ``Patient.birthDate``), rendered as ``OperationOutcome.issue.expression``
        and as the ``errors`` member of a problem document.
    headers
        Extra response headers (e.g. ``Retry-After``).
    extra
        Additional members for the rendered body (surface-specific).
    """

    status: ClassVar[int] = 500
    #: RFC 9457 ``title`` (a short, stable summary of the problem type).
    title: ClassVar[str] = "Internal Server Error"
    #: FHIR ``IssueType`` code (http://hl7.org/fhir/R4/valueset-issue-type.html).
    fhir_code: ClassVar[str] = "exception"
    #: Problem type slug; the problem ``type`` URI ends with it.
    slug: ClassVar[str] = "internal-error"

    def __init__(
        self,
        detail: str,
        *,
        expression: Sequence[str] | None = None,
        headers: Mapping[str, str] | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.expression = list(expression or [])
        self.headers = dict(headers or {})
        self.extra = dict(extra or {})


class Invalid(OncoStructError):
    """The request is malformed or breaks a rule of the standard it speaks."""

    status = 400
    title = "Bad Request"
    fhir_code = "invalid"
    slug = "invalid"


class Unauthorized(OncoStructError):
    """No, or no valid, bearer token (RFC 6750 §3)."""

    status = 401
    title = "Unauthorized"
    fhir_code = "login"
    slug = "unauthorized"


class Forbidden(OncoStructError):
    """A valid token that lacks the scope the operation needs."""

    status = 403
    title = "Forbidden"
    fhir_code = "forbidden"
    slug = "forbidden"


class NotFound(OncoStructError):
    """The target resource does not exist (or the route is unknown)."""

    status = 404
    title = "Not Found"
    fhir_code = "not-found"
    slug = "not-found"


class MethodNotAllowed(OncoStructError):
    """The route exists but not for this HTTP method."""

    status = 405
    title = "Method Not Allowed"
    fhir_code = "not-supported"
    slug = "method-not-allowed"


class NotAcceptable(OncoStructError):
    """None of the media types the client accepts can be produced."""

    status = 406
    title = "Not Acceptable"
    fhir_code = "not-supported"
    slug = "not-acceptable"


class Conflict(OncoStructError):
    """The request conflicts with the current state of the target."""

    status = 409
    title = "Conflict"
    fhir_code = "conflict"
    slug = "conflict"


class Gone(OncoStructError):
    """The target existed and was deleted."""

    status = 410
    title = "Gone"
    fhir_code = "deleted"
    slug = "gone"


class PreconditionFailed(OncoStructError):
    """A conditional request header (``If-Match`` …) did not hold."""

    status = 412
    title = "Precondition Failed"
    fhir_code = "conflict"
    slug = "precondition-failed"


class PayloadTooLarge(OncoStructError):
    """The request body is larger than the configured limit."""

    status = 413
    title = "Payload Too Large"
    fhir_code = "too-costly"
    slug = "payload-too-large"


class UnsupportedMediaType(OncoStructError):
    """The request body's media type is not one this route accepts."""

    status = 415
    title = "Unsupported Media Type"
    fhir_code = "not-supported"
    slug = "unsupported-media-type"


class Unprocessable(OncoStructError):
    """Well-formed but semantically wrong content (e.g. fails validation)."""

    status = 422
    title = "Unprocessable Content"
    fhir_code = "processing"
    slug = "unprocessable"


class PreconditionRequired(OncoStructError):
    """The operation needs a conditional request (``If-Match``) and none was sent (RFC 6585 §3)."""

    status = 428
    title = "Precondition Required"
    fhir_code = "required"
    slug = "precondition-required"


class UpstreamError(OncoStructError):
    """An upstream (database peer, service, PACS, Triton) answered with an error."""

    status = 502
    title = "Bad Gateway"
    fhir_code = "exception"
    slug = "upstream-error"


class UpstreamUnavailable(OncoStructError):
    """An upstream could not be reached or is not ready; try again later."""

    status = 503
    title = "Service Unavailable"
    fhir_code = "transient"
    slug = "upstream-unavailable"


#: Status code → error class, for mapping framework and upstream errors in one place.
ERROR_BY_STATUS: dict[int, type[OncoStructError]] = {
    cls.status: cls
    for cls in (
        Invalid,
        Unauthorized,
        Forbidden,
        NotFound,
        MethodNotAllowed,
        NotAcceptable,
        Conflict,
        Gone,
        PreconditionFailed,
        PayloadTooLarge,
        UnsupportedMediaType,
        Unprocessable,
        PreconditionRequired,
        UpstreamError,
        UpstreamUnavailable,
    )
}


def error_for_status(status: int) -> type[OncoStructError]:
    """Return the error class for an HTTP status code.

    Unknown 4xx codes map to :class:`Invalid`, unknown 5xx codes to
    :class:`OncoStructError` (an internal error).
    """
    if status in ERROR_BY_STATUS:
        return ERROR_BY_STATUS[status]
    return Invalid if 400 <= status < 500 else OncoStructError
