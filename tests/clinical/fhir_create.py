"""Creating FHIR resources in a test's setup (the interactions themselves are tested elsewhere)."""

from __future__ import annotations

from typing import Any

import httpx


def create(client: httpx.Client, resource: dict[str, Any]) -> str:
    """POST ``resource`` to its type and return the server-assigned id (asserting 201)."""
    response = client.post(
        f"/{resource['resourceType']}", json=resource, headers={"Content-Type": "application/fhir+json"}
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])
