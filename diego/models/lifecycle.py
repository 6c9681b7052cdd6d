"""The Task lifecycle as pure rules: which transitions are allowed, and what each
lifecycle verb makes of a Task. Time is passed in, never read.

    PENDING ──claim──► CLAIMED ──start──► RUNNING ──complete──► COMPLETED
       │                  │                                      │   ▲
       └──start──► RUNNING└──fail/cancel──► COMPLETED   resolving│   │demote
       └──fail/cancel/complete (a cell finished it)──►           ▼   │
                                                            RESOLVING ──delete──► (gone)

A COMPLETED Task may also be deleted outright (the converger reaps Tasks left
COMPLETED too long).
"""

from __future__ import annotations

from typing import Any

import attrs

from diego.models.errors import InvalidStateTransition, RunningOnDifferentCell
from diego.models.task import Task, TaskState

P, C, R, D, V = (
    TaskState.PENDING,
    TaskState.CLAIMED,
    TaskState.RUNNING,
    TaskState.COMPLETED,
    TaskState.RESOLVING,
)

TRANSITIONS: dict[TaskState, frozenset[TaskState]] = {
    P: frozenset({C, R, D}),
    C: frozenset({R, D}),
    R: frozenset({D}),
    D: frozenset({V}),
    V: frozenset({D}),
}
"""Every allowed change of state; anything else is refused."""

DELETABLE = frozenset({D, V})
"""The states a Task may be removed from."""

CANCELLED = "cancelled"
EVACUATION_FAILURE = "timed out during cell evacuation"
"""Why an evacuating cell fails the Tasks still running when its timeout ends."""


def can_transition(before: TaskState, after: TaskState) -> bool:
    """Whether a Task may go from ``before`` to ``after``."""
    return after in TRANSITIONS[before]


def _move(task: Task, to: TaskState, now: int, **changes: Any) -> Task:
    if not can_transition(task.state, to):
        raise InvalidStateTransition(task.task_guid, task.state, to)
    if to is D and not task.first_completed_at:
        changes.setdefault("first_completed_at", now)
    return attrs.evolve(task, state=to, updated_at=now, **changes)


def _require_cell(task: Task, cell_id: str) -> None:
    if task.state in (C, R) and task.cell_id != cell_id:
        raise RunningOnDifferentCell(task.task_guid, task.cell_id, cell_id)


def claim(task: Task, cell_id: str, now: int) -> Task:
    """A cell has reserved room for a PENDING Task."""
    return _move(task, C, now, cell_id=cell_id)


def start(task: Task, cell_id: str, now: int) -> Task:
    """A cell begins running a PENDING Task (or one it claimed)."""
    if task.state is C:
        _require_cell(task, cell_id)
    return _move(task, R, now, cell_id=cell_id)


def complete(
    task: Task, cell_id: str, failed: bool, failure_reason: str, result: str, now: int
) -> Task:
    """The cell ``cell_id`` finished the Task, successfully or not.

    The completing cell stays in ``cell_id`` (Diego clears it): a consumer can see
    where its Task ran.
    """
    if task.state not in (P, C, R):
        # RESOLVING → COMPLETED is the converger's demote, never a cell's say.
        raise InvalidStateTransition(task.task_guid, task.state, D)
    _require_cell(task, cell_id)
    return _move(
        task,
        D,
        now,
        cell_id=cell_id,
        failed=failed,
        failure_reason=failure_reason if failed else "",
        result="" if failed else result,
    )


def fail(task: Task, failure_reason: str, now: int) -> Task:
    """The Task is given up on, wherever it is (no room anywhere, its cell vanished)."""
    if task.state not in (P, C, R):
        raise InvalidStateTransition(task.task_guid, task.state, D)
    return _move(task, D, now, failed=True, failure_reason=failure_reason, result="")


def reject(task: Task, failure_reason: str, now: int) -> Task:
    """The auction finds no cell that could ever run a PENDING Task. Only a PENDING
    one: a copy of it the auction held may be older than a start elsewhere."""
    if task.state is not P:
        raise InvalidStateTransition(task.task_guid, task.state, D)
    return fail(task, failure_reason, now)


def cancel(task: Task, now: int) -> Task:
    """The consumer cancels a Task that has not completed."""
    return fail(task, CANCELLED, now)


def resolving(task: Task, now: int) -> Task:
    """Someone takes on resolving a COMPLETED Task (its callback, or its deletion)."""
    return _move(task, V, now)


def demote(task: Task, now: int) -> Task:
    """A Task stuck RESOLVING goes back to COMPLETED for another try."""
    if task.state is not V:
        raise InvalidStateTransition(task.task_guid, task.state, D)
    return _move(task, D, now)


def check_deletable(task: Task, allowed: frozenset[TaskState] = DELETABLE) -> None:
    """Refuse to remove a Task that is not in one of the ``allowed`` states."""
    if task.state not in allowed:
        raise InvalidStateTransition(task.task_guid, task.state, None)
