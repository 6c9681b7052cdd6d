"""The BBS as its users see it: the store's verbs, stamped with the clock's time,
with their events published on the bus once each change is committed.

The API, and later the rep, auctioneer and converger, talk to this object (or
to an HTTP client with the same methods), never to the store directly.
"""

from __future__ import annotations

from collections.abc import Sequence

from diego.bus import Bus
from diego.clock import Clock
from diego.models.cells import CellPresence
from diego.models.events import Event, task_events
from diego.models.task import Task, TaskCreateRequest, TaskState
from diego.state.store import Page, Store, TaskChange


class BBS:
    """Tasks: read them, and change them by lifecycle verbs that publish events."""

    def __init__(self, store: Store, bus: Bus[Event], clock: Clock) -> None:
        self.store = store
        self.bus = bus
        self.clock = clock

    def _publish(self, before: Task | None, after: Task | None) -> None:
        for event in task_events(before, after):
            self.bus.publish(event)

    def _published(self, change: TaskChange) -> TaskChange:
        self._publish(*change)
        return change

    async def get_task(self, guid: str) -> Task:
        """The Task ``guid``; TaskNotFound when there is none."""
        return await self.store.get_task(guid)

    async def tasks(
        self,
        *,
        domain: str | None = None,
        cell_id: str | None = None,
        states: Sequence[TaskState] | None = None,
    ) -> list[Task]:
        """Every Task, oldest first, optionally filtered."""
        return await self.store.tasks(domain=domain, cell_id=cell_id, states=states)

    async def page_of_tasks(
        self, *, limit: int, cursor: str | None = None, domain: str | None = None
    ) -> Page:
        """One page of Tasks, oldest first."""
        return await self.store.page_of_tasks(limit=limit, cursor=cursor, domain=domain)

    async def desire_task(self, request: TaskCreateRequest) -> Task:
        """Create a PENDING Task."""
        task = await self.store.desire_task(request, self.clock.now())
        self._publish(None, task)
        return task

    async def claim_task(self, guid: str, cell_id: str) -> TaskChange:
        """PENDING → CLAIMED by ``cell_id``."""
        return self._published(await self.store.claim_task(guid, cell_id, self.clock.now()))

    async def start_task(self, guid: str, cell_id: str) -> TaskChange:
        """PENDING (or CLAIMED by this cell) → RUNNING on ``cell_id``."""
        return self._published(await self.store.start_task(guid, cell_id, self.clock.now()))

    async def complete_task(
        self, guid: str, cell_id: str, failed: bool, failure_reason: str, result: str
    ) -> TaskChange:
        """The cell finished the Task → COMPLETED."""
        now = self.clock.now()
        change = await self.store.complete_task(guid, cell_id, failed, failure_reason, result, now)
        return self._published(change)

    async def fail_task(self, guid: str, failure_reason: str) -> TaskChange:
        """Give up on a Task that has not completed."""
        return self._published(await self.store.fail_task(guid, failure_reason, self.clock.now()))

    async def cancel_task(self, guid: str) -> TaskChange:
        """The consumer cancels a Task → COMPLETED, failed, "cancelled"."""
        return self._published(await self.store.cancel_task(guid, self.clock.now()))

    async def resolving_task(self, guid: str) -> TaskChange:
        """COMPLETED → RESOLVING."""
        return self._published(await self.store.resolving_task(guid, self.clock.now()))

    async def demote_task(self, guid: str) -> TaskChange:
        """RESOLVING → COMPLETED."""
        return self._published(await self.store.demote_task(guid, self.clock.now()))

    async def delete_task(self, guid: str) -> Task:
        """Remove a COMPLETED or RESOLVING Task."""
        task = await self.store.delete_task(guid)
        self._publish(task, None)
        return task

    async def renew_cell_presence(self, presence: CellPresence, ttl: float) -> None:
        """Record that a cell is alive for the next ``ttl`` seconds."""
        expires_at = self.clock.now() + int(ttl * 1_000_000_000)
        await self.store.renew_cell_presence(presence, expires_at)

    async def cell_presences(self) -> list[CellPresence]:
        """The cells alive now."""
        return await self.store.cell_presences(self.clock.now())

    async def remove_cell_presence(self, cell_id: str) -> None:
        """Forget a cell."""
        await self.store.remove_cell_presence(cell_id)

    async def resolve_task(self, guid: str) -> Task:
        """What a consumer's DELETE does: COMPLETED → RESOLVING, then remove it."""
        await self.resolving_task(guid)
        return await self.delete_task(guid)
