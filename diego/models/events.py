"""Typed events about state changes, and the pure calculator that derives them.

Store verbs return ``(before, after)``; ``task_events`` turns such a pair into
the events to publish once the change is committed.
"""

from __future__ import annotations

from typing import Any, ClassVar

import attrs

from diego.models.codec import encode
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


Event = TaskCreated | TaskChanged | TaskRemoved

EVENT_TYPES: tuple[str, ...] = (TaskCreated.TYPE, TaskChanged.TYPE, TaskRemoved.TYPE)


def task_events(before: Task | None, after: Task | None) -> list[Event]:
    """The events that say how a Task went from ``before`` to ``after`` (None: absent)."""
    if before is None and after is not None:
        return [TaskCreated(after)]
    if before is not None and after is None:
        return [TaskRemoved(before)]
    if before is not None and after is not None and before != after:
        return [TaskChanged(before, after)]
    return []


def event_domain(event: Event) -> str:
    """The domain of the Task an event is about."""
    task = event.after if isinstance(event, TaskChanged) else event.task
    return task.domain
