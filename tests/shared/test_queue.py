"""Durable jobs across services on real PostgreSQL (procrastinate)."""

from __future__ import annotations

import asyncio
from typing import Any

import procrastinate

from oncostruct_shared.queue import create_queue_app, ensure_queue_schema, libpq_conninfo, running_worker
from tests.support import PostgresServer


def test_libpq_conninfo_drops_the_driver() -> None:
    assert libpq_conninfo("postgresql+asyncpg://u:p%40ss@db:5433/x") == "postgresql://u:p%40ss@db:5433/x"


async def _wait_for(condition: Any, timeout_s: float = 20) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def test_a_job_deferred_by_one_service_is_run_by_another(postgres: PostgresServer) -> None:
    url = await asyncio.to_thread(postgres.create_database, "queue_cross_service")
    producer = create_queue_app(url)
    consumer = create_queue_app(url)
    received: list[dict[str, str]] = []

    @consumer.task(name="series_complete", queue="reconstruction")
    async def series_complete(study_uid: str, series_uid: str) -> None:
        received.append({"study_uid": study_uid, "series_uid": series_uid})

    async with producer.open_async(), consumer.open_async():
        assert await ensure_queue_schema(producer) is True
        assert await ensure_queue_schema(consumer) is False  # applied once
        # The producer knows the task by name only: no import of the consumer's code.
        await producer.configure_task("series_complete", queue="reconstruction").defer_async(
            study_uid="1.2.3", series_uid="1.2.3.4"
        )
        async with running_worker(consumer, ["reconstruction"]):
            await _wait_for(lambda: len(received) == 1)
    assert received == [{"study_uid": "1.2.3", "series_uid": "1.2.3.4"}]


async def test_a_failing_job_is_retried_until_it_succeeds(postgres: PostgresServer) -> None:
    url = await asyncio.to_thread(postgres.create_database, "queue_retry")
    app = create_queue_app(url)
    attempts: list[int] = []

    @app.task(name="flaky", queue="work", retry=procrastinate.RetryStrategy(max_attempts=5, wait=0))
    async def flaky() -> None:
        attempts.append(1)
        if len(attempts) < 3:
            raise RuntimeError("upstream not ready yet")

    async with app.open_async():
        await ensure_queue_schema(app)
        await flaky.defer_async()
        async with running_worker(app, ["work"]):
            await _wait_for(lambda: len(attempts) == 3)
            await asyncio.sleep(0.5)
    assert len(attempts) == 3


async def test_queueing_lock_keeps_one_pending_job_per_key(postgres: PostgresServer) -> None:
    url = await asyncio.to_thread(postgres.create_database, "queue_lock")
    app = create_queue_app(url)

    @app.task(name="analyse", queue="work")
    async def analyse(series_uid: str) -> None:
        return None

    async with app.open_async():
        await ensure_queue_schema(app)
        await analyse.configure(queueing_lock="series:1").defer_async(series_uid="1")
        try:
            await analyse.configure(queueing_lock="series:1").defer_async(series_uid="1")
        except procrastinate.exceptions.AlreadyEnqueued:
            duplicate_refused = True
        else:
            duplicate_refused = False
    assert duplicate_refused


async def test_a_job_whose_worker_died_is_run_again(postgres: PostgresServer) -> None:
    """A job left 'doing' by a worker that stopped sending heartbeats (its process was killed) runs again."""
    from psycopg import AsyncConnection

    from oncostruct_shared.queue import QueueService

    url = await asyncio.to_thread(postgres.create_database, "queue_stalled")
    app = create_queue_app(url)
    runs: list[str] = []

    @app.task(name="analyse", queue="stalled-test")
    async def analyse(series: str) -> None:
        runs.append(series)

    async with app.open_async():
        await ensure_queue_schema(app)
        job_id = await app.configure_task("analyse", queue="stalled-test").defer_async(series="1.2.3")
        async with await AsyncConnection.connect(libpq_conninfo(url), options="-c search_path=oncostruct_jobs") as db:
            worker = await (
                await db.execute(
                    "INSERT INTO procrastinate_workers (last_heartbeat) VALUES (now() - interval '1 hour') RETURNING id"
                )
            ).fetchone()
            assert worker is not None
            await db.execute(
                "UPDATE procrastinate_jobs SET status = 'doing', worker_id = %s WHERE id = %s", (worker[0], job_id)
            )
            await db.commit()
    service = QueueService(app, url, "oncostruct_jobs", ["stalled-test"], stalled_after_s=1.0)
    async with service:
        await _wait_for(lambda: runs == ["1.2.3"])
