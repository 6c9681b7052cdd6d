"""The BBS as its users see it: the store's verbs, stamped with the clock's time,
with their events published on the bus once each change is committed.

The API, and later the rep, auctioneer and converger, talk to this object (or
to an HTTP client with the same methods), never to the store directly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs

from diego.bus import Bus
from diego.clock import Clock
from diego.models import lifecycle, lrp_lifecycle
from diego.models.cells import CellPresence
from diego.models.crash_policy import CrashPolicy
from diego.models.events import Event, actual_lrp_events, desired_lrp_events, task_events
from diego.models.lrp import ActualLRP, DesiredLRP, DesiredLRPUpdate, Domain
from diego.models.task import Task, TaskCreateRequest, TaskState
from diego.models.tes import TesTask
from diego.state.store import (
    ActualLRPChange,
    DesiredLRPChange,
    DesiredLRPSummary,
    JsonPage,
    Known,
    Page,
    Store,
    TaskChange,
    TaskSummary,
)


class BBS:
    """Tasks and LRPs: read them, and change them by lifecycle verbs that publish events."""

    def __init__(
        self, store: Store, bus: Bus[Event], clock: Clock, crash_policy: CrashPolicy | None = None
    ) -> None:
        self.store = store
        self.bus = bus
        self.clock = clock
        self.crash_policy = crash_policy or CrashPolicy()

    def _publish(self, before: Task | None, after: Task | None) -> None:
        for event in task_events(before, after):
            self.bus.publish(event)

    def _published(self, change: TaskChange) -> TaskChange:
        self._publish(*change)
        return change

    async def get_tes_task(self, task_id: str) -> TesTask:
        """The TES document of a TES task (its cell runs it from this)."""
        return await self.store.tes.get_tes_task(task_id)

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

    async def task_json(self, guid: str) -> str:
        """The Task ``guid`` as the API writes it; TaskNotFound when there is none."""
        return await self.store.task_json(guid)

    async def page_of_task_json(
        self, *, limit: int, cursor: str | None = None, domain: str | None = None
    ) -> JsonPage:
        """One page of Tasks, oldest first, each as the API writes it."""
        return await self.store.page_of_task_json(limit=limit, cursor=cursor, domain=domain)

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

    async def reject_task(self, guid: str, failure_reason: str) -> TaskChange:
        """Fail a Task the auction could place nowhere, if it is still PENDING."""
        return self._published(await self.store.reject_task(guid, failure_reason, self.clock.now()))

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

    async def pending_tasks_created(self, after: int, until: int) -> list[Task]:
        """The Tasks still PENDING that were created in (``after``, ``until``] (ns)."""
        return await self.store.pending_tasks_created(after, until)

    async def unclaimed_actual_lrps_since(self, after: int, until: int) -> list[ActualLRP]:
        """The UNCLAIMED ActualLRPs that became so in (``after``, ``until``] (ns)."""
        return await self.store.unclaimed_actual_lrps_since(after, until)

    async def cell_expiries(self) -> dict[str, int]:
        """The cells alive now, and when each presence expires unless renewed (ns)."""
        return await self.store.cell_expiries(self.clock.now())

    async def remove_cell_presence(self, cell_id: str) -> None:
        """Forget a cell."""
        await self.store.remove_cell_presence(cell_id)

    async def resolve_task(self, guid: str) -> Task:
        """What a consumer's DELETE does: COMPLETED → RESOLVING, then remove it.

        One compare-and-delete in the store; both changes are published, in order.
        """
        before, resolving = await self.store.resolve_task(guid, self.clock.now())
        self._publish(before, resolving)
        self._publish(resolving, None)
        return resolving

    # ------------------------------------------------------------ desired LRPs

    def _publish_desired(self, before: DesiredLRP | None, after: DesiredLRP | None) -> None:
        for event in desired_lrp_events(before, after):
            self.bus.publish(event)

    def _publish_actual(self, before: ActualLRP | None, after: ActualLRP | None) -> None:
        for event in actual_lrp_events(before, after):
            self.bus.publish(event)

    def _actual_published(self, change: ActualLRPChange) -> ActualLRPChange:
        self._publish_actual(*change)
        return change

    async def desire_lrp(self, desired: DesiredLRP) -> DesiredLRP:
        """Create a DesiredLRP."""
        made = await self.store.desire_lrp(desired, self.clock.now())
        self._publish_desired(None, made)
        return made

    async def get_desired_lrp(self, process_guid: str) -> DesiredLRP:
        """The DesiredLRP ``process_guid``; DesiredLRPNotFound when there is none."""
        return await self.store.get_desired_lrp(process_guid)

    async def desired_lrps(self, domain: str | None = None) -> list[DesiredLRP]:
        """Every DesiredLRP (of ``domain``), by process guid."""
        return await self.store.desired_lrps(domain)

    async def update_desired_lrp(
        self, process_guid: str, update: DesiredLRPUpdate
    ) -> DesiredLRPChange:
        """Change a DesiredLRP's instances, routes or annotation."""
        change = await self.store.update_desired_lrp(process_guid, update, self.clock.now())
        self._publish_desired(*change)
        return change

    async def remove_desired_lrp(self, process_guid: str) -> DesiredLRP:
        """Remove a DesiredLRP (stopping its ActualLRPs is the caller's job)."""
        desired = await self.store.remove_desired_lrp(process_guid)
        self._publish_desired(desired, None)
        return desired

    # ------------------------------------------------------------ actual LRPs

    async def actual_lrps(
        self,
        process_guid: str | None = None,
        domain: str | None = None,
        cell_id: str | None = None,
    ) -> list[ActualLRP]:
        """Every ActualLRP, evacuating copies included, by (process_guid, index, evacuating)."""
        return await self.store.actual_lrps(process_guid, domain, cell_id)

    async def get_actual_lrp(
        self, process_guid: str, index: int, evacuating: bool = False
    ) -> ActualLRP:
        """The ActualLRP at ``process_guid``/``index`` (or its evacuating copy)."""
        return await self.store.get_actual_lrp(process_guid, index, evacuating)

    async def create_unclaimed_actual_lrp(
        self, process_guid: str, index: int, domain: str
    ) -> ActualLRP:
        """Create an UNCLAIMED ActualLRP, to be auctioned."""
        actual = await self.store.create_unclaimed_actual_lrp(
            process_guid, index, domain, self.clock.now()
        )
        self._publish_actual(None, actual)
        return actual

    async def claim_actual_lrp(
        self, process_guid: str, index: int, instance_guid: str, cell_id: str
    ) -> ActualLRPChange:
        """UNCLAIMED → CLAIMED by the instance ``instance_guid`` on ``cell_id``."""
        now = self.clock.now()
        change = await self.store.claim_actual_lrp(process_guid, index, instance_guid, cell_id, now)
        return self._actual_published(change)

    async def start_actual_lrp(
        self, process_guid: str, index: int, domain: str, instance_guid: str, cell_id: str
    ) -> tuple[ActualLRP | None, ActualLRP]:
        """→ RUNNING on ``cell_id``, creating the ActualLRP if there is none."""
        now = self.clock.now()
        before, after = await self.store.start_actual_lrp(
            process_guid, index, domain, instance_guid, cell_id, now
        )
        self._publish_actual(before, after)
        return before, after

    async def crash_actual_lrp(
        self, process_guid: str, index: int, instance_guid: str, cell_id: str, reason: str
    ) -> ActualLRPChange:
        """The instance crashed: → UNCLAIMED (restart at once) or CRASHED."""
        now = self.clock.now()
        change = await self.store.crash_actual_lrp(
            process_guid, index, instance_guid, cell_id, reason, now, self.crash_policy
        )
        return self._actual_published(change)

    async def unclaim_actual_lrp(self, process_guid: str, index: int) -> ActualLRPChange:
        """CLAIMED or RUNNING → UNCLAIMED."""
        now = self.clock.now()
        return self._actual_published(await self.store.unclaim_actual_lrp(process_guid, index, now))

    async def restart_actual_lrp(self, process_guid: str, index: int) -> ActualLRPChange:
        """CRASHED → UNCLAIMED."""
        now = self.clock.now()
        return self._actual_published(await self.store.restart_actual_lrp(process_guid, index, now))

    async def fail_actual_lrp_placement(
        self, process_guid: str, index: int, error: str
    ) -> ActualLRPChange:
        """An UNCLAIMED ActualLRP could not be placed: record why."""
        now = self.clock.now()
        change = await self.store.fail_actual_lrp_placement(process_guid, index, error, now)
        return self._actual_published(change)

    async def remove_actual_lrp(
        self,
        process_guid: str,
        index: int,
        instance_guid: str | None = None,
        evacuating: bool = False,
    ) -> ActualLRP:
        """Compare-and-delete an ActualLRP (of ``instance_guid``, when given)."""
        actual = await self.store.remove_actual_lrp(process_guid, index, instance_guid, evacuating)
        self._publish_actual(actual, None)
        return actual

    async def evacuate_actual_lrp(
        self, process_guid: str, index: int, instance_guid: str, cell_id: str
    ) -> tuple[ActualLRP, ActualLRP]:
        """Move a RUNNING instance aside as evacuating and unclaim it, atomically."""
        now = self.clock.now()
        copy, after = await self.store.evacuate_actual_lrp(
            process_guid, index, instance_guid, cell_id, now
        )
        self._publish_actual(None, copy)
        # The copy is the instance as it was, set aside (see lrp_lifecycle.evacuate).
        self._publish_actual(attrs.evolve(copy, evacuating=False), after)
        return copy, after

    async def remove_evacuating_actual_lrp(
        self, process_guid: str, index: int, instance_guid: str
    ) -> ActualLRP:
        """Compare-and-delete the evacuating copy of ``instance_guid``."""
        actual = await self.store.remove_evacuating_actual_lrp(process_guid, index, instance_guid)
        self._publish_actual(actual, None)
        return actual

    # ------------------------------------------------------------ domains

    async def upsert_domain(self, name: str, ttl: int) -> Domain:
        """Mark a domain fresh for ``ttl`` seconds (0: forever)."""
        return await self.store.upsert_domain(name, ttl, self.clock.now())

    async def domains(self) -> list[Domain]:
        """The domains fresh now."""
        return await self.store.domains(self.clock.now())

    # ------------------------------------------------------------ many at once
    # The converger's: a verb on each of many rows, in a few statements (see the store).
    # A row the verb no longer applies to, or that is gone, is left out; each returns
    # the changes made, and their events are published as the single verbs' are.

    async def task_summaries(self) -> list[TaskSummary]:
        """What the converger decides on, of every Task."""
        return await self.store.task_summaries()

    async def tasks_by_guid(self, guids: Sequence[str]) -> list[Task]:
        """The Tasks of these guids that exist, in no particular order."""
        return await self.store.tasks_by_guid(guids)

    async def definition_fields(
        self, guids: Sequence[str], keys: Sequence[str]
    ) -> list[tuple[str, str, str, list[Any]]]:
        """(guid, domain, state, values at ``keys`` in the definition) of these Tasks."""
        return await self.store.definition_fields(guids, keys)

    async def fail_tasks(self, failures: Sequence[tuple[str, str]]) -> list[TaskChange]:
        """``fail_task`` for each (guid, failure reason)."""
        now = self.clock.now()
        rules = {
            guid: (lambda t, why=reason: lifecycle.fail(t, why, now)) for guid, reason in failures
        }
        return [self._published(change) for change in await self.store.swap_tasks(rules)]

    async def demote_tasks(self, guids: Sequence[str]) -> list[TaskChange]:
        """``demote_task`` for each guid."""
        now = self.clock.now()
        rules = dict.fromkeys(guids, lambda t: lifecycle.demote(t, now))
        return [self._published(change) for change in await self.store.swap_tasks(rules)]

    async def delete_tasks(self, guids: Sequence[str]) -> list[Task]:
        """``delete_task`` for each guid."""
        removed = await self.store.delete_tasks(guids)
        for task in removed:
            self._publish(task, None)
        return removed

    async def desired_lrp_summaries(self) -> list[DesiredLRPSummary]:
        """What the converger decides on, of every DesiredLRP."""
        return await self.store.desired_lrp_summaries()

    async def actual_lrps_versioned(self) -> list[tuple[ActualLRP, int]]:
        """Every ActualLRP with its row's version (for ``known`` below)."""
        return await self.store.actual_lrps_versioned()

    async def unclaim_actual_lrps(
        self, keys: Sequence[tuple[str, int]], known: Known | None = None
    ) -> list[ActualLRPChange]:
        """``unclaim_actual_lrp`` for each (process guid, index); ``known``: some of them
        as just read, with their versions, not read again."""
        now = self.clock.now()
        rules = dict.fromkeys(keys, lambda a: lrp_lifecycle.unclaim(a, now))
        changes = await self.store.swap_actual_lrps(rules, known)
        return [self._actual_published(change) for change in changes]

    async def restart_actual_lrps(
        self, keys: Sequence[tuple[str, int]], known: Known | None = None
    ) -> list[ActualLRPChange]:
        """``restart_actual_lrp`` for each (process guid, index); ``known`` as above."""
        now = self.clock.now()
        rules = dict.fromkeys(keys, lambda a: lrp_lifecycle.restart(a, now))
        changes = await self.store.swap_actual_lrps(rules, known)
        return [self._actual_published(change) for change in changes]

    async def create_unclaimed_actual_lrps(
        self, missing: Sequence[tuple[str, int, str]]
    ) -> list[ActualLRP]:
        """``create_unclaimed_actual_lrp`` for each (process guid, index, domain) that has
        no ActualLRP."""
        created = await self.store.create_unclaimed_actual_lrps(missing, self.clock.now())
        for actual in created:
            self._publish_actual(None, actual)
        return created

    async def remove_actual_lrps(
        self, keys: Sequence[tuple[str, int]], evacuating: bool = False
    ) -> list[ActualLRP]:
        """``remove_actual_lrp`` (no instance guid given) for each (process guid, index)."""
        removed = await self.store.remove_actual_lrps(keys, evacuating)
        for actual in removed:
            self._publish_actual(actual, None)
        return removed
