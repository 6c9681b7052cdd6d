"""The BBS store's LRP verbs against real SQLite files and a real PostgreSQL server."""

from __future__ import annotations

import asyncio
from typing import Any

import attrs
import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

from diego.bus import Bus
from diego.clock import FakeClock
from diego.models.codec import decode
from diego.models.errors import (
    ActualLRPAlreadyExists,
    ActualLRPNotFound,
    ActualLRPOnDifferentCell,
    DesiredLRPAlreadyExists,
    DesiredLRPNotFound,
    InvalidActualLRPTransition,
)
from diego.models.events import (
    ActualLRPChanged,
    ActualLRPCrashed,
    ActualLRPCreated,
    ActualLRPRemoved,
    DesiredLRPChanged,
    DesiredLRPCreated,
    DesiredLRPRemoved,
    Event,
)
from diego.models.lrp import ActualLRP, ActualLRPState, DesiredLRP, DesiredLRPUpdate, Domain
from diego.models.task import TaskState
from diego.state.bbs import BBS
from diego.state.store import Store, head_revision, upgrade

U, C, R, X = (
    ActualLRPState.UNCLAIMED,
    ActualLRPState.CLAIMED,
    ActualLRPState.RUNNING,
    ActualLRPState.CRASHED,
)
RACERS = 12
SECOND = 1_000_000_000
IG, CELL = "ig-1", "cell-a"
IG2, OTHER = "ig-2", "cell-b"


def desired(guid: str = "pg", domain: str = "apps", **extra: Any) -> DesiredLRP:
    """A valid DesiredLRP with most of its fields filled in."""
    body = {
        "process_guid": guid,
        "domain": domain,
        "stack": "linux",
        "instances": 2,
        "env": [{"name": "GREETING", "value": "hällo"}],
        "setup": {"download": {"from": "http://example.com/app.tgz", "to": "/app"}},
        "action": {"run": {"path": "/app/start", "args": ["--port", "8080"]}},
        "monitor": {"run": {"path": "/app/healthy"}},
        "ports": [8080],
        "routes": {"http": [{"hostnames": ["a.example.com"], "port": 8080}]},
        "annotation": "ä" * 50,
        "memory_mb": 256,
        "cpu_weight": 10,
        "security_group_rules": [
            {"protocol": "tcp", "destination": "10.0.0.0/8", "ports": [443]},
        ],
        **extra,
    }
    return decode(DesiredLRP, body)


# ---------------------------------------------------------------- desired LRPs


async def test_desired_lrp_reads_back_equal(store: Store) -> None:
    """A desired LRP is stored created and updated at now and reads back field for field."""
    made = await store.desire_lrp(desired(), now=10)
    assert (made.created_at, made.updated_at) == (10, 10)
    assert made == attrs.evolve(desired(), created_at=10, updated_at=10)
    assert await store.get_desired_lrp("pg") == made


async def test_duplicate_process_guid_is_refused(store: Store) -> None:
    """Desiring a process guid that exists raises DesiredLRPAlreadyExists and keeps the first."""
    first = await store.desire_lrp(desired(domain="one"), now=1)
    with pytest.raises(DesiredLRPAlreadyExists):
        await store.desire_lrp(desired(domain="two"), now=2)
    assert await store.get_desired_lrp("pg") == first


async def test_unknown_desired_lrp_is_not_found(store: Store) -> None:
    """Reading, updating or removing an unknown process guid raises DesiredLRPNotFound."""
    with pytest.raises(DesiredLRPNotFound):
        await store.get_desired_lrp("nope")
    with pytest.raises(DesiredLRPNotFound):
        await store.update_desired_lrp("nope", DesiredLRPUpdate(instances=1), now=1)
    with pytest.raises(DesiredLRPNotFound):
        await store.remove_desired_lrp("nope")


async def test_desired_lrps_are_listed_by_process_guid_and_domain(store: Store) -> None:
    """desired_lrps() lists by process guid, optionally of one domain."""
    for guid, domain in (("c", "x"), ("a", "y"), ("b", "x")):
        await store.desire_lrp(desired(guid, domain), now=1)
    assert [d.process_guid for d in await store.desired_lrps()] == ["a", "b", "c"]
    assert [d.process_guid for d in await store.desired_lrps(domain="x")] == ["b", "c"]
    assert await store.desired_lrps(domain="none") == []


async def test_update_changes_only_the_given_fields(store: Store) -> None:
    """An update applies its non-None fields and updated_at, returns (before, after), persists."""
    made = await store.desire_lrp(desired(), now=1)
    before, after = await store.update_desired_lrp("pg", DesiredLRPUpdate(instances=5), now=2)
    assert before == made
    assert after == attrs.evolve(made, instances=5, updated_at=2)
    _, after = await store.update_desired_lrp(
        "pg", DesiredLRPUpdate(routes={"tcp": []}, annotation="new"), now=3
    )
    assert after == attrs.evolve(
        made, instances=5, routes={"tcp": []}, annotation="new", updated_at=3
    )
    assert await store.get_desired_lrp("pg") == after


async def test_racing_updates_both_apply(store: Store) -> None:
    """Two updates of different fields racing: both land, neither overwrites the other."""
    await store.desire_lrp(desired(), now=1)
    await asyncio.gather(
        store.update_desired_lrp("pg", DesiredLRPUpdate(instances=7), now=2),
        store.update_desired_lrp("pg", DesiredLRPUpdate(annotation="both"), now=2),
    )
    stored = await store.get_desired_lrp("pg")
    assert (stored.instances, stored.annotation) == (7, "both")


async def test_removing_a_desired_lrp_keeps_its_actual_lrps(store: Store) -> None:
    """remove_desired_lrp returns the DesiredLRP; its ActualLRPs stay for the caller to stop."""
    made = await store.desire_lrp(desired(), now=1)
    actual = await store.create_unclaimed_actual_lrp("pg", 0, "apps", now=2)
    assert await store.remove_desired_lrp("pg") == made
    with pytest.raises(DesiredLRPNotFound):
        await store.get_desired_lrp("pg")
    assert await store.actual_lrps() == [actual]


# ---------------------------------------------------------------- actual LRPs


async def test_unclaimed_actual_lrp_is_created_once(store: Store) -> None:
    """create_unclaimed_actual_lrp stores an UNCLAIMED row since now; a second is refused."""
    made = await store.create_unclaimed_actual_lrp("pg", 0, "apps", now=5)
    assert made == ActualLRP(process_guid="pg", index=0, domain="apps", since=5)
    assert await store.get_actual_lrp("pg", 0) == made
    with pytest.raises(ActualLRPAlreadyExists):
        await store.create_unclaimed_actual_lrp("pg", 0, "apps", now=6)
    assert await store.get_actual_lrp("pg", 0) == made


async def test_unknown_actual_lrp_is_not_found(store: Store) -> None:
    """Every verb on an index with no ActualLRP raises ActualLRPNotFound (start creates one)."""
    with pytest.raises(ActualLRPNotFound):
        await store.get_actual_lrp("pg", 0)
    with pytest.raises(ActualLRPNotFound):
        await store.get_actual_lrp("pg", 0, evacuating=True)
    for verb in (
        store.claim_actual_lrp("pg", 0, IG, CELL, now=1),
        store.crash_actual_lrp("pg", 0, IG, CELL, "oom", now=1),
        store.unclaim_actual_lrp("pg", 0, now=1),
        store.restart_actual_lrp("pg", 0, now=1),
        store.fail_actual_lrp_placement("pg", 0, "full", now=1),
        store.remove_actual_lrp("pg", 0),
        store.evacuate_actual_lrp("pg", 0, IG, CELL, now=1),
        store.remove_evacuating_actual_lrp("pg", 0, IG),
    ):
        with pytest.raises(ActualLRPNotFound):
            await verb


async def test_verbs_return_before_and_after_and_persist(store: Store) -> None:
    """Each verb returns (before, after) and the store then holds after."""
    made = await store.create_unclaimed_actual_lrp("pg", 0, "apps", now=1)
    before, failed = await store.fail_actual_lrp_placement("pg", 0, "no room", now=2)
    assert (before, failed.placement_error, failed.since) == (made, "no room", 2)
    _, claimed = await store.claim_actual_lrp("pg", 0, IG, CELL, now=3)
    assert (claimed.state, claimed.instance_guid, claimed.cell_id) == (C, IG, CELL)
    assert claimed.placement_error == ""
    before, running = await store.start_actual_lrp("pg", 0, "apps", IG, CELL, now=4)
    assert (before, running.state, running.since) == (claimed, R, 4)
    _, crashed = await store.crash_actual_lrp("pg", 0, IG, CELL, "oom", now=5)
    assert (crashed.state, crashed.crash_count, crashed.crash_reason) == (U, 1, "oom")
    assert (crashed.last_crashed_at, crashed.instance_guid, crashed.cell_id) == (5, "", "")
    await store.claim_actual_lrp("pg", 0, IG, CELL, now=6)
    _, unclaimed = await store.unclaim_actual_lrp("pg", 0, now=7)
    assert (unclaimed.state, unclaimed.cell_id, unclaimed.crash_count) == (U, "", 1)
    assert await store.get_actual_lrp("pg", 0) == unclaimed
    removed = await store.remove_actual_lrp("pg", 0)
    assert removed == unclaimed
    assert await store.actual_lrps() == []


async def test_crashes_restart_at_once_twice_then_wait_for_restart(store: Store) -> None:
    """Crashes 1 and 2 leave the index UNCLAIMED, crash 3 CRASHED; restart keeps the count."""
    await store.create_unclaimed_actual_lrp("pg", 0, "apps", now=1)
    states = []
    for now in (10, 20, 30):
        await store.start_actual_lrp("pg", 0, "apps", IG, CELL, now=now)
        _, after = await store.crash_actual_lrp("pg", 0, IG, CELL, f"crash at {now}", now=now + 1)
        states.append((after.state, after.crash_count))
    assert states == [(U, 1), (U, 2), (X, 3)]
    with pytest.raises(InvalidActualLRPTransition):
        await store.claim_actual_lrp("pg", 0, IG, CELL, now=40)
    _, restarted = await store.restart_actual_lrp("pg", 0, now=41)
    assert (restarted.state, restarted.crash_count, restarted.last_crashed_at) == (U, 3, 31)


async def test_start_creates_a_missing_actual_lrp_running(store: Store) -> None:
    """Starting an index with no ActualLRP creates it RUNNING there; before is None."""
    before, after = await store.start_actual_lrp("pg", 3, "apps", IG, CELL, now=9)
    assert before is None
    assert after == ActualLRP(
        process_guid="pg",
        index=3,
        domain="apps",
        state=R,
        instance_guid=IG,
        cell_id=CELL,
        since=9,
    )
    assert await store.get_actual_lrp("pg", 3) == after


async def test_repeated_claim_and_start_are_no_ops(store: Store) -> None:
    """A repeated claim or start by the same instance returns before == after, writing nothing."""
    await store.create_unclaimed_actual_lrp("pg", 0, "apps", now=1)
    _, claimed = await store.claim_actual_lrp("pg", 0, IG, CELL, now=2)
    assert await store.claim_actual_lrp("pg", 0, IG, CELL, now=3) == (claimed, claimed)
    _, running = await store.start_actual_lrp("pg", 0, "apps", IG, CELL, now=4)
    assert await store.start_actual_lrp("pg", 0, "apps", IG, CELL, now=5) == (running, running)
    assert await store.get_actual_lrp("pg", 0) == running


async def test_refused_verbs_change_nothing(store: Store) -> None:
    """A verb the lifecycle refuses raises and leaves the stored ActualLRP as it was."""
    await store.create_unclaimed_actual_lrp("pg", 0, "apps", now=1)
    with pytest.raises(InvalidActualLRPTransition):
        await store.restart_actual_lrp("pg", 0, now=2)
    _, claimed = await store.claim_actual_lrp("pg", 0, IG, CELL, now=3)
    with pytest.raises(ActualLRPOnDifferentCell):
        await store.claim_actual_lrp("pg", 0, IG2, OTHER, now=4)
    with pytest.raises(ActualLRPOnDifferentCell):
        await store.crash_actual_lrp("pg", 0, IG2, OTHER, "oom", now=4)
    with pytest.raises(InvalidActualLRPTransition):
        await store.fail_actual_lrp_placement("pg", 0, "full", now=4)
    assert await store.get_actual_lrp("pg", 0) == claimed


async def test_racing_claims_have_exactly_one_winner(store: Store) -> None:
    """Many cells claiming one index at once: one wins, the rest hear it is elsewhere."""
    await store.create_unclaimed_actual_lrp("pg", 0, "apps", now=1)
    results = await asyncio.gather(
        *(store.claim_actual_lrp("pg", 0, f"ig-{i}", f"cell-{i}", now=2) for i in range(RACERS)),
        return_exceptions=True,
    )
    winners = [r for r in results if isinstance(r, tuple)]
    assert len(winners) == 1
    assert all(isinstance(r, ActualLRPOnDifferentCell) for r in results if r not in winners)
    stored = await store.get_actual_lrp("pg", 0)
    assert stored == winners[0][1]
    assert stored.state is C


async def test_two_cells_claiming_one_index_one_wins(store: Store) -> None:
    """Two cells racing a claim of one index: one holds it, the other is refused."""
    await store.create_unclaimed_actual_lrp("pg", 0, "apps", now=1)
    first, second = await asyncio.gather(
        store.claim_actual_lrp("pg", 0, IG, CELL, now=2),
        store.claim_actual_lrp("pg", 0, IG2, OTHER, now=2),
        return_exceptions=True,
    )
    outcomes = [r for r in (first, second) if isinstance(r, tuple)]
    refusals = [r for r in (first, second) if isinstance(r, ActualLRPOnDifferentCell)]
    assert (len(outcomes), len(refusals)) == (1, 1)
    assert await store.get_actual_lrp("pg", 0) == outcomes[0][1]


async def test_racing_starts_of_a_missing_index_create_it_once(store: Store) -> None:
    """Many cells reporting one missing index RUNNING at once: one creates it, the rest refused."""
    results = await asyncio.gather(
        *(
            store.start_actual_lrp("pg", 0, "apps", f"ig-{i}", f"cell-{i}", now=2)
            for i in range(RACERS)
        ),
        return_exceptions=True,
    )
    winners = [r for r in results if isinstance(r, tuple)]
    assert len(winners) == 1
    assert winners[0][0] is None
    assert all(isinstance(r, ActualLRPOnDifferentCell) for r in results if r not in winners)
    assert await store.actual_lrps() == [winners[0][1]]


async def test_compare_and_delete_checks_the_instance(store: Store) -> None:
    """Removing with a wrong instance_guid refuses and keeps the row; the right one removes it."""
    await store.create_unclaimed_actual_lrp("pg", 0, "apps", now=1)
    _, running = await store.start_actual_lrp("pg", 0, "apps", IG, CELL, now=2)
    with pytest.raises(ActualLRPOnDifferentCell):
        await store.remove_actual_lrp("pg", 0, instance_guid=IG2)
    assert await store.get_actual_lrp("pg", 0) == running
    assert await store.remove_actual_lrp("pg", 0, instance_guid=IG) == running
    with pytest.raises(ActualLRPNotFound):
        await store.get_actual_lrp("pg", 0)


async def test_racing_removes_remove_once(store: Store) -> None:
    """Two removes of one ActualLRP: one returns it, the other finds it gone."""
    await store.create_unclaimed_actual_lrp("pg", 0, "apps", now=1)
    results = await asyncio.gather(
        store.remove_actual_lrp("pg", 0), store.remove_actual_lrp("pg", 0), return_exceptions=True
    )
    assert sum(1 for r in results if isinstance(r, ActualLRP)) == 1
    assert sum(1 for r in results if isinstance(r, ActualLRPNotFound)) == 1


async def test_listing_filters_and_orders(store: Store) -> None:
    """actual_lrps() orders by (process_guid, index, evacuating) and filters by each key."""
    await store.start_actual_lrp("b", 1, "y", "ig-b1", CELL, now=1)
    await store.create_unclaimed_actual_lrp("a", 1, "x", now=1)
    await store.start_actual_lrp("a", 0, "x", "ig-a0", CELL, now=1)
    await store.start_actual_lrp("b", 0, "y", "ig-b0", OTHER, now=1)
    await store.evacuate_actual_lrp("a", 0, "ig-a0", CELL, now=2)

    def keys(actuals: list[ActualLRP]) -> list[tuple[str, int, bool]]:
        return [(a.process_guid, a.index, a.evacuating) for a in actuals]

    assert keys(await store.actual_lrps()) == [
        ("a", 0, False),
        ("a", 0, True),
        ("a", 1, False),
        ("b", 0, False),
        ("b", 1, False),
    ]
    assert keys(await store.actual_lrps(process_guid="b")) == [("b", 0, False), ("b", 1, False)]
    assert keys(await store.actual_lrps(domain="x")) == [
        ("a", 0, False),
        ("a", 0, True),
        ("a", 1, False),
    ]
    assert keys(await store.actual_lrps(cell_id=CELL)) == [("a", 0, True), ("b", 1, False)]
    assert keys(await store.actual_lrps(process_guid="b", cell_id=OTHER)) == [("b", 0, False)]


# ---------------------------------------------------------------- evacuation


async def test_evacuation_copies_aside_and_unclaims_in_one_go(store: Store) -> None:
    """Evacuating a RUNNING instance adds its evacuating copy and unclaims the instance."""
    await store.create_unclaimed_actual_lrp("pg", 0, "apps", now=1)
    _, running = await store.start_actual_lrp("pg", 0, "apps", IG, CELL, now=2)
    copy, after = await store.evacuate_actual_lrp("pg", 0, IG, CELL, now=3)
    assert copy == attrs.evolve(running, evacuating=True)
    assert (after.state, after.instance_guid, after.cell_id, after.since) == (U, "", "", 3)
    assert await store.actual_lrps() == [after, copy]
    assert await store.get_actual_lrp("pg", 0, evacuating=True) == copy
    assert await store.get_actual_lrp("pg", 0) == after
    # The replacement is placed and started elsewhere while the copy still runs.
    await store.claim_actual_lrp("pg", 0, IG2, OTHER, now=4)
    _, replaced = await store.start_actual_lrp("pg", 0, "apps", IG2, OTHER, now=5)
    assert await store.actual_lrps() == [replaced, copy]
    with pytest.raises(ActualLRPOnDifferentCell):
        await store.remove_evacuating_actual_lrp("pg", 0, IG2)
    assert await store.remove_evacuating_actual_lrp("pg", 0, IG) == copy
    assert await store.actual_lrps() == [replaced]


async def test_a_refused_evacuation_changes_nothing(store: Store) -> None:
    """An evacuation that cannot insert its copy rolls back the unclaim too: all or nothing."""
    await store.start_actual_lrp("pg", 0, "apps", IG, CELL, now=1)
    copy, _ = await store.evacuate_actual_lrp("pg", 0, IG, CELL, now=2)
    _, running_elsewhere = await store.start_actual_lrp("pg", 0, "apps", IG2, OTHER, now=3)
    with pytest.raises(ActualLRPAlreadyExists):
        await store.evacuate_actual_lrp("pg", 0, IG2, OTHER, now=4)
    assert await store.actual_lrps() == [running_elsewhere, copy]


async def test_evacuation_is_refused_unless_running_there(store: Store) -> None:
    """Only the instance RUNNING on the evacuating cell can be evacuated."""
    await store.create_unclaimed_actual_lrp("pg", 0, "apps", now=1)
    with pytest.raises(InvalidActualLRPTransition):
        await store.evacuate_actual_lrp("pg", 0, IG, CELL, now=2)
    await store.claim_actual_lrp("pg", 0, IG, CELL, now=3)
    with pytest.raises(InvalidActualLRPTransition):
        await store.evacuate_actual_lrp("pg", 0, IG, CELL, now=4)
    _, running = await store.start_actual_lrp("pg", 0, "apps", IG, CELL, now=5)
    with pytest.raises(ActualLRPOnDifferentCell):
        await store.evacuate_actual_lrp("pg", 0, IG2, OTHER, now=6)
    assert await store.actual_lrps() == [running]


async def test_evacuation_racing_a_crash_has_one_outcome(store: Store) -> None:
    """Evacuate and crash racing on one instance: exactly one applies, and the rows agree."""
    await store.start_actual_lrp("pg", 0, "apps", IG, CELL, now=1)
    evacuated, crashed = await asyncio.gather(
        store.evacuate_actual_lrp("pg", 0, IG, CELL, now=2),
        store.crash_actual_lrp("pg", 0, IG, CELL, "oom", now=2),
        return_exceptions=True,
    )
    rows = await store.actual_lrps()
    if isinstance(evacuated, tuple):
        assert isinstance(crashed, InvalidActualLRPTransition)
        assert rows == [evacuated[1], evacuated[0]]
    else:
        assert isinstance(evacuated, InvalidActualLRPTransition)
        assert isinstance(crashed, tuple)
        assert rows == [crashed[1]]


# ---------------------------------------------------------------- domains


async def test_domains_are_fresh_until_their_ttl(store: Store) -> None:
    """A domain is listed while fresh at the given now; ttl 0 is forever; upserting renews."""
    assert await store.upsert_domain("apps", 10, now=0) == Domain(
        name="apps", expires_at=10 * SECOND
    )
    assert await store.upsert_domain("forever", 0, now=0) == Domain(name="forever", expires_at=0)
    assert [d.name for d in await store.domains(now=10 * SECOND - 1)] == ["apps", "forever"]
    assert await store.domains(now=10 * SECOND) == [Domain(name="forever", expires_at=0)]
    await store.upsert_domain("apps", 10, now=20 * SECOND)
    fresh = await store.domains(now=25 * SECOND)
    assert fresh == [Domain(name="apps", expires_at=30 * SECOND), Domain(name="forever")]
    await store.upsert_domain("forever", 1, now=25 * SECOND)
    assert [d.name for d in await store.domains(now=26 * SECOND)] == ["apps"]


async def test_racing_domain_upserts(store: Store) -> None:
    """Upserts of one new domain racing all succeed and leave one row."""
    await asyncio.gather(*(store.upsert_domain("d", 5, now=i) for i in range(RACERS)))
    domains = await store.domains(now=0)
    assert [d.name for d in domains] == ["d"]


# ---------------------------------------------------------------- migration


async def test_store_at_revision_0002_upgrades_keeping_its_tasks(store_url: str) -> None:
    """A store left at revision 0002 with a Task in it upgrades to head keeping the Task."""
    engine = create_async_engine(store_url)
    async with engine.begin() as conn:
        await conn.run_sync(upgrade, "0002")
        names = await conn.run_sync(lambda sync: sa.inspect(sync).get_table_names())
        assert "actual_lrps" not in names
        await conn.execute(
            sa.text(
                "insert into tasks (guid, domain, state, created_at, updated_at, definition)"
                " values ('old', 'd', 'PENDING', 1, 1, :definition)"
            ),
            {
                "definition": '{"task_guid":"old","domain":"d","stack":"linux",'
                '"action":{"run":{"path":"/bin/true"}}}'
            },
        )
    await engine.dispose()
    store = await Store.open(store_url)
    try:
        assert (await store.get_task("old")).state is TaskState.PENDING
        await store.create_unclaimed_actual_lrp("pg", 0, "apps", now=1)
        await store.desire_lrp(desired(), now=1)
        await store.upsert_domain("apps", 0, now=1)
        async with store.engine.connect() as conn:
            version = await conn.execute(sa.text("select version_num from alembic_version"))
            assert version.scalar() == head_revision()
    finally:
        await store.close()


# ---------------------------------------------------------------- the BBS


async def _drain(subscription: Any) -> list[Event]:
    events: list[Event] = []
    while True:
        try:
            events.append(await asyncio.wait_for(subscription.get(), 0.05))
        except TimeoutError:
            return events


async def test_bbs_stamps_the_clock_and_publishes_after_each_verb(store: Store) -> None:
    """The BBS's LRP verbs take time from its clock and publish the calculators' events."""
    clock = FakeClock(start=1_000)
    bus: Bus[Event] = Bus()
    bbs = BBS(store, bus, clock)
    subscription = bus.subscribe(None)

    made = await bbs.desire_lrp(desired())
    assert (made.created_at, made.updated_at) == (1_000, 1_000)
    _, updated = await bbs.update_desired_lrp("pg", DesiredLRPUpdate(instances=1))
    unclaimed = await bbs.create_unclaimed_actual_lrp("pg", 0, "apps")
    clock.advance(1)
    _, claimed = await bbs.claim_actual_lrp("pg", 0, IG, CELL)
    assert claimed.since == clock.now()
    _, running = await bbs.start_actual_lrp("pg", 0, "apps", IG, CELL)
    _, crashed = await bbs.crash_actual_lrp("pg", 0, IG, CELL, "oom")
    _, failed = await bbs.fail_actual_lrp_placement("pg", 0, "full")
    _, started = await bbs.start_actual_lrp("pg", 0, "apps", IG, CELL)
    copy, evacuated = await bbs.evacuate_actual_lrp("pg", 0, IG, CELL)
    removed_copy = await bbs.remove_evacuating_actual_lrp("pg", 0, IG)
    removed = await bbs.remove_actual_lrp("pg", 0)
    gone = await bbs.remove_desired_lrp("pg")

    assert await _drain(subscription) == [
        DesiredLRPCreated(made),
        DesiredLRPChanged(made, updated),
        ActualLRPCreated(unclaimed),
        ActualLRPChanged(unclaimed, claimed),
        ActualLRPChanged(claimed, running),
        ActualLRPChanged(running, crashed),
        ActualLRPCrashed(crashed),
        ActualLRPChanged(crashed, failed),
        ActualLRPChanged(failed, started),
        ActualLRPCreated(copy),
        ActualLRPChanged(started, evacuated),
        ActualLRPRemoved(removed_copy),
        ActualLRPRemoved(removed),
        DesiredLRPRemoved(gone),
    ]


async def test_bbs_no_ops_and_refusals_publish_nothing(store: Store) -> None:
    """A repeated claim publishes nothing; a refused verb raises and publishes nothing."""
    bus: Bus[Event] = Bus()
    clock = FakeClock()
    bbs = BBS(store, bus, clock)
    await bbs.create_unclaimed_actual_lrp("pg", 0, "apps")
    _, claimed = await bbs.claim_actual_lrp("pg", 0, IG, CELL)
    subscription = bus.subscribe(None)
    clock.advance(1)
    assert await bbs.claim_actual_lrp("pg", 0, IG, CELL) == (claimed, claimed)
    with pytest.raises(InvalidActualLRPTransition):
        await bbs.restart_actual_lrp("pg", 0)
    _, unclaimed = await bbs.unclaim_actual_lrp("pg", 0)
    assert await bbs.upsert_domain("apps", 0) == Domain(name="apps")
    assert await bbs.domains() == [Domain(name="apps")]
    assert await _drain(subscription) == [ActualLRPChanged(claimed, unclaimed)]
