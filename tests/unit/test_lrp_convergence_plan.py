"""The converger's pure LRP plan: one row per duty and per boundary, and its properties.

Times are int nanoseconds. With Diego's defaults the kick interval is 30 s ("older
than" is strict: an UNCLAIMED instance exactly 30 s old is left alone) and a CRASHED
instance may be restarted from the nanosecond its backoff has passed (inclusive, as
Diego's restart calculator).
"""

from __future__ import annotations

import random
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from diego.models.actions import RunAction
from diego.models.crash_policy import CrashPolicy
from diego.models.lrp import ActualLRP, ActualLRPKey, ActualLRPState, DesiredLRP, Domain
from diego.scheduling.lrp_convergence import (
    DesiredLRPView,
    LRPConvergerSettings,
    LRPPlan,
    LRPSnapshot,
    MissingInstance,
    plan_lrps,
)

U, C, R, X = (
    ActualLRPState.UNCLAIMED,
    ActualLRPState.CLAIMED,
    ActualLRPState.RUNNING,
    ActualLRPState.CRASHED,
)

S = 1_000_000_000
MIN = 60 * S
NOW = 1_700_000_000 * S
KICK = 30 * S
SETTINGS = LRPConvergerSettings()
LIVE = "cell-live"
DEAD = "cell-dead"
FRESH = "fresh"
STALE = "stale"


def want(instances: int = 1, guid: str = "p", domain: str = FRESH) -> DesiredLRPView:
    """A DesiredLRP of ``instances`` instances."""
    return DesiredLRPView(process_guid=guid, domain=domain, instances=instances)


def actual(state: ActualLRPState, index: int = 0, guid: str = "p", **fields: Any) -> ActualLRP:
    """An instance in ``state`` that changed just now on a live cell (so it needs
    nothing) unless ``fields`` say otherwise."""
    base: dict[str, Any] = {
        "domain": FRESH,
        "cell_id": LIVE if state in (C, R) else "",
        "instance_guid": f"ig-{guid}-{index}" if state in (C, R) else "",
        "since": NOW,
        "last_crashed_at": NOW if state == X else 0,
        "crash_count": 3 if state == X else 0,
    }
    base.update(fields)
    return ActualLRP(process_guid=guid, index=index, state=state, **base)


def key(index: int = 0, guid: str = "p") -> ActualLRPKey:
    """The key of instance ``index`` of ``guid``."""
    return ActualLRPKey(process_guid=guid, index=index)


def evacuating(index: int = 0, guid: str = "p", cell: str = LIVE, **fields: Any) -> ActualLRP:
    """An evacuating RUNNING copy."""
    return actual(R, index, guid, cell_id=cell, evacuating=True, **fields)


NOTHING = LRPPlan()
K0 = key(0)
K1 = key(1)

CASES: list[tuple[str, list[DesiredLRPView], list[ActualLRP], LRPPlan]] = [
    # 0. Evacuating copies on cells that are gone are removed; otherwise left to their cell.
    (
        "evacuating_on_dead_cell_removed",
        [want()],
        [evacuating(cell=DEAD), actual(U)],
        LRPPlan(remove_evacuating=(K0,)),
    ),
    ("evacuating_on_live_cell_left", [want()], [evacuating(), actual(U)], NOTHING),
    (
        "evacuating_on_dead_cell_of_undesired_process_removed",
        [],
        [evacuating(cell=DEAD, domain=STALE)],
        LRPPlan(remove_evacuating=(K0,)),
    ),
    ("evacuating_extra_on_live_cell_left", [want(0)], [evacuating()], NOTHING),
    (
        "evacuating_copy_alone_gets_its_index_created",
        [want()],
        [evacuating()],
        LRPPlan(create=(MissingInstance("p", 0, FRESH),), auction=(K0,)),
    ),
    # 1. Instances of DesiredLRPs that are gone are stopped, but only in fresh domains.
    *[
        (
            f"undesired_{state.value.lower()}_fresh_domain_stopped",
            [],
            [actual(state)],
            LRPPlan(stop=(actual(state),)),
        )
        for state in (U, C, R, X)
    ],
    (
        "undesired_on_dead_cell_fresh_domain_stopped_not_unclaimed",
        [],
        [actual(R, cell_id=DEAD)],
        LRPPlan(stop=(actual(R, cell_id=DEAD),)),
    ),
    *[
        (
            f"undesired_stale_domain_kept_{name}",
            [],
            [actual(state, domain=STALE, **fields)],
            NOTHING,
        )
        for name, state, fields in (
            ("running", R, {}),
            ("on_dead_cell", R, {"cell_id": DEAD}),
            ("crashed_long_ago", X, {"since": NOW - 60 * MIN, "last_crashed_at": NOW - 60 * MIN}),
            ("unclaimed_long_ago", U, {"since": NOW - 60 * MIN}),
        )
    ],
    # 2. Instances beyond the desired count are stopped, but only in fresh domains.
    (
        "extra_fresh_domain_stopped",
        [want(1)],
        [actual(R, 0), actual(R, 1)],
        LRPPlan(stop=(actual(R, 1),)),
    ),
    (
        "zero_instances_fresh_domain_stops_all",
        [want(0)],
        [actual(R, 0), actual(X, 1), actual(U, 2)],
        LRPPlan(stop=(actual(R, 0), actual(X, 1), actual(U, 2))),
    ),
    (
        "extra_on_dead_cell_fresh_domain_stopped_not_unclaimed",
        [want(0)],
        [actual(C, cell_id=DEAD)],
        LRPPlan(stop=(actual(C, cell_id=DEAD),)),
    ),
    (
        "extra_crashed_fresh_domain_stopped_not_restarted",
        [want(0)],
        [actual(X, crash_count=1)],
        LRPPlan(stop=(actual(X, crash_count=1),)),
    ),
    ("extra_stale_domain_kept", [want(0, domain=STALE)], [actual(R, domain=STALE)], NOTHING),
    (
        "extra_stale_domain_on_dead_cell_unclaimed",
        [want(0, domain=STALE)],
        [actual(R, domain=STALE, cell_id=DEAD)],
        LRPPlan(unclaim=(K0,), auction=(K0,)),
    ),
    (
        "extra_stale_domain_crashed_restarted",
        [want(0, domain=STALE)],
        [actual(X, domain=STALE, crash_count=1)],
        LRPPlan(restart=(K0,), auction=(K0,)),
    ),
    (
        "freshness_is_the_actuals_domain",
        [want(0, domain=STALE)],
        [actual(R, domain=FRESH)],
        LRPPlan(stop=(actual(R),)),
    ),
    # 3. CLAIMED and RUNNING instances on cells that are gone go back to UNCLAIMED.
    (
        "running_dead_cell_unclaimed",
        [want()],
        [actual(R, cell_id=DEAD)],
        LRPPlan(unclaim=(K0,), auction=(K0,)),
    ),
    (
        "claimed_dead_cell_unclaimed",
        [want()],
        [actual(C, cell_id=DEAD)],
        LRPPlan(unclaim=(K0,), auction=(K0,)),
    ),
    (
        "running_without_cell_unclaimed",
        [want()],
        [actual(R, cell_id="")],
        LRPPlan(unclaim=(K0,), auction=(K0,)),
    ),
    ("running_live_cell_long_ago_left", [want()], [actual(R, since=NOW - 60 * MIN)], NOTHING),
    ("claimed_live_cell_long_ago_left", [want()], [actual(C, since=NOW - 60 * MIN)], NOTHING),
    # 4. CRASHED instances are restarted once the crash policy allows.
    (
        "crashed_immediate_count_restarted",
        [want()],
        [actual(X, crash_count=2)],
        LRPPlan(restart=(K0,), auction=(K0,)),
    ),
    (
        "crashed_3_backoff_just_before",
        [want()],
        [actual(X, crash_count=3, since=NOW - 30 * S + 1, last_crashed_at=NOW - 30 * S + 1)],
        NOTHING,
    ),
    (
        "crashed_3_backoff_just_after",
        [want()],
        [actual(X, crash_count=3, since=NOW - 30 * S, last_crashed_at=NOW - 30 * S)],
        LRPPlan(restart=(K0,), auction=(K0,)),
    ),
    (
        "crashed_8_backoff_just_before",
        [want()],
        [actual(X, crash_count=8, since=NOW - 16 * MIN + 1, last_crashed_at=NOW - 16 * MIN + 1)],
        NOTHING,
    ),
    (
        "crashed_8_backoff_just_after",
        [want()],
        [actual(X, crash_count=8, since=NOW - 16 * MIN, last_crashed_at=NOW - 16 * MIN)],
        LRPPlan(restart=(K0,), auction=(K0,)),
    ),
    (
        "crashed_199_after_16_min_restarted",
        [want()],
        [actual(X, crash_count=199, since=NOW - 16 * MIN, last_crashed_at=NOW - 16 * MIN)],
        LRPPlan(restart=(K0,), auction=(K0,)),
    ),
    (
        "crashed_200_never_restarted",
        [want()],
        [actual(X, crash_count=200, since=NOW - 600 * MIN, last_crashed_at=NOW - 600 * MIN)],
        NOTHING,
    ),
    (
        "crashed_backoff_counts_from_the_later_time_since",
        [want()],
        [actual(X, crash_count=3, since=NOW - 30 * S + 1, last_crashed_at=0)],
        NOTHING,
    ),
    (
        "crashed_backoff_counts_from_the_later_time_last_crashed_at",
        [want()],
        [actual(X, crash_count=3, since=0, last_crashed_at=NOW - 30 * S + 1)],
        NOTHING,
    ),
    # 5. UNCLAIMED instances unchanged for longer than the kick interval are auctioned again.
    ("unclaimed_kick_just_before", [want()], [actual(U, since=NOW - KICK)], NOTHING),
    (
        "unclaimed_kick_just_after",
        [want()],
        [actual(U, since=NOW - KICK - 1)],
        LRPPlan(auction=(K0,)),
    ),
    (
        "unclaimed_with_placement_error_kicked",
        [want()],
        [actual(U, since=NOW - KICK - 1, placement_error="insufficient resources")],
        LRPPlan(auction=(K0,)),
    ),
    # 6. Desired indices with no instance are created, in the DesiredLRP's domain.
    (
        "missing_indices_created",
        [want(3)],
        [actual(R, 1)],
        LRPPlan(
            create=(MissingInstance("p", 0, FRESH), MissingInstance("p", 2, FRESH)),
            auction=(key(0), key(2)),
        ),
    ),
    (
        "missing_indices_created_in_stale_domain_too",
        [want(1, domain=STALE)],
        [],
        LRPPlan(create=(MissingInstance("p", 0, STALE),), auction=(K0,)),
    ),
    ("zero_instances_nothing_there", [want(0)], [], NOTHING),
    # Instances in every state that need nothing.
    ("unclaimed_fresh", [want()], [actual(U)], NOTHING),
    ("claimed_live", [want()], [actual(C)], NOTHING),
    ("running_live", [want()], [actual(R)], NOTHING),
    ("crashed_just_now", [want()], [actual(X)], NOTHING),
]


@pytest.mark.parametrize(
    ("desired", "actuals", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_one_row(
    desired: list[DesiredLRPView], actuals: list[ActualLRP], expected: LRPPlan
) -> None:
    """Each row's DesiredLRPs and ActualLRPs get exactly the plan written out for them."""
    snapshot = LRPSnapshot(
        desired=desired, actuals=actuals, live_cells={LIVE}, fresh_domains={FRESH}
    )
    assert plan_lrps(snapshot, NOW, SETTINGS) == expected


def test_buckets_are_sorted_by_process_and_index() -> None:
    """A plan over many processes lists every bucket by process guid, then index."""
    old = NOW - 60 * MIN
    snapshot = LRPSnapshot(
        desired=[want(2, "b"), want(12, "a"), want(0, "c")],
        actuals=[
            actual(R, 1, "b", cell_id=DEAD),
            actual(R, 0, "b", cell_id=DEAD),
            actual(X, 10, "a", since=old, last_crashed_at=old),
            actual(U, 11, "a", since=old),
            actual(U, 2, "a", since=old),
            actual(X, 9, "a", since=old, last_crashed_at=old),
            *[actual(R, i, "a") for i in (0, 1, 3, 4, 5, 6, 7)],
            actual(R, 1, "c"),
            actual(U, 0, "c"),
            evacuating(1, "b", DEAD),
            evacuating(0, "a", DEAD),
            actual(R, 3, "orphan"),
        ],
        live_cells={LIVE},
        fresh_domains={FRESH},
    )
    result = plan_lrps(snapshot, NOW, SETTINGS)
    assert result == LRPPlan(
        unclaim=(key(0, "b"), key(1, "b")),
        remove_evacuating=(key(0, "a"), key(1, "b")),
        create=(MissingInstance("a", 8, FRESH),),
        stop=(actual(U, 0, "c"), actual(R, 1, "c"), actual(R, 3, "orphan")),
        restart=(key(9, "a"), key(10, "a")),
        auction=(
            key(2, "a"),
            key(8, "a"),
            key(9, "a"),
            key(10, "a"),
            key(11, "a"),
            key(0, "b"),
            key(1, "b"),
        ),
    )
    assert not result.is_empty
    assert LRPPlan().is_empty


def test_no_live_cells_unclaims_everything_placed() -> None:
    """With no cell present every CLAIMED and RUNNING instance is unclaimed and every
    evacuating copy removed."""
    snapshot = LRPSnapshot(
        desired=[want(3)],
        actuals=[actual(C, 0), actual(R, 1), actual(U, 2), evacuating(1)],
        fresh_domains={FRESH},
    )
    assert plan_lrps(snapshot, NOW, SETTINGS) == LRPPlan(
        unclaim=(K0, K1), remove_evacuating=(K1,), auction=(K0, K1)
    )


def test_settings_are_seconds_converted_to_nanoseconds() -> None:
    """A fractional kick interval and crash policy set the boundaries to the nanosecond."""
    settings = LRPConvergerSettings(
        kick_interval_s=0.5,
        crash_policy=CrashPolicy(immediate_restarts=0, backoff_base_s=0.25, max_backoff_s=1.0),
    )
    snapshot = LRPSnapshot(
        desired=[want(4)],
        actuals=[
            actual(U, 0, since=NOW - S // 2),
            actual(U, 1, since=NOW - S // 2 - 1),
            actual(X, 2, crash_count=0, since=NOW - S // 4 + 1, last_crashed_at=0),
            actual(X, 3, crash_count=0, since=NOW - S // 4, last_crashed_at=0),
        ],
        live_cells={LIVE},
        fresh_domains={FRESH},
    )
    assert plan_lrps(snapshot, NOW, settings) == LRPPlan(
        restart=(key(3),), auction=(key(1), key(3))
    )


def test_diego_defaults() -> None:
    """The default settings are Diego's: a 30 s kick and Diego's restart calculator."""
    assert SETTINGS.kick_interval_s == 30.0
    assert SETTINGS.crash_policy == CrashPolicy()


@pytest.mark.parametrize("value", [-1.0, float("nan")])
def test_settings_refuse_negative_kick(value: float) -> None:
    """A negative (or NaN) kick interval is refused when the settings are built."""
    with pytest.raises(ValueError, match="kick_interval_s"):
        LRPConvergerSettings(kick_interval_s=value)


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"desired": [want(1), want(2)]}, "process guids appear more than once"),
        ({"desired": [want(-1)]}, "negative instances"),
        ({"actuals": [actual(R, 0), actual(U, 0)]}, "more than once"),
        ({"actuals": [evacuating(0), evacuating(0, cell=DEAD)]}, "more than once"),
    ],
)
def test_snapshot_refuses_impossible_states(fields: dict[str, Any], match: str) -> None:
    """A snapshot with two DesiredLRPs of one process, or two instances (or two evacuating
    copies) at one index, is refused, so nothing can be planned twice."""
    with pytest.raises(ValueError, match=match):
        LRPSnapshot(**fields)


def test_snapshot_allows_an_instance_beside_its_evacuating_copy() -> None:
    """An index may hold one instance and one evacuating copy at once."""
    snapshot = LRPSnapshot(actuals=[actual(U, 0), evacuating(0)])
    assert len(snapshot.actuals) == 2


def test_snapshot_of_models() -> None:
    """``LRPSnapshot.of`` keeps the deciding fields of DesiredLRPs and the domains fresh
    at ``now``."""
    desired = DesiredLRP(
        process_guid="web",
        domain=FRESH,
        stack="cflinuxfs4",
        instances=2,
        action=RunAction(path="/bin/web"),
    )
    domains = [
        Domain(name=FRESH, expires_at=NOW + 1),
        Domain(name="forever"),
        Domain(name=STALE, expires_at=NOW),
    ]
    running = actual(R, 0, "web")
    snapshot = LRPSnapshot.of([desired], [running], [LIVE], domains, NOW)
    assert snapshot == LRPSnapshot(
        desired=(DesiredLRPView(process_guid="web", domain=FRESH, instances=2),),
        actuals=(running,),
        live_cells=frozenset({LIVE}),
        fresh_domains=frozenset({FRESH, "forever"}),
    )
    assert DesiredLRPView.from_desired(desired) == snapshot.desired[0]


# Property tests.

GUIDS = ("p0", "p1", "p2", "p3")
CELLS = (LIVE, DEAD, "cell-other", "")
DOMAINS = (FRESH, STALE)
CRASH_COUNTS = (0, 1, 2, 3, 4, 7, 8, 9, 199, 200, 201)
BOUNDARIES = (0, KICK, 30 * S, 16 * MIN)
ages = st.one_of(
    st.integers(min_value=0, max_value=40 * MIN),
    st.sampled_from(BOUNDARIES).flatmap(lambda b: st.sampled_from((b - 1, b, b + 1))),
)
"""How long ago something happened: anything, or within a nanosecond of a boundary."""


@st.composite
def instances(draw: st.DrawFn, guid: str, index: int, is_evacuating: bool) -> ActualLRP:
    """Any instance at ``index`` of ``guid``, in any state, on any cell, of any age."""
    return ActualLRP(
        process_guid=guid,
        index=index,
        domain=draw(st.sampled_from(DOMAINS)),
        state=R if is_evacuating else draw(st.sampled_from(list(ActualLRPState))),
        cell_id=draw(st.sampled_from(CELLS)),
        crash_count=draw(st.sampled_from(CRASH_COUNTS)),
        since=NOW - draw(ages),
        last_crashed_at=NOW - draw(ages),
        evacuating=is_evacuating,
    )


@st.composite
def snapshots(draw: st.DrawFn) -> LRPSnapshot:
    """Some processes desired, any instances (at most one, plus one evacuating copy,
    per index), some cells alive and some domains fresh."""
    desired = [
        want(draw(st.integers(0, 4)), guid, draw(st.sampled_from(DOMAINS)))
        for guid in draw(st.sets(st.sampled_from(GUIDS)))
    ]
    actuals: list[ActualLRP] = []
    for guid in draw(st.sets(st.sampled_from(GUIDS))):
        for index in draw(st.sets(st.integers(0, 5), max_size=4)):
            actuals.append(draw(instances(guid, index, is_evacuating=False)))
        for index in draw(st.sets(st.integers(0, 5), max_size=2)):
            actuals.append(draw(instances(guid, index, is_evacuating=True)))
    return LRPSnapshot(
        desired=desired,
        actuals=actuals,
        live_cells=draw(st.frozensets(st.sampled_from(CELLS[:3]))),
        fresh_domains=draw(st.frozensets(st.sampled_from(DOMAINS))),
    )


settings_strategy = st.one_of(
    st.just(SETTINGS),
    st.builds(
        LRPConvergerSettings,
        kick_interval_s=st.floats(0, 3600),
        crash_policy=st.builds(
            CrashPolicy,
            immediate_restarts=st.integers(0, 4),
            max_backoff_s=st.sampled_from((30.0, 960.0)),
        ),
    ),
)


def order(keys: tuple[ActualLRPKey, ...]) -> list[tuple[str, int]]:
    """Keys as sortable tuples."""
    return [(k.process_guid, k.index) for k in keys]


@given(snapshot=snapshots(), settings=settings_strategy)
def test_every_actual_in_at_most_one_bucket_of_allowed_states(
    snapshot: LRPSnapshot, settings: LRPConvergerSettings
) -> None:
    """No instance is stopped, unclaimed or restarted twice, each bucket holds only
    instances in the states it allows, and every bucket is sorted."""
    result = plan_lrps(snapshot, NOW, settings)
    instance = {a.key: a for a in snapshot.actuals if not a.evacuating}
    copy = {a.key: a for a in snapshot.actuals if a.evacuating}
    desired = {d.process_guid: d for d in snapshot.desired}

    acted = [a.key for a in result.stop] + list(result.unclaim) + list(result.restart)
    assert len(acted) == len(set(acted))
    assert set(acted) <= set(instance)
    assert all(not a.evacuating for a in result.stop)
    assert all(instance[a.key] == a for a in result.stop)
    assert all(a.domain in snapshot.fresh_domains for a in result.stop)
    assert all(
        a.process_guid not in desired or a.index >= desired[a.process_guid].instances
        for a in result.stop
    )
    assert all(instance[k].state in (C, R) for k in result.unclaim)
    assert all(instance[k].cell_id not in snapshot.live_cells for k in result.unclaim)
    assert all(instance[k].state == X for k in result.restart)
    assert set(result.remove_evacuating) <= set(copy)
    assert all(copy[k].cell_id not in snapshot.live_cells for k in result.remove_evacuating)

    created = [m.key for m in result.create]
    assert set(created).isdisjoint(instance)  # never a second instance at an index
    assert all(m.index < desired[m.process_guid].instances for m in result.create)
    assert all(m.domain == desired[m.process_guid].domain for m in result.create)

    kicked = [k for k in result.auction if k in instance and instance[k].state == U]
    assert sorted(order(result.auction)) == sorted(
        order((*created, *result.unclaim, *result.restart, *kicked))
    )
    assert len(set(result.auction)) == len(result.auction)
    assert set(result.auction).isdisjoint(a.key for a in result.stop)

    for bucket in (result.unclaim, result.remove_evacuating, result.restart, result.auction):
        assert order(bucket) == sorted(order(bucket))
    assert list(result.create) == sorted(result.create)
    assert order(tuple(a.key for a in result.stop)) == sorted(
        order(tuple(a.key for a in result.stop))
    )


@given(snapshot=snapshots(), settings=settings_strategy, seed=st.integers(0, 2**32))
def test_plan_is_deterministic_and_ignores_snapshot_order(
    snapshot: LRPSnapshot, settings: LRPConvergerSettings, seed: int
) -> None:
    """The same snapshot in any order gives the same plan, every time."""
    rng = random.Random(seed)
    desired, actuals = list(snapshot.desired), list(snapshot.actuals)
    rng.shuffle(desired)
    rng.shuffle(actuals)
    reordered = attrs.evolve(snapshot, desired=tuple(desired), actuals=tuple(actuals))
    assert plan_lrps(snapshot, NOW, settings) == plan_lrps(snapshot, NOW, settings)
    assert plan_lrps(reordered, NOW, settings) == plan_lrps(snapshot, NOW, settings)


@given(snapshot=snapshots(), settings=settings_strategy)
def test_stale_domains_lose_nothing(snapshot: LRPSnapshot, settings: LRPConvergerSettings) -> None:
    """With no domain fresh nothing is ever stopped, whatever is desired."""
    stale = attrs.evolve(snapshot, fresh_domains=frozenset())
    assert plan_lrps(stale, NOW, settings).stop == ()


@given(
    instances=st.integers(0, 6),
    present=st.sets(st.tuples(st.integers(0, 8), st.booleans()), max_size=10),
)
def test_the_shortcut_past_delta_is_taken_only_when_delta_is_empty(
    instances: int, present: set[tuple[int, bool]]
) -> None:
    """plan_lrps skips delta() for a process whose instances are complete: only then."""
    from diego.models.lrp_delta import delta
    from diego.scheduling.lrp_convergence import _complete

    actuals = [
        ActualLRP(process_guid="p", index=i, domain="d", evacuating=e) for i, e in sorted(present)
    ]
    if _complete(instances, actuals):
        assert delta(instances, actuals).is_empty
    if not any(e for _, e in present) and {i for i, _ in present} == set(range(instances)):
        assert _complete(instances, actuals)


def test_one_pass_creates_at_most_max_creates_instances() -> None:
    """A DesiredLRP stored with a billion instances costs one bounded pass, not 20 GB:
    the lowest missing indices first, over every process, up to the bound."""
    snapshot = LRPSnapshot(
        desired=[want(10**9, "a"), want(3, "b")], live_cells={LIVE}, fresh_domains={FRESH}
    )
    plan = plan_lrps(snapshot, NOW, LRPConvergerSettings(max_creates=4))
    assert [(m.process_guid, m.index) for m in plan.create] == [("a", i) for i in range(4)]
    assert len(plan.auction) == 4
