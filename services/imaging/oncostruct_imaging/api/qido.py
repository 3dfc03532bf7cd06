"""QIDO-RS: search for studies (PS3.18 §10.6).

Matching follows PS3.4 §C.2.2.2: single value, UID list (``,`` or ``\\``
separated), wildcard ``*``/``?`` on string keys, and date ranges
(``YYYYMMDD-YYYYMMDD``, open-ended either side). A key the server does not
match on is reported in a ``Warning`` header, never silently ignored.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from sqlalchemy import Select, select
from sqlalchemy.orm import InstrumentedAttribute

from oncostruct_shared.auth import require_scopes
from oncostruct_shared.db import SessionDep
from oncostruct_shared.errors import Invalid, NotAcceptable
from oncostruct_shared.surfaces import warning_header

from ..config import Settings
from ..dicom_json import DICOM_JSON, dicom_json_response, element
from ..models import StudyRow

router = APIRouter(tags=["QIDO-RS"])

#: Study-level matching keys this server supports: keyword → (tag, column, kind).
STUDY_KEYS: dict[str, tuple[str, InstrumentedAttribute[Any], str]] = {
    "StudyInstanceUID": ("0020000D", StudyRow.study_instance_uid, "uid"),
    "PatientID": ("00100020", StudyRow.patient_id, "string"),
    "AccessionNumber": ("00080050", StudyRow.accession_number, "string"),
    "StudyDate": ("00080020", StudyRow.study_date, "date"),
}
_BY_TAG = {tag: keyword for keyword, (tag, _, _) in STUDY_KEYS.items()}
_RESULT_PARAMETERS = frozenset({"limit", "offset", "includefield", "fuzzymatching"})
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_DATE = re.compile(r"^\d{8}$")


def _parse_date(text: str, key: str) -> date:
    if not _DATE.match(text):
        raise Invalid(f"{key}: {text!r} is not a DICOM date (YYYYMMDD).")
    try:
        return date(int(text[:4]), int(text[4:6]), int(text[6:]))
    except ValueError:
        raise Invalid(f"{key}: {text!r} is not a valid date.") from None


def _like(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


def _match(query: Select[StudyRow], keyword: str, value: str) -> Select[StudyRow]:
    _, column, kind = STUDY_KEYS[keyword]
    if kind == "uid":
        uids = [uid for uid in re.split(r"[,\\]", value) if uid]
        for uid in uids:
            if len(uid) > 64 or not _UID.match(uid):
                raise Invalid(f"{keyword}: {uid!r} is not a valid UID (PS3.5 §9.1).")
        return query.where(column.in_(uids))
    if kind == "date":
        if "-" in value:
            low, _, high = value.partition("-")
            if low:
                query = query.where(column >= _parse_date(low, keyword))
            if high:
                query = query.where(column <= _parse_date(high, keyword))
            return query
        return query.where(column == _parse_date(value, keyword))
    if "*" in value or "?" in value:
        return query.where(column.like(_like(value), escape="\\"))
    return query.where(column == value)


def _int_parameter(request: Request, name: str, default: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not raw.isdigit():
        raise Invalid(f"{name} must be a non-negative integer, not {raw!r}.")
    return int(raw)


def _accepts_dicom_json(request: Request) -> None:
    accept = request.headers.get("accept", "")
    types = [part.split(";")[0].strip().lower() for part in accept.split(",") if part.strip()]
    if not types or any(t in (DICOM_JSON, "application/json", "*/*", "application/*") for t in types):
        return
    raise NotAcceptable(f"Search results are available as {DICOM_JSON} only.")


def study_attributes(row: StudyRow, base_url: str) -> dict[str, Any]:
    """The DICOM JSON of one study result (PS3.18 Table 10.6.3-3 attributes)."""
    attributes: dict[str, Any] = {
        "00080020": element("DA", row.study_date.strftime("%Y%m%d") if row.study_date else None),
        "00080030": element("TM", row.study_time),
        "00080050": element("SH", row.accession_number),
        "00080061": element("CS", *row.modalities),
        "00081030": element("LO", row.study_description),
        "00081190": element("UR", f"{base_url}/studies/{row.study_instance_uid}"),
        "00100010": element("PN", {"Alphabetic": row.patient_name} if row.patient_name else None),
        "00100020": element("LO", row.patient_id),
        "0020000D": element("UI", row.study_instance_uid),
        "00201206": element("IS", row.series_count),
        "00201208": element("IS", row.instance_count),
    }
    return attributes


@router.get("/studies", dependencies=[Depends(require_scopes("dicomweb.read"))], response_class=Response)
async def search_for_studies(request: Request, session: SessionDep) -> Response:
    """Search for studies (QIDO-RS, PS3.18 §10.6)."""
    _accepts_dicom_json(request)
    settings: Settings = request.app.state.settings
    warnings: list[str] = []
    query = select(StudyRow)
    ignored: list[str] = []
    for name, value in request.query_params.multi_items():
        if name in _RESULT_PARAMETERS:
            continue
        keyword = _BY_TAG.get(name.upper(), name)
        if keyword not in STUDY_KEYS:
            ignored.append(name)
            continue
        query = _match(query, keyword, value)
    if ignored:
        warnings.append(f"The following matching keys are not supported and were ignored: {', '.join(ignored)}")
    if request.query_params.get("fuzzymatching", "false").lower() == "true":
        warnings.append("fuzzymatching is not supported; exact and wildcard matching were applied")
    limit = _int_parameter(request, "limit", settings.qido_default_limit)
    offset = _int_parameter(request, "offset", 0)
    if limit > settings.qido_max_limit:
        warnings.append(f"limit was reduced to {settings.qido_max_limit}")
        limit = settings.qido_max_limit
    query = query.order_by(StudyRow.study_date.desc().nulls_last(), StudyRow.study_instance_uid)
    rows = (await session.scalars(query.offset(offset).limit(limit + 1))).all()
    if len(rows) > limit:
        warnings.append("There are more results than returned; use offset to page")
        rows = rows[:limit]
    headers = (
        {"Warning": ", ".join(warning_header("oncostruct-imaging", text) for text in warnings)} if warnings else None
    )
    return dicom_json_response([study_attributes(row, settings.base_url) for row in rows], headers=headers)
