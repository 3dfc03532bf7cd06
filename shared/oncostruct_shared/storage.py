"""Object storage behind one small protocol: a local folder by default, S3-compatible in clusters.

Keys are ``/``-separated relative names (``studies/1.2.3/…/4.5.6.dcm``). A
stored object is immutable and appears whole or not at all: writers put the
content under a temporary name, make it durable, then publish it under its key
in one atomic step (``rename`` on a filesystem, a completed ``PUT`` on S3).
Readers therefore never see a half-written object.

Only :class:`FilesystemObjectStore` ships today; an S3 implementation needs the
same six methods (``put_file`` is a multipart upload of the spooled file,
``read_range`` a ranged ``GET``).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import re
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import BinaryIO, Protocol, runtime_checkable

from .errors import NotFound, OncoStructError

#: ``/``-separated parts of 1–200 ``[A-Za-z0-9._-]``, none of them ``.`` or ``..``.
_KEY = re.compile(r"(?!\.\.?(?:/|$))[A-Za-z0-9._\-]{1,200}(?:/(?!\.\.?(?:/|$))[A-Za-z0-9._\-]{1,200})*")
#: Reads of whole objects are streamed in chunks of this size by default.
DEFAULT_CHUNK_BYTES = 1024 * 1024


class StorageError(OncoStructError):
    """The object store failed (full disk, permissions, an unreachable bucket)."""

    status = 507
    title = "Insufficient Storage"
    slug = "storage-error"


def validate_key(key: str) -> str:
    """Return ``key`` if it is a safe relative object key, else raise :class:`ValueError`.

    Each ``/``-separated part must be 1–200 characters of ``[A-Za-z0-9._-]`` and
    must not be ``.`` or ``..``: keys can never escape the store's root.
    """
    if _KEY.fullmatch(key) is None:
        raise ValueError(f"not a valid object key: {key!r}")
    return key


@runtime_checkable
class ObjectStore(Protocol):
    """Where DICOM files and arrays live; every method is safe to call concurrently."""

    async def put_file(self, key: str, source: Path) -> int:
        """Publish the local file ``source`` under ``key`` atomically and return its size.

        ``source`` is consumed (moved or deleted). An existing object under
        ``key`` is replaced atomically.
        """
        ...

    async def put_files(self, items: list[tuple[str, Path]], *, flushed: bool = False) -> list[int | StorageError]:
        """Publish several local files (each as :meth:`put_file`); a size or the error per file.

        ``flushed``: the caller has already fsynced the files' contents (stores that flush may skip it).
        """
        ...

    async def put_bytes(self, key: str, data: bytes) -> int:
        """Publish ``data`` under ``key`` atomically and return its size."""
        ...

    async def read_range(self, key: str, offset: int, length: int) -> bytes:
        """Read ``length`` bytes from ``offset``; raise :class:`NotFound` if there is no object."""
        ...

    def iter_chunks(self, key: str, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> AsyncIterator[bytes]:
        """Stream a whole object in chunks; raise :class:`NotFound` if there is no object."""
        ...

    async def read_objects(self, keys: list[str]) -> list[bytes]:
        """Read several whole (small) objects at once, in order; :class:`NotFound` if one is missing."""
        ...

    async def size(self, key: str) -> int:
        """The object's size in bytes; raise :class:`NotFound` if there is none."""
        ...

    async def delete(self, key: str) -> bool:
        """Remove the object; return whether it existed (deleting twice is not an error)."""
        ...


def _open_and_read(path: Path, chunk_bytes: int) -> tuple[BinaryIO | None, bytes]:
    """Open ``path`` and read its first chunk; the handle is None (and closed) when that was all of it."""
    handle = open(path, "rb")  # noqa: SIM115 (closed here or by the caller)
    try:
        chunk = handle.read(chunk_bytes)
        if len(chunk) < chunk_bytes:
            handle.close()
            return None, chunk
        return handle, chunk
    except BaseException:
        handle.close()
        raise


def fsync_path(path: Path | str) -> None:
    """Flush a file's contents to disk (:func:`os.fsync`)."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


#: Ranged reads up to this size try the page cache on the event loop first (Linux ``preadv2`` flag).
_NOWAIT_MAX_BYTES = 4 * 1024 * 1024
_NOWAIT = hasattr(os, "RWF_NOWAIT")


class FilesystemObjectStore:
    """Objects as files below ``root``; publishing is temp file + fsync + ``rename``.

    Parameters
    ----------
    root
        Folder holding the objects (created if missing).
    fsync
        Flush file contents and the parent folder to disk before an object is
        reported stored. Without it an acknowledged object survives a killed
        process but not a power loss.
    """

    def __init__(self, root: Path, *, fsync: bool = True) -> None:
        self.root = root.resolve()
        self._root_text = str(self.root)
        self._folders: set[str] = set()
        self.fsync = fsync
        self.staging = self.root / ".staging"
        self.staging.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        """The file that holds ``key`` (it may not exist)."""
        return self.root / validate_key(key)

    def staging_file(self) -> Path:
        """A fresh path on the store's filesystem for spooling (so publishing is a rename)."""
        return self.staging / f"{uuid.uuid4().hex}.part"

    def _sync_dir(self, folder: Path) -> None:
        if not self.fsync:
            return
        descriptor = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)

    def _folder_for(self, key: str) -> tuple[str, str]:
        """The target file and its folder (created once per process; string paths, no pathlib)."""
        target = os.path.join(self._root_text, validate_key(key))
        folder = os.path.dirname(target)
        if folder not in self._folders:
            os.makedirs(folder, exist_ok=True)
            self._folders.add(folder)
        return target, folder

    def _publish(self, key: str, source: Path, sync_dir: bool = True, *, flush: bool = True) -> int:
        """Flush ``source`` and rename it onto the key (atomic); copy first if it is on another filesystem."""
        target, folder = self._folder_for(key)
        temporary: str | None = None
        try:
            size = os.stat(source).st_size
            if self.fsync and flush:
                fsync_path(source)
            try:
                os.replace(source, target)  # the spool is on the store's filesystem: no copy
            except FileNotFoundError:
                if not os.path.exists(source):
                    raise
                self._folders.discard(folder)  # the folder went away behind our back
                target, folder = self._folder_for(key)
                os.replace(source, target)
            except OSError as exc:
                if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
                    raise
                temporary = os.path.join(folder, f".{os.path.basename(target)}.{uuid.uuid4().hex}.tmp")
                shutil.copyfile(source, temporary)
                if self.fsync:
                    fsync_path(temporary)
                os.replace(temporary, target)
                temporary = None
                os.unlink(source)
            if sync_dir:
                self._sync_dir(Path(folder))
            return size
        except OSError as exc:
            if temporary is not None:
                with contextlib.suppress(OSError):
                    os.unlink(temporary)
            raise StorageError(f"The object store could not write {key}: {exc.strerror or exc}.") from exc

    def _write(self, key: str, data: bytes) -> int:
        spool = self.staging_file()
        try:
            with open(spool, "wb") as handle:
                handle.write(data)
        except OSError as exc:
            with contextlib.suppress(OSError):
                spool.unlink()
            raise StorageError(f"The object store could not write {key}: {exc.strerror or exc}.") from exc
        return self._publish(key, spool)

    def _read(self, key: str, offset: int, length: int) -> bytes:
        try:
            with open(self.path(key), "rb") as handle:
                handle.seek(offset)
                return handle.read(length)
        except FileNotFoundError:
            raise NotFound(f"No stored object {key}.") from None

    async def put_files(self, items: list[tuple[str, Path]], *, flushed: bool = False) -> list[int | StorageError]:
        """Publish several files at once: each is flushed (in parallel; not again if ``flushed``), each
        folder once at the end.

        Returns each file's size, or the :class:`StorageError` that kept it from being published.
        """

        async def one(key: str, source: Path) -> int | StorageError:
            try:
                return await asyncio.to_thread(self._publish, key, source, False)
            except StorageError as exc:
                return exc

        def renames() -> list[int | StorageError]:  # no flush to wait for: all in one thread hop
            results: list[int | StorageError] = []
            for key, source in items:
                try:
                    results.append(self._publish(key, source, False, flush=False))
                except StorageError as exc:
                    results.append(exc)
            return results

        if flushed or not self.fsync:
            results = await asyncio.to_thread(renames)
        else:
            results = list(await asyncio.gather(*(one(key, source) for key, source in items)))
        folders = {
            self.path(key).parent for (key, _), result in zip(items, results, strict=True) if isinstance(result, int)
        }
        for folder in folders:
            await asyncio.to_thread(self._sync_dir, folder)
        return list(results)

    async def put_file(self, key: str, source: Path) -> int:
        return await asyncio.to_thread(self._publish, key, source)

    async def put_bytes(self, key: str, data: bytes) -> int:
        return await asyncio.to_thread(self._write, key, data)

    async def read_range(self, key: str, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0:
            raise ValueError("offset and length must not be negative")
        if length <= _NOWAIT_MAX_BYTES and _NOWAIT:
            data = self._read_cached(key, offset, length)
            if data is not None:
                return data
        return await asyncio.to_thread(self._read, key, offset, length)

    def _read_cached(self, key: str, offset: int, length: int) -> bytes | None:
        """The range if the page cache holds all of it (``RWF_NOWAIT``: never waits for the disk), else None.

        A frame of a series being viewed is usually cached: reading it here, a few microseconds on
        the event loop, saves the thread hop (tens of microseconds, and a GIL handover).
        """
        global _NOWAIT
        try:
            descriptor = os.open(self.path(key), os.O_RDONLY)
        except FileNotFoundError:
            raise NotFound(f"No stored object {key}.") from None
        except OSError:
            return None
        try:
            buffer = bytearray(length)
            read = os.preadv(descriptor, [buffer], offset, os.RWF_NOWAIT)
        except BlockingIOError:
            return None  # not (all) in the page cache: read in a thread
        except OSError as exc:
            if exc.errno in (errno.EOPNOTSUPP, errno.EINVAL):
                _NOWAIT = False  # this filesystem or kernel does not offer it
            return None
        finally:
            os.close(descriptor)
        return bytes(buffer) if read == length else None  # short (end of file, or partly cached): the thread

    def _read_all(self, keys: list[str]) -> list[bytes]:
        # Plain descriptors and string paths: for hundreds of small files, pathlib and buffered file
        # objects cost more than the reads.
        contents = []
        for key in keys:
            try:
                descriptor = os.open(os.path.join(self._root_text, validate_key(key)), os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                raise NotFound(f"No stored object {key}.") from None
            try:
                size = os.fstat(descriptor).st_size
                data = os.read(descriptor, size)
                while len(data) < size and (more := os.read(descriptor, size - len(data))):
                    data += more
            finally:
                os.close(descriptor)
            contents.append(data)
        return contents

    async def read_objects(self, keys: list[str]) -> list[bytes]:
        # One thread hop for the lot: a series of small instances is hundreds of files.
        return await asyncio.to_thread(self._read_all, keys)

    async def iter_chunks(self, key: str, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> AsyncIterator[bytes]:
        # One thread hop opens and reads the first chunk; a file smaller than a chunk (most DICOM
        # instances) is then read and closed in that same hop.
        try:
            handle, chunk = await asyncio.to_thread(_open_and_read, self.path(key), chunk_bytes)
        except FileNotFoundError:
            raise NotFound(f"No stored object {key}.") from None
        if handle is None:
            if chunk:
                yield chunk
            return
        try:
            yield chunk
            while chunk := await asyncio.to_thread(handle.read, chunk_bytes):
                yield chunk
        finally:
            handle.close()

    async def size(self, key: str) -> int:
        try:
            return (await asyncio.to_thread(self.path(key).stat)).st_size
        except FileNotFoundError:
            raise NotFound(f"No stored object {key}.") from None

    async def delete(self, key: str) -> bool:
        def remove() -> bool:
            try:
                self.path(key).unlink()
            except FileNotFoundError:
                return False
            return True

        return await asyncio.to_thread(remove)
