"""Typed events about state changes, and the pure calculators that derive them.

Store verbs return ``(before, after)``; ``task_events``, ``desired_lrp_events`` and
``actual_lrp_events`` turn such a pair into the events to publish once the change
is committed.
"""

from __future__ import annotations

from typing import Any, ClassVar

import attrs

from diego.models.codec import encode
from diego.models.lrp import ActualLRP, ActualLRPState, DesiredLRP
from diego.models.task import Task


@attrs.frozen
class TaskCreated:
    """A Task was desired."""

    TYPE: ClassVar[str] = "task_created"
    task: Task

    def data(self) -> dict[str, Any]:
        """The event's JSON body."""
        return {"task": encode(self.task)}


@attrs.frozen
class TaskChanged:
    """A Task moved: ``before`` and ``after`` are the whole Task either side."""

    TYPE: ClassVar[str] = "task_changed"
    before: Task
    after: Task

    def data(self) -> dict[str, Any]:
        """The event's JSON body."""
        return {"before": encode(self.before), "after": encode(self.after)}


@attrs.frozen
class TaskRemoved:
    """A Task was removed from the BBS."""

    TYPE: ClassVar[str] = "task_removed"
    task: Task

    def data(self) -> dict[str, Any]:
        """The event's JSON body."""
        return {"task": encode(self.task)}


@attrs.frozen
class DesiredLRPCreated:
    """A DesiredLRP was created."""

    TYPE: ClassVar[str] = "desired_lrp_created"
    desired: DesiredLRP

    def data(self) -> dict[str, Any]:
        """The event's JSON body."""
        return {"desired_lrp": encode(self.desired)}


@attrs.frozen
class DesiredLRPChanged:
    """A DesiredLRP was updated: ``before`` and ``after`` are the whole DesiredLRP."""

    TYPE: ClassVar[str] = "desired_lrp_changed"
    before: DesiredLRP
    after: DesiredLRP

    def data(self) -> dict[str, Any]:
        """The event's JSON body."""
        return {"before": encode(self.before), "after": encode(self.after)}


@attrs.frozen
class DesiredLRPRemoved:
    """A DesiredLRP was removed (its ActualLRPs are stopped separately)."""

    TYPE: ClassVar[str] = "desired_lrp_removed"
    desired: DesiredLRP

    def data(self) -> dict[str, Any]:
        """The event's JSON body."""
        return {"desired_lrp": encode(self.desired)}


@attrs.frozen
class ActualLRPCreated:
    """An ActualLRP appeared (UNCLAIMED to be placed, RUNNING as a cell found it, or
    an evacuating copy)."""

    TYPE: ClassVar[str] = "actual_lrp_created"
    actual: ActualLRP

    def data(self) -> dict[str, Any]:
        """The event's JSON body."""
        return {"actual_lrp": encode(self.actual)}


@attrs.frozen
class ActualLRPChanged:
    """An ActualLRP moved: ``before`` and ``after`` are the whole ActualLRP."""

    TYPE: ClassVar[str] = "actual_lrp_changed"
    before: ActualLRP
    after: ActualLRP

    def data(self) -> dict[str, Any]:
        """The event's JSON body."""
        return {"before": encode(self.before), "after": encode(self.after)}


@attrs.frozen
class ActualLRPRemoved:
    """An ActualLRP was removed from the BBS."""

    TYPE: ClassVar[str] = "actual_lrp_removed"
    actual: ActualLRP

    def data(self) -> dict[str, Any]:
        """The event's JSON body."""
        return {"actual_lrp": encode(self.actual)}


@attrs.frozen
class ActualLRPCrashed:
    """An ActualLRP crashed; ``actual`` is it after the crash was counted."""

    TYPE: ClassVar[str] = "actual_lrp_crashed"
    actual: ActualLRP

    def data(self) -> dict[str, Any]:
        """The event's JSON body: the ActualLRP, its crash count and the reason."""
        return {
            "actual_lrp": encode(self.actual),
            "crash_count": self.actual.crash_count,
            "crash_reason": self.actual.crash_reason,
        }


TaskEvent = TaskCreated | TaskChanged | TaskRemoved
DesiredLRPEvent = DesiredLRPCreated | DesiredLRPChanged | DesiredLRPRemoved
ActualLRPEvent = ActualLRPCreated | ActualLRPChanged | ActualLRPRemoved | ActualLRPCrashed
Event = TaskEvent | DesiredLRPEvent | ActualLRPEvent

EVENT_TYPES: tuple[str, ...] = (
    TaskCreated.TYPE,
    TaskChanged.TYPE,
    TaskRemoved.TYPE,
    DesiredLRPCreated.TYPE,
    DesiredLRPChanged.TYPE,
    DesiredLRPRemoved.TYPE,
    ActualLRPCreated.TYPE,
    ActualLRPChanged.TYPE,
    ActualLRPRemoved.TYPE,
    ActualLRPCrashed.TYPE,
)


EVENT_DATA: dict[str, dict[str, type]] = {
    TaskCreated.TYPE: {"task": Task},
    TaskChanged.TYPE: {"before": Task, "after": Task},
    TaskRemoved.TYPE: {"task": Task},
    DesiredLRPCreated.TYPE: {"desired_lrp": DesiredLRP},
    DesiredLRPChanged.TYPE: {"before": DesiredLRP, "after": DesiredLRP},
    DesiredLRPRemoved.TYPE: {"desired_lrp": DesiredLRP},
    ActualLRPCreated.TYPE: {"actual_lrp": ActualLRP},
    ActualLRPChanged.TYPE: {"before": ActualLRP, "after": ActualLRP},
    ActualLRPRemoved.TYPE: {"actual_lrp": ActualLRP},
    ActualLRPCrashed.TYPE: {"actual_lrp": ActualLRP, "crash_count": int, "crash_reason": str},
}
"""What each event type's ``data()`` holds: key → a model or a scalar type. The
OpenAPI document describes the event stream's data lines from it."""


def task_events(before: Task | None, after: Task | None) -> list[Event]:
    """The events that say how a Task went from ``before`` to ``after`` (None: absent)."""
    if before is None and after is not None:
        return [TaskCreated(after)]
    if before is not None and after is None:
        return [TaskRemoved(before)]
    if before is not None and after is not None and before != after:
        return [TaskChanged(before, after)]
    return []


def desired_lrp_events(before: DesiredLRP | None, after: DesiredLRP | None) -> list[Event]:
    """The events that say how a DesiredLRP went from ``before`` to ``after`` (None: absent)."""
    if before is None and after is not None:
        return [DesiredLRPCreated(after)]
    if before is not None and after is None:
        return [DesiredLRPRemoved(before)]
    if before is not None and after is not None and before != after:
        return [DesiredLRPChanged(before, after)]
    return []


def crashed(before: ActualLRP, after: ActualLRP) -> bool:
    """Whether going from ``before`` to ``after`` counted a crash: it entered CRASHED,
    its crash count rose, or it has a newer crash time (a crash whose count was reset
    after a long run, and restarted at once, shows only that)."""
    into_crashed = after.state is ActualLRPState.CRASHED is not before.state
    return (
        into_crashed
        or after.crash_count > before.crash_count
        or after.last_crashed_at > before.last_crashed_at
    )


def actual_lrp_events(before: ActualLRP | None, after: ActualLRP | None) -> list[Event]:
    """The events that say how an ActualLRP went from ``before`` to ``after`` (None:
    absent); a crash is an ActualLRPChanged followed by an ActualLRPCrashed."""
    if before is None and after is not None:
        return [ActualLRPCreated(after)]
    if before is not None and after is None:
        return [ActualLRPRemoved(before)]
    if before is not None and after is not None and before != after:
        changed: list[Event] = [ActualLRPChanged(before, after)]
        return [*changed, ActualLRPCrashed(after)] if crashed(before, after) else changed
    return []


def event_domain(event: Event) -> str:
    """The domain of the Task, DesiredLRP or ActualLRP an event is about."""
    match event:
        case TaskCreated(task=task) | TaskRemoved(task=task):
            return task.domain
        case DesiredLRPCreated(desired=desired) | DesiredLRPRemoved(desired=desired):
            return desired.domain
        case ActualLRPCreated(actual=actual) | ActualLRPRemoved(actual=actual):
            return actual.domain
        case ActualLRPCrashed(actual=actual):
            return actual.domain
        case TaskChanged(after=after) | DesiredLRPChanged(after=after):
            return after.domain
        case ActualLRPChanged(after=after):
            return after.domain
