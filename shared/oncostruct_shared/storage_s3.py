"""The object store on S3-compatible storage (AWS S3, MinIO, Ceph RGW …), for clusters.

Objects are written with one PUT (or a multipart upload for large files): S3 makes an object
visible only once it is complete, so a reader never sees half an object, and an acknowledged
PUT is durable by the service's own guarantees. Reads use ranged GETs. boto3 is synchronous:
each call runs in a worker thread. Spooling (multipart request bodies) stays on a local folder.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from .errors import NotFound
from .storage import DEFAULT_CHUNK_BYTES, StorageError, validate_key


def _missing(exc: Exception) -> bool:
    response = getattr(exc, "response", None) or {}
    code = str(response.get("Error", {}).get("Code", ""))
    return code in ("404", "NoSuchKey", "NotFound")


class S3ObjectStore:
    """Objects as ``<prefix><key>`` in one bucket.

    Parameters
    ----------
    bucket
        The bucket (must exist; the service does not create buckets).
    staging
        Local folder for spooled request bodies.
    prefix
        Key prefix inside the bucket (e.g. ``imaging/``).
    endpoint_url
        The S3 endpoint (empty: AWS); credentials and region come from the usual AWS
        environment variables, files or instance roles.
    region
        Region name (empty: from the environment).
    """

    def __init__(
        self, bucket: str, staging: Path, *, prefix: str = "", endpoint_url: str = "", region: str = ""
    ) -> None:
        import boto3  # type: ignore[import-untyped]
        from botocore.config import Config  # type: ignore[import-untyped]

        self.bucket = bucket
        self.prefix = prefix
        self.staging = staging
        self.staging.mkdir(parents=True, exist_ok=True)
        config = Config(retries={"max_attempts": 5, "mode": "standard"}, max_pool_connections=32)
        self.client: Any = boto3.client(
            "s3", endpoint_url=endpoint_url or None, region_name=region or None, config=config
        )

    def _key(self, key: str) -> str:
        return self.prefix + validate_key(key)

    async def _call(self, what: str, key: str, method: str, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError  # type: ignore[import-untyped]

        try:
            return await asyncio.to_thread(getattr(self.client, method), **kwargs)
        except ClientError as exc:
            if _missing(exc):
                raise NotFound(f"No stored object {key}.") from None
            raise StorageError(f"The object store could not {what} {key}: {exc}.") from exc
        except BotoCoreError as exc:
            raise StorageError(f"The object store could not {what} {key}: {exc}.") from exc

    def _upload(self, key: str, source: Path) -> int:
        from botocore.exceptions import BotoCoreError, ClientError

        size = source.stat().st_size
        try:
            self.client.upload_file(str(source), self.bucket, self._key(key))
        except (ClientError, BotoCoreError) as exc:
            raise StorageError(f"The object store could not write {key}: {exc}.") from exc
        with contextlib.suppress(OSError):
            source.unlink()
        return size

    async def put_file(self, key: str, source: Path) -> int:
        return await asyncio.to_thread(self._upload, key, source)

    async def put_files(self, items: list[tuple[str, Path]], *, flushed: bool = False) -> list[int | StorageError]:
        async def one(key: str, source: Path) -> int | StorageError:
            try:
                return await self.put_file(key, source)
            except StorageError as exc:
                return exc

        return list(await asyncio.gather(*(one(key, source) for key, source in items)))

    async def put_bytes(self, key: str, data: bytes) -> int:
        await self._call("write", key, "put_object", Bucket=self.bucket, Key=self._key(key), Body=data)
        return len(data)

    async def read_range(self, key: str, offset: int, length: int) -> bytes:
        if length <= 0:
            return b""
        span = f"bytes={offset}-{offset + length - 1}"
        response = await self._call("read", key, "get_object", Bucket=self.bucket, Key=self._key(key), Range=span)
        data: bytes = await asyncio.to_thread(response["Body"].read)
        return data

    async def _read_whole(self, key: str) -> bytes:
        response = await self._call("read", key, "get_object", Bucket=self.bucket, Key=self._key(key))
        data: bytes = await asyncio.to_thread(response["Body"].read)
        return data

    async def read_objects(self, keys: list[str]) -> list[bytes]:
        return list(await asyncio.gather(*(self._read_whole(key) for key in keys)))

    async def iter_chunks(self, key: str, chunk_bytes: int = DEFAULT_CHUNK_BYTES) -> AsyncIterator[bytes]:
        response = await self._call("read", key, "get_object", Bucket=self.bucket, Key=self._key(key))
        body = response["Body"]
        try:
            while chunk := await asyncio.to_thread(body.read, chunk_bytes):
                yield chunk
        finally:
            body.close()

    async def size(self, key: str) -> int:
        response = await self._call("read", key, "head_object", Bucket=self.bucket, Key=self._key(key))
        return int(response["ContentLength"])

    async def delete(self, key: str) -> bool:
        try:
            await self.size(key)
        except NotFound:
            return False
        await self._call("delete", key, "delete_object", Bucket=self.bucket, Key=self._key(key))
        return True
