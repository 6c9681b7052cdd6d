"""The auctioneer: batches start requests and places them with ``schedule()``.

    submit ─► pending ─► (wake) ─► snapshot cells ─► schedule() ─► commit
                 ▲                                               │
                 └──────── carried over / refused by a cell ◄────┘

Committing fails each rejected Task at once, and sends each cell its placements.
Work a cell refuses is carried into the next batch; work sent to a cell that
does not answer is *not* (the converger recovers it, so nothing is started
twice). Carried-over work waits for capacity to be freed or for the retry
interval, whichever comes first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Protocol

from diego.models.errors import DiegoError
from diego.models.task import Task
from diego.scheduling.auction import CellSnapshot, TaskWork, schedule

log = logging.getLogger("diego.auctioneer")


class CellClient(Protocol):
    """What the auctioneer needs of a cell."""

    cell_id: str

    async def state(self) -> CellSnapshot: ...

    async def perform(self, work: Sequence[TaskWork]) -> list[TaskWork]: ...


class TaskFailer(Protocol):
    """What the auctioneer needs of the BBS: failing Tasks that fit nowhere."""

    async def fail_task(self, guid: str, failure_reason: str) -> tuple[Task, Task]: ...


class Auctioneer:
    """Places Tasks onto cells, batch by batch."""

    def __init__(
        self,
        bbs: TaskFailer,
        cells: Callable[[], Sequence[CellClient]],
        retry_interval: float = 1.0,
    ) -> None:
        self.bbs = bbs
        self.cells = cells
        self.retry_interval = retry_interval
        self._pending: dict[str, TaskWork] = {}
        self._wake = asyncio.Event()
        self.batches = 0

    def submit(self, tasks: Sequence[Task]) -> None:
        """Ask for ``tasks`` to be started."""
        for task in tasks:
            self._pending[task.task_guid] = TaskWork.from_task(task)
        if tasks:
            self._wake.set()

    def kick(self) -> None:
        """Capacity was freed somewhere: try carried-over work again now."""
        if self._pending:
            self._wake.set()

    async def run(self) -> None:
        """Hold auctions until cancelled."""
        while True:
            if self._pending:
                # Carried-over work: retry when capacity frees or the interval ends.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.retry_interval)
            else:
                await self._wake.wait()
            self._wake.clear()
            try:
                await self.auction()
            except Exception:
                log.exception("auction-failed")

    async def auction(self) -> None:
        """One batch: everything pending now."""
        batch, self._pending = self._pending, {}
        if not batch:
            return
        self.batches += 1
        clients = {c.cell_id: c for c in self.cells()}
        snapshots = await asyncio.gather(
            *(c.state() for c in clients.values()), return_exceptions=True
        )
        cells = [s for s in snapshots if isinstance(s, CellSnapshot)]
        result = schedule(cells, list(batch.values()))
        for rejection in result.rejections:
            await self._fail(rejection.work.task_guid, rejection.reason)
        by_cell: dict[str, list[TaskWork]] = {}
        for placement in result.placements:
            by_cell.setdefault(placement.cell_id, []).append(placement.work)
        refused = await asyncio.gather(
            *(clients[cell].perform(work) for cell, work in by_cell.items()),
            return_exceptions=True,
        )
        carried = list(result.carried_over)
        for cell, answer in zip(by_cell, refused, strict=True):
            if isinstance(answer, BaseException):
                # No answer: do not retry; the converger sorts out what happened.
                log.warning("cell-did-not-answer cell=%s error=%r", cell, answer)
            else:
                carried.extend(answer)
        for work in carried:
            self._pending.setdefault(work.task_guid, work)
        log.debug(
            "auction-done placed=%d rejected=%d carried=%d",
            len(result.placements),
            len(result.rejections),
            len(carried),
        )

    async def _fail(self, guid: str, reason: str) -> None:
        try:
            await self.bbs.fail_task(guid, reason)
        except DiegoError as e:
            log.info("task-not-failed guid=%s reason=%s", guid, e)
