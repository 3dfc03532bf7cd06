"""PostgreSQL access: the async engine, request sessions and Alembic migrations.

Each service owns one PostgreSQL schema. Its connections put that schema first
on the ``search_path``, so models and migrations name tables without a schema
and the same code runs whatever schema an operator configures.
"""

from __future__ import annotations

import asyncio
import json
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import asyncpg
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from fastapi import Depends, Request
from sqlalchemy import Connection, Executable, Result, make_url, text
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
                "plan_cache_mode": settings.db_plan_cache_mode,
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
        self._driver_pool: asyncpg.Pool | None = None
        self._driver_lock = asyncio.Lock()
        self.read_sessionmaker = async_sessionmaker(self.read_engine, expire_on_commit=False)

    async def ping(self) -> None:
        """Run ``SELECT 1``; raises if the database does not answer."""
        async with self.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    async def migrate(self, migrations_dir: Path, revision: str = "head") -> None:
        """Apply migrations up to ``revision`` (see :func:`upgrade`)."""
        await upgrade(self.engine, migrations_dir, self.settings.schema_name, revision)

    async def driver_pool(self) -> asyncpg.Pool:
        """A plain asyncpg pool on the same database and schema, opened on first use.

        For the few statements hot enough that SQLAlchemy's connection checkout shows in
        profiles (a FHIR read by id); JSON columns decode to Python objects as through the engine.
        Only single autocommit statements may run on it (connections are not reset on release).
        """
        if self._driver_pool is None:
            async with self._driver_lock:
                if self._driver_pool is None:
                    settings = self.settings
                    url = make_url(settings.database_url.get_secret_value()).set(drivername="postgresql")
                    self._driver_pool = await asyncpg.create_pool(
                        url.render_as_string(hide_password=False),
                        min_size=1,
                        max_size=settings.db_pool_size,
                        timeout=settings.db_connect_timeout_s,
                        max_inactive_connection_lifetime=settings.db_pool_recycle_s,
                        server_settings={
                            "search_path": f'"{settings.schema_name}", public',
                            "application_name": f"oncostruct-{settings.service_name}",
                        },
                        init=_driver_codecs,
                        reset=_keep_state,
                    )
        return self._driver_pool

    async def dispose(self) -> None:
        """Close every pooled connection."""
        if self._driver_pool is not None:
            await self._driver_pool.close()
            self._driver_pool = None
        await self.engine.dispose()


async def _keep_state(connection: asyncpg.Connection) -> None:
    """No per-release reset round trip (``RESET ALL``, ``UNLISTEN *`` …): the pool runs single
    autocommit statements that leave no session state behind."""


async def _driver_codecs(connection: asyncpg.Connection) -> None:
    for kind in ("json", "jsonb"):
        await connection.set_type_codec(kind, encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


class LazyConnection:
    """A request's connection, checked out of the engine's pool only when a statement needs it.

    Offers what request code uses of :class:`AsyncConnection` (``execute``, ``commit``,
    ``rollback``, ``begin_nested``, the raw driver connection); a request that never runs
    SQL through it (a read answered on :meth:`Database.driver_pool`) never checks one out.
    """

    def __init__(self, database: Database, *, autocommit: bool) -> None:
        self.database = database
        self.autocommit = autocommit
        self._connection: AsyncConnection | None = None

    @property
    def started(self) -> bool:
        """Whether a connection was checked out (a transaction may be open on it)."""
        return self._connection is not None

    async def connection(self) -> AsyncConnection:
        """The checked-out connection (checked out now if needed)."""
        if self._connection is None:
            engine = self.database.read_engine if self.autocommit else self.database.engine
            self._connection = await engine.connect()
        return self._connection

    async def execute(self, statement: Executable, parameters: Any = None) -> Result[*tuple[Any, ...]]:
        """Run ``statement`` (as :meth:`AsyncConnection.execute`)."""
        return await (await self.connection()).execute(statement, parameters)

    async def commit(self) -> None:
        """Commit the open transaction, if any."""
        if self._connection is not None:
            await self._connection.commit()

    async def rollback(self) -> None:
        """Roll back the open transaction, if any."""
        if self._connection is not None:
            await self._connection.rollback()

    @asynccontextmanager
    async def begin_nested(self) -> AsyncIterator[None]:
        """A savepoint for the block (rolled back if it raises)."""
        async with (await self.connection()).begin_nested():
            yield

    async def close(self) -> None:
        """Return the connection to the pool (rolling back what was not committed)."""
        if self._connection is not None:
            connection, self._connection = self._connection, None
            await connection.close()


SAFE_METHODS = frozenset({"GET", "HEAD"})


def request_session(request: Request) -> AsyncSession:
    """A new session for ``request`` (the caller closes it, e.g. with ``async with``).

    Safe methods (RFC 9110 §9.2.1: GET and HEAD never change state) get an autocommit
    session; every other method a transactional one that the route commits.
    """
    database: Database = request.app.state.db
    factory = database.read_sessionmaker if request.method in SAFE_METHODS else database.sessionmaker
    return factory()


@asynccontextmanager
async def request_connection(request: Request) -> AsyncIterator[LazyConnection]:
    """A :class:`LazyConnection` for ``request``, with :func:`request_session`'s transaction rules.

    For services whose request paths run SQL only (no ORM): a Core connection skips the ORM
    session's unit-of-work bookkeeping, which showed in profiles of the clinical service's reads.
    """
    database: Database = request.app.state.db
    connection = LazyConnection(database, autocommit=request.method in SAFE_METHODS)
    try:
        yield connection
    finally:
        await connection.close()


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
