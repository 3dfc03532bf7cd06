"""Background jobs of the clinical service (bulk export, pull import) that live in a PostgreSQL table.

A job row (``id``, ``status``, ``updated_at``) is the truth; the replica that accepted the job runs
it in an asyncio task, and a replica that starts runs again the jobs nobody has touched for a
minute (their runner stopped with its process).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker


class BackgroundJobs:
    """Starts, resumes and stops the jobs of one table; subclasses implement :meth:`run`.

    Parameters
    ----------
    sessionmaker
        Sessions on the service's database.
    table
        The job table (a fixed name from this package, never caller input).
    """

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], table: str) -> None:
        self.sessionmaker = sessionmaker
        self.table = table
        self.tasks: set[asyncio.Task[None]] = set()

    async def run(self, job_id: uuid.UUID) -> None:
        """Run one job to its end (never raises for the job's own failure)."""
        raise NotImplementedError

    def start(self, job_id: uuid.UUID) -> None:
        """Run the job in the background of this process."""
        task = asyncio.create_task(self.run(job_id), name=f"{self.table}-{job_id}")
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def resume(self) -> None:
        """Run again the unfinished jobs no replica has touched for a minute.

        Claimed atomically (the UPDATE touches them), so replicas starting together take each job once.
        """
        stale = datetime.now(UTC) - timedelta(seconds=60)
        claim = (
            f"UPDATE {self.table} SET updated_at = now() "  # noqa: S608 - fixed table name
            "WHERE status IN ('queued', 'running') AND updated_at < :stale RETURNING id"
        )
        async with self.sessionmaker() as session:
            claimed = (await session.execute(text(claim), {"stale": stale})).scalars().all()
            await session.commit()
        for job_id in claimed:
            self.start(job_id)

    async def close(self) -> None:
        """Cancel the running jobs (they resume in a replica that starts later)."""
        for task in list(self.tasks):
            task.cancel()
        for task in list(self.tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
