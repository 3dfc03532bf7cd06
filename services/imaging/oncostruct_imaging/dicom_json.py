"""The DICOM JSON model (PS3.18 §F.2) and, for STOW-RS responses, the Native DICOM Model XML (PS3.19 §A.1)."""

from __future__ import annotations

import json
from typing import Any
from xml.etree import ElementTree

import pydicom.datadict
from fastapi.responses import Response

DICOM_JSON = "application/dicom+json"
DICOM_XML = "application/dicom+xml"
_NATIVE_NS = "http://dicom.nema.org/PS3.19/models/NativeDICOM"


def element(vr: str, *values: Any) -> dict[str, Any]:
    """One DICOM JSON attribute; ``None`` values are dropped (an empty attribute has no ``Value``)."""
    present = [value for value in values if value is not None]
    return {"vr": vr, "Value": present} if present else {"vr": vr}


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON (PS3.18 §F.2: DICOM JSON is always UTF-8)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def dicom_json_response(
    datasets: list[dict[str, Any]] | dict[str, Any], headers: dict[str, str] | None = None, status: int = 200
) -> Response:
    """An ``application/dicom+json`` response (an empty array when nothing matched)."""
    return Response(dumps(datasets), status_code=status, media_type=DICOM_JSON, headers=headers)


def _xml_attributes(parent: ElementTree.Element, dataset: dict[str, Any]) -> None:
    for tag, attribute in dataset.items():
        node = ElementTree.SubElement(parent, "DicomAttribute", {"tag": tag, "vr": attribute["vr"]})
        keyword = pydicom.datadict.keyword_for_tag(int(tag, 16))
        if keyword:
            node.set("keyword", keyword)
        for number, value in enumerate(attribute.get("Value", []), start=1):
            if attribute["vr"] == "SQ":
                _xml_attributes(ElementTree.SubElement(node, "Item", number=str(number)), value)
            elif attribute["vr"] == "PN":
                name = ElementTree.SubElement(node, "PersonName", number=str(number))
                for group, text in value.items():
                    ElementTree.SubElement(name, group).text = text
            else:
                ElementTree.SubElement(node, "Value", number=str(number)).text = str(value)


def native_dicom_model(dataset: dict[str, Any]) -> bytes:
    """A DICOM JSON object as a PS3.19 NativeDicomModel document (enough for the STOW-RS response)."""
    root = ElementTree.Element("NativeDicomModel", xmlns=_NATIVE_NS)
    _xml_attributes(root, dataset)
    body: bytes = ElementTree.tostring(root, encoding="utf-8", xml_declaration=False)
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + body
