"""Moving files between URLs and the cell: http(s) and file URLs.

``file://`` URLs touch the host's own files, so they are allowed only under the
directories configured in ``transfer.file_roots``; anything else is refused
with a reason naming the rule. Downloads are checked against a checksum when one
is given, computed while the bytes arrive.
"""

# Local file writes here are 256 KiB chunks to the cell's own disk: cheaper done
# in place than handed to a thread each.
# ruff: noqa: ASYNC230, ASYNC240

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import tarfile
import zipfile
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import unquote, urlsplit

import aiohttp

CHUNK = 256 * 1024


class TransferError(Exception):
    """A download or upload failed; the message says why."""


class Transfers:
    """Fetches and sends files for the download and upload actions."""

    def __init__(self, file_roots: Sequence[Path] = (), timeout: float = 600.0) -> None:
        self.file_roots = tuple(p.resolve() for p in file_roots)
        self.timeout = aiohttp.ClientTimeout(total=timeout, sock_connect=30)

    def _local(self, url: str) -> Path:
        parts = urlsplit(url)
        if parts.netloc not in ("", "localhost"):
            raise TransferError(f"{url}: file URLs must name a local path")
        path = Path(unquote(parts.path)).resolve()
        if not any(path == root or root in path.parents for root in self.file_roots):
            roots = ", ".join(map(str, self.file_roots)) or "none configured"
            raise TransferError(f"{url}: file URLs must be under transfer.file_roots ({roots})")
        return path

    async def fetch(self, url: str, into: Path, algorithm: str = "", expected: str = "") -> int:
        """Download ``url`` to the host file ``into``; its size. Checks the checksum."""
        digest = hashlib.new(algorithm.lower()) if algorithm else None
        scheme = urlsplit(url).scheme
        size = 0
        if scheme == "file":
            source = self._local(url)
            try:
                size = await asyncio.to_thread(_copy, source, into, digest)
            except OSError as e:
                raise TransferError(f"{url}: {e.strerror}") from None
        elif scheme in ("http", "https"):
            try:
                async with (
                    aiohttp.ClientSession(timeout=self.timeout) as session,
                    session.get(url) as response,
                ):
                    if response.status >= 400:
                        raise TransferError(f"{url}: HTTP {response.status}")
                    with open(into, "wb") as f:
                        async for chunk in response.content.iter_chunked(CHUNK):
                            f.write(chunk)
                            size += len(chunk)
                            if digest is not None:
                                digest.update(chunk)
            except (aiohttp.ClientError, TimeoutError) as e:
                raise TransferError(f"{url}: {e or type(e).__name__}") from None
        else:
            raise TransferError(f"{url}: only http, https and file URLs are supported")
        if digest is not None and digest.hexdigest() != expected.lower():
            actual = digest.hexdigest()
            raise TransferError(
                f"{url}: {algorithm} checksum mismatch: expected {expected}, got {actual}"
            )
        return size

    async def send(self, path: Path, url: str) -> int:
        """Upload the host file ``path`` to ``url`` (an http(s) PUT, or a file URL)."""
        scheme = urlsplit(url).scheme
        size = path.stat().st_size
        if scheme == "file":
            target = self._local(url)
            try:
                await asyncio.to_thread(_copy, path, target, None)
            except OSError as e:
                raise TransferError(f"{url}: {e.strerror}") from None
            return size
        if scheme not in ("http", "https"):
            raise TransferError(f"{url}: only http, https and file URLs are supported")
        try:
            async with aiohttp.ClientSession(timeout=self.timeout) as session:
                with open(path, "rb") as body:
                    async with session.put(url, data=body) as response:
                        if response.status >= 300:
                            raise TransferError(f"{url}: HTTP {response.status}")
        except (aiohttp.ClientError, TimeoutError) as e:
            raise TransferError(f"{url}: {e or type(e).__name__}") from None
        return size


def _copy(source: Path, target: Path, digest: object) -> int:
    size = 0
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(source, "rb") as src, open(target, "wb") as dst:
        while chunk := src.read(CHUNK):
            dst.write(chunk)
            size += len(chunk)
            if digest is not None:
                digest.update(chunk)  # type: ignore[attr-defined]
    return size


def as_tar(download: Path, name: str, into: Path) -> None:
    """Make ``into`` a tar of what was downloaded.

    A tar (plain or gzipped) is used as it is; a zip is converted; any other file
    becomes a tar holding that one file as ``name``.
    """
    with open(download, "rb") as f:
        magic = f.read(4)
    if magic[:2] == b"\x1f\x8b" or tarfile.is_tarfile(download):
        with tarfile.open(download) as src, tarfile.open(into, "w") as dst:
            for member in src:
                data = src.extractfile(member) if member.isfile() else None
                dst.addfile(member, data)
        return
    if zipfile.is_zipfile(download):
        with zipfile.ZipFile(download) as src, tarfile.open(into, "w") as dst:
            for info in src.infolist():
                member = tarfile.TarInfo(info.filename.rstrip("/"))
                member.mode = (info.external_attr >> 16) & 0o777 or 0o644
                if info.is_dir():
                    member.type = tarfile.DIRTYPE
                    member.mode = member.mode | 0o755
                    dst.addfile(member)
                else:
                    member.size = info.file_size
                    with src.open(info) as data:
                        dst.addfile(member, data)
        return
    with tarfile.open(into, "w") as dst:
        member = dst.gettarinfo(str(download), arcname=name)
        member.uid = member.gid = 0
        member.uname = member.gname = ""
        with open(download, "rb") as data:
            dst.addfile(member, data)


def first_file_of_tar(tar: Path, limit: int | None = None) -> bytes:
    """The content of the first regular file in ``tar`` (at most ``limit`` bytes)."""
    with tarfile.open(tar) as archive:
        for member in archive:
            if member.isfile():
                data = archive.extractfile(member)
                assert data is not None
                return data.read(limit) if limit is not None else data.read()
    raise TransferError("not a regular file")


def extract_first_file(tar: Path, into: Path) -> None:
    """Write the first regular file in ``tar`` to ``into``."""
    with tarfile.open(tar) as archive:
        for member in archive:
            if member.isfile():
                data = archive.extractfile(member)
                assert data is not None
                with open(into, "wb") as out:
                    shutil.copyfileobj(data, out, CHUNK)
                return
    raise TransferError("not a regular file")


def file_name_of(url: str) -> str:
    """The last path segment of ``url``, as a file name."""
    name = os.path.basename(unquote(urlsplit(url).path))
    return name or "download"
