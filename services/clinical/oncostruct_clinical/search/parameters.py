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

from .fhirpath import Unsupported, compile_path

ParamType = Literal["number", "date", "string", "token", "reference", "composite", "quantity", "uri", "special"]
_DATA = Path(__file__).resolve().parent.parent / "data" / "search-parameters.r4.json"


@dataclass(frozen=True)
class SearchParameter:
    """One SearchParameter as it applies to one resource type."""

    code: str
    type: ParamType
    expression: str
    url: str
    target: tuple[str, ...]
    evaluate: Callable[[dict[str, Any]], list[Any]]


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


@cache
def registry() -> Mapping[str, Mapping[str, SearchParameter]]:
    """Resource type → parameter code → :class:`SearchParameter` (common ``Resource`` ones included)."""
    raw: dict[str, dict[str, dict[str, Any]]] = json.loads(_DATA.read_text())["parameters"]
    common = raw.get("Resource", {})
    result: dict[str, dict[str, SearchParameter]] = {}
    for resource_type, params in raw.items():
        merged = {**common, **params} if resource_type != "Resource" else dict(params)
        result[resource_type] = {
            code: SearchParameter(
                code=code,
                type=spec["type"],
                expression=spec["expression"],
                url=spec["url"],
                target=tuple(spec.get("target", ())),
                evaluate=_compile(spec["expression"]),
            )
            for code, spec in merged.items()
            if spec["type"] != "composite"
        }
    return result


def parameters_for(resource_type: str) -> Mapping[str, SearchParameter]:
    """The indexed search parameters of ``resource_type`` (empty if none)."""
    return registry().get(resource_type, {})
