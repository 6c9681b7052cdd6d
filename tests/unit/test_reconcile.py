# The spec calls this cell α and any other cell ω; we keep its notation, so the ambiguous-
# character rules are off in this file.
# ruff: noqa: RUF001, RUF002, RUF003
"""The rep's Task reconciliation: every row of the spec's table, the CLAIMED rows, pairing.

The expected actions are written out by hand from "Harmonizing Tasks with Container
State: Rep" (spec/diego-big-picture.md), not derived from the product's table, so a
change to the table shows up as a failing row. α is ALPHA, ω is OMEGA.
"""

from __future__ import annotations

import itertools

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from diego.cell.reconcile import (
    FAILURE_NO_CONTAINER,
    FAILURE_NOT_STARTED,
    TABLE,
    Action,
    ContainerKind,
    ContainerState,
    ContainerView,
    Decision,
    TaskRelation,
    TaskView,
    containers_and_tasks,
    decide_task,
    reconcile,
)
from diego.models.actions import RunAction
from diego.models.task import Task, TaskCreateRequest, TaskState

ALPHA = "cell-alpha"
OMEGA = "cell-omega"
GUID = "task-1"

RESERVED = (ContainerState.RESERVED,)
ACTIVE = (ContainerState.INITIALIZING, ContainerState.CREATED, ContainerState.RUNNING)
COMPLETED = (ContainerState.COMPLETED,)
NO_CONTAINER: tuple[ContainerState, ...] = ()

NOTHING = Decision(Action.NOTHING, "")
DELETE = Decision(Action.DELETE_CONTAINER, "")
DELETE_LOUDLY = Decision(Action.DELETE_CONTAINER, "", loud=True)
START = Decision(Action.START_TASK, "")
COMPLETE = Decision(
    Action.COMPLETE_TASK_THEN_DELETE, "", failed=True, failure_reason="exit status 3", result=""
)
FAIL_NOT_STARTED = Decision(Action.FAIL_TASK, "", failed=True, failure_reason=FAILURE_NOT_STARTED)
FAIL_NO_CONTAINER = Decision(Action.FAIL_TASK, "", failed=True, failure_reason=FAILURE_NO_CONTAINER)


def task(state: TaskState, cell_id: str = "") -> TaskView:
    """The Task GUID in ``state`` on ``cell_id``."""
    return TaskView(GUID, state, cell_id)


def container(state: ContainerState) -> ContainerView:
    """The container GUID in ``state``; a completed one failed with "exit status 3"."""
    if state is ContainerState.COMPLETED:
        return ContainerView(GUID, state, failed=True, failure_reason="exit status 3")
    return ContainerView(GUID, state)


PENDING = task(TaskState.PENDING)
CLAIMED_ALPHA = task(TaskState.CLAIMED, ALPHA)
CLAIMED_OMEGA = task(TaskState.CLAIMED, OMEGA)
RUNNING_ALPHA = task(TaskState.RUNNING, ALPHA)
RUNNING_OMEGA = task(TaskState.RUNNING, OMEGA)
TASK_COMPLETED = task(TaskState.COMPLETED, ALPHA)
RESOLVING = task(TaskState.RESOLVING, ALPHA)


SPEC_ROWS = [
    pytest.param(RESERVED, None, DELETE, id="RESERVED|No Task"),
    pytest.param(RESERVED, PENDING, NOTHING, id="RESERVED|PENDING"),
    pytest.param(RESERVED, RUNNING_ALPHA, FAIL_NOT_STARTED, id="RESERVED|RUNNING on α"),
    pytest.param(RESERVED, RUNNING_OMEGA, DELETE, id="RESERVED|RUNNING on ω"),
    pytest.param(RESERVED, TASK_COMPLETED, DELETE, id="RESERVED|COMPLETED"),
    pytest.param(RESERVED, RESOLVING, DELETE, id="RESERVED|RESOLVING"),
    pytest.param(ACTIVE, None, DELETE, id="INITIALIZING|CREATED|RUNNING|No Task"),
    pytest.param(ACTIVE, PENDING, START, id="INITIALIZING|CREATED|RUNNING|PENDING"),
    pytest.param(ACTIVE, RUNNING_ALPHA, NOTHING, id="INITIALIZING|CREATED|RUNNING|RUNNING on α"),
    pytest.param(
        ACTIVE, RUNNING_OMEGA, DELETE_LOUDLY, id="INITIALIZING|CREATED|RUNNING|RUNNING on ω"
    ),
    pytest.param(ACTIVE, TASK_COMPLETED, DELETE, id="INITIALIZING|CREATED|RUNNING|COMPLETED"),
    pytest.param(ACTIVE, RESOLVING, DELETE, id="INITIALIZING|CREATED|RUNNING|RESOLVING"),
    pytest.param(COMPLETED, None, DELETE, id="COMPLETED|No Task"),
    pytest.param(COMPLETED, PENDING, COMPLETE, id="COMPLETED|PENDING"),
    pytest.param(COMPLETED, RUNNING_ALPHA, COMPLETE, id="COMPLETED|RUNNING on α"),
    pytest.param(COMPLETED, RUNNING_OMEGA, DELETE, id="COMPLETED|RUNNING on ω"),
    pytest.param(COMPLETED, TASK_COMPLETED, DELETE, id="COMPLETED|COMPLETED"),
    pytest.param(COMPLETED, RESOLVING, DELETE, id="COMPLETED|RESOLVING"),
    pytest.param(NO_CONTAINER, RUNNING_ALPHA, FAIL_NO_CONTAINER, id="No Container|RUNNING on α"),
]
"""The spec's table, row by row, in its order."""

CLAIMED_ROWS = [
    pytest.param(RESERVED, CLAIMED_ALPHA, NOTHING, id="RESERVED|CLAIMED by α"),
    pytest.param(RESERVED, CLAIMED_OMEGA, DELETE, id="RESERVED|CLAIMED by ω"),
    pytest.param(ACTIVE, CLAIMED_ALPHA, START, id="INITIALIZING|CREATED|RUNNING|CLAIMED by α"),
    pytest.param(
        ACTIVE, CLAIMED_OMEGA, DELETE_LOUDLY, id="INITIALIZING|CREATED|RUNNING|CLAIMED by ω"
    ),
    pytest.param(COMPLETED, CLAIMED_ALPHA, COMPLETE, id="COMPLETED|CLAIMED by α"),
    pytest.param(COMPLETED, CLAIMED_OMEGA, DELETE, id="COMPLETED|CLAIMED by ω"),
    pytest.param(NO_CONTAINER, CLAIMED_ALPHA, FAIL_NO_CONTAINER, id="No Container|CLAIMED by α"),
    pytest.param(NO_CONTAINER, CLAIMED_OMEGA, NOTHING, id="No Container|CLAIMED by ω"),
]
"""Our extension: CLAIMED by α is PENDING to α's own container; CLAIMED by ω is RUNNING on ω."""

NO_CONTAINER_ROWS = [
    pytest.param(NO_CONTAINER, None, NOTHING, id="No Container|No Task"),
    pytest.param(NO_CONTAINER, PENDING, NOTHING, id="No Container|PENDING"),
    pytest.param(NO_CONTAINER, RUNNING_OMEGA, NOTHING, id="No Container|RUNNING on ω"),
    pytest.param(NO_CONTAINER, TASK_COMPLETED, NOTHING, id="No Container|COMPLETED"),
    pytest.param(NO_CONTAINER, RESOLVING, NOTHING, id="No Container|RESOLVING"),
]
"""The rows the spec leaves out: without a container, only a Task on α is α's business."""


def check_row(
    states: tuple[ContainerState, ...], the_task: TaskView | None, expected: Decision
) -> None:
    """decide_task gives ``expected`` (bar the reason) for each container state, or none."""
    containers = [container(s) for s in states] if states else [None]
    for the_container in containers:
        decision = decide_task(ALPHA, the_container, the_task)
        assert attrs.evolve(decision, reason="") == expected, the_container
        assert decision.reason


@pytest.mark.parametrize(("states", "the_task", "expected"), SPEC_ROWS)
def test_spec_row(
    states: tuple[ContainerState, ...], the_task: TaskView | None, expected: Decision
) -> None:
    """Each row of the spec's table gives the spec's action."""
    check_row(states, the_task, expected)


@pytest.mark.parametrize(("states", "the_task", "expected"), CLAIMED_ROWS)
def test_claimed_row(
    states: tuple[ContainerState, ...], the_task: TaskView | None, expected: Decision
) -> None:
    """A CLAIMED Task is PENDING to the cell that claimed it and RUNNING elsewhere to the rest."""
    check_row(states, the_task, expected)


@pytest.mark.parametrize(("states", "the_task", "expected"), NO_CONTAINER_ROWS)
def test_no_container_row(
    states: tuple[ContainerState, ...], the_task: TaskView | None, expected: Decision
) -> None:
    """Without a container, a Task that is not RUNNING on or CLAIMED by α is left alone."""
    check_row(states, the_task, expected)


@pytest.mark.parametrize(
    ("failed", "failure_reason", "result"),
    [
        pytest.param(False, "", "42", id="succeeded"),
        pytest.param(True, "out of memory", "", id="failed"),
    ],
)
def test_completion_carries_the_container_result(
    failed: bool, failure_reason: str, result: str
) -> None:
    """Completing a Task passes on the container's failed, failure_reason and result."""
    done = ContainerView(GUID, ContainerState.COMPLETED, failed, failure_reason, result)
    decision = decide_task(ALPHA, done, RUNNING_ALPHA)
    assert decision.action is Action.COMPLETE_TASK_THEN_DELETE
    assert (decision.failed, decision.failure_reason, decision.result) == (
        failed,
        failure_reason,
        result,
    )


def test_pending_is_pending_wherever_its_cell_id_points() -> None:
    """A PENDING Task is started by the cell running its container, whatever its cell_id says."""
    running = container(ContainerState.RUNNING)
    assert decide_task(ALPHA, running, task(TaskState.PENDING, OMEGA)).action is Action.START_TASK


def test_table_covers_every_pair() -> None:
    """The product's table has exactly one row per container kind and Task relation."""
    assert set(TABLE) == set(itertools.product(ContainerKind, TaskRelation))


def test_mismatched_guids_are_refused() -> None:
    """A container and a Task of different guids are not one row of the table."""
    with pytest.raises(ValueError, match="not the container of task"):
        decide_task(ALPHA, ContainerView("other", ContainerState.RUNNING), RUNNING_ALPHA)


def test_task_view_of_a_task() -> None:
    """TaskView.of keeps a Task's guid, state and cell."""
    request = TaskCreateRequest(
        task_guid=GUID, domain="tests", stack="cflinuxfs4", action=RunAction(path="/bin/true")
    )
    whole = Task.from_request(request, state=TaskState.RUNNING, cell_id=ALPHA)
    assert TaskView.of(whole) == RUNNING_ALPHA


def view(guid: str, state: TaskState, cell_id: str = ALPHA) -> TaskView:
    """A Task view of ``guid``."""
    return TaskView(guid, state, cell_id)


def test_pairing_matches_containers_with_tasks_by_guid() -> None:
    """Each container comes once, in order, with the Task of its guid or None."""
    a = ContainerView("a", ContainerState.RUNNING)
    b = ContainerView("b", ContainerState.RESERVED)
    c = ContainerView("c", ContainerState.COMPLETED)
    tasks = [view("c", TaskState.RUNNING), view("a", TaskState.PENDING, "")]
    assert containers_and_tasks(ALPHA, [a, b, c], tasks) == [
        (a, tasks[1]),
        (b, None),
        (c, tasks[0]),
    ]


def test_pairing_adds_tasks_on_this_cell_without_a_container() -> None:
    """Tasks RUNNING on or CLAIMED by α with no container get a row; other lone Tasks don't."""
    running_here = view("r", TaskState.RUNNING)
    claimed_here = view("c", TaskState.CLAIMED)
    lone = [
        view("p", TaskState.PENDING, ""),
        view("p-alpha", TaskState.PENDING),
        view("r-omega", TaskState.RUNNING, OMEGA),
        view("c-omega", TaskState.CLAIMED, OMEGA),
        view("done", TaskState.COMPLETED),
        view("resolving", TaskState.RESOLVING),
    ]
    assert containers_and_tasks(ALPHA, [], [running_here, *lone, claimed_here]) == [
        (None, running_here),
        (None, claimed_here),
    ]


def test_pairing_refuses_repeated_guids() -> None:
    """A guid given twice, among containers or among Tasks, is a caller's bug."""
    with pytest.raises(ValueError, match="given twice"):
        containers_and_tasks(ALPHA, [], [RUNNING_ALPHA, RUNNING_ALPHA])
    running = container(ContainerState.RUNNING)
    with pytest.raises(ValueError, match="given twice"):
        containers_and_tasks(ALPHA, [running, running], [])


def test_reconcile_decides_every_pair() -> None:
    """reconcile gives each pair of containers_and_tasks its decision."""
    gone = ContainerView("gone", ContainerState.RUNNING)
    lost = view("lost", TaskState.RUNNING)
    assert [(c, t, d.action) for c, t, d in reconcile(ALPHA, [gone], [lost])] == [
        (gone, None, Action.DELETE_CONTAINER),
        (None, lost, Action.FAIL_TASK),
    ]


CELLS = st.sampled_from([ALPHA, OMEGA, ""])
containers_st = st.none() | st.builds(
    ContainerView,
    guid=st.just(GUID),
    state=st.sampled_from(ContainerState),
    failed=st.booleans(),
    failure_reason=st.text(max_size=5),
    result=st.text(max_size=5),
)
tasks_st = st.none() | st.builds(
    TaskView, task_guid=st.just(GUID), state=st.sampled_from(TaskState), cell_id=CELLS
)


@given(cell_id=CELLS, the_container=containers_st, the_task=tasks_st)
def test_decide_task_is_total_and_minds_its_own_tasks(
    cell_id: str, the_container: ContainerView | None, the_task: TaskView | None
) -> None:
    """Every combination gets a decision, and none changes a Task that is another cell's."""
    decision = decide_task(cell_id, the_container, the_task)
    assert decision.reason
    if decision.action.changes_task:
        assert the_task is not None
        assert the_task.state in (TaskState.PENDING, TaskState.CLAIMED, TaskState.RUNNING)
        assert the_task.state is TaskState.PENDING or the_task.cell_id == cell_id
    if decision.action is Action.START_TASK:
        assert the_container is not None
        assert the_container.state in ACTIVE
    if decision.action is Action.COMPLETE_TASK_THEN_DELETE:
        assert the_container is not None
        assert the_container.state is ContainerState.COMPLETED
    if decision.action.deletes_container:
        assert the_container is not None
    if decision.loud:
        assert decision.action is Action.DELETE_CONTAINER


@given(
    cell_id=CELLS,
    container_states=st.dictionaries(
        st.sampled_from("abcdef"), st.sampled_from(ContainerState), max_size=6
    ),
    task_states=st.dictionaries(
        st.sampled_from("abcdef"), st.tuples(st.sampled_from(TaskState), CELLS), max_size=6
    ),
)
def test_pairing_covers_every_container_and_only_this_cells_lone_tasks(
    cell_id: str,
    container_states: dict[str, ContainerState],
    task_states: dict[str, tuple[TaskState, str]],
) -> None:
    """Each container is paired once with its own Task; lone Tasks are only α's CLAIMED/RUNNING."""
    containers = [ContainerView(g, s) for g, s in container_states.items()]
    tasks = [TaskView(g, s, c) for g, (s, c) in task_states.items()]
    pairs = containers_and_tasks(cell_id, containers, tasks)
    assert [c for c, _ in pairs if c is not None] == containers
    for the_container, the_task in pairs:
        if the_container is not None:
            assert the_task == next((t for t in tasks if t.task_guid == the_container.guid), None)
        else:
            assert the_task is not None
            assert the_task.task_guid not in container_states
            assert the_task.cell_id == cell_id
            assert the_task.state in (TaskState.CLAIMED, TaskState.RUNNING)
    lone = {t.task_guid for c, t in pairs if c is None and t is not None}
    assert lone == {
        g
        for g, (s, c) in task_states.items()
        if g not in container_states
        and c == cell_id
        and s in (TaskState.CLAIMED, TaskState.RUNNING)
    }
