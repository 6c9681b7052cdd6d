"""The Task lifecycle: every verb from every state, the transition table, and purity.

The expectations are written out here by hand (not derived from the product's
table), so a change to the lifecycle shows up as a failing row.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from diego.models import lifecycle
from diego.models.actions import RunAction
from diego.models.errors import InvalidStateTransition, RunningOnDifferentCell
from diego.models.task import Task, TaskCreateRequest, TaskState

P, C, R, D, V = (
    TaskState.PENDING,
    TaskState.CLAIMED,
    TaskState.RUNNING,
    TaskState.COMPLETED,
    TaskState.RESOLVING,
)
STATES = (P, C, R, D, V)

CREATED = 1_000
UPDATED = 2_000
COMPLETED_AT = 3_000
NOW = 9_000
CELL = "cell-a"
OTHER = "cell-b"

REQUEST = TaskCreateRequest(
    task_guid="task-1",
    domain="tests",
    stack="cflinuxfs4",
    action=RunAction(path="/bin/true"),
    result_file="/out/result.txt",
)


def task_in(state: TaskState) -> Task:
    """A plausible Task in ``state``: claimed/run by CELL, and completed earlier if done."""
    task = Task.new(REQUEST, CREATED)
    if state is P:
        return task
    if state in (C, R):
        return attrs.evolve(task, state=state, cell_id=CELL, updated_at=UPDATED)
    return attrs.evolve(
        task,
        state=state,
        cell_id=CELL,
        failed=False,
        result="42",
        first_completed_at=COMPLETED_AT,
        updated_at=COMPLETED_AT,
    )


VERBS: dict[str, Callable[[Task], Task | None]] = {
    "claim": lambda t: lifecycle.claim(t, CELL, NOW),
    "claim_other_cell": lambda t: lifecycle.claim(t, OTHER, NOW),
    "start": lambda t: lifecycle.start(t, CELL, NOW),
    "start_other_cell": lambda t: lifecycle.start(t, OTHER, NOW),
    "complete_ok": lambda t: lifecycle.complete(t, CELL, False, "ignored", "42", NOW),
    "complete_failed": lambda t: lifecycle.complete(t, CELL, True, "exit status 1", "partial", NOW),
    "complete_other_cell": lambda t: lifecycle.complete(t, OTHER, False, "", "43", NOW),
    "fail": lambda t: lifecycle.fail(t, "no cell has room", NOW),
    "cancel": lambda t: lifecycle.cancel(t, NOW),
    "resolving": lambda t: lifecycle.resolving(t, NOW),
    "demote": lambda t: lifecycle.demote(t, NOW),
    "check_deletable": lambda t: lifecycle.check_deletable(t),
}
"""Each lifecycle verb, called with fixed arguments (some from the other cell)."""

TARGET: dict[str, TaskState | None] = {
    "claim": C,
    "claim_other_cell": C,
    "start": R,
    "start_other_cell": R,
    "complete_ok": D,
    "complete_failed": D,
    "complete_other_cell": D,
    "fail": D,
    "cancel": D,
    "resolving": V,
    "demote": D,
    "check_deletable": None,
}
"""The state each verb moves to (None: removal), as InvalidStateTransition reports it."""

IST = InvalidStateTransition
RODC = RunningOnDifferentCell
DELETABLE_OK = "deletable"
"""check_deletable returned without raising."""

COMPLETED_OK = {"state": D, "failed": False, "failure_reason": "", "first_completed_at": NOW}

EXPECTED: dict[tuple[str, TaskState], Any] = {
    # claim: PENDING only
    ("claim", P): {"state": C, "cell_id": CELL},
    ("claim", C): IST,
    ("claim", R): IST,
    ("claim", D): IST,
    ("claim", V): IST,
    ("claim_other_cell", P): {"state": C, "cell_id": OTHER},
    ("claim_other_cell", C): IST,
    ("claim_other_cell", R): IST,
    ("claim_other_cell", D): IST,
    ("claim_other_cell", V): IST,
    # start: PENDING, or CLAIMED by the same cell
    ("start", P): {"state": R, "cell_id": CELL},
    ("start", C): {"state": R, "cell_id": CELL},
    ("start", R): IST,
    ("start", D): IST,
    ("start", V): IST,
    ("start_other_cell", P): {"state": R, "cell_id": OTHER},
    ("start_other_cell", C): RODC,
    # As Diego's StartTask: a RUNNING Task cannot move to RUNNING, whichever cell asks.
    ("start_other_cell", R): IST,
    ("start_other_cell", D): IST,
    ("start_other_cell", V): IST,
    # complete: from PENDING, CLAIMED or RUNNING; only the owning cell once claimed
    ("complete_ok", P): {**COMPLETED_OK, "cell_id": CELL, "result": "42"},
    ("complete_ok", C): {**COMPLETED_OK, "cell_id": CELL, "result": "42"},
    ("complete_ok", R): {**COMPLETED_OK, "cell_id": CELL, "result": "42"},
    ("complete_ok", D): IST,
    ("complete_ok", V): IST,
    ("complete_failed", P): {
        "state": D,
        "cell_id": CELL,
        "failed": True,
        "failure_reason": "exit status 1",
        "result": "",
        "first_completed_at": NOW,
    },
    ("complete_failed", C): {
        "state": D,
        "cell_id": CELL,
        "failed": True,
        "failure_reason": "exit status 1",
        "result": "",
        "first_completed_at": NOW,
    },
    ("complete_failed", R): {
        "state": D,
        "cell_id": CELL,
        "failed": True,
        "failure_reason": "exit status 1",
        "result": "",
        "first_completed_at": NOW,
    },
    ("complete_failed", D): IST,
    ("complete_failed", V): IST,
    ("complete_other_cell", P): {**COMPLETED_OK, "cell_id": OTHER, "result": "43"},
    ("complete_other_cell", C): RODC,
    ("complete_other_cell", R): RODC,
    ("complete_other_cell", D): IST,
    ("complete_other_cell", V): IST,
    # fail and cancel: anything not yet completed; the cell is kept
    ("fail", P): {
        "state": D,
        "failed": True,
        "failure_reason": "no cell has room",
        "result": "",
        "first_completed_at": NOW,
    },
    ("fail", C): {
        "state": D,
        "failed": True,
        "failure_reason": "no cell has room",
        "result": "",
        "first_completed_at": NOW,
    },
    ("fail", R): {
        "state": D,
        "failed": True,
        "failure_reason": "no cell has room",
        "result": "",
        "first_completed_at": NOW,
    },
    ("fail", D): IST,
    ("fail", V): IST,
    ("cancel", P): {
        "state": D,
        "failed": True,
        "failure_reason": "cancelled",
        "result": "",
        "first_completed_at": NOW,
    },
    ("cancel", C): {
        "state": D,
        "failed": True,
        "failure_reason": "cancelled",
        "result": "",
        "first_completed_at": NOW,
    },
    ("cancel", R): {
        "state": D,
        "failed": True,
        "failure_reason": "cancelled",
        "result": "",
        "first_completed_at": NOW,
    },
    ("cancel", D): IST,
    ("cancel", V): IST,
    # resolving: COMPLETED only; the completion is kept
    ("resolving", P): IST,
    ("resolving", C): IST,
    ("resolving", R): IST,
    ("resolving", D): {"state": V},
    ("resolving", V): IST,
    # demote: RESOLVING only; first_completed_at is kept
    ("demote", P): IST,
    ("demote", C): IST,
    ("demote", R): IST,
    ("demote", D): IST,
    ("demote", V): {"state": D},
    # check_deletable: COMPLETED or RESOLVING
    ("check_deletable", P): IST,
    ("check_deletable", C): IST,
    ("check_deletable", R): IST,
    ("check_deletable", D): DELETABLE_OK,
    ("check_deletable", V): DELETABLE_OK,
}

CASES = [
    pytest.param(verb, state, EXPECTED[verb, state], id=f"{state.value}-{verb}")
    for verb in VERBS
    for state in STATES
]


def test_the_table_covers_every_verb_and_state() -> None:
    """The expectation table has one row for each lifecycle verb (variant) and state."""
    assert set(EXPECTED) == {(verb, state) for verb in VERBS for state in STATES}
    public = {"claim", "start", "complete", "fail", "cancel", "resolving", "demote"}
    covered = {verb.split("_")[0] for verb in VERBS}
    assert public | {"check"} == covered


@pytest.mark.parametrize(("verb", "state", "expected"), CASES)
def test_verb_from_state(verb: str, state: TaskState, expected: Any) -> None:
    """Each verb from each state either gives exactly the expected Task or the expected error."""
    before = task_in(state)
    if isinstance(expected, type) and issubclass(expected, Exception):
        with pytest.raises(expected) as caught:
            VERBS[verb](before)
        error = caught.value
        assert error.task_guid == before.task_guid
        if isinstance(error, InvalidStateTransition):
            assert error.before == state
            assert error.after == TARGET[verb]
        else:
            assert isinstance(error, RunningOnDifferentCell)
            assert (error.owner, error.caller) == (CELL, OTHER)
        return
    result = VERBS[verb](before)
    if expected == DELETABLE_OK:
        assert result is None
        return
    assert result == attrs.evolve(before, updated_at=NOW, **expected)
    assert result is not None
    assert result.created_at == CREATED
    assert lifecycle.can_transition(state, result.state)


ALLOWED = {(P, C), (P, R), (P, D), (C, R), (C, D), (R, D), (D, V), (V, D)}
"""The lifecycle's arrows, as the module docstring draws them."""


@pytest.mark.parametrize(
    ("before", "after"),
    [pytest.param(b, a, id=f"{b.value}-{a.value}") for b in STATES for a in STATES],
)
def test_can_transition(before: TaskState, after: TaskState) -> None:
    """can_transition allows exactly the drawn arrows, which are exactly the TRANSITIONS table."""
    allowed = (before, after) in ALLOWED
    assert lifecycle.can_transition(before, after) is allowed
    assert (after in lifecycle.TRANSITIONS[before]) is allowed


def test_transitions_table_has_every_state() -> None:
    """TRANSITIONS names every state as a source, and DELETABLE is COMPLETED and RESOLVING."""
    assert set(lifecycle.TRANSITIONS) == set(STATES)
    assert frozenset({D, V}) == lifecycle.DELETABLE


def test_check_deletable_with_narrower_allowed_states() -> None:
    """check_deletable refuses a state left out of the ``allowed`` set it is given."""
    lifecycle.check_deletable(task_in(V), frozenset({V}))
    with pytest.raises(InvalidStateTransition) as caught:
        lifecycle.check_deletable(task_in(D), frozenset({V}))
    assert caught.value.after is None
    assert "cannot be removed" in caught.value.message


def test_first_completed_at_is_kept_through_demote_and_resolve_cycles() -> None:
    """first_completed_at is set on the first completion and kept when demoted and resolved."""
    task = Task.new(REQUEST, 10)
    task = lifecycle.claim(task, CELL, 20)
    task = lifecycle.start(task, CELL, 30)
    task = lifecycle.complete(task, CELL, False, "", "ok", 40)
    assert (task.state, task.first_completed_at, task.updated_at) == (D, 40, 40)
    for now in (50, 60, 70, 80):
        task = lifecycle.resolving(task, now)
        assert (task.state, task.first_completed_at, task.updated_at) == (V, 40, now)
        task = lifecycle.demote(task, now + 1)
        assert (task.state, task.first_completed_at, task.updated_at) == (D, 40, now + 1)
    assert task.created_at == 10
    assert (task.cell_id, task.failed, task.result) == (CELL, False, "ok")


def test_fail_clears_a_result_already_recorded() -> None:
    """Failing a Task drops any result it carried: a failed Task has no result."""
    running = attrs.evolve(task_in(R), result="half written")
    failed = lifecycle.fail(running, "cell vanished", NOW)
    assert (failed.failed, failed.failure_reason, failed.result) == (True, "cell vanished", "")


def test_new_task_is_pending_at_now() -> None:
    """Task.new makes a PENDING Task created and updated at the time given, never completed."""
    task = Task.new(REQUEST, 1234)
    assert task.state is P
    assert (task.created_at, task.updated_at, task.first_completed_at) == (1234, 1234, 0)
    assert (task.cell_id, task.failed, task.failure_reason, task.result) == ("", False, "", "")
    assert task.request() == REQUEST


@pytest.mark.parametrize("state", STATES, ids=[s.value for s in STATES])
@pytest.mark.parametrize("verb", list(VERBS))
def test_same_inputs_give_the_same_output(verb: str, state: TaskState) -> None:
    """A verb is a function of its arguments: calling it twice gives equal results or errors."""

    def outcome() -> Any:
        try:
            return VERBS[verb](task_in(state))
        except (InvalidStateTransition, RunningOnDifferentCell) as error:
            return type(error), str(error)

    assert outcome() == outcome()


def test_time_is_only_what_is_passed_in(monkeypatch: pytest.MonkeyPatch) -> None:
    """The verbs never read a clock: with the clock broken they still work, stamping ``now``."""

    def no_clock() -> float:
        raise AssertionError("the lifecycle read the clock")

    for name in ("time", "time_ns", "monotonic", "monotonic_ns", "perf_counter"):
        monkeypatch.setattr(time, name, no_clock)
    task = Task.new(REQUEST, 1)
    task = lifecycle.claim(task, CELL, 2)
    task = lifecycle.start(task, CELL, 3)
    task = lifecycle.complete(task, CELL, True, "boom", "", 4)
    task = lifecycle.resolving(task, 5)
    task = lifecycle.demote(task, 6)
    lifecycle.check_deletable(task)
    assert (task.created_at, task.first_completed_at, task.updated_at) == (1, 4, 6)
    cancelled = lifecycle.cancel(Task.new(REQUEST, 7), 8)
    assert (cancelled.updated_at, cancelled.first_completed_at) == (8, 8)


@pytest.mark.parametrize("verb", [v for v in VERBS if v != "check_deletable"])
def test_a_different_now_changes_only_the_timestamps(verb: str) -> None:
    """Calling a verb at another time changes only updated_at and first_completed_at."""
    for state in STATES:
        if not isinstance(EXPECTED[verb, state], dict):
            continue
        at_now = VERBS[verb](task_in(state))
        later = _at(verb, task_in(state), NOW + 500)
        assert at_now is not None
        assert later is not None
        assert later.updated_at == NOW + 500
        ignore = {"updated_at": 0, "first_completed_at": 0}
        assert attrs.evolve(later, **ignore) == attrs.evolve(at_now, **ignore)


def _at(verb: str, task: Task, now: int) -> Task:
    """``verb`` applied to ``task`` with the same arguments as VERBS but at ``now``."""
    calls: dict[str, Callable[[], Task]] = {
        "claim": lambda: lifecycle.claim(task, CELL, now),
        "claim_other_cell": lambda: lifecycle.claim(task, OTHER, now),
        "start": lambda: lifecycle.start(task, CELL, now),
        "start_other_cell": lambda: lifecycle.start(task, OTHER, now),
        "complete_ok": lambda: lifecycle.complete(task, CELL, False, "ignored", "42", now),
        "complete_failed": lambda: lifecycle.complete(
            task, CELL, True, "exit status 1", "partial", now
        ),
        "complete_other_cell": lambda: lifecycle.complete(task, OTHER, False, "", "43", now),
        "fail": lambda: lifecycle.fail(task, "no cell has room", now),
        "cancel": lambda: lifecycle.cancel(task, now),
        "resolving": lambda: lifecycle.resolving(task, now),
        "demote": lambda: lifecycle.demote(task, now),
    }
    return calls[verb]()


STEP_NAMES = [v for v in VERBS if v != "check_deletable"]


@settings(max_examples=200, deadline=None, database=None)
@given(st.lists(st.sampled_from(STEP_NAMES), max_size=12))
def test_any_sequence_of_verbs_keeps_the_invariants(steps: list[str]) -> None:
    """Whatever verbs are applied, each accepted one follows an arrow and stamps its time."""
    task = Task.new(REQUEST, 1)
    first_completed = 0
    for i, verb in enumerate(steps, start=2):
        try:
            after = _at(verb, task, i)
        except (InvalidStateTransition, RunningOnDifferentCell):
            continue
        assert lifecycle.can_transition(task.state, after.state)
        assert after.updated_at == i
        assert after.created_at == 1
        if after.state is D and not first_completed:
            first_completed = i
        assert after.first_completed_at == first_completed
        if after.failed:
            assert after.result == ""
        else:
            assert after.failure_reason == ""
        task = after
