"""The filesystem object store: atomic publishing, ranged reads, safe keys."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from oncostruct_shared.errors import NotFound
from oncostruct_shared.storage import FilesystemObjectStore, ObjectStore, StorageError, validate_key


@pytest.fixture
def store(tmp_path: Path) -> FilesystemObjectStore:
    return FilesystemObjectStore(tmp_path / "objects")


def test_filesystem_store_satisfies_the_protocol(store: FilesystemObjectStore) -> None:
    assert isinstance(store, ObjectStore)


async def test_put_bytes_then_read_ranges_and_chunks(store: FilesystemObjectStore) -> None:
    data = bytes(range(256)) * 40
    assert await store.put_bytes("studies/1.2/a.dcm", data) == len(data)
    assert await store.size("studies/1.2/a.dcm") == len(data)
    assert await store.read_range("studies/1.2/a.dcm", 100, 10) == data[100:110]  # from the page cache
    assert await store.read_range("studies/1.2/a.dcm", len(data) - 5, 10) == data[-5:]  # short: end of file
    assert await store.read_range("studies/1.2/a.dcm", len(data) + 5, 10) == b""
    chunks = [chunk async for chunk in store.iter_chunks("studies/1.2/a.dcm", chunk_bytes=1000)]
    assert b"".join(chunks) == data
    assert len(chunks) == 11


async def test_read_objects_reads_several_whole_objects_in_order(store: FilesystemObjectStore) -> None:
    for name, data in (("b.bin", b"bee"), ("a.bin", b"a" * 5000), ("c/d.bin", b"")):
        await store.put_bytes(name, data)
    assert await store.read_objects(["c/d.bin", "a.bin", "b.bin"]) == [b"", b"a" * 5000, b"bee"]
    with pytest.raises(NotFound, match=r"missing\.bin"):
        await store.read_objects(["a.bin", "missing.bin"])


async def test_put_file_consumes_the_spooled_file_and_leaves_no_temporaries(
    store: FilesystemObjectStore, tmp_path: Path
) -> None:
    spooled = store.staging_file()
    spooled.write_bytes(b"dicom" * 100)
    assert await store.put_file("x/y.dcm", spooled) == 500
    assert not spooled.exists()
    assert store.path("x/y.dcm").read_bytes() == b"dicom" * 100
    leftovers = [p for p in store.root.rglob("*") if p.is_file() and p.suffix in (".tmp", ".part")]
    assert leftovers == []


async def test_put_file_from_another_folder_copies(store: FilesystemObjectStore, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere.bin"
    outside.write_bytes(b"abc")
    await store.put_file("k.bin", outside)
    assert store.path("k.bin").read_bytes() == b"abc"
    assert not outside.exists()


async def test_replacing_is_atomic_under_concurrent_writers(store: FilesystemObjectStore) -> None:
    contents = [bytes([i]) * 200_000 for i in range(8)]
    await asyncio.gather(*(store.put_bytes("same.bin", data) for data in contents))
    assert store.path("same.bin").read_bytes() in contents  # one whole version, never a mix


async def test_missing_objects_are_not_found_and_delete_is_idempotent(store: FilesystemObjectStore) -> None:
    with pytest.raises(NotFound):
        await store.read_range("nope.bin", 0, 1)
    with pytest.raises(NotFound):
        await store.size("nope.bin")
    with pytest.raises(NotFound):
        [chunk async for chunk in store.iter_chunks("nope.bin")]
    await store.put_bytes("gone.bin", b"1")
    assert await store.delete("gone.bin") is True
    assert await store.delete("gone.bin") is False


@pytest.mark.parametrize(
    "key", ["", "/abs", "a/../b", "..", "a//b", "a/./b", "sp ace", "a\\b", "x" * 201, "a/", "./a", "a/..", "a\n"]
)
def test_unsafe_keys_are_refused(key: str, store: FilesystemObjectStore) -> None:
    with pytest.raises(ValueError, match="not a valid object key"):
        validate_key(key)
    with pytest.raises(ValueError, match="not a valid object key"):
        store.path(key)


def test_without_fsync_objects_are_still_published_whole(tmp_path: Path) -> None:
    store = FilesystemObjectStore(tmp_path, fsync=False)
    asyncio.run(store.put_bytes("a/b/c.bin", b"x" * 10))
    assert (tmp_path / "a" / "b" / "c.bin").read_bytes() == b"x" * 10


async def test_put_files_publishes_each_file_and_reports_failures(store: FilesystemObjectStore) -> None:
    for flushed in (False, True):  # True: the caller fsynced the files already; they are only renamed
        first, second = store.staging_file(), store.staging_file()
        first.write_bytes(b"one")
        second.write_bytes(b"second")
        missing = store.staging_file()
        results = await store.put_files(
            [(f"s/{flushed}/a.dcm", first), (f"s/{flushed}/b.dcm", second), (f"s/{flushed}/c.dcm", missing)],
            flushed=flushed,
        )
        assert results[:2] == [3, 6]
        assert isinstance(results[2], StorageError)
        assert store.path(f"s/{flushed}/b.dcm").read_bytes() == b"second"
        assert not first.exists()
        assert not store.path(f"s/{flushed}/c.dcm").exists()


@pytest.mark.parametrize("key", ["a", "a/b.c", "..a/b..", ".hidden/x", "x" * 200 + "/" + "y" * 200])
def test_safe_keys_are_accepted(key: str) -> None:
    assert validate_key(key) == key
