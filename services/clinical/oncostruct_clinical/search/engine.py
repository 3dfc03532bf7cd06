"""Running a parsed search: the page (keyset), ``Bundle.total``, ``_include``/``_revinclude``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import text

from ..repository import Db
from .query import SearchRequest, SortKey, SqlBuilder, decode_cursor, encode_cursor


@dataclass
class Found:
    """One resource in a result page."""

    resource_type: str
    id: str
    content: dict[str, Any]
    mode: str = "match"


@dataclass
class SearchPage:
    """A page of matches plus what the Bundle needs around it."""

    matches: list[Found]
    included: list[Found] = field(default_factory=list)
    total: int | None = None
    next_cursor: str | None = None
    previous_cursor: str | None = None


def _keyset(
    columns: Sequence[tuple[str, str]], sort: Sequence[SortKey], values: Sequence[Any], after: bool, builder: SqlBuilder
) -> str:
    # (k1 > v1) OR (k1 = v1 AND k2 > v2) OR … with each key's own direction (seek method).
    ors: list[str] = []
    for position, ((expression, sql_type), key) in enumerate(zip(columns, sort, strict=True)):
        ascending = not key.descending
        operator = ">" if ascending == after else "<"
        equal = [
            f"{columns[i][0]} = CAST(CAST({builder.bind(values[i])} AS text) AS {columns[i][1]})"
            for i in range(position)
        ]
        strict = f"{expression} {operator} CAST(CAST({builder.bind(values[position])} AS text) AS {sql_type})"
        ors.append(" AND ".join([*equal, strict]))
    return " OR ".join(f"({o})" for o in ors)


async def find_ids(session: Db, resource_type: str, request: SearchRequest, base_url: str, limit: int) -> list[str]:
    """Ids of up to ``limit`` live matches (for conditional interactions)."""
    builder = SqlBuilder(base_url)
    where = builder.where(resource_type, "r", request.criteria)
    builder.params["rt"] = resource_type
    builder.params["lim"] = limit
    rows = await session.execute(
        text(f"SELECT r.id FROM resource r WHERE r.resource_type = :rt AND NOT r.deleted AND {where} LIMIT :lim"),  # noqa: S608 - values are bound parameters; table and column names are fixed
        builder.params,
    )
    return [str(row[0]) for row in rows]


async def run_search(
    session: Db,
    request: SearchRequest,
    base_url: str,
    *,
    may_read: Callable[[str], bool],
    include_iterations: int,
    max_included: int,
    want_total: bool,
) -> SearchPage:
    """Run ``request``: one page of matches after its cursor, the total, and the included resources."""
    builder = SqlBuilder(base_url)
    resource_type = request.resource_type
    where = builder.where(resource_type, "r", request.criteria)
    builder.params["rt"] = resource_type
    base_where = f"r.resource_type = :rt AND NOT r.deleted AND {where}"
    total: int | None = None
    if want_total:
        counted = await session.execute(text(f"SELECT count(*) FROM resource r WHERE {base_where}"), builder.params)  # noqa: S608 - values are bound parameters; table and column names are fixed
        total = int(counted.scalar_one())
    if request.summary == "count" or request.count == 0:
        return SearchPage(matches=[], total=total)
    sort = [*request.sort, SortKey("_id", False)]
    columns = [builder.sort_expression(resource_type, "r", key) for key in sort]
    direction = "next"
    seek = "TRUE"
    if request.cursor:
        direction, values = decode_cursor(request.cursor, len(sort))
        seek = _keyset(columns, sort, values, direction == "next", builder)
    backwards = direction == "prev"
    order = ", ".join(f"k{i} {'DESC' if key.descending != backwards else 'ASC'}" for i, key in enumerate(sort))
    selected = ", ".join(f"{expression} AS k{i}" for i, (expression, _) in enumerate(columns))
    builder.params["lim"] = request.count + 1
    rows = list(
        await session.execute(
            text(
                f"SELECT * FROM (SELECT r.id, r.content, {selected} FROM resource r WHERE {base_where}) page "  # noqa: S608 - values are bound parameters; table and column names are fixed
                f"WHERE {_seek_on_page(seek, columns)} "
                f"ORDER BY {order} LIMIT :lim"
            ),
            builder.params,
        )
    )
    more = len(rows) > request.count
    rows = rows[: request.count]
    if backwards:
        rows.reverse()
    keys = [[getattr(row, f"k{i}") for i in range(len(sort))] for row in rows]
    page = SearchPage(matches=[Found(resource_type, str(row.id), row.content) for row in rows], total=total)
    if rows:
        if more or backwards:
            page.next_cursor = encode_cursor("next", keys[-1])
        if (more and backwards) or (request.cursor and not backwards):
            page.previous_cursor = encode_cursor("prev", keys[0])
    if request.includes:
        page.included = await _includes(session, page.matches, request, may_read, include_iterations, max_included)
    return page


def _seek_on_page(seek: str, columns: Sequence[tuple[str, str]]) -> str:
    # The seek condition compares the computed keys; on the outer query they are named k0, k1, …
    for i, (expression, _) in enumerate(columns):
        seek = seek.replace(expression, f"k{i}")
    return seek


async def _includes(
    session: Db,
    matches: list[Found],
    request: SearchRequest,
    may_read: Callable[[str], bool],
    iterations: int,
    max_included: int,
) -> list[Found]:
    seen = {(f.resource_type, f.id) for f in matches}
    included: list[Found] = []
    frontier = list(matches)
    for round_number in range(iterations):
        added: list[Found] = []
        for include in request.includes:
            if round_number > 0 and not include.iterate:
                continue
            if include.reverse:
                targets = [(f.resource_type, f.id) for f in frontier]
                if not targets:
                    continue
                sql = (
                    "SELECT r.resource_type, r.id, r.content FROM sp_reference ref JOIN resource r "
                    "ON r.resource_type = ref.resource_type AND r.id = ref.resource_id "
                    "WHERE ref.resource_type = :src AND ref.param = :param AND NOT r.deleted "
                    "AND (ref.target_type, ref.target_id) IN (SELECT * FROM unnest(CAST(:types AS text[]), "
                    "CAST(:ids AS text[])))"
                )
                params: dict[str, Any] = {
                    "src": include.source,
                    "param": include.param,
                    "types": [t for t, _ in targets],
                    "ids": [i for _, i in targets],
                }
            else:
                sources = [f.id for f in frontier if f.resource_type == include.source]
                if not sources:
                    continue
                sql = (
                    "SELECT r.resource_type, r.id, r.content FROM sp_reference ref JOIN resource r "
                    "ON r.resource_type = ref.target_type AND r.id = ref.target_id "
                    "WHERE ref.resource_type = :src AND ref.param = :param AND ref.resource_id = ANY(:ids) "
                    "AND NOT r.deleted"
                )
                params = {"src": include.source, "param": include.param, "ids": sources}
                if include.target:
                    sql += " AND ref.target_type = :target"
                    params["target"] = include.target
            for row in await session.execute(text(sql), params):
                key = (str(row.resource_type), str(row.id))
                if key in seen or not may_read(key[0]):
                    continue  # SMART: included resources need their own read scope
                seen.add(key)
                found = Found(key[0], key[1], row.content, "include")
                added.append(found)
                if len(included) + len(added) >= max_included:
                    return included + added
        included += added
        frontier = added
        if not added:
            break
    return included
