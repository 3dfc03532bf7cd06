"""The shared database layer on real PostgreSQL: connection settings, lazy request connections, the driver pool."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import text

from oncostruct_shared.db import Database, LazyConnection
from tests.support import PostgresServer


def _run(settings: Any, body: Any) -> Any:
    async def run() -> Any:
        database = Database(settings)
        try:
            return await body(database)
        finally:
            await database.dispose()

    return asyncio.run(run())


def test_engine_plans_each_execution_and_driver_pool_keeps_the_default(
    postgres: PostgresServer, service_settings: Any
) -> None:
    settings = service_settings("clinical", database="db_plans")
    postgres.create_database("db_plans")

    async def body(database: Database) -> tuple[str, str, Any]:
        async with database.engine.connect() as connection:
            engine_mode = (await connection.execute(text("SHOW plan_cache_mode"))).scalar_one()
        async with (await database.driver_pool()).acquire() as driver:
            driver_mode = await driver.fetchval("SHOW plan_cache_mode")
            decoded = await driver.fetchval("""SELECT '{"a": [1, "b"]}'::jsonb""")
        return engine_mode, driver_mode, decoded

    engine_mode, driver_mode, decoded = _run(settings, body)
    assert engine_mode == "force_custom_plan"  # value-dependent searches never run on a generic plan
    assert driver_mode == "auto"
    assert decoded == {"a": [1, "b"]}


def test_lazy_connection_checks_out_only_when_used_and_rolls_back_what_was_not_committed(
    postgres: PostgresServer, service_settings: Any
) -> None:
    settings = service_settings("clinical", database="db_lazy")
    postgres.create_database("db_lazy")
    postgres.fetch("db_lazy", "CREATE TABLE t (v int)")

    async def body(database: Database) -> tuple[bool, int]:
        unused = LazyConnection(database, autocommit=False)
        await unused.commit()  # nothing to commit, nothing checked out
        await unused.close()
        checked_out_before = unused.started
        kept = LazyConnection(database, autocommit=False)
        await kept.execute(text("INSERT INTO public.t VALUES (1)"))
        await kept.commit()
        await kept.close()
        dropped = LazyConnection(database, autocommit=False)
        async with dropped.begin_nested():
            await dropped.execute(text("INSERT INTO public.t VALUES (2)"))
        await dropped.close()  # never committed
        checked_in = database.engine.pool.checkedout()  # type: ignore[attr-defined]
        return checked_out_before, checked_in

    started, checked_out = _run(settings, body)
    assert started is False
    assert checked_out == 0
    assert [row["v"] for row in postgres.fetch("db_lazy", "SELECT v FROM public.t")] == [1]
