"""Reading a PS3.10 file once, at ingest: index keys, DICOM JSON, frame and bulk data offsets.

Everything QIDO-RS and WADO-RS later answer from the index is computed here, so
no stored file is parsed again to answer a search, a metadata request or a
frame request. The file is read up to Pixel Data only; pixel data is located
by reading the element and item headers (PS3.5 §7.5, §A.4), never loaded.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import json
import struct
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, BinaryIO

import pydicom
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import BaseTag, Tag
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian

from . import fastjson, rawheader
from .uids import is_valid_uid

# Failure Reason (0008,1197) values, PS3.18 Table I.2-2 and PS3.7 Annex C.
PROCESSING_FAILURE = 0x0110
DUPLICATE_SOP_INSTANCE = 0x0111  # PS3.7 §C.4 "Duplicate SOP Instance"
OUT_OF_RESOURCES = 0xA700
DATA_SET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
CANNOT_UNDERSTAND = 0xC000
# In the "Cannot understand" (Cxxx) range of Table I.2-2; the value dcm4chee-arc and
# other archives use for an instance whose Study Instance UID differs from the one
# in the target resource /studies/{study} (PS3.18 §10.5.1 names the mismatch a
# conflict, Table 10.5.3-1).
STUDY_INSTANCE_UID_MISMATCH = 0xC409

PIXEL_DATA_TAGS = {0x7FE00008: 32, 0x7FE00009: 64, 0x7FE00010: 0}
_BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN", "OB or OW", "US or OW"})
_LONG_LENGTH_VRS = frozenset(
    {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
)
_ITEM = 0xFFFEE000
_SEQUENCE_DELIMITER = 0xFFFEE0DD
_UNDEFINED = 0xFFFFFFFF

#: Patient and study level attributes kept on the study row (PS3.3 §C.7.1.1, §C.7.2.1, §C.7.2.2).
STUDY_LEVEL_TAGS = frozenset(
    int(tag, 16)
    for tag in [
        "00080005",
        "00080020",
        "00080030",
        "00080050",
        "00080051",
        "00080090",
        "00080201",
        "00081030",
        "00081032",
        "00081060",
        "00100010",
        "00100020",
        "00100021",
        "00100030",
        "00100032",
        "00100040",
        "00101000",
        "00101001",
        "00101010",
        "00101020",
        "00101030",
        "00102160",
        "00104000",
        "0020000D",
        "00200010",
        "00321060",
    ]
)
#: Series level attributes kept on the series row (PS3.3 §C.7.3.1, §C.7.5.1).
SERIES_LEVEL_TAGS = frozenset(
    int(tag, 16)
    for tag in [
        "00080021",
        "00080031",
        "00080060",
        "00080070",
        "00080080",
        "00081010",
        "0008103E",
        "00081070",
        "00081090",
        "00180015",
        "00185100",
        "0020000E",
        "00200011",
        "00200052",
        "00200060",
        "00400244",
        "00400245",
        "00400254",
        "00400275",
    ]
)
_STUDY_LEVEL_KEYS = frozenset(f"{tag:08X}" for tag in STUDY_LEVEL_TAGS)
_SERIES_LEVEL_KEYS = frozenset(f"{tag:08X}" for tag in SERIES_LEVEL_TAGS)


class InstanceRejected(Exception):
    """The part cannot be stored; ``reason`` is its Failure Reason (0008,1197)."""

    def __init__(self, reason: int, detail: str, sop_class_uid: str = "", sop_instance_uid: str = "") -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.sop_class_uid = sop_class_uid
        self.sop_instance_uid = sop_instance_uid


@dataclass
class PersonNameGroups:
    """The three component groups of a PN value (PS3.5 §6.2.1)."""

    alphabetic: str | None = None
    ideographic: str | None = None
    phonetic: str | None = None


@dataclass
class ParsedInstance:
    """What the index stores about one instance."""

    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    transfer_syntax_uid: str
    patient: dict[str, Any]
    study: dict[str, Any]
    series: dict[str, Any]
    instance: dict[str, Any]
    #: The DICOM JSON of the instance, serialised (compact UTF-8 JSON): it crosses from the parser
    #: process as one string, and is stored as it is.
    metadata_json: str
    study_attributes: dict[str, Any]
    series_attributes: dict[str, Any]
    frames: list[list[list[int]]] | None
    bulkdata: dict[str, list[int]] = field(default_factory=dict)


def tag_hex(tag: int) -> str:
    """``00100010`` — the DICOM JSON key of a tag (PS3.18 §F.2.1.1)."""
    return f"{tag:08X}"


def parse_da(value: str | None) -> date | None:
    """A DA value as a date; None when empty or not a valid date (the index is lenient, the file is kept)."""
    if not value or len(value) != 8 or not value.isdigit():
        return None
    try:
        return date(int(value[:4]), int(value[4:6]), int(value[6:]))
    except ValueError:
        return None


def normalize_tm(value: str | None) -> str | None:
    """A TM value as ``HHMMSS.FFFFFF`` so that string order is time order; None if not a time."""
    if not value:
        return None
    text = value.strip().replace(":", "")
    whole, _, fraction = text.partition(".")
    if not whole.isdigit() or len(whole) not in (2, 4, 6) or (fraction and not fraction.isdigit()):
        return None
    whole = whole.ljust(6, "0")
    if int(whole[:2]) > 23 or int(whole[2:4]) > 59 or int(whole[4:6]) > 60:
        return None
    return f"{whole}.{fraction[:6].ljust(6, '0')}"


def _entry_text(entry: dict[str, Any] | None) -> str | None:
    if entry is None:
        return None
    value = (entry.get("Value") or [None])[0]
    if value is None or value == "" or isinstance(value, dict):
        return None
    return str(value).strip() or None


class _Attributes:
    """First values of top-level attributes, from the instance's computed DICOM JSON (no second conversion)."""

    def __init__(self, metadata: dict[str, Any]) -> None:
        self.metadata = metadata

    def _entry(self, keyword: str) -> dict[str, Any] | None:
        key = _keyword_key(keyword)
        return self.metadata.get(key) if key is not None else None

    def text(self, keyword: str) -> str | None:
        return _entry_text(self._entry(keyword))

    def int(self, keyword: str) -> int | None:
        text = self.text(keyword)
        try:
            return int(float(text)) if text is not None else None
        except ValueError:
            return None

    def person_name(self, keyword: str) -> PersonNameGroups:
        """The component groups of a PN attribute's first value (character set applied)."""
        entry = self._entry(keyword)
        value = (entry.get("Value") or [None])[0] if entry is not None else None
        if isinstance(value, dict):
            return PersonNameGroups(
                value.get("Alphabetic") or None, value.get("Ideographic") or None, value.get("Phonetic") or None
            )
        return PersonNameGroups(alphabetic=str(value) if value else None)

    def sequence_values(self, sequence: str, keyword: str) -> list[str]:
        """The values of ``keyword`` in the items of ``sequence``."""
        entry, key = self._entry(sequence), _keyword_key(keyword)
        if entry is None or key is None:
            return []
        texts = (_entry_text(item.get(key)) for item in entry.get("Value") or [] if isinstance(item, dict))
        return [text for text in texts if text]


def _element_json(element: DataElement, path: str, base_path: str, threshold: int) -> dict[str, Any]:
    if element.VR == "SQ":
        items = [
            dataset_json(item, f"{path}/{index}/", base_path, threshold)
            for index, item in enumerate(element.value or [])
        ]
        return {"vr": "SQ", "Value": items} if items else {"vr": "SQ"}
    if element.VR in _BINARY_VRS:
        vr = "OW" if element.VR in ("OB or OW", "US or OW") else element.VR
        value = element.value
        if value is None or value == b"":
            return {"vr": vr}
        data = bytes(value) if isinstance(value, bytes | bytearray) else b"".join(bytes(v) for v in value)
        if len(data) > threshold:
            return {"vr": vr, "BulkDataURI": f"{base_path}/bulkdata/{path}"}
        return {"vr": vr, "InlineBinary": base64.b64encode(data).decode("ascii")}
    result: dict[str, Any] = element.to_json_dict(None, threshold)
    values = result.get("Value")
    if values and any(type(value) is not str and isinstance(value, str) for value in values):
        # pydicom's str subclasses (UID …) as plain str: they cross to the server process without
        # their class (unpickling a UID re-validates it with a regular expression).
        result["Value"] = [str(value) if isinstance(value, str) else value for value in values]
    return result


def dataset_json(
    ds: Dataset, prefix: str, base_path: str, threshold: int, fast: bool = False, codec: str | None = None
) -> dict[str, Any]:
    """The DICOM JSON object of ``ds`` (PS3.18 §F.2); large binary values become BulkDataURIs.

    ``base_path`` is relative to the service's base URL (``/studies/…/instances/…``);
    responses put the base URL in front. With ``fast`` (an explicit VR little endian data set
    whose text decodes with ``codec``), simple elements are converted from their raw bytes
    (:mod:`.fastjson`) and only the others through pydicom.
    """
    result: dict[str, Any] = {}
    for tag in ds.keys():  # noqa: SIM118 - iterating a Dataset would convert every element
        number = int(tag)
        if number >> 16 == 0x0002 or number & 0xFFFF == 0:  # file meta and group lengths are not metadata
            continue
        key = tag_hex(number)
        if fast:
            raw = ds.get_item(tag)
            if isinstance(raw, RawDataElement):
                converted = fastjson.element_json(raw.VR, raw.value, codec)
                if converted is not None:
                    result[key] = converted
                    continue
        element = ds[tag]
        if element.VR == "SQ":
            items = [
                dataset_json(item, f"{prefix}{key}/{index}/", base_path, threshold, fast, codec)
                for index, item in enumerate(element.value or [])
            ]
            result[key] = {"vr": "SQ", "Value": items} if items else {"vr": "SQ"}
        else:
            result[key] = _element_json(element, f"{prefix}{key}", base_path, threshold)
    return result


@dataclass
class _PixelLayout:
    tag: int
    vr: str
    frames: list[list[list[int]]] | None
    value_offset: int
    value_length: int


def _read_exact(handle: BinaryIO, size: int) -> bytes:
    data = handle.read(size)
    if len(data) != size:
        raise InstanceRejected(CANNOT_UNDERSTAND, "The file is truncated inside its pixel data.")
    return data


def _native_frame_bytes(ds: _Attributes, bits: int) -> int | None:
    rows, columns = ds.int("Rows"), ds.int("Columns")
    samples = ds.int("SamplesPerPixel") or 1
    if not rows or not columns:
        return None
    total_bits = rows * columns * samples * (bits or (ds.int("BitsAllocated") or 0))
    return total_bits // 8 if total_bits % 8 == 0 and total_bits > 0 else None


def _pixel_layout(
    handle: BinaryIO,
    ds: _Attributes,
    little: bool,
    implicit: bool,
    file_size: int,
    extended_offset_table: bytes | None,
) -> _PixelLayout | None:
    header = handle.read(8)
    if len(header) < 8:
        return None
    endian = "<" if little else ">"
    group, element = struct.unpack(f"{endian}HH", header[:4])
    tag = (group << 16) | element
    if tag not in PIXEL_DATA_TAGS:
        return None
    if implicit:
        (length,) = struct.unpack(f"{endian}I", header[4:8])
        vr = "OW"
    else:
        vr = header[4:6].decode("ascii", "replace")
        if header[4:6] in _LONG_LENGTH_VRS:
            (length,) = struct.unpack(f"{endian}I", _read_exact(handle, 4))
        else:
            (length,) = struct.unpack(f"{endian}H", header[6:8])
    value_offset = handle.tell()
    frame_count = ds.int("NumberOfFrames") or 1
    if length != _UNDEFINED:
        if value_offset + length > file_size:
            raise InstanceRejected(CANNOT_UNDERSTAND, "The file is truncated inside its pixel data.")
        frame_bytes = _native_frame_bytes(ds, PIXEL_DATA_TAGS[tag])
        frames: list[list[list[int]]] | None = None
        if frame_bytes and frame_bytes * frame_count <= length:
            frames = [[[value_offset + i * frame_bytes, frame_bytes]] for i in range(frame_count)]
        return _PixelLayout(tag, vr, frames, value_offset, length)
    # Encapsulated (PS3.5 §A.4): items of fragments, the first one the Basic Offset Table.
    items: list[tuple[int, int, int]] = []  # (item start, value offset, length)
    position = value_offset
    while True:
        handle.seek(position)
        item_header = _read_exact(handle, 8)
        group, element, item_length = struct.unpack(f"{endian}HHI", item_header)
        item_tag = (group << 16) | element
        if item_tag == _SEQUENCE_DELIMITER:
            break
        if item_tag != _ITEM or item_length == _UNDEFINED or position + 8 + item_length > file_size:
            raise InstanceRejected(CANNOT_UNDERSTAND, "The encapsulated pixel data is malformed or truncated.")
        items.append((position, position + 8, item_length))
        position += 8 + item_length
    total = position + 8 - value_offset
    if not items:
        raise InstanceRejected(CANNOT_UNDERSTAND, "The encapsulated pixel data has no Basic Offset Table item.")
    bot, fragments = items[0], items[1:]
    frames = _encapsulated_frames(handle, extended_offset_table, bot, fragments, frame_count, endian)
    return _PixelLayout(tag, vr, frames, value_offset, total)


def _encapsulated_frames(
    handle: BinaryIO,
    extended_offset_table: bytes | None,
    bot: tuple[int, int, int],
    fragments: list[tuple[int, int, int]],
    frame_count: int,
    endian: str,
) -> list[list[list[int]]] | None:
    if not fragments:
        return None
    if frame_count == 1:
        return [[[offset, length] for _, offset, length in fragments]]
    starts: list[int] | None = None
    if bot[2]:
        handle.seek(bot[1])
        raw = _read_exact(handle, bot[2])
        starts = list(struct.unpack(f"{endian}{bot[2] // 4}I", raw))
    elif extended_offset_table:
        raw = extended_offset_table
        starts = list(struct.unpack(f"{endian}{len(raw) // 8}Q", raw))
    if starts is not None and len(starts) == frame_count:
        first = fragments[0][0]
        frames: list[list[list[int]]] = []
        for index, begin in enumerate(starts):
            end = starts[index + 1] if index + 1 < len(starts) else None
            frames.append(
                [
                    [offset, length]
                    for item_start, offset, length in fragments
                    if item_start - first >= begin and (end is None or item_start - first < end)
                ]
            )
        if all(frames):
            return frames
    if len(fragments) == frame_count:
        return [[[offset, length]] for _, offset, length in fragments]
    return None  # frame boundaries unknown: frames are decoded from the whole file


def _check_uid(value: str | None, keyword: str, sop_class: str, sop_instance: str) -> str:
    if not value or not is_valid_uid(value):
        raise InstanceRejected(
            DATA_SET_DOES_NOT_MATCH_SOP_CLASS, f"{keyword} is missing or not a valid UID.", sop_class, sop_instance
        )
    return value


def _subset(metadata: dict[str, Any], wanted: frozenset[str]) -> dict[str, Any]:
    return {key: value for key, value in metadata.items() if key in wanted}


def add_missing_preamble(path: Path) -> tuple[int, str] | None:
    """Give a file that starts straight with its File Meta group the PS3.10 §7.1 preamble and prefix.

    Returns the new ``(size, sha256)`` when the file was rewritten, else None.
    """
    with open(path, "rb") as handle:
        head = handle.read(132)
    if head[:2] != b"\x02\x00" or head[128:132] == b"DICM":
        return None
    fixed = path.with_suffix(".preamble")
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as source, open(fixed, "wb") as target:
        prefix = b"\x00" * 128 + b"DICM"
        for chunk in iter(lambda: source.read(1024 * 1024), b""):
            data = prefix + chunk
            prefix = b""
            target.write(data)
            digest.update(data)
            size += len(data)
    fixed.replace(path)
    return size, digest.hexdigest()


@dataclass
class _Header:
    """What the tail of :func:`parse_instance` needs from either reader."""

    sop_class: str
    sop_instance: str
    study_uid: str
    series_uid: str
    transfer_syntax: str
    base_path: str
    metadata: dict[str, Any]
    bulk_offsets: dict[str, list[int]]
    extended_offset_table: bytes | None
    #: Where Pixel Data would start (the reader stopped there); None when offsets are meaningless (deflated).
    pixel_position: int | None


def _identify(
    sop_class: str,
    sop_instance: str,
    transfer_syntax: str,
    media: tuple[str, str],
    study_text: str | None,
    series_text: str | None,
    expected_study: str | None,
) -> tuple[str, str, str]:
    """Check the identifying attributes; ``(study, series, base path)``."""
    if not sop_instance or not is_valid_uid(sop_instance) or not sop_class or not is_valid_uid(sop_class):
        raise InstanceRejected(
            CANNOT_UNDERSTAND, "SOP Class UID or SOP Instance UID is missing or invalid.", sop_class, sop_instance
        )
    if not is_valid_uid(transfer_syntax):
        raise InstanceRejected(
            CANNOT_UNDERSTAND, "The file meta information has no Transfer Syntax UID.", sop_class, sop_instance
        )
    for meta_value, value, name in ((media[0], sop_class, "Class"), (media[1], sop_instance, "Instance")):
        if meta_value != value:
            raise InstanceRejected(
                DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
                f"Media Storage SOP {name} UID differs from the data set's SOP {name} UID.",
                sop_class,
                sop_instance,
            )
    study_uid = _check_uid(study_text, "Study Instance UID", sop_class, sop_instance)
    series_uid = _check_uid(series_text, "Series Instance UID", sop_class, sop_instance)
    if expected_study is not None and study_uid != expected_study:
        raise InstanceRejected(
            STUDY_INSTANCE_UID_MISMATCH,
            "The instance's Study Instance UID differs from the study in the request URL.",
            sop_class,
            sop_instance,
        )
    return study_uid, series_uid, f"/studies/{study_uid}/series/{series_uid}/instances/{sop_instance}"


def _read_raw(header: rawheader.RawHeader, threshold: int, expected_study: str | None) -> _Header:
    """The header read without pydicom (raises :class:`rawheader.Unsupported` to fall back to it)."""
    sop_class, sop_instance = header.uid(0x00080016), header.uid(0x00080018)
    study_uid, series_uid, base_path = _identify(
        sop_class,
        sop_instance,
        header.transfer_syntax,
        (header.meta.get(0x0002, sop_class), header.meta.get(0x0003, sop_instance)),
        header.uid(0x0020000D).strip() or None,
        header.uid(0x0020000E).strip() or None,
        expected_study,
    )
    table = header.elements.get(0x7FE00001)
    return _Header(
        sop_class,
        sop_instance,
        study_uid,
        series_uid,
        header.transfer_syntax,
        base_path,
        header.metadata(base_path, threshold),
        header.bulk_offsets(threshold),
        table.value if table is not None else None,
        header.pixel_position,
    )


def _read_with_pydicom(handle: BinaryIO, threshold: int, expected_study: str | None) -> _Header:
    """The header read by pydicom: every transfer syntax and character set it knows."""
    head = handle.read(132)
    handle.seek(0)
    # PS3.10 §7.1 wants the 128-byte preamble and "DICM"; some writers (pydicom's dcmwrite of an
    # in-memory data set, as dicomweb-client sends) start straight with the File Meta group.
    bare_meta = head[:2] == b"\x02\x00" and head[128:132] != b"DICM"
    try:
        ds = pydicom.dcmread(handle, stop_before_pixels=True, force=bare_meta)
    except Exception as exc:  # pydicom raises many types for files it cannot read
        raise InstanceRejected(CANNOT_UNDERSTAND, f"Not a readable DICOM PS3.10 file ({type(exc).__name__}).") from exc
    position = handle.tell()
    meta = ds.file_meta
    if bare_meta and "TransferSyntaxUID" not in meta:
        raise InstanceRejected(CANNOT_UNDERSTAND, "Not a DICOM PS3.10 file (no File Meta Information).")
    sop_class = str(ds.get("SOPClassUID", "") or "")
    sop_instance = str(ds.get("SOPInstanceUID", "") or "")
    transfer_syntax = str(meta.get("TransferSyntaxUID", "") or "")

    def text(keyword: str) -> str | None:
        value = ds[keyword].value if keyword in ds else None
        if isinstance(value, MultiValue | list):
            value = value[0] if len(value) else None
        return (str(value).strip() or None) if value is not None and value != "" else None

    study_uid, series_uid, base_path = _identify(
        sop_class,
        sop_instance,
        transfer_syntax,
        (
            str(meta.get("MediaStorageSOPClassUID", sop_class)),
            str(meta.get("MediaStorageSOPInstanceUID", sop_instance)),
        ),
        text("StudyInstanceUID"),
        text("SeriesInstanceUID"),
        expected_study,
    )
    syntax = pydicom.uid.UID(transfer_syntax)
    deflated = transfer_syntax == DeflatedExplicitVRLittleEndian
    explicit_little = (
        transfer_syntax == ExplicitVRLittleEndian
        or deflated
        or (syntax.is_transfer_syntax and syntax.is_little_endian and not syntax.is_implicit_VR)
    )
    bulk_offsets: dict[str, list[int]] = {}
    # Before converting: a converted element no longer knows its offset.
    # Offsets in a deflated file point into the inflated stream: not usable for ranged reads.
    for tag in [] if deflated else list(ds.keys()):
        raw = ds.get_item(tag)
        if (
            isinstance(raw, RawDataElement)
            and raw.value_tell is not None
            and raw.length != _UNDEFINED
            and (raw.VR or "") in _BINARY_VRS
            and raw.length > threshold
        ):
            bulk_offsets[tag_hex(int(tag))] = [raw.value_tell, raw.length]
    charset = ds.get_item(0x00080005)
    codec = fastjson.charset_codec(charset.value if charset is not None else None)
    try:
        metadata = dataset_json(ds, "", base_path, threshold, explicit_little, codec)
    except Exception as exc:
        raise InstanceRejected(
            CANNOT_UNDERSTAND, f"An attribute value cannot be decoded ({type(exc).__name__}).", sop_class, sop_instance
        ) from exc
    if deflated and "Rows" in ds:
        metadata["7FE00010"] = {"vr": "OB", "BulkDataURI": f"{base_path}/bulkdata/7FE00010"}
    table = bytes(ds.ExtendedOffsetTable) if "ExtendedOffsetTable" in ds else None
    return _Header(
        sop_class,
        sop_instance,
        study_uid,
        series_uid,
        transfer_syntax,
        base_path,
        metadata,
        bulk_offsets,
        table,
        None if deflated else position,
    )


def parse_instance(
    path: Path, *, bulkdata_threshold: int, expected_study: str | None = None, fast: bool = True
) -> ParsedInstance:
    """Read the PS3.10 file at ``path`` once and compute what the index keeps about it.

    Plain explicit VR little endian files are read straight from their bytes (:mod:`.rawheader`);
    anything else, anything that reader is unsure of, and every file when ``fast`` is false, with pydicom.

    Raises
    ------
    InstanceRejected
        With the Failure Reason to report in the STOW-RS response.
    """
    file_size = path.stat().st_size
    with open(path, "rb") as handle:
        raw = rawheader.read_header(handle, bulkdata_threshold) if fast else None
        header: _Header | None = None
        if raw is not None:
            try:
                header = _read_raw(raw, bulkdata_threshold, expected_study)
            except (rawheader.Unsupported, InstanceRejected):
                header = None  # a rejection too is pydicom's to decide (rare: the cost does not matter)
        if header is None:
            handle.seek(0)
            header = _read_with_pydicom(handle, bulkdata_threshold, expected_study)
        metadata = header.metadata
        attributes = _Attributes(metadata)
        layout: _PixelLayout | None = None
        if header.pixel_position is not None:
            syntax = pydicom.uid.UID(header.transfer_syntax)
            little = syntax.is_little_endian if syntax.is_transfer_syntax else True
            implicit = syntax.is_implicit_VR if syntax.is_transfer_syntax else False
            handle.seek(header.pixel_position)
            layout = _pixel_layout(handle, attributes, little, implicit, file_size, header.extended_offset_table)
    return _instance(header, attributes, layout)


def _instance(header: _Header, attributes: _Attributes, layout: _PixelLayout | None) -> ParsedInstance:
    metadata, bulk_offsets = header.metadata, header.bulk_offsets
    frames = None
    if layout is not None:
        key = tag_hex(layout.tag)
        metadata[key] = {"vr": layout.vr, "BulkDataURI": f"{header.base_path}/bulkdata/{key}"}
        bulk_offsets[key] = [layout.value_offset, layout.value_length]
        frames = layout.frames
    metadata = dict(sorted(metadata.items()))
    patient_name = attributes.person_name("PatientName")
    referring = attributes.person_name("ReferringPhysicianName")
    has_pixels = layout is not None or header.transfer_syntax == DeflatedExplicitVRLittleEndian
    sop_class, transfer_syntax = header.sop_class, header.transfer_syntax
    return ParsedInstance(
        sop_class_uid=sop_class,
        sop_instance_uid=header.sop_instance,
        study_instance_uid=header.study_uid,
        series_instance_uid=header.series_uid,
        transfer_syntax_uid=transfer_syntax,
        patient={
            "patient_id": attributes.text("PatientID") or "",
            "issuer_of_patient_id": attributes.text("IssuerOfPatientID") or "",
            "name_alphabetic": patient_name.alphabetic,
            "name_ideographic": patient_name.ideographic,
            "name_phonetic": patient_name.phonetic,
            "birth_date": parse_da(attributes.text("PatientBirthDate")),
            "sex": attributes.text("PatientSex"),
        },
        study={
            "study_date": parse_da(attributes.text("StudyDate")),
            "study_time": normalize_tm(attributes.text("StudyTime")),
            "accession_number": attributes.text("AccessionNumber"),
            "study_id": attributes.text("StudyID"),
            "study_description": attributes.text("StudyDescription"),
            "referring_alphabetic": referring.alphabetic,
            "referring_ideographic": referring.ideographic,
            "referring_phonetic": referring.phonetic,
        },
        series={
            "modality": attributes.text("Modality"),
            "series_number": attributes.int("SeriesNumber"),
            "series_description": attributes.text("SeriesDescription"),
            "body_part_examined": attributes.text("BodyPartExamined"),
            "pps_start_date": parse_da(attributes.text("PerformedProcedureStepStartDate")),
            "pps_start_time": normalize_tm(attributes.text("PerformedProcedureStepStartTime")),
            "scheduled_procedure_step_ids": attributes.sequence_values(
                "RequestAttributesSequence", "ScheduledProcedureStepID"
            ),
            "requested_procedure_ids": attributes.sequence_values("RequestAttributesSequence", "RequestedProcedureID"),
        },
        instance={
            "sop_class_uid": sop_class,
            "instance_number": attributes.int("InstanceNumber"),
            "transfer_syntax_uid": transfer_syntax,
            "rows": attributes.int("Rows"),
            "columns": attributes.int("Columns"),
            "bits_allocated": attributes.int("BitsAllocated"),
            "number_of_frames": (attributes.int("NumberOfFrames") or 1) if has_pixels else None,
        },
        metadata_json=json.dumps(metadata, ensure_ascii=False, separators=(",", ":")),
        study_attributes=_subset(metadata, _STUDY_LEVEL_KEYS),
        series_attributes=_subset(metadata, _SERIES_LEVEL_KEYS),
        frames=frames,
        bulkdata=bulk_offsets,
    )


def keyword_tag(name: str) -> int | None:
    """The tag of a keyword (``PatientName``) or hex tag (``00100010``); None if neither."""
    if len(name) == 8:
        try:
            return int(name, 16)
        except ValueError:
            pass
    tag = pydicom.datadict.tag_for_keyword(name)
    return int(tag) if tag is not None else None


@functools.cache
def _keyword_key(keyword: str) -> str | None:
    tag = keyword_tag(keyword)
    return tag_hex(tag) if tag is not None else None


def tag_of(value: int | BaseTag) -> BaseTag:
    """A pydicom tag object (for dataset access by tag)."""
    return Tag(value)
