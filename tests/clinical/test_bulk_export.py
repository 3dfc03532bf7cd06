"""FHIR Bulk Data export: kick-off, status polling, manifest, NDJSON files; system, Patient and Group level."""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

import httpx
import pytest

from tests.clinical.fhir_create import create as create_resource
from tests.support import Issuer, bearer

FHIR = {"Content-Type": "application/fhir+json"}
ASYNC = {"Prefer": "respond-async", "Accept": "application/fhir+json"}


@pytest.fixture(scope="module")
def api(clinical_url: str, issuer: Issuer) -> httpx.Client:
    return httpx.Client(base_url=f"{clinical_url}/fhir", headers=bearer(issuer.token("system/*.cruds")), timeout=30)


@pytest.fixture(scope="module")
def world(api: httpx.Client) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:8]

    def create(resource: dict[str, Any]) -> str:
        return create_resource(api, resource)

    alice = create({"resourceType": "Patient", "name": [{"family": f"Bulk{tag}A"}]})
    bob = create({"resourceType": "Patient", "name": [{"family": f"Bulk{tag}B"}]})
    observation = {"resourceType": "Observation", "status": "final", "code": {"text": tag}}
    obs_a = create({**observation, "subject": {"reference": f"Patient/{alice}"}})
    obs_b = create({**observation, "subject": {"reference": f"Patient/{bob}"}})
    doctor = create({"resourceType": "Practitioner", "name": [{"family": f"Doc{tag}"}]})
    group = create(
        {
            "resourceType": "Group",
            "type": "person",
            "actual": True,
            "member": [{"entity": {"reference": f"Patient/{alice}"}}],
        }
    )
    return {"alice": alice, "bob": bob, "obs_a": obs_a, "obs_b": obs_b, "doctor": doctor, "group": group}


def _export(api: httpx.Client, path: str, **params: str) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]]]:
    kicked = api.get(path, params=params, headers=ASYNC)
    assert kicked.status_code == 202, kicked.text
    status_url = kicked.headers["Content-Location"]
    deadline = time.monotonic() + 60
    while (status := api.get(status_url)).status_code == 202:
        assert "X-Progress" in status.headers
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert status.status_code == 200, status.text
    manifest: dict[str, Any] = status.json()
    files: dict[str, list[dict[str, Any]]] = {}
    for output in manifest["output"]:
        response = api.get(output["url"])
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/fhir+ndjson")
        lines = [json.loads(line) for line in response.text.splitlines() if line]
        assert len(lines) == output["count"]
        assert {line["resourceType"] for line in lines} == {output["type"]}
        files[output["type"]] = lines
    return manifest, files


def _ids(files: dict[str, list[dict[str, Any]]], resource_type: str) -> set[str]:
    return {resource["id"] for resource in files.get(resource_type, [])}


def test_system_export_of_chosen_types(api: httpx.Client, world: dict[str, Any]) -> None:
    manifest, files = _export(api, "/$export", _type="Patient,Practitioner")
    assert manifest["requiresAccessToken"] is True
    assert "/$export?_type=" in manifest["request"]
    assert set(files) <= {"Patient", "Practitioner"}
    assert {world["alice"], world["bob"]} <= _ids(files, "Patient")
    assert world["doctor"] in _ids(files, "Practitioner")


def test_patient_export_holds_compartments_only(api: httpx.Client, world: dict[str, Any]) -> None:
    _, files = _export(api, "/Patient/$export", _type="Patient,Observation,Practitioner")
    assert {world["obs_a"], world["obs_b"]} <= _ids(files, "Observation")
    assert "Practitioner" not in files  # outside the patient compartment


def test_group_export_holds_its_members_only(api: httpx.Client, world: dict[str, Any]) -> None:
    _, files = _export(api, f"/Group/{world['group']}/$export")
    assert _ids(files, "Patient") == {world["alice"]}
    assert world["obs_a"] in _ids(files, "Observation")
    assert world["obs_b"] not in _ids(files, "Observation")


def test_since_leaves_out_older_resources(api: httpx.Client, world: dict[str, Any]) -> None:
    time.sleep(1.1)
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    time.sleep(1.1)
    fresh = api.post(
        "/Practitioner", json={"resourceType": "Practitioner", "name": [{"family": "Fresh"}]}, headers=FHIR
    )
    _, files = _export(api, "/$export", _type="Practitioner", _since=since)
    assert _ids(files, "Practitioner") == {fresh.json()["id"]}


@pytest.mark.parametrize(
    ("path", "headers", "params", "status"),
    [
        ("/$export", {}, {}, 400),  # no Prefer: respond-async
        ("/$export", ASYNC, {"_outputFormat": "text/csv"}, 400),
        ("/$export", ASYNC, {"_type": "Spaceship"}, 400),
        ("/$export", ASYNC, {"_since": "yesterday"}, 400),
        ("/Group/no-such-group/$export", ASYNC, {}, 404),
    ],
)
def test_bad_kick_offs_are_operation_outcomes(
    api: httpx.Client, path: str, headers: dict[str, str], params: dict[str, str], status: int
) -> None:
    response = api.get(path, params=params, headers=headers)
    assert response.status_code == status, response.text
    assert response.json()["resourceType"] == "OperationOutcome"


def test_export_needs_system_scopes_and_files_need_auth(
    clinical_url: str, issuer: Issuer, api: httpx.Client, world: dict[str, Any]
) -> None:
    patient_app = bearer(issuer.forge({"scope": "patient/*.rs", "patient": world["alice"]}))
    refused = httpx.get(f"{clinical_url}/fhir/$export", params={"_type": "Patient"}, headers={**ASYNC, **patient_app})
    assert refused.status_code == 403
    manifest, _ = _export(api, "/$export", _type="Practitioner")
    assert httpx.get(manifest["output"][0]["url"]).status_code == 401
    status_url = manifest["output"][0]["url"].replace("$export-file", "$export-status").rsplit("/", 1)[0]
    assert api.delete(status_url).status_code == 202
    assert api.get(status_url).status_code == 404


def test_another_clients_export_is_not_revealed(clinical_url: str, issuer: Issuer, api: httpx.Client) -> None:
    manifest, _ = _export(api, "/$export", _type="Practitioner")
    other = bearer(issuer.token("system/*.rs", subject="another-client"))
    assert httpx.get(manifest["output"][0]["url"], headers=other).status_code == 404
