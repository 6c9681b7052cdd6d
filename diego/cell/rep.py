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
import collections
import contextlib
import logging
import uuid
from collections.abc import Coroutine, Sequence
from typing import Any, Protocol

import attrs

from diego.bus import Bus, SubscriberDropped, Subscription
from diego.cell.executor import (
    ContainerCompleted,
    ContainerEvent,
    Executor,
    LRPTags,
    RunRequest,
    lrp_request,
)
from diego.cell.reconcile import (
    Action,
    ContainerState,
    ContainerView,
    TaskView,
    containers_and_tasks,
    decide_task,
)
from diego.cell.reconcile_lrp import (
    LRPAction,
    LRPContainerView,
    LRPDecision,
    decide_lrp,
    pair_lrps,
)
from diego.models.cells import CellPresence, CellReport
from diego.models.errors import (
    ActualLRPNotFound,
    DiegoError,
    InvalidStateTransition,
    RunningOnDifferentCell,
    TaskNotFound,
)
from diego.models.events import Event, TaskChanged, TaskRemoved
from diego.models.lifecycle import EVACUATION_FAILURE
from diego.models.lrp import ActualLRP, ActualLRPState, DesiredLRP
from diego.models.task import Task, TaskState
from diego.models.tes import TES_DOMAIN, TesTask
from diego.models.work import CellSnapshot, LRPWork, Resources, TaskWork

log = logging.getLogger("diego.cell.rep")

MOVED_ON = (TaskNotFound, InvalidStateTransition, RunningOnDifferentCell)
"""What the BBS answers a completion of a Task that is no longer this container's."""
NO_ROOM = Resources(memory_mb=0, disk_mb=0, containers=0)


class BBSClient(Protocol):
    """What the rep needs of the BBS."""

    async def get_task(self, guid: str) -> Task: ...

    async def get_tes_task(self, task_id: str) -> TesTask: ...

    async def tasks(self, *, cell_id: str | None = None) -> list[Task]: ...

    async def start_task(self, guid: str, cell_id: str) -> tuple[Task, Task]: ...

    async def complete_task(
        self, guid: str, cell_id: str, failed: bool, failure_reason: str, result: str
    ) -> tuple[Task, Task]: ...

    async def renew_cell_presence(self, presence: CellPresence, ttl: float) -> None: ...

    async def remove_cell_presence(self, cell_id: str) -> None: ...

    async def get_desired_lrp(self, process_guid: str) -> DesiredLRP: ...

    async def actual_lrps(
        self,
        process_guid: str | None = None,
        domain: str | None = None,
        cell_id: str | None = None,
    ) -> list[ActualLRP]: ...

    async def get_actual_lrp(
        self, process_guid: str, index: int, evacuating: bool = False
    ) -> ActualLRP: ...

    async def claim_actual_lrp(
        self, process_guid: str, index: int, instance_guid: str, cell_id: str
    ) -> tuple[ActualLRP, ActualLRP]: ...

    async def start_actual_lrp(
        self, process_guid: str, index: int, domain: str, instance_guid: str, cell_id: str
    ) -> tuple[ActualLRP | None, ActualLRP]: ...

    async def crash_actual_lrp(
        self, process_guid: str, index: int, instance_guid: str, cell_id: str, reason: str
    ) -> tuple[ActualLRP, ActualLRP]: ...

    async def unclaim_actual_lrp(
        self, process_guid: str, index: int
    ) -> tuple[ActualLRP, ActualLRP]: ...

    async def remove_actual_lrp(
        self,
        process_guid: str,
        index: int,
        instance_guid: str | None = None,
        evacuating: bool = False,
    ) -> ActualLRP: ...

    async def evacuate_actual_lrp(
        self, process_guid: str, index: int, instance_guid: str, cell_id: str
    ) -> tuple[ActualLRP, ActualLRP]: ...

    async def remove_evacuating_actual_lrp(
        self, process_guid: str, index: int, instance_guid: str
    ) -> ActualLRP: ...


@attrs.frozen
class RepSettings:
    """The rep's timings (seconds)."""

    poll_interval: float = 30.0
    presence_ttl: float = 30.0
    evacuation_timeout: float = 600.0
    evacuation_poll: float = 1.0


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
        capacity_freed: asyncio.Event | None = None,
        url: str = "",
    ) -> None:
        self.url = url
        """Where the control node reaches this cell's rep API; empty for an embedded cell."""
        self.cell_id = cell_id
        self.zone = zone
        self.stacks = tuple(stacks)
        self.executor = executor
        self.bbs = bbs
        self.bus = bus
        self.settings = settings
        self.capacity_freed = capacity_freed or asyncio.Event()
        """Set whenever the cell frees room (deletes a container): the auctioneer's kick."""
        self.evacuating = False
        # No work before the cell's presence is recorded: the converger fails the
        # Tasks of cells it cannot see, and would fail a Task started in between.
        self.present = asyncio.Event()
        self._evacuating: dict[str, tuple[str, int]] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._evacuation: asyncio.Future[None] | None = None
        executor.on_event = self._container_event

    # ------------------------------------------------------------ the auction's side

    def presence(self) -> CellPresence:
        """This cell's presence record."""
        total = self.executor.total
        return CellPresence(
            cell_id=self.cell_id,
            zone=self.zone,
            stacks=self.stacks,
            rootfs_providers=self.executor.backend.capabilities().rootfs_providers,
            capacity=Resources(
                memory_mb=total.memory_mb, disk_mb=total.disk_mb, containers=total.containers
            ),
            url=self.url,
        )

    async def state(self) -> CellSnapshot:
        """What the auction needs to know of this cell now."""
        return CellSnapshot(
            cell_id=self.cell_id,
            zone=self.zone,
            stacks=frozenset(self.stacks),
            rootfs_providers=frozenset(self.executor.backend.capabilities().rootfs_providers),
            total=self.executor.total,
            # An evacuating cell takes no work: it offers the auction no room.
            available=NO_ROOM if self.evacuating else self.executor.remaining(),
            lrp_counts=dict(
                collections.Counter(c.process_guid for c in self.executor.lrp_containers())
            ),
        )

    async def report(self) -> CellReport:
        """What an operator is shown of this cell."""
        state = await self.state()
        return CellReport(
            cell_id=self.cell_id,
            zone=self.zone,
            stacks=self.stacks,
            rootfs_providers=tuple(sorted(state.rootfs_providers)),
            capacity=state.total,
            available=state.available,
            containers=len(self.executor.containers()),
            evacuating=self.evacuating,
            capabilities=self.executor.backend.capabilities(),
            url=self.url,
        )

    async def cancel_task(self, guid: str) -> None:
        """The BBS cancelled the Task ``guid``: if its container runs here, stop it now
        rather than at the next poll."""
        container = self.executor.get(guid)
        if container is not None and container.state is not ContainerState.COMPLETED:
            await self.reconcile(guid)

    async def perform(self, work: Sequence[TaskWork | LRPWork]) -> list[TaskWork | LRPWork]:
        """Take the work that fits: reserve each container; the rest is returned."""
        if self.evacuating or not self.present.is_set():
            return list(work)
        refused: list[TaskWork | LRPWork] = []
        for item in work:
            if isinstance(item, LRPWork):
                instance_guid = uuid.uuid4().hex
                tags = LRPTags(item.process_guid, item.index, item.domain)
                if self.executor.reserve(instance_guid, item.memory_mb, item.disk_mb, tags):
                    self._spawn(self._start_lrp(item, instance_guid))
                else:
                    refused.append(item)
            elif self.executor.get(item.task_guid) is not None:
                continue  # a copy of work already here (the intake's, say): taken
            elif self.executor.reserve(item.task_guid, item.memory_mb, item.disk_mb):
                self._spawn(self._start(item.task_guid))
            else:
                refused.append(item)
        return refused

    async def _start_lrp(self, work: LRPWork, instance_guid: str) -> None:
        async with self._lock(instance_guid):
            try:
                await self.bbs.claim_actual_lrp(
                    work.process_guid, work.index, instance_guid, self.cell_id
                )
                desired = await self.bbs.get_desired_lrp(work.process_guid)
            except DiegoError as e:
                # Claimed elsewhere, or no longer desired: not ours to run.
                log.info(
                    "lrp-not-started guid=%s index=%d reason=%s", work.process_guid, work.index, e
                )
                await self._delete(instance_guid)
                return
            self.executor.run(instance_guid, lrp_request(desired, work.index, instance_guid))

    async def _start(self, guid: str) -> None:
        async with self._lock(guid):
            try:
                _, task = await self.bbs.start_task(guid, self.cell_id)
            except DiegoError as e:
                # Cancelled, or started elsewhere meanwhile: not ours to run.
                log.info("task-not-started guid=%s reason=%s", guid, e)
                await self._delete(guid)
                return
            await self._run_task(task)

    async def _run_task(self, task: Task) -> None:
        """Run a reserved Task's container, or fail the Task if its work cannot be read."""
        try:
            request = await self._request_for(task)
        except DiegoError as e:
            await self._fail_unstartable(task.task_guid, f"cannot run the task: {e}")
            return
        self.executor.run(task.task_guid, request)

    async def _request_for(self, task: Task) -> RunRequest:
        """What to run for a Task: its action tree, or for a TES task its TES document."""
        if task.domain != TES_DOMAIN:
            return RunRequest.for_task(task)
        document = await self.bbs.get_tes_task(task.task_guid)
        use_images = "docker" in self.executor.backend.capabilities().rootfs_providers
        return RunRequest.for_tes(task, document, use_images)

    async def _fail_unstartable(self, guid: str, reason: str) -> None:
        with contextlib.suppress(DiegoError):
            await self.bbs.complete_task(guid, self.cell_id, True, reason, "")
        await self._delete(guid)

    # ------------------------------------------------------------ reconciling

    async def reconcile(self, guid: str) -> None:
        """Bring the BBS and the container of ``guid`` into step, by the table."""
        if self.executor.lrp_of(guid) is not None:
            await self.reconcile_lrp(guid)
            return
        async with self._lock(guid):
            container = self.executor.get(guid)
            if (
                container is not None
                and container.state is ContainerState.COMPLETED
                and await self._completed_at_once(container)
            ):
                return
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

    async def _completed_at_once(self, container: ContainerView) -> bool:
        """Complete a finished container's Task by the CAS alone, then delete it.

        The table's verdict for a finished container is to complete the Task exactly
        when the Task is PENDING, or CLAIMED or RUNNING here, and those are exactly
        the Tasks the CAS accepts: no read is needed to decide. False, with nothing
        done, when the CAS refuses: the table then decides on a fresh read.
        """
        guid = container.guid
        try:
            await self.bbs.complete_task(
                guid, self.cell_id, container.failed, container.failure_reason, container.result
            )
        except DiegoError:
            return False
        log.info("reconcile guid=%s action=%s", guid, Action.COMPLETE_TASK_THEN_DELETE.name)
        await self._delete(guid)
        return True

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
            except MOVED_ON as e:
                # The Task moved on (cancelled, resolved): the container goes anyway.
                log.info("task-not-completed guid=%s reason=%s", guid, e)
            except DiegoError as e:
                # Not heard (a BBS out of reach, say): the container and its result
                # stay, and the next reconcile completes it.
                log.warning("task-completion-not-recorded guid=%s reason=%s", guid, e)
                return
            if action is Action.COMPLETE_TASK_THEN_DELETE:
                await self._delete(guid)

    async def reconcile_lrp(self, instance_guid: str) -> None:
        """Bring an ActualLRP and its container here into step, by the LRP table."""
        async with self._lock(instance_guid):
            if instance_guid in self._evacuating:
                return  # the evacuation drives it, not the table
            container = next(
                (c for c in self.executor.lrp_containers() if c.instance_guid == instance_guid),
                None,
            )
            if container is None:
                return
            actual = await self._actual(container.process_guid, container.index)
            decision = decide_lrp(self.cell_id, container, actual)
            if decision.action is LRPAction.NOTHING:
                return
            log.log(
                logging.WARNING if decision.loud else logging.INFO,
                "reconcile-lrp guid=%s index=%d action=%s",
                container.process_guid,
                container.index,
                decision.action.name,
            )
            await self._apply_lrp(decision, container, actual)

    async def _actual(self, process_guid: str, index: int) -> ActualLRP | None:
        try:
            return await self.bbs.get_actual_lrp(process_guid, index)
        except ActualLRPNotFound:
            return None

    async def _apply_lrp(
        self, decision: LRPDecision, container: LRPContainerView, actual: ActualLRP | None
    ) -> None:
        guid, index, ig = container.process_guid, container.index, container.instance_guid
        domain = self._domain_of(ig, actual)
        action = decision.action
        try:
            if action is LRPAction.CLAIM:
                await self.bbs.claim_actual_lrp(guid, index, ig, self.cell_id)
            elif action is LRPAction.START:
                await self.bbs.start_actual_lrp(guid, index, domain, ig, self.cell_id)
            elif action is LRPAction.CRASH_THEN_DELETE:
                if actual is None:
                    # The BBS lost it: write what we know, then the crash.
                    await self.bbs.start_actual_lrp(guid, index, domain, ig, self.cell_id)
                # Left UNCLAIMED (to restart now), the control side auctions it.
                await self.bbs.crash_actual_lrp(
                    guid, index, ig, self.cell_id, decision.crash_reason or "crashed"
                )
            elif action is LRPAction.REMOVE_THEN_DELETE:
                await self.bbs.remove_actual_lrp(guid, index, instance_guid=ig)
        except DiegoError as e:
            log.info("lrp-not-updated guid=%s index=%d reason=%s", guid, index, e)
        if action.deletes_container:
            await self._delete(ig)

    def _domain_of(self, instance_guid: str, actual: ActualLRP | None) -> str:
        tags = self.executor.lrp_of(instance_guid)
        if tags is not None:
            return tags[0].domain
        return actual.domain if actual is not None else ""

    async def _reconcile_lost(self, actual: ActualLRP) -> None:
        """An ActualLRP the BBS puts here with no container for it: the no-container rows."""
        async with self._lock(actual.instance_guid):
            if self.executor.get(actual.instance_guid) is not None:
                return
            fresh = await self._actual(actual.process_guid, actual.index)
            if fresh is None or fresh.instance_guid != actual.instance_guid:
                return
            if decide_lrp(self.cell_id, None, fresh).action is LRPAction.REMOVE:
                log.info("lrp-lost guid=%s index=%d", fresh.process_guid, fresh.index)
                with contextlib.suppress(DiegoError):
                    await self.bbs.remove_actual_lrp(
                        fresh.process_guid, fresh.index, instance_guid=fresh.instance_guid
                    )

    async def stop_lrp(self, actual: ActualLRP) -> bool:
        """Stop the instance ``actual`` if it runs here; False if it is not this cell's."""
        if actual.cell_id != self.cell_id:
            return False
        if self.executor.get(actual.instance_guid) is None:
            await self._reconcile_lost(actual)
        else:
            await self.executor.stop(actual.instance_guid)
        return True

    async def reconcile_all(self) -> None:
        """One polling pass over the pairs the tables' pairing functions make: every
        container here with its BBS record, and every record the BBS puts here with
        no container; each then decided on a fresh read under its guid's lock."""
        actuals = await self.bbs.actual_lrps(cell_id=self.cell_id)
        for lrp, actual in pair_lrps(self.cell_id, self.executor.lrp_containers(), actuals):
            if lrp is not None:
                await self.reconcile_lrp(lrp.instance_guid)
            elif actual is not None:
                await self._reconcile_lost(actual)
        tasks = [TaskView.of(t) for t in await self.bbs.tasks(cell_id=self.cell_id)]
        containers = [c for c in self.executor.containers() if self.executor.lrp_of(c.guid) is None]
        for container, task in containers_and_tasks(self.cell_id, containers, tasks):
            if container is not None:
                await self.reconcile(container.guid)
            elif task is not None:
                await self.reconcile(task.task_guid)
        self._prune_locks()

    # ------------------------------------------------------------ loops

    async def run(self) -> None:
        """Announce the cell, then poll, renew presence and follow events until cancelled."""
        while True:  # tried again a third of the TTL on, until the BBS records it
            if await self._announce("presence-announcement-failed"):
                break
            await asyncio.sleep(self.settings.presence_ttl / 3)
        self.present.set()
        subscription = None
        try:
            async with asyncio.TaskGroup() as group:
                # Renewed from here on: taking back many containers outlasts the TTL.
                group.create_task(self._renew_presence())
                for guid in await self.executor.adopt_previous_run():
                    await self._resume(guid)
                await self._start_unbegun()
                subscription = self.bus.subscribe(
                    self._concerns_a_container, name=f"rep {self.cell_id}"
                )
                group.create_task(self._poll())
                group.create_task(self._follow(subscription))
        finally:
            if subscription is not None:
                subscription.close()
            for task in tuple(self._background):
                task.cancel()
            with contextlib.suppress(Exception):
                await self.bbs.remove_cell_presence(self.cell_id)
            await self.executor.close()

    async def _resume(self, guid: str) -> None:
        """Go on with a container an earlier life of this cell left, if its Task still
        runs here (or its ActualLRP is still this instance, here); otherwise it is
        interrupted, and the tables settle the rest."""
        async with self._lock(guid):
            try:
                if await self._resumed(guid):
                    return
            except DiegoError as e:
                log.info("container-not-resumed guid=%s reason=%s", guid, e)
            except Exception:  # the engine, say: interrupted (never run twice), not a crash
                log.exception("container-not-resumed guid=%s", guid)
            self.executor.interrupt(guid)

    async def _resumed(self, guid: str) -> bool:
        lrp = self.executor.lrp_of(guid)
        if lrp is None:
            task = await self.bbs.get_task(guid)
            if task.state is not TaskState.RUNNING or task.cell_id != self.cell_id:
                return False
            return await self.executor.resume(guid, await self._request_for(task))
        tags = lrp[0]
        actual = await self.bbs.get_actual_lrp(tags.process_guid, tags.index)
        here = actual.cell_id == self.cell_id and actual.instance_guid == guid
        if not here or actual.state not in (ActualLRPState.CLAIMED, ActualLRPState.RUNNING):
            return False
        desired = await self.bbs.get_desired_lrp(tags.process_guid)
        request = lrp_request(desired, tags.index, guid)
        healthy = actual.state is ActualLRPState.RUNNING
        return await self.executor.resume(guid, request, healthy)

    async def _start_unbegun(self) -> None:
        """Start the Tasks an earlier life of this cell started in the BBS but died
        before it made their containers: nothing of them ran (no container, no step
        journaled), so they run now rather than fail for want of a container."""
        try:
            tasks = await self.bbs.tasks(cell_id=self.cell_id)
        except DiegoError as e:
            log.info("unbegun-tasks-not-read reason=%s", e)
            return
        running = [t for t in tasks if t.state is TaskState.RUNNING]
        for task in running:
            guid = task.task_guid
            if self.executor.get(guid) is not None:
                continue
            if self.executor.journaled(guid):
                continue  # it began: the table fails it (never run twice)
            async with self._lock(guid):
                if self.executor.reserve(guid, task.memory_mb, task.disk_mb):
                    log.info("task-started-again guid=%s", guid)
                    await self._run_task(task)
        # Those the table is about to fail keep theirs until the next start.
        self.executor.remove_stray_journals(keep={t.task_guid for t in running})

    async def _poll(self) -> None:
        while True:
            try:
                await self.reconcile_all()
            except Exception:
                log.exception("reconcile-failed cell=%s", self.cell_id)
            await asyncio.sleep(self.settings.poll_interval)

    async def _renew_presence(self) -> None:
        """Renew a third of the TTL after the last renewal that was recorded; after one
        that failed, again a tenth of the TTL later, so that several tries fit before
        the presence would expire (its expiry fails the cell's Tasks at once)."""
        loop = asyncio.get_running_loop()
        ttl = self.settings.presence_ttl
        renewed = loop.time()  # the announcement run() just made
        while True:
            await asyncio.sleep(max(0.0, renewed + ttl / 3 - loop.time()))
            started = loop.time()
            while not await self._announce("presence-renewal-failed"):
                await asyncio.sleep(ttl / 10)
                started = loop.time()
            renewed = started

    async def _announce(self, failure: str) -> bool:
        """Record the presence; whether it was. It gives up after a quarter of the TTL
        (a renewal that hangs longer would leave no time to try again before it
        expires) and logs a failure as ``failure``."""
        try:
            async with asyncio.timeout(self.settings.presence_ttl / 4):
                await self.bbs.renew_cell_presence(self.presence(), self.settings.presence_ttl)
        except DiegoError as e:  # a BBS not reached, or refusing this cell
            log.warning("%s cell=%s reason=%s", failure, self.cell_id, e)
        except TimeoutError:
            log.warning("%s cell=%s reason=timed out", failure, self.cell_id)
        except Exception:
            log.exception("%s cell=%s", failure, self.cell_id)
        else:
            return True
        return False

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
        if isinstance(event, ContainerCompleted) or self.executor.lrp_of(event.guid) is not None:
            self._spawn(self.reconcile(event.guid))

    # ------------------------------------------------------------ evacuation

    async def begin_evacuation(self) -> None:
        """Start evacuating, in the background (once: a cell evacuates once)."""
        self._evacuation_started()

    async def evacuate(self) -> None:
        """Evacuate, and return once done: refuse new work, move the instances away,
        wait for the containers to finish, then fail what is left. A second call (or
        one after ``begin_evacuation``) waits for the first."""
        await asyncio.shield(self._evacuation_started())

    def _evacuation_started(self) -> asyncio.Future[None]:
        if self._evacuation is None:
            self._evacuation = asyncio.ensure_future(self._evacuate())
            self._evacuation.add_done_callback(_log_failure)
        return self._evacuation

    async def _evacuate(self) -> None:
        self.evacuating = True
        log.info("evacuation-started cell=%s", self.cell_id)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.evacuation_timeout
        await self._move_lrps_away()
        while self._evacuating and loop.time() < deadline:
            await self._retire_replaced()
            await asyncio.sleep(self.settings.evacuation_poll)
        for ig in tuple(self._evacuating):
            await self._retire(ig)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.settings.evacuation_timeout):
                await self.executor.wait_empty()
        for container in self.executor.containers():
            async with self._lock(container.guid):
                with contextlib.suppress(DiegoError):
                    await self.bbs.complete_task(
                        container.guid, self.cell_id, True, EVACUATION_FAILURE, ""
                    )
                await self._delete(container.guid)
        log.info("evacuation-finished cell=%s", self.cell_id)

    async def _move_lrps_away(self) -> None:
        """Starting instances are destroyed and restarted elsewhere; RUNNING ones move
        aside as evacuating copies while their replacements start."""
        for container in self.executor.lrp_containers():
            guid, index, ig = container.process_guid, container.index, container.instance_guid
            async with self._lock(ig):
                if container.state is ContainerState.RUNNING:
                    try:
                        await self.bbs.evacuate_actual_lrp(guid, index, ig, self.cell_id)
                    except DiegoError as e:
                        log.info("lrp-not-evacuated guid=%s index=%d reason=%s", guid, index, e)
                        await self._delete(ig)
                        continue
                    self._evacuating[ig] = (guid, index)
                else:
                    actual = await self._actual(guid, index)
                    if actual is not None and actual.instance_guid == ig:
                        with contextlib.suppress(DiegoError):
                            await self.bbs.unclaim_actual_lrp(guid, index)
                    await self._delete(ig)

    async def _retire_replaced(self) -> None:
        """Destroy each evacuating instance whose replacement runs (or cannot)."""
        for ig, (guid, index) in tuple(self._evacuating.items()):
            replacement = await self._actual(guid, index)
            if replacement is None or replacement.state in (
                ActualLRPState.RUNNING,
                ActualLRPState.CRASHED,
            ):
                await self._retire(ig)

    async def _retire(self, instance_guid: str) -> None:
        guid, index = self._evacuating.pop(instance_guid)
        with contextlib.suppress(DiegoError):
            await self.bbs.remove_evacuating_actual_lrp(guid, index, instance_guid)
        await self._delete(instance_guid)

    # ------------------------------------------------------------ helpers

    async def _delete(self, guid: str) -> None:
        await self.executor.delete(guid)
        self.capacity_freed.set()

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
