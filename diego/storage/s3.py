"""``s3://bucket/key`` URLs: Amazon S3 or any S3-compatible server, via aiobotocore.

The endpoint, region and credentials come from ``[transfer]`` settings; empty ones
fall back to AWS's default endpoint and aiobotocore's default credential chain
(``AWS_*`` environment variables, shared files, instance roles). A custom
endpoint is addressed path-style (``ENDPOINT/bucket/key``), as S3-compatible
servers expect, and checksums are sent only where S3 requires them, which such
servers accept. One client is made on first use and kept until ``close()``.

A "directory" is a key prefix: ``s3://bucket/dir`` holds the objects whose keys
start with ``dir/``. S3 has no empty directories, so a prefix with no objects
under it is reported as missing.
"""

# Local file writes and stats here are the cell's own disk, in 256 KiB chunks:
# cheaper done in place than handed to a thread each.
# ruff: noqa: ASYNC230, ASYNC240

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError

from diego.storage.base import CHUNK, Digest, StorageError, join_url, regular_files, safe_relative

if TYPE_CHECKING:
    from aiobotocore.response import StreamingBody
    from types_aiobotocore_s3 import S3Client
    from types_aiobotocore_s3.type_defs import CompletedPartTypeDef

PART_SIZE = 16 * 1024 * 1024  # files larger than this are uploaded in parts this big
PARALLEL = 4  # files of one tree moved at once


class S3Storage:
    """Reads and writes objects of an S3-compatible service."""

    schemes: tuple[str, ...] = ("s3",)

    def __init__(
        self,
        endpoint_url: str = "",
        region: str = "us-east-1",
        access_key_id: str = "",
        secret_access_key: str = "",
        *,
        timeout: float = 600.0,
        retries: int = 3,
        part_size: int = PART_SIZE,
    ) -> None:
        self.endpoint_url = endpoint_url
        self.region = region
        self.access_key_id = access_key_id
        self.secret_access_key = secret_access_key
        self.timeout = timeout
        self.retries = retries
        self.part_size = part_size
        self._stack = contextlib.AsyncExitStack()
        self._client: S3Client | None = None
        self._opening = asyncio.Lock()

    async def _s3(self) -> S3Client:
        """The client, made on first use."""
        async with self._opening:
            if self._client is None:
                config = AioConfig(
                    connect_timeout=30,
                    read_timeout=60,
                    retries={"max_attempts": self.retries, "mode": "standard"},
                    request_checksum_calculation="when_required",
                    response_checksum_validation="when_required",
                    s3={"addressing_style": "path"} if self.endpoint_url else None,
                )
                context = get_session().create_client(
                    "s3",
                    endpoint_url=self.endpoint_url or None,
                    region_name=self.region or None,
                    aws_access_key_id=self.access_key_id or None,
                    aws_secret_access_key=self.secret_access_key or None,
                    config=config,
                )
                self._client = await self._stack.enter_async_context(context)
            return self._client

    async def get(self, url: str, into: Path, digest: Digest | None = None) -> int:
        """Download the object of ``url`` to the host file ``into``; its size."""
        bucket, key = _split(url, need_key=True)
        with _errors(url, self.timeout):
            async with asyncio.timeout(self.timeout):
                client = await self._s3()
                response = await client.get_object(Bucket=bucket, Key=key)
                return await _save(response["Body"], into, digest)

    async def put(self, path: Path, url: str) -> int:
        """Upload the host file ``path`` as the object of ``url``; its size."""
        bucket, key = _split(url, need_key=True)
        size = path.stat().st_size
        with _errors(url, self.timeout):
            async with asyncio.timeout(self.timeout):
                client = await self._s3()
                if size > self.part_size:
                    await self._put_parts(client, bucket, key, path)
                else:
                    with open(path, "rb") as body:
                        await client.put_object(
                            Bucket=bucket, Key=key, Body=body, ContentLength=size
                        )
        return size

    async def _put_parts(self, client: S3Client, bucket: str, key: str, path: Path) -> None:
        """A multipart upload: one part of ``part_size`` bytes in memory at a time."""
        upload = await client.create_multipart_upload(Bucket=bucket, Key=key)
        upload_id = upload["UploadId"]
        parts: list[CompletedPartTypeDef] = []
        try:
            with open(path, "rb") as f:
                while data := await asyncio.to_thread(f.read, self.part_size):
                    number = len(parts) + 1
                    part = await client.upload_part(
                        Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=data
                    )
                    parts.append({"ETag": part["ETag"], "PartNumber": number})
            await client.complete_multipart_upload(
                Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
            )
        except BaseException:
            with contextlib.suppress(Exception):
                await client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
            raise

    async def get_tree(self, url: str, into: Path) -> list[tuple[str, int]]:
        """Download every object under the prefix ``url`` below ``into``."""
        bucket, key = _split(url, need_key=False)
        prefix = f"{key.strip('/')}/" if key.strip("/") else ""
        relatives = await self._list(url, bucket, prefix)
        if not relatives:
            raise StorageError(f"{url}: no objects under this prefix")
        base = f"s3://{bucket}/{prefix}"
        targets = [into / safe_relative(url, rel) for rel in relatives]
        await asyncio.to_thread(_make_parents, targets)
        jobs = [
            functools.partial(self.get, base + rel, target)
            for rel, target in zip(relatives, targets, strict=True)
        ]
        sizes = await _bounded(jobs)
        return sorted(zip(relatives, sizes, strict=True))

    async def _list(self, url: str, bucket: str, prefix: str) -> list[str]:
        """The keys under ``prefix``, relative to it (directory markers left out)."""
        found = []
        with _errors(url, self.timeout):
            async with asyncio.timeout(self.timeout):
                client = await self._s3()
                paginator = client.get_paginator("list_objects_v2")
                async for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
                    for item in page.get("Contents", []):
                        if not item["Key"].endswith("/"):
                            found.append(item["Key"][len(prefix) :])
        return found

    async def put_tree(self, directory: Path, url: str) -> list[tuple[str, int]]:
        """Upload every regular file below ``directory`` under the prefix ``url``."""
        _split(url, need_key=False)
        files = await asyncio.to_thread(regular_files, directory, url)
        urls = [join_url(url, relative) for _, relative in files]
        jobs = [
            functools.partial(self.put, path, to) for (path, _), to in zip(files, urls, strict=True)
        ]
        sizes = await _bounded(jobs)
        return sorted(zip(urls, sizes, strict=True))

    async def close(self) -> None:
        """Close the client, if one was made."""
        async with self._opening:
            self._client = None
            await self._stack.aclose()


def _split(url: str, need_key: bool) -> tuple[str, str]:
    """The bucket and key of ``s3://bucket/key`` (the key is taken as written)."""
    _, _, rest = url.partition("://")
    bucket, _, key = rest.partition("/")
    if not bucket:
        raise StorageError(f"{url}: an s3 URL must name a bucket (s3://BUCKET/KEY)")
    if need_key and not key:
        raise StorageError(f"{url}: an s3 URL must name a key (s3://BUCKET/KEY)")
    return bucket, key


@contextlib.contextmanager
def _errors(url: str, timeout: float) -> Iterator[None]:
    """S3's and the connection's errors as a StorageError naming ``url``."""
    try:
        yield
    except ClientError as e:
        error = e.response.get("Error", {})
        code = error.get("Code") or "error"
        message = error.get("Message") or ""
        raise StorageError(f"{url}: S3 {code}" + (f": {message}" if message else "")) from None
    except BotoCoreError as e:
        raise StorageError(f"{url}: S3 {type(e).__name__}: {e}") from None
    except aiohttp.ClientError as e:
        raise StorageError(f"{url}: {e or type(e).__name__}") from None
    except TimeoutError:
        raise StorageError(f"{url}: timed out after {timeout:g} s") from None


def _make_parents(targets: Sequence[Path]) -> None:
    for target in targets:
        target.parent.mkdir(parents=True, exist_ok=True)


async def _save(body: StreamingBody, into: Path, digest: Digest | None) -> int:
    """Stream a response body to the host file ``into``; its size."""
    size = 0
    async with body as stream:
        with open(into, "wb") as f:
            async for chunk in stream.iter_chunks(CHUNK):
                f.write(chunk)
                size += len(chunk)
                if digest is not None:
                    digest.update(chunk)
    return size


async def _bounded(jobs: Sequence[Callable[[], Awaitable[int]]]) -> list[int]:
    """Run ``jobs``, PARALLEL at a time; their results in order. The first error wins."""
    limit = asyncio.Semaphore(PARALLEL)

    async def run(job: Callable[[], Awaitable[int]]) -> int:
        async with limit:
            return await job()

    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(run(job)) for job in jobs]
    except ExceptionGroup as failed:
        raise failed.exceptions[0] from None
    return [task.result() for task in tasks]
