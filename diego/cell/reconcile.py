# The spec calls this cell α and any other cell ω; we keep its notation, so the ambiguous-
# character rules are off in this file.
# ruff: noqa: RUF001, RUF002, RUF003
"""The rep's reconciliation of Tasks with its containers, as a pure table.

This is the spec's table "Harmonizing Tasks with Container State: Rep"
(``spec/diego-big-picture.md``): given one container on this cell (α) and the
Task of the same guid in the BBS, say what α must do: nothing, delete the
container, CAS the Task to RUNNING on α, CAS it to COMPLETED with the container's
result and then delete the container, or CAS it to COMPLETED and failed. Every
row of the spec's table is one entry of :data:`TABLE`, keyed by the container's
kind (:class:`ContainerKind`) and the Task as seen from α (:class:`TaskRelation`);
the table covers every pair, so :func:`decide_task` is total.

Two extensions to the spec's table:

* **CLAIMED.** Our lifecycle keeps the Task spec's CLAIMED state: a cell reserves
  room for a Task and claims it before it starts it. From α's side a Task CLAIMED
  by α is treated like PENDING wherever that is safe, because α holds its
  reservation:

  - ``RESERVED`` + CLAIMED by α: do nothing (α will start it);
  - ``INITIALIZING|CREATED|RUNNING`` + CLAIMED by α: CAS the Task to RUNNING on α;
  - ``COMPLETED`` + CLAIMED by α: CAS the Task to COMPLETED, then delete the container;
  - no container + CLAIMED by α: CAS the Task to COMPLETED and failed (α claimed it
    but holds no reservation, so nobody will ever start it).

  A Task CLAIMED by another cell (ω) is treated like one RUNNING on ω: α deletes
  its container (loudly if the container had got past RESERVED) and otherwise
  leaves the Task alone.

* **The rows the spec leaves out.** Without a container, anything but a Task
  RUNNING (or CLAIMED) on α is nothing of α's: a PENDING Task belongs to the
  auction, a Task on ω to ω, and a COMPLETED or RESOLVING Task to its consumer and
  the converger. A PENDING Task is PENDING wherever its ``cell_id`` points.

A decision is only as fresh as the snapshot it was made from. As the spec's
"Polling vs Events" says, the rep must validate a decision before acting on it:
every Task change is a compare-and-swap that fails if the Task has moved on, and
a container should be looked up again before it is deleted. In particular the rep
must not judge a container it is itself starting (reserved, Task CAS'd to RUNNING,
container not yet past RESERVED): the ``RESERVED`` + RUNNING on α row would fail
that Task.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable

import attrs

from diego.models.task import Task, TaskState

FAILURE_NOT_STARTED = "cell reserved a container for the task but never started it"
"""failure_reason when BBS has the Task RUNNING on α but α's container is only RESERVED."""

FAILURE_NO_CONTAINER = "cell has no container for the task"
"""failure_reason when BBS has the Task RUNNING on (or CLAIMED by) α but α has no container."""


class ContainerState(enum.StrEnum):
    """A container's state in the executor (spec: "The Rep-Executor(-Garden) Cycle")."""

    RESERVED = "RESERVED"
    INITIALIZING = "INITIALIZING"
    CREATED = "CREATED"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"


@attrs.frozen
class ContainerView:
    """What reconciliation needs of one container: its guid, state and result."""

    guid: str
    state: ContainerState
    failed: bool = False
    failure_reason: str = ""
    result: str = ""


@attrs.frozen
class TaskView:
    """What reconciliation needs of one Task in the BBS."""

    task_guid: str
    state: TaskState
    cell_id: str

    @classmethod
    def of(cls, task: Task) -> TaskView:
        """The view of a whole Task."""
        return cls(task_guid=task.task_guid, state=task.state, cell_id=task.cell_id)


class Action(enum.Enum):
    """What the rep does about one container and its Task (the spec's "Action" column)."""

    NOTHING = "do nothing"
    DELETE_CONTAINER = "delete container"
    START_TASK = "CAS the task to RUNNING on this cell"
    COMPLETE_TASK_THEN_DELETE = "CAS the task to COMPLETED, then delete container"
    FAIL_TASK = "CAS the task to COMPLETED and failed"

    @property
    def changes_task(self) -> bool:
        """Whether the action is a CAS of the Task in the BBS."""
        return self in (Action.START_TASK, Action.COMPLETE_TASK_THEN_DELETE, Action.FAIL_TASK)

    @property
    def deletes_container(self) -> bool:
        """Whether the action ends by deleting the container."""
        return self in (Action.DELETE_CONTAINER, Action.COMPLETE_TASK_THEN_DELETE)


@attrs.frozen
class Decision:
    """One row's verdict: the action, why (the spec's "Reason"), and whether to log loudly.

    ``failed``, ``failure_reason`` and ``result`` are what to complete the Task with:
    the container's own for ``COMPLETE_TASK_THEN_DELETE``, a failure with one of
    this module's ``FAILURE_*`` reasons for ``FAIL_TASK``, and empty otherwise.
    """

    action: Action
    reason: str
    loud: bool = False
    failed: bool = False
    failure_reason: str = ""
    result: str = ""


class ContainerKind(enum.Enum):
    """The container column of the spec's table: states the table does not tell apart are one."""

    RESERVED = "RESERVED"
    ACTIVE = "INITIALIZING|CREATED|RUNNING"
    COMPLETED = "COMPLETED"
    NONE = "No Container"


class TaskRelation(enum.Enum):
    """The Task column of the spec's table: a Task's state as seen from this cell (α)."""

    NO_TASK = "No Task"
    PENDING = "PENDING"
    CLAIMED_HERE = "CLAIMED by α"
    RUNNING_HERE = "RUNNING on α"
    CLAIMED_ELSEWHERE = "CLAIMED by ω"
    RUNNING_ELSEWHERE = "RUNNING on ω"
    COMPLETED = "COMPLETED"
    RESOLVING = "RESOLVING"


def container_kind(container: ContainerView | None) -> ContainerKind:
    """The table's container column for ``container`` (None: no container)."""
    if container is None:
        return ContainerKind.NONE
    if container.state is ContainerState.RESERVED:
        return ContainerKind.RESERVED
    if container.state is ContainerState.COMPLETED:
        return ContainerKind.COMPLETED
    return ContainerKind.ACTIVE


def task_relation(cell_id: str, task: TaskView | None) -> TaskRelation:
    """The table's Task column for ``task`` as the cell ``cell_id`` sees it."""
    if task is None:
        return TaskRelation.NO_TASK
    here = task.cell_id == cell_id
    match task.state:
        case TaskState.PENDING:
            return TaskRelation.PENDING
        case TaskState.CLAIMED:
            return TaskRelation.CLAIMED_HERE if here else TaskRelation.CLAIMED_ELSEWHERE
        case TaskState.RUNNING:
            return TaskRelation.RUNNING_HERE if here else TaskRelation.RUNNING_ELSEWHERE
        case TaskState.COMPLETED:
            return TaskRelation.COMPLETED
        case TaskState.RESOLVING:
            return TaskRelation.RESOLVING


@attrs.frozen
class Row:
    """One row of :data:`TABLE`: the action, its reason, and whether to log loudly."""

    action: Action
    reason: str
    loud: bool = False


_K = ContainerKind
_T = TaskRelation
_A = Action

TABLE: dict[tuple[ContainerKind, TaskRelation], Row] = {
    # RESERVED: α holds room for the Task but has not begun creating the container.
    (_K.RESERVED, _T.NO_TASK): Row(
        _A.DELETE_CONTAINER, "the task has been cancelled, α should not act"
    ),
    (_K.RESERVED, _T.PENDING): Row(
        _A.NOTHING,
        "α merely has a reservation for the task and should eventually CAS it to RUNNING on α",
    ),
    (_K.RESERVED, _T.CLAIMED_HERE): Row(
        _A.NOTHING, "α has claimed the task and holds its reservation; it should start it soon"
    ),
    (_K.RESERVED, _T.RUNNING_HERE): Row(
        _A.FAIL_TASK, "BBS thinks α is running the task but it isn't"
    ),
    (_K.RESERVED, _T.CLAIMED_ELSEWHERE): Row(
        _A.DELETE_CONTAINER, "the task is claimed by another cell: don't start running it"
    ),
    (_K.RESERVED, _T.RUNNING_ELSEWHERE): Row(
        _A.DELETE_CONTAINER, "the task is running on another cell: don't start running it"
    ),
    (_K.RESERVED, _T.COMPLETED): Row(
        _A.DELETE_CONTAINER, "the task is COMPLETED: don't start running it"
    ),
    (_K.RESERVED, _T.RESOLVING): Row(
        _A.DELETE_CONTAINER, "the task is RESOLVING: don't start running it"
    ),
    # INITIALIZING|CREATED|RUNNING: α is creating or running the container.
    (_K.ACTIVE, _T.NO_TASK): Row(
        _A.DELETE_CONTAINER, "the task has been cancelled, α should stop running it"
    ),
    (_K.ACTIVE, _T.PENDING): Row(_A.START_TASK, "make sure BBS knows α is running the task"),
    (_K.ACTIVE, _T.CLAIMED_HERE): Row(
        _A.START_TASK, "make sure BBS knows α is running the task it claimed"
    ),
    (_K.ACTIVE, _T.RUNNING_HERE): Row(_A.NOTHING, "BBS is up to date"),
    (_K.ACTIVE, _T.CLAIMED_ELSEWHERE): Row(
        _A.DELETE_CONTAINER,
        "apparently the task is claimed by another cell, yet α is running it",
        loud=True,
    ),
    (_K.ACTIVE, _T.RUNNING_ELSEWHERE): Row(
        _A.DELETE_CONTAINER, "apparently the task is running somewhere else", loud=True
    ),
    (_K.ACTIVE, _T.COMPLETED): Row(
        _A.DELETE_CONTAINER, "the task is COMPLETED (perhaps it was cancelled)"
    ),
    (_K.ACTIVE, _T.RESOLVING): Row(
        _A.DELETE_CONTAINER, "the task is RESOLVING (perhaps it was cancelled)"
    ),
    # COMPLETED: the container's work is done and its result is in hand.
    (_K.COMPLETED, _T.NO_TASK): Row(
        _A.DELETE_CONTAINER, "the task has been cancelled - don't worry about it"
    ),
    (_K.COMPLETED, _T.PENDING): Row(
        _A.COMPLETE_TASK_THEN_DELETE, "make sure BBS knows α has completed the task"
    ),
    (_K.COMPLETED, _T.CLAIMED_HERE): Row(
        _A.COMPLETE_TASK_THEN_DELETE, "make sure BBS knows α has completed the task"
    ),
    (_K.COMPLETED, _T.RUNNING_HERE): Row(
        _A.COMPLETE_TASK_THEN_DELETE, "make sure BBS knows α has completed the task"
    ),
    (_K.COMPLETED, _T.CLAIMED_ELSEWHERE): Row(
        _A.DELETE_CONTAINER, "apparently the task is claimed by another cell"
    ),
    (_K.COMPLETED, _T.RUNNING_ELSEWHERE): Row(
        _A.DELETE_CONTAINER, "apparently the task is running somewhere else"
    ),
    (_K.COMPLETED, _T.COMPLETED): Row(
        _A.DELETE_CONTAINER, "the task has already been marked COMPLETED"
    ),
    (_K.COMPLETED, _T.RESOLVING): Row(
        _A.DELETE_CONTAINER,
        "the task has already been marked RESOLVING (perhaps it was cancelled)",
    ),
    # No container (and no reservation) on α.
    (_K.NONE, _T.NO_TASK): Row(_A.NOTHING, "neither a container nor a task"),
    (_K.NONE, _T.PENDING): Row(_A.NOTHING, "the auction owns a PENDING task"),
    (_K.NONE, _T.CLAIMED_HERE): Row(
        _A.FAIL_TASK, "Diego thinks α has claimed the task, but α holds no reservation for it"
    ),
    (_K.NONE, _T.RUNNING_HERE): Row(
        _A.FAIL_TASK, "Diego thinks α is running the task, but it is not"
    ),
    (_K.NONE, _T.CLAIMED_ELSEWHERE): Row(_A.NOTHING, "the task is another cell's"),
    (_K.NONE, _T.RUNNING_ELSEWHERE): Row(_A.NOTHING, "the task is another cell's"),
    (_K.NONE, _T.COMPLETED): Row(_A.NOTHING, "the task is done and α has nothing of it"),
    (_K.NONE, _T.RESOLVING): Row(_A.NOTHING, "the task is done and α has nothing of it"),
}
"""The spec's table, extended to CLAIMED and to every pair; see the module docstring."""


def decide_task(cell_id: str, container: ContainerView | None, task: TaskView | None) -> Decision:
    """What the cell ``cell_id`` must do about ``container`` and ``task`` (either may be None).

    Raises ValueError only if the container and the Task have different guids.
    """
    if container is not None and task is not None and container.guid != task.task_guid:
        raise ValueError(
            f"container {container.guid!r} is not the container of task {task.task_guid!r}"
        )
    row = TABLE[container_kind(container), task_relation(cell_id, task)]
    if row.action is Action.COMPLETE_TASK_THEN_DELETE:
        assert container is not None  # only COMPLETED containers complete a Task
        return Decision(
            action=row.action,
            reason=row.reason,
            loud=row.loud,
            failed=container.failed,
            failure_reason=container.failure_reason,
            result=container.result,
        )
    if row.action is Action.FAIL_TASK:
        failure = FAILURE_NO_CONTAINER if container is None else FAILURE_NOT_STARTED
        return Decision(
            action=row.action, reason=row.reason, loud=row.loud, failed=True, failure_reason=failure
        )
    return Decision(action=row.action, reason=row.reason, loud=row.loud)


def containers_and_tasks(
    cell_id: str, containers: Iterable[ContainerView], tasks: Iterable[TaskView]
) -> list[tuple[ContainerView | None, TaskView | None]]:
    """Pair every container with its Task by guid, and add the Tasks α should have a container for.

    Each container comes once, in the order given, with its Task or None. Then come,
    in the order given and with no container, the Tasks CLAIMED by or RUNNING on
    ``cell_id`` that have no container here. Other Tasks without a container are
    left out: a PENDING one is the auction's, the rest are not α's.
    Guids are unique in both inputs (the executor's registry and the BBS are keyed
    by guid); a repeated guid raises ValueError.
    """
    by_guid: dict[str, TaskView] = {}
    for task in tasks:
        if task.task_guid in by_guid:
            raise ValueError(f"task {task.task_guid!r} given twice")
        by_guid[task.task_guid] = task
    pairs: list[tuple[ContainerView | None, TaskView | None]] = []
    seen: set[str] = set()
    for container in containers:
        if container.guid in seen:
            raise ValueError(f"container {container.guid!r} given twice")
        seen.add(container.guid)
        pairs.append((container, by_guid.get(container.guid)))
    for guid, task in by_guid.items():
        if (
            guid not in seen
            and task.cell_id == cell_id
            and task.state in (TaskState.CLAIMED, TaskState.RUNNING)
        ):
            pairs.append((None, task))
    return pairs


def reconcile(
    cell_id: str, containers: Iterable[ContainerView], tasks: Iterable[TaskView]
) -> list[tuple[ContainerView | None, TaskView | None, Decision]]:
    """Every pair of :func:`containers_and_tasks` with its decision."""
    return [
        (container, task, decide_task(cell_id, container, task))
        for container, task in containers_and_tasks(cell_id, containers, tasks)
    ]
