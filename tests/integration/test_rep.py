"""The rep with a real store, BBS, bus, local backend and executor (and an auctioneer)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import attrs
import pytest

from diego.bus import Bus
from diego.cell.backends.base import ContainerSpec, OutputSink, ProcessSpec
from diego.cell.backends.local import LocalBackend, LocalProcess
from diego.cell.bbs_http import BBSUnreachable
from diego.cell.executor import INTERRUPTED, Executor
from diego.cell.reconcile import FAILURE_NO_CONTAINER
from diego.cell.rep import Rep, RepSettings
from diego.cell.transfer import Transfers
from diego.clock import SystemClock
from diego.logs import LogStore
from diego.models.actions import Action, RunAction
from diego.models.errors import InvalidStateTransition
from diego.models.events import Event, TaskChanged
from diego.models.lifecycle import CANCELLED, EVACUATION_FAILURE
from diego.models.task import Task, TaskCreateRequest, TaskState
from diego.models.work import Resources, TaskWork
from diego.scheduling.auctioneer import Auctioneer
from diego.scheduling.cells import EmbeddedCells
from diego.state.bbs import BBS
from diego.state.store import Store, sqlite_url
from tests.integration.processes import eventually, host_pids_with, sleep_arg, sleeping

TOTAL = Resources(memory_mb=4096, disk_mb=4096, containers=8)
EVENTS_ONLY = RepSettings(poll_interval=3600, presence_ttl=30, evacuation_timeout=600)
"""A rep that polls once at start, so anything later must come from events."""


# ---------------------------------------------------------------- helpers


def sh(script: str) -> RunAction:
    """A run action of ``sh -c script``."""
    return RunAction(path="/bin/sh", args=("-c", script))


def own_cgroup(controller: str) -> Path | None:
    """This process's cgroup directory in the v1 ``controller`` hierarchy, if any."""
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(","):
            return Path("/sys/fs/cgroup") / controller / path.lstrip("/")
    return None


class CountingBackend(LocalBackend):
    """A local backend that records the containers it makes and the processes it runs."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.created: list[str] = []
        self.started: list[str] = []

    async def create(self, spec: ContainerSpec) -> None:
        """Record, then make the container."""
        self.created.append(spec.guid)
        await super().create(spec)

    async def run(
        self, guid: str, process: ProcessSpec, stdout: OutputSink, stderr: OutputSink
    ) -> LocalProcess:
        """Record, then start the process."""
        self.started.append(guid)
        return await super().run(guid, process, stdout, stderr)


class RecordingBBS:
    """The BBS, recording what start_task raised for the rep using it."""

    def __init__(self, bbs: BBS) -> None:
        self._bbs = bbs
        self.start_errors: list[Exception] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._bbs, name)

    async def start_task(self, guid: str, cell_id: str) -> tuple[Task, Task]:
        """Start the Task, recording the error if the BBS refuses."""
        try:
            return await self._bbs.start_task(guid, cell_id)
        except Exception as e:
            self.start_errors.append(e)
            raise


@attrs.define
class World:
    """A BBS on a real SQLite store, and the cells made on it."""

    tmp_path: Path
    store: Store
    bus: Bus[Event]
    bbs: BBS
    logs: LogStore
    reps: list[Rep] = attrs.Factory(list)
    backends: list[CountingBackend] = attrs.Factory(list)
    loops: dict[Rep, asyncio.Task[None]] = attrs.Factory(dict)
    guids: list[str] = attrs.Factory(list)

    def rep(
        self,
        cell_id: str,
        settings: RepSettings = EVENTS_ONLY,
        total: Resources = TOTAL,
        bbs: Any = None,
        journals: bool = False,
        capacity_freed: asyncio.Event | None = None,
    ) -> Rep:
        """A new rep for ``cell_id`` (on the same directories as any earlier one of that id),
        keeping step journals (and so resuming Tasks) if ``journals``."""
        home = self.tmp_path / cell_id
        backend = CountingBackend(home / "containers")
        executor = Executor(
            backend,
            total,
            self.logs,
            Transfers(),
            home / "scratch",
            journals=home / "journals" if journals else None,
        )
        made = Rep(
            cell_id, "z0", ("linux",), executor, bbs or self.bbs, self.bus, settings, capacity_freed
        )
        # Driven directly, without its loops: count it as announced (rep.run()
        # would record its presence before taking work).
        made.present.set()
        self.reps.append(made)
        self.backends.append(backend)
        return made

    def start(self, rep: Rep) -> asyncio.Task[None]:
        """Run the rep's loops in the background."""
        self.loops[rep] = asyncio.create_task(rep.run())
        return self.loops[rep]

    async def stop(self, rep: Rep) -> None:
        """Stop the rep's loops and wait for them to end."""
        loop = self.loops.pop(rep)
        loop.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loop

    async def desire(self, action: Action, **extra: Any) -> Task:
        """A new PENDING Task running ``action``."""
        guid = f"task-{uuid.uuid4().hex[:12]}"
        self.guids.append(guid)
        request = TaskCreateRequest(
            task_guid=guid, domain="test", stack="linux", action=action, **extra
        )
        return await self.bbs.desire_task(request)

    async def task_until(
        self, guid: str, done: Callable[[Task], bool], within: float = 4.0
    ) -> Task:
        """The Task ``guid`` once ``done`` holds of it (failing the test after ``within``)."""
        deadline = time.monotonic() + within
        while True:
            task = await self.bbs.get_task(guid)
            if done(task):
                return task
            if time.monotonic() > deadline:
                pytest.fail(f"task {guid} never got there: {task.state} {task.failure_reason!r}")
            await asyncio.sleep(0.02)

    async def close(self) -> None:
        """Stop every loop, remove every container, close the store."""
        for rep in list(self.loops):
            await self.stop(rep)
        for rep in self.reps:
            rep.executor.on_event = lambda _e: None
            with contextlib.suppress(Exception):
                await rep.executor.close()
        for backend in self.backends:
            for leftover in await backend.existing():
                await backend.destroy(leftover.guid)
            shutil.rmtree(backend.root, ignore_errors=True)
        await _remove_cgroups(self.guids)
        for backend in self.backends:
            await backend.close()
        self.bus.close()
        await self.store.close()


async def _remove_cgroups(guids: list[str]) -> None:
    # A destroy racing the kernel can leave a busy cgroup behind (see
    # test_local_backend); do not leak them into the machine.
    groups = [
        group
        for base in (own_cgroup("memory"), own_cgroup("cpu"))
        if base is not None
        for guid in guids
        for group in base.glob(f"diego/*/{guid}")
    ]

    def removed() -> bool:
        for group in groups:
            with contextlib.suppress(OSError):
                group.rmdir()
        return not any(group.exists() for group in groups)

    await eventually(removed, within=1.0)


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    """A BBS on an SQLite store in tmp_path, torn down with every cell made on it."""
    store = await Store.open(sqlite_url(tmp_path))
    bus: Bus[Event] = Bus()
    clock = SystemClock()
    made = World(tmp_path, store, bus, BBS(store, bus, clock), LogStore(clock))
    try:
        yield made
    finally:
        await made.close()


def running_events(bus: Bus[Event], guid: str) -> tuple[list[TaskChanged], Callable[[], None]]:
    """Collect the task_changed events of ``guid`` into RUNNING; and how to stop."""
    seen: list[TaskChanged] = []
    subscription = bus.subscribe(
        lambda e: (
            isinstance(e, TaskChanged)
            and e.after.task_guid == guid
            and e.after.state is TaskState.RUNNING
            and e.before.state is not TaskState.RUNNING
        )
    )

    async def pump() -> None:
        async for event in subscription:
            assert isinstance(event, TaskChanged)
            seen.append(event)

    pumping = asyncio.create_task(pump())

    def stop() -> None:
        subscription.close()
        pumping.cancel()

    return seen, stop


async def gather_ok(*calls: Awaitable[Any]) -> list[Any]:
    """Await ``calls`` at once; re-raise the first error any of them raised."""
    results = await asyncio.gather(*calls, return_exceptions=True)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results


# ---------------------------------------------------------------- running work


async def test_perform_runs_a_task_to_completed_with_result(world: World) -> None:
    """perform() reserves a PENDING Task, runs it, and completes it with its result_file."""
    rep = world.rep("cell-1")
    world.start(rep)
    task = await world.desire(
        sh("echo working; echo 42 > /home/vcap/result"),
        result_file="/home/vcap/result",
        log_guid="log-1",
    )
    assert await rep.perform([TaskWork.from_task(task)]) == []
    done = await world.task_until(task.task_guid, lambda t: t.state is TaskState.COMPLETED)
    assert (done.failed, done.failure_reason, done.result) == (False, "", "42\n")
    assert done.cell_id == "cell-1"
    assert await eventually(lambda: rep.executor.containers() == [])
    assert rep.executor.remaining() == TOTAL
    assert await world.backends[0].existing() == []
    assert [(line.source_type, line.message) for line in world.logs.tail("log-1", 10)] == [
        ("TASK", "working")
    ]


async def test_failing_task_completes_failed_with_reason(world: World) -> None:
    """A Task whose action exits 3 is COMPLETED failed with "Exited with status 3"."""
    rep = world.rep("cell-1")
    world.start(rep)
    task = await world.desire(sh("exit 3"))
    await rep.perform([TaskWork.from_task(task)])
    done = await world.task_until(task.task_guid, lambda t: t.state is TaskState.COMPLETED)
    assert (done.failed, done.failure_reason) == (True, "Exited with status 3")


async def test_a_copy_of_work_already_here_is_taken_not_refused(world: World) -> None:
    """A Task given again to the cell that holds it is neither run twice nor handed back
    (handed back, the auctioneer would offer it again every retry interval)."""
    rep = world.rep("cell-1")
    task = await world.desire(sh("sleep 0.5"))
    work = TaskWork.from_task(task)
    assert await rep.perform([work]) == []
    assert await rep.perform([work]) == []
    done = await world.task_until(task.task_guid, lambda t: t.state is TaskState.COMPLETED)
    assert done.failed is False
    assert world.backends[0].created.count(task.task_guid) == 1


async def test_perform_refuses_what_does_not_fit(world: World) -> None:
    """Work beyond the cell's capacity is handed back; capacity returns when the Task is done."""
    rep = world.rep("cell-1", total=Resources(memory_mb=100, disk_mb=100, containers=1))
    world.start(rep)
    first = await world.desire(sh("sleep 0.2"))
    second = await world.desire(sh("true"))
    big = await world.desire(sh("true"), memory_mb=500)
    works = [TaskWork.from_task(t) for t in (first, second, big)]
    refused = await rep.perform(works)
    assert refused == works[1:]
    await world.task_until(first.task_guid, lambda t: t.state is TaskState.COMPLETED)
    assert await eventually(lambda: rep.executor.remaining() == rep.executor.total)
    assert (await world.bbs.get_task(second.task_guid)).state is TaskState.PENDING


async def test_cancel_deletes_the_container_at_once(world: World) -> None:
    """A Task cancelled while running loses its container by the bus event, not a poll:
    the rep polls once, at start (EVENTS_ONLY), so only the event can remove it."""
    rep = world.rep("cell-1", settings=EVENTS_ONLY)
    world.start(rep)
    arg = sleep_arg()
    task = await world.desire(RunAction(path="/bin/sleep", args=(arg,)))
    await rep.perform([TaskWork.from_task(task)])
    await world.task_until(task.task_guid, lambda t: t.state is TaskState.RUNNING)
    assert await eventually(lambda: bool(sleeping(arg)))
    await world.bbs.cancel_task(task.task_guid)
    assert await eventually(lambda: rep.executor.get(task.task_guid) is None, within=5.0)
    assert await eventually(lambda: not host_pids_with(arg), within=1.0)
    assert await world.backends[0].existing() == []
    after = await world.bbs.get_task(task.task_guid)
    assert (after.state, after.failed, after.failure_reason) == (
        TaskState.COMPLETED,
        True,
        CANCELLED,
    )


class ReadCounting:
    """A BBS that counts the Task reads made through it."""

    def __init__(self, bbs: BBS) -> None:
        self._bbs = bbs
        self.reads: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._bbs, name)

    async def get_task(self, guid: str) -> Task:
        self.reads.append(guid)
        return await self._bbs.get_task(guid)


async def test_a_finished_container_completes_its_task_by_the_cas_alone(world: World) -> None:
    """A container that finishes while its Task runs here completes the Task with no
    read first: the compare-and-swap is the check."""
    counting = ReadCounting(world.bbs)
    rep = world.rep("cell-1", bbs=counting)
    task = await world.desire(sh("echo 7 > /home/vcap/r"), result_file="/home/vcap/r")
    await rep.perform([TaskWork.from_task(task)])
    done = await world.task_until(task.task_guid, lambda t: t.state is TaskState.COMPLETED)
    assert (done.failed, done.result, done.cell_id) == (False, "7\n", "cell-1")
    assert await eventually(lambda: rep.executor.get(task.task_guid) is None)
    assert counting.reads == []


async def test_a_finished_container_whose_task_moved_on_is_only_deleted(world: World) -> None:
    """A container that finishes after its Task was cancelled (a cell not following
    the bus): the CAS refuses, the table decides on a fresh read, and the container
    goes, leaving the Task as the cancel left it."""
    counting = ReadCounting(world.bbs)
    rep = world.rep("cell-1", bbs=counting)
    task = await world.desire(sh("sleep 0.3; echo done"))
    await rep.perform([TaskWork.from_task(task)])
    await world.task_until(task.task_guid, lambda t: t.state is TaskState.RUNNING)
    _, cancelled = await world.bbs.cancel_task(task.task_guid)
    assert await eventually(lambda: rep.executor.get(task.task_guid) is None, within=5.0)
    assert await world.bbs.get_task(task.task_guid) == cancelled
    assert counting.reads == [task.task_guid]


async def test_racing_performs_and_reconciles_start_a_task_once(world: World) -> None:
    """Two performs and many reconciles racing a start: one RUNNING transition, one process."""
    rep = world.rep("cell-1", settings=RepSettings(poll_interval=0.01, presence_ttl=30))
    world.start(rep)
    backend = world.backends[0]
    task = await world.desire(sh("sleep 0.3; echo done"))
    guid = task.task_guid
    work = TaskWork.from_task(task)
    transitions, stop = running_events(world.bus, guid)
    try:
        refusals = await gather_ok(
            rep.perform([work]),
            rep.perform([work]),
            *(rep.reconcile(guid) for _ in range(25)),
            rep.reconcile_all(),
        )
        # The second is a copy of work already here: taken, not refused, not run again.
        assert [len(r) for r in refusals[:2]] == [0, 0]
        # And again while it starts and runs.
        for _ in range(10):
            await gather_ok(*(rep.reconcile(guid) for _ in range(5)), rep.reconcile_all())
            await asyncio.sleep(0.01)
        done = await world.task_until(guid, lambda t: t.state is TaskState.COMPLETED)
        assert (done.failed, done.failure_reason) == (False, "")
        assert await eventually(lambda: rep.executor.get(guid) is None)
        assert len(transitions) == 1
        assert backend.created == [guid]
        assert backend.started == [guid]
    finally:
        stop()


async def test_second_cell_given_started_work_gives_it_back(world: World) -> None:
    """A second cell given work another cell started is refused by the BBS and frees its room."""
    first = world.rep("cell-1")
    world.start(first)
    recording = RecordingBBS(world.bbs)
    second = world.rep("cell-2", bbs=recording)
    world.start(second)
    arg = sleep_arg()
    task = await world.desire(RunAction(path="/bin/sleep", args=(arg,)), memory_mb=64)
    work = TaskWork.from_task(task)
    await first.perform([work])
    await world.task_until(task.task_guid, lambda t: t.state is TaskState.RUNNING)
    assert await eventually(lambda: bool(sleeping(arg)))
    assert await second.perform([work]) == []
    assert await eventually(lambda: bool(recording.start_errors))
    assert isinstance(recording.start_errors[0], InvalidStateTransition)
    assert await eventually(lambda: second.executor.get(task.task_guid) is None)
    assert second.executor.remaining() == TOTAL
    assert second.capacity_freed.is_set()
    assert world.backends[1].created == []
    stored = await world.bbs.get_task(task.task_guid)
    assert (stored.state, stored.cell_id) == (TaskState.RUNNING, "cell-1"), stored.failure_reason
    assert first.executor.get(task.task_guid) is not None
    assert sleeping(arg)


# ---------------------------------------------------------------- restarts


async def test_restarted_cell_fails_task_it_lost(world: World) -> None:
    """After a crash the new rep's first reconcile_all fails its RUNNING Task: no container."""
    old = world.rep("cell-1")
    arg = sleep_arg()
    task = await world.desire(RunAction(path="/bin/sleep", args=(arg,)))
    await old.perform([TaskWork.from_task(task)])
    await world.task_until(task.task_guid, lambda t: t.state is TaskState.RUNNING)
    assert await eventually(lambda: bool(sleeping(arg)))
    # The crash: the old rep hears nothing more, and its containers are gone.
    old.executor.on_event = lambda _e: None
    await world.backends[0].destroy(task.task_guid)
    assert await eventually(lambda: not host_pids_with(arg), within=1.0)
    new = world.rep("cell-1")
    assert new.executor.containers() == []
    await new.reconcile_all()
    after = await world.bbs.get_task(task.task_guid)
    assert (after.state, after.failed, after.failure_reason) == (
        TaskState.COMPLETED,
        True,
        FAILURE_NO_CONTAINER,
    )


async def test_restarted_cell_adopts_leftovers_then_fails_the_task(world: World) -> None:
    """A new rep on the same cell adopts the old run's container as interrupted: the table
    fails the Task with that reason and destroys the container."""
    old = world.rep("cell-1")
    arg = sleep_arg()
    task = await world.desire(RunAction(path="/bin/sleep", args=(arg,)))
    await old.perform([TaskWork.from_task(task)])
    await world.task_until(task.task_guid, lambda t: t.state is TaskState.RUNNING)
    assert await eventually(lambda: bool(sleeping(arg)))
    old.executor.on_event = lambda _e: None  # the crash: the old rep is gone
    new = world.rep("cell-1")
    assert [c.guid for c in await world.backends[1].existing()] == [task.task_guid]
    world.start(new)
    after = await world.task_until(task.task_guid, lambda t: t.state is TaskState.COMPLETED)
    assert (after.failed, after.failure_reason) == (True, INTERRUPTED)
    assert await eventually(lambda: not host_pids_with(arg), within=1.0)
    assert await world.backends[1].existing() == []


async def test_restarted_cell_runs_a_task_it_started_but_never_made(world: World) -> None:
    """The cell died between starting a Task in the BBS and making its container: no
    container and no journal, so nothing of it ran. The restarted rep runs it (once)
    instead of failing it for want of a container; one whose journal is there (its
    container was being made, or gone) is failed as before. A journal of no container
    and no running Task is removed."""
    unbegun = await world.desire(sh("echo ran > /tmp/once"), result_file="/tmp/once")
    begun = await world.desire(sh("echo ran > /tmp/once"), result_file="/tmp/once")
    for task in (unbegun, begun):
        await world.bbs.start_task(task.task_guid, "cell-1")
    journals = world.tmp_path / "cell-1" / "journals"
    journals.mkdir(parents=True)
    (journals / begun.task_guid).touch()
    (journals / "destroyed-not-removed").touch()  # the node died between the two
    new = world.rep("cell-1", journals=True)
    new.present.clear()  # run() announces it
    world.start(new)
    done = await world.task_until(unbegun.task_guid, lambda t: t.state is TaskState.COMPLETED)
    assert (done.failed, done.result) == (False, "ran\n"), done.failure_reason
    failed = await world.task_until(begun.task_guid, lambda t: t.state is TaskState.COMPLETED)
    assert (failed.failed, failed.failure_reason) == (True, FAILURE_NO_CONTAINER)
    assert not (journals / "destroyed-not-removed").exists()


# ---------------------------------------------------------------- evacuation


async def test_evacuation_refuses_work_and_fails_what_outlives_it(world: World) -> None:
    """While evacuating perform() refuses work; a Task still running at the timeout is
    failed then (not at once, nor left to finish its 1000 s), and its process killed."""
    # Long enough that a loaded machine still sees the Task running once evacuating.
    settings = RepSettings(poll_interval=3600, presence_ttl=30, evacuation_timeout=3.0)
    rep = world.rep("cell-1", settings=settings)
    world.start(rep)
    arg = sleep_arg()
    task = await world.desire(RunAction(path="/bin/sleep", args=(arg,)))
    await rep.perform([TaskWork.from_task(task)])
    await world.task_until(task.task_guid, lambda t: t.state is TaskState.RUNNING)
    assert await eventually(lambda: bool(sleeping(arg)))
    evacuation = asyncio.create_task(rep.evacuate())
    await asyncio.sleep(0)
    late = await world.desire(sh("true"))
    late_work = TaskWork.from_task(late)
    assert await rep.perform([late_work]) == [late_work]
    assert rep.executor.get(late.task_guid) is None
    # Evacuating, yet the Task runs on until the timeout.
    assert sleeping(arg)
    assert (await world.bbs.get_task(task.task_guid)).state is TaskState.RUNNING
    await asyncio.wait_for(evacuation, 10)
    after = await world.bbs.get_task(task.task_guid)
    assert (after.state, after.failed, after.failure_reason) == (
        TaskState.COMPLETED,
        True,
        EVACUATION_FAILURE,
    )
    assert rep.executor.containers() == []
    assert await eventually(lambda: not host_pids_with(arg), within=1.0)
    assert (await world.bbs.get_task(late.task_guid)).state is TaskState.PENDING


async def test_evacuation_lets_short_tasks_finish(world: World) -> None:
    """A Task finishing within the evacuation timeout completes normally."""
    rep = world.rep(
        "cell-1", settings=RepSettings(poll_interval=3600, presence_ttl=30, evacuation_timeout=4)
    )
    world.start(rep)
    task = await world.desire(sh("sleep 0.3; echo ok > /tmp/r"), result_file="/tmp/r")
    await rep.perform([TaskWork.from_task(task)])
    await world.task_until(task.task_guid, lambda t: t.state is TaskState.RUNNING)
    await asyncio.wait_for(rep.evacuate(), 4)
    after = await world.bbs.get_task(task.task_guid)
    assert (after.state, after.failed, after.result) == (TaskState.COMPLETED, False, "ok\n")


# ---------------------------------------------------------------- presence


async def test_presence_is_renewed_and_removed_on_stop(world: World) -> None:
    """A running rep keeps its presence alive past its TTL; stopping the rep removes it."""
    rep = world.rep("cell-1", settings=RepSettings(poll_interval=3600, presence_ttl=0.6))
    world.start(rep)

    async def present() -> bool:
        return "cell-1" in [p.cell_id for p in await world.bbs.cell_presences()]

    deadline = time.monotonic() + 2
    while not await present():
        assert time.monotonic() < deadline, "presence never appeared"
        await asyncio.sleep(0.02)
    (presence,) = await world.bbs.cell_presences()
    assert presence.capacity.containers == TOTAL.containers
    assert presence.stacks == ("linux",)
    # Past two TTLs it is still there: it is being renewed.
    until = time.monotonic() + 1.3
    while time.monotonic() < until:
        assert await present()
        await asyncio.sleep(0.1)
    await world.stop(rep)
    assert not await present()


# ---------------------------------------------------------------- with the auctioneer


async def test_auctioneer_places_work_on_cells_and_retries_when_full(world: World) -> None:
    """Three Tasks on two one-container cells: two run at once, the third once room frees
    (the retry interval is an hour: only the freed capacity's kick can start it)."""
    one = Resources(memory_mb=1024, disk_mb=1024, containers=1)
    freed = asyncio.Event()
    cells = [world.rep(f"cell-{i}", total=one, capacity_freed=freed) for i in (1, 2)]
    auctioneer = Auctioneer(
        world.bbs, EmbeddedCells(cells), retry_interval=3600, capacity_freed=freed
    )
    for cell in cells:
        world.start(cell)
    running = asyncio.create_task(auctioneer.run())
    try:
        tasks = [await world.desire(sh("sleep 0.3")) for _ in range(3)]
        auctioneer.submit(tasks)
        done = [
            await world.task_until(t.task_guid, lambda t: t.state is TaskState.COMPLETED)
            for t in tasks
        ]
        assert all(not t.failed for t in done), [t.failure_reason for t in done]
        assert {t.cell_id for t in done} == {"cell-1", "cell-2"}
        assert sorted(len(b.created) for b in world.backends) == [1, 2]
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running


async def test_a_cell_takes_no_work_before_its_presence_is_recorded(world: World) -> None:
    """Work offered before the rep has announced its presence is refused, then accepted."""
    rep = world.rep("cell-late")
    rep.present.clear()
    task = await world.desire(sh("true"))
    work = TaskWork.from_task(task)
    assert await rep.perform([work]) == [work]
    world.start(rep)
    await asyncio.wait_for(rep.present.wait(), 5)
    assert [p.cell_id for p in await world.bbs.cell_presences()] == ["cell-late"]
    assert await rep.perform([work]) == []
    await world.task_until(task.task_guid, lambda t: t.state is TaskState.COMPLETED)


class DeafOnceBBS(RecordingBBS):
    """The BBS, whose first two completions are not heard (as a BBS out of reach): the
    rep's completion by the CAS alone, then the table's."""

    def __init__(self, bbs: BBS) -> None:
        super().__init__(bbs)
        self.unheard = 2

    @property
    def deaf(self) -> bool:
        return self.unheard > 0

    async def complete_task(
        self, guid: str, cell_id: str, failed: bool, failure_reason: str, result: str
    ) -> tuple[Task, Task]:
        if self.unheard:
            self.unheard -= 1
            raise BBSUnreachable("the BBS did not answer complete_task")
        return await self._bbs.complete_task(guid, cell_id, failed, failure_reason, result)


async def test_a_completion_not_heard_keeps_the_result_for_the_next_try(world: World) -> None:
    """A finished Task whose completion the BBS did not hear keeps its container and
    result, and the next reconcile completes it with that result."""
    deaf = DeafOnceBBS(world.bbs)
    rep = world.rep("cell-1", bbs=deaf)
    task = await world.desire(sh("echo kept > /tmp/out"), result_file="/tmp/out")
    await rep.perform([TaskWork.from_task(task)])
    assert await eventually(lambda: not deaf.deaf)
    assert (await world.bbs.get_task(task.task_guid)).state is TaskState.RUNNING
    assert rep.executor.get(task.task_guid) is not None
    await rep.reconcile_all()
    done = await world.task_until(task.task_guid, lambda t: t.state is TaskState.COMPLETED)
    assert (done.failed, done.result) == (False, "kept\n")


class FailingRenewals:
    """A BBS whose presence renewals fail, ``failures`` of them, after the first."""

    def __init__(self, bbs: BBS, failures: int) -> None:
        self._bbs = bbs
        self.failures = failures
        self.calls = 0
        self.recorded = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._bbs, name)

    async def renew_cell_presence(self, presence: Any, ttl: float) -> None:
        self.calls += 1
        if self.calls > 1 and self.failures > 0:
            self.failures -= 1
            raise BBSUnreachable("the BBS did not answer renew_cell_presence")
        await self._bbs.renew_cell_presence(presence, ttl)
        self.recorded += 1


async def test_a_failed_renewal_is_tried_again_before_the_presence_expires(world: World) -> None:
    """Three renewals lost (a blip on the link) do not let the presence lapse, which
    would fail the cell's Tasks at once: the next try comes a tenth of the TTL later,
    not a third."""
    flaky = FailingRenewals(world.bbs, failures=3)
    settings = RepSettings(poll_interval=3600, presence_ttl=3.0, evacuation_timeout=600)
    rep = world.rep("cell-1", settings=settings, bbs=flaky)
    world.start(rep)
    deadline = time.monotonic() + 4.5  # past the first renewal's TTL
    while time.monotonic() < deadline:
        live = {p.cell_id for p in await world.bbs.cell_presences()}
        if flaky.recorded:  # once first recorded, it never lapses
            assert "cell-1" in live, f"the presence lapsed after {flaky.calls} renewals"
        await asyncio.sleep(0.05)
    assert flaky.failures == 0
    assert flaky.calls >= 3
