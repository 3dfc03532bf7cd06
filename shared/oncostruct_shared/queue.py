"""Durable events and jobs on PostgreSQL, with procrastinate.

One queue schema (default ``oncostruct_jobs``) in the suite's database holds
every service's jobs, so one service can defer a task that another consumes
by name — the imaging service's "series complete" event, for example, is a
job on the ``reconstruction`` queue. Delivery is at least once: a job whose
worker dies is picked up again (procrastinate's heartbeat and stalled-job
recovery), so consumers must be idempotent (key their work on the event's
identity, e.g. series UID + model version).

The worker runs inside the service process by default (``queue_worker``) and
can run alone with ``python -m oncostruct_<service> worker`` in clusters.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Iterable
from typing import Any

import procrastinate
from psycopg import sql
from sqlalchemy.engine import make_url

log = logging.getLogger("oncostruct.queue")
_IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def libpq_conninfo(database_url: str) -> str:
    """The libpq URI (for psycopg) of a SQLAlchemy URL such as ``postgresql+asyncpg://…``."""
    return make_url(database_url).set(drivername="postgresql").render_as_string(hide_password=False)


def create_queue_app(database_url: str, schema: str = "oncostruct_jobs", **worker_defaults: Any) -> procrastinate.App:
    """A procrastinate app whose connections use ``schema`` for the queue's tables.

    Parameters
    ----------
    database_url
        SQLAlchemy URL of the database holding the queue.
    schema
        Schema of procrastinate's tables and functions.
    worker_defaults
        Default worker options (procrastinate ``WorkerOptions``).
    """
    if not _IDENTIFIER.match(schema):
        raise ValueError(f"queue schema {schema!r} must be a lower-case SQL identifier")
    connector = procrastinate.PsycopgConnector(
        conninfo=libpq_conninfo(database_url),
        kwargs={"options": f"-c search_path={schema}"},
        min_size=1,
        max_size=4,
    )
    return procrastinate.App(connector=connector, worker_defaults=worker_defaults or None)  # type: ignore[arg-type]


async def ensure_queue_schema(app: procrastinate.App, schema: str = "oncostruct_jobs") -> bool:
    """Create the queue schema and procrastinate's tables unless present; True if it created them.

    Serialised by an advisory lock so that services starting together apply it once.
    """
    connector: Any = app.connector
    pool = connector.pool
    async with pool.connection() as connection, connection.transaction():
        await connection.execute("SELECT pg_advisory_xact_lock(hashtext('oncostruct-queue-schema'))")
        await connection.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        cursor = await connection.execute("SELECT to_regclass(%s)", (f"{schema}.procrastinate_jobs",))
        row = await cursor.fetchone()
        if row is not None and row[0] is not None:
            return False
        await connection.execute(sql.SQL("SET LOCAL search_path TO {}").format(sql.Identifier(schema)))
        await connection.execute(app.schema_manager.get_schema())
    log.info("queue schema created", extra={"schema": schema})
    return True


@contextlib.asynccontextmanager
async def running_worker(
    app: procrastinate.App, queues: Iterable[str], concurrency: int = 1, polling_interval_s: float = 1.0
) -> AsyncIterator[None]:
    """Run a worker on ``queues`` in the background for the duration of the block.

    New jobs wake the worker at once (LISTEN/NOTIFY); ``polling_interval_s`` bounds how late a
    scheduled job (``schedule_in``) or a retry starts.
    """
    task = asyncio.create_task(
        app.run_worker_async(
            queues=list(queues),
            concurrency=concurrency,
            fetch_job_polling_interval=polling_interval_s,
            install_signal_handlers=False,
            shutdown_graceful_timeout=10,
        ),
        name="oncostruct-queue-worker",
    )
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
