"""Annotation projects over the REST API: create, read, page, and every error as problem+json."""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests.support import Issuer, bearer

BASE = "/annotations/v1/projects"


@pytest.fixture
def api(annotations_url: str, issuer: Issuer) -> httpx.Client:
    return httpx.Client(
        base_url=annotations_url,
        headers=bearer(issuer.token("annotations.read", "annotations.write", subject="dr-sato")),
        timeout=30,
    )


def test_create_then_read_a_project(api: httpx.Client, annotations_url: str) -> None:
    name = f"Lung CT staging {uuid.uuid4().hex[:6]}"
    created = api.post(BASE, json={"name": name, "description": "Stage I–IV NSCLC"})
    assert created.status_code == 201
    project = created.json()
    assert project["name"] == name
    assert project["created_by"] == "dr-sato"
    assert created.headers["location"] == f"{annotations_url}{BASE}/{project['id']}"
    assert api.get(f"{BASE}/{project['id']}").json() == project


def test_duplicate_name_is_a_conflict(api: httpx.Client) -> None:
    name = f"dup-{uuid.uuid4().hex}"
    assert api.post(BASE, json={"name": name}).status_code == 201
    response = api.post(BASE, json={"name": name})
    assert response.status_code == 409
    assert response.headers["content-type"] == "application/problem+json"
    assert name in response.json()["detail"]


def test_pages_follow_the_cursor(api: httpx.Client) -> None:
    tag = uuid.uuid4().hex[:8]
    names = sorted(f"page-{tag}-{i}" for i in range(5))
    for name in names:
        api.post(BASE, json={"name": name})
    seen: list[str] = []
    cursor = None
    while True:
        page = api.get(BASE, params={"limit": 2, **({"cursor": cursor} if cursor else {})}).json()
        seen += [item["name"] for item in page["items"]]
        cursor = page["next"]
        if cursor is None:
            break
    assert [name for name in seen if name.startswith(f"page-{tag}")] == names
    assert seen == sorted(seen)


@pytest.mark.parametrize(
    ("body", "location"),
    [
        ({}, "body.name"),
        ({"name": ""}, "body.name"),
        ({"name": "x" * 201}, "body.name"),
        ({"name": "ok", "colour": "red"}, "body.colour"),
    ],
)
def test_invalid_project_is_unprocessable(api: httpx.Client, body: dict[str, object], location: str) -> None:
    response = api.post(BASE, json=body)
    assert response.status_code == 422
    problem = response.json()
    assert problem["status"] == 422
    assert location in [error["location"] for error in problem["errors"]]


def test_unknown_project_is_not_found(api: httpx.Client) -> None:
    response = api.get(f"{BASE}/{uuid.uuid4()}")
    assert response.status_code == 404
    assert response.json()["title"] == "Not Found"


@pytest.mark.parametrize(("params", "status"), [({"cursor": "%%%"}, 400), ({"limit": "0"}, 422), ({"limit": "x"}, 422)])
def test_bad_paging_parameters(api: httpx.Client, params: dict[str, str], status: int) -> None:
    response = api.get(BASE, params=params)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"


def test_read_scope_cannot_write(annotations_url: str, issuer: Issuer) -> None:
    response = httpx.post(
        annotations_url + BASE, json={"name": "nope"}, headers=bearer(issuer.token("annotations.read"))
    )
    assert response.status_code == 403


def test_a_value_postgresql_cannot_store_is_a_problem_not_a_500(api: httpx.Client) -> None:
    """A NUL in a string passes the request model but no PostgreSQL text can hold it: 400, nothing stored."""
    name = f"nul-{uuid.uuid4().hex[:8]}"
    response = api.post(BASE, json={"name": f"{name}\u0000"})
    assert response.status_code == 400
    problem = response.json()
    assert problem["status"] == 400
    assert "cannot be stored" in problem["detail"]
    listed = api.get(BASE, params={"limit": 200}).json()["items"]
    assert not [item for item in listed if item["name"].startswith(name)]
