"""PostgreSQL access: the async engine, request sessions and Alembic migrations.

Each service owns one PostgreSQL schema. Its connections put that schema first
on the ``search_path``, so models and migrations name tables without a schema
and the same code runs whatever schema an operator configures.
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from fastapi import Depends, Request
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from .settings import ServiceSettings


def create_engine(settings: ServiceSettings) -> AsyncEngine:
    """Create the service's async engine; nothing connects until first use."""
    return create_async_engine(
        settings.database_url.get_secret_value(),
        pool_size=settings.db_pool_size,
        max_overflow=settings.db_max_overflow,
        # A ping per checkout costs a round trip on every request; dead connections are
        # invalidated on first use instead, and recycled before servers or proxies drop them.
        pool_pre_ping=settings.db_pool_pre_ping,
        pool_recycle=settings.db_pool_recycle_s,
        connect_args={
            "timeout": settings.db_connect_timeout_s,
            "server_settings": {
                "search_path": f'"{settings.schema_name}", public',
                "application_name": f"oncostruct-{settings.service_name}",
            },
        },
    )


class Database:
    """The engine and session factory of one service."""

    def __init__(self, settings: ServiceSettings) -> None:
        self.settings = settings
        self.engine = create_engine(settings)
        self.sessionmaker = async_sessionmaker(self.engine, expire_on_commit=False)
        # Reads run without BEGIN/ROLLBACK: under PostgreSQL's READ COMMITTED each statement
        # sees its own snapshot inside a transaction too, so autocommit changes nothing but the cost.
        self.read_engine = self.engine.execution_options(isolation_level="AUTOCOMMIT")
        self.read_sessionmaker = async_sessionmaker(self.read_engine, expire_on_commit=False)

    async def ping(self) -> None:
        """Run ``SELECT 1``; raises if the database does not answer."""
        async with self.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    async def migrate(self, migrations_dir: Path, revision: str = "head") -> None:
        """Apply migrations up to ``revision`` (see :func:`upgrade`)."""
        await upgrade(self.engine, migrations_dir, self.settings.schema_name, revision)

    async def dispose(self) -> None:
        """Close every pooled connection."""
        await self.engine.dispose()


SAFE_METHODS = frozenset({"GET", "HEAD"})


def request_session(request: Request) -> AsyncSession:
    """A new session for ``request`` (the caller closes it, e.g. with ``async with``).

    Safe methods (RFC 9110 §9.2.1: GET and HEAD never change state) get an autocommit
    session; every other method a transactional one that the route commits.
    """
    database: Database = request.app.state.db
    factory = database.read_sessionmaker if request.method in SAFE_METHODS else database.sessionmaker
    return factory()


def request_connection(request: Request) -> AsyncConnection:
    """A Core connection for ``request`` (use ``async with``), with :func:`request_session`'s transaction rules.

    For services whose request paths run SQL only (no ORM): a connection skips the ORM session's
    unit-of-work bookkeeping, which showed in profiles of the clinical service's reads.
    """
    database: Database = request.app.state.db
    if request.method in SAFE_METHODS:
        return database.read_engine.connect()
    return database.engine.connect()


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """FastAPI dependency: one session per request (see :func:`request_session`), closed afterwards."""
    async with request_session(request) as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session)]


# --- migrations --------------------------------------------------------------


def alembic_config(migrations_dir: Path, schema: str) -> Config:
    """An Alembic config for a service's migrations folder, without an ini file."""
    config = Config()
    config.set_main_option("script_location", str(migrations_dir))
    config.attributes["schema"] = schema
    return config


def _lock_key(schema: str) -> int:
    # Stable across processes and machines (hash() is salted per process).
    return zlib.crc32(f"oncostruct-migrations:{schema}".encode()) - 2**31


def _upgrade_sync(connection: Connection, config: Config, revision: str) -> None:
    config.attributes["connection"] = connection
    command.upgrade(config, revision)


async def upgrade(engine: AsyncEngine, migrations_dir: Path, schema: str, revision: str = "head") -> None:
    """Create ``schema`` if needed and apply migrations, all in one transaction.

    A transaction-scoped advisory lock serialises replicas that start at once,
    so exactly one of them migrates and the others find the work done.
    """
    config = alembic_config(migrations_dir, schema)
    async with engine.begin() as connection:
        await connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _lock_key(schema)})
        await connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
        await connection.run_sync(_upgrade_sync, config, revision)


async def current_revision(engine: AsyncEngine, schema: str) -> str | None:
    """The revision a schema is at, or None if never migrated."""

    def read(connection: Connection) -> str | None:
        context = MigrationContext.configure(connection, opts={"version_table_schema": schema})
        return context.get_current_revision()

    async with engine.connect() as connection:
        return await connection.run_sync(read)


def head_revision(migrations_dir: Path) -> str | None:
    """The newest revision in a migrations folder."""
    return ScriptDirectory.from_config(alembic_config(migrations_dir, "unused")).get_current_head()


def run_migrations_in_env() -> None:
    """Body of every service's ``migrations/env.py``.

    Runs online only, on the connection :func:`upgrade` hands over; offline
    SQL generation is not supported because migrations may need data.
    """
    from alembic import context

    connection: Any = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("run migrations through oncostruct_shared.db.upgrade (or `python -m <service> migrate`)")
    schema = context.config.attributes["schema"]
    context.configure(connection=connection, version_table_schema=schema, transactional_ddl=True)
    with context.begin_transaction():
        context.run_migrations()
