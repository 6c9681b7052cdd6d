"""LRP events: the pure calculators, the bodies, and the domain of every event."""

from __future__ import annotations

import typing

import attrs
import pytest

from diego.models import events, lrp_lifecycle
from diego.models.actions import RunAction
from diego.models.codec import encode
from diego.models.events import (
    EVENT_TYPES,
    ActualLRPChanged,
    ActualLRPCrashed,
    ActualLRPCreated,
    ActualLRPRemoved,
    DesiredLRPChanged,
    DesiredLRPCreated,
    DesiredLRPRemoved,
    Event,
    TaskChanged,
    TaskCreated,
    TaskRemoved,
    actual_lrp_events,
    desired_lrp_events,
    event_domain,
)
from diego.models.lrp import ActualLRP, ActualLRPState, DesiredLRP, DesiredLRPUpdate
from diego.models.task import Task, TaskCreateRequest

U, C, R, X = (
    ActualLRPState.UNCLAIMED,
    ActualLRPState.CLAIMED,
    ActualLRPState.RUNNING,
    ActualLRPState.CRASHED,
)
MINUTE = 60 * 1_000_000_000

DESIRED = DesiredLRP(
    process_guid="pg", domain="apps", stack="linux", action=RunAction(path="/bin/true")
)
UNCLAIMED = lrp_lifecycle.new_unclaimed("pg", 0, "apps", 1)
RUNNING = lrp_lifecycle.new_running("pg", 0, "apps", "ig", "cell", 2)
TASK = Task.new(
    TaskCreateRequest(
        task_guid="t", domain="jobs", stack="linux", action=RunAction(path="/bin/true")
    ),
    1,
)


def test_desired_lrp_events() -> None:
    """Created, changed (any difference) and removed; nothing when nothing changed."""
    after = lrp_lifecycle.update_desired(DESIRED, DesiredLRPUpdate(instances=3), 5)
    assert desired_lrp_events(None, DESIRED) == [DesiredLRPCreated(DESIRED)]
    assert desired_lrp_events(DESIRED, after) == [DesiredLRPChanged(DESIRED, after)]
    assert desired_lrp_events(DESIRED, None) == [DesiredLRPRemoved(DESIRED)]
    assert desired_lrp_events(DESIRED, attrs.evolve(DESIRED)) == []
    assert desired_lrp_events(None, None) == []


def test_actual_lrp_events_without_crashes() -> None:
    """Created, changed and removed, one event each; nothing for a no-op."""
    claimed = lrp_lifecycle.claim(UNCLAIMED, "ig", "cell", 3)
    assert actual_lrp_events(None, UNCLAIMED) == [ActualLRPCreated(UNCLAIMED)]
    assert actual_lrp_events(UNCLAIMED, claimed) == [ActualLRPChanged(UNCLAIMED, claimed)]
    assert actual_lrp_events(claimed, None) == [ActualLRPRemoved(claimed)]
    assert actual_lrp_events(claimed, lrp_lifecycle.claim(claimed, "ig", "cell", 4)) == []
    assert actual_lrp_events(None, None) == []


@pytest.mark.parametrize(
    ("before", "now", "state", "count"),
    [
        pytest.param(RUNNING, 3, U, 1, id="first-crash-restarts-at-once"),
        pytest.param(attrs.evolve(RUNNING, crash_count=2), 3, X, 3, id="third-crash-crashed"),
        pytest.param(
            attrs.evolve(RUNNING, crash_count=4, last_crashed_at=1),
            2 + 10 * MINUTE,
            U,
            1,
            id="count-reset-after-a-long-run",
        ),
    ],
)
def test_a_crash_is_a_change_then_a_crashed_event(
    before: ActualLRP, now: int, state: ActualLRPState, count: int
) -> None:
    """A crash gives ActualLRPChanged then ActualLRPCrashed, even when the count was reset."""
    after = lrp_lifecycle.crash(before, "ig", "cell", "oom", now)
    assert (after.state, after.crash_count) == (state, count)
    assert actual_lrp_events(before, after) == [
        ActualLRPChanged(before, after),
        ActualLRPCrashed(after),
    ]


def test_changes_that_are_no_crash_give_no_crashed_event() -> None:
    """Restarting a CRASHED instance, starting, unclaiming and failing placement are no crash."""
    crashed = attrs.evolve(UNCLAIMED, state=X, crash_count=3, last_crashed_at=1)
    for before, after in [
        (crashed, lrp_lifecycle.restart(crashed, 5)),
        (crashed, lrp_lifecycle.start(crashed, "ig", "cell", 5)),
        (RUNNING, lrp_lifecycle.unclaim(RUNNING, 5)),
        (UNCLAIMED, lrp_lifecycle.fail_placement(UNCLAIMED, "full", 5)),
    ]:
        assert actual_lrp_events(before, after) == [ActualLRPChanged(before, after)]


def test_entering_crashed_or_a_higher_count_is_a_crash() -> None:
    """Either a move into CRASHED or a raised crash count alone makes a crashed event."""
    into = attrs.evolve(RUNNING, state=X, instance_guid="", cell_id="")
    counted = attrs.evolve(RUNNING, crash_count=1)
    assert events.crashed(RUNNING, into)
    assert events.crashed(RUNNING, counted)
    assert not events.crashed(into, attrs.evolve(into, since=9))


def test_event_bodies_and_types() -> None:
    """Bodies carry the encoded models (and the crash's count and reason); types are stable."""
    crashed = lrp_lifecycle.crash(RUNNING, "ig", "cell", "oom", 3)
    assert DesiredLRPCreated(DESIRED).data() == {"desired_lrp": encode(DESIRED)}
    assert DesiredLRPRemoved(DESIRED).data() == {"desired_lrp": encode(DESIRED)}
    assert DesiredLRPChanged(DESIRED, DESIRED).data() == {
        "before": encode(DESIRED),
        "after": encode(DESIRED),
    }
    assert ActualLRPCreated(RUNNING).data() == {"actual_lrp": encode(RUNNING)}
    assert ActualLRPRemoved(RUNNING).data() == {"actual_lrp": encode(RUNNING)}
    assert ActualLRPChanged(RUNNING, crashed).data() == {
        "before": encode(RUNNING),
        "after": encode(crashed),
    }
    assert ActualLRPCrashed(crashed).data() == {
        "actual_lrp": encode(crashed),
        "crash_count": 1,
        "crash_reason": "oom",
    }
    assert encode(crashed)["state"] == "UNCLAIMED"
    lrp_types = [
        DesiredLRPCreated.TYPE,
        DesiredLRPChanged.TYPE,
        DesiredLRPRemoved.TYPE,
        ActualLRPCreated.TYPE,
        ActualLRPChanged.TYPE,
        ActualLRPRemoved.TYPE,
        ActualLRPCrashed.TYPE,
    ]
    assert lrp_types == [
        "desired_lrp_created",
        "desired_lrp_changed",
        "desired_lrp_removed",
        "actual_lrp_created",
        "actual_lrp_changed",
        "actual_lrp_removed",
        "actual_lrp_crashed",
    ]


def test_every_event_class_is_in_the_union_and_event_types() -> None:
    """The Event union and EVENT_TYPES name the same ten event classes, once each."""
    classes = typing.get_args(Event)
    assert len(classes) == 10
    assert sorted(cls.TYPE for cls in classes) == sorted(EVENT_TYPES)
    assert len(set(EVENT_TYPES)) == len(EVENT_TYPES)


def test_event_domain_of_every_event() -> None:
    """event_domain gives the domain of the Task, DesiredLRP or ActualLRP of each event."""
    other = attrs.evolve(RUNNING, domain="elsewhere")
    cases: list[tuple[Event, str]] = [
        (TaskCreated(TASK), "jobs"),
        (TaskChanged(TASK, TASK), "jobs"),
        (TaskRemoved(TASK), "jobs"),
        (DesiredLRPCreated(DESIRED), "apps"),
        (DesiredLRPChanged(DESIRED, DESIRED), "apps"),
        (DesiredLRPRemoved(DESIRED), "apps"),
        (ActualLRPCreated(RUNNING), "apps"),
        (ActualLRPChanged(RUNNING, other), "elsewhere"),
        (ActualLRPRemoved(RUNNING), "apps"),
        (ActualLRPCrashed(RUNNING), "apps"),
    ]
    assert {type(event) for event, _ in cases} == set(typing.get_args(Event))
    assert [event_domain(event) for event, _ in cases] == [domain for _, domain in cases]
