"""The SearchParameter definitions this server indexes, loaded from the shipped R4 + mCODE index.

``data/search-parameters.r4.json`` is derived from the FHIR R4 4.0.1
SearchParameter Bundle (HL7 specification content, CC0) and mCODE 4.0.0's own
SearchParameters by ``services/clinical/scripts/build_search_parameters.py``.
Each expression is compiled once and evaluated at write time (see :mod:`.indexing`):
into a direct walk of the JSON when it is in the subset :mod:`.fhirpath` compiles
(all but a handful), with fhirpathpy (R4 model) otherwise or when the data needs it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal

import fhirpathpy
from fhirpathpy.models import models

from .fhirpath import Node, Unsupported, compile_nodes, compile_path, compile_relative

ParamType = Literal["number", "date", "string", "token", "reference", "composite", "quantity", "uri", "special"]
_DATA = Path(__file__).resolve().parent.parent / "data" / "search-parameters.r4.json"


@dataclass(frozen=True)
class Component:
    """One component of a composite parameter: its type and its expression, relative to the composite's node."""

    type: ParamType
    expression: str
    evaluate: Callable[[Node], list[Any]]


@dataclass(frozen=True)
class SearchParameter:
    """One SearchParameter as it applies to one resource type.

    For a composite parameter, ``evaluate`` returns the nodes (value, model path) its components
    are evaluated on, and ``components`` holds them (R4 §3.1.1.4.10 search.html#composite).
    """

    code: str
    type: ParamType
    expression: str
    url: str
    target: tuple[str, ...]
    evaluate: Callable[[dict[str, Any]], list[Any]]
    components: tuple[Component, ...] = ()


#: Types of the components of the R4 composite parameters, by their expression. The R4 definitions name
#: each component's SearchParameter (Observation-code, Observation-value-quantity, …); these are their types.
_COMPONENT_TYPES: dict[str, ParamType] = {
    "code": "token",
    "value": "token",  # Group-value (Group.characteristic.value)
    "value.ofType(CodeableConcept)": "token",
    "value.ofType(Quantity)": "quantity",
    "value.ofType(DateTime) | value.ofType(Period)": "date",
    "value.ofType(string)": "string",
}


def reference_evaluator(expression: str) -> Callable[[dict[str, Any]], list[Any]]:
    """``expression`` compiled with fhirpathpy (R4 model): the general, slower evaluator."""
    # Resource-level parameters are written "Resource.meta.tag"; evaluate them from the root.
    compiled = fhirpathpy.compile(expression.removeprefix("Resource."), models["r4"])
    return lambda resource: list(compiled(resource, {}))


def _compile(expression: str) -> Callable[[dict[str, Any]], list[Any]]:
    general = reference_evaluator(expression)
    fast = compile_path(expression.removeprefix("Resource."), models["r4"])
    if fast is None:
        return general

    def evaluate(resource: dict[str, Any]) -> list[Any]:
        try:
            return fast(resource)
        except Unsupported:
            return general(resource)

    return evaluate


def _composite(code: str, spec: dict[str, Any]) -> SearchParameter | None:
    nodes = compile_nodes(spec["expression"], models["r4"])
    components = []
    for expression in spec.get("component", []):
        kind = _COMPONENT_TYPES.get(expression)
        evaluate = compile_relative(expression, models["r4"])
        if kind is None or evaluate is None:
            return None
        components.append(Component(kind, expression, evaluate))
    if nodes is None or len(components) != 2:  # every R4 composite has two components
        return None
    return SearchParameter(code, "composite", spec["expression"], spec["url"], (), nodes, tuple(components))


@cache
def registry() -> Mapping[str, Mapping[str, SearchParameter]]:
    """Resource type → parameter code → :class:`SearchParameter` (common ``Resource`` ones included)."""
    raw: dict[str, dict[str, dict[str, Any]]] = json.loads(_DATA.read_text())["parameters"]
    common = raw.get("Resource", {})
    result: dict[str, dict[str, SearchParameter]] = {}
    for resource_type, params in raw.items():
        merged = {**common, **params} if resource_type != "Resource" else dict(params)
        found: dict[str, SearchParameter] = {}
        for code, spec in merged.items():
            if spec["type"] == "composite":
                composite = _composite(code, spec)
                if composite is not None:
                    found[code] = composite
                continue
            found[code] = SearchParameter(
                code=code,
                type=spec["type"],
                expression=spec["expression"],
                url=spec["url"],
                target=tuple(spec.get("target", ())),
                evaluate=_compile(spec["expression"]),
            )
        result[resource_type] = found
    return result


def parameters_for(resource_type: str) -> Mapping[str, SearchParameter]:
    """The indexed search parameters of ``resource_type`` (empty if none)."""
    return registry().get(resource_type, {})
