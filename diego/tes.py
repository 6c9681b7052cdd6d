"""GA4GH TES tasks on diego: each one an internal Task, placed and run like any other.

A TES task is stored as its TES document (``Store.tes``), QUEUED, and an internal
Task of the same id in the domain ``tes`` is desired for it: the auction places
it by its resources, and the cell that runs it reads the TES document and runs
inputs, executors and outputs (:mod:`diego.cell.tes_job`). :class:`TesService`
follows the internal Task's events and moves the TES task along: PENDING is
QUEUED, CLAIMED is INITIALIZING, RUNNING is RUNNING, and COMPLETED is the state
the cell's report says (COMPLETE, EXECUTOR_ERROR, SYSTEM_ERROR), CANCELED, or
PREEMPTED when the cell was evacuated under it. ``resources.zones`` becomes the
internal Task's zones, which the auction places by. The
internal Task is then resolved; the TES task stays, listable, until retention
prunes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import attrs

from diego.bus import follow
from diego.models.codec import InvalidDocument, decode, encode
from diego.models.errors import (
    DiegoError,
    InvalidRequest,
    TaskGuidAlreadyExists,
    TaskNotFound,
    TesTaskNotFound,
)
from diego.models.events import Event, TaskChanged, TaskCreated
from diego.models.lifecycle import EVACUATION_FAILURE
from diego.models.logs import LogLine
from diego.models.task import SecurityGroupRule, Task, TaskCreateRequest, TaskState
from diego.models.tes import (
    FINAL_STATES,
    TES_DOMAIN,
    TesExecutorLog,
    TesOutputFileLog,
    TesState,
    TesTask,
    TesTaskLog,
    rfc3339,
)
from diego.models.tes_report import logs_of_lines, report_of
from diego.state.bbs import BBS
from diego.state.tes_store import TesStore

log = logging.getLogger("diego.tes")

KEEP_ALL_LINES = 1 << 30
"""A count past any log store's keep_lines: every line it still has."""

SUPPORTED_BACKEND_PARAMETERS: tuple[str, ...] = ()
"""The resources.backend_parameters keys diego honours (none yet)."""


class LogTail(Protocol):
    """The recent log lines of a log guid (a TES task's are under its id)."""

    def tail(self, log_guid: str, count: int) -> list[LogLine]: ...


class ImageCells(Protocol):
    """Whether some cell can run TES images: the root_fs schemes the cells run."""

    async def rootfs_providers(self) -> frozenset[str]: ...


@attrs.frozen(kw_only=True)
class TesSettings:
    """How TES tasks become internal Tasks, and how long they are kept."""

    stack: str = "linux"
    retention: float = 7 * 24 * 3600.0  # seconds a finished TES task stays listable
    prune_interval: float = 3600.0
    local_runs_without_image: bool = True  # no Docker cell: run on a local cell's root
    tail_bytes: int = 10 * 1024  # of each executor's stdout and stderr in its log
    egress: tuple[SecurityGroupRule, ...] = ()  # where a TES task may connect: none by default


class TesService:
    """Creates TES tasks, cancels them, and keeps their state in step with their Tasks."""

    def __init__(
        self,
        bbs: BBS,
        settings: TesSettings,
        cells: ImageCells,
        logs: LogTail,
        clock: Callable[[], int] = time.time_ns,
    ) -> None:
        self.bbs = bbs
        self.settings = settings
        self.cells = cells
        self.logs = logs
        self.clock = clock

    @property
    def tes(self) -> TesStore:
        """The TES tasks in the store."""
        return self.bbs.store.tes

    # ------------------------------------------------------------ create and cancel

    async def create(self, task: TesTask) -> TesTask:
        """Store ``task`` QUEUED with a new id, and desire its internal Task."""
        notes = self._backend_parameter_notes(task)
        resources = task.resources
        if resources is not None and resources.backend_parameters:
            resources = attrs.evolve(resources, backend_parameters={})
        if resources is not None and resources.preemptible:
            notes.append(
                "preemptible: accepted; diego preempts no task for another, but any task "
                "whose cell is evacuated under it ends PREEMPTED"
            )
        use_images = await self._docker_cells()
        if not use_images and self.settings.egress:
            raise InvalidRequest(
                "executors[0].image: this node has no Docker cell, and TES egress ([tes] "
                "egress) is kept exact only there: a local cell would give the host's network"
            )
        if not use_images and not self.settings.local_runs_without_image:
            raise InvalidRequest(
                "executors[0].image: no Docker cell can run images, and this node "
                "does not run TES tasks without their images ([tes] local_runs_without_image)"
            )
        now = self.clock()
        stored = attrs.evolve(
            task,
            id=_new_id(),
            state=TesState.QUEUED,
            resources=resources,
            creation_time=rfc3339(now),
            logs=(TesTaskLog(system_logs=tuple(notes)),),
        )
        try:  # before anything is stored: a task diego cannot run costs nothing
            internal = self._internal_task(stored, use_images)
        except InvalidDocument as e:
            raise InvalidRequest(f"cannot run this task: {e}") from None
        stored = await self.tes.create_tes_task(stored, now)
        try:
            with contextlib.suppress(TaskGuidAlreadyExists):  # catch_up desired it first
                await self.bbs.desire_task(internal)
        except DiegoError as e:
            await self._finish(stored.id or "", TesState.SYSTEM_ERROR, [f"not placed: {e}"])
            raise
        return stored

    def _backend_parameter_notes(self, task: TesTask) -> list[str]:
        resources = task.resources
        if resources is None:
            return []
        unsupported = sorted(
            k for k in resources.backend_parameters if k not in SUPPORTED_BACKEND_PARAMETERS
        )
        if unsupported and resources.backend_parameters_strict:
            raise InvalidRequest(
                "resources.backend_parameters: not supported here: " + ", ".join(unsupported)
            )
        return [f"backend parameter {k!r} is not supported: ignored" for k in unsupported]

    def _internal_task(self, task: TesTask, use_images: bool) -> TaskCreateRequest:
        resources = task.resources
        memory_mb = math.ceil(resources.ram_gb * 1024) if resources and resources.ram_gb else 0
        disk_mb = math.ceil(resources.disk_gb * 1024) if resources and resources.disk_gb else 0
        cores = resources.cpu_cores if resources and resources.cpu_cores else 1
        image = task.executors[0].image
        steps = [
            {"run": {"path": e.command[0], "args": list(e.command[1:])}} for e in task.executors
        ]
        document = {
            "task_guid": task.id,
            "log_guid": task.id,
            "domain": TES_DOMAIN,
            "stack": self.settings.stack,
            "root_fs": _docker_url(image) if use_images else "",
            "memory_mb": memory_mb,
            "disk_mb": disk_mb,
            "cpu_weight": min(100, 10 * cores),
            "zones": list(resources.zones) if resources else [],
            "annotation": f"GA4GH TES task {task.name or task.id}",
            "security_group_rules": [encode(rule) for rule in self.settings.egress],
            # For readers of /v1/tasks: the cell runs the TES document itself.
            "action": {"serial": {"actions": steps}},
        }
        return decode(TaskCreateRequest, document)

    async def cancel(self, task_id: str) -> TesTask:
        """Cancel a TES task: CANCELING, then CANCELED once its Task is cancelled."""
        task = await self.tes.get_tes_task(task_id)
        if task.state in FINAL_STATES:
            return task
        task = await self._set_state(task_id, TesState.CANCELING)
        try:
            await self.bbs.cancel_task(task_id)
        except TaskNotFound:
            return await self._finish(task_id, TesState.CANCELED, [])
        except DiegoError:
            pass  # already completed: following it finishes the TES task
        return task

    # ------------------------------------------------------------ following Tasks

    async def run(self) -> None:
        """Follow TES Tasks' events until cancelled; prune old TES tasks meanwhile."""
        async with asyncio.TaskGroup() as group:
            group.create_task(
                follow(
                    self.bbs.bus, _concerns_tes, self._changed, name="tes", catch_up=self.catch_up
                )
            )
            group.create_task(self._prune_forever())

    async def _changed(self, event: Event) -> None:
        task = None
        if isinstance(event, TaskChanged):
            task = event.after
        elif isinstance(event, TaskCreated):
            task = event.task
        if task is not None:
            try:
                await self.follow(task)
            except TesTaskNotFound:
                log.info("tes-task-gone id=%s state=%s", task.task_guid, task.state.name)
            except Exception:
                log.exception("tes-follow-failed id=%s", task.task_guid)

    async def catch_up(self) -> None:
        """Bring every unfinished TES task up to its Task (after a restart, say)."""
        tasks = {t.task_guid: t for t in await self.bbs.tasks(domain=TES_DOMAIN)}
        token = ""
        while True:
            page, token = await self.tes.list_tes_tasks(page_size=256, page_token=token)
            for task in page:
                if task.state in FINAL_STATES:
                    continue
                try:
                    await self._catch_up_one(task, tasks.get(task.id or ""))
                except Exception:
                    log.exception("tes-catch-up-failed id=%s", task.id)
            if not token:
                return

    async def _catch_up_one(self, task: TesTask, internal: Task | None) -> None:
        task_id = task.id or ""
        if internal is None:
            # Created (or moved on) since the Tasks were read? Look again.
            with contextlib.suppress(TaskNotFound):
                internal = await self.bbs.get_task(task_id)
        if internal is not None:
            await self.follow(internal)
        elif task.state is TesState.QUEUED:
            # Stored, but its Task not desired yet (being created now, or the node
            # stopped in between): desire it; a second desire changes nothing.
            await self._desire(task)
        elif task.state is TesState.CANCELING:
            await self._finish(task_id, TesState.CANCELED, [])
        else:
            lost = "its internal Task was lost"
            await self._finish(task_id, TesState.SYSTEM_ERROR, [lost])

    async def _desire(self, task: TesTask) -> None:
        with contextlib.suppress(TaskGuidAlreadyExists):
            await self.bbs.desire_task(self._internal_task(task, await self._docker_cells()))

    async def _docker_cells(self) -> bool:
        return "docker" in await self.cells.rootfs_providers()

    async def follow(self, task: Task) -> None:
        """Move the TES task of ``task`` to the state ``task`` is in."""
        if task.domain != TES_DOMAIN:
            return
        if task.state is TaskState.PENDING:
            await self._advance(task.task_guid, TesState.QUEUED)
        elif task.state is TaskState.CLAIMED:
            await self._advance(task.task_guid, TesState.INITIALIZING)
        elif task.state is TaskState.RUNNING:
            await self._advance(task.task_guid, TesState.RUNNING, task.cell_id)
        elif task.state is TaskState.COMPLETED:
            await self._complete(task)

    async def _complete(self, task: Task) -> None:
        report = None if task.failed else report_of(task.result)
        if task.failure_reason == "cancelled":
            # No report: what the executors did is in the task's log lines.
            now = self.clock()
            lines = self.logs.tail(task.task_guid, KEEP_ALL_LINES)
            executors = logs_of_lines(lines, self.settings.tail_bytes, now)
            await self._finish(task.task_guid, TesState.CANCELED, [], task.cell_id, logs=executors)
        elif task.failed and task.failure_reason == EVACUATION_FAILURE:
            preempted = f"preempted: cell {task.cell_id} was evacuated ({EVACUATION_FAILURE})"
            await self._finish(task.task_guid, TesState.PREEMPTED, [preempted], task.cell_id)
        elif report is not None:
            await self._finish_with_report(task, report)
        else:
            reason = task.failure_reason or "the task ended without a report"
            await self._finish(task.task_guid, TesState.SYSTEM_ERROR, [reason], task.cell_id)
        with contextlib.suppress(DiegoError):
            await self.bbs.resolve_task(task.task_guid)

    async def _finish_with_report(self, task: Task, report: dict[str, Any]) -> None:
        try:
            state = TesState(report.get("state", ""))
        except ValueError:
            state = TesState.SYSTEM_ERROR
        if state not in FINAL_STATES:
            state = TesState.SYSTEM_ERROR

        started = report.get("start_time")
        change = _ended(
            state,
            report.get("system_logs", ()),
            task.cell_id,
            **({"start_time": started} if started else {}),
            end_time=report.get("end_time"),
            logs=tuple(decode(TesExecutorLog, x) for x in report.get("logs", ())),
            outputs=tuple(decode(TesOutputFileLog, x) for x in report.get("outputs", ())),
        )
        await self._update(task.task_guid, change)

    async def _advance(self, task_id: str, state: TesState, cell_id: str = "") -> None:
        order = [TesState.QUEUED, TesState.INITIALIZING, TesState.RUNNING]

        def change(tes: TesTask) -> TesTask:
            if tes.state not in order or order.index(tes.state) >= order.index(state):
                return tes
            if state is not TesState.RUNNING:
                return attrs.evolve(tes, state=state)
            last = _last_log(tes)
            start = last.start_time or rfc3339(self.clock())
            return _moved(tes, state, start_time=start, metadata=_on_cell(last, cell_id))

        await self._update(task_id, change)

    async def _set_state(self, task_id: str, state: TesState) -> TesTask:
        def change(tes: TesTask) -> TesTask:
            return tes if tes.state in FINAL_STATES else attrs.evolve(tes, state=state)

        return await self.tes.update_tes_task(task_id, change, self.clock())

    async def _finish(
        self,
        task_id: str,
        state: TesState,
        system_logs: Sequence[str],
        cell_id: str = "",
        logs: tuple[TesExecutorLog, ...] = (),
    ) -> TesTask:
        attempt: dict[str, Any] = {"logs": logs} if logs else {}
        change = _ended(state, system_logs, cell_id, end_time=rfc3339(self.clock()), **attempt)
        return await self.tes.update_tes_task(task_id, change, self.clock())

    async def _update(self, task_id: str, change: Callable[[TesTask], TesTask]) -> None:
        with contextlib.suppress(DiegoError):
            await self.tes.update_tes_task(task_id, change, self.clock())

    async def _prune_forever(self) -> None:
        while True:
            cutoff = self.clock() - int(self.settings.retention * 1e9)
            try:
                pruned = await self.tes.prune_tes_tasks(cutoff)
                if pruned:
                    log.info("tes-pruned count=%d", pruned)
            except Exception:
                log.exception("tes-prune-failed")
            await asyncio.sleep(self.settings.prune_interval)


def _concerns_tes(event: Event) -> bool:
    if isinstance(event, TaskChanged):
        return event.after.domain == TES_DOMAIN
    return isinstance(event, TaskCreated) and event.task.domain == TES_DOMAIN


def _last_log(task: TesTask) -> TesTaskLog:
    return task.logs[-1] if task.logs else TesTaskLog()


def _moved(task: TesTask, state: TesState, **attempt: Any) -> TesTask:
    """``task`` in ``state``, with its last attempt's log changed by ``attempt``."""
    last = attrs.evolve(_last_log(task), **attempt)
    return attrs.evolve(task, state=state, logs=(*task.logs[:-1], last))


def _ended(
    state: TesState, system_logs: Sequence[str], cell_id: str, **attempt: Any
) -> Callable[[TesTask], TesTask]:
    """The change that ends a TES task in ``state`` (unless it has ended already): its
    last attempt gains ``system_logs``, names ``cell_id`` and takes ``attempt``."""

    def change(tes: TesTask) -> TesTask:
        if tes.state in FINAL_STATES:
            return tes
        last = _last_log(tes)
        return _moved(
            tes,
            state,
            system_logs=(*last.system_logs, *system_logs),
            metadata=_on_cell(last, cell_id),
            **attempt,
        )

    return change


def _on_cell(attempt: TesTaskLog, cell_id: str) -> dict[str, str]:
    """An attempt's metadata, naming the cell it ran on (when known)."""
    return {**attempt.metadata, **({"cell_id": cell_id} if cell_id else {})}


def _new_id() -> str:
    """A TES task id: time-ordered, then random (sortable like Funnel's xids)."""
    return f"{time.time_ns() // 1_000_000:012x}{secrets.token_hex(6)}"


def _docker_url(image: str) -> str:
    """``docker:///repo#tag`` for an image reference ``repo[:tag]``."""
    last = image.rsplit("/", 1)[-1]
    if "@" in image:
        repo, _, digest = image.partition("@")
        return f"docker:///{repo}#{digest}"
    if ":" in last:
        repo, _, tag = image.rpartition(":")
        return f"docker:///{repo}#{tag}"
    return f"docker:///{image}"
