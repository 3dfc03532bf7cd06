"""Which top-level elements ``_summary`` keeps, per type (R4 §3.1.1.5.8, ``isSummary`` in the R4 definitions).

``data/summary-elements.r4.json`` lists, for each supported type, the
top-level elements whose R4 ElementDefinition has ``isSummary = true`` and
those with ``min > 0`` (HL7 FHIR R4 4.0.1 StructureDefinitions, CC0).
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

_DATA = Path(__file__).resolve().parent / "data" / "summary-elements.r4.json"


@cache
def _elements() -> dict[str, dict[str, list[str]]]:
    loaded: dict[str, dict[str, list[str]]] = json.loads(_DATA.read_text())["elements"]
    return loaded


def summary_elements(resource_type: str, *, mandatory_only: bool) -> set[str]:
    """Element names (choice elements without ``[x]``) of the summary, or only the mandatory ones."""
    entry = _elements().get(resource_type, {"summary": [], "mandatory": []})
    names = entry["mandatory"] if mandatory_only else entry["summary"] + entry["mandatory"]
    return {name.removesuffix("[x]") for name in names}
