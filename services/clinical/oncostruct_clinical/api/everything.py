"""``Patient/[id]/$everything`` (http://hl7.org/fhir/R4/patient-operation-everything.html).

Returns the patient, every resource that references the patient through a
reference search parameter (the patient's compartment as indexed), and the
resources those reference (practitioners, organizations, specimens …), in a
``searchset`` Bundle. Resource types the caller may not read are left out.
A record larger than a page (``_count``, at most ``EVERYTHING_MAX_RESOURCES``)
is paged in (resource type, id) order with ``next`` links, keyset-style: rows
written meanwhile never shift a page.
"""

from __future__ import annotations

from typing import Annotated, Any
from urllib.parse import urlencode

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import Response
from sqlalchemy import text

from oncostruct_shared.errors import Invalid

from .. import interactions
from ..compartment import members
from ..deps import ContextDep
from ..search.indexing import date_range
from ..search.query import decode_cursor, encode_cursor
from .fhir_http import fhir_response, negotiate
from .security import smart_grant

router = APIRouter(tags=["FHIR operations"])


@router.get("/Patient/{patient_id}/$everything", response_class=Response)
async def patient_everything(
    patient_id: Annotated[str, Path(description="The patient's logical id.")],
    request: Request,
    ctx: ContextDep,
    since: Annotated[str | None, Query(alias="_since", description="Only resources updated since.")] = None,
    types: Annotated[str | None, Query(alias="_type", description="Only these resource types.")] = None,
    count: Annotated[int | None, Query(alias="_count", ge=1, description="Page size.")] = None,
    cursor: Annotated[str | None, Query(alias="_cursor", description="Page cursor from a `next` link.")] = None,
) -> Response:
    """The patient's whole record (FHIR operation Patient $everything)."""
    negotiate(request)
    patient = await interactions.read(ctx, "Patient", patient_id)
    assert patient.version is not None
    assert patient.version.content is not None
    since_at = None
    if since is not None:
        bounds = date_range(since)
        if bounds is None:
            raise Invalid(f"_since must be a FHIR instant, not {since!r}.", expression=["_since"])
        since_at = bounds[0]
    wanted = sorted(set(types.split(","))) if types else None
    limit = min(count or ctx.settings.everything_max_resources, ctx.settings.everything_max_resources)
    after: list[Any] = ["", ""]
    if cursor is not None:
        _, after = decode_cursor(cursor, 2)
        if not all(isinstance(value, str) for value in after):
            raise Invalid("The page cursor is not valid for $everything.", expression=["_cursor"])
    rows = await ctx.session.execute(
        text(
            "WITH compartment AS ("
            "  SELECT DISTINCT r.resource_type, r.id FROM sp_reference ref JOIN resource r"
            "  ON r.resource_type = ref.resource_type AND r.id = ref.resource_id"
            "  WHERE ref.target_type = 'Patient' AND ref.target_id = :pid AND NOT r.deleted),"
            " referenced AS ("
            "  SELECT DISTINCT ref.target_type AS resource_type, ref.target_id AS id FROM sp_reference ref"
            "  JOIN compartment c ON c.resource_type = ref.resource_type AND c.id = ref.resource_id"
            "  WHERE ref.target_type IS NOT NULL AND ref.target_type <> 'Patient')"
            " SELECT r.resource_type, r.id, r.content, r.last_updated FROM resource r"
            " JOIN (SELECT * FROM compartment UNION SELECT * FROM referenced) k"
            " ON k.resource_type = r.resource_type AND k.id = r.id"
            " WHERE NOT r.deleted AND NOT (r.resource_type = 'Patient' AND r.id = :pid)"
            " AND (CAST(:types AS text[]) IS NULL OR r.resource_type = ANY(CAST(:types AS text[])))"
            " AND (CAST(:since AS timestamptz) IS NULL OR r.last_updated >= CAST(:since AS timestamptz))"
            ' AND (r.resource_type COLLATE "C", r.id COLLATE "C") > (CAST(:at AS text), CAST(:ai AS text))'
            ' ORDER BY r.resource_type COLLATE "C", r.id COLLATE "C" LIMIT :lim'
        ),
        {"pid": patient_id, "lim": limit + 1, "types": wanted, "since": since_at, "at": after[0], "ai": after[1]},
    )
    base = ctx.settings.base_url
    entries: list[dict[str, Any]] = []
    if cursor is None and (wanted is None or "Patient" in wanted):
        entries.append(
            {
                "fullUrl": f"{base}/Patient/{patient_id}",
                "resource": patient.version.content,
                "search": {"mode": "match"},
            }
        )
    found = list(rows)
    more = len(found) > limit
    found = found[:limit]
    last = (found[-1].resource_type, found[-1].id) if found else None
    if ctx.patient is not None:  # patient/ scopes: nothing of other patients, even when referenced
        allowed = await members(ctx.session, [(row.resource_type, row.id) for row in found], ctx.patient)
        full = {t for t in {row.resource_type for row in found} if smart_grant(ctx.scopes, t, "r") == "all"}
        found = [row for row in found if row.resource_type in full or (row.resource_type, row.id) in allowed]
    entries += [
        {"fullUrl": f"{base}/{row.resource_type}/{row.id}", "resource": row.content, "search": {"mode": "match"}}
        for row in found
        if ctx.may_read(row.resource_type)
    ]
    query = [(k, v) for k, v in (("_since", since), ("_type", types)) if v is not None] + [("_count", str(limit))]
    own = f"{base}/Patient/{patient_id}/$everything"
    links = [{"relation": "self", "url": f"{own}?{urlencode(query + ([('_cursor', cursor)] if cursor else []))}"}]
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset"}
    if more and last is not None:
        links.append(
            {"relation": "next", "url": f"{own}?{urlencode([*query, ('_cursor', encode_cursor('next', last))])}"}
        )
    elif cursor is None:
        bundle["total"] = len(entries)  # the whole record fits this page
    bundle["link"] = links
    bundle["entry"] = entries
    return fhir_response(bundle)
