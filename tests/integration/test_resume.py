"""A Task's action tree resumed by a restarted cell: the step journal, and the local
backend's processes found again (``reopen``, ``attach``) by a backend made anew on the
same directory, as a restarted node makes it."""

# ruff: noqa: ASYNC110, F811  (F811: the fixtures imported from test_local_backend)
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from diego.cell.backends import local
from diego.cell.backends.base import BackendError, ContainerSpec, ProcessSpec
from diego.cell.backends.local import LocalBackend, remove_strays
from diego.cell.backends.shim import (
    MAX_LINE,
    PUNCH_AT,
    READ_BUDGET,
    Lines,
    ProcessFiles,
    exit_status,
    record_pid,
    unrecorded,
)
from diego.cell.executor import ContainerCompleted, ContainerEvent, Executor, RunRequest
from diego.cell.journal import Journal
from diego.cell.steps import StepContext, StepFailed, perform
from diego.cell.tes_job import TesJob
from diego.cell.transfer import Transfers
from diego.clock import SystemClock
from diego.logs import LogStore
from diego.models.actions import RunAction, SerialAction, TimeoutAction
from diego.models.codec import encode
from diego.models.tes import (
    TesExecutor,
    TesExecutorLog,
    TesInput,
    TesOutput,
    TesOutputFileLog,
    TesState,
    TesTask,
)
from diego.models.work import Resources
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
    restarted = anew(backend)
    assert await restarted.reopen(spec)
    return restarted


def anew(backend: LocalBackend) -> LocalBackend:
    """A backend made anew on ``backend``'s directory, as a restarted cell makes it."""
    return LocalBackend(backend.root, container_uid=CONTAINER_UID)


async def unmounted(backend: LocalBackend, name: str) -> ContainerSpec:
    """A new container with a disk, which is then unmounted (as after a reboot)."""
    spec = ContainerSpec(guid=f"{name}-{uuid.uuid4().hex[:8]}", disk_mb=16)
    await backend.create(spec)
    rw = backend.root / spec.guid / "rw"
    if not rw.is_mount():
        pytest.skip("no loop devices: disk_mb is not enforced here")
    umount = await asyncio.create_subprocess_exec("umount", str(rw))
    assert await umount.wait() == 0
    return spec


def executor_of(
    backend: LocalBackend, tmp_path: Path, on_event: Callable[[ContainerEvent], None]
) -> Executor:
    """A restarted cell's executor on ``backend``, its journals in tmp_path/journals."""
    return Executor(
        backend,
        Resources(10_000, 10_000, 20),
        LogStore(SystemClock()),
        Transfers(),
        tmp_path / "scratch",
        on_event,
        journals=tmp_path / "journals",
    )


async def until_gone(pid: int) -> bool:
    """Whether ``pid`` exits (or is left a zombie) within 5 s."""
    for _ in range(500):
        if _gone(pid):
            return True
        await asyncio.sleep(0.01)
    return _gone(pid)


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


async def test_a_process_whose_shim_never_ran_is_not_found(backend: LocalBackend) -> None:
    """Its directory is there (the cell died as it spawned it) but its shim recorded
    nothing and none runs: a shim records its pid before anything else, so the command
    never ran either, and attach says it never started (the step then runs)."""
    spec = await made(backend, "spawning")
    (backend.root / spec.guid / "procs" / "k-0").mkdir(parents=True)
    restarted = await reopened(backend, spec)
    assert await restarted.attach(spec.guid, "0", print, print) is None
    await restarted.destroy(spec.guid)


def test_a_pid_file_being_written_reads_as_not_yet_recorded(tmp_path: Path) -> None:
    """A shim's pid file opened but not yet written (or cut short) is no pid: the
    process is being started, not gone without a status. The node writes its own
    records whole, by a rename."""
    files = ProcessFiles(tmp_path / "k-0", kept=True)
    files.make()
    assert unrecorded(files)
    files.pid.write_text("")
    assert unrecorded(files)
    files.pid.write_text(f"{os.getpid()}")  # no start time: cut short
    assert unrecorded(files)
    record_pid(files, os.getpid())
    assert not unrecorded(files)
    assert sorted(p.name for p in files.mine.iterdir()) == ["err", "out", "pid"]


def test_a_parked_shell_is_found_alive_while_its_shim_rewrites_the_pid_file(
    tmp_path: Path,
) -> None:
    """The shim's own record empties the pid file before writing it; a restarted cell
    reading it then still finds the parked shell alive, and so waits for it rather
    than start the step again."""
    files = ProcessFiles(tmp_path / "k-0", kept=True)
    files.make()
    record_pid(files, os.getpid(), parked=True)
    files.pid.write_text("")  # the shim's redirection, caught between open and write
    assert unrecorded(files)
    assert local._shim_alive(files)


async def test_a_parked_shell_gone_before_its_first_line_never_started(
    backend: LocalBackend,
) -> None:
    """A spare's parked shell, recorded by the node, that ended before its shim's first
    line (the node died as it wrote the shim's text: a text cut short runs nothing)
    never ran the command: attach says it never started, so the step runs, rather
    than fail as a process that ended while the cell was down."""
    spec = await made(backend, "parked")
    files = ProcessFiles(backend.root / spec.guid / "procs" / "k-0", kept=True)
    files.dir.mkdir(parents=True)
    shell = await asyncio.create_subprocess_exec("/bin/sh", "-c", "sleep 30")
    record_pid(files, shell.pid, parked=True)
    assert unrecorded(files)
    shell.kill()
    await shell.wait()
    restarted = await reopened(backend, spec)
    assert await restarted.attach(spec.guid, "0", print, print) is None
    await restarted.destroy(spec.guid)


async def test_a_container_whose_disk_or_groups_are_gone_is_not_reopened(
    backend: LocalBackend,
) -> None:
    """After a reboot a container's disk is unmounted and its cgroups are gone: taken
    back, it would run without its limits, so reopen says no."""
    spec = await unmounted(backend, "rebooted")
    assert not await anew(backend).reopen(spec)
    await backend.destroy(spec.guid)

    spec = await made(backend, "ungrouped")
    dirs = [d for d in backend.cgroup_dirs(spec.guid) if d.is_dir()]
    if not dirs:
        pytest.skip("no cgroups here")
    for d in sorted(dirs, key=lambda p: len(p.parts), reverse=True):
        for sub in sorted(d.rglob("*/"), key=lambda p: len(p.parts), reverse=True):
            if sub.is_dir():
                sub.rmdir()
        d.rmdir()
    assert not await anew(backend).reopen(spec)
    await backend.destroy(spec.guid)


async def test_destroy_kills_an_earlier_runs_shims_it_never_reattached(
    backend: LocalBackend,
) -> None:
    """A container left by an earlier run and destroyed without being reopened: its
    recorded shims are killed by their pids, whether or not a cgroup holds them (the
    process here is in none of the container's groups, as on a cell without cgroups)."""
    spec = await made(backend, "orphan")
    outside = await asyncio.create_subprocess_exec("sleep", "1000", start_new_session=True)
    try:
        files = ProcessFiles(backend.root / spec.guid / "procs" / "k-0", kept=True)
        files.dir.mkdir(parents=True)
        record_pid(files, outside.pid)
        await anew(backend).destroy(spec.guid)  # knows no container of that guid
        assert await until_gone(outside.pid)
    finally:
        with contextlib.suppress(ProcessLookupError):
            outside.kill()
        await outside.wait()
    await backend.destroy(spec.guid)


def _gone(pid: int) -> bool:
    """Whether ``pid`` has exited (gone, or a zombie its parent has not reaped)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def test_a_new_journal_does_not_take_a_stale_ones_entries(tmp_path: Path) -> None:
    """A container made again under a guid whose journal an earlier life left starts
    with an empty journal."""
    path = tmp_path / "journal"
    path.write_text(json.dumps({"k": "0", "r": ""}) + "\n")
    journal = Journal(path)
    journal.ended("1", "")
    journal.close()
    again = Journal.resume(path)
    assert (again.outcome("0"), again.outcome("1")) == (None, "")


def test_output_read_again_after_a_restart_starts_at_a_whole_line(tmp_path: Path) -> None:
    """A reader frees what it has read up to the start of a line and records where: a
    reader made again (a restarted node) starts there, with no line torn and none of
    what was freed; an unended line comes once it is whole; a line of exactly
    MAX_LINE is one line; one read takes READ_BUDGET bytes at most."""
    out = tmp_path / "out"
    line = b"z" * 99 + b"\n"
    count = PUNCH_AT // len(line) + 2
    with out.open("ab") as f:
        f.write(line * count + b"unen")
    lines: list[str] = []
    first = Lines(out, tmp_path / "out.at", lines.append)
    while first.read():
        pass
    assert lines == ["z" * 99] * count
    first.close(final=False)  # the node died: "unen" is not handed over

    with out.open("ab") as f:
        f.write(b"ded\n" + b"x" * MAX_LINE + b"\n")
    again: list[str] = []
    second = Lines(out, tmp_path / "out.at", again.append)
    while second.read():
        pass
    second.close(final=True)
    assert again[-2:] == ["unended", "x" * MAX_LINE]
    assert set(again[:-2]) == {"z" * 99}  # whole lines only
    assert len(again) - 2 < count  # what was freed is not read again


def test_one_read_takes_a_budget_at_most(tmp_path: Path) -> None:
    """A process writing faster than the node reads cannot hold the event loop."""
    out = tmp_path / "out"
    out.write_bytes(b"y" * (READ_BUDGET * 3))
    lines: list[str] = []
    reader = Lines(out, tmp_path / "out.at", lines.append)
    assert reader.read()
    assert sum(map(len, lines)) <= READ_BUDGET
    while reader.read():
        pass
    reader.close(final=True)
    assert "".join(lines) == "y" * (READ_BUDGET * 3)


async def test_the_journal_of_an_interrupted_container_goes_with_it(
    backend: LocalBackend, tmp_path: Path
) -> None:
    """A container adopted from an earlier run and not resumed: deleting it removes the
    journal that run left, so journals do not pile up across restarts."""
    spec = await made(backend, "interrupted")
    journals = tmp_path / "journals"
    Journal(journals / spec.guid).ended("0", "")
    executor = executor_of(anew(backend), tmp_path, lambda _event: None)
    assert await executor.adopt_previous_run() == [spec.guid]
    executor.interrupt(spec.guid)
    await executor.delete(spec.guid)
    assert not (journals / spec.guid).exists()


async def test_strays_of_a_gone_cell_are_found_where_its_containers_were_moved(
    tmp_path: Path,
) -> None:
    """A cell gone from the config whose data dir was unreachable (its containers under
    /var/lib/diego): remove_strays still destroys them, and their processes."""
    home = tmp_path / "cells" / "old-cell"
    home.mkdir(parents=True)
    old = LocalBackend(home / "containers", container_uid=CONTAINER_UID, name="old-cell")
    assert not (home / "containers").exists()  # moved: tmp_path is private
    spec = await made(old, "stray")
    await old.run(spec.guid, ProcessSpec("/bin/sleep", ("1000",), key="0"), print, print)
    pid = await shim_pid(old, spec.guid)
    removed = await remove_strays(tmp_path / "cells", {"new-cell"}, (), CONTAINER_UID)
    assert removed == [spec.guid]
    assert await until_gone(pid)
    await old.destroy(spec.guid)
    await old.close()


async def test_a_container_left_half_made_is_made_again_and_runs(
    backend: LocalBackend, tmp_path: Path
) -> None:
    """A Task's container that cannot be reopened (here its disk is gone, as after a
    reboot; on Docker, one the cell died making, never started) but in which nothing
    of its work began (no process, no step journaled): the restarted cell makes it
    again and runs the tree from the start, instead of failing a Task that never ran."""
    spec = await unmounted(backend, "half-made")
    completed = asyncio.Event()
    executor = executor_of(
        anew(backend),
        tmp_path,
        lambda event: completed.set() if isinstance(event, ContainerCompleted) else None,
    )
    assert await executor.adopt_previous_run() == [spec.guid]
    request = RunRequest(spec=spec, action=sh("echo ran >> /tmp/once"), result_file="/tmp/once")
    assert await executor.resume(spec.guid, request)
    await asyncio.wait_for(completed.wait(), 20)
    view = executor.get(spec.guid)
    assert view is not None
    assert (view.failed, view.result) == (False, "ran\n"), view
    await executor.delete(spec.guid)
    assert not await executor.resume(spec.guid, request)  # adopted no more


def test_an_output_file_replaced_by_a_symlink_or_a_fifo_is_not_followed(tmp_path: Path) -> None:
    """What a container can write it may replace: the node neither reads a host file
    through a symlink nor blocks on a FIFO put where an output file should be."""
    secret = tmp_path / "secret"
    secret.write_text("host only\n")
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "out").symlink_to(secret)
    with pytest.raises(OSError, match="symbolic links"):
        Lines(linked / "out", linked / "out.at", print)
    fifo = tmp_path / "fifo"
    fifo.mkdir()
    os.mkfifo(fifo / "out")
    with pytest.raises(OSError, match="not a regular file"):
        Lines(fifo / "out", fifo / "out.at", print)
    (fifo / "exit").unlink(missing_ok=True)
    os.mkfifo(fifo / "exit")
    assert exit_status(ProcessFiles(fifo, kept=True)) is None  # at once, not blocked


def test_output_read_is_freed_from_the_disk(tmp_path: Path) -> None:
    """Past PUNCH_AT bytes read, the file's blocks up to the last whole line are freed."""
    out = tmp_path / "out"
    out.write_bytes((b"w" * 1023 + b"\n") * (3 * PUNCH_AT // 1024))
    reader = Lines(out, tmp_path / "out.at", lambda _line: None)
    while reader.read():
        pass
    reader.close(final=True)
    assert out.stat().st_size == 3 * PUNCH_AT
    assert out.stat().st_blocks * 512 <= PUNCH_AT + 64 * 1024  # the rest is a hole


async def test_a_resumed_tes_job_reads_back_what_ended_and_does_not_do_it_again(
    backend: LocalBackend, tmp_path: Path
) -> None:
    """A TES job whose journal says its input, its executor and its output ended: run
    again, it reports them as they ended, and does none of them again (the executor
    would exit 9, the output's root does not exist, the input would be a file)."""
    spec = await made(backend, "tes-ended")
    recorded = TesExecutorLog(start_time="t0", end_time="t1", stdout="recorded\n", exit_code=0)
    sent = TesOutputFileLog(url="file:///nowhere/out.txt", path="/data/out.txt", size_bytes="6")
    earlier = Journal(tmp_path / "journal")
    earlier.began("tes", 1_700_000_000_000_000_000)
    earlier.ended("tes.in.0", "true")
    earlier.ended("tes.exec.0", json.dumps(encode(recorded)))
    earlier.ended("tes.out.0", json.dumps([encode(sent)]))
    earlier.close()
    task = TesTask(
        inputs=(TesInput(path="/data/in.txt", content="input\n"),),
        executors=(TesExecutor(image="alpine", command=("sh", "-c", "exit 9")),),
        outputs=(TesOutput(url=sent.url, path=sent.path),),
    )
    job = TesJob(
        task=task,
        backend=backend,
        guid=spec.guid,
        transfers=Transfers(),
        scratch=tmp_path,
        use_images=False,
        journal=Journal.resume(tmp_path / "journal"),
    )
    report = await job.run()
    assert (report.state, report.failure_reason) == (TesState.COMPLETE, "")
    assert report.logs == (recorded,)
    assert report.outputs == (sent,)
    assert report.start_time == "2023-11-14T22:13:20.000000000Z"  # when the first life began it
    assert "No such file" in await read(backend, spec.guid, "/data/in.txt")  # not put in
    await backend.destroy(spec.guid)
