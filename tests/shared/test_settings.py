"""Settings: env prefixes, documented defaults, derived values, validation."""

from __future__ import annotations

import importlib

import pytest
from pydantic import ValidationError

from oncostruct_shared.settings import ServiceSettings

SERVICES = {
    "clinical": "/fhir",
    "imaging": "/dicomweb",
    "annotations": "/annotations/v1",
    "reconstruction": "/reconstruction/v1",
}


def settings_class(service: str) -> type[ServiceSettings]:
    cls: type[ServiceSettings] = importlib.import_module(f"oncostruct_{service}.config").Settings
    return cls


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith("ONCOSTRUCT_"):
            monkeypatch.delenv(name)


@pytest.mark.parametrize(("service", "prefix"), SERVICES.items())
def test_defaults_are_the_local_suite(service: str, prefix: str) -> None:
    settings = settings_class(service)()
    assert settings.api_prefix == prefix
    assert settings.schema_name == service
    assert settings.jwks_url == "http://127.0.0.1:8090/.well-known/jwks.json"
    assert settings.token_url == "http://127.0.0.1:8090/token"
    assert settings.client_id == f"oncostruct-{service}"
    assert settings.auth_audience == "oncostruct"
    assert settings.run_migrations is True


@pytest.mark.parametrize("service", SERVICES)
def test_each_service_reads_only_its_own_prefix(service: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(f"ONCOSTRUCT_{service.upper()}_DB_SCHEMA", "mine")
    monkeypatch.setenv(f"ONCOSTRUCT_{service.upper()}_AUTH_ISSUER", "https://login.example/realms/x/")
    monkeypatch.setenv(f"ONCOSTRUCT_{service.upper()}_RUN_MIGRATIONS", "false")
    settings = settings_class(service)()
    assert settings.schema_name == "mine"
    assert settings.auth_issuer == "https://login.example/realms/x"  # trailing slash dropped
    assert settings.jwks_url == "https://login.example/realms/x/.well-known/jwks.json"
    assert settings.run_migrations is False
    for other in SERVICES:
        if other != service:
            assert settings_class(other)().schema_name == other


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DB_SCHEMA", "Robert'); DROP TABLE"),
        ("DB_SCHEMA", "UpperCase"),
        ("DB_POOL_SIZE", "0"),
        ("LOG_LEVEL", "CHATTY"),
        ("MAX_BODY_BYTES", "12"),
        ("HTTP_RETRIES", "-1"),
    ],
)
def test_invalid_values_are_refused(variable: str, value: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(f"ONCOSTRUCT_ANNOTATIONS_{variable}", value)
    with pytest.raises(ValidationError):
        settings_class("annotations")()


def test_secrets_are_not_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ONCOSTRUCT_CLINICAL_DATABASE_URL", "postgresql+asyncpg://u:hunter2@db/x")
    monkeypatch.setenv("ONCOSTRUCT_CLINICAL_AUTH_CLIENT_SECRET", "s3cret")
    settings = settings_class("clinical")()
    assert "hunter2" not in repr(settings)
    assert "s3cret" not in repr(settings)
    assert settings.database_url.get_secret_value().endswith("@db/x")


@pytest.mark.parametrize("service", SERVICES)
def test_every_setting_is_documented(service: str) -> None:
    for name, field in settings_class(service).model_fields.items():
        assert field.description, f"{service}: setting {name} has no description"
