"""Reading a PS3.10 file once, at ingest: index keys, DICOM JSON, frame and bulk data offsets.

Everything QIDO-RS and WADO-RS later answer from the index is computed here, so
no stored file is parsed again to answer a search, a metadata request or a
frame request. The file is read up to Pixel Data only; pixel data is located
by reading the element and item headers (PS3.5 §7.5, §A.4), never loaded.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
from collections.abc import Iterable
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
from pydicom.valuerep import PersonName

from . import fastjson
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


def _first(value: Any) -> Any:
    if isinstance(value, MultiValue | list):
        return value[0] if len(value) else None
    return value


def _text(ds: Dataset, keyword: str) -> str | None:
    if keyword not in ds:
        return None
    value = _first(ds[keyword].value)
    if value is None or value == "":
        return None
    return str(value).strip() or None


def _int(ds: Dataset, keyword: str) -> int | None:
    text = _text(ds, keyword)
    try:
        return int(float(text)) if text is not None else None
    except ValueError:
        return None


class _Attributes:
    """First values of top-level attributes, from the computed DICOM JSON where it has them (no second
    conversion by pydicom), else from the data set."""

    def __init__(self, ds: Dataset, metadata: dict[str, Any] | None = None) -> None:
        self.ds = ds
        self.metadata = metadata

    def text(self, keyword: str) -> str | None:
        if self.metadata is None:
            return _text(self.ds, keyword)
        tag = keyword_tag(keyword)
        entry = self.metadata.get(tag_hex(tag)) if tag is not None else None
        if entry is None:
            return None
        value = (entry.get("Value") or [None])[0]
        if value is None or value == "" or isinstance(value, dict):
            return None
        return str(value).strip() or None

    def int(self, keyword: str) -> int | None:
        text = self.text(keyword)
        try:
            return int(float(text)) if text is not None else None
        except ValueError:
            return None


def person_name_groups(ds: Dataset, keyword: str) -> PersonNameGroups:
    """The decoded component groups of a PN attribute (character set applied)."""
    if keyword not in ds:
        return PersonNameGroups()
    value = _first(ds[keyword].value)
    if not isinstance(value, PersonName):
        return PersonNameGroups(alphabetic=str(value) if value else None)
    groups = [*value.components, "", "", ""]
    return PersonNameGroups(*(group or None for group in groups[:3]))


def _sequence_values(ds: Dataset, sequence: str, keyword: str) -> list[str]:
    values: list[str] = []
    if sequence in ds:
        for item in ds[sequence].value or []:
            text = _text(item, keyword)
            if text:
                values.append(text)
    return values


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
    handle: BinaryIO, ds: _Attributes, little: bool, implicit: bool, file_size: int
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
    frames = _encapsulated_frames(handle, ds.ds, bot, fragments, frame_count, endian)
    return _PixelLayout(tag, vr, frames, value_offset, total)


def _encapsulated_frames(
    handle: BinaryIO,
    ds: Dataset,
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
    elif "ExtendedOffsetTable" in ds:
        raw = bytes(ds.ExtendedOffsetTable)
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


def _subset(metadata: dict[str, Any], tags: Iterable[int]) -> dict[str, Any]:
    wanted = {tag_hex(tag) for tag in tags}
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


def parse_instance(path: Path, *, bulkdata_threshold: int, expected_study: str | None = None) -> ParsedInstance:
    """Read the PS3.10 file at ``path`` once and compute what the index keeps about it.

    Raises
    ------
    InstanceRejected
        With the Failure Reason to report in the STOW-RS response.
    """
    file_size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(132)
        handle.seek(0)
        # PS3.10 §7.1 wants the 128-byte preamble and "DICM"; some writers (pydicom's dcmwrite of an
        # in-memory data set, as dicomweb-client sends) start straight with the File Meta group.
        bare_meta = head[:2] == b"\x02\x00" and head[128:132] != b"DICM"
        try:
            ds = pydicom.dcmread(handle, stop_before_pixels=True, force=bare_meta)
        except Exception as exc:  # pydicom raises many types for files it cannot read
            raise InstanceRejected(
                CANNOT_UNDERSTAND, f"Not a readable DICOM PS3.10 file ({type(exc).__name__})."
            ) from exc
        meta = ds.file_meta
        if bare_meta and "TransferSyntaxUID" not in meta:
            raise InstanceRejected(CANNOT_UNDERSTAND, "Not a DICOM PS3.10 file (no File Meta Information).")
        sop_class = str(ds.get("SOPClassUID", "") or "")
        sop_instance = str(ds.get("SOPInstanceUID", "") or "")
        if not sop_instance or not is_valid_uid(sop_instance) or not sop_class or not is_valid_uid(sop_class):
            raise InstanceRejected(
                CANNOT_UNDERSTAND, "SOP Class UID or SOP Instance UID is missing or invalid.", sop_class, sop_instance
            )
        transfer_syntax = str(meta.get("TransferSyntaxUID", "") or "")
        if not is_valid_uid(transfer_syntax):
            raise InstanceRejected(
                CANNOT_UNDERSTAND, "The file meta information has no Transfer Syntax UID.", sop_class, sop_instance
            )
        if str(meta.get("MediaStorageSOPClassUID", sop_class)) != sop_class:
            raise InstanceRejected(
                DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
                "Media Storage SOP Class UID differs from the data set's SOP Class UID.",
                sop_class,
                sop_instance,
            )
        if str(meta.get("MediaStorageSOPInstanceUID", sop_instance)) != sop_instance:
            raise InstanceRejected(
                DATA_SET_DOES_NOT_MATCH_SOP_CLASS,
                "Media Storage SOP Instance UID differs from the data set's SOP Instance UID.",
                sop_class,
                sop_instance,
            )
        study_uid = _check_uid(_text(ds, "StudyInstanceUID"), "Study Instance UID", sop_class, sop_instance)
        series_uid = _check_uid(_text(ds, "SeriesInstanceUID"), "Series Instance UID", sop_class, sop_instance)
        if expected_study is not None and study_uid != expected_study:
            raise InstanceRejected(
                STUDY_INSTANCE_UID_MISMATCH,
                "The instance's Study Instance UID differs from the study in the request URL.",
                sop_class,
                sop_instance,
            )
        base_path = f"/studies/{study_uid}/series/{series_uid}/instances/{sop_instance}"
        explicit_little = transfer_syntax in (ExplicitVRLittleEndian, DeflatedExplicitVRLittleEndian) or (
            pydicom.uid.UID(transfer_syntax).is_transfer_syntax
            and pydicom.uid.UID(transfer_syntax).is_little_endian
            and not pydicom.uid.UID(transfer_syntax).is_implicit_VR
        )
        charset = ds.get_item(0x00080005)
        codec = fastjson.charset_codec(charset.value if charset is not None else None)
        try:
            metadata = dataset_json(ds, "", base_path, bulkdata_threshold, explicit_little, codec)
        except Exception as exc:
            raise InstanceRejected(
                CANNOT_UNDERSTAND,
                f"An attribute value cannot be decoded ({type(exc).__name__}).",
                sop_class,
                sop_instance,
            ) from exc
        attributes = _Attributes(ds, metadata)
        layout: _PixelLayout | None = None
        if transfer_syntax != DeflatedExplicitVRLittleEndian:
            raw_ts = pydicom.uid.UID(transfer_syntax)
            little = raw_ts.is_little_endian if raw_ts.is_transfer_syntax else True
            implicit = raw_ts.is_implicit_VR if raw_ts.is_transfer_syntax else False
            layout = _pixel_layout(handle, attributes, little, implicit, file_size)
        bulk_offsets: dict[str, list[int]] = {}
        # Offsets in a deflated file point into the inflated stream: not usable for ranged reads.
        indexed = [] if transfer_syntax == DeflatedExplicitVRLittleEndian else list(ds.keys())
        for tag in indexed:
            raw = ds.get_item(tag)
            if (
                isinstance(raw, RawDataElement)
                and raw.value_tell is not None
                and raw.length != _UNDEFINED
                and (raw.VR or "") in _BINARY_VRS
                and raw.length > bulkdata_threshold
            ):
                bulk_offsets[tag_hex(int(tag))] = [raw.value_tell, raw.length]
    frames = None
    if layout is not None:
        key = tag_hex(layout.tag)
        metadata[key] = {"vr": layout.vr, "BulkDataURI": f"{base_path}/bulkdata/{key}"}
        bulk_offsets[key] = [layout.value_offset, layout.value_length]
        frames = layout.frames
    elif transfer_syntax == DeflatedExplicitVRLittleEndian and "Rows" in ds:
        metadata["7FE00010"] = {"vr": "OB", "BulkDataURI": f"{base_path}/bulkdata/7FE00010"}
    metadata = dict(sorted(metadata.items()))
    patient_name = person_name_groups(ds, "PatientName")
    referring = person_name_groups(ds, "ReferringPhysicianName")
    has_pixels = layout is not None or transfer_syntax == DeflatedExplicitVRLittleEndian
    return ParsedInstance(
        sop_class_uid=sop_class,
        sop_instance_uid=sop_instance,
        study_instance_uid=study_uid,
        series_instance_uid=series_uid,
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
            "scheduled_procedure_step_ids": _sequence_values(
                ds, "RequestAttributesSequence", "ScheduledProcedureStepID"
            ),
            "requested_procedure_ids": _sequence_values(ds, "RequestAttributesSequence", "RequestedProcedureID"),
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
        study_attributes=_subset(metadata, STUDY_LEVEL_TAGS),
        series_attributes=_subset(metadata, SERIES_LEVEL_TAGS),
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


def tag_of(value: int | BaseTag) -> BaseTag:
    """A pydicom tag object (for dataset access by tag)."""
    return Tag(value)
