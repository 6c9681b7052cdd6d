"""The auction: feasibility, rejection reasons, carry-over, balancing, order and safety.

The property tests hold ``schedule`` to a naive reference written out here (every
cell scored for every Task, exactly, with fractions) and to the safety invariants:
never over capacity, every Task accounted for once, nothing on an incompatible cell.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from fractions import Fraction
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from diego.models.actions import RunAction
from diego.models.task import Task
from diego.models.work import (
    CONTAINERS,
    DISK,
    MEMORY,
    CellSnapshot,
    Resources,
    TaskWork,
    root_fs_provider,
)
from diego.scheduling import auction
from diego.scheduling.auction import (
    INSUFFICIENT_RESOURCES,
    NO_COMPATIBLE_CELL,
    AuctionResult,
    Placement,
    Rejection,
    batch_order,
    insufficient_resources,
    no_cell_for_root_fs,
    no_cell_for_stack,
    no_cell_in_zones,
    schedule,
    score,
)

PROPERTY = settings(max_examples=200, deadline=None, database=None)

STACK = "cflinuxfs4"
BOTH = frozenset({"preloaded", "docker"})


def cell(
    cell_id: str,
    total: tuple[int, int, int] = (1024, 4096, 8),
    available: tuple[int, int, int] | None = None,
    stacks: Sequence[str] = (STACK,),
    providers: frozenset[str] = BOTH,
    zone: str = "z1",
) -> CellSnapshot:
    """A cell snapshot; it is empty unless ``available`` says otherwise."""
    return CellSnapshot(
        cell_id,
        zone,
        frozenset(stacks),
        providers,
        Resources(*total),
        Resources(*(available or total)),
    )


def task(
    guid: str,
    memory_mb: int = 64,
    disk_mb: int = 128,
    stack: str = STACK,
    root_fs: str = "",
    zones: Sequence[str] = (),
) -> TaskWork:
    """A piece of Task work in the ``tests`` domain."""
    return TaskWork(guid, "tests", stack, root_fs, memory_mb, disk_mb, frozenset(zones))


def where(result: AuctionResult) -> dict[str, str]:
    """Placed task guid → cell_id."""
    return {p.work.task_guid: p.cell_id for p in result.placements}


def reasons(result: AuctionResult) -> dict[str, str]:
    """Rejected task guid → reason."""
    return {r.work.task_guid: r.reason for r in result.rejections}


def carried(result: AuctionResult) -> list[str]:
    """Carried-over task guids, in order."""
    return [w.task_guid for w in result.carried_over]


# -- the reasons, worded ------------------------------------------------------


def test_reasons_are_worded_like_diego() -> None:
    """The reason helpers fill the named formats, naming the stack, provider or resources."""
    assert (
        no_cell_for_stack("windows") == "found no compatible cell: no cell serves stack 'windows'"
    )
    assert no_cell_for_root_fs("s", "docker") == (
        "found no compatible cell: no cell serving stack 's' has root_fs provider 'docker'"
    )
    assert insufficient_resources([DISK, MEMORY]) == "insufficient resources: memory, disk"
    assert insufficient_resources([CONTAINERS, MEMORY, MEMORY]) == (
        "insufficient resources: memory, containers"
    )
    assert no_cell_for_stack("x").startswith(NO_COMPATIBLE_CELL)
    assert insufficient_resources([DISK]).startswith(INSUFFICIENT_RESOURCES)


@pytest.mark.parametrize(
    ("root_fs", "provider"),
    [
        ("", "preloaded"),
        ("preloaded:cflinuxfs4", "preloaded"),
        ("docker:///library/ubuntu#22.04", "docker"),
        ("docker://index.docker.io/library/ubuntu", "docker"),
        ("oci:///img", "oci"),
    ],
)
def test_root_fs_provider_is_the_scheme(root_fs: str, provider: str) -> None:
    """An empty root_fs needs the preloaded provider; otherwise the URL scheme names it."""
    assert root_fs_provider(root_fs) == provider


# -- rejections and carry-over, table by table --------------------------------

REJECTIONS = [
    pytest.param(
        [cell("a")],
        task("t", stack="windows"),
        "found no compatible cell: no cell serves stack 'windows'",
        id="no-cell-serves-stack",
    ),
    pytest.param(
        [cell("a", providers=frozenset({"preloaded"}))],
        task("t", root_fs="docker:///library/ubuntu"),
        "found no compatible cell: no cell serving stack 'cflinuxfs4' "
        "has root_fs provider 'docker'",
        id="no-docker-provider",
    ),
    pytest.param(
        [
            cell("a", providers=frozenset({"docker"})),
            cell("b", stacks=["other"], providers=frozenset({"preloaded"})),
        ],
        task("t", root_fs="preloaded:cflinuxfs4"),
        "found no compatible cell: no cell serving stack 'cflinuxfs4' "
        "has root_fs provider 'preloaded'",
        id="preloaded-provider-only-on-another-stack",
    ),
    pytest.param(
        [cell("a", providers=frozenset({"docker"}))],
        task("t", root_fs=""),
        "found no compatible cell: no cell serving stack 'cflinuxfs4' "
        "has root_fs provider 'preloaded'",
        id="empty-root-fs-needs-preloaded",
    ),
    pytest.param(
        [cell("a", total=(1024, 4096, 8))],
        task("t", memory_mb=1025, disk_mb=10),
        "insufficient resources: memory",
        id="memory",
    ),
    pytest.param(
        [cell("a", total=(1024, 4096, 8))],
        task("t", memory_mb=10, disk_mb=4097),
        "insufficient resources: disk",
        id="disk",
    ),
    pytest.param(
        [cell("a", total=(1024, 4096, 0))],
        task("t", memory_mb=0, disk_mb=0),
        "insufficient resources: containers",
        id="containers",
    ),
    pytest.param(
        [cell("a", total=(1024, 4096, 8))],
        task("t", memory_mb=2048, disk_mb=8192),
        "insufficient resources: memory, disk",
        id="memory-and-disk",
    ),
    pytest.param(
        [cell("a", total=(4096, 1024, 8)), cell("b", total=(1024, 4096, 8))],
        task("t", memory_mb=2048, disk_mb=2048),
        "insufficient resources: memory, disk",
        id="each-cell-short-of-something",
    ),
    pytest.param(
        [
            cell("small", total=(512, 512, 8)),
            cell("big-but-other-stack", total=(8192, 8192, 8), stacks=["other"]),
        ],
        task("t", memory_mb=1024, disk_mb=128),
        "insufficient resources: memory",
        id="only-compatible-cells-count",
    ),
]


@pytest.mark.parametrize(("cells", "work", "reason"), REJECTIONS)
def test_rejections(cells: list[CellSnapshot], work: TaskWork, reason: str) -> None:
    """A Task no cell could ever run is rejected, with the reason saying why."""
    result = schedule(cells, [work])
    assert result.rejections == (Rejection(work, reason),)
    assert result.placements == result.carried_over == ()


CARRY_OVERS = [
    pytest.param(
        [cell("a", total=(1024, 4096, 8), available=(1024, 4096, 0))],
        task("t"),
        id="no-container-free",
    ),
    pytest.param(
        [cell("a", total=(1024, 4096, 8), available=(100, 4096, 8))],
        task("t", memory_mb=512),
        id="memory-not-free",
    ),
    pytest.param(
        [cell("a", total=(1024, 4096, 8), available=(1024, 100, 8))],
        task("t", disk_mb=512),
        id="disk-not-free",
    ),
    pytest.param(
        [
            cell("mem", total=(1024, 4096, 8), available=(1024, 100, 8)),
            cell("disk", total=(1024, 4096, 8), available=(100, 4096, 8)),
        ],
        task("t", memory_mb=512, disk_mb=512),
        id="free-memory-and-free-disk-on-different-cells",
    ),
]


@pytest.mark.parametrize(("cells", "work"), CARRY_OVERS)
def test_busy_cluster_carries_over(cells: list[CellSnapshot], work: TaskWork) -> None:
    """A Task that some compatible cell could hold, but none has room for now, waits."""
    result = schedule(cells, [work])
    assert result.carried_over == (work,)
    assert result.placements == result.rejections == ()


def test_no_cells_at_all_carries_everything_over() -> None:
    """With no cell reporting yet, nothing can be judged: every Task waits for a batch."""
    work = [task("b"), task("a", stack="windows")]
    result = schedule([], work)
    assert carried(result) == ["a", "b"]
    assert result.placements == result.rejections == ()


def test_second_task_is_carried_over_once_the_first_took_the_room() -> None:
    """Reservations are made as the batch goes: one free container serves one Task."""
    result = schedule([cell("a", available=(1024, 4096, 1))], [task("t1"), task("t2")])
    assert where(result) == {"t1": "a"}
    assert carried(result) == ["t2"]


def test_all_three_outcomes_in_one_batch() -> None:
    """A batch can place, reject and carry over at once, each Task exactly once."""
    cells = [cell("a", total=(1024, 4096, 8), available=(256, 4096, 8))]
    work = [task("fits"), task("never", memory_mb=2048), task("later", memory_mb=512)]
    result = schedule(cells, work)
    assert where(result) == {"fits": "a"}
    assert reasons(result) == {"never": "insufficient resources: memory"}
    assert carried(result) == ["later"]


# -- feasibility ---------------------------------------------------------------


def test_a_task_naming_zones_goes_only_to_their_cells() -> None:
    """A Task with zones is placed only in them, even when another zone has more room;
    waits (is carried over) when they are full; and is rejected, naming the zones
    that do have cells, when none of its zones has a compatible cell."""
    cells = [
        cell("a", zone="z1", available=(128, 4096, 8)),
        cell("b", zone="z2"),
        cell("c", zone="z3", stacks=("other",)),
    ]
    work = [
        task("in-z1", 100, zones=["z1"]),
        task("in-z1-full", 64, zones=["z1"]),
        task("in-z1-or-z2", 64, zones=["z1", "z2"]),
        task("anywhere", 64),
        task("in-z3", 64, zones=["z3"]),
        task("in-z9", 64, zones=["z9", "z8"]),
    ]
    result = schedule(cells, work)
    assert where(result) == {"in-z1": "a", "in-z1-or-z2": "b", "anywhere": "b"}
    assert carried(result) == ["in-z1-full"]
    assert reasons(result) == {
        "in-z3": no_cell_in_zones(STACK, ["z3"], ["z1", "z2"]),
        "in-z9": "found no compatible cell: no cell serving stack 'cflinuxfs4' is in "
        "zone 'z8' or 'z9' (cells are in 'z1', 'z2')",
    }


def test_work_from_a_task_carries_its_zones() -> None:
    """``TaskWork.from_task`` keeps the Task's zones, as a set."""
    full = Task(
        task_guid="g",
        domain="d",
        stack="s",
        action=RunAction(path="/bin/true"),
        zones=("z2", "z1"),
    )
    assert TaskWork.from_task(full).zones == {"z1", "z2"}


def test_only_cells_serving_the_stack_and_root_fs_are_used() -> None:
    """Each Task goes to a cell that lists its stack and has its root_fs provider."""
    cells = [
        cell("docker-only", stacks=[STACK, "other"], providers=frozenset({"docker"})),
        cell("preloaded-only", stacks=[STACK], providers=frozenset({"preloaded"})),
        cell("other-stack", stacks=["other"], providers=BOTH),
    ]
    work = [
        task("d", root_fs="docker:///org/img#1"),
        task("p", root_fs="preloaded:cflinuxfs4"),
        task("e"),
        task("o", stack="other"),
    ]
    placed = where(schedule(cells, work))
    assert placed["d"] == "docker-only"
    assert placed["p"] == placed["e"] == "preloaded-only"
    assert placed["o"] in {"docker-only", "other-stack"}


def test_a_cell_may_serve_several_stacks() -> None:
    """A cell listing two stacks takes Tasks of both."""
    cells = [cell("multi", stacks=["s1", "s2"])]
    result = schedule(cells, [task("a", stack="s1"), task("b", stack="s2")])
    assert where(result) == {"a": "multi", "b": "multi"}


# -- scoring and balancing ------------------------------------------------------


def test_equal_tasks_spread_evenly_over_equal_cells() -> None:
    """Ten equal Tasks onto five equal cells: two each."""
    cells = [cell(f"cell-{i}") for i in range(5)]
    result = schedule(cells, [task(f"t{i}") for i in range(10)])
    assert Counter(where(result).values()) == {f"cell-{i}": 2 for i in range(5)}


def test_simulation_spread_is_within_one_of_the_mean() -> None:
    """Diego's simulation check: 200 equal Tasks onto 20 equal cells land 10 ± 1 per cell."""
    cells = [cell(f"cell-{i:02d}", total=(32768, 131072, 256)) for i in range(20)]
    result = schedule(cells, [task(f"t{i:03d}", 512, 1024) for i in range(200)])
    counts = Counter(where(result).values())
    assert len(result.placements) == 200
    assert all(9 <= counts[c.cell_id] <= 11 for c in cells)


def test_uneven_start_is_evened_out() -> None:
    """Work goes to the emptier cells first, until the cells are level."""
    cells = [
        cell("full-ish", total=(1000, 1000, 10), available=(400, 400, 4)),
        cell("empty", total=(1000, 1000, 10)),
    ]
    result = schedule(cells, [task(f"t{i}", 100, 100) for i in range(8)])
    counts = Counter(where(result).values())
    assert counts == {"empty": 7, "full-ish": 1}


def test_cell_with_more_free_memory_is_preferred() -> None:
    """Of two cells alike but for free memory, the one with more free wins."""
    cells = [
        cell("tight", total=(4096, 4096, 8), available=(1024, 4096, 8)),
        cell("roomy", total=(4096, 4096, 8), available=(3072, 4096, 8)),
    ]
    assert where(schedule(cells, [task("t")])) == {"t": "roomy"}


def test_lower_fraction_used_wins_across_cell_sizes() -> None:
    """Scores are fractions of each cell's totals: an idle small cell beats a big cell
    that has more memory free but most of it in use."""
    cells = [
        cell("big", total=(8192, 4096, 8), available=(2048, 4096, 8)),
        cell("small", total=(1024, 4096, 8)),
    ]
    assert where(schedule(cells, [task("t")])) == {"t": "small"}


def test_containers_count_in_the_score() -> None:
    """With memory and disk alike, the cell running fewer containers wins."""
    cells = [
        cell("busy", total=(1024, 1024, 10), available=(1024, 1024, 2)),
        cell("idle", total=(1024, 1024, 10), available=(1024, 1024, 9)),
    ]
    assert where(schedule(cells, [task("t", 0, 0)])) == {"t": "idle"}


def test_ties_go_to_the_smallest_cell_id() -> None:
    """Equal scores are broken by cell_id, whatever order the cells come in."""
    cells = [cell("c"), cell("a"), cell("b")]
    assert where(schedule(cells, [task("t")])) == {"t": "a"}


def test_score_is_diegos_mean_fraction_used_after_placing() -> None:
    """``score`` is (memory + disk + containers fraction used after the Task) / 3."""
    snapshot = cell("a", total=(1000, 2000, 10), available=(600, 1000, 5))
    assert score(snapshot, task("t", 100, 500)) == pytest.approx((0.5 + 0.75 + 0.6) / 3)


# -- batch order -------------------------------------------------------------------


def test_batch_order_is_biggest_memory_then_disk_then_guid() -> None:
    """The batch is sorted by memory, then disk, both descending, then by guid."""
    work = [task("c", 1, 1), task("b", 2, 1), task("a", 2, 1), task("d", 2, 5)]
    assert [w.task_guid for w in sorted(work, key=batch_order)] == ["d", "a", "b", "c"]


def test_big_task_is_not_starved_by_small_ones() -> None:
    """When only the big Task or the small ones fit, the big one is placed."""
    cells = [cell("a", total=(1024, 4096, 8), available=(512, 4096, 8))]
    work = [task("small-1", 256), task("small-2", 256), task("big", 512)]
    result = schedule(cells, work)
    assert where(result) == {"big": "a"}
    assert carried(result) == ["small-1", "small-2"]


def test_results_list_tasks_in_batch_order() -> None:
    """Placements, rejections and carry-overs each come in batch order."""
    cells = [cell("a", total=(1024, 4096, 8), available=(1024, 4096, 2))]
    work = [task(f"t{i}", 10 * i) for i in range(5)]
    result = schedule(cells, work)
    assert [p.work.task_guid for p in result.placements] == ["t4", "t3"]
    assert carried(result) == ["t2", "t1", "t0"]


# -- zero-sized work ----------------------------------------------------------


def test_zero_memory_tasks_need_only_a_container() -> None:
    """A Task with no memory or disk fits a cell with none free, up to its containers."""
    cells = [cell("a", total=(1024, 1024, 3), available=(0, 0, 2))]
    result = schedule(cells, [task(f"t{i}", 0, 0) for i in range(3)])
    assert where(result) == {"t0": "a", "t1": "a"}
    assert carried(result) == ["t2"]


def test_cells_with_zero_memory_or_disk_totals() -> None:
    """A cell with no memory or no disk at all still takes Tasks that need none of it."""
    cells = [cell("no-mem", total=(0, 100, 2)), cell("no-disk", total=(100, 0, 2))]
    result = schedule(cells, [task("zero", 0, 0), task("m", 10, 0), task("d", 0, 10)])
    assert where(result) == {"zero": "no-disk", "m": "no-disk", "d": "no-mem"}


# -- determinism and input checks ------------------------------------------------


def test_same_input_in_any_order_gives_the_same_result() -> None:
    """The result depends on the cells and the work, not on the order they come in."""
    rng = random.Random(7)
    cells = [
        cell(f"cell-{i}", total=(1024 * (1 + i % 3), 4096, 8), available=(1024, 2048, 4))
        for i in range(12)
    ]
    work = [task(f"t{i}", rng.choice([0, 64, 256, 512]), rng.choice([0, 128])) for i in range(80)]
    expected = schedule(cells, work)
    for _ in range(5):
        rng.shuffle(cells)
        rng.shuffle(work)
        assert schedule(cells, work) == expected


def test_duplicate_guids_or_cell_ids_are_refused() -> None:
    """A batch naming a Task twice, or a snapshot naming a cell twice, is a caller's bug."""
    with pytest.raises(ValueError, match="task_guid 't' appears more than once"):
        schedule([cell("a")], [task("t"), task("t")])
    with pytest.raises(ValueError, match="cell_id 'a' appears more than once"):
        schedule([cell("a"), cell("a")], [task("t")])


def test_resources_helpers() -> None:
    """``fits`` compares resource by resource, ``subtract`` refuses to go negative."""
    room = Resources(100, 200, 2)
    assert Resources(100, 200, 2).fits(room)
    assert not Resources(101, 0, 0).fits(room)
    assert Resources(150, 250, 3).shortages(room) == (MEMORY, DISK, CONTAINERS)
    assert Resources(10, 20, 1).shortages(room) == ()
    assert room.subtract(Resources(40, 200, 1)) == Resources(60, 0, 1)
    with pytest.raises(ValueError, match="does not fit"):
        room.subtract(Resources(0, 201, 0))


def test_snapshots_and_work_refuse_impossible_numbers() -> None:
    """Negative amounts, or more available than total, are refused when built."""
    with pytest.raises(ValueError, match="memory_mb must not be negative"):
        Resources(-1, 0, 0)
    with pytest.raises(ValueError, match="disk_mb must not be negative"):
        task("t", 0, -5)
    with pytest.raises(ValueError, match=r"available .* exceeds total"):
        cell("a", total=(10, 10, 1), available=(11, 10, 1))


def test_work_from_a_task() -> None:
    """``TaskWork.from_task`` takes the guid, domain, stack, root_fs and sizes."""
    full = Task(
        task_guid="g",
        domain="d",
        stack="s",
        root_fs="docker:///x",
        memory_mb=5,
        disk_mb=6,
        action=RunAction(path="/bin/true"),
    )
    assert TaskWork.from_task(full) == TaskWork("g", "d", "s", "docker:///x", 5, 6)
    assert TaskWork.from_task(full).resources == Resources(5, 6, 1)


def test_a_busy_cluster_uses_the_fit_tree_and_places_the_same() -> None:
    """When the least-used cells lack room, the tree finds the same cells the heap would."""
    rng = random.Random(11)
    cells = [
        cell(f"cell-{i:03d}", total=(4096, 16384, 32), available=(rng.randint(0, 4096), 16384, 32))
        for i in range(60)
    ]
    work = [task(f"t{i:04d}", rng.randint(1, 2048), rng.randint(1, 4096)) for i in range(600)]
    result = schedule(cells, work)
    assert result == reference(cells, work)
    assert result.carried_over  # the cluster filled up on the way
    with mock.patch.object(auction, "_PATIENCE", 1):
        assert schedule(cells, work) == result


# -- the reference and the properties -----------------------------------------------


def exact_score(snapshot: CellSnapshot, free: Resources, need: Resources) -> Fraction:
    """The sum of fractions used after placing ``need``, exactly (a zero total adds 0)."""
    total = snapshot.total
    pairs = (
        (free.memory_mb - need.memory_mb, total.memory_mb),
        (free.disk_mb - need.disk_mb, total.disk_mb),
        (free.containers - need.containers, total.containers),
    )
    return sum((Fraction(whole - left, whole) for left, whole in pairs if whole), Fraction(0))


def reference(cells: Sequence[CellSnapshot], work: Sequence[TaskWork]) -> AuctionResult:
    """The auction done the slow, obvious way: score every cell for every Task."""
    ordered = sorted(work, key=batch_order)
    if not cells:
        return AuctionResult((), (), tuple(ordered))
    free = {c.cell_id: c.available for c in cells}
    placements: list[Placement] = []
    rejections: list[Rejection] = []
    carried_over: list[TaskWork] = []
    for item in ordered:
        need = item.resources
        serving = [c for c in cells if c.serves(item.stack, item.root_fs)]
        compatible = [c for c in serving if not item.zones or c.zone in item.zones]
        if not compatible:
            if serving:
                have = {c.zone for c in serving}
                reason = no_cell_in_zones(item.stack, item.zones, have)
            elif any(item.stack in c.stacks for c in cells):
                reason = no_cell_for_root_fs(item.stack, root_fs_provider(item.root_fs))
            else:
                reason = no_cell_for_stack(item.stack)
            rejections.append(Rejection(item, reason))
        elif not any(need.fits(c.total) for c in compatible):
            short = [name for c in compatible for name in need.shortages(c.total)]
            rejections.append(Rejection(item, insufficient_resources(short)))
        else:
            roomy = [c for c in compatible if need.fits(free[c.cell_id])]
            if not roomy:
                carried_over.append(item)
                continue
            best = min(roomy, key=lambda c: (exact_score(c, free[c.cell_id], need), c.cell_id))
            free[best.cell_id] = free[best.cell_id].subtract(need)
            placements.append(Placement(item, best.cell_id))
    return AuctionResult(tuple(placements), tuple(rejections), tuple(carried_over))


SHAPES = [(8, 8, 2), (16, 8, 4), (4, 16, 3), (0, 8, 2), (8, 0, 1), (8, 8, 0), (12, 12, 5)]


@st.composite
def snapshots(draw: st.DrawFn, cell_id: str) -> CellSnapshot:
    """A cell of a common shape or a random one, with some of it in use."""
    memory, disk, containers = draw(
        st.one_of(st.sampled_from(SHAPES), st.tuples(*[st.integers(0, 16)] * 3))
    )
    available = Resources(
        draw(st.integers(0, memory)), draw(st.integers(0, disk)), draw(st.integers(0, containers))
    )
    stacks = draw(st.sampled_from([("s1",), ("s2",), ("s1", "s2"), ()]))
    providers = draw(
        st.sampled_from([BOTH, frozenset({"preloaded"}), frozenset({"docker"}), frozenset()])
    )
    zone = draw(st.sampled_from(["z1", "z2"]))
    total = Resources(memory, disk, containers)
    return CellSnapshot(cell_id, zone, frozenset(stacks), providers, total, available)


@st.composite
def clusters(draw: st.DrawFn) -> list[CellSnapshot]:
    """Up to 12 cells with distinct ids."""
    count = draw(st.integers(0, 12))
    return [draw(snapshots(f"cell-{i:02d}")) for i in range(count)]


@st.composite
def batches(draw: st.DrawFn) -> list[TaskWork]:
    """Up to 30 Tasks with distinct guids, sizes often repeated."""
    count = draw(st.integers(0, 30))
    sizes = st.integers(0, 10) | st.sampled_from([0, 2, 4])
    return [
        TaskWork(
            f"task-{i:02d}",
            "tests",
            draw(st.sampled_from(["s1", "s2", "s3"])),
            draw(st.sampled_from(["", "preloaded:s1", "docker:///org/img", "oci:///x"])),
            draw(sizes),
            draw(sizes),
            draw(st.sampled_from([(), (), ("z1",), ("z2",), ("z1", "z2"), ("z3",)])),
        )
        for i in range(count)
    ]


def eligible(snapshot: CellSnapshot, item: TaskWork) -> bool:
    """Whether ``snapshot`` serves ``item`` and is in one of its zones (if it names any)."""
    in_zone = not item.zones or snapshot.zone in item.zones
    return in_zone and snapshot.serves(item.stack, item.root_fs)


def check_invariants(
    cells: Sequence[CellSnapshot], work: Sequence[TaskWork], result: AuctionResult
) -> None:
    """Fail unless ``result`` is safe and complete for ``cells`` and ``work``."""
    by_id = {c.cell_id: c for c in cells}
    out = [p.work for p in result.placements]
    out += [r.work for r in result.rejections] + list(result.carried_over)
    assert sorted(w.task_guid for w in out) == sorted(w.task_guid for w in work)
    assert set(out) == set(work)

    left = {c.cell_id: c.available for c in cells}
    for placement in result.placements:
        snapshot = by_id[placement.cell_id]
        assert snapshot.serves(placement.work.stack, placement.work.root_fs)
        assert not placement.work.zones or snapshot.zone in placement.work.zones
        left[snapshot.cell_id] = left[snapshot.cell_id].subtract(placement.work.resources)

    for rejection in result.rejections:
        item = rejection.work
        compatible = [c for c in cells if eligible(c, item)]
        assert not any(item.resources.fits(c.total) for c in compatible)
        prefix = INSUFFICIENT_RESOURCES if compatible else NO_COMPATIBLE_CELL
        assert rejection.reason.startswith(prefix)

    for item in result.carried_over:
        compatible = [c for c in cells if eligible(c, item)]
        assert not cells or any(item.resources.fits(c.total) for c in compatible)
        # Free room only shrinks in a batch: what did not fit then does not fit now.
        assert not any(item.resources.fits(left[c.cell_id]) for c in compatible)


@PROPERTY
@given(clusters(), batches())
def test_safety_invariants(cells: list[CellSnapshot], work: list[TaskWork]) -> None:
    """Never over capacity, each Task once, only on compatible cells, and every rejection
    and carry-over justified."""
    check_invariants(cells, work, schedule(cells, work))


@PROPERTY
@given(clusters(), batches())
def test_same_result_as_the_reference(cells: list[CellSnapshot], work: list[TaskWork]) -> None:
    """The heaps and trees place exactly as scoring every cell for every Task would."""
    assert schedule(cells, work) == reference(cells, work)


@PROPERTY
@given(clusters(), batches())
def test_fit_tree_matches_the_reference(cells: list[CellSnapshot], work: list[TaskWork]) -> None:
    """With the heap giving way to the tree at once, the result is still the reference's."""
    with mock.patch.object(auction, "_PATIENCE", 1):
        result = schedule(cells, work)
    assert result == reference(cells, work)


@PROPERTY
@given(clusters(), batches(), st.randoms(use_true_random=False))
def test_order_of_input_does_not_matter(
    cells: list[CellSnapshot], work: list[TaskWork], rng: random.Random
) -> None:
    """Shuffling the cells or the work changes nothing."""
    expected = schedule(cells, work)
    rng.shuffle(cells)
    rng.shuffle(work)
    assert schedule(cells, work) == expected


def test_placement_never_exceeds_a_cell_at_scale() -> None:
    """A big batch over many cells of several shapes stays within every cell's room."""
    rng = random.Random(3)
    shapes = [(4096, 16384, 16), (8192, 32768, 32), (2048, 8192, 8)]
    cells = []
    for i in range(200):
        total = shapes[i % 3]
        memory, disk, containers = (rng.randint(0, whole) for whole in total)
        cells.append(cell(f"cell-{i:03d}", total=total, available=(memory, disk, containers)))
    work = [
        task(
            f"t{i:05d}",
            rng.randint(0, 2048),
            rng.randint(0, 4096),
            root_fs=rng.choice(["", "docker:///a"]),
        )
        for i in range(3000)
    ]
    result = schedule(cells, work)
    check_invariants(cells, work, result)
    assert result.placements
    assert result.carried_over


# -- the Task API, unchanged by LRPs ----------------------------------------------------


def test_task_batches_leave_nothing_unplaced() -> None:
    """A batch of Tasks only has no unplaced LRP instances, and its result is built as before."""
    result = schedule([cell("a")], [task("t")])
    assert result.unplaced == ()
    assert result == AuctionResult((Placement(task("t"), "a"),), (), ())


def test_snapshots_without_lrp_counts_stay_hashable() -> None:
    """A snapshot built without ``lrp_counts`` runs no instances and hashes as before."""
    snapshot = cell("a")
    assert dict(snapshot.lrp_counts) == {}
    assert {snapshot: 1}[cell("a")] == 1
