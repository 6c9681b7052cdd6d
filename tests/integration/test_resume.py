"""A Task's action tree resumed by a restarted cell: the step journal, and the local
backend's processes found again (``reopen``, ``attach``) by a backend made anew on the
same directory, as a restarted node makes it."""

# ruff: noqa: ASYNC110, F811  (F811: the fixtures imported from test_local_backend)
from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import uuid
from pathlib import Path

import pytest

from diego.cell.backends.base import BackendError, ContainerSpec, ProcessSpec
from diego.cell.backends.local import LocalBackend
from diego.cell.journal import Journal
from diego.cell.steps import StepContext, StepFailed, perform
from diego.cell.transfer import Transfers
from diego.models.actions import RunAction, SerialAction, TimeoutAction
from tests.integration.test_local_backend import (  # the fixtures, not written again
    CONTAINER_UID,
    _needs_root,  # noqa: F401
    backend,  # noqa: F401
)


async def made(backend: LocalBackend, name: str) -> ContainerSpec:
    """A new container of ``backend``, its guid unique to this test."""
    spec = ContainerSpec(guid=f"{name}-{uuid.uuid4().hex[:8]}")
    await backend.create(spec)
    return spec


async def reopened(backend: LocalBackend, spec: ContainerSpec) -> LocalBackend:
    """A backend made anew on ``backend``'s directory, as a restarted cell makes it,
    with ``spec``'s container taken back."""
    restarted = LocalBackend(backend.root, container_uid=CONTAINER_UID)
    assert await restarted.reopen(spec)
    return restarted


async def shim_pid(backend: LocalBackend, guid: str, key: str = "0") -> int:
    """The pid process ``key``'s shim records, once it has."""
    pid_file = backend.root / guid / "procs" / f"k-{key}" / "pid"
    while not pid_file.exists() or not pid_file.read_text().strip():
        await asyncio.sleep(0.02)
    return int(pid_file.read_text().split()[0])


def sh(script: str) -> RunAction:
    return RunAction(path="/bin/sh", args=("-c", script))


def context(backend: LocalBackend, guid: str, journal: Journal, lines: list[str]) -> StepContext:
    return StepContext(
        backend,
        guid,
        lambda _source, _stream, line: lines.append(line),
        Transfers(),
        Path("/nonexistent"),
        "TASK",
        journal,
    )


async def read(backend: LocalBackend, guid: str, path: str) -> str:
    lines: list[str] = []
    proc = await backend.run(guid, ProcessSpec("/bin/cat", (path,)), lines.append, lines.append)
    await proc.wait()
    return "\n".join(lines)


def test_the_journal_reads_back_what_it_wrote_and_skips_a_torn_line(tmp_path: Path) -> None:
    path = tmp_path / "journals" / "g"
    journal = Journal(path)
    assert not journal.resumed
    journal.ended("0.0", "")
    journal.ended("0.1", "Exited with status 3")
    assert journal.began("0.2", 100.0) == 100.0
    assert journal.began("0.2", 200.0) == 100.0  # the first time counts
    journal.close()
    with path.open("a") as f:
        f.write('{"k": "0.3", "r"')  # the node died mid-line
    again = Journal.resume(path)
    assert again.resumed
    assert (again.outcome("0.0"), again.outcome("0.1"), again.outcome("0.3")) == (
        "",
        "Exited with status 3",
        None,
    )
    assert again.began("0.2", 300.0) == 100.0
    again.remove()
    assert not path.exists()
    assert Journal.resume(path).outcome("0.0") is None  # none written: nothing done


FIRST_LIFE = """
import asyncio, sys
from pathlib import Path
from diego.cell.backends.base import ContainerSpec
from diego.cell.backends.local import LocalBackend
from diego.cell.journal import Journal
from diego.cell.steps import StepContext, perform
from diego.cell.transfer import Transfers
from diego.models.actions import RunAction, SerialAction

root, guid, journal, uid = sys.argv[1:]
STEPS = ("echo a >> /tmp/steps", "STEP_2", "echo c >> /tmp/steps")

def line(_source, _stream, text):
    print(text, flush=True)

async def main():
    backend = LocalBackend(Path(root), container_uid=int(uid))
    await backend.create(ContainerSpec(guid=guid))
    tree = SerialAction(actions=tuple(RunAction(path="/bin/sh", args=("-c", s)) for s in STEPS))
    ctx = StepContext(backend, guid, line, Transfers(), Path("/nonexistent"), "TASK",
                      Journal(Path(journal)))
    await perform(tree, ctx)

asyncio.run(main())
"""
STEP_2 = "[ ! -e /tmp/ran ] || exit 3; touch /tmp/ran; echo napping; sleep 1; echo b >> /tmp/steps"


async def test_a_resumed_tree_skips_what_ended_and_attaches_to_what_runs(
    backend: LocalBackend, tmp_path: Path
) -> None:
    """A cell process killed -9 in the second of three steps: the restarted cell does
    not run the first again, waits for the second (still running), runs the third."""
    guid = f"resume-{uuid.uuid4().hex[:8]}"
    journal = tmp_path / "journal"
    first = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        FIRST_LIFE.replace("STEP_2", STEP_2),
        str(backend.root),
        guid,
        str(journal),
        str(CONTAINER_UID),
        stdout=asyncio.subprocess.PIPE,
        cwd=Path(__file__).parents[2],
    )
    assert first.stdout is not None
    async with asyncio.timeout(20):
        while (await first.stdout.readline()).strip() != b"napping":
            pass
    first.kill()  # the cell dies in the second step
    await first.wait()
    spec = ContainerSpec(guid=guid)
    assert [c.guid for c in await backend.existing()] == [guid]
    restarted = await reopened(backend, spec)
    assert not await restarted.reopen(spec)  # once
    resumed = Journal.resume(journal)
    assert resumed.outcome("0.0") == ""
    assert resumed.outcome("0.1") is None
    lines: list[str] = []
    tree = SerialAction(
        actions=(sh("echo a >> /tmp/steps"), sh(STEP_2), sh("echo c >> /tmp/steps"))
    )
    await perform(tree, context(restarted, guid, resumed, lines))
    assert await read(restarted, guid, "/tmp/steps") == "a\nb\nc"
    assert "napping" in lines  # the attached step's output, read again from its file
    await restarted.destroy(guid)


async def test_a_step_that_ended_while_the_cell_was_down_ends_as_it_ended(
    backend: LocalBackend, tmp_path: Path
) -> None:
    spec = await made(backend, "ended")
    guid, key = spec.guid, "0"
    proc = await backend.run(
        guid, ProcessSpec("/bin/sh", ("-c", "echo out; exit 7"), key=key), print, print
    )
    assert await proc.wait() == 7
    restarted = await reopened(backend, spec)
    lines: list[str] = []
    attached = await restarted.attach(guid, key, lines.append, lines.append)
    assert attached is not None
    assert await attached.wait() == 7
    assert lines == ["out"]
    assert await restarted.attach(guid, "never-started", print, print) is None
    await restarted.destroy(guid)


async def test_a_process_gone_without_a_status_is_an_interrupted_step(
    backend: LocalBackend, tmp_path: Path
) -> None:
    """The machine restarted (say): the shim left no exit status, and no process runs."""
    spec = await made(backend, "lost")
    guid = spec.guid
    journal = Journal(tmp_path / "journal")
    lines: list[str] = []
    life = asyncio.create_task(perform(sh("sleep 1000"), context(backend, guid, journal, lines)))
    await shim_pid(backend, guid)
    life.cancel()  # kills the shim and everything under it, as a reboot would
    with pytest.raises(asyncio.CancelledError):
        await life
    restarted = await reopened(backend, spec)
    with pytest.raises(BackendError, match="left no exit status"):
        await restarted.attach(guid, "0", print, print)
    resumed = Journal.resume(tmp_path / "journal")
    with pytest.raises(StepFailed, match=r"^interrupted: the process ended while the cell"):
        await perform(sh("sleep 1000"), context(restarted, guid, resumed, lines))
    await restarted.destroy(guid)


async def test_a_resumed_timeout_keeps_the_deadline_it_began_with(
    backend: LocalBackend, tmp_path: Path
) -> None:
    # An hour's timeout that began an hour and a second ago: kept, it fails at once;
    # started afresh, the test would outlast its own timeout.
    guid = (await made(backend, "deadline")).guid
    path = tmp_path / "journal"
    path.write_text(json.dumps({"k": "0", "t": time.time() - 3601}) + "\n")
    tree = TimeoutAction(action=sh("sleep 1000"), timeout_ms=3_600_000)
    with pytest.raises(StepFailed, match="exceeded 1h0m0s timeout"):
        await perform(tree, context(backend, guid, Journal.resume(path), []))
    await backend.destroy(guid)


async def test_a_shim_is_in_a_session_of_its_own(backend: LocalBackend) -> None:
    """Nothing sent to the node's session or group reaches a container's process."""
    guid = (await made(backend, "session")).guid
    proc = await backend.run(guid, ProcessSpec("/bin/sleep", ("1",), key="0"), print, print)
    pid = await shim_pid(backend, guid)
    assert os.getsid(pid) == os.getpgid(pid) == pid != os.getsid(0)
    assert await proc.wait() == 0
    await backend.destroy(guid)
