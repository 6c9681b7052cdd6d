"""Moving files between URLs and the cell: file, http(s) and s3 URLs.

``Transfers`` is what the download and upload actions see: it hands each URL to
``diego.storage`` (which refuses ``file://`` URLs outside ``transfer.file_roots``
with a reason naming the rule) and checks a download against its checksum,
computed while the bytes arrive. The archive helpers below turn what was fetched
into what a container takes in, and back.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from diego.storage import FileStorage, HttpStorage, S3Storage, StorageError, Storages
from diego.storage.base import CHUNK

if TYPE_CHECKING:
    from diego.config import TransferSettings


class TransferError(Exception):
    """A download or upload failed; the message says why."""


class Transfers:
    """Fetches and sends files and directories for the download and upload actions.

    Built from ``file_roots`` and ``timeout`` (with s3 URLs served by aiobotocore's
    defaults), or from ``[transfer]`` settings, or around given ``storages``.
    """

    def __init__(
        self,
        file_roots: Sequence[Path] = (),
        timeout: float = 600.0,
        *,
        storages: Storages | None = None,
    ) -> None:
        if storages is None:
            storages = Storages(
                [FileStorage(file_roots), HttpStorage(timeout), S3Storage(timeout=timeout)]
            )
        self.storages = storages

    @classmethod
    def from_settings(cls, settings: TransferSettings, base: Path) -> Transfers:
        """Transfers as ``[transfer]`` settings describe (file roots, relative ones
        below ``base``; timeout; S3)."""
        return cls(storages=Storages.from_settings(settings, base))

    async def fetch(self, url: str, into: Path, algorithm: str = "", expected: str = "") -> int:
        """Download ``url`` to the host file ``into``; its size. Checks the checksum."""
        digest = hashlib.new(algorithm.lower()) if algorithm else None
        try:
            size = await self.storages.get(url, into, digest)
        except StorageError as e:
            raise TransferError(str(e)) from None
        if digest is not None and digest.hexdigest() != expected.lower():
            actual = digest.hexdigest()
            raise TransferError(
                f"{url}: {algorithm} checksum mismatch: expected {expected}, got {actual}"
            )
        return size

    async def send(self, path: Path, url: str) -> int:
        """Upload the host file ``path`` to ``url``; its size."""
        try:
            return await self.storages.put(path, url)
        except StorageError as e:
            raise TransferError(str(e)) from None

    async def fetch_tree(self, url: str, into: Path) -> list[tuple[str, int]]:
        """Download every file under the directory ``url`` below ``into``; (path, size)s."""
        try:
            return await self.storages.get_tree(url, into)
        except StorageError as e:
            raise TransferError(str(e)) from None

    async def send_tree(self, directory: Path, url: str) -> list[tuple[str, int]]:
        """Upload every regular file below ``directory`` under ``url``; (URL, size)s."""
        try:
            return await self.storages.put_tree(directory, url)
        except StorageError as e:
            raise TransferError(str(e)) from None

    async def close(self) -> None:
        """Release the storages' connections."""
        await self.storages.close()


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
    tar_as(download, name, into)


def tar_as(source: Path, name: str, into: Path) -> None:
    """A tar of ``source`` (a file or a directory) named ``name``, owned by root."""

    def owned_by_root(member: tarfile.TarInfo) -> tarfile.TarInfo:
        member.uid = member.gid = 0
        member.uname = member.gname = ""
        return member

    with tarfile.open(into, "w") as tar:
        tar.add(source, arcname=name, filter=owned_by_root)


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
