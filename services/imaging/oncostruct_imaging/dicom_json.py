"""The DICOM JSON model (PS3.18 §F.2) as far as responses need it."""

from __future__ import annotations

import json
from typing import Any

from fastapi.responses import Response

DICOM_JSON = "application/dicom+json"


def element(vr: str, *values: Any) -> dict[str, Any]:
    """One DICOM JSON attribute; ``None`` values are dropped (an empty attribute has no ``Value``)."""
    present = [value for value in values if value is not None]
    return {"vr": vr, "Value": present} if present else {"vr": vr}


def dicom_json_response(datasets: list[dict[str, Any]], headers: dict[str, str] | None = None) -> Response:
    """A 200 ``application/dicom+json`` response (an empty array when nothing matched)."""
    body = json.dumps(datasets, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    return Response(body, media_type=DICOM_JSON, headers=headers)
