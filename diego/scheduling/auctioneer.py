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
import itertools
import logging
from collections.abc import Sequence
from typing import Protocol

from diego.models.errors import ActualLRPNotFound, DiegoError
from diego.models.lrp import ActualLRP
from diego.models.task import Task
from diego.models.work import CellSnapshot, LRPWork, TaskWork
from diego.scheduling.auction import schedule
from diego.scheduling.cells import CellDirectory

log = logging.getLogger("diego.auctioneer")


Work = TaskWork | LRPWork


class AuctionBBS(Protocol):
    """What the auctioneer needs of the BBS: failing PENDING Tasks that fit nowhere, and
    recording why an LRP instance could not be placed."""

    async def reject_task(self, guid: str, failure_reason: str) -> tuple[Task, Task]: ...

    async def fail_actual_lrp_placement(
        self, process_guid: str, index: int, error: str
    ) -> tuple[ActualLRP, ActualLRP]: ...


def _take(work: dict[str, Work], count: int) -> dict[str, Work]:
    """Remove and return the first ``count`` items of ``work``."""
    if len(work) <= count:
        taken = dict(work)
        work.clear()
        return taken
    return {key: work.pop(key) for key in list(itertools.islice(work, max(0, count)))}


def _key(work: Work) -> str:
    if isinstance(work, LRPWork):
        return f"lrp {work.process_guid} {work.index}"
    return f"task {work.task_guid}"


class Auctioneer:
    """Places Tasks onto cells, batch by batch."""

    def __init__(
        self,
        bbs: AuctionBBS,
        cells: CellDirectory,
        retry_interval: float = 1.0,
        max_batch: int = 10_000,
        capacity_freed: asyncio.Event | None = None,
    ) -> None:
        self.bbs = bbs
        self.cells = cells
        self.capacity_freed = capacity_freed or asyncio.Event()
        """Set by a cell that freed room (deleted a container): a kick."""
        self.retry_interval = retry_interval
        self.max_batch = max_batch
        """Work items in one auction, at most: the oldest first, the rest next."""
        self._pending: dict[str, Work] = {}
        """Work not auctioned since it was submitted: auctioned as soon as possible."""
        self._carried: dict[str, Work] = {}
        """Work an auction could not place: tried again when capacity frees or the
        retry interval ends, never in a tight loop."""
        self._retry_due = False
        """Whether the next auction takes carried-over work too (a kick, or the retry
        interval passed); new work alone does not: it cannot make room."""
        self._placement_errors: dict[str, str] = {}
        self._wake = asyncio.Event()
        self.batches = 0

    def submit(self, tasks: Sequence[Task]) -> None:
        """Ask for ``tasks`` to be started."""
        self.submit_work([TaskWork.from_task(task) for task in tasks])

    def submit_work(self, work: Sequence[Work]) -> None:
        """Ask for Tasks or LRP instances to be started."""
        for item in work:
            key = _key(item)
            self._carried.pop(key, None)
            self._pending[key] = item
        if work:
            self._wake.set()

    def kick(self) -> None:
        """Capacity was freed somewhere: try carried-over work again now."""
        if self._carried:
            self._retry_due = True
            self._wake.set()

    def waiting(self) -> int:
        """Work items waiting for an auction: new and carried over."""
        return len(self._pending) + len(self._carried)

    async def run(self) -> None:
        """Hold auctions until cancelled; a cell freeing room kicks the next."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self._kicks())
            await self._auctions()

    async def _kicks(self) -> None:
        while True:
            await self.capacity_freed.wait()
            self.capacity_freed.clear()
            self.kick()

    async def _auctions(self) -> None:
        while True:
            if self._wake.is_set():
                await asyncio.sleep(0)  # back-to-back batches still let the node run
            elif self._carried:
                # (asyncio.timeout, not wait_for: on Python 3.11 wait_for loses a
                # cancellation that arrives as the event is set.)
                try:
                    async with asyncio.timeout(self.retry_interval):
                        await self._wake.wait()
                except TimeoutError:
                    self._retry_due = True
            else:
                await self._wake.wait()
            self._wake.clear()
            due, self._retry_due = self._retry_due, False
            try:
                await self.auction(with_carried=due)
            except Exception:
                log.exception("auction-failed")

    async def auction(self, with_carried: bool = True) -> None:
        """One batch: new work first, oldest first, then (``with_carried``) carried-over
        work, up to ``max_batch`` items. New work left over is auctioned next, at once.

        The loop takes carried-over work only when it is due (a kick, the retry
        interval): auctioning it again with every new item made a burst of creates
        onto full (or no) cells quadratic."""
        batch = _take(self._pending, self.max_batch)
        if with_carried:
            batch.update(_take(self._carried, self.max_batch - len(batch)))
        if self._pending:
            self._wake.set()
        if not batch:
            return
        self.batches += 1
        clients = {c.cell_id: c for c in await self.cells.clients()}
        snapshots = await asyncio.gather(
            *(c.state() for c in clients.values()), return_exceptions=True
        )
        cells = [s for s in snapshots if isinstance(s, CellSnapshot)]
        result = schedule(cells, list(batch.values()))
        for rejection in result.rejections:
            await self._fail(rejection.work.task_guid, rejection.reason)
        gone: set[str] = set()
        for lrp, reason in result.unplaced:
            if not await self._unplaced(lrp, reason):
                gone.add(_key(lrp))
        if gone:
            log.info("unplaced-work-dropped instances-gone=%d", len(gone))
        by_cell: dict[str, list[Work]] = {}
        for placement in result.placements:
            by_cell.setdefault(placement.cell_id, []).append(placement.work)
            self._placement_errors.pop(_key(placement.work), None)
        refused = await asyncio.gather(
            *(clients[cell].perform(work) for cell, work in by_cell.items()),
            return_exceptions=True,
        )
        carried: list[Work] = [
            *result.carried_over,
            *(lrp for lrp, _ in result.unplaced if _key(lrp) not in gone),
        ]
        for cell, answer in zip(by_cell, refused, strict=True):
            if isinstance(answer, BaseException):
                # No answer: do not retry; the converger sorts out what happened.
                log.warning("cell-did-not-answer cell=%s error=%r", cell, answer)
            else:
                carried.extend(answer)
        for work in carried:
            key = _key(work)
            if key not in self._pending:  # submitted again meanwhile: the new one
                self._carried.setdefault(key, work)
        log.debug(
            "auction-done placed=%d rejected=%d carried=%d",
            len(result.placements),
            len(result.rejections),
            len(carried),
        )

    async def _unplaced(self, lrp: LRPWork, reason: str) -> bool:
        """Record why ``lrp`` fits nowhere; False when its instance is gone (the LRP
        was deleted or scaled down), so it is not auctioned again."""
        # Written once per reason, not on every retry of the same instance.
        key = _key(lrp)
        if self._placement_errors.get(key) == reason:
            return True
        try:
            await self.bbs.fail_actual_lrp_placement(lrp.process_guid, lrp.index, reason)
        except ActualLRPNotFound:
            self._placement_errors.pop(key, None)
            return False
        except DiegoError as e:
            log.info("placement-error-not-recorded guid=%s reason=%s", lrp.process_guid, e)
        self._placement_errors[key] = reason
        return True

    async def _fail(self, guid: str, reason: str) -> None:
        try:
            # Only if still PENDING: the work auctioned may be a copy older than a
            # start on a cell this auction did not hear from.
            await self.bbs.reject_task(guid, reason)
        except DiegoError as e:
            log.info("task-not-failed guid=%s reason=%s", guid, e)
