"""Composite search parameters (R4 §3.1.1.4.10): both components matched on the same element."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

SCT = "http://snomed.info/sct"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"


def _ids(bundle: dict[str, Any]) -> set[str]:
    return {e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"}


def _codings(concept: dict[str, Any] | None) -> set[tuple[str | None, str | None]]:
    return {(c.get("system"), c.get("code")) for c in (concept or {}).get("coding", [])}


def test_tnm_category_by_code_and_value(api: httpx.Client, mcode_loaded: list[dict[str, Any]]) -> None:
    # cT category (SNOMED 399504009) with the value AJCC cT3 (1228938002), as the package's examples code them.
    package = {r["id"] for r in mcode_loaded if r["resourceType"] == "Observation"}
    expected = {
        r["id"]
        for r in mcode_loaded
        if r["resourceType"] == "Observation"
        and (SCT, "399504009") in _codings(r.get("code"))
        and (SCT, "1228938002") in _codings(r.get("valueCodeableConcept"))
    }
    assert expected, "the mCODE package has a cT3 example"
    found = api.get("/Observation", params={"code-value-concept": f"{SCT}|399504009${SCT}|1228938002"}).json()
    assert _ids(found) & package == expected
    # The value of another category does not pair with the cT code.
    other = api.get("/Observation", params={"code-value-concept": f"{SCT}|399504009${SCT}|1229967007"}).json()
    assert not (_ids(other) & expected)


def test_genomic_components_pair_within_one_component(api: httpx.Client, mcode_loaded: list[dict[str, Any]]) -> None:
    gene_studied = (LOINC, "48018-6")
    with_mtap = {
        r["id"]
        for r in mcode_loaded
        if r["resourceType"] == "Observation"
        and any(
            gene_studied in _codings(c.get("code"))
            and ("http://www.genenames.org", "HGNC:7413") in _codings(c.get("valueCodeableConcept"))
            for c in r.get("component", [])
        )
    }
    assert with_mtap, "the mCODE package has an MTAP variant"
    query = f"{LOINC}|48018-6$http://www.genenames.org|HGNC:7413"
    assert _ids(api.get("/Observation", params={"component-code-value-concept": query}).json()) >= with_mtap
    # MTAP is the value of the gene-studied component, not of the others: pairing it with another
    # component's code (48002-0, genomic source class) must not match the same resources.
    crossed = f"{LOINC}|48002-0$http://www.genenames.org|HGNC:7413"
    assert not (_ids(api.get("/Observation", params={"component-code-value-concept": crossed}).json()) & with_mtap)


def _component(system: str, code: str, **value: Any) -> dict[str, Any]:
    return {"code": {"coding": [{"system": system, "code": code}]}, **value}


@pytest.fixture(scope="module")
def measured(api: httpx.Client) -> dict[str, Any]:
    """An Observation with a quantity value, a tumour-size-like component pair, and its code system."""
    system = f"urn:test:{uuid.uuid4()}"
    body = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": system, "code": "size"}]},
        "valueQuantity": {"value": 42.5, "unit": "mm", "system": UCUM, "code": "mm"},
        "component": [
            _component(system, "long", valueQuantity={"value": 3.2, "system": UCUM, "code": "cm"}),
            _component(system, "short", valueQuantity={"value": 1.1, "system": UCUM, "code": "cm"}),
            _component(system, "seen", valueDateTime="2026-03-14"),
            _component(system, "note", valueString="Spiculated margin"),
        ],
    }
    response = api.post("/Observation", json=body)
    assert response.status_code == 201, response.text
    return {"id": response.json()["id"], "system": system}


@pytest.mark.parametrize(
    ("parameter", "value", "matches"),
    [
        ("code-value-quantity", "size$42.5|{ucum}|mm", True),
        ("code-value-quantity", "size$gt40", True),
        ("code-value-quantity", "size$lt40", False),
        ("component-code-value-quantity", "long$gt3|{ucum}|cm", True),
        ("component-code-value-quantity", "short$gt3", False),  # 3.2 belongs to "long", not "short"
        ("component-code-value-quantity", "long$lt2,short$lt2", True),  # OR of pairs
        ("combo-code-value-quantity", "size$42.5", True),  # the Observation itself …
        ("combo-code-value-quantity", "long$3.2", True),  # … or one of its components
        ("combo-code-value-quantity", "long$42.5", False),
        ("component-code-value-quantity", "long$gt3|{ucum}|mm", False),  # unit must match
    ],
)
def test_quantity_composites(
    api: httpx.Client, measured: dict[str, Any], parameter: str, value: str, matches: bool
) -> None:
    system = measured["system"]
    query = value.replace("{ucum}", UCUM)
    query = ",".join(f"{system}|{part}" for part in query.split(","))
    assert (measured["id"] in _ids(api.get("/Observation", params={parameter: query}).json())) is matches


def test_date_and_string_composites_through_components(api: httpx.Client, measured: dict[str, Any]) -> None:
    system = measured["system"]
    # R4 defines code-value-date/-string on the Observation's own value only: the component pairs
    # above must not leak into them.
    assert measured["id"] not in _ids(
        api.get("/Observation", params={"code-value-date": f"{system}|seen$2026-03-14"}).json()
    )
    assert measured["id"] not in _ids(
        api.get("/Observation", params={"code-value-string": f"{system}|note$spic"}).json()
    )
    dated = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": system, "code": "seen"}]},
        "valueDateTime": "2026-03-14T10:00:00Z",
    }
    noted = {**dated, "code": {"coding": [{"system": system, "code": "note"}]}, "valueString": "Spiculated margin"}
    del noted["valueDateTime"]
    dated_id = api.post("/Observation", json=dated).json()["id"]
    noted_id = api.post("/Observation", json=noted).json()["id"]

    def search(parameter: str, value: str) -> set[str]:
        return _ids(api.get("/Observation", params={parameter: f"{system}|{value}"}).json())

    assert search("code-value-date", "seen$2026-03") == {dated_id}
    assert search("code-value-date", "seen$gt2026-04-01") == set()
    assert search("code-value-string", "note$spicul") == {noted_id}  # prefix, case-insensitive
    assert search("code-value-string", "note$margin") == set()


@pytest.mark.parametrize(
    ("params", "expression"),
    [
        ({"code-value-concept": "http://loinc.org|21905-5"}, "code-value-concept"),  # no second part
        ({"code-value-quantity": "a|b$big"}, "code-value-quantity"),
        ({"code-value-date": "a|b$2026-13-45"}, "code-value-date"),
        ({"code-value-concept:text": "a$b"}, "code-value-concept:text"),
        ({"_sort": "code-value-concept"}, "_sort"),
    ],
)
def test_invalid_composite_searches(api: httpx.Client, params: dict[str, str], expression: str) -> None:
    response = api.get("/Observation", params=params)
    assert response.status_code == 400, response.text
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["expression"] == [expression]


def test_capability_statement_lists_the_composites(api: httpx.Client) -> None:
    statement = api.get("/metadata").json()
    observation = next(r for r in statement["rest"][0]["resource"] if r["type"] == "Observation")
    composites = {p["name"] for p in observation["searchParam"] if p["type"] == "composite"}
    assert {"code-value-concept", "code-value-quantity", "component-code-value-quantity"} <= composites
