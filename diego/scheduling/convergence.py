"""The converger's loop: snapshot the BBS, ``plan()``, apply the plan, repeat."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

from diego.models.errors import DiegoError
from diego.models.lrp import ActualLRP, ActualLRPKey
from diego.models.task import Task
from diego.scheduling.converger import ConvergerSettings, Plan, TaskSnapshot, plan
from diego.scheduling.lrp_converger import LRPConvergerSettings, LRPPlan, LRPSnapshot, plan_lrps
from diego.state.bbs import BBS

log = logging.getLogger("diego.converger")


class Converger:
    """Repairs drift between the BBS and reality, every ``interval`` seconds."""

    def __init__(
        self,
        bbs: BBS,
        settings: ConvergerSettings,
        interval: float,
        auction: Callable[[Sequence[Task]], None],
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

    async def run(self) -> None:
        """Converge until cancelled."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.interval)
            started = loop.time()
            try:
                await self.converge()
                await self.converge_lrps()
            except Exception:
                log.exception("convergence-failed")
            log.info("convergence-pass-done seconds=%.3f", loop.time() - started)

    async def converge(self) -> Plan:
        """One pass; the plan it applied."""
        tasks = {t.task_guid: t for t in await self.bbs.tasks()}
        live = [c.cell_id for c in await self.bbs.cell_presences()]
        todo = plan(TaskSnapshot.of(tasks.values(), live), self.bbs.clock.now(), self.settings)
        if not todo.is_empty:
            log.info(
                "converging fail=%d auction=%d resolve=%d demote=%d delete=%d",
                len(todo.fail),
                len(todo.auction),
                len(todo.resolve),
                len(todo.demote),
                len(todo.delete),
            )
        for guid, reason in todo.fail:
            await _quietly(self.bbs.fail_task(guid, reason))
        self.auction([tasks[guid] for guid in todo.auction])
        for guid in todo.resolve:
            self.resolve(tasks[guid])
        # A demoted Task is COMPLETED again; its task_changed event kicks its callback.
        for guid in todo.demote:
            await _quietly(self.bbs.demote_task(guid))
        for guid in todo.delete:
            await _quietly(self.bbs.delete_task(guid))
        return todo

    async def converge_lrps(self) -> LRPPlan:
        """One pass over the LRPs; the plan it applied."""
        now = self.bbs.clock.now()
        actuals = await self.bbs.actual_lrps()
        snapshot = LRPSnapshot.of(
            await self.bbs.desired_lrps(),
            actuals,
            [c.cell_id for c in await self.bbs.cell_presences()],
            await self.bbs.domains(),
            now,
        )
        todo = plan_lrps(snapshot, now, self.lrp_settings)
        if todo.is_empty:
            return todo
        log.info(
            "converging-lrps unclaim=%d create=%d stop=%d restart=%d auction=%d",
            len(todo.unclaim),
            len(todo.create),
            len(todo.stop),
            len(todo.restart),
            len(todo.auction),
        )
        failed: set[ActualLRPKey] = set()
        for key in todo.unclaim:
            if not await _quietly(self.bbs.unclaim_actual_lrp(key.process_guid, key.index)):
                failed.add(key)
        for key in todo.remove_evacuating:
            await _quietly(self.bbs.remove_actual_lrp(key.process_guid, key.index, evacuating=True))
        for missing in todo.create:
            change = self.bbs.create_unclaimed_actual_lrp(
                missing.process_guid, missing.index, missing.domain
            )
            if not await _quietly(change):
                failed.add(missing.key)
        for key in todo.restart:
            if not await _quietly(self.bbs.restart_actual_lrp(key.process_guid, key.index)):
                failed.add(key)
        if self.stop_lrp is not None:
            for actual in todo.stop:
                await self.stop_lrp(actual)
        self.start_lrps([key for key in todo.auction if key not in failed])
        return todo


async def _quietly(change: object) -> bool:
    # Each step is a compare-and-swap: what moved meanwhile just loses.
    try:
        await change  # type: ignore[misc]
    except DiegoError as e:
        log.info("convergence-step-skipped reason=%s", e)
        return False
    return True
