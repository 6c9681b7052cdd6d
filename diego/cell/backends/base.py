"""The interface every backend offers the executor.

A backend makes containers and runs processes in them; it knows nothing of
Tasks, the BBS or the action tree. Files cross the container boundary only as
tar streams (``stream_in`` / ``stream_out``), unpacked and packed *inside* the
container, so a path with ``..`` resolves within the container's own view and
cannot reach the host.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Protocol

import attrs

from diego.models.cells import Capabilities
from diego.models.task import SecurityGroupRule

OutputSink = Callable[[str], None]
"""Receives one line of a process's output (without its newline)."""


@attrs.frozen
class ContainerSpec:
    """What a container is made with."""

    guid: str
    memory_mb: int = 0  # 0: no limit
    disk_mb: int = 0  # 0: no limit
    cpu_weight: int = 100  # 1-100, relative to other containers
    max_pids: int = 0  # the most processes (and threads) at once; 0: no limit
    privileged: bool = False
    network: bool = False  # False: loopback only
    env: tuple[tuple[str, str], ...] = ()
    stack: str = ""
    root_fs: str = ""  # "" or preloaded:NAME: the stack's own root; docker:///org/image#tag
    rules: tuple[SecurityGroupRule, ...] = ()  # egress allowed when ``network`` is set
    labels: tuple[tuple[str, str], ...] = ()  # kept with the container, given back by existing()
    # Absolute container paths (a TES task's inputs, outputs, volumes, workdir) that
    # are writable directories after create, the same files seen by every process of
    # the container and by stream_in/stream_out. A backend may limit where they lie
    # (the local one: under a top-level directory the host lacks, /tmp or /home/vcap).
    volumes: tuple[str, ...] = ()


@attrs.frozen
class Leftover:
    """A container an earlier run of the cell left behind, as ``existing()`` finds it."""

    guid: str
    memory_mb: int = 0
    disk_mb: int = 0
    labels: Mapping[str, str] = attrs.Factory(dict)


@attrs.frozen
class ProcessSpec:
    """A process to run in a container."""

    path: str
    args: tuple[str, ...] = ()
    dir: str = ""
    env: tuple[tuple[str, str], ...] = ()
    user: str = "root"
    nofile: int | None = None
    image: str = ""  # another image to run in (Docker); "" or unsupported: the container's
    # A name for the process, unique in its container, that a restarted cell can
    # find it again by (``Backend.attach``); "" for a process nobody looks for again.
    key: str = ""


class GuidLocks:
    """One lock per container guid: making and destroying a container never interleave.

    A lock is dropped once its container is destroyed and nobody holds it.
    """

    def __init__(self) -> None:
        self._locks: dict[str, asyncio.Lock] = {}

    def __call__(self, guid: str) -> asyncio.Lock:
        """The lock of ``guid``."""
        lock = self._locks.get(guid)
        if lock is None:
            lock = self._locks[guid] = asyncio.Lock()
        return lock

    async def make(self, guid: str, making: Callable[[], Awaitable[None]]) -> None:
        """Run ``making`` under the guid's lock, to its end even if the caller is
        cancelled: a container half made cannot be taken back, so a destroy waits
        for it and then removes all of it."""

        async def locked() -> None:
            async with self(guid):
                await making()

        await asyncio.shield(asyncio.ensure_future(locked()))

    async def remove(self, guid: str, removing: Callable[[], Awaitable[None]]) -> None:
        """Run ``removing`` under the guid's lock, then drop the lock if nobody holds it."""
        async with self(guid):
            await removing()
        lock = self._locks.get(guid)
        if lock is not None and not lock.locked():
            del self._locks[guid]


class BackendError(Exception):
    """The backend could not do what was asked; the message says why."""


class Process(Protocol):
    """A process running in a container."""

    async def wait(self) -> int:
        """Its exit status (128 + N when killed by signal N)."""
        ...

    def kill(self) -> None:
        """Kill it and everything it started."""
        ...


KILL_GRACE = 5.0
"""Seconds a killed process is waited for (its end, the rest of its output)."""


async def kill_and_wait(process: Process) -> None:
    """Kill ``process`` and wait (a while) for it to be gone and its output read."""
    process.kill()
    with contextlib.suppress(TimeoutError, Exception):
        async with asyncio.timeout(KILL_GRACE):
            await asyncio.shield(process.wait())


class Backend(Protocol):
    """Makes containers and runs processes in them."""

    def capabilities(self) -> Capabilities:
        """What this backend enforces here."""
        ...

    async def create(self, spec: ContainerSpec) -> None:
        """Make the container ``spec.guid``."""
        ...

    async def run(
        self, guid: str, process: ProcessSpec, stdout: OutputSink, stderr: OutputSink
    ) -> Process:
        """Start ``process`` in container ``guid``; its output goes to the sinks."""
        ...

    async def reopen(self, spec: ContainerSpec) -> bool:
        """Take back container ``spec.guid``, left by an earlier run of this cell with
        its processes running on: False if this backend cannot (or it is gone)."""
        ...

    async def began(self, guid: str) -> bool:
        """Whether any run of the cell ever started a process in container ``guid``
        (its files say so); False for one an earlier run left half made."""
        ...

    async def attach(
        self, guid: str, key: str, stdout: OutputSink, stderr: OutputSink
    ) -> Process | None:
        """The process an earlier run of the cell started as ``key`` in a reopened
        container, running or exited (its whole output goes to the sinks); None if
        none was started. A process that ended leaving no exit status (the machine
        restarted) is a BackendError."""
        ...

    async def stream_in(self, guid: str, directory: str, tar: Path) -> None:
        """Unpack the tar archive at host path ``tar`` into ``directory`` in the container."""
        ...

    async def stream_out(self, guid: str, path: str, into: Path) -> None:
        """Write a tar archive of ``path`` in the container to host path ``into``."""
        ...

    def out_of_memory(self, guid: str) -> bool:
        """Whether the kernel killed a process of the container for memory."""
        ...

    def pids_limit_reached(self, guid: str) -> int:
        """The container's ``max_pids`` if a fork in it has failed at that limit, else 0."""
        ...

    async def destroy(self, guid: str) -> None:
        """Kill every process of the container and remove it; no error if absent."""
        ...

    async def existing(self) -> list[Leftover]:
        """The containers left from an earlier run of this cell."""
        ...

    async def close(self) -> None:
        """Release what the backend holds once every container is destroyed."""
        ...
