"""The STOW-RS index statement: new instances, their patient/study/series rows and their follow-up jobs
in one transaction on the asyncpg pool (the fast path; the careful ORM path is the fallback)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import asyncpg
import pytest
from dicomweb_client import DICOMwebClient

from oncostruct_imaging import parsing
from oncostruct_imaging.layouts import SeriesLayouts
from oncostruct_imaging.repository import NewFile, QueuedJob, insert_new_instances
from oncostruct_shared.db import Database
from oncostruct_shared.errors import NotFound
from oncostruct_shared.settings import ServiceSettings
from tests.imaging.factory import ct_dataset, new_uid, to_bytes


def _new_file(tmp_path: Path, study: str, series: str, number: int) -> NewFile:
    path = tmp_path / f"{number}.dcm"
    path.write_bytes(to_bytes(ct_dataset(study, series, number, patient_name="Yamada^Tarou")))
    parsed = parsing.parse_instance(path, bulkdata_threshold=1024)
    return NewFile(parsed, f"test/{parsed.sop_instance_uid}.dcm", path.stat().st_size, "0" * 64)


async def test_new_instances_and_their_jobs_go_in_together(
    imaging_url: str, service_settings: Callable[..., ServiceSettings], tmp_path: Path
) -> None:
    study, series = new_uid(), new_uid()
    files = [_new_file(tmp_path, study, series, number) for number in (1, 2)]
    lock = f"link:{study}"
    # A queue no worker of the session's live services takes, so the job stays waiting.
    jobs = [QueuedJob("test-outbox", "link_imaging_study", lock, {"study_uid": study}, None)]
    database = Database(service_settings("imaging"))  # the service's own pool settings and codecs
    pool = await database.driver_pool()
    try:
        inserted = await insert_new_instances(pool, files, jobs)
        assert inserted == {file.parsed.sop_instance_uid for file in files}
        rows = await pool.fetch(
            "SELECT i.sop_instance_uid, p.name_alphabetic, st.study_instance_uid FROM instance i "
            "JOIN series se ON i.series_pk = se.pk JOIN study st ON se.study_pk = st.pk "
            "JOIN patient p ON st.patient_pk = p.pk WHERE se.series_instance_uid = $1",
            series,
        )
        assert {row[0] for row in rows} == inserted
        assert {(row[1], row[2]) for row in rows} == {("Yamada^Tarou", study)}

        async def queued() -> list[asyncpg.Record]:
            return await pool.fetch(
                "SELECT status::text, args::text FROM oncostruct_jobs.procrastinate_jobs WHERE queueing_lock = $1",
                lock,
            )

        [(status, args)] = await queued()
        assert status == "todo"
        assert json.loads(args) == {"study_uid": study}
        # The same instances again: nothing inserted (the caller's careful path takes them), no new job.
        assert await insert_new_instances(pool, files, jobs) == set()
        # A new instance while the study's job still waits: stored; the waiting job covers it.
        assert await insert_new_instances(pool, [_new_file(tmp_path, study, series, 3)], jobs) != set()
        assert len(await queued()) == 1
    finally:
        await database.dispose()


async def test_series_layouts_are_bounded_and_least_recently_used_go_first(
    imaging_url: str, service_settings: Callable[..., ServiceSettings], client: DICOMwebClient
) -> None:
    study = new_uid()
    series = {name: new_uid() for name in "abc"}
    stored = {name: [ct_dataset(study, uid, n) for n in (1, 2)] for name, uid in series.items()}
    client.store_instances([ds for datasets in stored.values() for ds in datasets])
    database = Database(service_settings("imaging"))
    pool = await database.driver_pool()
    layouts = SeriesLayouts(ttl_s=60, max_instances=4)  # room for two series of two

    async def cached(name: str, index: int = 0) -> bool:
        item, hit = await layouts.instance(pool, study, series[name], stored[name][index].SOPInstanceUID)
        assert item.sop_instance_uid == stored[name][index].SOPInstanceUID
        return hit

    try:
        assert not await cached("a")
        assert await cached("a", 1)  # the whole series came with the first lookup
        assert not await cached("b")
        assert await cached("a")  # a is now the most recently used
        assert not await cached("c")  # over the bound: b (least recently used) goes
        assert await cached("a")
        assert not await cached("b")
        layouts.forget(study)
        assert not await cached("a")
        with pytest.raises(NotFound):
            await layouts.instance(pool, study, series["a"], new_uid())
    finally:
        await database.dispose()
