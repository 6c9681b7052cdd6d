"""What every storage does: the ``Storage`` protocol, its error, shared helpers.

A storage moves bytes between URLs of one or more schemes and host files. Diego's
download and upload actions use ``get`` and ``put``; GA4GH TES inputs and outputs
of type DIRECTORY use ``get_tree`` and ``put_tree``, where a "directory" URL is a
prefix under which each file keeps its relative path.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from typing import Protocol

CHUNK = 256 * 1024


class StorageError(Exception):
    """A transfer failed; the message names the URL and why."""


class Digest(Protocol):
    """What a checksum (a ``hashlib`` object) needs to be fed."""

    def update(self, data: bytes, /) -> None:
        """Add ``data`` to the checksum."""


class Storage(Protocol):
    """Moves files between URLs of its ``schemes`` and host files."""

    schemes: tuple[str, ...]

    async def get(self, url: str, into: Path, digest: Digest | None = None) -> int:
        """Write the object at ``url`` to the host file ``into``; its size.

        ``digest``, when given, is fed the bytes as they arrive.
        """
        ...

    async def put(self, path: Path, url: str) -> int:
        """Write the host file ``path`` to ``url``; its size."""
        ...

    async def get_tree(self, url: str, into: Path) -> list[tuple[str, int]]:
        """Write every file under the directory ``url`` below ``into``.

        Returns each file's path relative to ``url`` and its size, sorted.
        """
        ...

    async def put_tree(self, directory: Path, url: str) -> list[tuple[str, int]]:
        """Write every regular file below ``directory`` under the directory ``url``.

        Returns the URL each file went to and its size, sorted.
        """
        ...

    async def close(self) -> None:
        """Release connections; the storage may not be used afterwards."""
        ...


def regular_files(directory: Path, url: str) -> list[tuple[Path, str]]:
    """Every regular file below ``directory`` (bound for ``url``) and its relative
    POSIX path, sorted.

    Symbolic links are neither followed nor returned: an output directory made by
    a container must not carry a link to one of the host's own files out.
    """
    if directory.is_symlink() or not directory.is_dir():
        raise StorageError(f"{url}: {directory} is not a directory")
    found: list[tuple[Path, str]] = []
    for top, _dirs, files in os.walk(directory):
        for name in files:
            path = Path(top, name)
            if not path.is_symlink() and path.is_file():
                found.append((path, path.relative_to(directory).as_posix()))
    return sorted(found, key=lambda pair: pair[1])


def safe_relative(url: str, relative: str) -> PurePosixPath:
    """``relative`` as a path that stays below the directory it is joined to."""
    path = PurePosixPath(relative)
    if not relative or path.is_absolute() or ".." in path.parts:
        raise StorageError(f"{url}: {relative!r} is not a path inside the directory")
    return path


def join_url(url: str, relative: str) -> str:
    """The URL of ``relative`` under the directory URL ``url``."""
    return f"{url.rstrip('/')}/{relative}"


def copy_file(source: Path, target: Path, digest: Digest | None = None) -> int:
    """Copy ``source`` to ``target`` (making its directory) in chunks; the size."""
    size = 0
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(source, "rb") as src, open(target, "wb") as dst:
        while chunk := src.read(CHUNK):
            dst.write(chunk)
            size += len(chunk)
            if digest is not None:
                digest.update(chunk)
    return size
