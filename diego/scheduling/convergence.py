"""The converger's loop: snapshot the BBS, ``plan()``, apply the plan, repeat."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from diego.models.errors import DiegoError
from diego.models.task import Task
from diego.scheduling.converger import ConvergerSettings, Plan, TaskSnapshot, plan
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
    ) -> None:
        self.bbs = bbs
        self.settings = settings
        self.interval = interval
        self.auction = auction
        self.resolve = resolve
        self.passes = 0

    async def run(self) -> None:
        """Converge until cancelled."""
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.converge()
            except Exception:
                log.exception("convergence-failed")

    async def converge(self) -> Plan:
        """One pass; the plan it applied."""
        tasks = {t.task_guid: t for t in await self.bbs.tasks()}
        live = [c.cell_id for c in await self.bbs.cell_presences()]
        todo = plan(TaskSnapshot.of(tasks.values(), live), self.bbs.clock.now(), self.settings)
        self.passes += 1
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


async def _quietly(change: object) -> None:
    # Each step is a compare-and-swap: a Task that moved meanwhile just loses.
    try:
        await change  # type: ignore[misc]
    except DiegoError as e:
        log.info("convergence-step-skipped reason=%s", e)
