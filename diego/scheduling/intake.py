"""What reaches the auctioneer, by a path that does not depend on the bus.

A Task or an LRP instance is in the store before anything is told of it. The
nudge is the BBS's event (``TaskCreated`` here; the LRP controller's own call for
instances), which is at once but may be lost: a subscriber that fell behind, or the
work made by another node, whose events stay there. So the intake also reads the
store every ``poll`` seconds for the PENDING Tasks and UNCLAIMED instances that
became so in the interval before the last one and are still waiting: a lost
nudge costs at most two intervals, never a 30 s converger tick. What the event
brought is read again only if it is still waiting an interval later; submitting
twice is harmless (the auctioneer keeps one of each, and a cell's start is a
compare-and-swap).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Protocol

from diego.bus import Bus, follow
from diego.clock import Clock
from diego.models.events import Event, TaskCreated
from diego.models.lrp import ActualLRP
from diego.models.task import Task, TaskState

log = logging.getLogger("diego.scheduling.intake")


class IntakeBBS(Protocol):
    """The reads of the store the intake makes, and the BBS's events."""

    @property
    def bus(self) -> Bus[Event]: ...

    @property
    def clock(self) -> Clock: ...

    async def tasks(self, *, states: Sequence[TaskState] | None = None) -> list[Task]: ...

    async def pending_tasks_created(self, after: int, until: int) -> list[Task]: ...

    async def unclaimed_actual_lrps_since(self, after: int, until: int) -> list[ActualLRP]: ...


class TaskAuction(Protocol):
    """Where the Tasks go."""

    def submit(self, tasks: Sequence[Task]) -> None: ...


class LRPStarts(Protocol):
    """Where the instances go (it reads their DesiredLRPs)."""

    def request_starts(self, keys: Sequence[tuple[str, int]]) -> None: ...


class Intake:
    """Feeds the auctioneer every PENDING Task and UNCLAIMED instance."""

    def __init__(
        self, bbs: IntakeBBS, auction: TaskAuction, starts: LRPStarts, poll: float
    ) -> None:
        self._bbs = bbs
        self._auction = auction
        self._starts = starts
        self._poll = poll

    async def run(self) -> None:
        """Until cancelled."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self._follow())
            group.create_task(self._read_the_store())

    async def _follow(self) -> None:
        async def pending() -> None:  # at the start, and after falling behind
            self._auction.submit(await self._bbs.tasks(states=[TaskState.PENDING]))

        async def created(event: Event) -> None:
            assert isinstance(event, TaskCreated)
            self._auction.submit([event.task])

        await follow(
            self._bbs.bus,
            lambda e: isinstance(e, TaskCreated),
            created,
            name="auctioneer",
            catch_up=pending,
        )

    async def _read_the_store(self) -> None:
        interval = int(self._poll * 1_000_000_000)
        tasks_after = self._bbs.clock.now()  # older ones: the catch-up at the start
        lrps_after = 0  # every instance waiting at the start
        while True:
            await asyncio.sleep(self._poll)
            until = self._bbs.clock.now() - interval
            try:
                tasks = await self._bbs.pending_tasks_created(tasks_after, until)
                actuals = await self._bbs.unclaimed_actual_lrps_since(lrps_after, until)
            except Exception:
                log.exception("intake-read-failed")
                continue
            tasks_after = max(tasks_after, until)
            lrps_after = max(lrps_after, until)
            if tasks:
                log.info("intake-found-in-store tasks=%d", len(tasks))
                self._auction.submit(tasks)
            if actuals:
                log.info("intake-found-in-store lrp_instances=%d", len(actuals))
                self._starts.request_starts([(a.process_guid, a.index) for a in actuals])
