"""Search parameters → SQL over the index tables (http://hl7.org/fhir/R4/search.html).

A parsed search is a list of :class:`Criterion` (AND between them, OR between
the comma-separated values of one) and the result parameters. Each criterion
becomes an ``EXISTS`` over the index table of its parameter's type, correlated
with the resource row; chains (§3.1.1.5.7) and ``_has`` (§3.1.1.5.8) nest the
same builder on the referenced / referencing resource.

Paging is keyset (seek) paging on the sort keys plus the id: a page's
``next``/``previous`` links carry the last/first row's key values, so rows
written meanwhile never shift a page by an offset.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from oncostruct_shared.errors import Invalid

from .indexing import date_range, normalize, parse_reference
from .parameters import parameters_for

#: Result parameters (R4 §3.1.1.5.x) and this server's page cursor.
RESULT_PARAMETERS = frozenset(
    {"_count", "_sort", "_include", "_revinclude", "_summary", "_elements", "_total", "_format", "_pretty", "_cursor"}
)
#: R4 §3.1.1.4 prefixes (search.html#prefix).
PREFIXES = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap")
_MODIFIERS: dict[str, frozenset[str]] = {
    "token": frozenset({"", "not", "text", "of-type", "missing"}),
    "string": frozenset({"", "exact", "contains", "missing"}),
    "date": frozenset({"", "missing"}),
    "reference": frozenset({"", "missing"}),  # plus :<Type>
    "number": frozenset({"", "missing"}),
    "quantity": frozenset({"", "missing"}),
    "uri": frozenset({"", "below", "above", "missing"}),
    "composite": frozenset({"", "missing"}),
}
_TABLE = {
    "token": "sp_token",
    "string": "sp_string",
    "date": "sp_date",
    "reference": "sp_reference",
    "number": "sp_number",
    "quantity": "sp_quantity",
    "uri": "sp_uri",
    "composite": "sp_composite",
}
_TYPE_NAME = re.compile(r"^[A-Z][A-Za-z]+$")

Handling = Literal["strict", "lenient"]


@dataclass
class Criterion:
    """One search parameter use: ``name[:modifier][.chain]=v1,v2``."""

    raw_name: str
    raw_value: str
    name: str
    modifier: str
    values: list[str]
    chain: str | None = None  # the rest after the first '.', parsed on the target type
    has: tuple[str, str, str, str] | None = None  # _has: (type, param, inner name, value)


@dataclass
class SortKey:
    """One ``_sort`` key: parameter and direction."""

    name: str
    descending: bool


@dataclass
class Include:
    """One ``_include``/``_revinclude``: ``Source:param[:Target]``, maybe ``:iterate``."""

    source: str
    param: str
    target: str | None
    iterate: bool
    raw: str
    reverse: bool


@dataclass
class SearchRequest:
    """A parsed search: criteria, result parameters and what to echo in the ``self`` link."""

    resource_type: str
    criteria: list[Criterion] = field(default_factory=list)
    sort: list[SortKey] = field(default_factory=list)
    count: int = 20
    includes: list[Include] = field(default_factory=list)
    summary: str | None = None
    elements: list[str] | None = None
    total: str | None = None
    cursor: str | None = None
    applied: list[tuple[str, str]] = field(default_factory=list)


def split_values(value: str) -> list[str]:
    """Split a parameter value on unescaped commas (R4 §3.1.1.5.9 escaping)."""
    parts: list[str] = []
    current = ""
    escaped = False
    for char in value:
        if escaped:
            current += char
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == ",":
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return parts


def _split_unescaped(value: str, separator: str) -> list[str]:
    parts = re.split(rf"(?<!\\){re.escape(separator)}", value)
    return [part.replace(f"\\{separator}", separator) for part in parts]


def parse_search(
    resource_type: str,
    params: Sequence[tuple[str, str]],
    *,
    handling: Handling,
    default_count: int,
    max_count: int,
) -> SearchRequest:
    """Parse query parameters into a :class:`SearchRequest`; 400 for invalid values.

    Unknown parameters are ignored under ``handling=lenient`` (and left out of
    the ``self`` link, §3.1.1.3) and rejected under ``strict``.
    """
    request = SearchRequest(resource_type=resource_type, count=default_count)
    known = parameters_for(resource_type)
    for key, value in params:
        if "\x00" in key or "\x00" in value:  # no FHIR string may hold one; PostgreSQL text cannot
            raise Invalid(f"The search parameter {key!r} contains a NUL control character.", expression=[key])
        if key.split(":")[0] in ("_include", "_revinclude"):
            if key.split(":", 1)[1:] not in ([], ["iterate"]):
                raise Invalid(f"Unknown modifier on {key!r}.", expression=[key])
            parse_include(request, key, value)
            continue
        if key in RESULT_PARAMETERS:
            _result_parameter(request, key, value, max_count)
            continue
        if key.startswith("_has:"):
            segments = key.split(":", 3)
            if len(segments) < 4 or not _TYPE_NAME.match(segments[1]):
                raise Invalid(f"Malformed _has parameter {key!r} (use _has:Type:param:search).", expression=[key])
            criterion = Criterion(key, value, "_has", "", [value], has=(segments[1], segments[2], segments[3], value))
            _check_has(criterion)
            request.criteria.append(criterion)
            request.applied.append((key, value))
            continue
        head, _, chain = key.partition(".")
        name, _, modifier = head.partition(":")
        parameter = known.get(name)
        if parameter is None and name not in ("_id", "_lastUpdated"):
            if handling == "strict":
                raise Invalid(f"Unknown search parameter {name!r} for {resource_type}.", expression=[key])
            continue
        criterion = Criterion(key, value, name, modifier, split_values(value), chain or None)
        check_criterion(resource_type, criterion)
        request.criteria.append(criterion)
        request.applied.append((key, value))
    return request


def _check_has(criterion: Criterion) -> None:
    assert criterion.has is not None
    source, param, inner, value = criterion.has
    definition = parameters_for(source).get(param)
    if definition is None or definition.type != "reference":
        raise Invalid(f"{source} has no reference search parameter {param!r}.", expression=[criterion.raw_name])
    if inner.startswith("_has:"):
        segments = inner.split(":", 3)
        if len(segments) < 4:
            raise Invalid(f"Malformed _has parameter {criterion.raw_name!r}.", expression=[criterion.raw_name])
        _check_has(Criterion(inner, value, "_has", "", [value], has=(segments[1], segments[2], segments[3], value)))
        return
    head, _, chain = inner.partition(".")
    name, _, modifier = head.partition(":")
    if name not in parameters_for(source) and name not in ("_id", "_lastUpdated"):
        raise Invalid(f"Unknown search parameter {name!r} for {source} in _has.", expression=[criterion.raw_name])
    check_criterion(source, Criterion(inner, value, name, modifier, split_values(value), chain or None))


def _param_type(resource_type: str, name: str) -> str:
    if name == "_id":
        return "token"
    if name == "_lastUpdated":
        return "date"
    return parameters_for(resource_type)[name].type


def check_criterion(resource_type: str, criterion: Criterion) -> None:
    """Validate modifiers and values of one criterion (400 with the parameter as expression)."""
    kind = _param_type(resource_type, criterion.name)
    where = [criterion.raw_name]
    if criterion.chain is not None:
        if kind != "reference":
            raise Invalid(f"{criterion.name!r} is not a reference parameter; it cannot be chained.", expression=where)
        targets = _chain_targets(resource_type, criterion)
        head, _, rest = criterion.chain.partition(".")
        name, _, modifier = head.partition(":")
        usable = [t for t in targets if name in parameters_for(t) or name in ("_id", "_lastUpdated")]
        if not usable:
            raise Invalid(f"No target of {criterion.name!r} has a search parameter {name!r}.", expression=where)
        for target in usable:
            inner = Criterion(criterion.chain, criterion.raw_value, name, modifier, criterion.values, rest or None)
            check_criterion(target, inner)
        return
    modifier = criterion.modifier
    if kind == "reference" and modifier and _TYPE_NAME.match(modifier):
        pass
    elif modifier not in _MODIFIERS.get(kind, frozenset({""})):
        raise Invalid(
            f"Modifier :{modifier} is not supported on {kind} parameter {criterion.name!r}.", expression=where
        )
    if modifier == "missing":
        if criterion.values not in (["true"], ["false"]):
            raise Invalid(":missing takes true or false.", expression=where)
        return
    for value in criterion.values:
        if value == "":
            raise Invalid(f"Empty value for search parameter {criterion.name!r}.", expression=where)
        if kind == "composite":
            _check_composite(resource_type, criterion.name, value, where)
        elif kind == "date":
            _date_value(value, where)
        elif kind in ("number", "quantity"):
            _number_value(value.split("|", 1)[0], where)
        elif kind == "token" and modifier == "of-type" and len(value.split("|")) != 3:
            raise Invalid(":of-type takes system|code|value.", expression=where)


def _check_composite(resource_type: str, name: str, value: str, where: list[str]) -> None:
    """A composite value is ``first$second`` (R4 §3.1.1.4.10), each part valid for its component's type."""
    parts = value.split("$")
    if len(parts) != 2 or "" in parts:
        raise Invalid(
            f"{name!r} takes two values joined by '$' (e.g. system|code$value), not {value!r}.", expression=where
        )
    second = parameters_for(resource_type)[name].components[1]
    if second.type == "date":
        _date_value(parts[1], where)
    elif second.type == "quantity":
        _number_value(parts[1].split("|", 1)[0], where)


def _chain_targets(resource_type: str, criterion: Criterion) -> list[str]:
    if criterion.modifier and _TYPE_NAME.match(criterion.modifier):
        return [criterion.modifier]
    definition = parameters_for(resource_type).get(criterion.name)
    return list(definition.target) if definition else []


def _prefix(value: str) -> tuple[str, str]:
    if len(value) > 2 and value[:2] in PREFIXES and not value[:2].isdigit():
        return value[:2], value[2:]
    return "eq", value


def _date_value(value: str, where: list[str]) -> tuple[str, datetime, datetime]:
    prefix, text = _prefix(value)
    bounds = date_range(text)
    if bounds is None:
        raise Invalid(f"{value!r} is not a FHIR date, dateTime or instant.", expression=where)
    return prefix, bounds[0], bounds[1]


def _number_value(value: str, where: list[str]) -> tuple[str, Decimal, Decimal, Decimal]:
    prefix, text = _prefix(value)
    try:
        number = Decimal(text)
    except InvalidOperation:
        raise Invalid(f"{value!r} is not a number.", expression=where) from None
    if not number.is_finite():
        raise Invalid(f"{value!r} is not a number.", expression=where)
    # R4 §3.1.1.4.1: eq means within the value's implied precision.
    exponent = number.as_tuple().exponent
    half = Decimal(5).scaleb((exponent if isinstance(exponent, int) else 0) - 1)
    return prefix, number, number - half, number + half


def _result_parameter(request: SearchRequest, key: str, value: str, max_count: int) -> None:
    if key == "_count":
        if not value.isdigit():
            raise Invalid("_count must be a non-negative integer.", expression=["_count"])
        request.count = min(int(value), max_count)
        request.applied.append((key, str(request.count)))
    elif key == "_sort":
        for part in value.split(","):
            name = part.removeprefix("-")
            known = parameters_for(request.resource_type).get(name)
            if name not in ("_id", "_lastUpdated") and (known is None or known.type == "composite"):
                raise Invalid(f"Cannot sort {request.resource_type} by {name!r}.", expression=["_sort"])
            request.sort.append(SortKey(name, part.startswith("-")))
        request.applied.append((key, value))
    elif key == "_summary":
        if value not in ("true", "false", "count", "text", "data"):
            raise Invalid("_summary takes true, false, count, text or data.", expression=["_summary"])
        request.summary = value
        request.applied.append((key, value))
    elif key == "_elements":
        request.elements = [e.strip() for e in value.split(",") if e.strip()]
        request.applied.append((key, value))
    elif key == "_total":
        if value not in ("none", "estimate", "accurate"):
            raise Invalid("_total takes none, estimate or accurate.", expression=["_total"])
        request.total = value
        request.applied.append((key, value))
    elif key == "_cursor":
        request.cursor = value


def parse_include(request: SearchRequest, key: str, value: str) -> None:
    """Add one ``_include``/``_revinclude`` (R4 §3.1.1.5.4) to ``request``; 400 if unknown."""
    reverse = key.startswith("_revinclude")
    iterate = key.endswith(":iterate")
    parts = value.split(":")
    if len(parts) not in (2, 3) or not _TYPE_NAME.match(parts[0]):
        raise Invalid(f"Malformed {key} value {value!r} (use Type:param[:Target]).", expression=[key])
    definition = parameters_for(parts[0]).get(parts[1])
    if definition is None or definition.type != "reference":
        raise Invalid(f"{parts[0]} has no reference search parameter {parts[1]!r}.", expression=[key])
    target = parts[2] if len(parts) == 3 else None
    request.includes.append(Include(parts[0], parts[1], target, iterate, value, reverse))
    request.applied.append((key, value))


# --- SQL --------------------------------------------------------------------------------------------------------


class SqlBuilder:
    """Collects bind parameters while clauses are built."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.params: dict[str, Any] = {}
        self._counter = 0

    def bind(self, value: Any) -> str:
        """A new bind parameter holding ``value``; returns its ``:name``."""
        self._counter += 1
        name = f"p{self._counter}"
        self.params[name] = value
        return f":{name}"

    def alias(self, stem: str) -> str:
        """A fresh table alias."""
        self._counter += 1
        return f"{stem}{self._counter}"

    def where(self, resource_type: str, row: str, criteria: Sequence[Criterion]) -> str:
        """The AND of every criterion on the resource row alias ``row``."""
        clauses = [self.criterion(resource_type, row, c) for c in criteria]
        return " AND ".join(f"({c})" for c in clauses) or "TRUE"

    def criterion(self, resource_type: str, row: str, criterion: Criterion) -> str:
        """SQL for one criterion on ``row`` (a ``resource`` alias)."""
        if criterion.has is not None:
            return self._has(row, criterion.has)
        if criterion.chain is not None:
            return self._chain(resource_type, row, criterion)
        kind = _param_type(resource_type, criterion.name)
        if criterion.modifier == "missing":
            exists = self._exists(kind, row, criterion.name, "TRUE")
            return f"NOT {exists}" if criterion.values == ["true"] else exists
        if criterion.name == "_id":
            ids = self.bind(criterion.values)
            return f"{row}.id <> ALL({ids})" if criterion.modifier == "not" else f"{row}.id = ANY({ids})"
        if criterion.name == "_lastUpdated":
            ors = [self._date_match(f"{row}.last_updated", f"{row}.last_updated", v) for v in criterion.values]
            return " OR ".join(f"({o})" for o in ors)
        if kind == "token" and criterion.modifier == "not":
            inner = Criterion(criterion.raw_name, criterion.raw_value, criterion.name, "", criterion.values)
            return f"NOT ({self.criterion(resource_type, row, inner)})"
        if kind == "composite":
            return self._composite(resource_type, row, criterion)
        if kind == "date" and any(_prefix(v)[0] == "ne" for v in criterion.values):
            return " OR ".join(f"({self._single_date(row, criterion.name, v)})" for v in criterion.values)
        alias = self.alias("i")
        matches = [self._match(kind, alias, criterion.modifier, value) for value in criterion.values]
        return self._exists(kind, row, criterion.name, " OR ".join(f"({m})" for m in matches), alias)

    def _composite(self, resource_type: str, row: str, criterion: Criterion) -> str:
        """Both components matched on the same element: part 0 and part 1 rows of one ``node``."""
        first, second = parameters_for(resource_type)[criterion.name].components
        a, b = self.alias("c"), self.alias("c")
        matches = []
        for value in criterion.values:
            left, right = value.split("$")
            matches.append(f"({self._match(first.type, a, '', left)}) AND ({self._match(second.type, b, '', right)})")
        return (
            f"EXISTS (SELECT 1 FROM sp_composite {a} JOIN sp_composite {b} ON {b}.resource_type = {a}.resource_type "  # noqa: S608 - aliases are generated; values are bound
            f"AND {b}.resource_id = {a}.resource_id AND {b}.param = {a}.param AND {b}.node = {a}.node "
            f"AND {b}.part = 1 WHERE {a}.resource_type = {row}.resource_type AND {a}.resource_id = {row}.id "
            f"AND {a}.param = {self.bind(criterion.name)} AND {a}.part = 0 AND ({' OR '.join(matches)}))"
        )

    def _single_date(self, row: str, name: str, value: str) -> str:
        alias = self.alias("i")
        prefix, text = _prefix(value)
        if prefix == "ne":
            equal = self._date_match(f"{alias}.low", f"{alias}.high", "eq" + text)
            return f"NOT {self._exists('date', row, name, equal, alias)}"
        return self._exists("date", row, name, self._date_match(f"{alias}.low", f"{alias}.high", value), alias)

    def _exists(self, kind: str, row: str, name: str, condition: str, alias: str | None = None) -> str:
        alias = alias or self.alias("i")
        return (
            f"EXISTS (SELECT 1 FROM {_TABLE[kind]} {alias} WHERE {alias}.resource_type = {row}.resource_type "  # noqa: S608 - values are bound parameters; table and column names are fixed
            f"AND {alias}.resource_id = {row}.id AND {alias}.param = {self.bind(name)} AND ({condition}))"
        )

    def _match(self, kind: str, alias: str, modifier: str, value: str) -> str:
        if kind == "token":
            return self._token(alias, modifier, value)
        if kind == "string":
            return self._string(alias, modifier, value)
        if kind == "date":
            return self._date_match(f"{alias}.low", f"{alias}.high", value)
        if kind == "reference":
            return self._reference(alias, modifier, value)
        if kind == "number":
            return self._number(f"{alias}.value", value)
        if kind == "quantity":
            return self._quantity(alias, value)
        if kind == "uri":
            if modifier == "below":
                return f"{alias}.value LIKE {self.bind(_like_escape(value) + '%')}"
            if modifier == "above":
                return f"{self.bind(value)} LIKE replace(replace({alias}.value, '%', '\\%'), '_', '\\_') || '%'"
            return f"{alias}.value = {self.bind(value)}"
        raise Invalid(f"Search on {kind} parameters is not supported.")

    def _token(self, alias: str, modifier: str, value: str) -> str:
        if modifier == "text":
            return f"{alias}.text_norm LIKE {self.bind('%' + _like_escape(normalize(value)) + '%')}"
        if modifier == "of-type":
            system, code, identifier = _split_unescaped(value, "|")
            return (
                f"{alias}.type_system = {self.bind(system)} AND {alias}.type_code = {self.bind(code)} "
                f"AND {alias}.code = {self.bind(identifier)}"
            )
        if "|" in value.replace("\\|", ""):
            system, code = _split_unescaped(value, "|")[:2]
            if system == "":
                return f"{alias}.system IS NULL AND {alias}.code = {self.bind(code)}"
            if code == "":
                return f"{alias}.system = {self.bind(system)}"
            return f"{alias}.system = {self.bind(system)} AND {alias}.code = {self.bind(code)}"
        return f"{alias}.code = {self.bind(value.replace(chr(92) + '|', '|'))}"

    def _string(self, alias: str, modifier: str, value: str) -> str:
        if modifier == "exact":
            return f"{alias}.value = {self.bind(value)}"
        pattern = _like_escape(normalize(value))
        if modifier == "contains":
            return f"{alias}.value_norm LIKE {self.bind('%' + pattern + '%')}"
        return f"{alias}.value_norm LIKE {self.bind(pattern + '%')}"

    def _date_match(self, low: str, high: str, value: str) -> str:
        prefix, plow, phigh = _date_value(value, [])
        lo, hi = self.bind(plow), self.bind(phigh)
        # R4 §3.1.1.4.2 (search.html#prefix), on ranges: the resource's [low, high] vs the value's [lo, hi].
        contained = f"{low} >= {lo} AND {high} <= {hi}"
        if prefix == "eq":
            return contained
        if prefix == "ne":
            return f"NOT ({contained})"
        if prefix == "gt":
            return f"{high} > {hi}"
        if prefix == "lt":
            return f"{low} < {lo}"
        if prefix == "ge":
            return f"{high} >= {lo}"
        if prefix == "le":
            return f"{low} <= {hi}"
        if prefix == "sa":
            return f"{low} > {hi}"
        if prefix == "eb":
            return f"{high} < {lo}"
        # ap: overlap with the value widened by 10 % of its distance from now (at least a day).
        now = datetime.now(UTC)
        slack = max(abs(now - plow) / 10, timedelta(days=1))
        return f"{low} <= {self.bind(phigh + slack)} AND {high} >= {self.bind(plow - slack)}"

    def _number(self, column: str, value: str) -> str:
        prefix, number, low, high = _number_value(value, [])
        operators = {"gt": ">", "lt": "<", "ge": ">=", "le": "<=", "sa": ">", "eb": "<"}
        if prefix in operators:
            return f"{column} {operators[prefix]} {self.bind(number)}"
        if prefix == "ne":
            return f"NOT ({column} >= {self.bind(low)} AND {column} < {self.bind(high)})"
        if prefix == "ap":
            slack = abs(number) / 10
            return f"{column} BETWEEN {self.bind(number - slack)} AND {self.bind(number + slack)}"
        return f"{column} >= {self.bind(low)} AND {column} < {self.bind(high)}"

    def _quantity(self, alias: str, value: str) -> str:
        number, _, rest = value.partition("|")
        clause = self._number(f"{alias}.value", number)
        if rest:
            system, _, code = rest.partition("|")
            if system:
                clause += f" AND {alias}.system = {self.bind(system)}"
            if code:
                clause += f" AND ({alias}.code = {self.bind(code)} OR {alias}.unit = {self.bind(code)})"
        return clause

    def _reference(self, alias: str, modifier: str, value: str) -> str:
        target_type, target_id, url = parse_reference(value, self.base_url)
        if modifier and _TYPE_NAME.match(modifier):
            if "/" in value:
                if target_type != modifier:
                    return "FALSE"
            else:
                target_type, target_id, url = modifier, value, None
        if target_id is not None and url is None:
            return f"{alias}.target_type = {self.bind(target_type)} AND {alias}.target_id = {self.bind(target_id)}"
        if target_id is None and "/" not in value and ":" not in value:
            return f"{alias}.target_id = {self.bind(value)}"
        return f"{alias}.url = {self.bind(value)}"

    def _chain(self, resource_type: str, row: str, criterion: Criterion) -> str:
        assert criterion.chain is not None
        head, _, rest = criterion.chain.partition(".")
        name, _, modifier = head.partition(":")
        branches: list[str] = []
        for target in _chain_targets(resource_type, criterion):
            if name not in parameters_for(target) and name not in ("_id", "_lastUpdated"):
                continue
            ref, other = self.alias("ref"), self.alias("r")
            inner = Criterion(criterion.chain, criterion.raw_value, name, modifier, criterion.values, rest or None)
            condition = self.criterion(target, other, inner)
            branches.append(
                f"EXISTS (SELECT 1 FROM sp_reference {ref} JOIN resource {other} "  # noqa: S608 - values are bound parameters; table and column names are fixed
                f"ON {other}.resource_type = {ref}.target_type AND {other}.id = {ref}.target_id "
                f"WHERE {ref}.resource_type = {row}.resource_type AND {ref}.resource_id = {row}.id "
                f"AND {ref}.param = {self.bind(criterion.name)} AND {ref}.target_type = {self.bind(target)} "
                f"AND NOT {other}.deleted AND ({condition}))"
            )
        return " OR ".join(branches) or "FALSE"

    def _has(self, row: str, has: tuple[str, str, str, str]) -> str:
        source, param, inner_key, value = has
        ref, other = self.alias("ref"), self.alias("r")
        if inner_key.startswith("_has:"):
            segments = inner_key.split(":", 3)
            condition = self._has(other, (segments[1], segments[2], segments[3], value))
        else:
            head, _, chain = inner_key.partition(".")
            name, _, modifier = head.partition(":")
            inner = Criterion(inner_key, value, name, modifier, split_values(value), chain or None)
            condition = self.criterion(source, other, inner)
        return (
            f"EXISTS (SELECT 1 FROM sp_reference {ref} JOIN resource {other} "  # noqa: S608 - values are bound parameters; table and column names are fixed
            f"ON {other}.resource_type = {ref}.resource_type AND {other}.id = {ref}.resource_id "
            f"WHERE {ref}.resource_type = {self.bind(source)} AND {ref}.param = {self.bind(param)} "
            f"AND {ref}.target_type = {row}.resource_type AND {ref}.target_id = {row}.id "
            f"AND NOT {other}.deleted AND ({condition}))"
        )

    # --- sorting -----------------------------------------------------------------------------------------------

    def sort_expression(self, resource_type: str, row: str, key: SortKey) -> tuple[str, str]:
        """SQL for one sort key (missing values sort last) and its SQL type for the cursor."""
        if key.name == "_id":
            return f'{row}.id COLLATE "C"', "text"
        if key.name == "_lastUpdated":
            return f"{row}.last_updated", "timestamptz"
        kind = parameters_for(resource_type)[key.name].type
        alias = self.alias("s")
        aggregate = "max" if key.descending else "min"
        column, sql_type, missing = {
            "date": ("high" if key.descending else "low", "timestamptz", "-infinity" if key.descending else "infinity"),
            "string": ("value_norm", "text", "" if key.descending else "\U0010ffff"),
            "token": ("code", "text", "" if key.descending else "\U0010ffff"),
            "reference": ("target_id", "text", "" if key.descending else "\U0010ffff"),
            "number": ("value", "numeric", "-Infinity" if key.descending else "Infinity"),
            "quantity": ("value", "numeric", "-Infinity" if key.descending else "Infinity"),
            "uri": ("value", "text", "" if key.descending else "\U0010ffff"),
        }[kind]
        collate = ' COLLATE "C"' if sql_type == "text" else ""
        expression = (
            f"COALESCE((SELECT {aggregate}({alias}.{column}{collate}) FROM {_TABLE[kind]} {alias} "  # noqa: S608 - values are bound parameters; table and column names are fixed
            f"WHERE {alias}.resource_type = {row}.resource_type AND {alias}.resource_id = {row}.id "
            f"AND {alias}.param = {self.bind(key.name)}), "
            f"CAST(CAST({self.bind(missing)} AS text) AS {sql_type})){collate}"
        )
        return expression, sql_type


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


# --- cursors ------------------------------------------------------------------------------------------------------


def encode_cursor(direction: str, values: Sequence[Any]) -> str:
    """An opaque page cursor holding a row's sort-key values."""
    plain = [v.isoformat() if isinstance(v, datetime) else str(v) if isinstance(v, Decimal) else v for v in values]
    raw = json.dumps({"d": direction, "k": plain}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str, size: int) -> tuple[str, list[Any]]:
    """The direction and key values of a cursor from :func:`encode_cursor`; 400 if it is not one."""
    try:
        raw = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        direction, values = raw["d"], raw["k"]
        if direction not in ("next", "prev") or not isinstance(values, list) or len(values) != size:
            raise ValueError(cursor)
    except (ValueError, KeyError, TypeError):
        raise Invalid("The page cursor is not valid for this search.", expression=["_cursor"]) from None
    return direction, values
