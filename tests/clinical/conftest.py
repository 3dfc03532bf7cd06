"""Fixtures of the clinical tests: FHIR clients on the live service, and the mCODE examples loaded once."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fhirpy import SyncFHIRClient

from tests.npm_packages import ensure_package
from tests.support import Issuer, bearer


@pytest.fixture(scope="session")
def fhir_base(clinical_url: str) -> str:
    """The FHIR base URL of the live clinical service."""
    return f"{clinical_url}/fhir"


@pytest.fixture(scope="session")
def all_scopes_token(issuer: Issuer) -> str:
    """A token with every SMART permission on every type."""
    return issuer.token("system/*.cruds")


@pytest.fixture
def fhir(fhir_base: str, all_scopes_token: str) -> SyncFHIRClient:
    """fhirpy with full access."""
    return SyncFHIRClient(fhir_base, authorization=f"Bearer {all_scopes_token}")


@pytest.fixture(scope="session")
def api(fhir_base: str, all_scopes_token: str) -> Iterator[httpx.Client]:
    """A raw HTTP client on the FHIR base with full access, sending FHIR JSON."""
    headers = {**bearer(all_scopes_token), "content-type": "application/fhir+json"}
    with httpx.Client(base_url=fhir_base, headers=headers, timeout=60) as client:
        yield client


@pytest.fixture(scope="session")
def mcode_examples() -> list[dict[str, Any]]:
    """The 179 example instances of mCODE 4.0.0 (fetched by ``python -m tests.npm_packages``)."""
    folder: Path = ensure_package("mcode") / "example"
    return [json.loads(path.read_text()) for path in sorted(folder.glob("*.json"))]


@pytest.fixture(scope="session")
def mcode_loaded(api: httpx.Client, mcode_examples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every mCODE example stored with its own id, in one transaction of PUTs."""
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": f"urn:uuid:mcode-{i}",
                "resource": example,
                "request": {"method": "PUT", "url": f"{example['resourceType']}/{example['id']}"},
            }
            for i, example in enumerate(mcode_examples)
        ],
    }
    response = api.post("/", json=bundle, headers={"Prefer": "return=minimal"})
    assert response.status_code == 200, response.text
    return mcode_examples
