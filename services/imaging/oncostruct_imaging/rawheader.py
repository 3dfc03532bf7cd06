"""Reading the header of a plain PS3.10 file straight from its bytes, without pydicom.

Most instances a hospital sends are explicit VR little endian (native or encapsulated pixel
data) in the default, Latin-1 or UTF-8 character set. For those, ingest does not need
pydicom's reader: :func:`read_header` walks the File Meta group and the data set's element
headers (PS3.5 §7.1.2, §7.5) up to Pixel Data, reading only the values it converts, and
builds the DICOM JSON with :mod:`.fastjson` (plus PN, AT, SQ and binary values here).

It answers None whenever the file is anything else — no preamble, implicit VR, big endian,
deflated or unknown transfer syntax, code-extension character sets (ISO 2022: Japanese),
UN elements, undefined-length values other than sequences and items, a value it cannot
convert exactly as pydicom would, or any structural doubt (a length past the end of the
file) — and the caller reads that file with pydicom as before, so the rules for odd files
stay pydicom's. A test checks both readers give the same result on pydicom's own test files.
"""

from __future__ import annotations

import base64
import mmap
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, BinaryIO

from pydicom.uid import UID, AllTransferSyntaxes, DeflatedExplicitVRLittleEndian

from . import fastjson

_ITEM = 0xFFFEE000
_ITEM_DELIMITER = 0xFFFEE00D
_SEQUENCE_DELIMITER = 0xFFFEE0DD
_UNDEFINED = 0xFFFFFFFF
_PIXEL_DATA = frozenset({0x7FE00008, 0x7FE00009, 0x7FE00010})
_CHARSET = 0x00080005
_EXTENDED_OFFSET_TABLE = 0x7FE00001
#: Media Storage SOP Class UID, Media Storage SOP Instance UID, Transfer Syntax UID (element numbers).
_META_UIDS = frozenset({0x0002, 0x0003, 0x0010})

_LONG = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"})
_SHORT = frozenset(
    {"AE", "AS", "AT", "CS", "DA", "DS", "DT", "FL", "FD", "IS", "LO", "LT", "PN", "SH", "SL", "SS", "ST", "TM"}
    | {"UI", "UL", "US"}
)
_BINARY = frozenset({"OB", "OD", "OF", "OL", "OV", "OW"})
#: Explicit VR little endian transfer syntaxes (native and encapsulated) pydicom knows.
_EXPLICIT_LITTLE = frozenset(
    str(uid)
    for uid in AllTransferSyntaxes
    if UID(uid).is_little_endian and not UID(uid).is_implicit_VR and uid != DeflatedExplicitVRLittleEndian
)

_HEADER = struct.Struct("<HH2sH")
_LENGTH = struct.Struct("<I")
_ITEM_HEADER = struct.Struct("<HHI")


class Unsupported(Exception):
    """Something this reader leaves to pydicom (read the file with pydicom instead)."""


@dataclass
class Element:
    """One element of the data set: where its value is, the value when read, its items when a sequence."""

    vr: str
    offset: int
    length: int
    value: bytes | None = None
    items: list[dict[int, Element]] | None = None


@dataclass
class RawHeader:
    """What :func:`read_header` found."""

    transfer_syntax: str
    meta: dict[int, str]
    elements: dict[int, Element]
    codec: str
    #: Where the Pixel Data element (its tag) starts; None when the data set has none.
    pixel_position: int | None

    def uid(self, tag: int) -> str:
        """A top-level UI value as pydicom reads it (trailing NUL and spaces stripped); "" if absent."""
        element = self.elements.get(tag)
        if element is None or element.value is None:
            return ""
        if element.vr != "UI":
            raise Unsupported
        text = element.value.decode("latin-1").rstrip("\x00 ")
        if "\\" in text or text != text.strip():
            raise Unsupported  # several values; whitespace pydicom's UID would strip
        return text

    def metadata(self, base_path: str, threshold: int) -> dict[str, Any]:
        """The DICOM JSON of the data set (PS3.18 §F.2), large binary values as BulkDataURIs under ``base_path``."""
        try:
            return _json(self.elements, "", base_path, threshold, self.codec)
        except (UnicodeDecodeError, ValueError, struct.error, RecursionError) as exc:
            raise Unsupported from exc

    def bulk_offsets(self, threshold: int) -> dict[str, list[int]]:
        """``{tag: [offset, length]}`` of the top-level binary values over ``threshold`` (ranged reads)."""
        return {
            f"{tag:08X}": [element.offset, element.length]
            for tag, element in self.elements.items()
            if element.vr in _BINARY and element.length > threshold
        }


def read_header(handle: BinaryIO, threshold: int) -> RawHeader | None:
    """The header of the file open in ``handle``, or None: read it with pydicom."""
    try:
        mapped = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
    except (ValueError, OSError):
        return None  # empty, or not a regular file
    try:
        return _read(mapped, threshold)
    except (Unsupported, struct.error, UnicodeDecodeError, ValueError, RecursionError):
        return None  # RecursionError: sequences nested past Python's stack; pydicom decides
    finally:
        mapped.close()


def _read(data: mmap.mmap, threshold: int) -> RawHeader:
    size = len(data)
    if size < 144 or data[128:132] != b"DICM":
        raise Unsupported
    meta: dict[int, str] = {}
    position = 132
    while position + 8 <= size:
        group, number, vr_bytes, short = _HEADER.unpack_from(data, position)
        if group != 0x0002:
            break
        vr, length, position = _vr_and_length(data, position, vr_bytes, short)
        if length == _UNDEFINED or position + length > size or (number in _META_UIDS and vr != "UI"):
            raise Unsupported
        if vr == "UI":
            meta[number] = data[position : position + length].decode("latin-1").rstrip("\x00 ")
        position += length
    transfer_syntax = meta.get(0x0010, "")
    if transfer_syntax not in _EXPLICIT_LITTLE:
        raise Unsupported
    reader = _Reader(data, threshold)
    elements, pixel_position = reader.dataset(position, size, top=True)
    return RawHeader(transfer_syntax, meta, elements, _codec(elements), pixel_position)


def _codec(elements: dict[int, Element]) -> str:
    """The codec of the data set's one character set; Unsupported for anything pydicom might read otherwise."""
    charset = elements.get(_CHARSET)
    if charset is None:
        return fastjson.SIMPLE_CHARSETS[""]
    text = (charset.value or b"").decode("latin-1").rstrip(" \x00")
    if text not in fastjson.SIMPLE_CHARSETS:
        raise Unsupported  # several character sets (ISO 2022 code extensions), or odd padding
    if any(element.items is not None for tag, element in elements.items() if tag < _CHARSET):
        raise Unsupported  # items read before the character set was known
    return fastjson.SIMPLE_CHARSETS[text]


def _vr_and_length(data: mmap.mmap, position: int, vr_bytes: bytes, short: int) -> tuple[str, int, int]:
    """The VR and value length of the explicit VR element header at ``position``; and where its value starts."""
    vr = vr_bytes.decode("ascii")
    if vr in _LONG:
        (length,) = _LENGTH.unpack_from(data, position + 8)  # struct.error past the end: not this reader's file
        return vr, length, position + 12
    if vr in _SHORT:
        return vr, short, position + 8
    raise Unsupported  # not a VR: implicit VR data, or garbage


class _Reader:
    def __init__(self, data: mmap.mmap, threshold: int) -> None:
        self.data = data
        self.threshold = threshold

    def dataset(self, position: int, end: int, *, top: bool = False) -> tuple[dict[int, Element], int | None]:
        """The elements from ``position`` to ``end`` (or to an item delimiter when ``end`` is undefined)."""
        data = self.data
        size = len(data)
        elements: dict[int, Element] = {}
        last = -1
        while position < end:
            if position + 8 > size:
                raise Unsupported
            group, number, vr_bytes, short = _HEADER.unpack_from(data, position)
            tag = group << 16 | number
            if tag == _ITEM_DELIMITER and not top and end == _UNDEFINED:
                return elements, position + 8
            if top and tag in _PIXEL_DATA:
                return elements, position
            if group == 0xFFFE or (not top and tag == _CHARSET) or tag <= last:
                raise Unsupported  # a stray delimiter; an item with its own character set; tags out of order
            last = tag
            vr, length, position = _vr_and_length(data, position, vr_bytes, short)
            if vr == "SQ":
                items, after = self.sequence(position, length)
                elements[tag] = Element(vr, position, length, None, items)
                position = after
                continue
            if vr == "UN" or length == _UNDEFINED or position + length > size:
                raise Unsupported
            value = None
            if vr not in _BINARY or length <= self.threshold or tag == _EXTENDED_OFFSET_TABLE:
                value = data[position : position + length]
            elements[tag] = Element(vr, position, length, value)
            position += length
        if not top and end != _UNDEFINED and position != end:
            raise Unsupported  # an item's elements overran its length
        return elements, None

    def sequence(self, position: int, length: int) -> tuple[list[dict[int, Element]], int]:
        """The items of a sequence value starting at ``position``; and where the value ends."""
        data = self.data
        end = position + length if length != _UNDEFINED else len(data)
        if end > len(data):
            raise Unsupported
        items: list[dict[int, Element]] = []
        while position < end:
            if position + 8 > len(data):
                raise Unsupported
            group, number, item_length = _ITEM_HEADER.unpack_from(data, position)
            tag = group << 16 | number
            position += 8
            if tag == _SEQUENCE_DELIMITER and length == _UNDEFINED:
                return items, position
            if tag != _ITEM:
                raise Unsupported
            if item_length == _UNDEFINED:
                item, after = self.dataset(position, _UNDEFINED)
                if after is None:
                    raise Unsupported  # no item delimiter before the end
                position = after
            else:
                item, _ = self.dataset(position, position + item_length)
                position += item_length
            items.append(item)
        if length == _UNDEFINED or position != end:
            raise Unsupported
        return items, position


def _person_names(data: bytes, codec: str) -> dict[str, Any]:
    # pydicom: strip trailing NUL/space, decode, split values at "\", groups at "=", drop empty trailing groups.
    text = data.rstrip(b"\x00 ").decode(codec)
    if not text:
        return {"vr": "PN"}
    values: list[dict[str, str]] = []
    for value in text.split("\\"):
        groups = value.split("=")
        while groups and not groups[-1]:
            groups.pop()
        if not groups:
            raise Unsupported  # an empty value among several: pydicom's own handling
        entry = {"Alphabetic": groups[0]}
        if len(groups) > 1:
            entry["Ideographic"] = groups[1]
        if len(groups) > 2:
            entry["Phonetic"] = groups[2]
        values.append(entry)
    return {"vr": "PN", "Value": values}


def _attribute_tags(data: bytes) -> dict[str, Any]:
    if not data:
        return {"vr": "AT"}
    if len(data) % 4:
        raise Unsupported
    pairs = struct.unpack(f"<{len(data) // 2}H", data)
    return {"vr": "AT", "Value": [f"{pairs[i] << 16 | pairs[i + 1]:08X}" for i in range(0, len(pairs), 2)]}


_CONVERTERS: dict[str, Callable[[bytes, str], dict[str, Any]]] = {
    "PN": _person_names,
    "AT": lambda data, _codec: _attribute_tags(data),
}


def _json(elements: dict[int, Element], prefix: str, base_path: str, threshold: int, codec: str) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for tag, element in elements.items():
        if tag >> 16 == 0x0002 or tag & 0xFFFF == 0:  # file meta and group lengths are not metadata
            continue
        key = f"{tag:08X}"
        vr = element.vr
        if element.items is not None:
            items = [
                _json(item, f"{prefix}{key}/{index}/", base_path, threshold, codec)
                for index, item in enumerate(element.items)
            ]
            result[key] = {"vr": "SQ", "Value": items} if items else {"vr": "SQ"}
        elif vr in _BINARY:
            if not element.length:
                result[key] = {"vr": vr}
            elif element.length > threshold:
                result[key] = {"vr": vr, "BulkDataURI": f"{base_path}/bulkdata/{prefix}{key}"}
            else:
                result[key] = {"vr": vr, "InlineBinary": base64.b64encode(element.value or b"").decode("ascii")}
        else:
            data = element.value or b""
            converter = _CONVERTERS.get(vr)
            converted = converter(data, codec) if converter is not None else fastjson.element_json(vr, data, codec)
            if converted is None:
                raise Unsupported
            result[key] = converted
    return result
