"""Cancels told to cells: a Task the BBS cancels while a cell holds it is stopped there
at once, as Diego's BBS calls the rep's ``CancelTask``.

The call is a nudge, not the record: the cancel is in the store first, and a cell
that does not hear it (unreachable, or this node restarted) finds it on its next
poll, as Diego's rep does. Each call runs on its own, so a cell that does not answer
delays no other cell's cancels.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from diego.bus import Bus, follow
from diego.models.errors import DiegoError
from diego.models.events import Event, TaskChanged
from diego.models.lifecycle import CANCELLED
from diego.models.task import TaskState

log = logging.getLogger("diego.scheduling.cancels")


class CancelledCell(Protocol):
    """What this part needs of a cell."""

    async def cancel_task(self, guid: str) -> None: ...


class Cells(Protocol):
    """Where it finds the cell that holds a Task."""

    async def get(self, cell_id: str) -> CancelledCell | None: ...


def cancelled_on_a_cell(event: Event) -> bool:
    """Whether ``event`` is a cancel of a Task a cell holds (claimed or running)."""
    return (
        isinstance(event, TaskChanged)
        and event.before.state in (TaskState.CLAIMED, TaskState.RUNNING)
        and bool(event.before.cell_id)
        and event.after.state is TaskState.COMPLETED
        and event.after.failure_reason == CANCELLED
    )


class CancelsToCells:
    """Follows the bus for cancels and tells each Task's cell."""

    def __init__(self, bus: Bus[Event], cells: Cells) -> None:
        self._bus = bus
        self._cells = cells
        self._calls: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        """Until cancelled."""
        try:
            await follow(self._bus, cancelled_on_a_cell, self._cancelled, name="cancels")
        finally:
            for call in tuple(self._calls):
                call.cancel()

    async def _cancelled(self, event: Event) -> None:
        assert isinstance(event, TaskChanged)
        call = asyncio.create_task(self._tell(event.before.cell_id, event.before.task_guid))
        self._calls.add(call)
        call.add_done_callback(self._calls.discard)

    async def _tell(self, cell_id: str, guid: str) -> None:
        cell = await self._cells.get(cell_id)
        if cell is None:
            return  # gone: the converger fails what it held
        try:
            await cell.cancel_task(guid)
        except DiegoError as e:
            log.info("cancel-not-told cell=%s guid=%s reason=%s", cell_id, guid, e)
