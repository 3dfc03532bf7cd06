"""WADO-RS: retrieve instances, metadata, frames, bulk data and rendered images (PS3.18 §10.4); DELETE.

Everything is answered from the index and ranged reads of the stored files:
metadata is the DICOM JSON computed at ingest; a frame is read at the byte
offsets recorded at ingest. Bodies stream with a random multipart boundary.

Accept negotiation (PS3.18 §8.7): media ranges in q order, quoted or unquoted
parameters; ``transfer-syntax=*`` → as stored; no ``transfer-syntax`` →
the media type's default (Explicit VR Little Endian for ``application/dicom``
and ``application/octet-stream``, §8.7.3.5.2); compressed data is decoded to
native when that is asked and a decoder is installed, else 406.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pydicom
from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from oncostruct_shared.errors import Invalid, NotAcceptable, NotFound
from oncostruct_shared.multipart import (
    MediaType,
    multipart_content,
    multipart_response,
    parse_accept,
    type_matches,
)

from .. import rendering
from ..config import Settings
from ..deps import DicomwebDep, DicomwebRoute
from ..dicom_json import DICOM_JSON
from ..layouts import SeriesLayouts
from ..parsing import keyword_tag, tag_hex
from ..repository import InstanceFile, delete_instances, find_instances
from ..uids import require_uid

router = APIRouter(tags=["WADO-RS"], route_class=DicomwebRoute)
log = logging.getLogger("oncostruct.imaging.wado")

DICOM = "application/dicom"
OCTET_STREAM = "application/octet-stream"
#: Frames up to this many bytes in all are answered from memory in one write; more stream frame by frame.
_IN_MEMORY_FRAMES_BYTES = 8 * 1024 * 1024
NATIVE_SYNTAXES = frozenset({ExplicitVRLittleEndian, ImplicitVRLittleEndian})
#: Media types of compressed frames (PS3.18 Table 8.7.3-2).
FRAME_MEDIA_TYPES: dict[str, str] = {
    "1.2.840.10008.1.2.4.50": "image/jpeg",
    "1.2.840.10008.1.2.4.51": "image/jpeg",
    "1.2.840.10008.1.2.4.57": "image/jpeg",
    "1.2.840.10008.1.2.4.70": "image/jpeg",
    "1.2.840.10008.1.2.4.80": "image/jls",
    "1.2.840.10008.1.2.4.81": "image/jls",
    "1.2.840.10008.1.2.4.90": "image/jp2",
    "1.2.840.10008.1.2.4.91": "image/jp2",
    "1.2.840.10008.1.2.4.92": "image/jpx",
    "1.2.840.10008.1.2.4.93": "image/jpx",
    "1.2.840.10008.1.2.5": "image/x-dicom-rle",
}


def _uids(study: str, series: str | None = None, instance: str | None = None) -> None:
    require_uid(study, "Study Instance UID")
    if series is not None:
        require_uid(series, "Series Instance UID")
    if instance is not None:
        require_uid(instance, "SOP Instance UID")


def _instance_url(settings: Settings, item: InstanceFile) -> str:
    return (
        f"{settings.base_url}/studies/{item.study_instance_uid}/series/{item.series_instance_uid}"
        f"/instances/{item.sop_instance_uid}"
    )


def _decodable(transfer_syntax: str) -> bool:
    if transfer_syntax in NATIVE_SYNTAXES or transfer_syntax == "1.2.840.10008.1.2.1.99":
        return True
    try:
        from pydicom.pixels.decoders.base import get_decoder

        return bool(get_decoder(UID(transfer_syntax)).is_available)
    except (NotImplementedError, ValueError):
        return False


# --- frames ---------------------------------------------------------------------


def parse_frame_list(text: str, count: int) -> list[int]:
    """``1,3,5`` → [1, 3, 5]; 400 if malformed, 404 if a frame does not exist (PS3.18 §10.4.1.1.1)."""
    numbers: list[int] = []
    for part in text.split(","):
        part = part.strip()
        if not part.isdigit() or int(part) < 1:
            raise Invalid(f"{part!r} is not a frame number (frame numbers start at 1).")
        numbers.append(int(part))
    missing = [number for number in numbers if number > count]
    if missing:
        raise NotFound(f"Frame {missing[0]} does not exist; this instance has {count} frame(s).")
    return numbers


@dataclass(frozen=True)
class FrameEncoding:
    """How frames are sent: as stored (``raw``) or decoded to native little endian."""

    raw: bool
    part_type: str
    content_type: str


def choose_frame_encoding(accept: str | None, item: InstanceFile) -> FrameEncoding:
    """How to send the frames of ``item`` to a client that sent ``accept`` (PS3.18 §8.7.3); 406 if no way."""
    stored = item.transfer_syntax_uid
    stored_native = stored in NATIVE_SYNTAXES or stored == "1.2.840.10008.1.2.2"
    stored_type = OCTET_STREAM if stored_native else FRAME_MEDIA_TYPES.get(stored, OCTET_STREAM)
    for media in parse_accept(accept):
        if media.type in ("*/*", "multipart/*"):
            return FrameEncoding(True, stored_type, f"{stored_type}; transfer-syntax={stored}")
        if media.type != "multipart/related":
            continue
        part_type = (media.param("type") or OCTET_STREAM).lower()
        wanted = media.param("transfer-syntax")
        if part_type == "*/*" or (
            wanted == "*" and (part_type == OCTET_STREAM or type_matches(part_type, stored_type))
        ):  # cornerstone asks type=application/octet-stream; transfer-syntax=* and takes what is stored
            return FrameEncoding(True, stored_type, f"{stored_type}; transfer-syntax={stored}")
        if part_type == OCTET_STREAM:
            if stored in NATIVE_SYNTAXES and wanted in (None, ExplicitVRLittleEndian, ImplicitVRLittleEndian):
                return FrameEncoding(True, OCTET_STREAM, f"{OCTET_STREAM}; transfer-syntax={ExplicitVRLittleEndian}")
            if wanted in (None, ExplicitVRLittleEndian) and _decodable(stored):
                return FrameEncoding(False, OCTET_STREAM, f"{OCTET_STREAM}; transfer-syntax={ExplicitVRLittleEndian}")
            continue
        if type_matches(part_type, stored_type) and wanted in (None, stored) and not stored_native:
            return FrameEncoding(True, stored_type, f"{stored_type}; transfer-syntax={stored}")
    raise NotAcceptable(
        f"Frames of this instance are available as {stored_type} (transfer syntax {stored})"
        + (" or decoded as application/octet-stream." if _decodable(stored) else ".")
    )


def _decode_frames(data: bytes, numbers: list[int]) -> list[bytes]:
    from pydicom.pixels.utils import pixel_array

    return [pixel_array(io.BytesIO(data), index=number - 1).tobytes() for number in numbers]


async def _frame_bytes(store: Any, item: InstanceFile, numbers: list[int], raw: bool) -> list[bytes]:
    if raw and item.frames is not None:
        frames = []
        for number in numbers:
            fragments = item.frames[number - 1]
            if len(fragments) == 1:
                frames.append(await store.read_range(item.storage_key, fragments[0][0], fragments[0][1]))
            else:
                parts = [await store.read_range(item.storage_key, offset, length) for offset, length in fragments]
                frames.append(b"".join(parts))
        return frames
    data = await store.read_range(item.storage_key, 0, item.size)
    if raw:  # frame boundaries unknown at ingest: let pydicom split the encapsulated data
        from pydicom.encaps import generate_frames

        def split() -> list[bytes]:
            ds = pydicom.dcmread(io.BytesIO(data))
            frames = list(generate_frames(ds.PixelData, number_of_frames=item.number_of_frames or 1))
            return [frames[number - 1] for number in numbers]

        return await asyncio.to_thread(split)
    return await asyncio.to_thread(_decode_frames, data, numbers)


@router.get("/studies/{study}/series/{series}/instances/{instance}/frames/{frames}", response_class=Response)
async def retrieve_frames(
    request: Request,
    study: str,
    series: str,
    instance: str,
    frames: str,
    ctx: DicomwebDep,
) -> Response:
    """Retrieve frames of an instance (WADO-RS, PS3.18 §10.4)."""
    _uids(study, series, instance)
    layouts: SeriesLayouts = request.app.state.layouts
    item, cached = await layouts.instance(await ctx.pool(), study, series, instance)
    try:
        return await _frames_response(ctx, item, frames)
    except NotFound:
        if not cached:
            raise
    layouts.forget(study, series)  # the cached layout's file is gone (deleted or replaced elsewhere)
    (item,) = await find_instances(await ctx.pool(), study, series, instance, with_layout=True)
    return await _frames_response(ctx, item, frames)


async def _frames_response(ctx: DicomwebDep, item: InstanceFile, frames: str) -> Response:
    if not item.number_of_frames:
        raise NotFound("This instance has no pixel data frames.")
    numbers = parse_frame_list(frames, item.number_of_frames)
    encoding = choose_frame_encoding(ctx.request.headers.get("accept"), item)
    if encoding.raw and item.frames is not None:
        size = sum(length for number in numbers for _, length in item.frames[number - 1])
        if size > _IN_MEMORY_FRAMES_BYTES:  # many or large frames: read each as the response streams

            async def parts() -> AsyncIterator[tuple[str, AsyncIterator[bytes]]]:
                for number in numbers:
                    (frame,) = await _frame_bytes(ctx.store, item, [number], raw=True)
                    yield encoding.content_type, _once(frame)

            return multipart_response(parts(), encoding.part_type)
    data = await _frame_bytes(ctx.store, item, numbers, encoding.raw)
    return multipart_content([(encoding.content_type, frame) for frame in data], encoding.part_type)


# --- instances (multipart/related; type="application/dicom") -------------------


def _choose_instance_syntax(request: Request, items: list[InstanceFile]) -> str:
    """The transfer syntax to send (``*``: as stored); 406 when no acceptable one can be produced."""
    for media in parse_accept(request.headers.get("accept")):
        if media.type in ("*/*", "multipart/*"):
            return "*"
        if media.type != "multipart/related":
            continue
        part_type = (media.param("type") or DICOM).lower()
        if part_type not in (DICOM, "application/*", "*/*"):
            continue
        wanted = media.param("transfer-syntax") or ExplicitVRLittleEndian
        if wanted == "*":
            return "*"
        if all(item.transfer_syntax_uid == wanted for item in items):
            return wanted
        if wanted in NATIVE_SYNTAXES and all(_decodable(item.transfer_syntax_uid) for item in items):
            return wanted
    raise NotAcceptable(
        'Instances are available as multipart/related; type="application/dicom" with their stored transfer '
        "syntax (transfer-syntax=*) or, where decodable, Explicit/Implicit VR Little Endian."
    )


def _transcode(data: bytes, target: str) -> bytes:
    ds = pydicom.dcmread(io.BytesIO(data))
    if ds.file_meta.TransferSyntaxUID.is_compressed and "PixelData" in ds:
        ds.decompress()
    ds.file_meta.TransferSyntaxUID = UID(target)
    out = io.BytesIO()
    ds.save_as(out, implicit_vr=target == ImplicitVRLittleEndian, little_endian=True, enforce_file_format=True)
    return out.getvalue()


#: Instances up to this size are read whole, several per store call (up to the batch size in all).
_SMALL_INSTANCE_BYTES = 1024 * 1024
_READ_BATCH_BYTES = 4 * 1024 * 1024


def _read_batches(items: list[InstanceFile]) -> list[list[InstanceFile]]:
    """Consecutive small instances grouped up to the batch size; a large one alone (streamed)."""
    batches: list[list[InstanceFile]] = []
    size = 0
    for item in items:
        small = item.size <= _SMALL_INSTANCE_BYTES
        if (
            small
            and batches
            and size + item.size <= _READ_BATCH_BYTES
            and batches[-1][-1].size <= _SMALL_INSTANCE_BYTES
        ):
            batches[-1].append(item)
            size += item.size
        else:
            batches.append([item])
            size = item.size
    return batches


async def _instance_parts(
    store: Any, items: list[InstanceFile], syntax: str
) -> AsyncIterator[tuple[str, AsyncIterator[bytes]]]:
    for batch in _read_batches(items):
        if (syntax == "*" or all(item.transfer_syntax_uid == syntax for item in batch)) and (
            len(batch) > 1 or batch[0].size <= _SMALL_INSTANCE_BYTES
        ):
            contents = await store.read_objects([item.storage_key for item in batch])
            for item, data in zip(batch, contents, strict=True):
                yield f"{DICOM}; transfer-syntax={item.transfer_syntax_uid}", _once(data)
        else:
            async for part in _instance_parts_one_by_one(store, batch, syntax):
                yield part


async def _instance_parts_one_by_one(
    store: Any, items: list[InstanceFile], syntax: str
) -> AsyncIterator[tuple[str, AsyncIterator[bytes]]]:
    for item in items:
        if syntax == "*" or item.transfer_syntax_uid == syntax:
            yield f"{DICOM}; transfer-syntax={item.transfer_syntax_uid}", store.iter_chunks(item.storage_key)
        else:
            data = await store.read_range(item.storage_key, 0, item.size)
            transcoded = await asyncio.to_thread(_transcode, data, syntax)
            yield f"{DICOM}; transfer-syntax={syntax}", _once(transcoded)


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


async def _retrieve(ctx: DicomwebDep, study: str, series: str | None = None, instance: str | None = None) -> Response:
    _uids(study, series, instance)
    items = await find_instances(await ctx.pool(), study, series, instance)
    syntax = _choose_instance_syntax(ctx.request, items)
    as_stored = all(syntax in ("*", item.transfer_syntax_uid) for item in items)  # sizes known: Content-Length
    sizes = (
        [(f"{DICOM}; transfer-syntax={item.transfer_syntax_uid}", item.size) for item in items] if as_stored else None
    )
    return multipart_response(_instance_parts(ctx.store, items, syntax), DICOM, sizes=sizes)


@router.get("/studies/{study}", response_class=Response)
async def retrieve_study(request: Request, study: str, ctx: DicomwebDep) -> Response:
    """Retrieve a study's instances (WADO-RS, PS3.18 §10.4)."""
    return await _retrieve(ctx, study)


@router.get("/studies/{study}/series/{series}", response_class=Response)
async def retrieve_series(request: Request, study: str, series: str, ctx: DicomwebDep) -> Response:
    """Retrieve a series' instances (WADO-RS, PS3.18 §10.4)."""
    return await _retrieve(ctx, study, series)


@router.get("/studies/{study}/series/{series}/instances/{instance}", response_class=Response)
async def retrieve_instance(request: Request, study: str, series: str, instance: str, ctx: DicomwebDep) -> Response:
    """Retrieve one instance (WADO-RS, PS3.18 §10.4)."""
    return await _retrieve(ctx, study, series, instance)


# --- metadata -------------------------------------------------------------------


def _accept_json(request: Request) -> None:
    for media in parse_accept(request.headers.get("accept")):
        if type_matches(media.type, DICOM_JSON) or type_matches(media.type, "application/json"):
            return
    raise NotAcceptable(f"Metadata is available as {DICOM_JSON} only.")


async def _metadata(ctx: DicomwebDep, study: str, series: str | None = None, instance: str | None = None) -> Response:
    _uids(study, series, instance)
    _accept_json(ctx.request)
    items = await find_instances(await ctx.pool(), study, series, instance, with_metadata=True)
    # The ETag changes when any instance's content does (PS3.18 §8.3.6 caching).
    digest = hashlib.sha256()
    for item in items:
        digest.update(item.content_sha256.encode("ascii"))
    etag = f'"{digest.hexdigest()[:32]}"'
    headers = {"ETag": etag, "Cache-Control": "private, no-cache"}
    if etag in [tag.strip() for tag in ctx.request.headers.get("if-none-match", "").split(",")]:
        return Response(status_code=304, headers=headers)
    body = b"[" + b",".join((item.metadata_json or "{}").encode("utf-8") for item in items) + b"]"
    body = body.replace(b'"BulkDataURI":"', b'"BulkDataURI":"' + ctx.settings.base_url.encode("utf-8"))
    return Response(body, media_type=DICOM_JSON, headers=headers)


@router.get("/studies/{study}/metadata", response_class=Response)
async def retrieve_study_metadata(request: Request, study: str, ctx: DicomwebDep) -> Response:
    """Retrieve the metadata of a study's instances (WADO-RS, PS3.18 §10.4)."""
    return await _metadata(ctx, study)


@router.get("/studies/{study}/series/{series}/metadata", response_class=Response)
async def retrieve_series_metadata(request: Request, study: str, series: str, ctx: DicomwebDep) -> Response:
    """Retrieve the metadata of a series' instances (WADO-RS, PS3.18 §10.4)."""
    return await _metadata(ctx, study, series)


@router.get("/studies/{study}/series/{series}/instances/{instance}/metadata", response_class=Response)
async def retrieve_instance_metadata(
    request: Request, study: str, series: str, instance: str, ctx: DicomwebDep
) -> Response:
    """Retrieve one instance's metadata (WADO-RS, PS3.18 §10.4)."""
    return await _metadata(ctx, study, series, instance)


# --- bulk data ------------------------------------------------------------------


def _accept_octet_stream(request: Request) -> None:
    for media in parse_accept(request.headers.get("accept")):
        if media.type in ("*/*", "multipart/*", OCTET_STREAM):
            return
        if media.type == "multipart/related" and type_matches(media.param("type") or OCTET_STREAM, OCTET_STREAM):
            return
    raise NotAcceptable('Bulk data is available as multipart/related; type="application/octet-stream".')


def _nested_value(data: bytes, path: list[str]) -> bytes:
    dataset: Any = pydicom.dcmread(io.BytesIO(data))
    value: Any = None
    index = 0
    while index < len(path):
        tag = keyword_tag(path[index])
        if tag is None or tag not in dataset:
            raise NotFound("No such bulk data element in this instance.")
        value = dataset[tag].value
        if index + 1 < len(path):
            position = path[index + 1]
            if not position.isdigit() or int(position) >= len(value or []):
                raise NotFound("No such bulk data element in this instance.")
            dataset = value[int(position)]
            index += 2
        else:
            index += 1
    if not isinstance(value, bytes | bytearray):
        raise NotFound("That element holds no bulk data.")
    return bytes(value)


@router.get("/studies/{study}/series/{series}/instances/{instance}/bulkdata/{path:path}", response_class=Response)
async def retrieve_bulkdata(
    request: Request,
    study: str,
    series: str,
    instance: str,
    path: str,
    ctx: DicomwebDep,
) -> Response:
    """Retrieve one bulk data element of an instance (WADO-RS, PS3.18 §10.4)."""
    _uids(study, series, instance)
    _accept_octet_stream(request)
    (item,) = await find_instances(await ctx.pool(), study, series, instance, with_layout=True)
    store = ctx.store
    steps = [step for step in path.split("/") if step]
    if not steps:
        raise NotFound("No bulk data element named.")
    top = keyword_tag(steps[0])
    location = item.bulkdata.get(tag_hex(top)) if top is not None and len(steps) == 1 else None
    if location is not None:
        value = await store.read_range(item.storage_key, location[0], location[1])
    else:
        data = await store.read_range(item.storage_key, 0, item.size)
        value = await asyncio.to_thread(_nested_value, data, steps)

    async def parts() -> AsyncIterator[tuple[str, AsyncIterator[bytes]]]:
        yield OCTET_STREAM, _once(value)

    return multipart_response(parts(), OCTET_STREAM)


# --- rendered and thumbnail -------------------------------------------------------


def _rendered_media_type(request: Request) -> str:
    for media in parse_accept(request.headers.get("accept")):
        if media.type in ("*/*", "image/*"):
            return "image/jpeg"
        if media.type in rendering.RENDERED_MEDIA_TYPES:
            return media.type
    raise NotAcceptable(f"Rendered images are available as {', '.join(rendering.RENDERED_MEDIA_TYPES)}.")


async def _render(ctx: DicomwebDep, item: InstanceFile, frame: int, thumbnail: bool) -> Response:
    import json

    settings = ctx.settings
    media_type = _rendered_media_type(ctx.request)
    options = rendering.RenderOptions.parse(dict(ctx.request.query_params))
    metadata = json.loads(item.metadata_json or "{}")
    pixels = rendering.PixelDescription.from_metadata(metadata)
    if not item.number_of_frames:
        raise NotFound("This instance has no pixel data to render.")
    parse_frame_list(str(frame), item.number_of_frames)
    native = item.transfer_syntax_uid in NATIVE_SYNTAXES and item.frames is not None
    (data,) = await _frame_bytes(ctx.store, item, [frame], raw=native)
    if not native and not _decodable(item.transfer_syntax_uid):
        raise NotAcceptable("This instance's pixel data cannot be decoded for rendering.")

    def draw() -> bytes:
        if native:
            array = rendering.native_frame_array(data, pixels)
        else:
            import numpy as np

            array = np.frombuffer(data, dtype=_decoded_dtype(pixels)).reshape(
                (pixels.rows, pixels.columns, pixels.samples_per_pixel)
                if pixels.samples_per_pixel > 1
                else (pixels.rows, pixels.columns)
            )
        image = rendering.to_display(array, pixels, options)
        box = options.viewport or ((settings.thumbnail_size, settings.thumbnail_size) if thumbnail else None)
        if box is not None:
            image = rendering.fit(image, box)
        return rendering.encode(image, media_type, options.quality or settings.rendered_jpeg_quality)

    return Response(await asyncio.to_thread(draw), media_type=media_type)


def _decoded_dtype(pixels: rendering.PixelDescription) -> str:
    size = {8: "1", 16: "2", 32: "4"}.get(pixels.bits_allocated, "2")
    return f"<{'i' if pixels.pixel_representation else 'u'}{size}"


async def _rendered(
    ctx: DicomwebDep,
    study: str,
    series: str | None = None,
    instance: str | None = None,
    frame: str | None = None,
    *,
    thumbnail: bool,
) -> Response:
    """Render the instance (or the middle image of a study or series), frame ``frame`` or the first."""
    _uids(study, series, instance)
    items = await find_instances(await ctx.pool(), study, series, instance, with_metadata=True, with_layout=True)
    with_pixels = [item for item in items if item.number_of_frames]
    if not with_pixels:
        raise NotFound("Nothing with pixel data to render here.")
    item = with_pixels[len(with_pixels) // 2]  # the middle image represents a study or series
    frames = parse_frame_list(frame, item.number_of_frames or 0) if frame is not None else [1]
    if len(frames) != 1:
        raise Invalid("A rendered frame is one frame; ask for each frame on its own.", expression=["frame"])
    return await _render(ctx, item, frames[0], thumbnail=thumbnail)


@router.get("/studies/{study}/series/{series}/instances/{instance}/rendered", response_class=Response)
async def retrieve_rendered_instance(
    request: Request, study: str, series: str, instance: str, ctx: DicomwebDep
) -> Response:
    """Retrieve an instance rendered as an image (first frame; WADO-RS, PS3.18 §10.4)."""
    return await _rendered(ctx, study, series, instance, thumbnail=False)


@router.get("/studies/{study}/series/{series}/instances/{instance}/frames/{frame}/rendered", response_class=Response)
async def retrieve_rendered_frame(
    request: Request, study: str, series: str, instance: str, frame: str, ctx: DicomwebDep
) -> Response:
    """Retrieve one frame rendered as an image (WADO-RS, PS3.18 §10.4)."""
    return await _rendered(ctx, study, series, instance, frame, thumbnail=False)


@router.get("/studies/{study}/thumbnail", response_class=Response)
async def retrieve_study_thumbnail(request: Request, study: str, ctx: DicomwebDep) -> Response:
    """Retrieve a thumbnail of a study (its middle image; PS3.18 §10.4)."""
    return await _rendered(ctx, study, thumbnail=True)


@router.get("/studies/{study}/series/{series}/thumbnail", response_class=Response)
async def retrieve_series_thumbnail(request: Request, study: str, series: str, ctx: DicomwebDep) -> Response:
    """Retrieve a thumbnail of a series (its middle image; PS3.18 §10.4)."""
    return await _rendered(ctx, study, series, thumbnail=True)


@router.get("/studies/{study}/series/{series}/instances/{instance}/thumbnail", response_class=Response)
async def retrieve_instance_thumbnail(
    request: Request, study: str, series: str, instance: str, ctx: DicomwebDep
) -> Response:
    """Retrieve a thumbnail of an instance (PS3.18 §10.4)."""
    return await _rendered(ctx, study, series, instance, thumbnail=True)


@router.get("/studies/{study}/series/{series}/instances/{instance}/frames/{frame}/thumbnail", response_class=Response)
async def retrieve_frame_thumbnail(
    request: Request, study: str, series: str, instance: str, frame: str, ctx: DicomwebDep
) -> Response:
    """Retrieve a thumbnail of one frame (PS3.18 §10.4)."""
    return await _rendered(ctx, study, series, instance, frame, thumbnail=True)


# --- delete ---------------------------------------------------------------------


async def _delete(ctx: DicomwebDep, study: str, series: str | None = None, instance: str | None = None) -> Response:
    _uids(study, series, instance)
    session = ctx.session
    async with session.begin():
        keys = await delete_instances(session, study, series, instance)
    ctx.request.app.state.layouts.forget(study, series)
    for key in keys:  # after the commit: a crash in between leaves unreferenced files, never dangling rows
        await ctx.store.delete(key)
    return Response(status_code=204)


@router.delete("/studies/{study}", response_class=Response, status_code=204)
async def delete_study(request: Request, study: str, ctx: DicomwebDep) -> Response:
    """Delete a study and its instances (needs scope dicomweb.delete)."""
    return await _delete(ctx, study)


@router.delete("/studies/{study}/series/{series}", response_class=Response, status_code=204)
async def delete_series(request: Request, study: str, series: str, ctx: DicomwebDep) -> Response:
    """Delete a series and its instances (needs scope dicomweb.delete)."""
    return await _delete(ctx, study, series)


@router.delete("/studies/{study}/series/{series}/instances/{instance}", response_class=Response, status_code=204)
async def delete_instance(request: Request, study: str, series: str, instance: str, ctx: DicomwebDep) -> Response:
    """Delete one instance (needs scope dicomweb.delete)."""
    return await _delete(ctx, study, series, instance)


__all__ = ["MediaType", "router"]
