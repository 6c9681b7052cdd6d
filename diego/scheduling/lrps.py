"""What happens to ActualLRPs when DesiredLRPs change: the delta, applied.

Diego's receptor computes the delta between desired and actual on every create
and update, creating UNCLAIMED ActualLRPs for missing indices (and asking the
auctioneer to start them) and stopping extra ones: a CLAIMED or RUNNING instance
is stopped by its cell, which then removes it; an UNCLAIMED or CRASHED one is
compare-and-deleted. The converger applies the same rules on its passes.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence

from diego.bus import follow
from diego.models.errors import DiegoError
from diego.models.events import ActualLRPChanged, ActualLRPRemoved
from diego.models.lrp import (
    ActualLRP,
    ActualLRPKey,
    ActualLRPState,
    DesiredLRP,
    DesiredLRPUpdate,
)
from diego.models.lrp_delta import delta
from diego.models.work import LRPWork
from diego.scheduling.cells import CellDirectory
from diego.state.bbs import BBS

log = logging.getLogger("diego.lrps")


class LRPController:
    """Desires, scales, deletes and kills LRPs, keeping ActualLRPs to the delta."""

    def __init__(
        self,
        bbs: BBS,
        start: Callable[[Sequence[LRPWork]], None],
        cells: CellDirectory,
        max_creates: int = 10_000,
    ) -> None:
        self.bbs = bbs
        self.start = start
        self.cells = cells
        self.max_creates = max_creates
        """Instances created by one change, at most; the converger makes the rest."""
        self._wanted: dict[tuple[str, int], None] = {}
        self._reading: asyncio.Task[None] | None = None

    def request_starts(self, keys: Sequence[tuple[str, int] | ActualLRPKey]) -> None:
        """Auction these instances (by process and index) as soon as their DesiredLRP is
        read. Requests made together (a lost cell's instances, one event each) are read
        together: one read of each DesiredLRP, one submission."""
        for k in keys:
            self._wanted[(k.process_guid, k.index) if isinstance(k, ActualLRPKey) else k] = None
        if self._wanted and (self._reading is None or self._reading.done()):
            self._reading = asyncio.create_task(self._read_wanted())

    async def _read_wanted(self) -> None:
        while self._wanted:
            await asyncio.sleep(0)  # the rest of a burst of events comes in first
            keys = list(self._wanted)
            self._wanted.clear()
            try:
                await self._start_keys(keys)
            except Exception:  # the store, say: the converger auctions them later
                log.exception("lrp-starts-not-read instances=%d", len(keys))

    async def _start_keys(self, keys: Sequence[tuple[str, int]]) -> None:
        work = []
        desired_by_guid: dict[str, DesiredLRP | None] = {}
        for process_guid, index in keys:
            if process_guid not in desired_by_guid:
                try:
                    desired_by_guid[process_guid] = await self.bbs.get_desired_lrp(process_guid)
                except DiegoError:
                    desired_by_guid[process_guid] = None  # no longer desired
            desired = desired_by_guid[process_guid]
            if desired is not None:
                work.append(LRPWork.from_desired(desired, index))
        self.start(work)

    async def desire(self, desired: DesiredLRP) -> DesiredLRP:
        """Create a DesiredLRP and start its instances."""
        created = await self.bbs.desire_lrp(desired)
        await self.converge(created)
        return created

    async def update(self, process_guid: str, update: DesiredLRPUpdate) -> DesiredLRP:
        """Change instances, routes or annotation; start or stop instances to match."""
        _, after = await self.bbs.update_desired_lrp(process_guid, update)
        await self.converge(after)
        return after

    async def remove(self, process_guid: str) -> DesiredLRP:
        """Delete a DesiredLRP and stop every instance of it."""
        removed = await self.bbs.remove_desired_lrp(process_guid)
        actuals = await self.bbs.actual_lrps(process_guid=process_guid)
        await self._stop_all([a for a in actuals if not a.evacuating])
        return removed

    async def converge(self, desired: DesiredLRP) -> None:
        """Create and start the missing indices of ``desired``; stop the extra ones."""
        actuals = await self.bbs.actual_lrps(process_guid=desired.process_guid)
        change = delta(desired.instances, actuals, self.max_creates)
        # One batch each way: 10,000 instances are a few statements, not 10,000.
        missing = [(desired.process_guid, index, desired.domain) for index in change.start]
        created = await self.bbs.create_unclaimed_actual_lrps(missing) if missing else []
        if len(created) < len(missing):
            log.info(
                "actual-lrps-not-created guid=%s count=%d: they exist already",
                desired.process_guid,
                len(missing) - len(created),
            )
        self.start([LRPWork.from_desired(desired, a.index) for a in created])
        await self._stop_all(change.stop)

    async def _stop_all(self, actuals: Sequence[ActualLRP]) -> None:
        """``stop`` each of ``actuals``; those on no cell are removed in one batch."""
        on_cells = (ActualLRPState.CLAIMED, ActualLRPState.RUNNING)
        idle = [(a.process_guid, a.index) for a in actuals if a.state not in on_cells]
        if idle:
            await self.bbs.remove_actual_lrps(idle)
        for actual in actuals:
            if actual.state in on_cells:
                await self.stop(actual)

    async def stop(self, actual: ActualLRP) -> None:
        """Stop one instance: by its cell if it has one, else compare-and-delete it."""
        if actual.state in (ActualLRPState.CLAIMED, ActualLRPState.RUNNING):
            cell = await self.cells.get(actual.cell_id)
            try:
                if cell is not None and await cell.stop_lrp(actual):
                    return
            except DiegoError as e:  # a cell out of reach: the converger acts later
                log.warning(
                    "instance-not-stopped guid=%s cell=%s reason=%s",
                    actual.process_guid,
                    actual.cell_id,
                    e,
                )
                return
            # No cell here to ask: the converger will see the cell gone and act.
            log.info("instance-cell-unknown guid=%s cell=%s", actual.process_guid, actual.cell_id)
            return
        try:
            await self.bbs.remove_actual_lrp(actual.process_guid, actual.index)
        except DiegoError as e:
            log.info("actual-lrp-not-removed guid=%s reason=%s", actual.process_guid, e)

    async def run(self) -> None:
        """Start again, at once, every instance removed while still desired (a killed
        instance, a lost one), and auction every one a cell gave back UNCLAIMED (it
        crashed and may restart now, or it is evacuated), as Diego's BBS requests those
        auctions itself; the converger would otherwise do it on its next pass."""
        # Falling behind loses nothing for good: the converger's next pass starts
        # whatever these events would have.
        try:
            await follow(self.bbs.bus, _concerns_starts, self._changed, name="lrp-controller")
        finally:
            if self._reading is not None:
                self._reading.cancel()

    async def _changed(self, event: object) -> None:
        if isinstance(event, ActualLRPChanged):
            self.request_starts([(event.after.process_guid, event.after.index)])
            return
        assert isinstance(event, ActualLRPRemoved)
        try:
            desired = await self.bbs.get_desired_lrp(event.actual.process_guid)
        except DiegoError:
            return  # no longer desired
        await self.converge(desired)

    async def kill(self, process_guid: str, index: int) -> ActualLRP:
        """Stop one instance; it is started again if still desired."""
        actual = await self.bbs.get_actual_lrp(process_guid, index)
        await self.stop(actual)
        return actual


_ON_A_CELL = (ActualLRPState.CLAIMED, ActualLRPState.RUNNING)


def _concerns_starts(event: object) -> bool:
    """An instance removed (not an evacuating copy), or given back UNCLAIMED by its cell."""
    if isinstance(event, ActualLRPRemoved):
        return not event.actual.evacuating
    return (
        isinstance(event, ActualLRPChanged)
        and not event.after.evacuating
        and event.after.state is ActualLRPState.UNCLAIMED
        and event.before.state in _ON_A_CELL
    )
