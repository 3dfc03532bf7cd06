"""Where the frames of recently viewed series are: a per-process cache for WADO-RS frame requests.

A viewer reads a series frame by frame, hundreds of requests in a row. The first frame request
of a series loads the file layout (storage key, frame byte ranges) of all its instances in one
query; the following ones are answered without the database. Entries expire after
``layout_cache_s``; a delete through this process forgets the series at once, and a layout whose
file is gone (deleted or replaced through another process) is dropped and looked up again.
"""

from __future__ import annotations

import time
from collections import OrderedDict

import asyncpg

from oncostruct_shared.errors import NotFound

from .repository import InstanceFile, find_instances


class SeriesLayouts:
    """Instance layouts by series, least recently used first out, at most ``max_instances`` in all."""

    def __init__(self, ttl_s: float, max_instances: int = 50_000) -> None:
        self.ttl_s = ttl_s
        self.max_instances = max_instances  # a few hundred bytes each: tens of MB at most
        self._series: OrderedDict[tuple[str, str], tuple[float, dict[str, InstanceFile]]] = OrderedDict()
        self._instances = 0

    async def instance(self, pool: asyncpg.Pool, study: str, series: str, instance: str) -> tuple[InstanceFile, bool]:
        """The instance's layout and whether it came from the cache; 404 if there is no such instance."""
        if self.ttl_s <= 0:
            (item,) = await find_instances(pool, study, series, instance, with_layout=True)
            return item, False
        key = (study, series)
        entry = self._series.get(key)
        now = time.monotonic()
        if entry is not None and entry[0] > now and instance in entry[1]:
            self._series.move_to_end(key)
            return entry[1][instance], True
        items = await find_instances(pool, study, series, with_layout=True)
        by_uid = {item.sop_instance_uid: item for item in items}
        self._drop(key)
        if len(by_uid) <= self.max_instances:
            self._series[key] = (now + self.ttl_s, by_uid)
            self._instances += len(by_uid)
            while self._instances > self.max_instances:
                self._drop(next(iter(self._series)))
        if instance not in by_uid:
            raise NotFound("No such instance in this archive.")
        return by_uid[instance], False

    def cached(self, study: str, series: str, instance: str) -> InstanceFile | None:
        """The instance's layout if its series is cached and fresh, else None (no database)."""
        key = (study, series)
        entry = self._series.get(key)
        if entry is None or entry[0] <= time.monotonic():
            return None
        item = entry[1].get(instance)
        if item is not None:
            self._series.move_to_end(key)
        return item

    def forget(self, study: str, series: str | None = None) -> None:
        """Drop a series (or every series of a study)."""
        for key in [key for key in self._series if key[0] == study and series in (None, key[1])]:
            self._drop(key)

    def _drop(self, key: tuple[str, str]) -> None:
        entry = self._series.pop(key, None)
        if entry is not None:
            self._instances -= len(entry[1])
