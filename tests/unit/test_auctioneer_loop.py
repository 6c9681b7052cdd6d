"""The auctioneer's loop over an in-memory BBS and no cells: what it keeps and when it stops."""

from __future__ import annotations

import asyncio

from diego.models.errors import ActualLRPNotFound
from diego.models.lrp import ActualLRP
from diego.models.task import Task
from diego.models.work import LRPWork
from diego.scheduling.auctioneer import Auctioneer
from diego.scheduling.cells import EmbeddedCells


class PlacementErrors:
    """Records placement errors of the instances it knows; the others are gone."""

    def __init__(self, known: set[tuple[str, int]]) -> None:
        self.known = known
        self.recorded: list[tuple[str, int, str]] = []

    async def reject_task(self, guid: str, failure_reason: str) -> tuple[Task, Task]:
        raise AssertionError("no Task in these tests")

    async def fail_actual_lrp_placement(
        self, process_guid: str, index: int, error: str
    ) -> tuple[ActualLRP, ActualLRP]:
        if (process_guid, index) not in self.known:
            raise ActualLRPNotFound(process_guid, index)
        self.recorded.append((process_guid, index, error))
        return None  # type: ignore[return-value]  # the auctioneer does not read it


async def turns(count: int) -> None:
    """Let the loop run ``count`` times round (the auctioneer's loop among them)."""
    for _ in range(count):
        await asyncio.sleep(0)


def work(guid: str, index: int) -> LRPWork:
    return LRPWork(guid, index, "d", "s", "docker:///busybox", 1, 1)


async def test_work_of_a_gone_instance_is_dropped_the_rest_carried() -> None:
    bbs = PlacementErrors({("kept", 0)})
    auctioneer = Auctioneer(bbs, EmbeddedCells([]))
    auctioneer.submit_work([work("kept", 0), *(work("deleted", i) for i in range(3))])
    await auctioneer.auction()
    assert list(auctioneer._carried) == ["lrp kept 0"]
    assert auctioneer.waiting() == 1
    assert [(g, i) for g, i, _ in bbs.recorded] == [("kept", 0)]
    await auctioneer.auction()  # the same reason again: not written twice
    assert len(bbs.recorded) == 1


async def test_a_busy_auctioneer_stops_when_cancelled() -> None:
    # More new work than one batch holds keeps the wake-up set after every auction:
    # the loop must still let others run and take a cancellation.
    bbs = PlacementErrors({("busy", i) for i in range(50)})
    auctioneer = Auctioneer(bbs, EmbeddedCells([]), retry_interval=3600, max_batch=1)
    auctioneer.submit_work([work("busy", i) for i in range(50)])
    running = asyncio.create_task(auctioneer.run())
    await turns(20)
    assert auctioneer.batches >= 10
    running.cancel()
    done, _ = await asyncio.wait([running], timeout=5)
    assert done == {running}
    assert running.cancelled()


async def test_work_that_fits_nowhere_waits_for_a_kick_not_a_loop() -> None:
    bbs = PlacementErrors({("big", i) for i in range(5)})
    auctioneer = Auctioneer(bbs, EmbeddedCells([]), retry_interval=3600, max_batch=2)
    auctioneer.submit_work([work("big", i) for i in range(5)])
    running = asyncio.create_task(auctioneer.run())
    await turns(100)
    assert auctioneer.batches == 3
    assert auctioneer.waiting() == 5
    auctioneer.kick()
    await turns(100)
    assert auctioneer.batches == 4  # a kick: one batch of carried work, then a wait
    running.cancel()
    await asyncio.wait([running], timeout=5)
