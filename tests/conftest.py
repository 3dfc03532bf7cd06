"""Session fixtures: one real PostgreSQL, the development issuer, and each service live on loopback."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from oncostruct_shared.devissuer import IssuerSettings, create_app, load_or_create_key
from oncostruct_shared.settings import ServiceSettings
from tests.support import Issuer, LiveServer, PostgresServer, free_port, postgres_server

SERVICE_NAMES = ("clinical", "imaging", "annotations", "reconstruction")
SERVICE_CLIENT_SECRET = "test-client-secret"


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server for the whole session (local cluster or testcontainer)."""
    with postgres_server() as server:
        yield server


@pytest.fixture(scope="session")
def issuer() -> Iterator[Issuer]:
    """The development issuer, live, with a client for each service."""
    folder = Path(tempfile.mkdtemp(prefix="oncostruct-test-issuer-"))
    port = free_port()
    settings = IssuerSettings(
        url=f"http://127.0.0.1:{port}",
        key_file=folder / "key.pem",
        clients={f"oncostruct-{name}": SERVICE_CLIENT_SECRET for name in SERVICE_NAMES},
    )
    with LiveServer(create_app(settings), port=port):
        yield Issuer(settings.url, load_or_create_key(settings.key_file))


def _settings_class(name: str) -> type[ServiceSettings]:
    module = __import__(f"oncostruct_{name}.config", fromlist=["Settings"])
    settings_class: type[ServiceSettings] = module.Settings
    return settings_class


@pytest.fixture(scope="session")
def service_settings(
    postgres: PostgresServer, issuer: Issuer, tmp_path_factory: pytest.TempPathFactory
) -> Callable[..., ServiceSettings]:
    """Build a service's settings pointing at the session database and issuer; overrides as keywords."""

    def build(name: str, database: str | None = None, **overrides: Any) -> ServiceSettings:
        values: dict[str, Any] = {
            "database_url": postgres.url(database or f"test_{name}"),
            "auth_issuer": issuer.url,
            "auth_client_secret": SERVICE_CLIENT_SECRET,
        }
        if name in ("imaging", "annotations", "reconstruction"):
            values["storage_path"] = tmp_path_factory.mktemp(f"{name}-storage")
        values.update(overrides)
        return _settings_class(name)(**values)

    return build


def _start_service(
    name: str, postgres: PostgresServer, settings: Callable[..., ServiceSettings], **overrides: Any
) -> Iterator[str]:
    postgres.create_database(f"test_{name}")
    port = free_port()
    module = __import__(f"oncostruct_{name}.app", fromlist=["create_app"])
    prefix = _settings_class(name).api_prefix
    app = module.create_app(settings(name, base_url=f"http://127.0.0.1:{port}{prefix}", **overrides))
    with LiveServer(app, port=port) as server:
        yield server.url


@pytest.fixture(scope="session")
def clinical_url(postgres: PostgresServer, service_settings: Callable[..., ServiceSettings]) -> Iterator[str]:
    """Root URL of a live clinical service (its FHIR base is ``<url>/fhir``)."""
    yield from _start_service("clinical", postgres, service_settings)


@pytest.fixture(scope="session")
def imaging_url(
    postgres: PostgresServer, service_settings: Callable[..., ServiceSettings], clinical_url: str
) -> Iterator[str]:
    """Root URL of a live imaging service (DICOMweb base ``<url>/dicomweb``), linking studies to live clinical."""
    yield from _start_service(
        "imaging", postgres, service_settings, clinical_url=f"{clinical_url}/fhir", series_quiet_s=1.0
    )


@pytest.fixture(scope="session")
def annotations_url(
    postgres: PostgresServer, service_settings: Callable[..., ServiceSettings], imaging_url: str, clinical_url: str
) -> Iterator[str]:
    """Root URL of a live annotation service (on the live imaging and clinical services)."""
    yield from _start_service(
        "annotations",
        postgres,
        service_settings,
        imaging_url=f"{imaging_url}/dicomweb",
        clinical_url=f"{clinical_url}/fhir",
    )


@pytest.fixture(scope="session")
def reconstruction_url(postgres: PostgresServer, service_settings: Callable[..., ServiceSettings]) -> Iterator[str]:
    """Root URL of a live reconstruction service."""
    yield from _start_service("reconstruction", postgres, service_settings)


@pytest.fixture(scope="session")
def service_urls(clinical_url: str, imaging_url: str, annotations_url: str, reconstruction_url: str) -> dict[str, str]:
    """Root URLs of all four live services, by name."""
    return {
        "clinical": clinical_url,
        "imaging": imaging_url,
        "annotations": annotations_url,
        "reconstruction": reconstruction_url,
    }


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    """A plain HTTP client."""
    with httpx.Client(timeout=30) as client:
        yield client
