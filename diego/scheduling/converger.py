"""The converger's loop: snapshot the BBS, ``plan()``, apply the plan, repeat."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import Any

import attrs

from diego.models.lrp import ActualLRP, ActualLRPKey
from diego.models.task import Task, TaskCreateRequest, TaskState
from diego.models.work import TaskWork
from diego.scheduling.convergence import (
    ConvergerSettings,
    Plan,
    TaskSnapshot,
    TaskView,
    plan,
    watch_cells,
)
from diego.scheduling.lrp_convergence import (
    DesiredLRPView,
    LRPConvergerSettings,
    LRPPlan,
    LRPSnapshot,
    plan_lrps,
)
from diego.state.bbs import BBS
from diego.state.store import TaskChange, TaskSummary

log = logging.getLogger("diego.converger")


class Converger:
    """Repairs drift between the BBS and reality, every ``interval`` seconds."""

    def __init__(
        self,
        bbs: BBS,
        settings: ConvergerSettings,
        interval: float,
        auction: Callable[[Sequence[TaskWork]], None],
        resolve: Callable[[Task], None],
        lrp_settings: LRPConvergerSettings | None = None,
        start_lrps: Callable[[Sequence[ActualLRPKey]], None] = lambda _keys: None,
        stop_lrp: Callable[[ActualLRP], Awaitable[None]] | None = None,
    ) -> None:
        self.bbs = bbs
        self.settings = settings
        self.interval = interval
        self.auction = auction
        self.resolve = resolve
        self.lrp_settings = lrp_settings or LRPConvergerSettings()
        self.start_lrps = start_lrps
        self.stop_lrp = stop_lrp
        self._cells_gone = asyncio.Event()

    async def run(self) -> None:
        """Converge every ``interval``, and at once when a cell's presence expires (its
        Tasks fail and its LRP instances start elsewhere now, not at the next tick),
        until cancelled."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self._watch_cells())
            group.create_task(self._tick())

    async def _watch_cells(self) -> None:
        live: frozenset[str] = frozenset()
        while True:
            try:
                seen = watch_cells(
                    live, await self.bbs.cell_expiries(), self.bbs.clock.now(), self.interval
                )
            except Exception:
                log.exception("cell-watch-failed")
                await asyncio.sleep(self.interval)
                continue
            if seen.gone:
                log.info("cells-disappeared cells=%s: converging now", ",".join(sorted(seen.gone)))
                self._cells_gone.set()
            live = seen.live
            await asyncio.sleep(seen.next_look)

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.interval):
                    await self._cells_gone.wait()
            self._cells_gone.clear()
            started = loop.time()
            try:
                await self.converge()
                await self.converge_lrps()
            except Exception:
                log.exception("convergence-failed")
            log.info("convergence-pass-done seconds=%.3f", loop.time() - started)

    async def converge(self) -> Plan:
        """One pass; the plan it applied.

        It reads only the columns it decides on (``task_summaries``), applies each
        bucket with the BBS's verbs on many rows at once, hands the auction what it
        needs of each Task to place (picked out of the definitions by the database)
        and reads whole Tasks only for a resolver, a batch at a time.
        """
        with collection_paused():
            return await self._converge()

    async def _converge(self) -> Plan:
        summaries = await self.bbs.task_summaries()
        live = [c.cell_id for c in await self.bbs.cell_presences()]
        snapshot = TaskSnapshot(tasks=map(_task_view, summaries), live_cells=live)
        del summaries
        todo = plan(snapshot, self.bbs.clock.now(), self.settings)
        del snapshot
        if todo.is_empty:
            return todo
        log.info(
            "converging fail=%d auction=%d resolve=%d demote=%d delete=%d",
            len(todo.fail),
            len(todo.auction),
            len(todo.resolve),
            len(todo.demote),
            len(todo.delete),
        )
        # The buckets are disjoint: the writes (on the store's writer thread) and the
        # reading of whole Tasks to hand over (decoded here) overlap.
        failed, (demoted, deleted), _ = await asyncio.gather(
            self.bbs.fail_tasks(todo.fail),
            self._demote_then_delete(todo),
            self._hand_over(todo),
        )
        log.info(
            "converged failed=%d demoted=%d deleted=%d",
            len(failed),
            len(demoted),
            len(deleted),
        )
        return todo

    async def _demote_then_delete(self, todo: Plan) -> tuple[list[TaskChange], list[Task]]:
        # A demoted Task is COMPLETED again; its task_changed event kicks its callback.
        return await self.bbs.demote_tasks(todo.demote), await self.bbs.delete_tasks(todo.delete)

    async def _hand_over(self, todo: Plan) -> None:
        """The auction's work of each Task to auction, and whole Tasks to a resolver."""
        for guids in _batches(todo.auction):
            found = await self.bbs.definition_fields(guids, PLACEMENT)
            self.auction([_work(*row) for row in found if row[2] == TaskState.PENDING])
        for guids in _batches(todo.resolve):
            for task in await self.bbs.tasks_by_guid(guids):
                if task.state is TaskState.COMPLETED:
                    self.resolve(task)

    async def converge_lrps(self) -> LRPPlan:
        """One pass over the LRPs; the plan it applied."""
        with collection_paused():
            return await self._converge_lrps()

    async def _converge_lrps(self) -> LRPPlan:
        now = self.bbs.clock.now()
        versioned = await self.bbs.actual_lrps_versioned()
        snapshot = LRPSnapshot(
            desired=(DesiredLRPView(*s) for s in await self.bbs.desired_lrp_summaries()),
            actuals=(actual for actual, _ in versioned),
            live_cells=[c.cell_id for c in await self.bbs.cell_presences()],
            fresh_domains=[d.name for d in await self.bbs.domains() if d.fresh(now)],
        )
        todo = plan_lrps(snapshot, now, self.lrp_settings)
        del snapshot
        if todo.is_empty:
            return todo
        # What is unclaimed or restarted was read just now: decided on as read, its
        # write compared on the version read.
        stepped_keys = {_pair(k) for k in (*todo.unclaim, *todo.restart)}
        known = {
            (a.process_guid, a.index): (a, version)
            for a, version in versioned
            if not a.evacuating and (a.process_guid, a.index) in stepped_keys
        }
        del versioned
        log.info(
            "converging-lrps unclaim=%d create=%d stop=%d restart=%d auction=%d",
            len(todo.unclaim),
            len(todo.create),
            len(todo.stop),
            len(todo.restart),
            len(todo.auction),
        )
        done: set[tuple[str, int]] = set()
        unclaimed = await self.bbs.unclaim_actual_lrps([_pair(k) for k in todo.unclaim], known)
        done.update((b.process_guid, b.index) for b, _ in unclaimed)
        pairs = [_pair(k) for k in todo.remove_evacuating]
        await self.bbs.remove_actual_lrps(pairs, evacuating=True)
        missing = [(m.process_guid, m.index, m.domain) for m in todo.create]
        created = await self.bbs.create_unclaimed_actual_lrps(missing)
        done.update((a.process_guid, a.index) for a in created)
        restarted = await self.bbs.restart_actual_lrps([_pair(k) for k in todo.restart], known)
        done.update((b.process_guid, b.index) for b, _ in restarted)
        if self.stop_lrp is not None:
            for actual in todo.stop:
                await self.stop_lrp(actual)
        # What needed a step is auctioned only if its step was made; stale UNCLAIMED
        # instances needed none.
        stepped = {_pair(k) for k in (*todo.unclaim, *todo.restart)}
        stepped.update((m.process_guid, m.index) for m in todo.create)
        self.start_lrps(
            [key for key in todo.auction if _pair(key) not in stepped or _pair(key) in done]
        )
        return todo


@contextlib.contextmanager
def collection_paused() -> Iterator[None]:
    """No automatic cyclic garbage collection in the block (unless it was off already).

    A pass over 100,000 Tasks or ActualLRPs makes several hundred thousand objects
    that live until the pass ends. Each survivor counts toward CPython's next full
    collection, which walks every object alive: a dozen of them in one pass, a
    quarter of its time (bench/converge.py). None of these objects is part of a
    cycle (reference counting frees them), so the pass does without; whatever
    cycles the rest of the node makes meanwhile wait the second or so for the next
    collection.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


PLACEMENT = tuple(f.name for f in attrs.fields(TaskWork) if f.name not in ("task_guid", "domain"))
"""What the auction needs of a Task beyond its guid and domain: TaskWork's fields, each
a field of the Task's definition of the same name (as TaskWork.from_task copies them)."""

_DEFAULTS: dict[str, Any] = {
    name: attrs.fields_dict(TaskCreateRequest)[name].default for name in PLACEMENT
}


def _work(guid: str, domain: str, state: str, values: Sequence[Any]) -> TaskWork:
    """A Task's work, as TaskWork.from_task makes it, from its definition's PLACEMENT
    values (a field a definition written before it existed takes its default)."""
    fields: dict[str, Any] = {
        name: _DEFAULTS[name] if value is None else value
        for name, value in zip(PLACEMENT, values, strict=True)
    }
    return TaskWork(task_guid=guid, domain=domain, **fields)


def _task_view(summary: TaskSummary) -> TaskView:
    guid, state, cell_id, created_at, updated_at, first_completed_at, callback_url = summary
    return TaskView(
        guid, _STATES[state], cell_id, created_at, updated_at, first_completed_at, callback_url
    )


_STATES = {state.value: state for state in TaskState}

HANDOVER_BATCH = 1000
"""Whole Tasks read at once to hand over: enough to be cheap, few enough to stay small."""


def _batches(guids: Sequence[str]) -> list[Sequence[str]]:
    return [guids[i : i + HANDOVER_BATCH] for i in range(0, len(guids), HANDOVER_BATCH)]


def _pair(key: ActualLRPKey) -> tuple[str, int]:
    return (key.process_guid, key.index)
