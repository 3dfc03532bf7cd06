"""DICOM JSON (PS3.18 §F.2) of the common simple elements straight from their encoded bytes.

Ingest computes every instance's DICOM JSON once; with pydicom that is a conversion to a
DataElement and then to JSON per element, half the CPU of a STOW-RS. Strings, dates,
times, UIDs, IS/DS numbers and binary numbers (most of a CT or MR header) are decoded
here directly from the raw element, following pydicom's reading rules exactly (padding
stripped as its converters do, IS → int, DS → float); :func:`element_json` answers None for
anything else — PN, SQ, AT, bulk data, implicit-VR elements, big endian, character sets
beyond the default, Latin-1 and UTF-8, values it cannot decode — and the caller lets
pydicom do those. A test checks both give the same JSON on pydicom's own test files.
"""

from __future__ import annotations

import math
import struct
from typing import Any

#: Python codecs for the Specific Character Set values handled here (PS3.3 §C.12.1.1.2).
SIMPLE_CHARSETS = {"": "latin-1", "ISO_IR 6": "latin-1", "ISO_IR 100": "latin-1", "ISO_IR 192": "utf-8"}

_SPLIT_STRIPPED_WHOLE = frozenset({"AS", "CS", "DA", "DT", "TM"})  # pydicom: rstrip the whole, then split
_TEXT = frozenset({"SH", "LO", "UC"})  # split, then rstrip each value
_SINGLE_TEXT = frozenset({"ST", "LT", "UT"})  # one value, rstripped
_NUMBERS = {"US": "H", "SS": "h", "UL": "L", "SL": "l", "FL": "f", "FD": "d", "UV": "Q", "SV": "q"}
_SIZES = {code: struct.calcsize("<" + code) for code in _NUMBERS.values()}


def _values(vr: str, data: bytes, codec: str | None) -> list[Any] | None:
    if vr in _SPLIT_STRIPPED_WHOLE:
        return data.decode("latin-1").rstrip(" \x00").split("\\")
    if vr == "UI":
        return data.decode("latin-1").rstrip("\x00 ").split("\\")
    if vr in _TEXT or vr in _SINGLE_TEXT:
        if codec is None:
            return None
        if vr in _SINGLE_TEXT:
            return [data.decode(codec).rstrip("\x00 ")]
        return [value.rstrip("\x00 ") for value in data.decode(codec).split("\\")]
    if vr == "UR":
        return [data.decode("latin-1").rstrip()]
    if vr == "AE":
        return [value.strip() for value in data.decode("latin-1").split("\\")]
    if vr == "IS":
        texts = data.decode("latin-1").strip().rstrip("\x00").split("\\")
        if not all(text.strip().lstrip("+-").isdigit() for text in texts):
            return None  # empty or decimal values: pydicom's rules for those
        return [int(text) for text in texts]
    if vr == "DS":
        numbers = [float(text) for text in data.decode("latin-1").strip().rstrip("\x00").split("\\")]
        return numbers if all(math.isfinite(number) for number in numbers) else None
    code = _NUMBERS.get(vr)
    if code is not None:
        size = _SIZES[code]
        if len(data) % size:
            return None
        numbers = list(struct.unpack(f"<{len(data) // size}{code}", data))
        if code in "fd" and not all(math.isfinite(number) for number in numbers):
            return None
        return numbers
    return None


def element_json(vr: str | None, data: bytes | None, codec: str | None) -> dict[str, Any] | None:
    """The DICOM JSON of one explicit-VR little-endian raw element, or None (let pydicom do it).

    ``codec`` decodes SH/LO/UC/ST/LT/UT text (None when the data set's character set is not one
    of :data:`SIMPLE_CHARSETS`: those VRs are then left to pydicom).
    """
    if vr is None or data is None:
        return None
    if not data:
        return {"vr": vr} if vr in _NUMBERS or vr in _KNOWN_STRING_VRS else None
    if codec is None and (vr in _TEXT or vr in _SINGLE_TEXT):
        return None
    try:
        values = _values(vr, data, codec)
    except (UnicodeDecodeError, ValueError, OverflowError):
        return None
    if values is None:
        return None
    if values == [""] and vr not in _NUMBERS:
        return {"vr": vr}  # only padding: an empty attribute
    return {"vr": vr, "Value": values}


_KNOWN_STRING_VRS = _SPLIT_STRIPPED_WHOLE | _TEXT | _SINGLE_TEXT | {"UI", "UR", "AE", "IS", "DS"}


def charset_codec(value: Any) -> str | None:
    """The codec of a Specific Character Set (0008,0005) value (raw bytes or as pydicom converted it)
    handled here, else None (several values: code extensions, left to pydicom)."""
    if isinstance(value, bytes):
        value = value.decode("latin-1").strip(" \x00").split("\\")
    elif value is None or isinstance(value, str):
        value = [value or ""]
    values = [str(item).strip(" \x00") for item in value]
    return SIMPLE_CHARSETS.get(values[0]) if len(values) == 1 else None
