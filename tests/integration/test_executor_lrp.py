"""The life of an LRP container in the executor, over a real local backend."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from diego.cell.backends.local import LocalBackend
from diego.cell.executor import (
    EXITED,
    UNHEALTHY,
    ContainerCompleted,
    ContainerEvent,
    ContainerRunning,
    Executor,
    MonitorSettings,
    lrp_request,
)
from diego.cell.reconcile import ContainerState
from diego.cell.transfer import Transfers
from diego.clock import SystemClock
from diego.logs import LogStore
from diego.models.codec import decode
from diego.models.lrp import DesiredLRP
from diego.models.work import Resources

READY = {"run": {"path": "/bin/sh", "args": ["-c", "test -f /tmp/ready"]}}
SERVE = {"run": {"path": "/bin/sh", "args": ["-c", "touch /tmp/ready; exec sleep 1000"]}}


class World:
    """An executor on a real backend, recording its events."""

    def __init__(self, executor: Executor, events: list[ContainerEvent]) -> None:
        self.executor = executor
        self.events = events

    def start(self, **fields: Any) -> str:
        """Reserve and run one instance of a DesiredLRP made of ``fields``."""
        body = {"process_guid": "p", "domain": "d", "stack": "linux", "action": SERVE, **fields}
        desired = decode(DesiredLRP, body)
        guid = uuid.uuid4().hex
        assert self.executor.reserve(guid, 0, 0)
        self.executor.run(guid, lrp_request(desired, 0, guid))
        return guid

    async def until(self, guid: str, state: ContainerState, within: float = 5.0) -> Any:
        """The container once it is in ``state``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            view = self.executor.get(guid)
            if view is not None and view.state is state:
                return view
            assert loop.time() < deadline, f"{guid} never {state}: {view}"
            await asyncio.sleep(0.02)


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    """An executor with quick monitor intervals."""
    events: list[ContainerEvent] = []
    backend = LocalBackend(tmp_path / "containers")
    executor = Executor(
        backend,
        Resources(10_000, 10_000, 20),
        LogStore(SystemClock()),
        Transfers(),
        tmp_path / "scratch",
        events.append,
        MonitorSettings(unhealthy_interval=0.05, healthy_interval=0.2),
    )
    try:
        yield World(executor, events)
    finally:
        await executor.close()
        shutil.rmtree(backend.root, ignore_errors=True)


async def test_monitor_decides_when_an_instance_is_running(world: World) -> None:
    """With a monitor, the container is RUNNING (and says so) only once the monitor passes."""
    guid = world.start(
        action={
            "run": {
                "path": "/bin/sh",
                "args": ["-c", "sleep 0.3; touch /tmp/ready; exec sleep 1000"],
            }
        },
        monitor=READY,
    )
    await world.until(guid, ContainerState.CREATED)
    await world.until(guid, ContainerState.RUNNING)
    assert ContainerRunning(guid) in world.events


async def test_without_a_monitor_an_instance_runs_at_once(world: World) -> None:
    """Without a monitor, the container is RUNNING as soon as its action starts."""
    guid = world.start()
    await world.until(guid, ContainerState.RUNNING, within=2.0)


async def test_an_exiting_action_is_a_crash(world: World) -> None:
    """The action ending, even with status 0, completes the container as crashed."""
    failing = world.start(action={"run": {"path": "/bin/sh", "args": ["-c", "exit 4"]}})
    clean = world.start(action={"run": {"path": "/bin/true"}})
    failed = await world.until(failing, ContainerState.COMPLETED)
    done = await world.until(clean, ContainerState.COMPLETED)
    assert (failed.failed, failed.failure_reason) == (True, "Exited with status 4")
    assert (done.failed, done.failure_reason) == (True, EXITED)
    assert world.executor.lrp_of(failing) is not None
    assert world.executor.lrp_of(failing)[1] is False  # type: ignore[index]  # crashed, not shut down
    assert ContainerCompleted(failing) in world.events


async def test_start_timeout_fails_an_instance_never_healthy(world: World) -> None:
    """A monitor that never passes within start_timeout_ms crashes the start, saying so."""
    guid = world.start(monitor={"run": {"path": "/bin/false"}}, start_timeout_ms=300)
    view = await world.until(guid, ContainerState.COMPLETED)
    assert view.failure_reason == "Instance never healthy after 0.3s"
    assert ContainerRunning(guid) not in world.events


async def test_losing_health_after_running_is_a_crash(world: World) -> None:
    """A monitor failing once the instance runs completes it as crashed, unhealthy."""
    guid = world.start(
        action={
            "run": {
                "path": "/bin/sh",
                "args": ["-c", "touch /tmp/ready; sleep 0.4; rm /tmp/ready; exec sleep 1000"],
            }
        },
        monitor=READY,
    )
    await world.until(guid, ContainerState.RUNNING)
    view = await world.until(guid, ContainerState.COMPLETED)
    assert (view.failed, view.failure_reason) == (True, UNHEALTHY)


async def test_setup_failure_is_a_crash(world: World) -> None:
    """A failing setup action crashes the instance before its action starts."""
    guid = world.start(setup={"run": {"path": "/bin/sh", "args": ["-c", "exit 2"]}})
    view = await world.until(guid, ContainerState.COMPLETED)
    assert view.failure_reason == "setup failed: Exited with status 2"


async def test_stop_completes_as_shut_down(world: World) -> None:
    """stop() ends a running instance as shut down (not crashed), killing its processes."""
    guid = world.start(monitor=READY)
    await world.until(guid, ContainerState.RUNNING)
    await world.executor.stop(guid)
    view = await world.until(guid, ContainerState.COMPLETED)
    assert view.failed is False
    tags = world.executor.lrp_of(guid)
    assert tags is not None
    assert tags[1] is True
