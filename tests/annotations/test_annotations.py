"""Annotations over the REST API: schema checks, levels, review workflow, If-Match, revisions, bulk, filters."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from tests.support import Issuer, bearer

V1 = "/annotations/v1"


def client(base_url: str, issuer: Issuer, subject: str, *scopes: str) -> httpx.Client:
    scopes = scopes or ("annotations.read", "annotations.write")
    return httpx.Client(base_url=base_url + V1, headers=bearer(issuer.token(*scopes, subject=subject)), timeout=30)


@pytest.fixture
def manager(annotations_url: str, issuer: Issuer) -> httpx.Client:
    return client(annotations_url, issuer, "dr-manager", "annotations.read", "annotations.write", "annotations.review")


@pytest.fixture
def project(manager: httpx.Client) -> dict[str, Any]:
    response = manager.post("/projects", json={"name": f"cohort-{uuid.uuid4().hex[:8]}"})
    assert response.status_code == 201
    return dict(response.json())


def tnm(project_id: str, value: str = "t2a", **extra: Any) -> dict[str, Any]:
    return {"project_id": project_id, "level": "patient", "label": "t_category", "value": value,
            "patient_id": "pat-1", **extra}  # fmt: skip


def test_default_oncology_schema_is_installed(manager: httpx.Client) -> None:
    schemas = manager.get("/schemas", params={"name": "oncology"}).json()
    assert schemas[0]["version"] == 1
    labels = {label["key"]: label for label in schemas[0]["definition"]["labels"]}
    assert labels["t_category"]["concept"] == {
        "system": "http://loinc.org",
        "code": "21905-5",
        "display": "Primary tumor.clinical [Class] Cancer",
    }
    assert {v["key"] for v in labels["lesion"]["values"]} == {
        "primary_tumour",
        "lymph_node",
        "metastasis",
        "other_lesion",
    }
    assert labels["margin"]["attribute"] is True
    levels = {label["level"] for label in labels.values()}
    assert levels == {"patient", "series", "roi"}


def test_new_schema_versions_are_numbered(manager: httpx.Client) -> None:
    name = f"local-{uuid.uuid4().hex[:6]}"
    good = {"key": "good", "concept": {"system": "urn:x", "code": "g", "display": "Good"}}
    quality = {"system": "urn:x", "code": "q", "display": "Quality"}
    definition = {
        "labels": [
            {"key": "quality", "level": "series", "value_type": "category", "concept": quality, "values": [good]}
        ]
    }
    first = manager.post("/schemas", json={"name": name, "definition": definition})
    second = manager.post("/schemas", json={"name": name, "definition": definition})
    assert [first.json()["version"], second.json()["version"]] == [1, 2]
    bad = manager.post(
        "/schemas", json={"name": name, "definition": {"labels": [{**definition["labels"][0], "values": []}]}}
    )
    assert bad.status_code == 422


def test_patient_label_create_read_and_project_membership(
    manager: httpx.Client, project: dict[str, Any], annotations_url: str, issuer: Issuer
) -> None:
    created = manager.post("/annotations", json=tnm(project["id"]))
    assert created.status_code == 201
    body = created.json()
    assert body["status"] == "draft"
    assert body["author"] == "dr-manager"
    assert body["schema_id"] == project["schema_id"]
    assert created.headers["etag"] == '"1"'
    assert manager.get(f"/annotations/{body['id']}").json() == body
    with client(annotations_url, issuer, "stranger") as stranger:
        assert stranger.get(f"/annotations/{body['id']}").status_code == 403
        assert stranger.post("/annotations", json=tnm(project["id"])).status_code == 403


@pytest.mark.parametrize(
    ("change", "location"),
    [
        ({"value": "t9"}, "value"),
        ({"label": "no_such_label"}, "label"),
        ({"label": "margin", "value": "smooth"}, "label"),  # an attribute is not a label of its own
        ({"label": "exam_purpose", "value": "staging"}, "level"),  # series label at patient level
        ({"patient_id": None}, "patient_id"),
        ({"study_uid": "1.2.3"}, "study_uid"),
        ({"attributes": {"margin": "smooth"}}, "attributes"),
        ({"status": "approved"}, "status"),
    ],
)
def test_annotation_outside_the_schema_is_unprocessable(
    manager: httpx.Client, project: dict[str, Any], change: dict[str, Any], location: str
) -> None:
    response = manager.post("/annotations", json={**tnm(project["id"]), **change})
    assert response.status_code == 422, response.text
    problem = response.json()
    assert response.headers["content-type"] == "application/problem+json"
    assert any(error["location"].endswith(location) for error in problem.get("errors", [])), problem


@pytest.mark.parametrize(
    "geometry",
    [
        {"type": "polygon", "sop_instance_uid": "1.2.3", "points": [[1, 1], [2, 2]]},  # two points
        {"type": "polygon", "sop_instance_uid": "1.2.3", "points": [[1, 1], [2, -2], [3, 3]]},  # negative
        {"type": "line", "sop_instance_uid": "1.2.x", "points": [[1, 1], [2, 2]]},  # bad UID
        {"type": "mask", "sop_instance_uids": ["1.2.3"], "rows": 2, "columns": 2, "data": "not base64!"},
        {"type": "circle", "sop_instance_uid": "1.2.3"},
    ],
)
def test_malformed_geometry_is_unprocessable(
    manager: httpx.Client, project: dict[str, Any], geometry: dict[str, Any]
) -> None:
    response = manager.post(
        "/annotations",
        json={"project_id": project["id"], "level": "roi", "label": "lesion", "value": "metastasis",
              "study_uid": "1.2.3", "series_uid": "1.2.3.4", "geometry": geometry},
    )  # fmt: skip
    assert response.status_code == 422


def test_series_unknown_to_imaging_is_unprocessable(manager: httpx.Client, project: dict[str, Any]) -> None:
    response = manager.post(
        "/annotations",
        json={"project_id": project["id"], "level": "series", "label": "exam_purpose", "value": "staging",
              "study_uid": "1.2.826.0.1.3680043.10.1.999", "series_uid": "1.2.826.0.1.3680043.10.1.999.1"},
    )  # fmt: skip
    assert response.status_code == 422
    assert "not in the imaging service" in response.json()["detail"]


def test_edits_need_a_current_if_match(manager: httpx.Client, project: dict[str, Any]) -> None:
    annotation = manager.post("/annotations", json=tnm(project["id"])).json()
    path = f"/annotations/{annotation['id']}"
    assert manager.patch(path, json={"value": "t3"}).status_code == 428
    assert manager.patch(path, json={"value": "t3"}, headers={"If-Match": '"7"'}).status_code == 412
    updated = manager.patch(path, json={"value": "t3"}, headers={"If-Match": '"1"'})
    assert updated.status_code == 200
    assert updated.json()["value"] == "t3"
    assert updated.headers["etag"] == '"2"'
    stale = manager.patch(path, json={"value": "t4"}, headers={"If-Match": '"1"'})
    assert stale.status_code == 412
    assert manager.get(path).json()["value"] == "t3"  # the stale edit changed nothing


@pytest.mark.parametrize(
    ("start", "actions", "final"),
    [
        ("draft", ["submit", "approve"], "approved"),
        ("draft", ["submit", "reject", "reopen", "submit", "approve"], "approved"),
        ("draft", ["submit", "withdraw"], "draft"),
        ("proposed", ["accept", "submit", "approve"], "approved"),
        ("proposed", ["reject"], "rejected"),
        ("draft", ["delete"], "deleted"),
    ],
)
def test_review_workflow(
    manager: httpx.Client, project: dict[str, Any], start: str, actions: list[str], final: str
) -> None:
    annotation = manager.post("/annotations", json=tnm(project["id"], status=start)).json()
    version = 1
    for action in actions:
        method = manager.delete if action == "delete" else manager.post
        path = f"/annotations/{annotation['id']}" + ("" if action == "delete" else f"/{action}")
        response = method(path, headers={"If-Match": f'"{version}"'})
        assert response.status_code == 200, (action, response.text)
        version += 1
    assert manager.get(f"/annotations/{annotation['id']}").json()["status"] == final
    history = manager.get(f"/annotations/{annotation['id']}/revisions").json()
    assert [r["action"] for r in history] == ["create", *actions]
    assert [r["version"] for r in history] == list(range(1, len(actions) + 2))


@pytest.mark.parametrize(
    ("start", "action"),
    [("draft", "approve"), ("draft", "accept"), ("proposed", "submit"), ("draft", "reopen"), ("draft", "withdraw")],
)
def test_forbidden_transitions_are_conflicts(
    manager: httpx.Client, project: dict[str, Any], start: str, action: str
) -> None:
    annotation = manager.post("/annotations", json=tnm(project["id"], status=start)).json()
    response = manager.post(f"/annotations/{annotation['id']}/{action}", headers={"If-Match": '"1"'})
    assert response.status_code == 409
    assert "allowed:" in response.json()["detail"]


def test_approving_needs_review_scope_and_role(
    manager: httpx.Client, project: dict[str, Any], annotations_url: str, issuer: Issuer
) -> None:
    manager.put(f"/projects/{project['id']}/members/ann-1", json={"role": "annotator"})
    with client(annotations_url, issuer, "ann-1", "annotations.read", "annotations.write", "annotations.review") as ann:
        annotation = ann.post("/annotations", json=tnm(project["id"])).json()
        assert ann.post(f"/annotations/{annotation['id']}/submit", headers={"If-Match": '"1"'}).status_code == 200
        refused = ann.post(f"/annotations/{annotation['id']}/approve", headers={"If-Match": '"2"'})
        assert refused.status_code == 403  # an annotator, even with the scope
    with client(annotations_url, issuer, "dr-manager", "annotations.read", "annotations.write") as no_scope:
        refused = no_scope.post(f"/annotations/{annotation['id']}/approve", headers={"If-Match": '"2"'})
        assert refused.status_code == 403
    approved = manager.post(f"/annotations/{annotation['id']}/approve", headers={"If-Match": '"2"'})
    assert approved.json()["status"] == "approved"


def test_correcting_a_proposal_makes_it_a_draft(manager: httpx.Client, project: dict[str, Any]) -> None:
    proposal = manager.post("/annotations", json=tnm(project["id"], status="proposed")).json()
    corrected = manager.patch(
        f"/annotations/{proposal['id']}", json={"value": "t1b"}, headers={"If-Match": '"1"'}
    ).json()
    assert corrected["status"] == "draft"
    assert corrected["value"] == "t1b"
    history = manager.get(f"/annotations/{proposal['id']}/revisions").json()
    assert [(r["action"], r["status"], r["snapshot"]["value"]) for r in history] == [
        ("create", "proposed", "t2a"),
        ("correct", "draft", "t1b"),
    ]


def test_bulk_create_is_idempotent_per_client_key(manager: httpx.Client, project: dict[str, Any]) -> None:
    items = [
        tnm(project["id"], value=v, client_key=f"job-1/{i}", status="proposed") for i, v in enumerate(["t1", "t2"])
    ]
    first = manager.post("/annotations/bulk", json={"items": items})
    assert first.status_code == 200
    assert (first.json()["created"], first.json()["existing"]) == (2, 0)
    again = manager.post("/annotations/bulk", json={"items": items})
    assert (again.json()["created"], again.json()["existing"]) == (0, 2)
    assert again.json()["ids"] == first.json()["ids"]


def test_bulk_create_is_all_or_nothing(manager: httpx.Client, project: dict[str, Any]) -> None:
    key = uuid.uuid4().hex
    items = [tnm(project["id"], client_key=f"{key}/0"), tnm(project["id"], value="t99", client_key=f"{key}/1")]
    response = manager.post("/annotations/bulk", json={"items": items})
    assert response.status_code == 422
    assert response.json()["detail"].startswith("items[1]:")
    assert manager.get("/annotations", params={"project_id": project["id"], "limit": 500}).json()["items"] == []


def test_only_service_clients_sign_as_a_model(
    manager: httpx.Client, project: dict[str, Any], annotations_url: str, issuer: Issuer
) -> None:
    refused = manager.post("/annotations", json=tnm(project["id"], author="nnr@3", status="proposed"))
    assert refused.status_code == 403
    grant = httpx.post(
        issuer.url + "/token",
        data={"grant_type": "client_credentials", "scope": "annotations.read annotations.write"},
        auth=("oncostruct-reconstruction", "test-client-secret"),
    ).json()
    manager.put(f"/projects/{project['id']}/members/oncostruct-reconstruction", json={"role": "annotator"})
    with httpx.Client(base_url=annotations_url + V1, headers=bearer(grant["access_token"])) as model:
        created = model.post("/annotations", json=tnm(project["id"], author="nnr@3", status="proposed"))
    assert created.status_code == 201
    assert created.json()["author"] == "nnr@3"


def test_list_filters_and_pages(manager: httpx.Client, project: dict[str, Any]) -> None:
    for value in ["t1", "t2", "t3"]:
        manager.post("/annotations", json=tnm(project["id"], value=value))
    manager.post("/annotations", json=tnm(project["id"], value="t4", status="proposed"))
    seen, cursor = [], None
    while True:
        params: dict[str, Any] = {"project_id": project["id"], "status": "draft", "limit": 2}
        page = manager.get("/annotations", params={**params, **({"cursor": cursor} if cursor else {})}).json()
        seen += [item["value"] for item in page["items"]]
        cursor = page["next"]
        if cursor is None:
            break
    assert seen == ["t1", "t2", "t3"]
    proposed = manager.get("/annotations", params={"project_id": project["id"], "status": "proposed"}).json()
    assert [item["value"] for item in proposed["items"]] == ["t4"]
    assert manager.get("/annotations", params={"cursor": "nonsense"}).status_code == 400


def test_comments(manager: httpx.Client, project: dict[str, Any]) -> None:
    annotation = manager.post("/annotations", json=tnm(project["id"])).json()
    posted = manager.post(f"/annotations/{annotation['id']}/comments", json={"text": "Check the N stage too."})
    assert posted.status_code == 201
    comments = manager.get(f"/annotations/{annotation['id']}/comments").json()
    assert [(c["author"], c["text"]) for c in comments] == [("dr-manager", "Check the N stage too.")]


def test_members_and_last_manager(manager: httpx.Client, project: dict[str, Any]) -> None:
    path = f"/projects/{project['id']}/members"
    assert manager.put(f"{path}/rev-1", json={"role": "reviewer"}).json() == {"subject": "rev-1", "role": "reviewer"}
    assert {m["subject"]: m["role"] for m in manager.get(path).json()} == {"dr-manager": "manager", "rev-1": "reviewer"}
    assert manager.put(f"{path}/dr-manager", json={"role": "annotator"}).status_code == 409
    assert manager.delete(f"{path}/dr-manager").status_code == 409
    assert manager.delete(f"{path}/rev-1").status_code == 204
