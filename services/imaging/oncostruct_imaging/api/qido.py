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
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Literal

import asyncpg
from fastapi import APIRouter, Request
from fastapi.responses import Response

from oncostruct_shared.errors import Invalid, NotAcceptable
from oncostruct_shared.multipart import parse_accept, type_matches
from oncostruct_shared.surfaces import warning_header

from ..config import Settings
from ..deps import DicomwebDep, DicomwebRoute
from ..dicom_json import DICOM_JSON, dicom_json_response, element
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
    columns: tuple[str, ...]


def _key(keyword: str, level: Level, kind: Kind, *columns: str) -> tuple[int, MatchingKey]:
    tag = keyword_tag(keyword)
    assert tag is not None, keyword
    return tag, MatchingKey(keyword, level, kind, columns)


# PS3.18 Table 10.6.1-5 (required) plus common optional keys.
MATCHING_KEYS: dict[int, MatchingKey] = dict(
    [
        _key("StudyDate", "study", "date", "st.study_date"),
        _key("StudyTime", "study", "time", "st.study_time"),
        _key("AccessionNumber", "study", "string", "st.accession_number"),
        _key("ModalitiesInStudy", "study", "modalities"),
        _key(
            "ReferringPhysicianName",
            "study",
            "pn",
            "st.referring_alphabetic",
            "st.referring_ideographic",
            "st.referring_phonetic",
        ),
        _key(
            "PatientName",
            "study",
            "pn",
            "p.name_alphabetic",
            "p.name_ideographic",
            "p.name_phonetic",
        ),
        _key("PatientID", "study", "string", "p.patient_id"),
        _key("IssuerOfPatientID", "study", "string", "p.issuer_of_patient_id"),
        _key("PatientBirthDate", "study", "date", "p.birth_date"),
        _key("PatientSex", "study", "string", "p.sex"),
        _key("StudyInstanceUID", "study", "uid", "st.study_instance_uid"),
        _key("StudyID", "study", "string", "st.study_id"),
        _key("StudyDescription", "study", "string", "st.study_description"),
        _key("Modality", "series", "string", "se.modality"),
        _key("SeriesInstanceUID", "series", "uid", "se.series_instance_uid"),
        _key("SeriesNumber", "series", "int", "se.series_number"),
        _key("SeriesDescription", "series", "string", "se.series_description"),
        _key("BodyPartExamined", "series", "string", "se.body_part_examined"),
        _key("PerformedProcedureStepStartDate", "series", "date", "se.pps_start_date"),
        _key("PerformedProcedureStepStartTime", "series", "time", "se.pps_start_time"),
        _key("ScheduledProcedureStepID", "series", "sequence", "se.scheduled_procedure_step_ids"),
        _key("RequestedProcedureID", "series", "sequence", "se.requested_procedure_ids"),
        _key("SOPClassUID", "instance", "uid", "i.sop_class_uid"),
        _key("SOPInstanceUID", "instance", "uid", "i.sop_instance_uid"),
        _key("InstanceNumber", "instance", "int", "i.instance_number"),
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
    """The parsed query of one QIDO-RS request: WHERE clauses with ``$n`` parameters in ``params``."""

    filters: list[str]
    warnings: list[str]
    include_all: bool
    include: set[str]
    fuzzy: bool
    limit: int
    offset: int
    params: list[Any] = field(default_factory=list)

    def bind(self, value: Any) -> str:
        """A new positional parameter holding ``value``; returns its ``$n``."""
        self.params.append(value)
        return f"${len(self.params)}"

    def where(self, *extra: str) -> str:
        """The AND of the matching keys' clauses and ``extra`` ones (``TRUE`` if none)."""
        clauses = [*self.filters, *extra]
        return " AND ".join(f"({clause})" for clause in clauses) or "TRUE"


_ESCAPE = "ESCAPE '\\'"


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


def _range(search: SearchRequest, column: str, value: str, parse: Callable[[str, str], Any], keyword: str) -> str:
    # PS3.4 §C.2.2.2.5: "a-b", "a-" and "-b" are ranges, inclusive.
    if "-" in value:
        low, _, high = value.partition("-")
        if not low and not high:
            raise Invalid(f"{keyword}: a range needs at least one end.")
        clauses = []
        if low:
            clauses.append(f"{column} >= {search.bind(parse(low, keyword))}")
        if high:
            clauses.append(f"{column} <= {search.bind(parse(high, keyword))}")
        return " AND ".join(clauses)
    return f"{column} = {search.bind(parse(value, keyword))}"


def _pn_group_clause(search: SearchRequest, column: str, value: str, fuzzy: bool) -> str:
    if fuzzy:
        # Each component (family^given^middle^prefix^suffix) may start with the query term.
        pattern = _like(value.lower())
        return (
            f"lower({column}) LIKE {search.bind(pattern + '%')} {_ESCAPE} "
            f"OR lower({column}) LIKE {search.bind('%^' + pattern + '%')} {_ESCAPE}"
        )
    if _has_wildcard(value):
        return f"lower({column}) LIKE {search.bind(_like(value.lower()))} {_ESCAPE}"
    return f"lower({column}) = {search.bind(value.lower())}"


def _pn_clause(search: SearchRequest, columns: tuple[str, ...], value: str, fuzzy: bool) -> str:
    if "=" in value:  # group by group: Alphabetic=Ideographic=Phonetic
        groups = [*value.split("="), "", ""][:3]
        clauses = [
            _pn_group_clause(search, column, group, fuzzy)
            for column, group in zip(columns, groups, strict=True)
            if group and group != "*"
        ]
        return " AND ".join(f"({clause})" for clause in clauses) or "TRUE"
    return " OR ".join(f"({_pn_group_clause(search, column, value, fuzzy)})" for column in columns)


def _sequence_clause(search: SearchRequest, column: str, value: str) -> str:
    if not _has_wildcard(value):
        return f"{search.bind(value)} = ANY({column})"
    return f"EXISTS (SELECT 1 FROM unnest({column}) AS x(v) WHERE x.v LIKE {search.bind(_like(value))} {_ESCAPE})"


def _modalities_clause(search: SearchRequest, value: str) -> str:
    values = [part for part in re.split(r"[,\\]", value) if part]
    return f"EXISTS (SELECT 1 FROM series m WHERE m.study_pk = st.pk AND m.modality = ANY({search.bind(values)}))"


def match_clause(search: SearchRequest, key: MatchingKey, value: str) -> str | None:
    """The WHERE clause for one matching key, its values bound in ``search`` (None: universal match)."""
    if value == "" or value == "*":
        return None
    keyword = key.keyword
    if key.kind == "uid":
        uids = [uid for uid in re.split(r"[,\\]", value) if uid]
        for uid in uids:
            require_uid(uid, keyword)
        return f"{key.columns[0]} = ANY({search.bind(uids)})"
    if key.kind == "date":
        return _range(search, key.columns[0], value, _parse_date, keyword)
    if key.kind == "time":
        return _range(search, key.columns[0], value, _parse_time, keyword)
    if key.kind == "int":
        if not re.fullmatch(r"-?\d{1,10}", value):
            raise Invalid(f"{keyword}: {value!r} is not an integer (IS, PS3.5 §6.2).")
        number = int(value)
        if not -(2**31) <= number < 2**31:
            raise Invalid(f"{keyword}: {value!r} is out of range for an integer string (IS).")
        return f"{key.columns[0]} = {search.bind(number)}"
    if key.kind == "pn":
        return _pn_clause(search, key.columns, value, search.fuzzy)
    if key.kind == "modalities":
        return _modalities_clause(search, value)
    if key.kind == "sequence":
        return _sequence_clause(search, key.columns[0], value)
    column = key.columns[0]
    if "\\" in value and not _has_wildcard(value):  # a list of values (e.g. Modality=CT\MR)
        values = value.split("\\")
        return f"{column} = ANY({search.bind(values)})"
    if _has_wildcard(value):
        return f"{column} LIKE {search.bind(_like(value))} {_ESCAPE}"
    return f"{column} = {search.bind(value)}"


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
    if not raw.isdigit() or not raw.isascii():
        raise Invalid(f"{name} must be a non-negative integer, not {raw!r}.")
    value = int(raw)
    if name == "offset" and value > 2**63 - 1:  # PostgreSQL's OFFSET is a bigint
        raise Invalid(f"offset {raw} is out of range.")
    return value


def parse_search(request: Request, settings: Settings, level: Level) -> SearchRequest:
    """Read matching keys and result parameters (PS3.18 §8.3.4) for a search at ``level``."""
    fuzzy_text = request.query_params.get("fuzzymatching", "false").lower()
    if fuzzy_text not in ("true", "false"):
        raise Invalid(f"fuzzymatching must be true or false, not {fuzzy_text!r}.")
    search = SearchRequest([], [], False, set(), fuzzy_text == "true", 0, 0)
    unsupported: list[str] = []
    include: set[str] = set()
    include_all = False
    for name, value in request.query_params.multi_items():
        if "\x00" in value or "\x00" in name:  # no DICOM value holds one; PostgreSQL text cannot
            raise Invalid(f"The query parameter {name!r} contains a NUL control character.")
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
        clause = match_clause(search, key, value)
        if clause is not None:
            search.filters.append(clause)
    warnings: list[str] = []
    if unsupported:
        warnings.append(f"The following matching keys are not supported and were ignored: {', '.join(unsupported)}")
    limit = _int_parameter(request, "limit", settings.qido_default_limit)
    offset = _int_parameter(request, "offset", 0)
    if limit > settings.qido_max_limit:
        warnings.append(f"limit was reduced to {settings.qido_max_limit}")
        limit = settings.qido_max_limit
    search.warnings, search.include_all, search.include = warnings, include_all, include
    search.limit, search.offset = limit, offset
    return search


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


#: A pooled connection or the pool (both run one statement with ``fetch``).
Fetcher = asyncpg.Connection | asyncpg.pool.PoolConnectionProxy | asyncpg.Pool

#: Series and instance counts and modalities of a study (a LATERAL subquery on ``{study_pk}``).
_STUDY_COUNTS = (
    "SELECT count(DISTINCT cs.pk) AS series_count, count(ci.pk) AS instance_count, "
    "array_agg(DISTINCT cs.modality) AS modalities "
    "FROM series cs JOIN instance ci ON ci.series_pk = cs.pk WHERE cs.study_pk = {study_pk}"
)


async def _study_counts(connection: Fetcher, study_pks: list[int]) -> dict[int, tuple[int, int, list[str]]]:
    if not study_pks:
        return {}
    rows = await connection.fetch(
        "SELECT u.pk, c.series_count, c.instance_count, c.modalities FROM unnest($1::bigint[]) AS u(pk) "
        f"CROSS JOIN LATERAL ({_STUDY_COUNTS.format(study_pk='u.pk')}) c",
        study_pks,
    )
    return {row[0]: _counts(row[1], row[2], row[3]) for row in rows}


def _counts(
    series: int | None, instances: int | None, modalities: list[str | None] | None
) -> tuple[int, int, list[str]]:
    return series or 0, instances or 0, sorted(m for m in modalities or [] if m)


async def _series_counts(connection: Fetcher, series_pks: list[int]) -> dict[int, int]:
    if not series_pks:
        return {}
    rows = await connection.fetch(
        "SELECT series_pk, count(*) FROM instance WHERE series_pk = ANY($1::bigint[]) GROUP BY series_pk", series_pks
    )
    return {row[0]: row[1] for row in rows}


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


async def _fetch_page(connection: Fetcher, sql: str, search: SearchRequest) -> tuple[list[asyncpg.Record], bool]:
    """The page's rows, and whether more matched (the statement asks for one row more than the limit)."""
    rows = await connection.fetch(sql, *search.params)
    return rows[: search.limit], len(rows) > search.limit


def _page(search: SearchRequest) -> str:
    return f"OFFSET {search.bind(search.offset)} LIMIT {search.bind(search.limit + 1)}"


async def _search_studies(request: Request, pool: asyncpg.Pool, settings: Settings) -> Response:
    _accepts_dicom_json(request)
    search = parse_search(request, settings, "study")
    order = "{t}.study_date DESC NULLS LAST, {t}.study_time DESC NULLS LAST, {t}.study_instance_uid"
    # The page first, then the counts of its studies only (LATERAL on the page).
    sql = (
        "SELECT s.pk, s.study_instance_uid, s.attributes, c.series_count, c.instance_count, c.modalities FROM ("
        "SELECT st.pk, st.study_instance_uid, st.attributes, st.study_date, st.study_time "
        f"FROM study st JOIN patient p ON st.patient_pk = p.pk WHERE {search.where()} "
        f"ORDER BY {order.format(t='st')} {_page(search)}) s "
        f"LEFT JOIN LATERAL ({_STUDY_COUNTS.format(study_pk='s.pk')}) c ON TRUE ORDER BY {order.format(t='s')}"
    )
    rows, more = await _fetch_page(pool, sql, search)
    results = [
        _study_result(row[2], row[1], _counts(row[3], row[4], row[5]), search, settings.base_url) for row in rows
    ]
    return _response(results, search, more)


async def _search_series(request: Request, pool: asyncpg.Pool, settings: Settings, study: str | None) -> Response:
    _accepts_dicom_json(request)
    search = parse_search(request, settings, "series")
    extra = [f"st.study_instance_uid = {search.bind(study)}"] if study is not None else []
    order = "{t}study_instance_uid, {t}series_number NULLS LAST, {t}pk"
    sql = (
        "SELECT x.pk, x.series_instance_uid, x.attributes, x.study_pk, x.study_instance_uid, x.study_attributes, "
        "(SELECT count(*) FROM instance ci WHERE ci.series_pk = x.pk) FROM ("
        "SELECT se.pk, se.series_instance_uid, se.attributes, se.series_number, st.pk AS study_pk, "
        "st.study_instance_uid, st.attributes AS study_attributes FROM series se "
        "JOIN study st ON se.study_pk = st.pk JOIN patient p ON st.patient_pk = p.pk "
        f"WHERE {search.where(*extra)} "
        f"ORDER BY st.study_instance_uid, se.series_number NULLS LAST, se.pk {_page(search)}) x "
        f"ORDER BY {order.format(t='x.')}"
    )
    async with pool.acquire() as connection:
        rows, more = await _fetch_page(connection, sql, search)
        study_counts = await _study_counts(connection, list({row[3] for row in rows})) if study is None else {}
    results = []
    for _pk, series_uid, attributes, study_pk, study_uid, study_attributes, instance_count in rows:
        result: dict[str, Any] = {}
        if study is None:  # PS3.18 §10.6.3.3.2: study attributes too when not under a study
            result.update(
                _study_result(study_attributes, study_uid, study_counts.get(study_pk), search, settings.base_url)
            )
            result.pop("00081190", None)
        result.update(_pick(attributes, _SERIES_DEFAULTS | search.include, search.include_all))
        result.update(
            {
                "0020000D": element("UI", study_uid),
                "0020000E": element("UI", series_uid),
                "00081190": element("UR", f"{settings.base_url}/studies/{study_uid}/series/{series_uid}"),
                "00201209": element("IS", instance_count),
            }
        )
        results.append(result)
    return _response(results, search, more)


async def _search_instances(
    request: Request, pool: asyncpg.Pool, settings: Settings, study: str | None, series: str | None
) -> Response:
    _accepts_dicom_json(request)
    search = parse_search(request, settings, "instance")
    needs_metadata = search.include_all or bool(
        search.include - _INSTANCE_DEFAULTS - _STUDY_DEFAULTS - _SERIES_DEFAULTS
    )
    extra = []
    if study is not None:
        extra.append(f"st.study_instance_uid = {search.bind(study)}")
    if series is not None:
        extra.append(f"se.series_instance_uid = {search.bind(series)}")
    sql = (
        "SELECT i.sop_instance_uid, i.sop_class_uid, i.instance_number, i.rows, i.columns, i.bits_allocated, "
        "i.number_of_frames, se.pk, se.series_instance_uid, se.attributes, st.pk, st.study_instance_uid, "
        f"st.attributes, {'i.metadata' if needs_metadata else 'NULL::text'} FROM instance i "
        "JOIN series se ON i.series_pk = se.pk JOIN study st ON se.study_pk = st.pk "
        f"JOIN patient p ON st.patient_pk = p.pk WHERE {search.where(*extra)} "
        "ORDER BY st.study_instance_uid, se.series_number NULLS LAST, se.pk, i.instance_number NULLS LAST, "
        f"i.sop_instance_uid {_page(search)}"
    )
    async with pool.acquire() as connection:
        rows, more = await _fetch_page(connection, sql, search)
        study_counts = await _study_counts(connection, list({row[10] for row in rows})) if study is None else {}
        series_counts = await _series_counts(connection, list({row[7] for row in rows})) if series is None else {}
    base = settings.base_url
    results = []
    for row in rows:
        (sop_uid, sop_class, number, n_rows, n_columns, bits, frames) = row[:7]
        series_pk, series_uid, series_attributes, study_pk, study_uid, study_attributes, metadata_text = row[7:]
        result: dict[str, Any] = {}
        if study is None:
            result.update(_study_result(study_attributes, study_uid, study_counts.get(study_pk), search, base))
        if series is None:
            result.update(_pick(series_attributes, _SERIES_DEFAULTS | search.include, search.include_all))
            result["00201209"] = element("IS", series_counts.get(series_pk, 0))
        else:
            result.update(_pick(series_attributes, search.include, False))
        result.update(_pick(study_attributes, search.include, False))
        if metadata_text is not None:
            metadata = json.loads(metadata_text.replace('"BulkDataURI":"', f'"BulkDataURI":"{base}'))
            result.update(_pick(metadata, search.include, search.include_all))
        result.update(
            {
                "00080016": element("UI", sop_class),
                "00080018": element("UI", sop_uid),
                "00080056": element("CS", "ONLINE"),
                "00081190": element("UR", f"{base}/studies/{study_uid}/series/{series_uid}/instances/{sop_uid}"),
                "0020000D": element("UI", study_uid),
                "0020000E": element("UI", series_uid),
                "00200013": element("IS", number),
                "00280008": element("IS", frames),
                "00280010": element("US", n_rows),
                "00280011": element("US", n_columns),
                "00280100": element("US", bits),
            }
        )
        results.append({key: value for key, value in result.items() if value != {"vr": "US"}})
    return _response(results, search, more)


def _path_uid(value: str, what: str) -> str:
    return require_uid(value, what)


@router.get("/studies", response_class=Response)
async def search_for_studies(request: Request, ctx: DicomwebDep) -> Response:
    """Search for studies (QIDO-RS, PS3.18 §10.6)."""
    return await _search_studies(request, await ctx.pool(), ctx.settings)


@router.get("/series", response_class=Response)
async def search_for_series(request: Request, ctx: DicomwebDep) -> Response:
    """Search for series in all studies (QIDO-RS, PS3.18 §10.6)."""
    return await _search_series(request, await ctx.pool(), ctx.settings, None)


@router.get("/studies/{study}/series", response_class=Response)
async def search_for_series_in_study(request: Request, study: str, ctx: DicomwebDep) -> Response:
    """Search for series of one study (QIDO-RS, PS3.18 §10.6)."""
    return await _search_series(request, await ctx.pool(), ctx.settings, _path_uid(study, "Study Instance UID"))


@router.get("/instances", response_class=Response)
async def search_for_instances(request: Request, ctx: DicomwebDep) -> Response:
    """Search for instances in all studies (QIDO-RS, PS3.18 §10.6)."""
    return await _search_instances(request, await ctx.pool(), ctx.settings, None, None)


@router.get("/studies/{study}/instances", response_class=Response)
async def search_for_instances_in_study(request: Request, study: str, ctx: DicomwebDep) -> Response:
    """Search for instances of one study (QIDO-RS, PS3.18 §10.6)."""
    return await _search_instances(
        request, await ctx.pool(), ctx.settings, _path_uid(study, "Study Instance UID"), None
    )


@router.get("/studies/{study}/series/{series}/instances", response_class=Response)
async def search_for_instances_in_series(request: Request, study: str, series: str, ctx: DicomwebDep) -> Response:
    """Search for instances of one series (QIDO-RS, PS3.18 §10.6)."""
    return await _search_instances(
        request,
        await ctx.pool(),
        ctx.settings,
        _path_uid(study, "Study Instance UID"),
        _path_uid(series, "Series Instance UID"),
    )
