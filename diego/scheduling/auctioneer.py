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
import itertools
import logging
from collections.abc import Callable, Sequence
from typing import Protocol

from diego.models.errors import DiegoError
from diego.models.lrp import ActualLRP
from diego.models.task import Task
from diego.scheduling.auction import CellSnapshot, LRPWork, TaskWork, schedule

log = logging.getLogger("diego.auctioneer")


Work = TaskWork | LRPWork


class CellClient(Protocol):
    """What the auctioneer needs of a cell."""

    cell_id: str

    async def state(self) -> CellSnapshot: ...

    async def perform(self, work: Sequence[Work]) -> list[Work]: ...


class AuctionBBS(Protocol):
    """What the auctioneer needs of the BBS: failing Tasks that fit nowhere, and
    recording why an LRP instance could not be placed."""

    async def fail_task(self, guid: str, failure_reason: str) -> tuple[Task, Task]: ...

    async def fail_actual_lrp_placement(
        self, process_guid: str, index: int, error: str
    ) -> tuple[ActualLRP, ActualLRP]: ...


def _key(work: Work) -> str:
    if isinstance(work, LRPWork):
        return f"lrp {work.process_guid} {work.index}"
    return f"task {work.task_guid}"


class Auctioneer:
    """Places Tasks onto cells, batch by batch."""

    def __init__(
        self,
        bbs: AuctionBBS,
        cells: Callable[[], Sequence[CellClient]],
        retry_interval: float = 1.0,
        max_batch: int = 10_000,
    ) -> None:
        self.bbs = bbs
        self.cells = cells
        self.retry_interval = retry_interval
        self.max_batch = max_batch
        """Work items in one auction, at most: the oldest first, the rest next."""
        self._pending: dict[str, Work] = {}
        self._placement_errors: dict[str, str] = {}
        self._wake = asyncio.Event()
        self.batches = 0

    def submit(self, tasks: Sequence[Task]) -> None:
        """Ask for ``tasks`` to be started."""
        self.submit_work([TaskWork.from_task(task) for task in tasks])

    def submit_work(self, work: Sequence[Work]) -> None:
        """Ask for Tasks or LRP instances to be started."""
        for item in work:
            self._pending[_key(item)] = item
        if work:
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
        """One batch: everything pending now, up to ``max_batch`` items (oldest first;
        the rest is auctioned next, at once)."""
        if len(self._pending) <= self.max_batch:
            batch, self._pending = self._pending, {}
        else:
            keys = list(itertools.islice(self._pending, self.max_batch))
            batch = {key: self._pending.pop(key) for key in keys}
            self._wake.set()
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
        for lrp, reason in result.unplaced:
            await self._unplaced(lrp, reason)
        by_cell: dict[str, list[Work]] = {}
        for placement in result.placements:
            by_cell.setdefault(placement.cell_id, []).append(placement.work)
            self._placement_errors.pop(_key(placement.work), None)
        refused = await asyncio.gather(
            *(clients[cell].perform(work) for cell, work in by_cell.items()),
            return_exceptions=True,
        )
        carried: list[Work] = [*result.carried_over, *(lrp for lrp, _ in result.unplaced)]
        for cell, answer in zip(by_cell, refused, strict=True):
            if isinstance(answer, BaseException):
                # No answer: do not retry; the converger sorts out what happened.
                log.warning("cell-did-not-answer cell=%s error=%r", cell, answer)
            else:
                carried.extend(answer)
        for work in carried:
            self._pending.setdefault(_key(work), work)
        log.debug(
            "auction-done placed=%d rejected=%d carried=%d",
            len(result.placements),
            len(result.rejections),
            len(carried),
        )

    async def _unplaced(self, lrp: LRPWork, reason: str) -> None:
        # Written once per reason, not on every retry of the same instance.
        key = _key(lrp)
        if self._placement_errors.get(key) == reason:
            return
        self._placement_errors[key] = reason
        try:
            await self.bbs.fail_actual_lrp_placement(lrp.process_guid, lrp.index, reason)
        except DiegoError as e:
            log.info("placement-error-not-recorded guid=%s reason=%s", lrp.process_guid, e)

    async def _fail(self, guid: str, reason: str) -> None:
        try:
            await self.bbs.fail_task(guid, reason)
        except DiegoError as e:
            log.info("task-not-failed guid=%s reason=%s", guid, e)
