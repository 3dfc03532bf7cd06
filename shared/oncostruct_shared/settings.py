"""Settings base shared by every service.

Each service subclasses :class:`ServiceSettings` with its own environment
prefix (``ONCOSTRUCT_CLINICAL_`` …) and defaults. Every field is documented:
the README's configuration table is generated from these descriptions.
"""

from __future__ import annotations

import re
from typing import ClassVar, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class ServiceSettings(BaseSettings):
    """Settings every OncoStruct service has; read from ``<PREFIX><NAME>`` env vars."""

    model_config = SettingsConfigDict(env_prefix="ONCOSTRUCT_", extra="ignore", frozen=True)

    #: Service name (used in logs, metrics, the default schema and client id).
    service_name: ClassVar[str] = "service"
    #: Path prefix under which the service's API lives (``/fhir`` …).
    api_prefix: ClassVar[str] = ""

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Lowest level of log records written (JSON lines on stderr)."
    )
    database_url: SecretStr = Field(
        SecretStr("postgresql+asyncpg://oncostruct@127.0.0.1:5432/oncostruct"),
        description="SQLAlchemy URL of the PostgreSQL database (asyncpg driver).",
    )
    db_schema: str = Field("", description="PostgreSQL schema holding this service's tables (default: service name).")
    db_pool_size: int = Field(20, ge=1, le=100, description="Connections kept open in the pool.")
    db_max_overflow: int = Field(10, ge=0, le=100, description="Extra connections allowed above the pool size.")
    db_pool_pre_ping: bool = Field(False, description="Test each pooled connection before use (one round trip).")
    db_pool_recycle_s: int = Field(1800, ge=60, description="Replace pooled connections older than this.")
    db_plan_cache_mode: Literal["auto", "force_custom_plan", "force_generic_plan"] = Field(
        "force_custom_plan",
        description="PostgreSQL `plan_cache_mode` of the engine's connections. Their statements are prepared and "
        "reused; a generic plan ignores the values, and for searches whose selectivity lives in the values (a "
        "patient's observations among a million) PostgreSQL's switch to it after five runs made them 100× slower.",
    )
    db_connect_timeout_s: float = Field(5.0, gt=0, description="Timeout for opening a database connection.")
    run_migrations: bool = Field(True, description="Apply pending Alembic migrations when the service starts.")

    auth_issuer: str = Field("http://127.0.0.1:8090", description="OIDC issuer whose tokens are accepted (`iss`).")
    auth_jwks_url: str = Field("", description="JWKS URL of the issuer (default: `<issuer>/.well-known/jwks.json`).")
    auth_audience: str = Field("oncostruct", description="Required `aud` claim of bearer tokens.")
    auth_algorithms: list[str] = Field(
        default_factory=lambda: ["RS256", "ES256"], description="JWS algorithms accepted for bearer tokens."
    )
    auth_leeway_s: int = Field(30, ge=0, le=300, description="Clock skew tolerated on `exp`/`nbf`/`iat`.")
    auth_jwks_cache_s: int = Field(300, ge=0, description="How long fetched signing keys are cached.")
    auth_token_url: str = Field("", description="Token endpoint for client credentials (default: `<issuer>/token`).")
    auth_client_id: str = Field(
        "", description="Client id for service-to-service calls (default: `oncostruct-<service>`)."
    )
    auth_client_secret: SecretStr = Field(SecretStr(""), description="Client secret for service-to-service calls.")

    max_body_bytes: int = Field(10 * 1024 * 1024, ge=1024, description="Largest request body accepted (413 above).")
    http_timeout_s: float = Field(10.0, gt=0, description="Read/write timeout of calls to other services.")
    http_connect_timeout_s: float = Field(3.0, gt=0, description="Connect timeout of calls to other services.")
    http_retries: int = Field(3, ge=0, le=10, description="Retries of idempotent upstream calls on 408/429/503/504.")
    http_backoff_s: float = Field(0.2, ge=0, description="First retry delay; doubles each retry (with jitter).")
    workers: int = Field(
        1,
        ge=1,
        le=64,
        description="Server processes sharing the port (`serve`); in clusters keep 1 and scale replicas instead.",
    )
    readiness_timeout_s: float = Field(2.0, gt=0, description="Time budget of each `/readyz` check.")
    cors_origins: list[str] = Field(
        default_factory=list,
        description="Origins (`https://viewer.example.org`) whose browser apps — a viewer such as OHIF served "
        "from another host — may call this API (CORS; tokens still required). Empty: none.",
    )

    @field_validator("db_schema")
    @classmethod
    def _schema_is_identifier(cls, value: str) -> str:
        if value and not _IDENTIFIER.match(value):
            raise ValueError("must be a lower-case SQL identifier: [a-z_][a-z0-9_]*, at most 63 characters")
        return value

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        origins = []
        for origin in value:
            if origin != "*" and not re.fullmatch(r"https?://[^/\s]+", origin, re.IGNORECASE):
                raise ValueError(f"{origin!r} is not an origin (scheme://host[:port], no path)")
            # As browsers send it: lower case, no default port.
            origins.append(re.sub(r"^(http://[^/]+):80$|^(https://[^/]+):443$", r"\1\2", origin.lower()))
        return origins

    @field_validator("auth_issuer", "auth_jwks_url", "auth_token_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.rstrip("/")

    # Derived values: computed, never stored twice.
    @property
    def schema_name(self) -> str:
        """The PostgreSQL schema of this service."""
        return self.db_schema or self.service_name

    @property
    def jwks_url(self) -> str:
        """The JWKS URL to fetch signing keys from."""
        return self.auth_jwks_url or f"{self.auth_issuer}/.well-known/jwks.json"

    @property
    def token_url(self) -> str:
        """The token endpoint for client-credentials grants."""
        return self.auth_token_url or f"{self.auth_issuer}/token"

    @property
    def client_id(self) -> str:
        """The OAuth2 client id this service uses when it calls others."""
        return self.auth_client_id or f"oncostruct-{self.service_name}"


class UpstreamSource(BaseModel):
    """An upstream server data can be pulled from (configured by the operator, never by API callers)."""

    url: str = Field(description="Base URL of the upstream API (DICOMweb or FHIR).")
    bearer_token: SecretStr | None = Field(None, description="Token sent as `Authorization: Bearer`.")
    timeout_s: float = Field(60.0, gt=0, description="Timeout of each request to the source.")
