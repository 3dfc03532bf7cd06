"""The RESTful interactions beyond create/read: update, vread, delete, history, conditionals, patch, versions."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest
from fhirclient.models.bundle import Bundle as R4Bundle
from fhirpy import SyncFHIRClient
from fhirpy.base.exceptions import ResourceNotFound


def _patient(system: str, value: str) -> dict[str, object]:
    return {"resourceType": "Patient", "identifier": [{"system": system, "value": value}], "gender": "female"}


def test_update_as_create_then_update_then_vread(api: httpx.Client) -> None:
    pid = f"p-{uuid.uuid4().hex[:12]}"
    created = api.put(f"/Patient/{pid}", json={"resourceType": "Patient", "id": pid, "gender": "male"})
    assert created.status_code == 201
    assert created.headers["etag"] == 'W/"1"'
    updated = api.put(f"/Patient/{pid}", json={"resourceType": "Patient", "id": pid, "gender": "female"})
    assert updated.status_code == 200
    assert updated.json()["meta"]["versionId"] == "2"
    assert updated.headers["location"].endswith(f"/Patient/{pid}/_history/2")
    assert api.get(f"/Patient/{pid}/_history/1").json()["gender"] == "male"
    assert api.get(f"/Patient/{pid}").json()["gender"] == "female"
    assert api.get(f"/Patient/{pid}/_history/9").status_code == 404


def test_delete_is_versioned_and_read_is_gone(api: httpx.Client, fhir: SyncFHIRClient) -> None:
    patient = fhir.resource("Patient", gender="other")
    patient.save()
    assert api.delete(f"/Patient/{patient.id}").status_code == 204
    gone = api.get(f"/Patient/{patient.id}")
    assert gone.status_code == 410
    assert gone.json()["issue"][0]["code"] == "deleted"
    assert api.get(f"/Patient/{patient.id}/_history/1").status_code == 200
    history = api.get(f"/Patient/{patient.id}/_history").json()
    assert [e["request"]["method"] for e in history["entry"]] == ["DELETE", "POST"]
    assert api.delete(f"/Patient/{patient.id}").status_code == 204  # idempotent
    with pytest.raises(ResourceNotFound):
        fhir.reference("Patient", "never-existed-xyz").to_resource()


def test_history_levels_since_and_count_parse_as_r4(api: httpx.Client) -> None:
    before = datetime.now(UTC) - timedelta(seconds=1)
    pid = f"h-{uuid.uuid4().hex[:12]}"
    for gender in ("male", "female", "other"):
        api.put(f"/Patient/{pid}", json={"resourceType": "Patient", "id": pid, "gender": gender})
    instance = R4Bundle(api.get(f"/Patient/{pid}/_history", params={"_count": 2}).json(), strict=True)
    assert instance.type == "history"
    assert [e.resource.meta.versionId for e in instance.entry] == ["3", "2"]
    assert any(link.relation == "next" for link in instance.link)
    next_url = next(link.url for link in instance.link if link.relation == "next")
    rest = httpx.get(next_url, headers=api.headers).json()
    assert [e["resource"]["meta"]["versionId"] for e in rest["entry"]] == ["1"]
    typed = api.get("/Patient/_history", params={"_since": before.isoformat()}).json()
    assert any(e["fullUrl"].endswith(f"/Patient/{pid}") for e in typed["entry"])
    system = api.get("/_history", params={"_count": 1}).json()
    assert system["type"] == "history"
    assert len(system["entry"]) == 1
    assert api.get("/Patient/_history", params={"_since": "last tuesday"}).status_code == 400


def test_conditional_create_is_idempotent(api: httpx.Client) -> None:
    system, value = "urn:test:mrn", uuid.uuid4().hex
    headers = {"If-None-Exist": f"identifier={system}|{value}"}
    first = api.post("/Patient", json=_patient(system, value), headers=headers)
    second = api.post("/Patient", json=_patient(system, value), headers=headers)
    assert (first.status_code, second.status_code) == (201, 200)
    assert first.json()["id"] == second.json()["id"]


def test_concurrent_conditional_creates_make_one_resource(api: httpx.Client, fhir_base: str) -> None:
    system, value = "urn:test:mrn", uuid.uuid4().hex
    statuses: list[int] = []

    def create() -> None:
        with httpx.Client(base_url=fhir_base, headers=api.headers, timeout=30) as client:
            response = client.post(
                "/Patient", json=_patient(system, value), headers={"If-None-Exist": f"identifier={system}|{value}"}
            )
            statuses.append(response.status_code)

    threads = [threading.Thread(target=create) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [200, 200, 200, 201]
    assert api.get("/Patient", params={"identifier": f"{system}|{value}"}).json()["total"] == 1


def test_conditional_update_and_delete(api: httpx.Client) -> None:
    system, value = "urn:test:mrn", uuid.uuid4().hex
    query = f"identifier={system}|{value}"
    created = api.put(f"/Patient?{query}", json=_patient(system, value))
    assert created.status_code == 201
    updated = api.put(f"/Patient?{query}", json={**_patient(system, value), "gender": "male"})
    assert updated.status_code == 200
    assert updated.json()["id"] == created.json()["id"]
    assert updated.json()["meta"]["versionId"] == "2"
    api.post("/Patient", json=_patient(system, value))  # now two match
    assert api.put(f"/Patient?{query}", json=_patient(system, value)).status_code == 412
    assert api.delete(f"/Patient?{query}").status_code == 412
    assert api.delete(f"/Patient?{query}&gender=male").status_code == 204
    assert api.get(f"/Patient/{created.json()['id']}").status_code == 410


def test_json_patch(api: httpx.Client) -> None:
    created = api.post("/Patient", json={"resourceType": "Patient", "gender": "male"}).json()
    patch = [{"op": "replace", "path": "/gender", "value": "female"}, {"op": "add", "path": "/active", "value": True}]
    headers = {"content-type": "application/json-patch+json", "If-Match": 'W/"1"'}
    patched = api.patch(f"/Patient/{created['id']}", json=patch, headers=headers)
    assert patched.status_code == 200
    assert (patched.json()["gender"], patched.json()["active"]) == ("female", True)
    stale = api.patch(f"/Patient/{created['id']}", json=patch, headers=headers)
    assert stale.status_code == 412
    invalid = [{"op": "replace", "path": "/gender", "value": 7}]
    bad = api.patch(f"/Patient/{created['id']}", json=invalid, headers={"content-type": "application/json-patch+json"})
    assert bad.status_code == 400
    unappliable = [{"op": "remove", "path": "/nothing/here"}]
    no = api.patch(
        f"/Patient/{created['id']}", json=unappliable, headers={"content-type": "application/json-patch+json"}
    )
    assert no.status_code == 422


def test_if_match_conflict_and_conditional_reads(api: httpx.Client) -> None:
    created = api.post("/Patient", json={"resourceType": "Patient", "gender": "male"})
    body = created.json()
    path = f"/Patient/{body['id']}"
    assert api.put(path, json=body, headers={"If-Match": 'W/"2"'}).status_code == 412
    assert api.put(path, json=body, headers={"If-Match": 'W/"1"'}).status_code == 200
    assert api.put(path, json=body, headers={"If-Match": "garbage"}).status_code == 400
    assert api.get(path, headers={"If-None-Match": 'W/"2"'}).status_code == 304
    assert api.get(path, headers={"If-None-Match": 'W/"1"'}).status_code == 200
    later = format_datetime(datetime.now(UTC) + timedelta(minutes=5), usegmt=True)
    earlier = format_datetime(datetime.now(UTC) - timedelta(hours=1), usegmt=True)
    assert api.get(path, headers={"If-Modified-Since": later}).status_code == 304
    assert api.get(path, headers={"If-Modified-Since": earlier}).status_code == 200


def test_concurrent_updates_with_if_match_one_wins(api: httpx.Client, fhir_base: str) -> None:
    created = api.post("/Patient", json={"resourceType": "Patient", "gender": "male"}).json()
    statuses: list[int] = []

    def update(gender: str) -> None:
        with httpx.Client(base_url=fhir_base, headers=api.headers, timeout=30) as client:
            response = client.put(
                f"/Patient/{created['id']}", json={**created, "gender": gender}, headers={"If-Match": 'W/"1"'}
            )
            statuses.append(response.status_code)

    threads = [threading.Thread(target=update, args=(g,)) for g in ("female", "other", "unknown", "female")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(statuses) == [200, 412, 412, 412]
    history = api.get(f"/Patient/{created['id']}/_history").json()
    assert len(history["entry"]) == 2


@pytest.mark.parametrize(
    ("prefer", "status", "body_type"),
    [
        ("return=minimal", 201, None),
        ("return=representation", 201, "Patient"),
        ("return=OperationOutcome", 201, "OperationOutcome"),
        (None, 201, "Patient"),
    ],
)
def test_prefer_return(api: httpx.Client, prefer: str | None, status: int, body_type: str | None) -> None:
    headers = {"Prefer": prefer} if prefer else {}
    response = api.post("/Patient", json={"resourceType": "Patient"}, headers=headers)
    assert response.status_code == status
    assert response.headers["location"]
    assert (response.json()["resourceType"] if response.content else None) == body_type


@pytest.mark.parametrize(
    ("method", "path", "body", "status"),
    [
        ("PUT", "/Patient/abc", {"resourceType": "Patient", "id": "other"}, 400),
        ("PUT", "/Patient/abc", {"resourceType": "Patient"}, 400),
        ("PUT", "/Patient/abc", {"resourceType": "Observation", "id": "abc"}, 400),
        ("POST", "/Spaceship", {"resourceType": "Spaceship"}, 404),
        ("GET", "/Patient/bad$id", None, 400),
        ("GET", "/Spaceship?name=x", None, 404),
    ],
)
def test_bad_requests(api: httpx.Client, method: str, path: str, body: object, status: int) -> None:
    response = api.request(method, path, json=body)
    assert response.status_code == status
    assert response.json()["resourceType"] == "OperationOutcome"
