"""What a cell's executor enforces whatever sent it the work: no privileged container
unless the cell allows them, and its max_pids default on work that gives none."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from diego.cell.backends.local import LocalBackend
from diego.cell.executor import PRIVILEGED_REFUSED, ContainerCompleted, ContainerEvent, Executor
from diego.cell.executor import RunRequest as Run
from diego.cell.reconcile import ContainerState, ContainerView
from diego.cell.transfer import Transfers
from diego.clock import SystemClock
from diego.logs import LogStore
from diego.models.codec import decode
from diego.models.task import Task, TaskCreateRequest
from diego.models.work import Resources
from tests.integration.processes import eventually

FORK_LOOP = {
    "run": {"path": "/bin/sh", "args": ["-c", "for i in $(seq 200); do sleep 1000 & done"]}
}


@pytest.fixture(autouse=True)
def _needs_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("the local backend's limits need root")


@pytest.fixture
async def make(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """Executors over one local backend, with the given settings; closed at the end."""
    backend = LocalBackend(tmp_path / "containers")
    made: list[Executor] = []

    def executor(events: list[ContainerEvent], **settings: Any) -> Executor:
        run = Executor(
            backend,
            Resources(10_000, 10_000, 20),
            LogStore(SystemClock()),
            Transfers(),
            tmp_path / "scratch",
            events.append,
            **settings,
        )
        made.append(run)
        return run

    try:
        yield executor
    finally:
        for run in made:
            await run.close()
        await backend.close()
        shutil.rmtree(backend.root, ignore_errors=True)


async def completed(
    executor: Executor, events: list[ContainerEvent], **fields: Any
) -> ContainerView:
    """Run a Task made of ``fields`` to its end; its container as the rep then sees it."""
    body = {"task_guid": f"t-{uuid.uuid4().hex[:8]}", "domain": "d", "stack": "linux", **fields}
    task = Task.new(decode(TaskCreateRequest, body), now=1)
    guid = task.task_guid
    assert executor.reserve(guid, 0, 0)
    executor.run(guid, Run.for_task(task))
    assert await eventually(lambda: ContainerCompleted(guid) in events, within=20)
    view = executor.get(guid)
    assert view is not None
    assert view.state is ContainerState.COMPLETED
    await executor.delete(guid)
    return view


async def test_a_privileged_task_fails_on_a_cell_that_allows_none(make: Callable[..., Any]) -> None:
    """A privileged Task that reached a cell anyway (stored before the setting, or sent
    by another node) fails saying why; it never runs as host root."""
    events: list[ContainerEvent] = []
    executor = make(events)
    true = {"run": {"path": "/bin/true"}}
    view = await completed(executor, events, privileged=True, action=true)
    assert view.failed
    assert view.failure_reason == f"failed to create container: {PRIVILEGED_REFUSED}"
    assert "[cell] allow_privileged = false" in view.failure_reason


async def test_a_privileged_task_runs_as_host_root_where_allowed(make: Callable[..., Any]) -> None:
    """allow_privileged: the same Task runs, its root being the host's."""
    events: list[ContainerEvent] = []
    executor = make(events, allow_privileged=True)
    # The host's user namespace maps every uid to itself; a container's maps 0 elsewhere.
    script = "test \"$(tr -s ' ' < /proc/self/uid_map)\" = ' 0 0 4294967295' && test $(id -u) = 0"
    host_root = {"run": {"path": "/bin/sh", "args": ["-c", script]}}
    view = await completed(executor, events, privileged=True, action=host_root)
    assert not view.failed, view.failure_reason
    view = await completed(executor, events, privileged=False, action=host_root)
    assert view.failed


async def test_the_cell_default_max_pids_caps_work_that_gives_none(
    make: Callable[..., Any],
) -> None:
    """A Task with no max_pids gets the cell's, and so does one asking for more (the
    cell's is a ceiling); one asking for less gets that."""
    events: list[ContainerEvent] = []
    executor = make(events, max_pids=300)
    view = await completed(executor, events, action=FORK_LOOP)
    assert not view.failed, view.failure_reason
    view = await completed(executor, events, action=FORK_LOOP, max_pids=20)
    assert view.failed
    assert view.failure_reason == "Exited with status 2 (process limit of 20 reached)"
    capped = make(events, max_pids=20)
    view = await completed(capped, events, action=FORK_LOOP, max_pids=100_000)
    assert view.failure_reason == "Exited with status 2 (process limit of 20 reached)"
