"""Write-time search indexing: each SearchParameter's FHIRPath result turned into index rows.

How values of each FHIR data type become index entries follows R4 §3.1.1.4
(search.html#ptypes): token from Coding/CodeableConcept/Identifier/
ContactPoint/code/boolean, string from string/HumanName/Address, date from
date/dateTime/instant/Period/Timing as a [low, high] range at the value's
precision, reference as type + id (or absolute URL), quantity/number/uri.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from .fhirpath import Node, Unsupported
from .parameters import Component, parameters_for

#: Lower and upper bounds of an open date range.
MIN_INSTANT = datetime(1, 1, 1, tzinfo=UTC)
MAX_INSTANT = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)

_DATE = re.compile(
    r"^(?P<y>\d{4})(-(?P<m>\d{2})(-(?P<d>\d{2})(T(?P<H>\d{2}):(?P<M>\d{2})(:(?P<S>\d{2})(?P<f>\.\d+)?)?"
    r"(?P<tz>Z|[+-]\d{2}:\d{2})?)?)?)?$"
)
_REFERENCE = re.compile(r"^(?:(?P<base>.*)/)?(?P<type>[A-Z][A-Za-z]+)/(?P<id>[A-Za-z0-9\-.]{1,64})(?:/_history/.*)?$")


def normalize(text: str) -> str:
    """Case- and accent-insensitive form of a string (R4 §3.1.1.4.7 string matching)."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def date_range(text: str) -> tuple[datetime, datetime] | None:
    """The [low, high] instants a date/dateTime/instant string covers at its precision (R4 §3.1.1.4.3)."""
    match = _DATE.match(text.strip())
    if match is None:
        return None
    year = int(match["y"])
    month = int(match["m"] or 1)
    day = int(match["d"] or 1)
    tz = UTC
    if match["tz"] and match["tz"] != "Z":
        sign = 1 if match["tz"][0] == "+" else -1
        hours, minutes = int(match["tz"][1:3]), int(match["tz"][4:6])
        tz = __import__("datetime").timezone(sign * timedelta(hours=hours, minutes=minutes))
    try:
        hour, minute = int(match["H"] or 0), int(match["M"] or 0)
        second = int(match["S"] or 0)
        micro = round(float(match["f"]) * 1_000_000) if match["f"] else 0
        low = datetime(year, month, day, hour, minute, second, min(micro, 999999), tzinfo=tz)
    except ValueError:
        return None
    if match["f"]:
        high = low
    elif match["S"]:
        high = low + timedelta(seconds=1) - timedelta(microseconds=1)
    elif match["M"]:
        high = low + timedelta(minutes=1) - timedelta(microseconds=1)
    elif match["d"]:
        high = low + timedelta(days=1) - timedelta(microseconds=1)
    elif match["m"]:
        following = datetime(year + (month == 12), month % 12 + 1, 1, tzinfo=tz)
        high = following - timedelta(microseconds=1)
    else:
        high = datetime(year + 1, 1, 1, tzinfo=tz) - timedelta(microseconds=1) if year < 9999 else MAX_INSTANT
    return low.astimezone(UTC), high.astimezone(UTC)


def parse_reference(text: str, base_url: str) -> tuple[str | None, str | None, str | None]:
    """Split a reference into (type, id, absolute url); local absolute URLs become type/id."""
    if text.startswith(base_url.rstrip("/") + "/"):
        text = text[len(base_url.rstrip("/")) + 1 :]
    match = _REFERENCE.match(text)
    if match and not match["base"]:
        return match["type"], match["id"], None
    if match:
        return match["type"], match["id"], text
    return None, None, text


@dataclass
class IndexRows:
    """Index rows of one resource, per table (column tuples without the key)."""

    token: list[tuple[str, str | None, str | None, str | None, str | None, str | None]] = field(default_factory=list)
    string: list[tuple[str, str, str]] = field(default_factory=list)
    date: list[tuple[str, datetime, datetime]] = field(default_factory=list)
    reference: list[tuple[str, str | None, str | None, str | None]] = field(default_factory=list)
    number: list[tuple[str, Decimal]] = field(default_factory=list)
    quantity: list[tuple[str, Decimal, str | None, str | None, str | None]] = field(default_factory=list)
    uri: list[tuple[str, str]] = field(default_factory=list)
    #: Composite parameters: (param, node, part, system, code, text_norm, value, unit, low, high, value_norm);
    #: the rows of one node's two components share ``node`` and differ in ``part`` (0, 1).
    composite: list[tuple[Any, ...]] = field(default_factory=list)


def _component_rows(kind: str, values: list[Any], base_url: str) -> list[tuple[Any, ...]]:
    """A component's values as (system, code, text_norm, value, unit, low, high, value_norm) tuples."""
    rows = IndexRows()
    for value in values:
        _index_value(kind, "", value, rows, base_url)
    if kind == "token":
        return [(system, code, text, None, None, None, None, None) for _, system, code, text, _, _ in rows.token]
    if kind == "quantity":
        return [(system, code, None, number, unit, None, None, None) for _, number, system, code, unit in rows.quantity]
    if kind == "date":
        return [(None, None, None, None, None, low, high, None) for _, low, high in rows.date]
    if kind == "string":
        return [(None, None, None, None, None, None, None, norm) for _, norm, _ in rows.string]
    return []


def _decimal(value: Any) -> Decimal | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None


def _tokens(code: str, value: Any, rows: IndexRows) -> None:
    add = rows.token.append
    if isinstance(value, bool):
        add((code, None, "true" if value else "false", None, None, None))
    elif isinstance(value, (str, int)):
        add((code, None, str(value), None, None, None))
    elif isinstance(value, dict):
        if "coding" in value or ("text" in value and "code" not in value and "value" not in value):
            text = value.get("text")
            for coding in value.get("coding", []):
                display = coding.get("display") or text
                add(
                    (
                        code,
                        coding.get("system"),
                        coding.get("code"),
                        normalize(display) if display else None,
                        None,
                        None,
                    )
                )
            if text:
                add((code, None, None, normalize(text), None, None))
        elif "value" in value and code not in ("telecom", "phone", "email"):
            # Identifier (R4 §3.1.1.4.9 :of-type searches Identifier.type too).
            text = (value.get("type") or {}).get("text")
            types = (value.get("type") or {}).get("coding") or [{}]
            for kind in types:
                add(
                    (
                        code,
                        value.get("system"),
                        str(value["value"]),
                        normalize(text) if text else None,
                        kind.get("system"),
                        kind.get("code"),
                    )
                )
        elif "value" in value:
            add((code, value.get("system"), str(value["value"]), None, None, None))
        elif "code" in value or "system" in value:
            display = value.get("display")
            add((code, value.get("system"), value.get("code"), normalize(display) if display else None, None, None))


def _strings(code: str, value: Any, rows: IndexRows) -> None:
    if isinstance(value, str):
        rows.string.append((code, normalize(value), value))
    elif isinstance(value, dict):
        for key in (
            "text",
            "family",
            "given",
            "prefix",
            "suffix",
            "line",
            "city",
            "district",
            "state",
            "postalCode",
            "country",
            "display",
            "value",
            "name",
        ):
            item = value.get(key)
            for text in item if isinstance(item, list) else [item]:
                if isinstance(text, str):
                    rows.string.append((code, normalize(text), text))


def _dates(code: str, value: Any, rows: IndexRows) -> None:
    if isinstance(value, str):
        bounds = date_range(value)
        if bounds:
            rows.date.append((code, *bounds))
    elif isinstance(value, dict):
        if "start" in value or "end" in value:  # Period
            start = date_range(value["start"]) if isinstance(value.get("start"), str) else None
            end = date_range(value["end"]) if isinstance(value.get("end"), str) else None
            rows.date.append((code, start[0] if start else MIN_INSTANT, end[1] if end else MAX_INSTANT))
        for event in value.get("event", []):  # Timing
            _dates(code, event, rows)


def _references(code: str, value: Any, rows: IndexRows, base_url: str) -> None:
    if isinstance(value, dict) and isinstance(value.get("reference"), str):
        if value["reference"].startswith("#"):
            return
        rows.reference.append((code, *parse_reference(value["reference"], base_url)))
    elif isinstance(value, str):  # canonical
        rows.reference.append((code, None, None, value))


def _component(
    memo: dict[tuple[str, int, str | None], list[tuple[Any, ...]]], component: Component, node: Node, base_url: str
) -> list[tuple[Any, ...]]:
    # The composites of a type share components (Observation's all start with ``code``): each is
    # evaluated once per element.
    key = (component.expression, id(node[0]), node[1])
    found = memo.get(key)
    if found is None:
        found = memo[key] = _component_rows(component.type, component.evaluate(node), base_url)
    return found


def _index_value(kind: str, code: str, value: Any, rows: IndexRows, base_url: str) -> None:
    if kind == "token":
        _tokens(code, value, rows)
    elif kind == "string":
        _strings(code, value, rows)
    elif kind == "date":
        _dates(code, value, rows)
    elif kind == "reference":
        _references(code, value, rows, base_url)
    elif kind == "number":
        number = _decimal(value)
        if number is not None:
            rows.number.append((code, number))
    elif kind == "quantity" and isinstance(value, dict):
        number = _decimal(value.get("value"))
        if number is not None:
            rows.quantity.append((code, number, value.get("system"), value.get("code"), value.get("unit")))
    elif kind == "uri" and isinstance(value, str):
        rows.uri.append((code, value))


def index_resource(resource: dict[str, Any], base_url: str) -> IndexRows:
    """Evaluate every search parameter of the resource's type into :class:`IndexRows`."""
    rows = IndexRows()
    memo: dict[tuple[str, int, str | None], list[tuple[Any, ...]]] = {}
    for code, parameter in parameters_for(resource["resourceType"]).items():
        if code in ("_id", "_lastUpdated"):
            continue  # searched on the resource table itself
        try:
            values = parameter.evaluate(resource)
        except Exception:  # noqa: S112 - a definition fhirpathpy cannot run indexes nothing
            continue
        if parameter.type == "composite":
            for node_number, node in enumerate(values):
                try:
                    parts = [_component(memo, c, node, base_url) for c in parameter.components]
                except Unsupported:
                    continue
                if all(parts):
                    for part, found in enumerate(parts):
                        rows.composite.extend((code, node_number, part, *row) for row in found)
            continue
        for value in values:
            _index_value(parameter.type, code, value, rows, base_url)
    return rows
