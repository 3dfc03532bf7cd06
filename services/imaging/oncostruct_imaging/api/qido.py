"""QIDO-RS: search for studies, series and instances (PS3.18 §10.6).

Matching follows PS3.4 §C.2.2.2 on the keys PS3.18 Table 10.6.1-5 requires
per level (plus a few common optional ones), named by keyword or tag:

- single value (case-sensitive, except PN: case-insensitive on each of the
  Alphabetic, Ideographic and Phonetic groups; ``A=B=C`` matches group by group);
- UID list matching (``,`` or ``\\`` separated, PS3.18 §8.3.4.1);
- wildcards ``*`` and ``?`` (§C.2.2.2.4); a lone ``*`` or an empty value matches all;
- date, time and ranges ``a-b``, ``a-``, ``-b`` (§C.2.2.2.5);
- ``fuzzymatching=true`` (PS3.18 §8.3.4.5): a PN query term then matches any
  name whose family, given, middle, prefix or suffix component in any group
  *starts with* it, case-insensitively (``yama`` finds ``Yamada^Taro``);
- sequence matching on RequestAttributesSequence items (§C.2.2.2.6).

A key the server does not match on is named in a ``Warning`` header, never
silently dropped; invalid values (bad date, time, UID, number) answer 400.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import Response
from sqlalchemy import ColumnElement, Select, and_, exists, func, literal, or_, select
from sqlalchemy.orm import InstrumentedAttribute

from oncostruct_shared.db import LazyConnection
from oncostruct_shared.errors import Invalid, NotAcceptable
from oncostruct_shared.multipart import parse_accept, type_matches
from oncostruct_shared.surfaces import warning_header

from ..config import Settings
from ..deps import DicomwebDep, DicomwebRoute
from ..dicom_json import DICOM_JSON, dicom_json_response, element
from ..models import InstanceRow, PatientRow, SeriesRow, StudyRow
from ..parsing import keyword_tag, normalize_tm, tag_hex
from ..uids import require_uid

router = APIRouter(tags=["QIDO-RS"], route_class=DicomwebRoute)

Level = Literal["study", "series", "instance"]
Kind = Literal["uid", "string", "pn", "date", "time", "int", "modalities", "sequence"]
_LEVEL_ORDER: dict[Level, int] = {"study": 0, "series": 1, "instance": 2}


@dataclass(frozen=True)
class MatchingKey:
    """A key QIDO-RS matches on: where it lives and how its values compare."""

    keyword: str
    level: Level
    kind: Kind
    columns: tuple[InstrumentedAttribute[Any], ...]


def _key(keyword: str, level: Level, kind: Kind, *columns: InstrumentedAttribute[Any]) -> tuple[int, MatchingKey]:
    tag = keyword_tag(keyword)
    assert tag is not None, keyword
    return tag, MatchingKey(keyword, level, kind, columns)


# PS3.18 Table 10.6.1-5 (required) plus common optional keys.
MATCHING_KEYS: dict[int, MatchingKey] = dict(
    [
        _key("StudyDate", "study", "date", StudyRow.study_date),
        _key("StudyTime", "study", "time", StudyRow.study_time),
        _key("AccessionNumber", "study", "string", StudyRow.accession_number),
        _key("ModalitiesInStudy", "study", "modalities"),
        _key(
            "ReferringPhysicianName",
            "study",
            "pn",
            StudyRow.referring_alphabetic,
            StudyRow.referring_ideographic,
            StudyRow.referring_phonetic,
        ),
        _key(
            "PatientName",
            "study",
            "pn",
            PatientRow.name_alphabetic,
            PatientRow.name_ideographic,
            PatientRow.name_phonetic,
        ),
        _key("PatientID", "study", "string", PatientRow.patient_id),
        _key("IssuerOfPatientID", "study", "string", PatientRow.issuer_of_patient_id),
        _key("PatientBirthDate", "study", "date", PatientRow.birth_date),
        _key("PatientSex", "study", "string", PatientRow.sex),
        _key("StudyInstanceUID", "study", "uid", StudyRow.study_instance_uid),
        _key("StudyID", "study", "string", StudyRow.study_id),
        _key("StudyDescription", "study", "string", StudyRow.study_description),
        _key("Modality", "series", "string", SeriesRow.modality),
        _key("SeriesInstanceUID", "series", "uid", SeriesRow.series_instance_uid),
        _key("SeriesNumber", "series", "int", SeriesRow.series_number),
        _key("SeriesDescription", "series", "string", SeriesRow.series_description),
        _key("BodyPartExamined", "series", "string", SeriesRow.body_part_examined),
        _key("PerformedProcedureStepStartDate", "series", "date", SeriesRow.pps_start_date),
        _key("PerformedProcedureStepStartTime", "series", "time", SeriesRow.pps_start_time),
        _key("ScheduledProcedureStepID", "series", "sequence", SeriesRow.scheduled_procedure_step_ids),
        _key("RequestedProcedureID", "series", "sequence", SeriesRow.requested_procedure_ids),
        _key("SOPClassUID", "instance", "uid", InstanceRow.sop_class_uid),
        _key("SOPInstanceUID", "instance", "uid", InstanceRow.sop_instance_uid),
        _key("InstanceNumber", "instance", "int", InstanceRow.instance_number),
    ]
)
_REQUEST_ATTRIBUTES_SEQUENCE = 0x00400275
_SEQUENCE_KEYS = {keyword_tag("ScheduledProcedureStepID"), keyword_tag("RequestedProcedureID")}
_RESULT_PARAMETERS = frozenset({"limit", "offset", "includefield", "fuzzymatching"})
_DATE = re.compile(r"^\d{8}$")

# Attributes each level returns by default (PS3.18 Tables 10.6.3-3, -4, -5).
_STUDY_DEFAULTS = frozenset(
    [
        "00080005",
        "00080020",
        "00080030",
        "00080050",
        "00080056",
        "00080061",
        "00080090",
        "00080201",
        "00081030",
        "00081190",
        "00100010",
        "00100020",
        "00100030",
        "00100040",
        "0020000D",
        "00200010",
        "00201206",
        "00201208",
    ]
)
_SERIES_DEFAULTS = frozenset(
    [
        "00080005",
        "00080060",
        "00080201",
        "0008103E",
        "00081190",
        "0020000D",
        "0020000E",
        "00200011",
        "00201209",
        "00400244",
        "00400245",
        "00400275",
    ]
)
_INSTANCE_DEFAULTS = frozenset(
    [
        "00080005",
        "00080016",
        "00080018",
        "00080056",
        "00080201",
        "00081190",
        "0020000D",
        "0020000E",
        "00200013",
        "00280008",
        "00280010",
        "00280011",
        "00280100",
    ]
)


@dataclass
class SearchRequest:
    """The parsed query of one QIDO-RS request."""

    filters: list[ColumnElement[bool]]
    warnings: list[str]
    include_all: bool
    include: set[str]
    fuzzy: bool
    limit: int
    offset: int


def _like(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped.replace("*", "%").replace("?", "_")


def _has_wildcard(value: str) -> bool:
    return "*" in value or "?" in value


def _parse_date(text_value: str, keyword: str) -> date:
    if not _DATE.match(text_value):
        raise Invalid(f"{keyword}: {text_value!r} is not a DICOM date (YYYYMMDD, PS3.5 §6.2).")
    try:
        return date(int(text_value[:4]), int(text_value[4:6]), int(text_value[6:]))
    except ValueError:
        raise Invalid(f"{keyword}: {text_value!r} is not a valid date.") from None


def _parse_time(text_value: str, keyword: str) -> str:
    normalized = normalize_tm(text_value)
    if normalized is None:
        raise Invalid(f"{keyword}: {text_value!r} is not a DICOM time (HHMMSS.FFFFFF, PS3.5 §6.2).")
    return normalized


def _range(
    column: InstrumentedAttribute[Any], value: str, parse: Callable[[str, str], Any], keyword: str
) -> ColumnElement[bool]:
    # PS3.4 §C.2.2.2.5: "a-b", "a-" and "-b" are ranges, inclusive.
    if "-" in value:
        low, _, high = value.partition("-")
        if not low and not high:
            raise Invalid(f"{keyword}: a range needs at least one end.")
        clauses = []
        if low:
            clauses.append(column >= parse(low, keyword))
        if high:
            clauses.append(column <= parse(high, keyword))
        return and_(*clauses)
    equal: ColumnElement[bool] = column == parse(value, keyword)
    return equal


def _pn_group_clause(column: InstrumentedAttribute[Any], value: str, fuzzy: bool) -> ColumnElement[bool]:
    lowered = func.lower(column)
    if fuzzy:
        # Each component (family^given^middle^prefix^suffix) may start with the query term.
        pattern = _like(value.lower())
        return or_(lowered.like(f"{pattern}%", escape="\\"), lowered.like(f"%^{pattern}%", escape="\\"))
    if _has_wildcard(value):
        return lowered.like(_like(value.lower()), escape="\\")
    return lowered == value.lower()


def _pn_clause(columns: tuple[InstrumentedAttribute[Any], ...], value: str, fuzzy: bool) -> ColumnElement[bool]:
    if "=" in value:  # group by group: Alphabetic=Ideographic=Phonetic
        groups = [*value.split("="), "", ""][:3]
        clauses = [
            _pn_group_clause(column, group, fuzzy)
            for column, group in zip(columns, groups, strict=True)
            if group and group != "*"
        ]
        return and_(*clauses) if clauses else and_(literal(True))
    return or_(*(_pn_group_clause(column, value, fuzzy) for column in columns))


def _sequence_clause(column: InstrumentedAttribute[Any], value: str) -> ColumnElement[bool]:
    if not _has_wildcard(value):
        return column.any_() == value
    values = func.unnest(column).table_valued("x").render_derived()
    return exists(select(literal(1)).select_from(values).where(values.c.x.like(_like(value), escape="\\")))


def _modalities_clause(value: str) -> ColumnElement[bool]:
    values = [part for part in re.split(r"[,\\]", value) if part]
    return exists(select(SeriesRow.pk).where(SeriesRow.study_pk == StudyRow.pk, SeriesRow.modality.in_(values)))


def match_clause(key: MatchingKey, value: str, fuzzy: bool) -> ColumnElement[bool] | None:
    """The WHERE clause for one matching key (None: universal match)."""
    if value == "" or value == "*":
        return None
    keyword = key.keyword
    if key.kind == "uid":
        uids = [uid for uid in re.split(r"[,\\]", value) if uid]
        for uid in uids:
            require_uid(uid, keyword)
        return key.columns[0].in_(uids)
    if key.kind == "date":
        return _range(key.columns[0], value, _parse_date, keyword)
    if key.kind == "time":
        return _range(key.columns[0], value, _parse_time, keyword)
    if key.kind == "int":
        if not re.fullmatch(r"-?\d{1,10}", value):
            raise Invalid(f"{keyword}: {value!r} is not an integer (IS, PS3.5 §6.2).")
        return key.columns[0] == int(value)
    if key.kind == "pn":
        return _pn_clause(key.columns, value, fuzzy)
    if key.kind == "modalities":
        return _modalities_clause(value)
    if key.kind == "sequence":
        return _sequence_clause(key.columns[0], value)
    column = key.columns[0]
    if "\\" in value and not _has_wildcard(value):  # a list of values (e.g. Modality=CT\MR)
        return column.in_(value.split("\\"))
    if _has_wildcard(value):
        return column.like(_like(value), escape="\\")
    return column == value


def _resolve_key(name: str) -> int | None:
    if "." in name:  # sequence matching: RequestAttributesSequence.ScheduledProcedureStepID
        outer, _, inner = name.partition(".")
        outer_tag = keyword_tag("RequestAttributesSequence" if outer == "RequestAttributeSequence" else outer)
        inner_tag = keyword_tag(inner)
        if outer_tag == _REQUEST_ATTRIBUTES_SEQUENCE and inner_tag in _SEQUENCE_KEYS:
            return inner_tag
        return None
    return keyword_tag(name)


def _int_parameter(request: Request, name: str, default: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isdigit():
        raise Invalid(f"{name} must be a non-negative integer, not {raw!r}.")
    return int(raw)


def parse_search(request: Request, settings: Settings, level: Level) -> SearchRequest:
    """Read matching keys and result parameters (PS3.18 §8.3.4) for a search at ``level``."""
    fuzzy_text = request.query_params.get("fuzzymatching", "false").lower()
    if fuzzy_text not in ("true", "false"):
        raise Invalid(f"fuzzymatching must be true or false, not {fuzzy_text!r}.")
    fuzzy = fuzzy_text == "true"
    filters: list[ColumnElement[bool]] = []
    unsupported: list[str] = []
    include: set[str] = set()
    include_all = False
    for name, value in request.query_params.multi_items():
        if name == "includefield":
            for field_name in value.split(","):
                field_name = field_name.strip()
                if field_name == "all":
                    include_all = True
                    continue
                tag = keyword_tag(field_name) if "." not in field_name else None
                if tag is None:
                    raise Invalid(f"includefield: {field_name!r} is not a DICOM keyword or tag.")
                include.add(tag_hex(tag))
            continue
        if name in _RESULT_PARAMETERS:
            continue
        tag = _resolve_key(name)
        key = MATCHING_KEYS.get(tag) if tag is not None else None
        if key is None or _LEVEL_ORDER[key.level] > _LEVEL_ORDER[level]:
            unsupported.append(name)
            continue
        clause = match_clause(key, value, fuzzy)
        if clause is not None:
            filters.append(clause)
    warnings: list[str] = []
    if unsupported:
        warnings.append(f"The following matching keys are not supported and were ignored: {', '.join(unsupported)}")
    limit = _int_parameter(request, "limit", settings.qido_default_limit)
    offset = _int_parameter(request, "offset", 0)
    if limit > settings.qido_max_limit:
        warnings.append(f"limit was reduced to {settings.qido_max_limit}")
        limit = settings.qido_max_limit
    return SearchRequest(filters, warnings, include_all, include, fuzzy, limit, offset)


def _accepts_dicom_json(request: Request) -> None:
    # PS3.18 §10.6.1.3: application/dicom+json (XML multipart is not offered).
    for media in parse_accept(request.headers.get("accept")):
        if any(type_matches(media.type, offered) for offered in (DICOM_JSON, "application/json")):
            return
    raise NotAcceptable(f"Search results are available as {DICOM_JSON} only.")


def _pick(attributes: dict[str, Any], wanted: frozenset[str] | set[str], everything: bool) -> dict[str, Any]:
    if everything:
        return dict(attributes)
    return {key: value for key, value in attributes.items() if key in wanted}


def _response(results: list[dict[str, Any]], search: SearchRequest, more: bool) -> Response:
    warnings = list(search.warnings)
    if more:
        warnings.append("There are more results than returned; use offset to page")
    headers = (
        {"Warning": ", ".join(warning_header("oncostruct-imaging", text) for text in warnings)} if warnings else None
    )
    return dicom_json_response([dict(sorted(result.items())) for result in results], headers=headers)


async def _study_counts(session: LazyConnection, study_pks: list[int]) -> dict[int, tuple[int, int, list[str]]]:
    if not study_pks:
        return {}
    query = (
        select(
            SeriesRow.study_pk,
            func.count(func.distinct(SeriesRow.pk)),
            func.count(InstanceRow.pk),
            func.array_agg(func.distinct(SeriesRow.modality)),
        )
        .join(InstanceRow, InstanceRow.series_pk == SeriesRow.pk)
        .where(SeriesRow.study_pk.in_(study_pks))
        .group_by(SeriesRow.study_pk)
    )
    rows = (await session.execute(query)).all()
    return {row[0]: (row[1], row[2], sorted(m for m in row[3] if m)) for row in rows}


async def _series_counts(session: LazyConnection, series_pks: list[int]) -> dict[int, int]:
    if not series_pks:
        return {}
    query = (
        select(InstanceRow.series_pk, func.count(InstanceRow.pk))
        .where(InstanceRow.series_pk.in_(series_pks))
        .group_by(InstanceRow.series_pk)
    )
    return {row[0]: row[1] for row in (await session.execute(query)).all()}


def _study_result(
    attributes: dict[str, Any],
    uid: str,
    counts: tuple[int, int, list[str]] | None,
    search: SearchRequest,
    base_url: str,
) -> dict[str, Any]:
    series_count, instance_count, modalities = counts or (0, 0, [])
    result = _pick(attributes, _STUDY_DEFAULTS | search.include, search.include_all)
    result.update(
        {
            "00080056": element("CS", "ONLINE"),
            "00080061": element("CS", *modalities),
            "00081190": element("UR", f"{base_url}/studies/{uid}"),
            "0020000D": element("UI", uid),
            "00201206": element("IS", series_count),
            "00201208": element("IS", instance_count),
        }
    )
    return result


def _paged(query: Select[Any], search: SearchRequest) -> Select[Any]:
    for clause in search.filters:
        query = query.where(clause)
    return query.offset(search.offset).limit(search.limit + 1)


async def _search_studies(request: Request, session: LazyConnection, settings: Settings) -> Response:
    _accepts_dicom_json(request)
    search = parse_search(request, settings, "study")
    query = (
        select(StudyRow.pk, StudyRow.study_instance_uid, StudyRow.attributes)
        .join(PatientRow, StudyRow.patient_pk == PatientRow.pk)
        .order_by(
            StudyRow.study_date.desc().nulls_last(),
            StudyRow.study_time.desc().nulls_last(),
            StudyRow.study_instance_uid,
        )
    )
    rows = (await session.execute(_paged(query, search))).all()
    more = len(rows) > search.limit
    rows = rows[: search.limit]
    counts = await _study_counts(session, [row.pk for row in rows])
    results = [
        _study_result(row.attributes, row.study_instance_uid, counts.get(row.pk), search, settings.base_url)
        for row in rows
    ]
    return _response(results, search, more)


async def _search_series(request: Request, session: LazyConnection, settings: Settings, study: str | None) -> Response:
    _accepts_dicom_json(request)
    search = parse_search(request, settings, "series")
    query = (
        select(
            SeriesRow.pk,
            SeriesRow.series_instance_uid,
            SeriesRow.attributes,
            StudyRow.pk.label("study_pk"),
            StudyRow.study_instance_uid,
            StudyRow.attributes.label("study_attributes"),
        )
        .join(StudyRow, SeriesRow.study_pk == StudyRow.pk)
        .join(PatientRow, StudyRow.patient_pk == PatientRow.pk)
        .order_by(StudyRow.study_instance_uid, SeriesRow.series_number.nulls_last(), SeriesRow.pk)
    )
    if study is not None:
        query = query.where(StudyRow.study_instance_uid == study)
    rows = (await session.execute(_paged(query, search))).all()
    more = len(rows) > search.limit
    rows = rows[: search.limit]
    counts = await _series_counts(session, [row.pk for row in rows])
    study_counts = await _study_counts(session, list({row.study_pk for row in rows})) if study is None else {}
    results = []
    for row in rows:
        result: dict[str, Any] = {}
        if study is None:  # PS3.18 §10.6.3.3.2: study attributes too when not under a study
            result.update(
                _study_result(
                    row.study_attributes,
                    row.study_instance_uid,
                    study_counts.get(row.study_pk),
                    search,
                    settings.base_url,
                )
            )
            result.pop("00081190", None)
        result.update(_pick(row.attributes, _SERIES_DEFAULTS | search.include, search.include_all))
        result.update(
            {
                "0020000D": element("UI", row.study_instance_uid),
                "0020000E": element("UI", row.series_instance_uid),
                "00081190": element(
                    "UR", f"{settings.base_url}/studies/{row.study_instance_uid}/series/{row.series_instance_uid}"
                ),
                "00201209": element("IS", counts.get(row.pk, 0)),
            }
        )
        results.append(result)
    return _response(results, search, more)


async def _search_instances(
    request: Request, session: LazyConnection, settings: Settings, study: str | None, series: str | None
) -> Response:
    _accepts_dicom_json(request)
    search = parse_search(request, settings, "instance")
    needs_metadata = search.include_all or bool(
        search.include - _INSTANCE_DEFAULTS - _STUDY_DEFAULTS - _SERIES_DEFAULTS
    )
    columns: list[Any] = [
        InstanceRow.sop_instance_uid,
        InstanceRow.sop_class_uid,
        InstanceRow.instance_number,
        InstanceRow.rows,
        InstanceRow.columns,
        InstanceRow.bits_allocated,
        InstanceRow.number_of_frames,
        SeriesRow.pk.label("series_pk"),
        SeriesRow.series_instance_uid,
        SeriesRow.attributes.label("series_attributes"),
        StudyRow.pk.label("study_pk"),
        StudyRow.study_instance_uid,
        StudyRow.attributes.label("study_attributes"),
        InstanceRow.metadata_json if needs_metadata else literal(None).label("metadata"),
    ]
    query = (
        select(*columns)
        .join(SeriesRow, InstanceRow.series_pk == SeriesRow.pk)
        .join(StudyRow, SeriesRow.study_pk == StudyRow.pk)
        .join(PatientRow, StudyRow.patient_pk == PatientRow.pk)
        .order_by(
            StudyRow.study_instance_uid,
            SeriesRow.series_number.nulls_last(),
            SeriesRow.pk,
            InstanceRow.instance_number.nulls_last(),
            InstanceRow.sop_instance_uid,
        )
    )
    if study is not None:
        query = query.where(StudyRow.study_instance_uid == study)
    if series is not None:
        query = query.where(SeriesRow.series_instance_uid == series)
    rows = (await session.execute(_paged(query, search))).all()
    more = len(rows) > search.limit
    rows = rows[: search.limit]
    study_counts = await _study_counts(session, list({row.study_pk for row in rows})) if study is None else {}
    series_counts = await _series_counts(session, list({row.series_pk for row in rows})) if series is None else {}
    base = settings.base_url
    results = []
    for row in rows:
        result: dict[str, Any] = {}
        if study is None:
            result.update(
                _study_result(
                    row.study_attributes, row.study_instance_uid, study_counts.get(row.study_pk), search, base
                )
            )
        if series is None:
            result.update(_pick(row.series_attributes, _SERIES_DEFAULTS | search.include, search.include_all))
            result["00201209"] = element("IS", series_counts.get(row.series_pk, 0))
        else:
            result.update(_pick(row.series_attributes, search.include, False))
        result.update(_pick(row.study_attributes, search.include, False))
        metadata_text = row[-1]
        if metadata_text is not None:
            metadata = json.loads(metadata_text.replace('"BulkDataURI":"', f'"BulkDataURI":"{base}'))
            result.update(_pick(metadata, search.include, search.include_all))
        instance_url = (
            f"{base}/studies/{row.study_instance_uid}/series/{row.series_instance_uid}/instances/{row.sop_instance_uid}"
        )
        result.update(
            {
                "00080016": element("UI", row.sop_class_uid),
                "00080018": element("UI", row.sop_instance_uid),
                "00080056": element("CS", "ONLINE"),
                "00081190": element("UR", instance_url),
                "0020000D": element("UI", row.study_instance_uid),
                "0020000E": element("UI", row.series_instance_uid),
                "00200013": element("IS", row.instance_number),
                "00280008": element("IS", row.number_of_frames),
                "00280010": element("US", row.rows),
                "00280011": element("US", row.columns),
                "00280100": element("US", row.bits_allocated),
            }
        )
        results.append({key: value for key, value in result.items() if value != {"vr": "US"}})
    return _response(results, search, more)


def _path_uid(value: str, what: str) -> str:
    return require_uid(value, what)


@router.get("/studies", response_class=Response)
async def search_for_studies(request: Request, ctx: DicomwebDep) -> Response:
    """Search for studies (QIDO-RS, PS3.18 §10.6)."""
    return await _search_studies(request, ctx.connection, ctx.settings)


@router.get("/series", response_class=Response)
async def search_for_series(request: Request, ctx: DicomwebDep) -> Response:
    """Search for series in all studies (QIDO-RS, PS3.18 §10.6)."""
    return await _search_series(request, ctx.connection, ctx.settings, None)


@router.get("/studies/{study}/series", response_class=Response)
async def search_for_series_in_study(request: Request, study: str, ctx: DicomwebDep) -> Response:
    """Search for series of one study (QIDO-RS, PS3.18 §10.6)."""
    return await _search_series(request, ctx.connection, ctx.settings, _path_uid(study, "Study Instance UID"))


@router.get("/instances", response_class=Response)
async def search_for_instances(request: Request, ctx: DicomwebDep) -> Response:
    """Search for instances in all studies (QIDO-RS, PS3.18 §10.6)."""
    return await _search_instances(request, ctx.connection, ctx.settings, None, None)


@router.get("/studies/{study}/instances", response_class=Response)
async def search_for_instances_in_study(request: Request, study: str, ctx: DicomwebDep) -> Response:
    """Search for instances of one study (QIDO-RS, PS3.18 §10.6)."""
    return await _search_instances(request, ctx.connection, ctx.settings, _path_uid(study, "Study Instance UID"), None)


@router.get("/studies/{study}/series/{series}/instances", response_class=Response)
async def search_for_instances_in_series(request: Request, study: str, series: str, ctx: DicomwebDep) -> Response:
    """Search for instances of one series (QIDO-RS, PS3.18 §10.6)."""
    return await _search_instances(
        request,
        ctx.connection,
        ctx.settings,
        _path_uid(study, "Study Instance UID"),
        _path_uid(series, "Series Instance UID"),
    )
