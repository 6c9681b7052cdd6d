# The spec calls this cell α and any other cell ω; we keep its notation, so the ambiguous-
# character rules are off in this file.
# ruff: noqa: RUF001, RUF002, RUF003
"""The rep's ActualLRP reconciliation: every row of the spec's table, instances, pairing.

The expected actions are written out by hand from "Harmonizing ActualLRPs with
Container State: Rep" (spec/diego-big-picture.md), not derived from the product's
table, so a change to the table shows up as a failing row. α is ALPHA, ω is OMEGA;
the containers are instance IG of process PROCESS at index 0 unless a test says
otherwise.
"""

from __future__ import annotations

import itertools

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from diego.cell.reconcile import ContainerState
from diego.cell.reconcile_lrp import (
    TABLE,
    LRPAction,
    LRPContainerKind,
    LRPContainerView,
    LRPDecision,
    LRPRelation,
    decide_lrp,
    lrp_container_kind,
    lrp_relation,
    pair_lrps,
    reconcile_lrps,
)
from diego.models.lrp import ActualLRP, ActualLRPState

ALPHA = "cell-alpha"
OMEGA = "cell-omega"
PROCESS = "process-1"
IG = "instance-1"
OTHER_IG = "instance-2"
CRASH_REASON = "exit status 1"


def container(
    state: ContainerState, *, shutdown: bool = False, instance_guid: str = IG
) -> LRPContainerView:
    """The container of ``instance_guid`` in ``state``; a COMPLETED one says CRASH_REASON."""
    reason = CRASH_REASON if state is ContainerState.COMPLETED else ""
    return LRPContainerView(instance_guid, PROCESS, 0, state, shutdown, reason)


def actual(
    state: ActualLRPState, cell_id: str = "", instance_guid: str = IG, *, evacuating: bool = False
) -> ActualLRP:
    """The ActualLRP PROCESS/0 in ``state`` on ``cell_id``."""
    return ActualLRP(
        process_guid=PROCESS,
        index=0,
        domain="tests",
        state=state,
        instance_guid=instance_guid,
        cell_id=cell_id,
        evacuating=evacuating,
    )


RESERVED = (container(ContainerState.RESERVED),)
STARTING = (container(ContainerState.INITIALIZING), container(ContainerState.CREATED))
RUNNING = (container(ContainerState.RUNNING),)
CRASHED = (container(ContainerState.COMPLETED),)
SHUTDOWN = (container(ContainerState.COMPLETED, shutdown=True),)
NO_CONTAINER: tuple[LRPContainerView, ...] = ()

UNCLAIMED = actual(ActualLRPState.UNCLAIMED)
CLAIMED_ALPHA = actual(ActualLRPState.CLAIMED, ALPHA)
CLAIMED_OMEGA = actual(ActualLRPState.CLAIMED, OMEGA)
RUNNING_ALPHA = actual(ActualLRPState.RUNNING, ALPHA)
RUNNING_OMEGA = actual(ActualLRPState.RUNNING, OMEGA)
LRP_CRASHED = actual(ActualLRPState.CRASHED)
ANY: tuple[ActualLRP | None, ...] = (
    None,
    UNCLAIMED,
    CLAIMED_ALPHA,
    CLAIMED_OMEGA,
    RUNNING_ALPHA,
    RUNNING_OMEGA,
    LRP_CRASHED,
)

NOTHING = LRPDecision(LRPAction.NOTHING, "")
NOTHING_LOUDLY = LRPDecision(LRPAction.NOTHING, "", loud=True)
DELETE = LRPDecision(LRPAction.DELETE_CONTAINER, "")
DELETE_LOUDLY = LRPDecision(LRPAction.DELETE_CONTAINER, "", loud=True)
CLAIM = LRPDecision(LRPAction.CLAIM, "")
START = LRPDecision(LRPAction.START, "")
CRASH = LRPDecision(LRPAction.CRASH_THEN_DELETE, "", crash_reason=CRASH_REASON)
CRASH_LOUDLY = LRPDecision(LRPAction.CRASH_THEN_DELETE, "", loud=True, crash_reason=CRASH_REASON)
REMOVE_THEN_DELETE = LRPDecision(LRPAction.REMOVE_THEN_DELETE, "")
REMOVE = LRPDecision(LRPAction.REMOVE, "")


def row(
    containers: tuple[LRPContainerView, ...],
    actuals: ActualLRP | tuple[ActualLRP | None, ...] | None,
    expected: LRPDecision,
    row_id: str,
) -> object:
    """One row of a table of cases: each container (or none) against each ActualLRP."""
    if not isinstance(actuals, tuple):
        actuals = (actuals,)
    return pytest.param(containers, actuals, expected, id=row_id)


SPEC_ROWS = [
    row(RESERVED, ANY, NOTHING, "RESERVED|ANY"),
    row(STARTING, None, DELETE, "INITIALIZING|CREATED|No ActualLRP"),
    row(STARTING, UNCLAIMED, CLAIM, "INITIALIZING|CREATED|UNCLAIMED"),
    row(STARTING, CLAIMED_ALPHA, NOTHING, "INITIALIZING|CREATED|CLAIMED by α"),
    row(STARTING, CLAIMED_OMEGA, DELETE, "INITIALIZING|CREATED|CLAIMED by ω"),
    row(STARTING, RUNNING_ALPHA, NOTHING_LOUDLY, "INITIALIZING|CREATED|RUNNING on α"),
    row(STARTING, RUNNING_OMEGA, DELETE, "INITIALIZING|CREATED|RUNNING on ω"),
    row(STARTING, LRP_CRASHED, DELETE, "INITIALIZING|CREATED|CRASHED"),
    row(RUNNING, None, START, "RUNNING|No ActualLRP"),
    row(RUNNING, UNCLAIMED, START, "RUNNING|UNCLAIMED"),
    row(RUNNING, CLAIMED_ALPHA, START, "RUNNING|CLAIMED by α"),
    row(RUNNING, CLAIMED_OMEGA, START, "RUNNING|CLAIMED by ω"),
    row(RUNNING, RUNNING_ALPHA, NOTHING, "RUNNING|RUNNING on α"),
    row(RUNNING, RUNNING_OMEGA, DELETE_LOUDLY, "RUNNING|RUNNING on ω"),
    row(RUNNING, LRP_CRASHED, START, "RUNNING|CRASHED"),
    row(CRASHED, None, CRASH_LOUDLY, "COMPLETED (crashed)|No ActualLRP"),
    row(CRASHED, UNCLAIMED, DELETE, "COMPLETED (crashed)|UNCLAIMED"),
    row(CRASHED, CLAIMED_ALPHA, CRASH, "COMPLETED (crashed)|CLAIMED by α"),
    row(CRASHED, CLAIMED_OMEGA, DELETE, "COMPLETED (crashed)|CLAIMED on ω"),
    row(CRASHED, RUNNING_ALPHA, CRASH, "COMPLETED (crashed)|RUNNING on α"),
    row(CRASHED, RUNNING_OMEGA, DELETE, "COMPLETED (crashed)|RUNNING on ω"),
    row(CRASHED, LRP_CRASHED, DELETE, "COMPLETED (crashed)|CRASHED"),
    row(SHUTDOWN, None, CRASH_LOUDLY, "COMPLETED (shutdown)|No ActualLRP"),
    row(SHUTDOWN, UNCLAIMED, DELETE, "COMPLETED (shutdown)|UNCLAIMED"),
    row(SHUTDOWN, CLAIMED_ALPHA, REMOVE_THEN_DELETE, "COMPLETED (shutdown)|CLAIMED by α"),
    row(SHUTDOWN, CLAIMED_OMEGA, DELETE, "COMPLETED (shutdown)|CLAIMED on ω"),
    row(SHUTDOWN, RUNNING_ALPHA, REMOVE_THEN_DELETE, "COMPLETED (shutdown)|RUNNING on α"),
    row(SHUTDOWN, RUNNING_OMEGA, DELETE, "COMPLETED (shutdown)|RUNNING on ω"),
    row(SHUTDOWN, LRP_CRASHED, DELETE, "COMPLETED (shutdown)|CRASHED"),
    row(NO_CONTAINER, CLAIMED_ALPHA, REMOVE, "No Container|CLAIMED by α"),
    row(NO_CONTAINER, RUNNING_ALPHA, REMOVE, "No Container|RUNNING on α"),
]
"""The spec's table, row by row, in its order (its own words in the ids)."""

NO_CONTAINER_ROWS = [
    row(NO_CONTAINER, None, NOTHING, "No Container|No ActualLRP"),
    row(NO_CONTAINER, UNCLAIMED, NOTHING, "No Container|UNCLAIMED"),
    row(NO_CONTAINER, CLAIMED_OMEGA, NOTHING, "No Container|CLAIMED by ω"),
    row(NO_CONTAINER, RUNNING_OMEGA, NOTHING, "No Container|RUNNING on ω"),
    row(NO_CONTAINER, LRP_CRASHED, NOTHING, "No Container|CRASHED"),
]
"""The rows the spec leaves out: without a container, only an ActualLRP on α is α's business."""


def check_row(
    containers: tuple[LRPContainerView, ...],
    actuals: tuple[ActualLRP | None, ...],
    expected: LRPDecision,
) -> None:
    """decide_lrp gives ``expected`` (bar the reason) for each container, or none, and actual."""
    for the_container in containers or (None,):
        for the_actual in actuals:
            decision = decide_lrp(ALPHA, the_container, the_actual)
            assert attrs.evolve(decision, reason="") == expected, (the_container, the_actual)
            assert decision.reason


@pytest.mark.parametrize(("containers", "actuals", "expected"), SPEC_ROWS)
def test_spec_row(
    containers: tuple[LRPContainerView, ...],
    actuals: tuple[ActualLRP | None, ...],
    expected: LRPDecision,
) -> None:
    """Each row of the spec's table gives the spec's action."""
    check_row(containers, actuals, expected)


@pytest.mark.parametrize(("containers", "actuals", "expected"), NO_CONTAINER_ROWS)
def test_no_container_row(
    containers: tuple[LRPContainerView, ...],
    actuals: tuple[ActualLRP | None, ...],
    expected: LRPDecision,
) -> None:
    """Without a container, an ActualLRP not CLAIMED by or RUNNING on α is left alone."""
    check_row(containers, actuals, expected)


ALL_CONTAINERS = RESERVED + STARTING + RUNNING + CRASHED + SHUTDOWN


@pytest.mark.parametrize(
    ("state", "here", "elsewhere"),
    [
        pytest.param(ActualLRPState.CLAIMED, CLAIMED_ALPHA, CLAIMED_OMEGA, id="CLAIMED"),
        pytest.param(ActualLRPState.RUNNING, RUNNING_ALPHA, RUNNING_OMEGA, id="RUNNING"),
    ],
)
@pytest.mark.parametrize("the_container", ALL_CONTAINERS, ids=lambda c: lrp_container_kind(c).value)
def test_another_instance_on_alpha_is_on_omega(
    state: ActualLRPState,
    here: ActualLRP,
    elsewhere: ActualLRP,
    the_container: LRPContainerView,
) -> None:
    """An ActualLRP on α naming another instance_guid is decided exactly as one on ω."""
    other = actual(state, ALPHA, OTHER_IG)
    assert lrp_relation(ALPHA, other, the_container) is lrp_relation(ALPHA, elsewhere)
    assert decide_lrp(ALPHA, the_container, other) == decide_lrp(ALPHA, the_container, elsewhere)
    assert lrp_relation(ALPHA, here, the_container) is not lrp_relation(ALPHA, other, the_container)


def test_the_spec_example_of_two_instances_on_one_cell() -> None:
    """Of two running containers, the one the BBS runs on α stays and the other is deleted."""
    ig1 = container(ContainerState.RUNNING, instance_guid="ig1")
    ig2 = container(ContainerState.RUNNING, instance_guid="ig2")
    in_bbs = actual(ActualLRPState.RUNNING, ALPHA, "ig1")
    assert [(c, a, d.action) for c, a, d in reconcile_lrps(ALPHA, [ig1, ig2], [in_bbs])] == [
        (ig1, in_bbs, LRPAction.NOTHING),
        (ig2, in_bbs, LRPAction.DELETE_CONTAINER),
    ]


@pytest.mark.parametrize(
    ("state", "relation"),
    [
        pytest.param(ActualLRPState.UNCLAIMED, LRPRelation.UNCLAIMED, id="UNCLAIMED"),
        pytest.param(ActualLRPState.CRASHED, LRPRelation.CRASHED, id="CRASHED"),
    ],
)
@pytest.mark.parametrize("cell_id", [ALPHA, OMEGA, ""])
@pytest.mark.parametrize("instance_guid", [IG, OTHER_IG, ""])
def test_unclaimed_and_crashed_are_on_no_cell(
    state: ActualLRPState, relation: LRPRelation, cell_id: str, instance_guid: str
) -> None:
    """UNCLAIMED and CRASHED relate alike whatever (stale) cell_id and instance_guid they carry."""
    the_actual = actual(state, cell_id, instance_guid)
    assert lrp_relation(ALPHA, the_actual) is relation
    for the_container in ALL_CONTAINERS:
        assert lrp_relation(ALPHA, the_actual, the_container) is relation


@pytest.mark.parametrize(
    ("the_actual", "relation"),
    [
        pytest.param(None, LRPRelation.NO_LRP, id="No ActualLRP"),
        pytest.param(CLAIMED_ALPHA, LRPRelation.CLAIMED_HERE, id="CLAIMED by α"),
        pytest.param(CLAIMED_OMEGA, LRPRelation.CLAIMED_ELSEWHERE, id="CLAIMED by ω"),
        pytest.param(RUNNING_ALPHA, LRPRelation.RUNNING_HERE, id="RUNNING on α"),
        pytest.param(RUNNING_OMEGA, LRPRelation.RUNNING_ELSEWHERE, id="RUNNING on ω"),
        pytest.param(
            actual(ActualLRPState.RUNNING, ALPHA, OTHER_IG),
            LRPRelation.RUNNING_HERE,
            id="RUNNING on α, another instance",
        ),
    ],
)
def test_without_a_container_the_cell_alone_decides(
    the_actual: ActualLRP | None, relation: LRPRelation
) -> None:
    """With no container to compare instance_guids with, cell_id alone places an ActualLRP."""
    assert lrp_relation(ALPHA, the_actual) is relation


def test_a_crash_carries_the_container_crash_reason() -> None:
    """The RepCrashDance records the container's crash_reason; other decisions carry none."""
    crashed = LRPContainerView(IG, PROCESS, 0, ContainerState.COMPLETED, crash_reason="OOM")
    assert decide_lrp(ALPHA, crashed, RUNNING_ALPHA).crash_reason == "OOM"
    assert decide_lrp(ALPHA, crashed, RUNNING_OMEGA).crash_reason == ""


def test_table_covers_every_pair() -> None:
    """The product's table has exactly one row per container kind and ActualLRP relation."""
    assert set(TABLE) == set(itertools.product(LRPContainerKind, LRPRelation))


def test_container_kinds() -> None:
    """Each container state maps to its column, COMPLETED by its flavour."""
    assert [lrp_container_kind(c) for c in (None, *ALL_CONTAINERS)] == [
        LRPContainerKind.NONE,
        LRPContainerKind.RESERVED,
        LRPContainerKind.STARTING,
        LRPContainerKind.STARTING,
        LRPContainerKind.RUNNING,
        LRPContainerKind.CRASHED,
        LRPContainerKind.SHUTDOWN,
    ]


def test_mismatched_keys_are_refused() -> None:
    """A container and an ActualLRP of different processes or indices are not one row."""
    running = container(ContainerState.RUNNING)
    for other in (attrs.evolve(running, process_guid="other"), attrs.evolve(running, index=1)):
        with pytest.raises(ValueError, match="is not an instance of"):
            decide_lrp(ALPHA, other, RUNNING_ALPHA)


def test_evacuating_actuals_are_refused() -> None:
    """An evacuating ActualLRP is not this table's: evacuation is handled separately."""
    evacuating = actual(ActualLRPState.RUNNING, ALPHA, evacuating=True)
    with pytest.raises(ValueError, match="evacuating"):
        decide_lrp(ALPHA, container(ContainerState.RUNNING), evacuating)
    with pytest.raises(ValueError, match="evacuating"):
        decide_lrp(ALPHA, None, evacuating)


def lrp(
    process_guid: str,
    index: int,
    state: ActualLRPState,
    cell_id: str = ALPHA,
    instance_guid: str = "",
    *,
    evacuating: bool = False,
) -> ActualLRP:
    """An ActualLRP of ``process_guid`` at ``index``; its instance_guid defaults to "ig-<p>-<i>"."""
    return ActualLRP(
        process_guid=process_guid,
        index=index,
        domain="tests",
        state=state,
        cell_id=cell_id,
        instance_guid=instance_guid or f"ig-{process_guid}-{index}",
        evacuating=evacuating,
    )


def box(
    process_guid: str, index: int, state: ContainerState, instance_guid: str = ""
) -> LRPContainerView:
    """A container of ``process_guid`` at ``index``; its instance_guid defaults as lrp's does."""
    return LRPContainerView(
        instance_guid or f"ig-{process_guid}-{index}", process_guid, index, state
    )


def test_pairing_matches_containers_with_actuals_by_process_and_index() -> None:
    """Each container comes once, in order, with the ActualLRP of its process and index or None."""
    a = box("p", 0, ContainerState.RUNNING)
    b = box("p", 1, ContainerState.RESERVED)
    c = box("q", 0, ContainerState.COMPLETED)
    actuals = [lrp("q", 0, ActualLRPState.RUNNING), lrp("p", 0, ActualLRPState.UNCLAIMED, "")]
    assert pair_lrps(ALPHA, [a, b, c], actuals) == [(a, actuals[1]), (b, None), (c, actuals[0])]


def test_pairing_ignores_evacuating_actuals() -> None:
    """Containers pair with instance ActualLRPs; evacuating copies get no pairing and no row."""
    running = box("p", 0, ContainerState.RUNNING)
    evacuating = lrp("p", 0, ActualLRPState.RUNNING, evacuating=True)
    replacement = lrp("p", 0, ActualLRPState.UNCLAIMED, "", "ig-new")
    lone_evacuating = lrp("q", 0, ActualLRPState.RUNNING, evacuating=True)
    assert pair_lrps(ALPHA, [running], [evacuating, replacement, lone_evacuating]) == [
        (running, replacement)
    ]
    assert pair_lrps(ALPHA, [], [evacuating, lone_evacuating]) == []


def test_pairing_adds_actuals_on_this_cell_without_a_container() -> None:
    """ActualLRPs CLAIMED by or RUNNING on α with no container get a row; other lone ones don't."""
    running_here = lrp("r", 0, ActualLRPState.RUNNING)
    claimed_here = lrp("c", 0, ActualLRPState.CLAIMED)
    lone = [
        lrp("u", 0, ActualLRPState.UNCLAIMED, ""),
        lrp("u-alpha", 0, ActualLRPState.UNCLAIMED),
        lrp("r-omega", 0, ActualLRPState.RUNNING, OMEGA),
        lrp("c-omega", 0, ActualLRPState.CLAIMED, OMEGA),
        lrp("crashed", 0, ActualLRPState.CRASHED),
    ]
    assert pair_lrps(ALPHA, [], [running_here, *lone, claimed_here]) == [
        (None, running_here),
        (None, claimed_here),
    ]


def test_an_actual_whose_index_holds_another_instance_has_no_container() -> None:
    """An ActualLRP of α whose index has only another instance's container also gets its own row."""
    stray = box("p", 0, ContainerState.RUNNING, "ig2")
    in_bbs = lrp("p", 0, ActualLRPState.RUNNING, instance_guid="ig1")
    assert [(c, a, d.action) for c, a, d in reconcile_lrps(ALPHA, [stray], [in_bbs])] == [
        (stray, in_bbs, LRPAction.DELETE_CONTAINER),
        (None, in_bbs, LRPAction.REMOVE),
    ]


def test_pairing_refuses_repeats() -> None:
    """A repeated container instance_guid or instance ActualLRP index is a caller's bug."""
    running = box("p", 0, ContainerState.RUNNING)
    with pytest.raises(ValueError, match="given twice"):
        pair_lrps(ALPHA, [running, running], [])
    the_lrp = lrp("p", 0, ActualLRPState.RUNNING)
    with pytest.raises(ValueError, match="given twice"):
        pair_lrps(ALPHA, [], [the_lrp, attrs.evolve(the_lrp, instance_guid="ig-other")])


def test_reconcile_decides_every_pair() -> None:
    """reconcile_lrps gives each pair of pair_lrps its decision."""
    starting = box("s", 0, ContainerState.CREATED)
    gone = lrp("g", 0, ActualLRPState.RUNNING)
    unclaimed = lrp("s", 0, ActualLRPState.UNCLAIMED, "")
    decided = reconcile_lrps(ALPHA, [starting], [gone, unclaimed])
    assert [(c, a, d.action) for c, a, d in decided] == [
        (starting, unclaimed, LRPAction.CLAIM),
        (None, gone, LRPAction.REMOVE),
    ]


CELLS = st.sampled_from([ALPHA, OMEGA, ""])
INSTANCES = st.sampled_from([IG, OTHER_IG, ""])
containers_st = st.none() | st.builds(
    LRPContainerView,
    instance_guid=INSTANCES,
    process_guid=st.just(PROCESS),
    index=st.just(0),
    state=st.sampled_from(ContainerState),
    shutdown=st.booleans(),
    crash_reason=st.text(max_size=5),
)
actuals_st = st.none() | st.builds(
    ActualLRP,
    process_guid=st.just(PROCESS),
    index=st.just(0),
    domain=st.just("tests"),
    state=st.sampled_from(ActualLRPState),
    instance_guid=INSTANCES,
    cell_id=CELLS,
    crash_count=st.integers(0, 300),
)
ON_A_CELL = (ActualLRPState.CLAIMED, ActualLRPState.RUNNING)
STARTING_STATES = (ContainerState.INITIALIZING, ContainerState.CREATED)


@given(cell_id=CELLS, the_container=containers_st, the_actual=actuals_st)
def test_decide_lrp_is_total_and_minds_its_own_instances(
    cell_id: str, the_container: LRPContainerView | None, the_actual: ActualLRP | None
) -> None:
    """Every pair gets a decision, and only a START from a RUNNING container touches another's.

    Precisely, call an ActualLRP α's own if it names ``cell_id`` and (when there is
    a container) the container's instance_guid. Then: an action that writes the
    ActualLRP never writes a CLAIMED or RUNNING one that is not α's own, except
    START over a CLAIMED one; CLAIM needs an INITIALIZING|CREATED container and an
    UNCLAIMED ActualLRP; START needs a RUNNING container and never overwrites a
    RUNNING ActualLRP; CRASH_THEN_DELETE and REMOVE_THEN_DELETE need a COMPLETED
    container and an ActualLRP that is missing (crash only) or α's own and on a
    cell; REMOVE needs no container and α's own ActualLRP on a cell; only a real
    container is ever deleted; and a RESERVED container is never acted on.
    """
    decision = decide_lrp(cell_id, the_container, the_actual)
    action = decision.action
    assert decision.reason
    own = the_actual is not None and (
        the_actual.cell_id == cell_id
        and (the_container is None or the_container.instance_guid == the_actual.instance_guid)
    )
    on_a_cell = the_actual is not None and the_actual.state in ON_A_CELL
    if action.changes_actual and on_a_cell and not own:
        assert action is LRPAction.START
        assert the_actual is not None
        assert the_actual.state is ActualLRPState.CLAIMED
    if action is LRPAction.CLAIM:
        assert the_container is not None
        assert the_container.state in STARTING_STATES
        assert the_actual is not None
        assert the_actual.state is ActualLRPState.UNCLAIMED
    if action is LRPAction.START:
        assert the_container is not None
        assert the_container.state is ContainerState.RUNNING
        assert the_actual is None or the_actual.state is not ActualLRPState.RUNNING
    if action in (LRPAction.CRASH_THEN_DELETE, LRPAction.REMOVE_THEN_DELETE):
        assert the_container is not None
        assert the_container.state is ContainerState.COMPLETED
        assert (the_actual is None and action is LRPAction.CRASH_THEN_DELETE) or (own and on_a_cell)
        assert the_container.shutdown or action is LRPAction.CRASH_THEN_DELETE
    if action is LRPAction.REMOVE:
        assert the_container is None
        assert own
        assert on_a_cell
    if action.deletes_container:
        assert the_container is not None
    if the_container is not None and the_container.state is ContainerState.RESERVED:
        assert action is LRPAction.NOTHING
    if action is not LRPAction.CRASH_THEN_DELETE:
        assert decision.crash_reason == ""


PROCESSES = st.sampled_from(["p", "q"])
INDICES = st.integers(0, 1)


@given(
    cell_id=CELLS,
    container_specs=st.dictionaries(
        st.sampled_from(["ig1", "ig2", "ig3", "ig4"]),
        st.tuples(PROCESSES, INDICES, st.sampled_from(ContainerState)),
        max_size=4,
    ),
    actual_specs=st.dictionaries(
        st.tuples(PROCESSES, INDICES, st.booleans()),
        st.tuples(st.sampled_from(ActualLRPState), CELLS, st.sampled_from(["ig1", "ig2", "ig5"])),
        max_size=8,
    ),
)
def test_pairing_covers_every_container_and_only_this_cells_lone_actuals(
    cell_id: str,
    container_specs: dict[str, tuple[str, int, ContainerState]],
    actual_specs: dict[tuple[str, int, bool], tuple[ActualLRPState, str, str]],
) -> None:
    """Each container pairs once with its index's instance ActualLRP; lone rows are α's own."""
    containers = [LRPContainerView(ig, p, i, s) for ig, (p, i, s) in container_specs.items()]
    actuals = [
        ActualLRP(
            process_guid=p,
            index=i,
            domain="tests",
            state=s,
            cell_id=c,
            instance_guid=ig,
            evacuating=evacuating,
        )
        for (p, i, evacuating), (s, c, ig) in actual_specs.items()
    ]
    instances = {(a.process_guid, a.index): a for a in actuals if not a.evacuating}
    pairs = pair_lrps(cell_id, containers, actuals)
    assert [c for c, _ in pairs if c is not None] == containers
    for the_container, the_actual in pairs:
        if the_container is not None:
            assert the_actual == instances.get((the_container.process_guid, the_container.index))
        else:
            assert the_actual is not None
            assert not the_actual.evacuating
            assert the_actual.cell_id == cell_id
            assert the_actual.state in ON_A_CELL
        decide_lrp(cell_id, the_container, the_actual)  # every pair is a row of the table
    lone = [a for c, a in pairs if c is None]
    assert lone == [
        a
        for a in instances.values()
        if a.cell_id == cell_id
        and a.state in ON_A_CELL
        and not any(
            (c.process_guid, c.index, c.instance_guid) == (a.process_guid, a.index, a.instance_guid)
            for c in containers
        )
    ]
