"""STOW-RS: store instances (PS3.18 §10.5).

The body (``multipart/related; type="application/dicom"``, PS3.18 §10.5.1.2.1)
is parsed as it streams and each part is spooled to its own file, so a multi-GB
study never sits in memory; a body that is not well-formed multipart is
rejected (400) before anything is stored. Each instance is then stored on its
own and atomically: its file is published in the object store (temp file,
fsync, rename) before its index rows are committed, and only committed
instances are acknowledged in the ReferencedSOPSequence.

Same SOP Instance UID again: identical content (SHA-256) is accepted again
(idempotent); different content follows ``duplicate_policy``: ``reject``
(FailureReason 0x0111, PS3.7 §C.4) or ``replace`` (the newer content wins).
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

from oncostruct_shared.errors import Invalid, NotAcceptable, UnsupportedMediaType
from oncostruct_shared.multipart import parse_accept, parse_media_type, spool_multipart, type_matches

from .. import parsing
from ..config import Settings
from ..deps import DicomwebDep, DicomwebRoute
from ..dicom_json import DICOM_JSON, DICOM_XML, dumps, element, native_dicom_model
from ..ingest import PartResult, ingest_files
from ..uids import require_uid

router = APIRouter(tags=["STOW-RS"], route_class=DicomwebRoute)
log = logging.getLogger("oncostruct.imaging.stow")

DICOM = "application/dicom"


def _response_media_type(request: Request) -> str:
    # PS3.18 §10.5.2: the response is application/dicom+json or application/dicom+xml.
    for media in parse_accept(request.headers.get("accept")):
        for offered in (DICOM_JSON, "application/json"):
            if type_matches(media.type, offered):
                return DICOM_JSON
        if media.type == DICOM_XML:
            return DICOM_XML
    raise NotAcceptable(f"Store responses are available as {DICOM_JSON} or {DICOM_XML}.")


def _boundary(request: Request) -> str:
    header = request.headers.get("content-type")
    if not header:
        raise UnsupportedMediaType('STOW-RS needs Content-Type: multipart/related; type="application/dicom".')
    media = parse_media_type(header)
    if media.type != "multipart/related":
        raise UnsupportedMediaType(
            f'STOW-RS accepts multipart/related; type="application/dicom" (PS3.18 §10.5.1.2), not {media.type}.'
        )
    part_type = (media.param("type") or DICOM).lower()
    if part_type != DICOM:
        raise UnsupportedMediaType(
            f"This origin server stores PS3.10 instances (type={DICOM}); type={part_type} is not supported."
        )
    boundary = media.param("boundary")
    if not boundary:
        raise Invalid("The multipart/related Content-Type has no boundary parameter (RFC 2046 §5.1.1).")
    return boundary


def _response_body(results: list[PartResult], base_url: str, study: str | None) -> dict[str, Any]:
    # PS3.18 Annex I: Store Instances Response Module.
    stored = [result for result in results if result.failure is None]
    failed = [result for result in results if result.failure is not None]
    studies = {result.study_instance_uid for result in stored} | ({study} if study else set())
    body: dict[str, Any] = {
        "00081190": element("UR", f"{base_url}/studies/{next(iter(studies))}" if len(studies) == 1 else None)
    }
    if failed:
        body["00081198"] = {
            "vr": "SQ",
            "Value": [
                {
                    "00081150": element("UI", result.sop_class_uid or None),
                    "00081155": element("UI", result.sop_instance_uid or None),
                    "00081197": element("US", result.failure),
                }
                for result in failed
            ],
        }
    if stored:
        body["00081199"] = {
            "vr": "SQ",
            "Value": [
                {
                    "00081150": element("UI", result.sop_class_uid),
                    "00081155": element("UI", result.sop_instance_uid),
                    "00081190": element(
                        "UR",
                        f"{base_url}/studies/{result.study_instance_uid}/series/{result.series_instance_uid}"
                        f"/instances/{result.sop_instance_uid}",
                    ),
                }
                for result in stored
            ],
        }
    return body


async def _store_instances(request: Request, settings: Settings, study: str | None) -> Response:
    media_type = _response_media_type(request)
    boundary = _boundary(request)
    spool: Path = request.app.state.spool
    parts = await spool_multipart(
        request.stream(),
        boundary,
        lambda: spool / f"{uuid.uuid4().hex}.part",
        max_header_bytes=settings.stow_max_part_header_bytes,
    )
    try:
        if not parts:
            raise Invalid("The multipart body holds no parts.")
        dicom = [part for part in parts if part.content_type.type == DICOM]
        stored = await ingest_files(request.app.state.ingest, [(p.path, p.size, p.sha256) for p in dicom], study)
        by_part = dict(zip((id(part) for part in dicom), stored, strict=True))
        results = [
            by_part.get(id(part))
            or PartResult("", "", failure=parsing.CANNOT_UNDERSTAND, detail=f"part type {part.content_type.type}")
            for part in parts
        ]
    finally:
        for part in parts:
            with contextlib.suppress(OSError):
                part.path.unlink()
    for result in results:
        if result.failure is not None:
            log.info("instance not stored", extra={"reason": f"0x{result.failure:04X}", "detail": result.detail})
    stored = [result for result in results if result.failure is None and not result.queued]
    if stored:  # those whose follow-up jobs were not queued with their index rows
        try:
            await request.app.state.events.stored(
                {r.study_instance_uid for r in stored if r.study_instance_uid},
                {r.series_instance_uid for r in stored if r.series_instance_uid},
            )
        except Exception:  # the instances are stored: a missed event must not turn that into a failure
            log.exception("could not queue the follow-up jobs of a store")
    failures = sum(result.failure is not None for result in results)
    status = 200 if failures == 0 else 409 if failures == len(results) else 202
    body = _response_body(results, settings.base_url, study)
    content = native_dicom_model(body) if media_type == DICOM_XML else dumps(body)
    return Response(content, status_code=status, media_type=media_type)


@router.post("/studies", response_class=Response)
async def store_instances(request: Request, ctx: DicomwebDep) -> Response:
    """Store instances (STOW-RS, PS3.18 §10.5) in whatever studies they belong to."""
    return await _store_instances(request, ctx.settings, None)


@router.post("/studies/{study}", response_class=Response)
async def store_instances_in_study(request: Request, study: str, ctx: DicomwebDep) -> Response:
    """Store instances of one study (STOW-RS, PS3.18 §10.5); instances of another study fail with 0xC409."""
    require_uid(study, "Study Instance UID")
    return await _store_instances(request, ctx.settings, study)
