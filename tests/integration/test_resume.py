"""A Task's action tree resumed by a restarted cell: the step journal, and the local
backend's processes found again (``reopen``, ``attach``) by a backend made anew on the
same directory, as a restarted node makes it."""

# ruff: noqa: ASYNC110
from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from diego.cell.backends.base import BackendError, ContainerSpec, ProcessSpec
from diego.cell.backends.local import LocalBackend
from diego.cell.journal import Journal
from diego.cell.steps import StepContext, StepFailed, perform
from diego.cell.transfer import Transfers
from diego.models.actions import RunAction, SerialAction, TimeoutAction
from tests.integration.test_local_backend import CONTAINER_UID, clean


@pytest.fixture(autouse=True)
def _needs_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("the local backend's isolation needs root")


@pytest.fixture
async def backend(tmp_path: Path) -> AsyncIterator[LocalBackend]:
    made = LocalBackend(tmp_path / "containers", container_uid=CONTAINER_UID)
    try:
        yield made
    finally:
        await clean(made)


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
    restarted = LocalBackend(backend.root, container_uid=CONTAINER_UID)
    assert [c.guid for c in await restarted.existing()] == [guid]
    spec = ContainerSpec(guid=guid)
    assert await restarted.reopen(spec)
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
    guid = f"ended-{uuid.uuid4().hex[:8]}"
    spec = ContainerSpec(guid=guid)
    await backend.create(spec)
    key = "0"
    proc = await backend.run(
        guid, ProcessSpec("/bin/sh", ("-c", "echo out; exit 7"), key=key), print, print
    )
    assert await proc.wait() == 7
    restarted = LocalBackend(backend.root, container_uid=CONTAINER_UID)
    assert await restarted.reopen(spec)
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
    guid = f"lost-{uuid.uuid4().hex[:8]}"
    spec = ContainerSpec(guid=guid)
    await backend.create(spec)
    journal = Journal(tmp_path / "journal")
    lines: list[str] = []
    life = asyncio.create_task(perform(sh("sleep 1000"), context(backend, guid, journal, lines)))
    pid_file = backend.root / guid / "procs" / "k-0" / "pid"
    while not pid_file.exists() or not pid_file.read_text().strip():
        await asyncio.sleep(0.02)
    life.cancel()  # kills the shim and everything under it, as a reboot would
    with pytest.raises(asyncio.CancelledError):
        await life
    restarted = LocalBackend(backend.root, container_uid=CONTAINER_UID)
    assert await restarted.reopen(spec)
    with pytest.raises(BackendError, match="left no exit status"):
        await restarted.attach(guid, "0", print, print)
    resumed = Journal.resume(tmp_path / "journal")
    with pytest.raises(StepFailed, match=r"^interrupted: the process ended while the cell"):
        await perform(sh("sleep 1000"), context(restarted, guid, resumed, lines))
    await restarted.destroy(guid)


async def test_a_resumed_timeout_keeps_the_deadline_it_began_with(
    backend: LocalBackend, tmp_path: Path
) -> None:
    guid = f"deadline-{uuid.uuid4().hex[:8]}"
    await backend.create(ContainerSpec(guid=guid))
    path = tmp_path / "journal"
    path.write_text(json.dumps({"k": "0", "t": time.time() - 10}) + "\n")  # 10 s ago
    tree = TimeoutAction(action=sh("sleep 1000"), timeout_ms=5000)
    lines: list[str] = []
    started = time.monotonic()
    with pytest.raises(StepFailed, match="exceeded 5s timeout"):
        await perform(tree, context(backend, guid, Journal.resume(path), lines))
    assert time.monotonic() - started < 4  # not 5 s more
    await backend.destroy(guid)


async def test_a_shim_is_in_a_session_of_its_own(backend: LocalBackend) -> None:
    """Nothing sent to the node's session or group reaches a container's process."""
    guid = f"session-{uuid.uuid4().hex[:8]}"
    await backend.create(ContainerSpec(guid=guid))
    proc = await backend.run(guid, ProcessSpec("/bin/sleep", ("1",), key="0"), print, print)
    pid_file = backend.root / guid / "procs" / "k-0" / "pid"
    while not pid_file.exists() or not pid_file.read_text().strip():
        await asyncio.sleep(0.02)
    pid = int(pid_file.read_text().split()[0])
    assert os.getsid(pid) == os.getpgid(pid) == pid != os.getsid(0)
    assert await proc.wait() == 0
    await backend.destroy(guid)
