"""``http://`` and ``https://`` URLs: GET to read, PUT to write, streamed in chunks.

HTTP has no way to list a "directory", so trees are refused over it.
"""

# Local file writes and stats here are the cell's own disk, in 256 KiB chunks:
# cheaper done in place than handed to a thread each.
# ruff: noqa: ASYNC230, ASYNC240

from __future__ import annotations

from pathlib import Path

import aiohttp

from diego.storage.base import CHUNK, Digest, StorageError


class HttpStorage:
    """GETs and PUTs whole files, each within ``timeout`` seconds."""

    schemes: tuple[str, ...] = ("http", "https")

    def __init__(self, timeout: float = 600.0) -> None:
        self.timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=30)

    async def get(self, url: str, into: Path, digest: Digest | None = None) -> int:
        """GET ``url`` into the host file ``into``; its size."""
        size = 0
        try:
            async with (
                aiohttp.ClientSession(timeout=self.timeout) as session,
                session.get(url) as response,
            ):
                if response.status >= 400:
                    raise StorageError(f"{url}: HTTP {response.status}")
                with open(into, "wb") as f:
                    async for chunk in response.content.iter_chunked(CHUNK):
                        f.write(chunk)
                        size += len(chunk)
                        if digest is not None:
                            digest.update(chunk)
        except (aiohttp.ClientError, TimeoutError) as e:
            raise StorageError(f"{url}: {e or type(e).__name__}") from None
        return size

    async def put(self, path: Path, url: str) -> int:
        """PUT the host file ``path`` to ``url``; its size."""
        size = path.stat().st_size
        try:
            async with aiohttp.ClientSession(timeout=self.timeout) as session:
                with open(path, "rb") as body:
                    async with session.put(url, data=body) as response:
                        if response.status >= 300:
                            raise StorageError(f"{url}: HTTP {response.status}")
        except (aiohttp.ClientError, TimeoutError) as e:
            raise StorageError(f"{url}: {e or type(e).__name__}") from None
        return size

    async def get_tree(self, url: str, into: Path) -> list[tuple[str, int]]:
        """Refused: HTTP cannot list a directory."""
        raise StorageError(f"{url}: directories are not supported over http(s)")

    async def put_tree(self, directory: Path, url: str) -> list[tuple[str, int]]:
        """Refused: HTTP cannot list a directory."""
        raise StorageError(f"{url}: directories are not supported over http(s)")

    async def close(self) -> None:
        """Nothing to release: each transfer has its own session."""
