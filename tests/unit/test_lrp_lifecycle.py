"""The ActualLRP lifecycle: every verb from every state, crash counting, and purity.

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

from diego.models import lrp_lifecycle
from diego.models.actions import RunAction
from diego.models.errors import ActualLRPOnDifferentCell, InvalidActualLRPTransition
from diego.models.lrp import ActualLRP, ActualLRPState, DesiredLRP, DesiredLRPUpdate

U, C, R, X = (
    ActualLRPState.UNCLAIMED,
    ActualLRPState.CLAIMED,
    ActualLRPState.RUNNING,
    ActualLRPState.CRASHED,
)
STATES = (U, C, R, X)

MINUTE = 60 * 1_000_000_000
EARLIER = 1_000
SINCE = 2_000
NOW = SINCE + MINUTE  # well within the 5 minutes after which a crash count resets
IG, CELL = "ig-1", "cell-a"
IG2, OTHER = "ig-2", "cell-b"


def actual_in(state: ActualLRPState) -> ActualLRP:
    """A plausible ActualLRP in ``state`` that crashed once before; held by (IG, CELL)
    when CLAIMED or RUNNING, carrying an old placement error when UNCLAIMED."""
    base = ActualLRP(
        process_guid="pg",
        index=0,
        domain="d",
        state=state,
        crash_count=1,
        crash_reason="earlier",
        last_crashed_at=EARLIER,
        since=SINCE,
    )
    if state is U:
        return attrs.evolve(base, placement_error="no room")
    if state in (C, R):
        return attrs.evolve(base, instance_guid=IG, cell_id=CELL)
    return attrs.evolve(base, crash_count=3)


def _evacuate(actual: ActualLRP, instance_guid: str, cell_id: str, now: int) -> ActualLRP:
    """evacuate's instance after, having checked its copy is the instance set aside."""
    copy, after = lrp_lifecycle.evacuate(actual, instance_guid, cell_id, now)
    assert copy == attrs.evolve(actual, evacuating=True)
    return after


def verbs(now: int) -> dict[str, Callable[[ActualLRP], ActualLRP]]:
    """Each lifecycle verb at ``now``, with fixed arguments (some from another instance)."""
    return {
        "claim": lambda a: lrp_lifecycle.claim(a, IG, CELL, now),
        "claim_other": lambda a: lrp_lifecycle.claim(a, IG2, OTHER, now),
        "start": lambda a: lrp_lifecycle.start(a, IG, CELL, now),
        "start_other": lambda a: lrp_lifecycle.start(a, IG2, OTHER, now),
        "crash": lambda a: lrp_lifecycle.crash(a, IG, CELL, "oom", now),
        "crash_other": lambda a: lrp_lifecycle.crash(a, IG2, OTHER, "oom", now),
        "unclaim": lambda a: lrp_lifecycle.unclaim(a, now),
        "restart": lambda a: lrp_lifecycle.restart(a, now),
        "fail_placement": lambda a: lrp_lifecycle.fail_placement(a, "no cell fits", now),
        "evacuate": lambda a: _evacuate(a, IG, CELL, now),
        "evacuate_other": lambda a: _evacuate(a, IG2, OTHER, now),
    }


VERBS = verbs(NOW)

TARGET: dict[str, ActualLRPState] = {
    "claim": C,
    "claim_other": C,
    "start": R,
    "start_other": R,
    "crash": X,
    "crash_other": X,
    "unclaim": U,
    "restart": U,
    "fail_placement": U,
    "evacuate": U,
    "evacuate_other": U,
}
"""The state each verb aims at, as InvalidActualLRPTransition reports it."""

IAT = InvalidActualLRPTransition
ODC = ActualLRPOnDifferentCell
NOOP = "no-op"
"""The verb returned the ActualLRP unchanged (not even ``since``)."""

CLAIMED_BY = {"state": C, "instance_guid": IG, "cell_id": CELL, "placement_error": ""}
CLAIMED_BY_OTHER = {"state": C, "instance_guid": IG2, "cell_id": OTHER, "placement_error": ""}
RUNNING_ON = {"state": R, "instance_guid": IG, "cell_id": CELL, "placement_error": ""}
RUNNING_ON_OTHER = {"state": R, "instance_guid": IG2, "cell_id": OTHER, "placement_error": ""}
OFF_ITS_CELL = {"state": U, "instance_guid": "", "cell_id": ""}
# Crash number 2 (the fixture crashed once): below 3, so restarted at once.
CRASHED_ONCE_MORE = {
    "state": U,
    "instance_guid": "",
    "cell_id": "",
    "crash_count": 2,
    "crash_reason": "oom",
    "last_crashed_at": NOW,
}

EXPECTED: dict[tuple[str, ActualLRPState], Any] = {
    # claim: UNCLAIMED only; the same instance again is a no-op
    ("claim", U): CLAIMED_BY,
    ("claim", C): NOOP,
    ("claim", R): IAT,
    ("claim", X): IAT,
    ("claim_other", U): CLAIMED_BY_OTHER,
    ("claim_other", C): ODC,
    ("claim_other", R): IAT,
    ("claim_other", X): IAT,
    # start: anything but RUNNING elsewhere; CLAIMED by another is taken over
    ("start", U): RUNNING_ON,
    ("start", C): RUNNING_ON,
    ("start", R): NOOP,
    ("start", X): RUNNING_ON,
    ("start_other", U): RUNNING_ON_OTHER,
    ("start_other", C): RUNNING_ON_OTHER,
    ("start_other", R): ODC,
    ("start_other", X): RUNNING_ON_OTHER,
    # crash: CLAIMED or RUNNING, by the instance that holds it
    ("crash", U): IAT,
    ("crash", C): CRASHED_ONCE_MORE,
    ("crash", R): CRASHED_ONCE_MORE,
    ("crash", X): IAT,
    ("crash_other", U): IAT,
    ("crash_other", C): ODC,
    ("crash_other", R): ODC,
    ("crash_other", X): IAT,
    # unclaim: CLAIMED or RUNNING, whoever holds it; the crash count is kept
    ("unclaim", U): IAT,
    ("unclaim", C): OFF_ITS_CELL,
    ("unclaim", R): OFF_ITS_CELL,
    ("unclaim", X): IAT,
    # restart: CRASHED only; crash count, reason and time are kept
    ("restart", U): IAT,
    ("restart", C): IAT,
    ("restart", R): IAT,
    ("restart", X): {"state": U},
    # fail_placement: UNCLAIMED only; the new error replaces the old
    ("fail_placement", U): {"placement_error": "no cell fits"},
    ("fail_placement", C): IAT,
    ("fail_placement", R): IAT,
    ("fail_placement", X): IAT,
    # evacuate: RUNNING, by the instance that runs it
    ("evacuate", U): IAT,
    ("evacuate", C): IAT,
    ("evacuate", R): OFF_ITS_CELL,
    ("evacuate", X): IAT,
    ("evacuate_other", U): IAT,
    ("evacuate_other", C): IAT,
    ("evacuate_other", R): ODC,
    ("evacuate_other", X): IAT,
}

CASES = [
    pytest.param(verb, state, EXPECTED[verb, state], id=f"{state.value}-{verb}")
    for verb in VERBS
    for state in STATES
]


def test_the_table_covers_every_verb_and_state() -> None:
    """The expectation table has one row for each verb (variant) and state."""
    assert set(EXPECTED) == {(verb, state) for verb in VERBS for state in STATES}
    public = {"claim", "start", "crash", "unclaim", "restart", "fail_placement", "evacuate"}
    assert {verb.removesuffix("_other") for verb in VERBS} == public


@pytest.mark.parametrize(("verb", "state", "expected"), CASES)
def test_verb_from_state(verb: str, state: ActualLRPState, expected: Any) -> None:
    """Each verb from each state gives exactly the expected ActualLRP, itself, or the error."""
    before = actual_in(state)
    if isinstance(expected, type) and issubclass(expected, Exception):
        with pytest.raises(expected) as caught:
            VERBS[verb](before)
        error = caught.value
        assert (error.process_guid, error.index) == ("pg", 0)
        if isinstance(error, InvalidActualLRPTransition):
            assert (error.before, error.after) == (state, TARGET[verb])
        else:
            assert isinstance(error, ActualLRPOnDifferentCell)
            assert (error.owner_instance_guid, error.owner_cell_id) == (IG, CELL)
            assert (error.caller_instance_guid, error.caller_cell_id) == (IG2, OTHER)
        return
    after = VERBS[verb](before)
    if expected == NOOP:
        assert after == before
        return
    assert after == attrs.evolve(before, since=NOW, **expected)
    assert lrp_lifecycle.can_transition(state, after.state)


ALLOWED = {(U, U), (U, C), (U, R), (C, U), (C, R), (C, X), (R, U), (R, X), (X, U), (X, R)}
"""The lifecycle's arrows, as the module docstring draws them (U → U: fail_placement)."""


@pytest.mark.parametrize(
    ("before", "after"),
    [pytest.param(b, a, id=f"{b.value}-{a.value}") for b in STATES for a in STATES],
)
def test_can_transition(before: ActualLRPState, after: ActualLRPState) -> None:
    """can_transition allows exactly the drawn arrows, which are exactly the TRANSITIONS table."""
    allowed = (before, after) in ALLOWED
    assert lrp_lifecycle.can_transition(before, after) is allowed
    assert (after in lrp_lifecycle.TRANSITIONS[before]) is allowed
    assert set(lrp_lifecycle.TRANSITIONS) == set(STATES)


def test_immediate_restarts_count_the_new_crash_count() -> None:
    """With the default 3, crashes 1 and 2 go back to UNCLAIMED and crash 3 on to CRASHED.

    Diego's BBS raises the count first and then asks ShouldRestart(count < 3), so the
    third crash is the first one to wait for the converger's backoff.
    """
    actual = lrp_lifecycle.new_unclaimed("pg", 0, "d", 0)
    outcomes = []
    for crash in range(1, 6):
        now = crash * 10
        if actual.state is X:
            actual = lrp_lifecycle.restart(actual, now)
        actual = lrp_lifecycle.claim(actual, IG, CELL, now + 1)
        actual = lrp_lifecycle.start(actual, IG, CELL, now + 2)
        actual = lrp_lifecycle.crash(actual, IG, CELL, f"crash {crash}", now + 3)
        outcomes.append((actual.crash_count, actual.state, actual.last_crashed_at))
    assert outcomes == [(1, U, 13), (2, U, 23), (3, X, 33), (4, X, 43), (5, X, 53)]
    assert actual.crash_reason == "crash 5"


@pytest.mark.parametrize(
    ("immediate_restarts", "count_before", "state_after"),
    [
        (3, 0, U),
        (3, 1, U),
        (3, 2, X),
        (1, 0, X),
        (0, 0, X),
        (5, 3, U),
        (5, 4, X),
    ],
)
def test_immediate_restarts_parameter(
    immediate_restarts: int, count_before: int, state_after: ActualLRPState
) -> None:
    """A crash is restarted at once exactly when its new count is below immediate_restarts."""
    running = attrs.evolve(actual_in(R), crash_count=count_before)
    after = lrp_lifecycle.crash(
        running, IG, CELL, "oom", NOW, immediate_restarts=immediate_restarts
    )
    assert (after.crash_count, after.state) == (count_before + 1, state_after)


@pytest.mark.parametrize(
    ("state", "ran_for", "count_after"),
    [
        pytest.param(R, 5 * MINUTE, 1, id="running-exactly-5min-resets"),
        pytest.param(R, 60 * MINUTE, 1, id="running-an-hour-resets"),
        pytest.param(R, 5 * MINUTE - 1, 8, id="running-just-under-5min-counts-on"),
        pytest.param(C, 60 * MINUTE, 8, id="claimed-an-hour-counts-on"),
    ],
)
def test_crash_count_resets_after_five_minutes_running(
    state: ActualLRPState, ran_for: int, count_after: int
) -> None:
    """A crash after >= 5 minutes RUNNING counts as crash 1; CLAIMED time never resets."""
    before = attrs.evolve(actual_in(state), crash_count=7, since=SINCE)
    after = lrp_lifecycle.crash(before, IG, CELL, "oom", SINCE + ran_for)
    assert after.crash_count == count_after
    assert after.state is (U if count_after < 3 else X)
    assert (after.last_crashed_at, after.since) == (SINCE + ran_for, SINCE + ran_for)


def test_reset_after_ns_parameter() -> None:
    """reset_after_ns sets how long a RUNNING instance must have run for its count to reset."""
    before = attrs.evolve(actual_in(R), crash_count=4)
    kept = lrp_lifecycle.crash(before, IG, CELL, "x", SINCE + 99, reset_after_ns=100)
    reset = lrp_lifecycle.crash(before, IG, CELL, "x", SINCE + 100, reset_after_ns=100)
    assert (kept.crash_count, reset.crash_count) == (5, 1)


def test_since_moves_with_every_change_and_never_with_a_no_op() -> None:
    """Every transition stamps since with now; a repeated claim or start leaves since alone."""
    actual = lrp_lifecycle.new_unclaimed("pg", 0, "d", 10)
    assert actual.since == 10
    actual = lrp_lifecycle.fail_placement(actual, "full", 20)
    assert actual.since == 20
    actual = lrp_lifecycle.claim(actual, IG, CELL, 30)
    assert lrp_lifecycle.claim(actual, IG, CELL, 35) is actual
    actual = lrp_lifecycle.start(actual, IG, CELL, 40)
    assert lrp_lifecycle.start(actual, IG, CELL, 45) is actual
    actual = lrp_lifecycle.unclaim(actual, 50)
    assert (actual.state, actual.since) == (U, 50)


def test_placement_error_is_set_by_failing_and_cleared_by_claim_or_start() -> None:
    """fail_placement records why; a successful claim or start clears it; restart keeps none."""
    failed = lrp_lifecycle.fail_placement(lrp_lifecycle.new_unclaimed("pg", 0, "d", 1), "a", 2)
    failed = lrp_lifecycle.fail_placement(failed, "b", 3)
    assert (failed.state, failed.placement_error) == (U, "b")
    assert lrp_lifecycle.claim(failed, IG, CELL, 4).placement_error == ""
    assert lrp_lifecycle.start(failed, IG, CELL, 4).placement_error == ""


def test_crash_keeps_nothing_of_the_instance() -> None:
    """A crash clears instance_guid and cell_id whether it restarts at once or stays CRASHED."""
    for count in (0, 5):
        after = lrp_lifecycle.crash(attrs.evolve(actual_in(C), crash_count=count), IG, CELL, "", 9)
        assert (after.instance_guid, after.cell_id) == ("", "")


def test_evacuating_copies_take_no_verb() -> None:
    """An evacuating copy (always RUNNING) is only ever removed: every verb refuses it."""
    copy = attrs.evolve(actual_in(R), evacuating=True)
    for verb in VERBS.values():
        with pytest.raises(InvalidActualLRPTransition):
            verb(copy)


def test_check_removable() -> None:
    """Any state may be removed; a given instance_guid must be the holder's."""
    for state in STATES:
        lrp_lifecycle.check_removable(actual_in(state), None)
    lrp_lifecycle.check_removable(actual_in(R), IG)
    with pytest.raises(ActualLRPOnDifferentCell) as caught:
        lrp_lifecycle.check_removable(actual_in(R), IG2)
    assert (caught.value.caller_instance_guid, caught.value.caller_cell_id) == (IG2, None)
    with pytest.raises(ActualLRPOnDifferentCell):
        lrp_lifecycle.check_removable(actual_in(U), IG)


def test_new_actual_lrps() -> None:
    """new_unclaimed and new_running make fresh ActualLRPs since now, never crashed."""
    unclaimed = lrp_lifecycle.new_unclaimed("pg", 3, "d", 7)
    assert unclaimed == ActualLRP(process_guid="pg", index=3, domain="d", since=7)
    running = lrp_lifecycle.new_running("pg", 3, "d", IG, CELL, 8)
    assert running == attrs.evolve(unclaimed, state=R, instance_guid=IG, cell_id=CELL, since=8)


DESIRED = DesiredLRP(
    process_guid="pg",
    domain="d",
    stack="linux",
    action=RunAction(path="/bin/true"),
    instances=2,
    routes={"http": ["a.example"]},
    annotation="old",
    created_at=1,
    updated_at=1,
)


@pytest.mark.parametrize(
    ("update", "changes"),
    [
        (DesiredLRPUpdate(), {}),
        (DesiredLRPUpdate(instances=0), {"instances": 0}),
        (DesiredLRPUpdate(routes={}), {"routes": {}}),
        (DesiredLRPUpdate(annotation=""), {"annotation": ""}),
        (
            DesiredLRPUpdate(instances=5, routes={"x": 1}, annotation="new"),
            {"instances": 5, "routes": {"x": 1}, "annotation": "new"},
        ),
    ],
)
def test_update_desired_applies_only_the_given_fields(
    update: DesiredLRPUpdate, changes: dict[str, Any]
) -> None:
    """update_desired changes the fields that are not None, and updated_at, nothing else."""
    assert lrp_lifecycle.update_desired(DESIRED, update, 9) == attrs.evolve(
        DESIRED, updated_at=9, **changes
    )


@pytest.mark.parametrize("state", STATES, ids=[s.value for s in STATES])
@pytest.mark.parametrize("verb", list(VERBS))
def test_same_inputs_give_the_same_output(verb: str, state: ActualLRPState) -> None:
    """A verb is a function of its arguments: calling it twice gives equal results or errors."""

    def outcome() -> Any:
        try:
            return VERBS[verb](actual_in(state))
        except (InvalidActualLRPTransition, ActualLRPOnDifferentCell) as error:
            return type(error), str(error)

    assert outcome() == outcome()


def test_time_is_only_what_is_passed_in(monkeypatch: pytest.MonkeyPatch) -> None:
    """The verbs never read a clock: with the clock broken they still work, stamping ``now``."""

    def no_clock() -> float:
        raise AssertionError("the lifecycle read the clock")

    for name in ("time", "time_ns", "monotonic", "monotonic_ns", "perf_counter"):
        monkeypatch.setattr(time, name, no_clock)
    actual = lrp_lifecycle.new_unclaimed("pg", 0, "d", 1)
    actual = lrp_lifecycle.fail_placement(actual, "full", 2)
    actual = lrp_lifecycle.claim(actual, IG, CELL, 3)
    actual = lrp_lifecycle.start(actual, IG, CELL, 4)
    actual = lrp_lifecycle.crash(actual, IG, CELL, "oom", 5, immediate_restarts=0)
    actual = lrp_lifecycle.restart(actual, 6)
    actual = lrp_lifecycle.start(actual, IG, CELL, 7)
    copy, actual = lrp_lifecycle.evacuate(actual, IG, CELL, 8)
    assert (copy.since, actual.since, actual.last_crashed_at) == (7, 8, 5)


# ---------------------------------------------------------------- properties

STEP = st.sampled_from(sorted(VERBS))


@settings(max_examples=300, deadline=None)
@given(steps=st.lists(st.tuples(STEP, st.integers(0, 10 * MINUTE)), max_size=30))
def test_any_sequence_of_verbs_keeps_the_invariants(steps: list[tuple[str, int]]) -> None:
    """Whatever verbs run, in any order: instance and cell are set exactly when CLAIMED or
    RUNNING, a placement error only while UNCLAIMED, and since never goes back."""
    actual = lrp_lifecycle.new_unclaimed("pg", 0, "d", 0)
    now = 0
    for verb, wait in steps:
        now += wait
        try:
            after = verbs(now)[verb](actual)
        except (InvalidActualLRPTransition, ActualLRPOnDifferentCell):
            continue
        assert after == actual or lrp_lifecycle.can_transition(actual.state, after.state)
        assert after.since >= actual.since
        assert after.crash_count >= actual.crash_count or after.crash_count == 1
        actual = after
        held = (actual.instance_guid, actual.cell_id) != ("", "")
        assert held is (actual.state in (C, R))
        assert held is (bool(actual.instance_guid) and bool(actual.cell_id))
        assert not actual.placement_error or actual.state is U
        assert not actual.evacuating
