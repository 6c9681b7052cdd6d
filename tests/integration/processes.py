"""Finding and waiting on the host processes a container runs, for the cell tests."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable
from pathlib import Path


def sleep_arg() -> str:
    """A `sleep` duration no other process on the host has in its argv."""
    return f"1000.{uuid.uuid4().int % 10**6:06d}"


def host_pids_with(arg: str) -> list[int]:
    """The pids of host processes with ``arg`` as one of their arguments."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if arg.encode() in argv:
            pids.append(int(entry.name))
    return pids


def sleeping(arg: str) -> list[int]:
    """The pids of `sleep arg` processes that are really running (past their sandbox's setup)."""
    pids = []
    for pid in host_pids_with(arg):
        with contextlib.suppress(OSError):
            if Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].endswith(b"sleep"):
                pids.append(pid)
    return pids


async def eventually(check: Callable[[], bool], within: float = 3.0) -> bool:
    """Poll ``check`` until it holds or ``within`` seconds pass; whether it held."""
    deadline = time.monotonic() + within
    while True:
        if check():
            return True
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
