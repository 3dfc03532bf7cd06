"""``Annotated`` dependency aliases of the annotation service."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header

from oncostruct_shared.auth import Principal, require_scopes
from oncostruct_shared.errors import Invalid, PreconditionRequired

ReaderDep = Annotated[Principal, Depends(require_scopes("annotations.read"))]
WriterDep = Annotated[Principal, Depends(require_scopes("annotations.write"))]
ReviewerDep = Annotated[Principal, Depends(require_scopes("annotations.review"))]


def etag(version: int) -> str:
    """The ETag of an annotation version (strong: the representation is exact per version)."""
    return f'"{version}"'


def expected_version(
    if_match: Annotated[str | None, Header(description="ETag of the version you edit.")] = None,
) -> int:
    """The version named by ``If-Match`` (RFC 9110 §13.1.1); 428 when absent (RFC 6585 §3)."""
    if if_match is None:
        raise PreconditionRequired("Send If-Match with the annotation's ETag so that no one else's change is lost.")
    value = if_match.strip().removeprefix("W/").strip('"')
    if not value.isdigit():
        raise Invalid(f"If-Match {if_match!r} is not an ETag this API issued.")
    return int(value)


IfMatchDep = Annotated[int, Depends(expected_version)]
