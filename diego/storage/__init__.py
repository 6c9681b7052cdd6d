"""Storage behind one interface: ``file``, ``http(s)`` and ``s3`` URLs.

``Storages`` routes each URL to the storage of its scheme. It serves Diego's
download and upload actions (through ``diego.cell.transfer.Transfers``) and the
inputs and outputs of GA4GH TES tasks, files and directories alike.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from diego.storage.base import Digest, Storage, StorageError
from diego.storage.file import FileStorage
from diego.storage.http import HttpStorage
from diego.storage.s3 import S3Storage

if TYPE_CHECKING:
    from diego.config import TransferSettings

__all__ = [
    "Digest",
    "FileStorage",
    "HttpStorage",
    "S3Storage",
    "Storage",
    "StorageError",
    "Storages",
]


class Storages:
    """Every storage a node has, each found by the scheme of a URL."""

    def __init__(self, storages: Iterable[Storage]) -> None:
        self._by_scheme: dict[str, Storage] = {}
        for storage in storages:
            for scheme in storage.schemes:
                self._by_scheme[scheme] = storage
        self.schemes = tuple(sorted(self._by_scheme))

    @classmethod
    def from_settings(cls, settings: TransferSettings, base: Path) -> Storages:
        """The storages that ``[transfer]`` settings describe; relative file roots are
        below ``base`` (the data dir)."""
        return cls(
            [
                FileStorage(base / p for p in settings.file_roots),
                HttpStorage(settings.timeout),
                S3Storage(
                    settings.s3_endpoint_url,
                    settings.s3_region,
                    settings.s3_access_key_id,
                    settings.s3_secret_access_key,
                    timeout=settings.timeout,
                ),
            ]
        )

    def storage_for(self, url: str) -> Storage:
        """The storage of ``url``'s scheme."""
        scheme, sep, _ = url.partition("://")
        storage = self._by_scheme.get(scheme.lower()) if sep else None
        if storage is None:
            supported = ", ".join(self.schemes)
            raise StorageError(f"{url}: unsupported URL scheme; supported are {supported}")
        return storage

    async def get(self, url: str, into: Path, digest: Digest | None = None) -> int:
        """Write the object at ``url`` to the host file ``into``; its size."""
        return await self.storage_for(url).get(url, into, digest)

    async def put(self, path: Path, url: str) -> int:
        """Write the host file ``path`` to ``url``; its size."""
        return await self.storage_for(url).put(path, url)

    async def get_tree(self, url: str, into: Path) -> list[tuple[str, int]]:
        """Write every file under the directory ``url`` below ``into``; (path, size)s."""
        return await self.storage_for(url).get_tree(url, into)

    async def put_tree(self, directory: Path, url: str) -> list[tuple[str, int]]:
        """Write every regular file below ``directory`` under ``url``; (URL, size)s."""
        return await self.storage_for(url).put_tree(directory, url)

    async def close(self) -> None:
        """Close every storage."""
        for storage in {id(s): s for s in self._by_scheme.values()}.values():
            await storage.close()
