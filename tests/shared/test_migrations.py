"""Alembic migrations of every service against real PostgreSQL."""

from __future__ import annotations

import asyncio
import importlib
from pathlib import Path
from typing import Any

import pytest

from oncostruct_shared.db import Database, current_revision, head_revision
from tests.support import PostgresServer

SERVICES = ["clinical", "imaging", "annotations", "reconstruction"]


def _model_tables(service: str) -> set[str]:
    """The tables a service's ORM models expect (its migrations must create exactly these)."""
    base = importlib.import_module(f"oncostruct_{service}.models").Base
    return {table.name for table in base.metadata.sorted_tables}


TABLES = {service: _model_tables(service) for service in SERVICES}


def _migrations_dir(service: str) -> Path:
    return Path(importlib.import_module(f"oncostruct_{service}").__file__ or "").parent / "migrations"


def _tables(postgres: PostgresServer, database: str, schema: str) -> set[str]:
    rows = postgres.fetch(database, "SELECT table_name FROM information_schema.tables WHERE table_schema = $1", schema)
    return {row["table_name"] for row in rows}


async def _migrate(settings: Any, service: str) -> str | None:
    database = Database(settings)
    try:
        await database.migrate(_migrations_dir(service))
        return await current_revision(database.engine, settings.schema_name)
    finally:
        await database.dispose()


@pytest.mark.parametrize("service", SERVICES)
def test_migrations_create_tables_in_the_service_schema(
    service: str, postgres: PostgresServer, service_settings: Any
) -> None:
    database = f"migrate_{service}"
    postgres.create_database(database)
    settings = service_settings(service, database=database)
    revision = asyncio.run(_migrate(settings, service))
    assert revision == head_revision(_migrations_dir(service)) is not None
    assert _tables(postgres, database, service) == TABLES[service] | {"alembic_version"}
    assert _tables(postgres, database, "public") == set()


@pytest.mark.parametrize("service", SERVICES)
def test_migrations_run_twice_change_nothing(service: str, postgres: PostgresServer, service_settings: Any) -> None:
    database = f"migrate_twice_{service}"
    postgres.create_database(database)
    settings = service_settings(service, database=database)
    first = asyncio.run(_migrate(settings, service))
    second = asyncio.run(_migrate(settings, service))
    assert first == second
    assert _tables(postgres, database, service) == TABLES[service] | {"alembic_version"}


def test_concurrent_replicas_migrate_once(postgres: PostgresServer, service_settings: Any) -> None:
    database = "migrate_concurrent"
    postgres.create_database(database)
    settings = service_settings("annotations", database=database)

    async def four_replicas() -> list[str | None]:
        return await asyncio.gather(*(_migrate(settings, "annotations") for _ in range(4)))

    revisions = asyncio.run(four_replicas())
    assert len(set(revisions)) == 1
    assert revisions[0] is not None
    rows = postgres.fetch(database, "SELECT version_num FROM annotations.alembic_version")
    assert [row["version_num"] for row in rows] == revisions[:1]


def test_configured_schema_name_is_used(postgres: PostgresServer, service_settings: Any) -> None:
    database = "migrate_custom_schema"
    postgres.create_database(database)
    settings = service_settings("clinical", database=database, db_schema="fhir_store")
    asyncio.run(_migrate(settings, "clinical"))
    assert _tables(postgres, database, "fhir_store") == TABLES["clinical"] | {"alembic_version"}
    assert _tables(postgres, database, "clinical") == set()


def test_services_share_one_database_without_collisions(postgres: PostgresServer, service_settings: Any) -> None:
    database = "migrate_shared_db"
    postgres.create_database(database)
    for service in SERVICES:
        asyncio.run(_migrate(service_settings(service, database=database), service))
    for service in SERVICES:
        assert _tables(postgres, database, service) == TABLES[service] | {"alembic_version"}


def test_app_start_applies_migrations_unless_disabled(postgres: PostgresServer, service_settings: Any) -> None:
    from oncostruct_reconstruction.app import create_app
    from tests.support import LiveServer

    database = "migrate_on_start"
    postgres.create_database(database)
    with LiveServer(create_app(service_settings("reconstruction", database=database, run_migrations=False))):
        assert _tables(postgres, database, "reconstruction") == set()
    with LiveServer(create_app(service_settings("reconstruction", database=database))):
        assert "job" in _tables(postgres, database, "reconstruction")


def test_clinical_composite_indexes_are_built_for_resources_stored_before_them(
    postgres: PostgresServer, service_settings: Any
) -> None:
    database = "migrate_clinical_composite"
    postgres.create_database(database)
    settings = service_settings("clinical", database=database)

    async def migrate_to(revision: str) -> None:
        db = Database(settings)
        try:
            await db.migrate(_migrations_dir("clinical"), revision)
        finally:
            await db.dispose()

    asyncio.run(migrate_to("0004"))
    observation = (
        '{"resourceType": "Observation", "id": "o1", "status": "final", '
        '"code": {"coding": [{"system": "http://loinc.org", "code": "21905-5"}]}, '
        '"valueCodeableConcept": {"coding": [{"system": "urn:x", "code": "cT2"}]}}'
    )
    postgres.fetch(
        database,
        "INSERT INTO clinical.resource (resource_type, id, version_id, last_updated, deleted, content) "
        "VALUES ('Observation', 'o1', 1, now(), false, $1::jsonb), ('Observation', 'gone', 2, now(), true, NULL)",
        observation,
    )
    asyncio.run(migrate_to("head"))
    rows = postgres.fetch(
        database,
        "SELECT resource_id, part, system, code FROM clinical.sp_composite "
        "WHERE param = 'code-value-concept' ORDER BY part",
    )
    assert [tuple(row) for row in rows] == [("o1", 0, "http://loinc.org", "21905-5"), ("o1", 1, "urn:x", "cT2")]
