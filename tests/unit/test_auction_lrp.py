"""The auction of LRP instances: zones, colocation, order against Tasks, reasons, safety.

The property tests hold ``schedule`` to a naive reference written out here (every
compatible cell of a zone ranked for every instance, exactly, with fractions) and to
the invariants: never over capacity, every piece of work accounted for once, the zone
rule for index > 1, and no colocation while the cells allow it. Diego's cold-start
scenarios come from ``bench.auction``, which also times the auction at scale.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.auction import cold_start
from diego.models.actions import RunAction
from diego.models.lrp import DesiredLRP
from diego.models.work import CellSnapshot, LRPWork, Resources, TaskWork, root_fs_provider
from diego.scheduling import auction
from diego.scheduling.auction import (
    INSUFFICIENT_RESOURCES,
    NO_COMPATIBLE_CELL,
    AuctionResult,
    Placement,
    Rejection,
    batch_order,
    insufficient_resources,
    insufficient_resources_in_zone,
    lrp_order,
    no_cell_for_root_fs,
    no_cell_for_stack,
    no_cell_in_zones,
    schedule,
    zone_ranking,
)
from tests.unit.test_auction import BOTH, STACK, batches, exact_score, task

PROPERTY = settings(max_examples=200, deadline=None, database=None)


def cell(
    cell_id: str,
    zone: str = "z1",
    total: tuple[int, int, int] = (1024, 4096, 8),
    available: tuple[int, int, int] | None = None,
    lrp_counts: dict[str, int] | None = None,
    stacks: Sequence[str] = (STACK,),
    providers: frozenset[str] = BOTH,
) -> CellSnapshot:
    """A cell snapshot in ``zone``; it is empty unless ``available`` says otherwise."""
    return CellSnapshot(
        cell_id,
        zone,
        frozenset(stacks),
        providers,
        Resources(*total),
        Resources(*(available or total)),
        lrp_counts or {},
    )


def lrp(
    process_guid: str,
    index: int,
    memory_mb: int = 64,
    disk_mb: int = 128,
    stack: str = STACK,
    root_fs: str = "",
) -> LRPWork:
    """Instance ``index`` of ``process_guid`` in the ``tests`` domain."""
    return LRPWork(process_guid, index, "tests", stack, root_fs, memory_mb, disk_mb)


def instances(process_guid: str, count: int, memory_mb: int = 64) -> list[LRPWork]:
    """Instances 0 .. count-1 of one process."""
    return [lrp(process_guid, index, memory_mb) for index in range(count)]


def guid_preferring(zone: str, zones: Sequence[str], prefix: str = "app") -> str:
    """A process guid whose instance 0 prefers ``zone`` among ``zones``."""
    return next(
        f"{prefix}-{k}" for k in range(1000) if zone_ranking(f"{prefix}-{k}", 0, zones)[0] == zone
    )


def where(result: AuctionResult[TaskWork | LRPWork]) -> dict[tuple[str, int], str]:
    """Placed LRP (process_guid, index) → cell_id."""
    return {
        (p.work.process_guid, p.work.index): p.cell_id
        for p in result.placements
        if isinstance(p.work, LRPWork)
    }


def unplaced(result: AuctionResult[TaskWork | LRPWork]) -> dict[tuple[str, int], str]:
    """Unplaced LRP (process_guid, index) → reason."""
    return {(w.process_guid, w.index): reason for w, reason in result.unplaced}


# -- the model -----------------------------------------------------------------------


def test_work_from_a_desired_lrp() -> None:
    """``LRPWork.from_desired`` takes the guid, domain, stack, root_fs and sizes, and the index."""
    desired = DesiredLRP(
        process_guid="web",
        domain="cf-apps",
        stack="cflinuxfs4",
        root_fs="docker:///org/web",
        instances=3,
        action=RunAction(path="/bin/web"),
        memory_mb=256,
        disk_mb=1024,
    )
    work = LRPWork.from_desired(desired, 2)
    assert work == LRPWork("web", 2, "cf-apps", "cflinuxfs4", "docker:///org/web", 256, 1024)
    assert work.resources == Resources(256, 1024, 1)


def test_lrp_work_refuses_negative_numbers() -> None:
    """A negative index, memory or disk is refused when built."""
    with pytest.raises(ValueError, match="index must not be negative"):
        lrp("p", -1)
    with pytest.raises(ValueError, match="memory_mb must not be negative"):
        lrp("p", 0, memory_mb=-1)


def test_lrp_counts_default_to_none_and_are_read_only() -> None:
    """Snapshots built without ``lrp_counts`` have none; given counts are copied, read-only,
    and left out of the hash, so snapshots stay hashable."""
    plain = CellSnapshot(
        "a", "z1", frozenset({STACK}), BOTH, Resources(1, 1, 1), Resources(1, 1, 1)
    )
    assert dict(plain.lrp_counts) == {}
    source = {"web": 2}
    counted = cell("a", lrp_counts=source)
    source["web"] = 5
    assert counted.lrp_counts == {"web": 2}
    with pytest.raises(TypeError):
        counted.lrp_counts["web"] = 3  # type: ignore[index]
    assert hash(counted) == hash(cell("a", lrp_counts={"web": 7}))
    assert counted != cell("a", lrp_counts={"web": 7})
    assert counted == cell("a", lrp_counts={"web": 2})
    with pytest.raises(ValueError, match=r"lrp_counts\['web'\] must not be negative"):
        cell("a", lrp_counts={"web": -1})


def test_zone_ranking_rotates_the_sorted_zones_by_index() -> None:
    """Instance i's ranking is the sorted zones rotated to start at (crc32(guid) + i) % N."""
    zones = ["z3", "z1", "z2", "z1"]
    first = zone_ranking("web", 0, zones)
    assert sorted(first) == ["z1", "z2", "z3"]
    start = ["z1", "z2", "z3"].index(first[0])
    for index in range(6):
        expected = ["z1", "z2", "z3"][(start + index) % 3]
        assert zone_ranking("web", index, zones)[0] == expected
    assert zone_ranking("web", 1, zones) == first[1:] + first[:1]
    assert zone_ranking("web", 0, []) == ()


def test_lrp_order_is_index_then_biggest_memory() -> None:
    """LRP instances are taken lowest index first, then biggest memory, then disk, then guid."""
    work = [lrp("a", 1, 512), lrp("b", 0, 64), lrp("c", 0, 512), lrp("d", 0, 512, 256)]
    ordered = [(w.process_guid, w.index) for w in sorted(work, key=lrp_order)]
    assert ordered == [("d", 0), ("c", 0), ("b", 0), ("a", 1)]


# -- zones and colocation ---------------------------------------------------------------


def test_three_instances_on_three_cells_in_two_zones_use_every_cell() -> None:
    """Three instances on two cells of one zone and one of the other land on three cells,
    with instances 0 and 1 in different zones."""
    cells = [cell("a", "z1"), cell("b", "z1"), cell("c", "z2")]
    guid = guid_preferring("z1", ["z1", "z2"])
    result = schedule(cells, instances(guid, 3))
    placed = where(result)
    assert sorted(placed.values()) == ["a", "b", "c"]
    zone = {c.cell_id: c.zone for c in cells}
    assert zone[placed[guid, 0]] != zone[placed[guid, 1]]
    assert zone[placed[guid, 2]] == "z1"


def test_no_colocation_while_another_cell_has_room() -> None:
    """A second instance goes to a busier cell rather than join the first on the idle one."""
    cells = [cell("idle"), cell("busy", available=(256, 1024, 2))]
    result = schedule(cells, instances("web", 2))
    assert where(result) == {("web", 0): "idle", ("web", 1): "busy"}


def test_instances_already_running_count_against_a_cell() -> None:
    """A cell that runs an instance already (``lrp_counts``) is passed over for a new one."""
    cells = [
        cell("idle", lrp_counts={"web": 1, "other": 3}),
        cell("busy", available=(256, 1024, 2)),
    ]
    assert where(schedule(cells, [lrp("web", 0)])) == {("web", 0): "busy"}
    assert where(schedule(cells, [lrp("web", 4)])) == {("web", 4): "busy"}
    assert where(schedule(cells, [lrp("other", 4)])) == {("other", 4): "busy"}
    assert where(schedule(cells, [lrp("new", 4)])) == {("new", 4): "idle"}


def test_colocation_once_every_cell_has_an_instance_goes_to_the_fewest() -> None:
    """With more instances than cells, each cell takes one before any takes a third."""
    cells = [cell(f"cell-{i}", total=(4096, 16384, 16)) for i in range(3)]
    result = schedule(cells, instances("web", 7))
    assert sorted(Counter(where(result).values()).values()) == [2, 2, 3]


def test_fewest_instances_beat_a_better_score() -> None:
    """A cell without the process wins over an emptier cell that runs it (Diego adds the
    count of instances to the score)."""
    cells = [
        cell("empty-but-running-it", lrp_counts={"web": 1}),
        cell("half-full", available=(512, 2048, 4)),
    ]
    result = schedule(cells, [lrp("web", 1)])
    assert where(result) == {("web", 1): "half-full"}


def test_index_above_one_only_in_its_preferred_zone() -> None:
    """Instance 2 goes to its preferred zone, even when another zone is emptier."""
    zones = ["z1", "z2"]
    guid = guid_preferring("z1", zones)  # instance 2 prefers z1 too
    cells = [
        cell("z1-cell", "z1", available=(512, 2048, 4)),
        cell("z2-cell", "z2"),
    ]
    result = schedule(cells, [lrp(guid, 2)])
    assert where(result) == {(guid, 2): "z1-cell"}


def test_index_above_one_is_unplaced_when_its_zone_is_full() -> None:
    """Instance 2 whose preferred zone has no room is not placed, whatever room elsewhere,
    and the reason names the zone."""
    zones = ["z1", "z2"]
    guid = guid_preferring("z1", zones)
    cells = [cell("z1-cell", "z1", available=(1024, 4096, 0)), cell("z2-cell", "z2")]
    result = schedule(cells, [lrp(guid, 2), lrp(guid, 4)])
    assert result.placements == ()
    assert unplaced(result) == {
        (guid, 2): "insufficient resources in zone 'z1'",
        (guid, 4): insufficient_resources_in_zone("z1"),
    }
    assert unplaced(result)[guid, 2].startswith(INSUFFICIENT_RESOURCES)


def test_index_above_one_is_unplaced_when_its_zone_serves_no_such_cell() -> None:
    """A preferred zone with no compatible cell counts as a zone without room."""
    zones = ["z1", "z2"]
    guid = guid_preferring("z1", zones)
    cells = [cell("z1-cell", "z1", stacks=["other"]), cell("z2-cell", "z2")]
    result = schedule(cells, [lrp(guid, 2)])
    assert unplaced(result) == {(guid, 2): insufficient_resources_in_zone("z1")}


@pytest.mark.parametrize("index", [0, 1])
def test_indices_zero_and_one_fall_back_to_the_next_zone(index: int) -> None:
    """Instances 0 and 1 try their zones in ranking order: the first full, the second takes
    it, even though the third zone is emptier."""
    zones = ["z1", "z2", "z3"]
    ranking = zone_ranking("web", index, zones)
    first, second, third = ranking
    cells = [
        cell("full", first, available=(1024, 4096, 0)),
        cell("busy", second, available=(256, 1024, 2)),
        cell("empty", third),
    ]
    result = schedule(cells, [lrp("web", index)])
    assert where(result) == {("web", index): "busy"}


def test_index_zero_and_one_go_to_different_zones() -> None:
    """Instances 0 and 1 start from neighbouring zones, so they never share one while both
    have room."""
    zones = ["z1", "z2", "z3"]
    cells = [cell(f"{zone}-{i}", zone) for zone in zones for i in range(2)]
    work = [w for k in range(20) for w in instances(f"app-{k}", 2)]
    placed = where(schedule(cells, work))
    zone = {c.cell_id: c.zone for c in cells}
    for k in range(20):
        assert zone[placed[f"app-{k}", 0]] != zone[placed[f"app-{k}", 1]]


def test_instances_rotate_through_the_zones() -> None:
    """Nine instances of one process over three zones: three in each."""
    cells = [cell(f"{zone}-{i}", zone, total=(4096, 16384, 16)) for zone in "xyz" for i in range(3)]
    placed = where(schedule(cells, instances("web", 9)))
    assert Counter(cell_id[0] for cell_id in placed.values()) == {"x": 3, "y": 3, "z": 3}
    assert len(set(placed.values())) == 9


# -- order against Tasks --------------------------------------------------------------------


def test_index_zero_before_tasks_before_other_indices() -> None:
    """Diego's order: instances of index 0, then Tasks, then instances of index 1 and up."""
    cells = [cell("a", available=(1024, 4096, 2))]
    work: list[TaskWork | LRPWork] = [lrp("web", 1), task("t"), lrp("api", 0, memory_mb=1)]
    result = schedule(cells, work)
    assert [p.work for p in result.placements] == [lrp("api", 0, memory_mb=1), task("t")]
    assert unplaced(result) == {("web", 1): "insufficient resources: containers"}
    assert result.carried_over == result.rejections == ()


def test_placements_come_in_the_order_they_were_made() -> None:
    """``placements`` lists index-0 instances, Tasks (biggest first), then later indices."""
    cells = [cell(f"c{i}", total=(8192, 32768, 32)) for i in range(4)]
    work: list[TaskWork | LRPWork] = [
        lrp("b", 1),
        task("small", 8),
        lrp("a", 0, 8),
        task("big", 512),
        lrp("b", 0, 512),
        lrp("a", 1, 8),
    ]
    order = [
        (w.process_guid, w.index) if isinstance(w, LRPWork) else w.task_guid
        for w in (p.work for p in schedule(cells, work).placements)
    ]
    assert order == [("b", 0), ("a", 0), "big", "small", ("b", 1), ("a", 1)]


def test_tasks_keep_their_outcomes_when_lrps_take_nothing() -> None:
    """Instances no cell serves change nothing for the Tasks of the batch."""
    cells = [cell("a", available=(256, 4096, 3))]
    tasks = [task("fits"), task("never", memory_mb=2048), task("later", memory_mb=512)]
    alone = schedule(cells, tasks)
    mixed = schedule(
        cells, [*tasks, lrp("win", 0, stack="windows"), lrp("win", 3, stack="windows")]
    )
    assert mixed.placements == alone.placements
    assert mixed.rejections == alone.rejections
    assert mixed.carried_over == alone.carried_over
    assert len(mixed.unplaced) == 2


# -- reasons ---------------------------------------------------------------------------------

UNPLACED = [
    pytest.param(
        [cell("a")], lrp("p", 0, stack="windows"), no_cell_for_stack("windows"), id="stack"
    ),
    pytest.param(
        [cell("a", providers=frozenset({"preloaded"}))],
        lrp("p", 3, root_fs="docker:///org/img"),
        no_cell_for_root_fs(STACK, "docker"),
        id="root-fs-provider",
    ),
    pytest.param(
        [cell("a", total=(1024, 4096, 8))],
        lrp("p", 5, memory_mb=2048, disk_mb=8192),
        "insufficient resources: memory, disk",
        id="too-big-for-any-cell-ever",
    ),
    pytest.param(
        [cell("a", available=(100, 4096, 8)), cell("b", "z2", available=(32, 4096, 0))],
        lrp("p", 0, memory_mb=512),
        "insufficient resources: memory",
        id="short-of-memory-everywhere",
    ),
    pytest.param(
        [cell("a", available=(1024, 4096, 0)), cell("b", "z2", available=(1024, 4096, 0))],
        lrp("p", 1),
        "insufficient resources: containers",
        id="short-of-containers-everywhere",
    ),
    pytest.param(
        [cell("mem", available=(1024, 100, 8)), cell("disk", "z2", available=(100, 4096, 8))],
        lrp("p", 0, memory_mb=512, disk_mb=512),
        "insufficient resources: memory, disk",
        id="each-cell-short-of-something-else",
    ),
    pytest.param([], lrp("p", 0), no_cell_for_stack(STACK), id="no-cells-at-all"),
]


@pytest.mark.parametrize(("cells", "work", "reason"), UNPLACED)
def test_unplaced_reasons(cells: list[CellSnapshot], work: LRPWork, reason: str) -> None:
    """An instance that cannot be placed is left unplaced (never failed) with the reason."""
    result = schedule(cells, [work])
    assert result.unplaced == ((work, reason),)
    assert result.placements == result.rejections == result.carried_over == ()


def test_no_cells_carries_tasks_and_leaves_lrps_unplaced() -> None:
    """With no cell reporting, Tasks are carried over and instances left unplaced."""
    result = schedule([], [task("t"), lrp("p", 2)])
    assert result.carried_over == (task("t"),)
    assert unplaced(result) == {("p", 2): no_cell_for_stack(STACK)}


def test_duplicate_instances_are_refused() -> None:
    """A batch naming the same (process_guid, index) twice is a caller's bug."""
    with pytest.raises(ValueError, match="LRP instance 'p/1' appears more than once"):
        schedule([cell("a")], [lrp("p", 1), lrp("p", 1, memory_mb=1)])
    schedule([cell("a")], [lrp("p", 1), lrp("p", 2), task("p")])


# -- Diego's simulation: cold starts ------------------------------------------------------


@pytest.mark.parametrize(
    ("count", "cells", "zones"),
    [
        (count, cells, zones)
        for count, cells in [(8, 4), (40, 10), (200, 20), (800, 40)]
        for zones in (1, 2, 4, 5)
        if cells % zones == 0
    ],
)
def test_cold_start_spreads_within_one_of_the_mean(count: int, cells: int, zones: int) -> None:
    """Diego's cold starts: every instance placed, each cell within one of the mean."""
    snapshots, work = cold_start(count, cells, zones)
    result = schedule(snapshots, work)
    assert len(result.placements) == count
    per_cell = Counter(p.cell_id for p in result.placements)
    mean = count / cells
    assert all(abs(per_cell[c.cell_id] - mean) <= 1 for c in snapshots), per_cell


def test_a_deploy_onto_an_uneven_cluster_fills_the_empty_cells() -> None:
    """Diego's imbalanced scenario: new instances go to the empty cells first."""
    cells = [
        cell(f"full-{i:02d}", total=(32768, 131072, 256), available=(32768 - 50 * 64, 131072, 206))
        for i in range(15)
    ] + [cell(f"empty-{i}", total=(32768, 131072, 256)) for i in range(5)]
    result = schedule(cells, [lrp(f"new-{k:03d}", 0) for k in range(100)])
    per_cell = Counter(p.cell_id for p in result.placements)
    assert sum(per_cell[f"empty-{i}"] for i in range(5)) >= 90


# -- the reference and the properties --------------------------------------------------------


def reference(
    cells: Sequence[CellSnapshot], work: Sequence[TaskWork | LRPWork]
) -> AuctionResult[TaskWork | LRPWork]:
    """The auction done the slow, obvious way: rank every cell for every piece of work."""
    tasks = sorted((w for w in work if isinstance(w, TaskWork)), key=batch_order)
    lrps = sorted((w for w in work if isinstance(w, LRPWork)), key=lrp_order)
    if not cells:
        return AuctionResult(
            (), (), tuple(tasks), tuple((w, no_cell_for_stack(w.stack)) for w in lrps)
        )
    free = {c.cell_id: c.available for c in cells}
    running = Counter({(c.cell_id, p): n for c in cells for p, n in c.lrp_counts.items()})
    zones = [c.zone for c in cells]
    placements: list[Placement[TaskWork | LRPWork]] = []
    rejections: list[Rejection] = []
    carried_over: list[TaskWork] = []
    left: list[tuple[LRPWork, str]] = []

    def never(item: TaskWork | LRPWork) -> str | None:
        need = item.resources
        compatible = [c for c in cells if c.serves(item.stack, item.root_fs)]
        if compatible and isinstance(item, TaskWork) and item.zones:
            have = {c.zone for c in compatible}
            compatible = [c for c in compatible if c.zone in item.zones]
            if not compatible:
                return no_cell_in_zones(item.stack, item.zones, have)
        if not compatible:
            if any(item.stack in c.stacks for c in cells):
                return no_cell_for_root_fs(item.stack, root_fs_provider(item.root_fs))
            return no_cell_for_stack(item.stack)
        if not any(need.fits(c.total) for c in compatible):
            return insufficient_resources(n for c in compatible for n in need.shortages(c.total))
        return None

    def place_task(item: TaskWork) -> None:
        reason = never(item)
        if reason is not None:
            rejections.append(Rejection(item, reason))
            return
        need = item.resources
        roomy = [
            c
            for c in cells
            if c.serves(item.stack, item.root_fs)
            and (not item.zones or c.zone in item.zones)
            and need.fits(free[c.cell_id])
        ]
        if not roomy:
            carried_over.append(item)
            return
        best = min(roomy, key=lambda c: (exact_score(c, free[c.cell_id], need), c.cell_id))
        free[best.cell_id] = free[best.cell_id].subtract(need)
        placements.append(Placement(item, best.cell_id))

    def place_lrp(item: LRPWork) -> None:
        reason = never(item)
        if reason is not None:
            left.append((item, reason))
            return
        need, guid = item.resources, item.process_guid
        compatible = [c for c in cells if c.serves(item.stack, item.root_fs)]
        ranking = zone_ranking(guid, item.index, zones)
        for zone in ranking if item.index <= 1 else ranking[:1]:
            roomy = [c for c in compatible if c.zone == zone and need.fits(free[c.cell_id])]
            if roomy:
                best = min(
                    roomy,
                    key=lambda c: (
                        running[c.cell_id, guid],
                        exact_score(c, free[c.cell_id], need),
                        c.cell_id,
                    ),
                )
                free[best.cell_id] = free[best.cell_id].subtract(need)
                running[best.cell_id, guid] += 1
                placements.append(Placement(item, best.cell_id))
                return
        if item.index > 1:
            left.append((item, insufficient_resources_in_zone(ranking[0])))
            return
        short = [set(need.shortages(free[c.cell_id])) for c in compatible]
        everywhere = set.intersection(*short)
        left.append((item, insufficient_resources(everywhere or set.union(*short))))

    for item in lrps:
        if item.index == 0:
            place_lrp(item)
    for task_item in tasks:
        place_task(task_item)
    for item in lrps:
        if item.index > 0:
            place_lrp(item)
    return AuctionResult(tuple(placements), tuple(rejections), tuple(carried_over), tuple(left))


SHAPES = [(8, 8, 3), (16, 8, 4), (4, 16, 3), (0, 8, 2), (8, 0, 1), (8, 8, 0), (12, 12, 5)]
PROCESSES = ["p0", "p1", "p2", "p3", "p4"]


@st.composite
def lrp_cells(draw: st.DrawFn, cell_id: str, zones: Sequence[str]) -> CellSnapshot:
    """A cell of a common shape or a random one, part used, running some instances."""
    memory, disk, containers = draw(
        st.one_of(st.sampled_from(SHAPES), st.tuples(*[st.integers(0, 16)] * 3))
    )
    available = Resources(
        draw(st.integers(0, memory)), draw(st.integers(0, disk)), draw(st.integers(0, containers))
    )
    stacks = draw(st.sampled_from([("s1",), ("s2",), ("s1", "s2"), ("s1",), ()]))
    providers = draw(st.sampled_from([BOTH, BOTH, frozenset({"preloaded"}), frozenset()]))
    counts = draw(st.dictionaries(st.sampled_from(PROCESSES), st.integers(0, 3), max_size=3))
    return CellSnapshot(
        cell_id,
        draw(st.sampled_from(zones)),
        frozenset(stacks),
        providers,
        Resources(memory, disk, containers),
        available,
        counts,
    )


@st.composite
def lrp_clusters(draw: st.DrawFn) -> list[CellSnapshot]:
    """Up to 12 cells in one to three zones."""
    zones = ["z1", "z2", "z3"][: draw(st.integers(1, 3))]
    return [draw(lrp_cells(f"cell-{i:02d}", zones)) for i in range(draw(st.integers(0, 12)))]


@st.composite
def lrp_batches(draw: st.DrawFn) -> list[LRPWork]:
    """Instances of up to five processes, each of one stack, root_fs and (mostly) size."""
    work: list[LRPWork] = []
    sizes = st.integers(0, 8) | st.sampled_from([0, 2, 4])
    for guid in draw(st.lists(st.sampled_from(PROCESSES), unique=True, max_size=5)):
        stack = draw(st.sampled_from(["s1", "s1", "s2", "s3"]))
        root_fs = draw(st.sampled_from(["", "", "docker:///org/img", "oci:///x"]))
        memory_mb, disk_mb = draw(sizes), draw(sizes)
        for index in draw(st.lists(st.integers(0, 7), unique=True, max_size=8)):
            if draw(st.integers(0, 9)) == 0:  # now and then an instance of another size
                memory_mb, disk_mb = draw(sizes), draw(sizes)
            work.append(LRPWork(guid, index, "tests", stack, root_fs, memory_mb, disk_mb))
    return work


@st.composite
def mixed_batches(draw: st.DrawFn) -> list[TaskWork | LRPWork]:
    """LRP instances and Tasks, in any order."""
    work: list[TaskWork | LRPWork] = [*draw(lrp_batches()), *draw(batches())]
    return draw(st.permutations(work))


def check_invariants(
    cells: Sequence[CellSnapshot],
    work: Sequence[TaskWork | LRPWork],
    result: AuctionResult[TaskWork | LRPWork],
) -> None:
    """Fail unless ``result`` is safe and complete for ``cells`` and ``work``."""
    out: list[TaskWork | LRPWork] = [p.work for p in result.placements]
    out += [r.work for r in result.rejections]
    out += list(result.carried_over) + [w for w, _ in result.unplaced]
    assert Counter(out) == Counter(work)
    assert all(isinstance(r.work, TaskWork) for r in result.rejections)

    by_id = {c.cell_id: c for c in cells}
    left = {c.cell_id: c.available for c in cells}
    zones = [c.zone for c in cells]
    for placement in result.placements:
        snapshot, item = by_id[placement.cell_id], placement.work
        assert snapshot.serves(item.stack, item.root_fs)
        left[snapshot.cell_id] = left[snapshot.cell_id].subtract(item.resources)
        if isinstance(item, TaskWork) and item.zones:
            assert snapshot.zone in item.zones
        if isinstance(item, LRPWork) and item.index > 1:
            assert snapshot.zone == zone_ranking(item.process_guid, item.index, zones)[0]

    for item, reason in result.unplaced:
        assert reason.startswith((NO_COMPATIBLE_CELL, INSUFFICIENT_RESOURCES)), reason
        if reason.startswith(INSUFFICIENT_RESOURCES) and item.index <= 1:
            # Free room only shrinks in a batch: what did not fit then does not fit now.
            compatible = [c for c in cells if c.serves(item.stack, item.root_fs)]
            assert not any(item.resources.fits(left[c.cell_id]) for c in compatible)


@PROPERTY
@given(lrp_clusters(), mixed_batches())
def test_safety_invariants(cells: list[CellSnapshot], work: list[TaskWork | LRPWork]) -> None:
    """Never over capacity, every piece of work once, only on compatible cells, the zone
    rule for index > 1 never broken, and an unplaced instance really had no room."""
    check_invariants(cells, work, schedule(cells, work))


@PROPERTY
@given(lrp_clusters(), mixed_batches())
def test_same_result_as_the_reference(
    cells: list[CellSnapshot], work: list[TaskWork | LRPWork]
) -> None:
    """Heaps, trees and per-process heaps place exactly as ranking every cell would."""
    assert schedule(cells, work) == reference(cells, work)


@PROPERTY
@given(lrp_clusters(), mixed_batches())
def test_trees_and_crowded_heaps_match_the_reference(
    cells: list[CellSnapshot], work: list[TaskWork | LRPWork]
) -> None:
    """With every zone group on a tree, and every size and process on its own heap, at
    once, the result is still the reference's."""
    with mock.patch.object(auction, "_PATIENCE", 1), mock.patch.object(auction, "_CROWDING", 0):
        result = schedule(cells, work)
        with mock.patch.object(auction, "_TREE_BUDGET", 0):
            sized = schedule(cells, work)
    assert result == sized == reference(cells, work)


@PROPERTY
@given(lrp_clusters(), mixed_batches(), st.randoms(use_true_random=False))
def test_order_of_input_does_not_matter(
    cells: list[CellSnapshot], work: list[TaskWork | LRPWork], rng: random.Random
) -> None:
    """Shuffling the cells or the work changes nothing."""
    expected = schedule(cells, work)
    rng.shuffle(cells)
    rng.shuffle(work)
    assert schedule(cells, work) == expected


@st.composite
def roomy_clusters(draw: st.DrawFn) -> list[CellSnapshot]:
    """Up to 10 cells in one to three zones, each with room for any whole batch."""
    zones = ["z1", "z2", "z3"][: draw(st.integers(1, 3))]
    big = (10_000, 10_000, 1_000)
    return [
        cell(
            f"cell-{i:02d}",
            draw(st.sampled_from(zones)),
            total=big,
            available=(draw(st.integers(1000, 10_000)), 10_000, 1_000),
            stacks=draw(st.sampled_from([("s1",), ("s2",), ("s1", "s2")])),
        )
        for i in range(draw(st.integers(1, 10)))
    ]


@PROPERTY
@given(roomy_clusters(), lrp_batches(), batches())
def test_one_instance_per_cell_while_the_cells_allow(
    cells: list[CellSnapshot], lrps: list[LRPWork], tasks: list[TaskWork]
) -> None:
    """At most one instance of a process per cell whenever its instances bound for each
    zone are no more than the zone's compatible cells with room (in one zone: whenever
    the batch's instances of the process are no more than the compatible cells with room).

    Every cell here has room for the whole batch, so a compatible cell never runs out;
    an instance is bound for its preferred zone (index > 1) or for the first zone of its
    ranking with a compatible cell (index 0 and 1).
    """
    work: list[TaskWork | LRPWork] = [*lrps, *tasks]
    result = schedule(cells, work)
    zones = [c.zone for c in cells]
    placed_on = Counter(
        (p.work.process_guid, p.cell_id) for p in result.placements if isinstance(p.work, LRPWork)
    )
    by_process: dict[str, list[LRPWork]] = {}
    for item in lrps:
        by_process.setdefault(item.process_guid, []).append(item)
    for guid, items in by_process.items():
        compatible = [c for c in cells if c.serves(items[0].stack, items[0].root_fs)]
        if not compatible:
            continue
        bound: Counter[str] = Counter()
        for item in items:
            ranking = zone_ranking(guid, item.index, zones)
            if item.index > 1:
                bound[ranking[0]] += 1
            else:
                bound[next(z for z in ranking if any(c.zone == z for c in compatible))] += 1
        room = Counter(c.zone for c in compatible)
        if all(count <= room[zone] for zone, count in bound.items()):
            assert all(placed_on[guid, c.cell_id] <= 1 for c in compatible), placed_on


def test_a_process_crowding_a_zone_gets_its_own_heap_and_stays_exact() -> None:
    """A process with several instances per cell, on a busy cluster of mixed shapes, takes
    the per-process heaps, the trees and the per-size heaps, places as the reference does
    (and as it does with every group, size and process switched at once), and leaves
    work unplaced and carried over."""
    rng = random.Random(5)
    shapes = [(4096, 16384, 32), (8192, 16384, 64)]

    def available(i: int) -> tuple[int, int, int]:
        if i % 3 == 0:
            return (rng.randint(2048, 4096), 16384, rng.randint(16, 32))
        return (rng.randint(16, 512), 16384, rng.randint(1, 12))

    cells = [
        cell(
            f"cell-{i:03d}",
            f"z{i % 2}",
            total=shapes[i % 2],
            available=available(i),
            lrp_counts={"big": rng.randint(0, 2)} if i % 4 == 0 else {},
        )
        for i in range(60)
    ]
    work: list[TaskWork | LRPWork] = [*instances("big", 150, 48), *instances("huge", 12, 3500)]
    work += [w for k in range(40) for w in instances(f"app-{k:02d}", rng.randint(1, 6), 96)]
    work += [task(f"t{i:03d}", rng.randint(1, 512), rng.randint(1, 1024)) for i in range(150)]
    work += [task(f"huge-{i}", 3500, 1024) for i in range(8)]
    crowded = mock.patch.object(
        auction._Cells,
        "_crowded_best",
        autospec=True,
        side_effect=auction._Cells._crowded_best,
    )
    tree = mock.patch.object(
        auction._FitTree,
        "best_excluding",
        autospec=True,
        side_effect=auction._FitTree.best_excluding,
    )
    sized = mock.patch.object(
        auction, "_search_sized", autospec=True, side_effect=auction._search_sized
    )
    with crowded as crowded_spy, tree as tree_spy, sized as sized_spy:
        result = schedule(cells, work)
    assert crowded_spy.called
    assert tree_spy.called
    assert sized_spy.called
    assert result == reference(cells, work)
    assert result.unplaced
    assert result.carried_over
    with mock.patch.object(auction, "_PATIENCE", 1), mock.patch.object(auction, "_CROWDING", 0):
        assert schedule(cells, work) == result
        with mock.patch.object(auction, "_TREE_BUDGET", 0):
            assert schedule(cells, work) == result


# -- timing: a script, not a test ---------------------------------------------------------------
