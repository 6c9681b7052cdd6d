"""The executor: a cell's registry of containers, their capacity and their lives.

A container is reserved (RESERVED, counted against capacity), then run:
INITIALIZING while the backend makes it, CREATED, RUNNING while its action tree
runs, COMPLETED with a result. The executor reports RUNNING and COMPLETED as
events and never decides anything about Tasks: the rep does. A container can be
deleted in any state; deleting frees its capacity.

A container outlives its cell (the backend's processes run on, see ``reopen``):
a Task's steps (or its TES job's parts) and an LRP's setup and action are
journaled, and a restarted cell resumes the work where it was
(``adopt_previous_run``, then ``resume``) instead of failing or crashing it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import posixpath
import shutil
from collections.abc import Callable, Collection, Coroutine, Mapping
from pathlib import Path
from typing import Protocol

import attrs

from diego.cell.backends.base import Backend, BackendError, ContainerSpec
from diego.cell.journal import Journal
from diego.cell.reconcile import ContainerState, ContainerView
from diego.cell.reconcile_lrp import LRPContainerView
from diego.cell.steps import StepContext, StepFailed, perform
from diego.cell.tes_job import DEFAULT_TAIL_BYTES, TesJob
from diego.cell.transfer import TransferError, Transfers, first_file_of_tar
from diego.models.actions import Action, DownloadAction, UploadAction
from diego.models.lrp import DesiredLRP
from diego.models.task import MAX_RESULT_BYTES, Task
from diego.models.tes import TesTask
from diego.models.work import Resources

log = logging.getLogger("diego.cell.executor")

DEFAULT_LOG_SOURCE = "TASK"
DEFAULT_LRP_LOG_SOURCE = "APP"


@attrs.frozen
class LRPTags:
    """Which ActualLRP a container runs."""

    process_guid: str
    index: int
    domain: str

    def labels(self) -> tuple[tuple[str, str], ...]:
        """These tags as container labels, for a restarted cell to find."""
        return (
            ("lrp.process_guid", self.process_guid),
            ("lrp.index", str(self.index)),
            ("lrp.domain", self.domain),
        )

    @classmethod
    def from_labels(cls, labels: Mapping[str, str]) -> LRPTags | None:
        """The tags ``labels()`` wrote, or None for a Task's container."""
        try:
            return cls(labels["lrp.process_guid"], int(labels["lrp.index"]), labels["lrp.domain"])
        except (KeyError, ValueError):
            return None


@attrs.frozen
class RunRequest:
    """What to run in a reserved container.

    A Task's container runs its action once and completes. An LRP's (``lrp`` set)
    runs ``setup``, then its action with ``monitor`` deciding when it is RUNNING
    (healthy); the action exiting or the monitor failing later is a crash, and
    not becoming healthy within ``start_timeout_ms`` (0: no limit) is one too.
    """

    spec: ContainerSpec
    action: Action
    result_file: str = ""
    log_guid: str = ""
    log_source: str = DEFAULT_LOG_SOURCE
    lrp: LRPTags | None = None
    setup: Action | None = None
    monitor: Action | None = None
    start_timeout_ms: int = 0
    tes: TesTask | None = None  # a TES task: run from its document, not from ``action``
    use_images: bool = True  # for a TES task: whether the container is its image

    @classmethod
    def for_task(cls, task: Task) -> RunRequest:
        """The container and action tree of a Task."""
        spec = ContainerSpec(
            guid=task.task_guid,
            memory_mb=task.memory_mb,
            disk_mb=task.disk_mb,
            cpu_weight=task.cpu_weight or 100,
            max_pids=task.max_pids,
            privileged=task.privileged,
            network=bool(task.security_group_rules),
            env=tuple((e.name, e.value) for e in task.env),
            stack=task.stack,
            root_fs=task.root_fs,
            rules=task.security_group_rules,
        )
        return cls(
            spec=spec,
            action=task.action,
            result_file=task.result_file,
            log_guid=task.log_guid,
            log_source=task.log_source or DEFAULT_LOG_SOURCE,
        )

    @classmethod
    def for_tes(cls, task: Task, document: TesTask, use_images: bool) -> RunRequest:
        """The container of a TES task's internal Task, which runs ``document``."""
        volumes = {
            posixpath.dirname(p)
            for p in (
                *(i.path for i in document.inputs),
                *(o.path for o in document.outputs),
            )
        }
        volumes |= set(document.volumes)
        volumes |= {e.workdir for e in document.executors if e.workdir}
        for e in document.executors:
            volumes |= {posixpath.dirname(p) for p in (e.stdout, e.stderr) if p}
        base = cls.for_task(task)
        spec = attrs.evolve(base.spec, volumes=tuple(sorted(volumes - {"", "/"})))
        return attrs.evolve(base, spec=spec, tes=document, use_images=use_images)


def lrp_request(desired: DesiredLRP, index: int, instance_guid: str) -> RunRequest:
    """The container and actions of one instance of ``desired``."""
    env = (
        *((e.name, e.value) for e in desired.env),
        ("INSTANCE_INDEX", str(index)),
        ("INSTANCE_GUID", instance_guid),
    )
    tags = LRPTags(desired.process_guid, index, desired.domain)
    spec = ContainerSpec(
        guid=instance_guid,
        memory_mb=desired.memory_mb,
        disk_mb=desired.disk_mb,
        cpu_weight=desired.cpu_weight or 100,
        max_pids=desired.max_pids,
        privileged=desired.privileged,
        network=bool(desired.security_group_rules),
        env=env,
        stack=desired.stack,
        root_fs=desired.root_fs,
        rules=desired.security_group_rules,
        labels=tags.labels(),
    )
    return RunRequest(
        spec=spec,
        action=desired.action,
        log_guid=desired.log_guid,
        log_source=desired.log_source or DEFAULT_LRP_LOG_SOURCE,
        lrp=tags,
        setup=desired.setup,
        monitor=desired.monitor,
        start_timeout_ms=desired.start_timeout_ms,
    )


@attrs.frozen
class ContainerRunning:
    """A container's action tree has started."""

    guid: str


@attrs.frozen
class ContainerCompleted:
    """A container's action tree has finished; its result is in the registry."""

    guid: str


ContainerEvent = ContainerRunning | ContainerCompleted


@attrs.frozen
class MonitorSettings:
    """How often an LRP's monitor runs (seconds): until healthy, and once healthy."""

    unhealthy_interval: float = 0.5
    healthy_interval: float = 30.0


SETUP_KEY, ACTION_KEY = "s", "a"
"""The journal keys of an LRP's setup and action (a Task's tree is "0")."""
UNHEALTHY = "Instance became unhealthy"
EXITED = "the process exited"
INTERRUPTED = "interrupted: the cell restarted while the container ran"
PRIVILEGED_REFUSED = (
    "privileged containers are not allowed on this cell ([cell] allow_privileged = false)"
)


@attrs.define(eq=False)
class _Container:
    guid: str
    memory_mb: int
    disk_mb: int
    state: ContainerState = ContainerState.RESERVED
    failed: bool = False
    failure_reason: str = ""
    result: str = ""
    runner: asyncio.Task[None] | None = None
    lrp: LRPTags | None = None
    shutdown: bool = False  # completed because it was told to stop, not by a crash
    journal: Journal | None = None  # a resumable container's steps
    adopted: bool = False  # left by an earlier run of the cell, waiting to be resumed

    def view(self) -> ContainerView:
        return ContainerView(self.guid, self.state, self.failed, self.failure_reason, self.result)


class LogSink(Protocol):
    """Where the executor writes its containers' output: the node's log store, or for
    a cell node whose control node is on another machine, the shipper to it."""

    def emit(self, log_guid: str, source: str, message: str, stream: str = "OUT") -> None: ...


class Executor:
    """One cell's containers."""

    def __init__(
        self,
        backend: Backend,
        total: Resources,
        logs: LogSink,
        transfers: Transfers,
        scratch: Path,
        on_event: Callable[[ContainerEvent], None] = lambda _e: None,
        monitor: MonitorSettings | None = None,
        *,
        allow_privileged: bool = False,
        max_pids: int = 0,
        journals: Path | None = None,
        tes_tail_bytes: int = DEFAULT_TAIL_BYTES,
    ) -> None:
        self.monitor = monitor or MonitorSettings()
        self.allow_privileged = allow_privileged
        self.max_pids = max_pids  # of a container whose work gives none; 0: no limit
        self.tes_tail_bytes = tes_tail_bytes
        self.backend = backend
        self.total = total
        self.logs = logs
        self.transfers = transfers
        self.scratch = scratch
        self.journals = journals
        """Where containers' step journals are kept; None: a restarted cell resumes nothing."""
        self.on_event = on_event
        self._containers: dict[str, _Container] = {}
        self._empty = asyncio.Event()
        self._empty.set()

    # ------------------------------------------------------------ the registry

    def remaining(self) -> Resources:
        """Capacity not yet reserved."""
        used_memory = sum(c.memory_mb for c in self._containers.values())
        used_disk = sum(c.disk_mb for c in self._containers.values())
        return Resources(
            memory_mb=max(0, self.total.memory_mb - used_memory),
            disk_mb=max(0, self.total.disk_mb - used_disk),
            containers=max(0, self.total.containers - len(self._containers)),
        )

    def containers(self) -> list[ContainerView]:
        """Every container, as the rep sees it."""
        return [c.view() for c in self._containers.values()]

    def lrp_containers(self) -> list[LRPContainerView]:
        """The containers of ActualLRPs, as the LRP table sees them."""
        return [
            LRPContainerView(
                instance_guid=c.guid,
                process_guid=c.lrp.process_guid,
                index=c.lrp.index,
                state=c.state,
                shutdown=c.shutdown,
                crash_reason=c.failure_reason,
            )
            for c in self._containers.values()
            if c.lrp is not None
        ]

    def get(self, guid: str) -> ContainerView | None:
        """One container, or None."""
        container = self._containers.get(guid)
        return container.view() if container else None

    def reserve(self, guid: str, memory_mb: int, disk_mb: int, lrp: LRPTags | None = None) -> bool:
        """Reserve room for a container; False if it exists or does not fit."""
        if guid in self._containers:
            return False
        room = self.remaining()
        if memory_mb > room.memory_mb or disk_mb > room.disk_mb or room.containers < 1:
            return False
        self._containers[guid] = _Container(guid, memory_mb, disk_mb, lrp=lrp)
        self._empty.clear()
        return True

    async def wait_empty(self) -> None:
        """Return once no container is left."""
        await self._empty.wait()

    # ------------------------------------------------------------ running

    def run(self, guid: str, request: RunRequest) -> None:
        """Start a RESERVED container's life; it is INITIALIZING when this returns."""
        container = self._containers.get(guid)
        if container is None or container.state is not ContainerState.RESERVED:
            raise ValueError(f"container {guid} is not reserved")
        container.state = ContainerState.INITIALIZING
        container.lrp = request.lrp
        if self.journals is not None:
            # Every container has one, made once the container is and before anything
            # runs in it: that it exists says its work may have begun.
            container.journal = Journal(self._journal_path(guid))
        container.runner = asyncio.create_task(self._life(container, request), name=guid)

    def _life(
        self, container: _Container, request: RunRequest, made: bool = False, healthy: bool = False
    ) -> Coroutine[None, None, None]:
        """The life of a container: a Task's, or an LRP instance's. ``made``: the
        container is there already (resumed); ``healthy``: an LRP's monitor had passed."""
        if request.lrp is not None:
            return self._live_lrp(container, request, made, healthy)
        return self._live(container, request, made)

    def journaled(self, guid: str) -> bool:
        """Whether container ``guid``'s work may have begun: its journal is there (made
        once the container is), or no journals are kept, so nothing can be told."""
        return self.journals is None or self._journal_path(guid).exists()

    def remove_stray_journals(self, keep: Collection[str]) -> None:
        """Remove the journals of containers that are gone, but those in ``keep``: the
        node died between destroying a container and removing its journal."""
        if self.journals is None:
            return
        stray: list[str] = []
        with contextlib.suppress(FileNotFoundError), os.scandir(self.journals) as entries:
            stray = [e.name for e in entries if e.name not in self._containers]
        for guid in stray:
            if guid not in keep:
                log.info("stray-journal-removed guid=%s", guid)
                self._journal_path(guid).unlink(missing_ok=True)

    def _journal_path(self, guid: str) -> Path:
        assert self.journals is not None
        return self.journals / guid

    def _spec(self, request: RunRequest) -> ContainerSpec:
        spec = request.spec
        if self.max_pids and not 0 < spec.max_pids <= self.max_pids:
            # The cell's limit, unless the work asks for less: the API refuses more,
            # and the cell holds to it whatever sent the work.
            spec = attrs.evolve(spec, max_pids=self.max_pids)
        return spec

    async def _make(self, container: _Container, request: RunRequest) -> StepContext | None:
        """Make the container (INITIALIZING → CREATED) and its steps' context; None if
        it could not be made (the container is then COMPLETED, failed, saying why)."""
        spec = self._spec(request)
        if spec.privileged and not self.allow_privileged:
            # The API refuses such work; the cell refuses it too, whatever sent it.
            self._complete(container, True, f"failed to create container: {PRIVILEGED_REFUSED}", "")
            return None
        try:
            await self.backend.create(spec)
        except (BackendError, OSError) as e:
            self._complete(container, True, f"failed to create container: {e}", "")
            return None
        container.state = ContainerState.CREATED
        return await self._context(container, request)

    async def _context(self, container: _Container, request: RunRequest) -> StepContext:
        scratch = self.scratch / container.guid
        if _uses_scratch(request):
            await asyncio.to_thread(scratch.mkdir, parents=True, exist_ok=True)

        def emit(source: str, stream: str, message: str) -> None:
            self.logs.emit(request.log_guid, source, message, stream)

        return StepContext(
            self.backend,
            container.guid,
            emit,
            self.transfers,
            scratch,
            request.log_source,
            container.journal,
        )

    async def _made_again(self, container: _Container, request: RunRequest) -> None:
        await self.backend.destroy(container.guid)
        await self._life(container, request)

    async def _live(self, container: _Container, request: RunRequest, made: bool = False) -> None:
        context = await (self._context if made else self._make)(container, request)
        if context is None:
            return
        if container.journal is not None and not made:
            container.journal.open()  # made: from now on a process of it may run
        # No monitor for a Task: it is RUNNING as soon as its action starts.
        container.state = ContainerState.RUNNING
        self.on_event(ContainerRunning(container.guid))
        if request.tes is not None:
            await self._live_tes(container, request, request.tes, context)
            return
        try:
            await perform(request.action, context)
            result = await self._result(container.guid, request.result_file, context.scratch)
        except StepFailed as e:
            self._complete(container, True, e.reason, "")
        else:
            self._complete(container, False, "", result)
        finally:
            await _drop_scratch(request, context)

    async def _live_tes(
        self, container: _Container, request: RunRequest, task: TesTask, ctx: StepContext
    ) -> None:
        job = TesJob(
            task=task,
            backend=self.backend,
            guid=container.guid,
            transfers=self.transfers,
            scratch=ctx.scratch,
            use_images=request.use_images,
            log=lambda source, stream, line: ctx.log(source, stream, line),
            tail_bytes=self.tes_tail_bytes,
            journal=container.journal,
        )
        try:
            report = await job.run()
        finally:
            await _drop_scratch(request, ctx)
        # The Task did its work, whatever the TES outcome: Diego keeps a result only
        # for a Task that succeeded, and the outcome is in the report.
        self._complete(container, False, "", report.to_json())

    async def _live_lrp(
        self, container: _Container, request: RunRequest, made: bool = False, healthy: bool = False
    ) -> None:
        context = await (self._context if made else self._make)(container, request)
        if context is None:
            return
        if container.journal is not None and not made:
            container.journal.open()
        try:
            reason = await self._run_lrp(container, request, context, healthy)
        except asyncio.CancelledError:
            if not container.shutdown:
                raise
            reason = "stopped"
        finally:
            await _drop_scratch(request, context)
        self._complete(container, not container.shutdown, reason, "")

    async def _run_lrp(
        self, container: _Container, request: RunRequest, ctx: StepContext, healthy: bool
    ) -> str:
        """Run an LRP until it crashes; the crash reason. Its setup and action are
        journaled (keys ``s`` and ``a``), so a resumed instance does not set up again
        and attaches to its action; ``healthy``: its monitor had passed before."""
        if request.setup is not None:
            try:
                await perform(request.setup, ctx, key=SETUP_KEY)
            except StepFailed as e:
                return f"setup failed: {e.reason}"
        action = asyncio.create_task(_exit_reason(request.action, ctx))
        checks = attrs.evolve(ctx, journal=None)  # a monitor runs again and again
        try:
            if request.monitor is not None and not healthy:
                unhealthy = await self._until_healthy(request, checks, action)
                if unhealthy:
                    return unhealthy
            container.state = ContainerState.RUNNING
            self.on_event(ContainerRunning(container.guid))
            if request.monitor is None:
                return await action
            return await self._while_healthy(request.monitor, checks, action)
        finally:
            action.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await action

    async def _until_healthy(
        self, request: RunRequest, ctx: StepContext, action: asyncio.Task[str]
    ) -> str:
        """Run the monitor until it passes: "" then, or why the start failed."""
        assert request.monitor is not None
        loop = asyncio.get_running_loop()
        timeout = request.start_timeout_ms / 1000
        deadline = loop.time() + timeout if timeout else None
        while True:
            if action.done():
                return action.result()
            try:
                await perform(request.monitor, ctx)
                return ""
            except StepFailed:
                pass
            if deadline is not None and loop.time() >= deadline:
                return f"Instance never healthy after {timeout:g}s"
            await asyncio.wait([action], timeout=self.monitor.unhealthy_interval)

    async def _while_healthy(
        self, monitor: Action, ctx: StepContext, action: asyncio.Task[str]
    ) -> str:
        """Check health until the action exits or the monitor fails: the crash reason."""
        while True:
            await asyncio.wait([action], timeout=self.monitor.healthy_interval)
            if action.done():
                return action.result()
            try:
                await perform(monitor, ctx)
            except StepFailed:
                return UNHEALTHY

    async def stop(self, guid: str) -> None:
        """Stop an LRP's processes: its container completes as shut down (not crashed)."""
        container = self._containers.get(guid)
        if container is None or container.state is ContainerState.COMPLETED:
            return
        container.shutdown = True
        runner = container.runner
        if runner is None:
            self._complete(container, False, "stopped", "")
            return
        runner.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await runner

    def lrp_of(self, guid: str) -> tuple[LRPTags, bool] | None:
        """The ActualLRP a container runs and whether it was shut down, or None."""
        container = self._containers.get(guid)
        if container is None or container.lrp is None:
            return None
        return container.lrp, container.shutdown

    async def _result(self, guid: str, result_file: str, scratch: Path) -> str:
        if not result_file:
            return ""
        tar = scratch / "result.tar"
        try:
            await self.backend.stream_out(guid, result_file, tar)
            data = await asyncio.to_thread(first_file_of_tar, tar, MAX_RESULT_BYTES)
        except (BackendError, TransferError, OSError) as e:
            raise StepFailed(f"failed to read result_file {result_file}: {e}") from None
        return data.decode(errors="replace")

    def _complete(self, container: _Container, failed: bool, reason: str, result: str) -> None:
        container.state = ContainerState.COMPLETED
        container.failed = failed
        container.failure_reason = reason
        container.result = result
        log.info("container-completed guid=%s failed=%s reason=%s", container.guid, failed, reason)
        self.on_event(ContainerCompleted(container.guid))

    async def delete(self, guid: str) -> None:
        """Stop whatever the container runs and remove it, in any state."""
        container = self._containers.get(guid)
        if container is None:
            return
        runner = container.runner
        if runner is None and container.state is ContainerState.RESERVED:
            # Only reserved: nothing was made in the backend.
            self._forget(guid)
            return
        if runner is not None and not runner.done():
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner
        try:
            await self.backend.destroy(guid)
        finally:
            self._forget(guid)
            if container.journal is not None:
                container.journal.remove()
            elif self.journals is not None:  # an adopted one's, never resumed
                self._journal_path(guid).unlink(missing_ok=True)

    def _forget(self, guid: str) -> None:
        self._containers.pop(guid, None)
        if not self._containers:
            self._empty.set()

    async def adopt_previous_run(self) -> list[str]:
        """Take into the registry the containers an earlier life of this cell left;
        their guids, which wait for ``resume`` (or ``interrupt``).

        Each is adopted RUNNING: its processes may still run, and the rep resumes it
        if its Task still runs here (or its ActualLRP is still this instance, here).
        One that is not resumed is interrupted: COMPLETED and failed
        (:data:`INTERRUPTED`), and the rep's tables fail its Task (or crash its
        ActualLRP) and delete it. Nothing is left running unowned, and nothing runs
        twice.
        """
        waiting = []
        for leftover in await self.backend.existing():
            if leftover.guid in self._containers:
                continue
            lrp = LRPTags.from_labels(leftover.labels)
            log.info("container-from-previous-run-adopted guid=%s", leftover.guid)
            container = _Container(leftover.guid, leftover.memory_mb, leftover.disk_mb, lrp=lrp)
            container.state, container.adopted = ContainerState.RUNNING, True
            waiting.append(leftover.guid)
            self._containers[leftover.guid] = container
            self._empty.clear()
        return waiting

    async def resume(self, guid: str, request: RunRequest, healthy: bool = False) -> bool:
        """Go on with an adopted container's work where the earlier life left it; False
        (and the container interrupted) where that cannot be done. ``healthy``: an
        LRP instance whose monitor had passed (its ActualLRP is RUNNING), so it stays
        RUNNING rather than waiting for its monitor to pass again."""
        container = self._containers.get(guid)
        if container is None or not container.adopted:
            return False
        if self.journals is None:
            self.interrupt(guid)
            return False
        journal = Journal.resume(self._journal_path(guid))
        if await self.backend.reopen(self._spec(request)):
            container.adopted = False
            container.journal = journal
            if request.lrp is not None and not healthy:
                container.state = ContainerState.CREATED  # RUNNING once its monitor passes
            log.info("container-resumed guid=%s", guid)
            life = self._life(container, request, made=True, healthy=healthy)
            container.runner = asyncio.create_task(life, name=guid)
            return True
        if journal.empty and not await self.backend.began(guid):
            # Left half made, nothing of its work begun: made again, run from the start.
            container.adopted = False
            container.state = ContainerState.INITIALIZING
            container.journal = Journal(self._journal_path(guid))
            log.info("container-made-again guid=%s", guid)
            container.runner = asyncio.create_task(self._made_again(container, request), name=guid)
            return True
        self.interrupt(guid)
        return False

    def interrupt(self, guid: str) -> None:
        """An adopted container that will not be resumed: COMPLETED, failed as
        :data:`INTERRUPTED` (the rep's table then deletes it)."""
        container = self._containers.get(guid)
        if container is not None and container.adopted:
            container.adopted = False
            self._complete(container, True, INTERRUPTED, "")

    async def close(self) -> None:
        """Delete every container."""
        for guid in list(self._containers):
            await self.delete(guid)
        await self.backend.close()


def _uses_scratch(request: RunRequest) -> bool:
    """Whether a container's work needs its host scratch directory: transfers (download
    and upload actions, a TES job) or a result file. Most Tasks need none, and making
    and removing a directory each is not free."""
    if request.tes is not None or request.result_file:
        return True
    return any(_transfers_in(a) for a in (request.action, request.setup, request.monitor))


def _transfers_in(action: Action | None) -> bool:
    if action is None:
        return False
    if isinstance(action, DownloadAction | UploadAction):
        return True
    inner: Action | None = getattr(action, "action", None)  # timeout, try, emit_progress
    children: tuple[Action, ...] = getattr(action, "actions", ())  # serial, parallel, ...
    return _transfers_in(inner) or any(_transfers_in(child) for child in children)


async def _drop_scratch(request: RunRequest, ctx: StepContext) -> None:
    if _uses_scratch(request):
        await asyncio.to_thread(shutil.rmtree, ctx.scratch, True)


async def _exit_reason(action: Action, ctx: StepContext) -> str:
    """Run an LRP's action; it should never end, so any end is a crash with this reason."""
    try:
        await perform(action, ctx, key=ACTION_KEY)
    except StepFailed as e:
        return e.reason
    return EXITED
