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
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import procrastinate
import psycopg
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


class QueueService:
    """The suite's queue for one service: opened once the database answers, then its worker runs.

    A service must start (and report itself unready) while PostgreSQL is still coming up, so
    the queue is opened in the background: wait for a connection, open procrastinate's pool,
    create the schema, then run the worker on ``queues`` (if ``worker``) and ``extras`` beside it.
    ``ready`` is set once jobs can be deferred; :meth:`check` is a ``/readyz`` check.

    Parameters
    ----------
    app
        The procrastinate app (:func:`create_queue_app`).
    database_url
        SQLAlchemy URL of the queue's database.
    schema
        The queue schema.
    queues
        Queues the worker takes jobs from.
    worker
        Run the worker in this process.
    concurrency
        Jobs the worker runs at once.
    extras
        Coroutines to run beside the worker once the queue is open (periodic maintenance).
    retry_s
        Wait between attempts to reach the database.
    startup_wait_s
        How long entering waits for the queue to open before the service starts unready.
    stalled_after_s
        With ``worker``: a job of these queues whose worker sent no heartbeat for this long (its
        process died) is put back to run again, checked every half of it.
    """

    def __init__(
        self,
        app: procrastinate.App,
        database_url: str,
        schema: str,
        queues: Iterable[str],
        *,
        worker: bool = True,
        concurrency: int = 1,
        extras: Iterable[Callable[[], Awaitable[None]]] = (),
        retry_s: float = 1.0,
        startup_wait_s: float = 10.0,
        stalled_after_s: float = 60.0,
    ) -> None:
        self.app = app
        self.conninfo = libpq_conninfo(database_url)
        self.schema = schema
        self.queues = list(queues)
        self.worker = worker
        self.concurrency = concurrency
        self.extras = list(extras)
        self.retry_s = retry_s
        self.startup_wait_s = startup_wait_s
        self.stalled_after_s = stalled_after_s
        self.ready = asyncio.Event()
        self._opened = False
        self._task: asyncio.Task[None] | None = None

    async def _wait_for_database(self) -> None:
        while True:
            try:
                connection = await psycopg.AsyncConnection.connect(self.conninfo, connect_timeout=5)
            except (psycopg.OperationalError, OSError):
                log.warning("queue database not reachable yet; retrying")
                await asyncio.sleep(self.retry_s)
                continue
            await connection.close()
            return

    async def _serve(self) -> None:
        await self._wait_for_database()
        await self.app.open_async()
        self._opened = True
        await ensure_queue_schema(self.app, self.schema)
        self.ready.set()
        runs = [extra() for extra in self.extras]
        if self.worker:
            runs.append(self._recover_stalled())
            runs.append(
                self.app.run_worker_async(
                    queues=self.queues,
                    concurrency=self.concurrency,
                    fetch_job_polling_interval=1.0,
                    install_signal_handlers=False,
                    shutdown_graceful_timeout=10,
                )
            )
        if runs:
            await asyncio.gather(*runs)

    async def _recover_stalled(self) -> None:
        manager = self.app.job_manager
        while True:
            try:
                for queue in self.queues:
                    stalled = await manager.get_stalled_jobs(queue=queue, seconds_since_heartbeat=self.stalled_after_s)
                    for job in stalled:
                        await manager.retry_job(job)
                        log.warning("stalled job put back", extra={"queue": queue, "task": job.task_name})
            except Exception:
                log.exception("stalled-job recovery failed")
            await asyncio.sleep(self.stalled_after_s / 2)

    async def check(self) -> None:
        """``/readyz``: fails until jobs can be deferred."""
        if not self.ready.is_set():
            raise RuntimeError("the job queue is not open yet")

    async def __aenter__(self) -> QueueService:
        self._task = asyncio.create_task(self._serve(), name="oncostruct-queue")
        # A normal start waits until jobs can be deferred; with the database away it goes on unready.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.ready.wait()), self.startup_wait_s)
        failure = self._task.exception() if self._task.done() else None
        if failure is not None:
            raise failure
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._opened:
            await self.app.close_async()
