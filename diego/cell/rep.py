"""The rep: represents one cell's containers to the BBS.

It takes work from the auction (reserve a container, then CAS the Task to
RUNNING on this cell, then run it), and keeps the BBS and the containers in step
by the pure table in ``diego.cell.reconcile``: on every container event, on
every Task event that concerns a container here (a cancel reaches the cell at
once), and on a polling interval. Every decision for one guid is taken under
that guid's lock with fresh reads, so an event and a poll racing for the same
Task act one after the other, each on the latest state: a Task is never started
twice, and a starting Task is never mistaken for a lost one.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Protocol

import attrs

from diego.bus import Bus, SubscriberDropped, Subscription
from diego.cell.executor import (
    ContainerCompleted,
    ContainerEvent,
    Executor,
    RunRequest,
)
from diego.cell.reconcile import Action, ContainerState, TaskView, decide_task
from diego.models.cells import Capacity, CellPresence
from diego.models.errors import DiegoError, TaskNotFound
from diego.models.events import Event, TaskChanged, TaskRemoved
from diego.models.task import Task, TaskState
from diego.scheduling.auction import CellSnapshot, TaskWork

log = logging.getLogger("diego.cell.rep")

EVACUATION_FAILURE = "timed out during cell evacuation"


class BBSClient(Protocol):
    """What the rep needs of the BBS."""

    async def get_task(self, guid: str) -> Task: ...

    async def tasks(self, *, cell_id: str | None = None) -> list[Task]: ...

    async def start_task(self, guid: str, cell_id: str) -> tuple[Task, Task]: ...

    async def complete_task(
        self, guid: str, cell_id: str, failed: bool, failure_reason: str, result: str
    ) -> tuple[Task, Task]: ...

    async def renew_cell_presence(self, presence: CellPresence, ttl: float) -> None: ...

    async def remove_cell_presence(self, cell_id: str) -> None: ...


@attrs.frozen
class RepSettings:
    """The rep's timings (seconds)."""

    poll_interval: float = 30.0
    presence_ttl: float = 30.0
    evacuation_timeout: float = 600.0


class Rep:
    """One cell: its identity, its executor, and the loops that keep the BBS true."""

    def __init__(
        self,
        cell_id: str,
        zone: str,
        stacks: Sequence[str],
        executor: Executor,
        bbs: BBSClient,
        bus: Bus[Event],
        settings: RepSettings,
        on_capacity_freed: Callable[[], None] = lambda: None,
    ) -> None:
        self.cell_id = cell_id
        self.zone = zone
        self.stacks = tuple(stacks)
        self.executor = executor
        self.bbs = bbs
        self.bus = bus
        self.settings = settings
        self.on_capacity_freed = on_capacity_freed
        self.evacuating = False
        # No work before the cell's presence is recorded: the converger fails the
        # Tasks of cells it cannot see, and would fail a Task started in between.
        self.present = asyncio.Event()
        self._locks: dict[str, asyncio.Lock] = {}
        self._background: set[asyncio.Task[None]] = set()
        executor.on_event = self._container_event

    # ------------------------------------------------------------ the auction's side

    def presence(self) -> CellPresence:
        """This cell's presence record."""
        total = self.executor.total
        return CellPresence(
            cell_id=self.cell_id,
            zone=self.zone,
            stacks=self.stacks,
            rootfs_providers=("preloaded",),
            capacity=Capacity(
                memory_mb=total.memory_mb, disk_mb=total.disk_mb, containers=total.containers
            ),
        )

    async def state(self) -> CellSnapshot:
        """What the auction needs to know of this cell now."""
        return CellSnapshot(
            cell_id=self.cell_id,
            zone=self.zone,
            stacks=frozenset(self.stacks),
            rootfs_providers=frozenset(("preloaded",)),
            total=self.executor.total,
            available=self.executor.remaining(),
        )

    async def perform(self, work: Sequence[TaskWork]) -> list[TaskWork]:
        """Take the work that fits: reserve each container; the rest is returned."""
        if self.evacuating or not self.present.is_set():
            return list(work)
        refused = []
        for item in work:
            if self.executor.reserve(item.task_guid, item.memory_mb, item.disk_mb):
                self._spawn(self._start(item.task_guid))
            else:
                refused.append(item)
        return refused

    async def _start(self, guid: str) -> None:
        async with self._lock(guid):
            try:
                _, task = await self.bbs.start_task(guid, self.cell_id)
            except DiegoError as e:
                # Cancelled, or started elsewhere meanwhile: not ours to run.
                log.info("task-not-started guid=%s reason=%s", guid, e)
                await self._delete(guid)
                return
            self.executor.run(guid, RunRequest.for_task(task))

    # ------------------------------------------------------------ reconciling

    async def reconcile(self, guid: str) -> None:
        """Bring the BBS and the container of ``guid`` into step, by the table."""
        async with self._lock(guid):
            container = self.executor.get(guid)
            try:
                task: Task | None = await self.bbs.get_task(guid)
            except TaskNotFound:
                task = None
            view = TaskView.of(task) if task is not None else None
            decision = decide_task(self.cell_id, container, view)
            if decision.action is Action.NOTHING:
                return
            if decision.loud:
                log.warning("task-on-another-cell guid=%s reason=%s", guid, decision.reason)
            else:
                log.info("reconcile guid=%s action=%s", guid, decision.action.name)
            await self._apply(
                guid, decision.action, decision.failed, decision.failure_reason, decision.result
            )

    async def _apply(
        self, guid: str, action: Action, failed: bool, reason: str, result: str
    ) -> None:
        if action is Action.DELETE_CONTAINER:
            await self._delete(guid)
        elif action is Action.START_TASK:
            with contextlib.suppress(DiegoError):
                await self.bbs.start_task(guid, self.cell_id)
        elif action in (Action.COMPLETE_TASK_THEN_DELETE, Action.FAIL_TASK):
            try:
                await self.bbs.complete_task(guid, self.cell_id, failed, reason, result)
            except DiegoError as e:
                # The Task moved on (cancelled, resolved): the container goes anyway.
                log.info("task-not-completed guid=%s reason=%s", guid, e)
            if action is Action.COMPLETE_TASK_THEN_DELETE:
                await self._delete(guid)

    async def reconcile_all(self) -> None:
        """One polling pass: every container here, and every Task the BBS puts here."""
        guids = {c.guid for c in self.executor.containers()}
        for task in await self.bbs.tasks(cell_id=self.cell_id):
            if task.state in (TaskState.CLAIMED, TaskState.RUNNING):
                guids.add(task.task_guid)
        for guid in sorted(guids):
            await self.reconcile(guid)
        self._prune_locks()

    # ------------------------------------------------------------ loops

    async def run(self) -> None:
        """Announce the cell, then poll, renew presence and follow events until cancelled."""
        while not self.present.is_set():
            try:
                await self.bbs.renew_cell_presence(self.presence(), self.settings.presence_ttl)
                self.present.set()
            except Exception:
                log.exception("presence-announcement-failed cell=%s", self.cell_id)
                await asyncio.sleep(self.settings.presence_ttl / 3)
        await self.executor.cleanup_previous_run()
        subscription = self.bus.subscribe(self._concerns_a_container, name=f"rep {self.cell_id}")
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._poll())
                group.create_task(self._renew_presence())
                group.create_task(self._follow(subscription))
        finally:
            subscription.close()
            for task in tuple(self._background):
                task.cancel()
            with contextlib.suppress(Exception):
                await self.bbs.remove_cell_presence(self.cell_id)
            await self.executor.close()

    async def _poll(self) -> None:
        while True:
            try:
                await self.reconcile_all()
            except Exception:
                log.exception("reconcile-failed cell=%s", self.cell_id)
            await asyncio.sleep(self.settings.poll_interval)

    async def _renew_presence(self) -> None:
        while True:
            await asyncio.sleep(self.settings.presence_ttl / 3)
            try:
                await self.bbs.renew_cell_presence(self.presence(), self.settings.presence_ttl)
            except Exception:
                log.exception("presence-renewal-failed cell=%s", self.cell_id)

    def _concerns_a_container(self, event: Event) -> bool:
        if isinstance(event, TaskChanged):
            finished = event.after.state in (TaskState.COMPLETED, TaskState.RESOLVING)
            return finished and self.executor.get(event.after.task_guid) is not None
        if isinstance(event, TaskRemoved):
            return self.executor.get(event.task.task_guid) is not None
        return False

    async def _follow(self, subscription: Subscription[Event]) -> None:
        while True:
            try:
                event = await subscription.get()
            except SubscriberDropped:
                # Missed events: the poller catches up; resubscribe and go on.
                subscription = self.bus.subscribe(self._concerns_a_container)
                self._spawn(self.reconcile_all())
                continue
            if isinstance(event, TaskChanged):
                guid = event.after.task_guid
            elif isinstance(event, TaskRemoved):
                guid = event.task.task_guid
            else:
                continue
            container = self.executor.get(guid)
            if container is not None and container.state is not ContainerState.COMPLETED:
                self._spawn(self.reconcile(guid))

    def _container_event(self, event: ContainerEvent) -> None:
        if isinstance(event, ContainerCompleted):
            self._spawn(self.reconcile(event.guid))

    # ------------------------------------------------------------ evacuation

    async def evacuate(self) -> None:
        """Refuse new work; wait for the containers to finish, then fail what is left."""
        self.evacuating = True
        log.info("evacuation-started cell=%s", self.cell_id)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.executor.wait_empty(), self.settings.evacuation_timeout)
        for container in self.executor.containers():
            async with self._lock(container.guid):
                with contextlib.suppress(DiegoError):
                    await self.bbs.complete_task(
                        container.guid, self.cell_id, True, EVACUATION_FAILURE, ""
                    )
                await self._delete(container.guid)
        log.info("evacuation-finished cell=%s", self.cell_id)

    # ------------------------------------------------------------ helpers

    async def _delete(self, guid: str) -> None:
        await self.executor.delete(guid)
        self.on_capacity_freed()

    def _prune_locks(self) -> None:
        # Only idle locks of guids with no container: a held lock must stay the
        # one every caller for that guid queues on.
        for guid, lock in list(self._locks.items()):
            if not lock.locked() and self.executor.get(guid) is None:
                del self._locks[guid]

    def _lock(self, guid: str) -> asyncio.Lock:
        lock = self._locks.get(guid)
        if lock is None:
            lock = self._locks[guid] = asyncio.Lock()
        return lock

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        task.add_done_callback(_log_failure)


def _log_failure(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("rep-task-failed", exc_info=task.exception())
