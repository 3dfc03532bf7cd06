"""The compiled FHIRPath subset used for search indexing agrees with fhirpathpy, the reference."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from fhirpathpy.models import models

from oncostruct_clinical.search.fhirpath import Unsupported, compile_path
from oncostruct_clinical.search.parameters import reference_evaluator, registry

R4 = models["r4"]

#: Resources that exercise what the mCODE examples lack: choice types of several kinds,
#: where() filters, indexing, supertypes, lists of primitives with gaps.
HANDMADE: list[dict[str, Any]] = [
    {
        "resourceType": "Patient",
        "id": "p1",
        "meta": {"tag": [{"system": "urn:t", "code": "a"}], "profile": ["http://x/p"]},
        "name": [{"family": "Yamada", "given": ["Taro", None]}, {"text": "山田 太郎"}],
        "telecom": [{"system": "phone", "value": "123"}, {"system": "email", "value": "a@b.c"}],
        "deceasedDateTime": "2020-01-01",
        "address": [{"city": "Kyoto", "line": ["1", "2"]}],
        "birthDate": "1950-02-03",
    },
    {"resourceType": "Patient", "id": "p2", "deceasedBoolean": True, "gender": "female"},
    {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "21905-5"}], "text": "T"},
        "subject": {"reference": "Patient/p1"},
        "focus": [{"reference": "Condition/c1"}],
        "effectivePeriod": {"start": "2020-01-01"},
        "valueCodeableConcept": {"coding": [{"system": "s", "code": "c"}], "text": "cT2"},
        "component": [
            {"code": {"text": "a"}, "valueQuantity": {"value": 1.25, "unit": "mm"}},
            {"code": {"text": "b"}, "valueString": "x"},
            {"code": {"text": "c"}, "valueCodeableConcept": {"text": "y"}},
        ],
        "hasMember": [{"reference": "Observation/o2"}, {"reference": "Observation/o3"}],
    },
    {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "size"},
        "subject": {"reference": "Group/g1"},
        "effectiveDateTime": "2021-05",
        "valueQuantity": {"value": 3, "system": "http://unitsofmeasure.org", "code": "mm"},
    },
    {
        "resourceType": "Condition",
        "subject": {"reference": "Patient/p1"},
        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "254637007"}]},
        "onsetAge": {"value": 60, "unit": "a"},
        "abatementString": "in remission",
        "evidence": [{"detail": [{"reference": "Observation/o1"}]}],
    },
    {
        "resourceType": "Group",
        "type": "person",
        "actual": True,
        "characteristic": [
            {"code": {"text": "c"}, "valueCodeableConcept": {"coding": [{"code": "x"}]}, "exclude": False},
            {"code": {"text": "d"}, "valueBoolean": True, "exclude": False},
        ],
        "member": [{"entity": {"reference": "Patient/p1"}}],
    },
    {
        "resourceType": "Medication",
        "code": {"text": "m"},
        "ingredient": [{"itemCodeableConcept": {"text": "i"}}, {"itemReference": {"reference": "Substance/s"}}],
    },
    {
        "resourceType": "MedicationRequest",
        "status": "active",
        "intent": "order",
        "medicationReference": {"reference": "Medication/m1"},
        "subject": {"reference": "Patient/p1"},
        "authoredOn": "2022-01-01T10:00:00+09:00",
    },
    {
        "resourceType": "Encounter",
        "status": "finished",
        "class": {"code": "AMB"},
        "participant": [{"individual": {"reference": "Practitioner/d1"}}, {"individual": {"reference": "#x"}}],
        "subject": {"reference": "Patient/p1"},
    },
]


def _plain(value: Any) -> Any:
    """Values as JSON has them (fhirpathpy turns numbers inside objects into Decimal)."""
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def _values(found: list[Any]) -> list[Any]:
    """A result as the compiled walk gives it: fhirpathpy also keeps the JSON nulls of primitive lists
    (``"given": ["A", null]``, whose null stands for a value held only in ``_given``), which FHIRPath
    treats as empty and the indexer skips."""
    return [_plain(value) for value in found if value is not None]


def _resources(examples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    found = list(HANDMADE)
    for example in examples:
        found.append(example)
        found.extend(entry["resource"] for entry in example.get("entry", []) if "resource" in entry)
    return found


def test_all_but_one_shipped_definition_compiles() -> None:
    expressions = {p.expression for params in registry().values() for p in params.values()}
    fallback = sorted(e for e in expressions if compile_path(e.removeprefix("Resource."), R4) is None)
    assert fallback == ["Patient.deceased.exists() and Patient.deceased != false"]


def test_compiled_paths_agree_with_fhirpathpy(mcode_examples: list[dict[str, Any]]) -> None:
    compared = nonempty = 0
    for resource in _resources(mcode_examples):
        for parameter in registry().get(resource["resourceType"], {}).values():
            fast = compile_path(parameter.expression.removeprefix("Resource."), R4)
            if fast is None:
                continue
            expected = _values(reference_evaluator(parameter.expression)(resource))
            try:
                actual = fast(resource)
            except Unsupported:
                continue  # the indexer falls back to fhirpathpy for this resource
            assert actual == expected, (resource.get("id"), parameter.code, parameter.expression)
            compared += 1
            nonempty += bool(expected)
    # Enough comparisons that found something to mean anything.
    assert compared > 3_000
    assert nonempty > 800


@pytest.mark.parametrize(
    ("expression", "resource", "expected"),
    [
        ("Patient.telecom.where(system='email')", HANDMADE[0], [{"system": "email", "value": "a@b.c"}]),
        ("Observation.subject.where(reference.startsWith('Patient/'))", HANDMADE[3], []),
        ("(Observation.effective as dateTime)", HANDMADE[3], ["2021-05"]),
        ("Observation.value.ofType(Quantity).unit", HANDMADE[2], []),
        ("(Observation.value.ofType(CodeableConcept)).text", HANDMADE[2], ["cT2"]),
        ("Observation.code | Observation.code", HANDMADE[3], [{"text": "size"}]),
        ("Patient.name.given", HANDMADE[0], ["Taro"]),
        ("Bundle.entry[0].resource", {"resourceType": "Bundle", "entry": [{"resource": 1}, {"resource": 2}]}, [1]),
        ("Condition.code", HANDMADE[0], []),
    ],
)
def test_compiled_constructs(expression: str, resource: dict[str, Any], expected: list[Any]) -> None:
    fast = compile_path(expression, R4)
    assert fast is not None
    assert fast(resource) == expected == _values(reference_evaluator(expression)(resource))


def test_a_leading_supertype_selects_any_resource() -> None:
    # FHIRPath: a leading type name matches the context if it is of that type, supertypes included
    # (fhirpathpy matches the exact type only; no shipped definition starts with a supertype).
    fast = compile_path("DomainResource.meta.tag.code", R4)
    assert fast is not None
    assert fast(HANDMADE[0]) == ["a"]


def test_type_filter_on_an_element_of_unknown_type_defers_to_fhirpathpy() -> None:
    fast = compile_path("Patient.name.ofType(HumanName)", R4)
    assert fast is not None
    with pytest.raises(Unsupported):
        fast(HANDMADE[0])


@pytest.mark.parametrize("expression", ["Patient.deceased.exists()", "Patient.name.first()", "a = 'b", "Patient..x"])
def test_outside_the_subset_is_not_compiled(expression: str) -> None:
    assert compile_path(expression, R4) is None
