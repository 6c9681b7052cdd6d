"""``file://`` URLs: the host's own files, only under the operator's directories.

A file URL touches the machine the cell runs on, so it is allowed only under the
directories of ``transfer.file_roots``; anything else is refused with a reason
naming that rule. Paths are resolved, symbolic links included, before the check,
so a link cannot lead out of the roots.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

from diego.storage.base import (
    Digest,
    StorageError,
    copy_file,
    join_url,
    regular_files,
)


class FileStorage:
    """Copies between host files under ``roots`` and other host files."""

    schemes: tuple[str, ...] = ("file",)

    def __init__(self, roots: Iterable[Path] = ()) -> None:
        self.roots = tuple(Path(p).resolve() for p in roots)

    def local(self, url: str) -> Path:
        """The resolved host path of ``url``; refused unless under the roots."""
        parts = urlsplit(url)
        if parts.netloc not in ("", "localhost"):
            raise StorageError(f"{url}: file URLs must name a local path")
        return self._allowed(url, Path(unquote(parts.path)).resolve())

    def _allowed(self, url: str, path: Path) -> Path:
        if not any(path == root or root in path.parents for root in self.roots):
            roots = ", ".join(map(str, self.roots)) or "none configured"
            raise StorageError(f"{url}: file URLs must be under transfer.file_roots ({roots})")
        return path

    async def get(self, url: str, into: Path, digest: Digest | None = None) -> int:
        """Copy the host file of ``url`` to ``into``; its size."""
        source = self.local(url)
        return await _copy(url, source, into, digest)

    async def put(self, path: Path, url: str) -> int:
        """Copy the host file ``path`` to the file of ``url``; its size."""
        target = self.local(url)
        return await _copy(url, path, target, None)

    async def get_tree(self, url: str, into: Path) -> list[tuple[str, int]]:
        """Copy every file below the directory of ``url`` below ``into``."""
        source = self.local(url)
        if not source.is_dir():
            raise StorageError(f"{url}: not a directory")
        copied = []
        for path, relative in await asyncio.to_thread(_files_below, source):
            real = self._allowed(join_url(url, relative), path.resolve())
            size = await _copy(url, real, into / relative, None)
            copied.append((relative, size))
        return copied

    async def put_tree(self, directory: Path, url: str) -> list[tuple[str, int]]:
        """Copy every regular file below ``directory`` below the directory of ``url``."""
        target = self.local(url)
        sent = []
        for path, relative in await asyncio.to_thread(regular_files, directory, url):
            file_url = join_url(url, quote(relative))
            # Resolved again: a link already inside the target must not lead out.
            destination = self._allowed(file_url, (target / relative).resolve())
            sent.append((file_url, await _copy(file_url, path, destination, None)))
        return sorted(sent)

    async def close(self) -> None:
        """Nothing to release."""


def _files_below(directory: Path) -> list[tuple[Path, str]]:
    """Every file below ``directory`` (links to files included), sorted by relative path."""
    found = [
        (path, path.relative_to(directory).as_posix())
        for path in directory.rglob("*")
        if path.is_file()
    ]
    return sorted(found, key=lambda pair: pair[1])


async def _copy(url: str, source: Path, target: Path, digest: Digest | None) -> int:
    try:
        return await asyncio.to_thread(copy_file, source, target, digest)
    except OSError as e:
        raise StorageError(f"{url}: {e.strerror or e}") from None
