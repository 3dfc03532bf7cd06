"""Structural R4 validation on every write, and the mCODE 4.0.0 examples round trip."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from fhirclient.models.bundle import Bundle as R4Bundle


def _without_meta(resource: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in resource.items() if k != "meta"}


def test_every_mcode_example_reads_back_unchanged(api: httpx.Client, mcode_loaded: list[dict[str, Any]]) -> None:
    assert len(mcode_loaded) == 179
    changed = []
    for example in mcode_loaded:
        response = api.get(f"/{example['resourceType']}/{example['id']}")
        assert response.status_code == 200, (example["id"], response.text)
        stored = response.json()
        if _without_meta(stored) != _without_meta(example):
            changed.append(example["id"])
        assert stored["meta"]["versionId"]
        assert stored["meta"].get("profile") == example.get("meta", {}).get("profile")
    assert changed == []


def test_mcode_search_results_parse_with_strict_r4_models(api: httpx.Client, mcode_loaded: list[Any]) -> None:
    ids = [e["id"] for e in mcode_loaded if e["resourceType"] == "Observation"]
    response = api.get("/Observation", params={"_id": ",".join(ids), "_count": 200})
    bundle = R4Bundle(response.json(), strict=True)
    assert bundle.total == len(ids) == 99
    assert sorted(e.resource.id for e in bundle.entry) == sorted(ids)


@pytest.mark.parametrize(
    ("resource", "expression"),
    [
        ({"resourceType": "Patient", "birthDate": "1960-13-45"}, "Patient.birthDate"),
        ({"resourceType": "Patient", "name": [{"family": 3}]}, "Patient.name[0].family"),
        ({"resourceType": "Patient", "name": {"family": "x"}}, "Patient.name"),
        ({"resourceType": "Patient", "nickname": "Bob"}, "Patient.nickname"),
        ({"resourceType": "Patient", "active": "yes"}, "Patient.active"),
        ({"resourceType": "Patient", "gender": "robot"}, "Patient.gender"),
        ({"resourceType": "Observation", "status": "final"}, "Observation.code"),
        (
            {"resourceType": "Condition", "subject": {"reference": "not a reference"}},
            "Condition.subject.reference",
        ),
        (
            {"resourceType": "Observation", "status": "final", "code": {"text": "x"}, "valueFoo": 1},
            "Observation.valueFoo",
        ),
        ({"resourceType": "Patient", "name": [{"family": "Do\u0000e"}]}, "Patient.name[0].family"),
    ],
)
def test_invalid_resource_is_rejected_pointing_at_the_element(
    api: httpx.Client, resource: dict[str, Any], expression: str
) -> None:
    response = api.post(f"/{resource['resourceType']}", json=resource)
    assert response.status_code == 400
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["code"] == "invalid"
    assert expression in outcome["issue"][0]["expression"]


def test_invalid_update_writes_nothing(api: httpx.Client) -> None:
    created = api.post("/Patient", json={"resourceType": "Patient", "gender": "female"}).json()
    bad = {**created, "birthDate": "yesterday"}
    assert api.put(f"/Patient/{created['id']}", json=bad).status_code == 400
    assert api.get(f"/Patient/{created['id']}").json()["meta"]["versionId"] == "1"
