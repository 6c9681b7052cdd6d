"""The store's verbs on many rows at once (the converger's), on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from diego.models import lifecycle, lrp_lifecycle
from diego.models.codec import decode
from diego.models.lrp import ActualLRPState, DesiredLRP
from diego.models.task import TaskCreateRequest, TaskState
from diego.models.work import TaskWork
from diego.scheduling.converger import PLACEMENT, _work
from diego.state.queries import Prepared
from diego.state.schema import tasks
from diego.state.store import BATCH, TASK_SUMMARY, Store

R = ActualLRPState.RUNNING
U = ActualLRPState.UNCLAIMED


def request(guid: str, **extra: object) -> TaskCreateRequest:
    """A valid TaskCreateRequest."""
    body = {"task_guid": guid, "domain": "d", "stack": "linux", "action": {"run": {"path": "/x"}}}
    return decode(TaskCreateRequest, {**body, **extra})


def desired(guid: str, instances: int = 2) -> DesiredLRP:
    """A valid DesiredLRP."""
    body = {
        "process_guid": guid,
        "domain": "apps",
        "stack": "linux",
        "instances": instances,
        "action": {"run": {"path": "/start"}},
    }
    return decode(DesiredLRP, body)


async def test_summaries_are_the_converger_columns(store: Store) -> None:
    """task_summaries and desired_lrp_summaries give the deciding columns of every row."""
    await store.desire_task(request("a", completion_callback_url="http://cb/a"), now=1)
    await store.desire_task(request("b"), now=2)
    await store.start_task("b", "cell-1", now=3)
    summaries = sorted(await store.task_summaries())
    assert summaries == [
        ("a", "PENDING", "", 1, 1, 0, "http://cb/a"),
        ("b", "RUNNING", "cell-1", 2, 3, 0, ""),
    ]
    assert TASK_SUMMARY[1] == "state"
    await store.desire_lrp(desired("p", 3), now=1)
    assert await store.desired_lrp_summaries() == [("p", "apps", 3)]


async def test_swap_tasks_applies_each_rule_and_skips_the_refused_and_missing(
    store: Store,
) -> None:
    """Each Task gets its own rule; one the rule refuses, or that is gone, is left out."""
    for guid in ("a", "b", "c"):
        await store.desire_task(request(guid), now=1)
    await store.start_task("b", "cell-1", now=2)
    _, completed = await store.complete_task("c", "", False, "", "ok", now=3)
    changes = await store.swap_tasks(
        {
            "a": lambda t: lifecycle.fail(t, "too old", 10),
            "b": lambda t: lifecycle.fail(t, "cell gone", 10),
            "c": lambda t: lifecycle.fail(t, "refused: completed already", 10),
            "gone": lambda t: lifecycle.fail(t, "never there", 10),
        }
    )
    assert sorted((b.task_guid, b.state, a.failure_reason) for b, a in changes) == [
        ("a", TaskState.PENDING, "too old"),
        ("b", TaskState.RUNNING, "cell gone"),
    ]
    for guid in ("a", "b"):
        stored = await store.get_task(guid)
        assert (stored.state, stored.failed, stored.updated_at) == (TaskState.COMPLETED, True, 10)
    assert await store.get_task("c") == completed
    # The versions moved on: the next single verb compares against the new one.
    await store.resolving_task("a", now=11)


async def test_swap_tasks_decides_again_when_a_row_moved_after_its_read(store: Store) -> None:
    """A Task changed between the batch's read and its write is read and decided anew."""
    await store.desire_task(request("a"), now=1)
    each = store._each

    async def start_first(statement: Prepared, params: Sequence[Mapping[str, Any]]) -> list[bool]:
        if params and not started:
            started.append(await store.start_task("a", "cell-1", now=5))
        return await each(statement, params)

    started: list[object] = []
    store._each = start_first  # type: ignore[method-assign]
    changes = await store.swap_tasks({"a": lambda t: lifecycle.fail(t, "gone", 10)})
    assert [(b.state, b.cell_id, a.state) for b, a in changes] == [
        (TaskState.RUNNING, "cell-1", TaskState.COMPLETED)
    ]


async def test_reads_and_verbs_span_batches(store: Store) -> None:
    """More guids than one batch holds are all read and all changed."""
    guids = [f"t{i:04d}" for i in range(BATCH + 7)]
    for guid in guids:
        await store.desire_task(request(guid), now=1)
    found = await store.tasks_by_guid([*guids, "missing"])
    assert sorted(t.task_guid for t in found) == guids
    changes = await store.swap_tasks({g: lambda t: lifecycle.fail(t, "x", 2) for g in guids})
    assert len(changes) == len(guids)
    removed = await store.delete_tasks(guids)
    assert sorted(t.task_guid for t in removed) == guids
    assert await store.tasks() == []


async def test_delete_tasks_removes_only_the_allowed_states(store: Store) -> None:
    """Only COMPLETED and RESOLVING Tasks (by default) are removed."""
    await store.desire_task(request("pending"), now=1)
    await store.desire_task(request("done"), now=1)
    await store.complete_task("done", "", True, "failed", "", now=2)
    removed = await store.delete_tasks(["pending", "done", "missing"])
    assert [t.task_guid for t in removed] == ["done"]
    assert [t.task_guid for t in await store.tasks()] == ["pending"]


async def test_actual_lrp_batches(store: Store) -> None:
    """Swap, remove and create ActualLRPs by (process guid, index), many at once."""
    await store.create_unclaimed_actual_lrp("p", 0, "apps", now=1)
    await store.create_unclaimed_actual_lrp("p", 1, "apps", now=1)
    await store.start_actual_lrp("p", 0, "apps", "ig-0", "cell-1", now=2)
    await store.start_actual_lrp("q", 0, "apps", "ig-q", "cell-1", now=2)
    await store.evacuate_actual_lrp("q", 0, "ig-q", "cell-1", now=3)

    changes = await store.swap_actual_lrps(
        {
            ("p", 0): lambda a: lrp_lifecycle.unclaim(a, 10),
            ("p", 1): lambda a: lrp_lifecycle.unclaim(a, 10),  # UNCLAIMED: refused or no-op
            ("p", 9): lambda a: lrp_lifecycle.unclaim(a, 10),  # none there
        }
    )
    by_key = {(b.process_guid, b.index): (b.state, a.state) for b, a in changes}
    assert by_key[("p", 0)] == (R, U)
    assert ("p", 9) not in by_key
    assert (await store.get_actual_lrp("p", 0)).state is U

    removed = await store.remove_actual_lrps([("q", 0), ("p", 5)], evacuating=True)
    assert [(a.process_guid, a.evacuating) for a in removed] == [("q", True)]
    assert (await store.get_actual_lrp("q", 0)).evacuating is False  # the instance stays

    created = await store.create_unclaimed_actual_lrps(
        [("p", 1, "apps"), ("p", 2, "apps"), ("r", 0, "other")], now=20
    )
    assert sorted((a.process_guid, a.index, a.domain) for a in created) == [
        ("p", 2, "apps"),
        ("r", 0, "other"),
    ]
    assert (await store.get_actual_lrp("p", 1)).since == 1  # the existing one untouched
    made = await store.get_actual_lrp("r", 0)
    assert (made.state, made.since) == (U, 20)


@pytest.mark.parametrize("evacuating", [False, True])
async def test_remove_actual_lrps_of_either_kind(store: Store, evacuating: bool) -> None:
    """Removing instances or evacuating copies touches only that kind."""
    await store.start_actual_lrp("p", 0, "apps", "ig-0", "cell-1", now=1)
    await store.evacuate_actual_lrp("p", 0, "ig-0", "cell-1", now=2)
    removed = await store.remove_actual_lrps([("p", 0)], evacuating=evacuating)
    assert [a.evacuating for a in removed] == [evacuating]
    left = await store.actual_lrps("p")
    assert [a.evacuating for a in left] == [not evacuating]


async def test_definition_fields_give_the_auction_what_from_task_gives(store: Store) -> None:
    """The converger hands the auction TaskWork built from definition_fields: the same
    as TaskWork.from_task of the whole Task, defaults for fields an old row lacks."""
    await store.desire_task(request("plain"), now=1)
    await store.desire_task(
        request(
            "placed",
            root_fs="docker:///library/alpine#3",
            memory_mb=512,
            disk_mb=2048,
            zones=["z1", "z2"],
        ),
        now=1,
    )
    old = '{"task_guid":"old","domain":"d","stack":"linux","action":{"run":{"path":"/x"}}}'
    await store._execute(
        tasks.insert().values(
            guid="old", domain="d", state="PENDING", created_at=1, updated_at=1, definition=old
        )
    )
    found = await store.definition_fields(["plain", "placed", "old", "missing"], PLACEMENT)
    works = {row[0]: _work(*row) for row in found}
    assert sorted(works) == ["old", "placed", "plain"]
    for guid, work in works.items():
        assert work == TaskWork.from_task(await store.get_task(guid))
    assert works["placed"].zones == frozenset({"z1", "z2"})
    one = await store.definition_fields(["placed"], ["memory_mb"])
    assert one == [("placed", "d", "PENDING", [512])]


async def test_swap_actual_lrps_starts_from_known_rows_and_rereads_stale_ones(
    store: Store,
) -> None:
    """Known instances are decided on as given; one whose row moved on since loses its
    write and is read and decided again."""
    await store.start_actual_lrp("p", 0, "apps", "ig-0", "cell-1", now=1)
    await store.start_actual_lrp("p", 1, "apps", "ig-1", "cell-1", now=1)
    await store.start_actual_lrp("p", 2, "apps", "ig-2", "cell-1", now=1)
    known = {(a.process_guid, a.index): (a, v) for a, v in await store.actual_lrps_versioned()}
    assert sorted(known) == [("p", 0), ("p", 1), ("p", 2)]
    # Indices 1 and 2 move on after they were read: their known versions are stale.
    await store.crash_actual_lrp("p", 1, "ig-1", "cell-1", "boom", now=2)
    await store.unclaim_actual_lrp("p", 2, now=3)
    unclaim = lambda a: lrp_lifecycle.unclaim(a, 10)  # noqa: E731
    changes = await store.swap_actual_lrps(
        {("p", 0): unclaim, ("p", 1): lambda a: a, ("p", 2): unclaim}, known
    )
    befores = {b.index: b.state for b, _ in changes}
    assert befores[0] is R
    assert befores[1] is U  # the crash (restarted at once) was read, not the known RUNNING
    assert befores.get(2) is not R  # the stale write lost; the row as it is was decided on
    assert (await store.get_actual_lrp("p", 0)).state is U
    assert (await store.get_actual_lrp("p", 2)).since == 3
