"""The Δ between a DesiredLRP's instance count and its ActualLRPs, row by row."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from diego.models.lrp import ActualLRP, ActualLRPState
from diego.models.lrp_delta import Delta, delta

U, C, R, X = (
    ActualLRPState.UNCLAIMED,
    ActualLRPState.CLAIMED,
    ActualLRPState.RUNNING,
    ActualLRPState.CRASHED,
)


def actual(index: int, state: ActualLRPState = R, *, evacuating: bool = False) -> ActualLRP:
    """An instance of process ``p`` at ``index``."""
    cell = "cell-1" if state in (C, R) else ""
    return ActualLRP(
        process_guid="p",
        index=index,
        domain="d",
        state=state,
        cell_id=cell,
        instance_guid=f"ig-{index}" if cell else "",
        evacuating=evacuating,
    )


CASES: list[tuple[str, int, list[ActualLRP], tuple[int, ...], tuple[int, ...]]] = [
    # name, desired instances, actuals, indices started, indices of the instances stopped
    ("nothing_desired_nothing_there", 0, [], (), ()),
    ("scale_up_from_nothing", 3, [], (0, 1, 2), ()),
    ("scale_up_from_two", 4, [actual(0), actual(1)], (2, 3), ()),
    ("all_there", 2, [actual(0), actual(1)], (), ()),
    ("gaps_are_filled", 5, [actual(1), actual(3)], (0, 2, 4), ()),
    ("scale_down", 1, [actual(0), actual(1), actual(2)], (), (1, 2)),
    ("scale_down_and_fill_a_gap", 2, [actual(1), actual(4)], (0,), (4,)),
    ("zero_instances_stops_all", 0, [actual(0), actual(1, U), actual(2, X)], (), (0, 1, 2)),
    (
        "state_is_irrelevant_to_stopping",
        0,
        [actual(0, U), actual(1, C), actual(2, R), actual(3, X)],
        (),
        (0, 1, 2, 3),
    ),
    (
        "state_is_irrelevant_to_being_there",
        4,
        [actual(0, U), actual(1, C), actual(2, R), actual(3, X)],
        (),
        (),
    ),
    ("evacuating_copy_does_not_fill_its_index", 1, [actual(0, evacuating=True)], (0,), ()),
    ("evacuating_copy_beyond_n_is_not_stopped", 1, [actual(0), actual(1, evacuating=True)], (), ()),
    (
        "evacuating_copy_beside_its_replacement",
        2,
        [actual(0, evacuating=True), actual(0, U), actual(1)],
        (),
        (),
    ),
    (
        "evacuating_and_replacement_beyond_n",
        1,
        [actual(0), actual(1, evacuating=True), actual(1, U)],
        (),
        (1,),
    ),
    ("unsorted_input", 2, [actual(5), actual(1), actual(3)], (0,), (3, 5)),
]


@pytest.mark.parametrize(
    ("instances", "actuals", "start", "stop"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_delta_table(
    instances: int, actuals: list[ActualLRP], start: tuple[int, ...], stop: tuple[int, ...]
) -> None:
    """Each row starts exactly the missing indices and stops exactly the extra instances."""
    result = delta(instances, actuals)
    assert result.start == start
    assert tuple(a.index for a in result.stop) == stop
    assert all(not a.evacuating for a in result.stop)
    assert result.is_empty == (not start and not stop)


def test_stop_returns_the_actuals_themselves() -> None:
    """A stopped instance is returned whole, so the caller can see its state and cell."""
    extra = actual(1, C)
    assert delta(1, [actual(0), extra]) == Delta(start=(), stop=(extra,))


def test_refuses_negative_instances() -> None:
    """A negative instance count is refused."""
    with pytest.raises(ValueError, match="at least 0"):
        delta(-1, [])


def test_refuses_actuals_of_two_processes() -> None:
    """ActualLRPs of more than one process are refused rather than mixed up."""
    other = ActualLRP(process_guid="q", index=0, domain="d", evacuating=True)
    with pytest.raises(ValueError, match="more than one process"):
        delta(1, [actual(0), other])


@st.composite
def groups(draw: st.DrawFn) -> list[ActualLRP]:
    """One process's ActualLRPs: at most one instance and one evacuating copy per index."""
    found: list[ActualLRP] = []
    for index in draw(st.sets(st.integers(0, 8), max_size=8)):
        found.append(actual(index, draw(st.sampled_from(list(ActualLRPState)))))
    for index in draw(st.sets(st.integers(0, 8), max_size=4)):
        found.append(actual(index, R, evacuating=True))
    return found


@given(instances=st.integers(0, 8), actuals=groups(), seed=st.integers(0, 2**32))
def test_delta_properties(instances: int, actuals: list[ActualLRP], seed: int) -> None:
    """After the Δ every index below N has exactly one instance and none is above, and the
    answer does not depend on the order of the ActualLRPs."""
    result = delta(instances, actuals)
    present = {a.index for a in actuals if not a.evacuating}
    assert set(result.start).isdisjoint(present)
    assert set(result.start) | (present & set(range(instances))) == set(range(instances))
    assert {a.index for a in result.stop} == {i for i in present if i >= instances}
    assert list(result.start) == sorted(result.start)
    assert [a.index for a in result.stop] == sorted(a.index for a in result.stop)
    shuffled = list(actuals)
    random.Random(seed).shuffle(shuffled)
    assert delta(instances, shuffled) == result


def test_max_start_bounds_the_indices_of_a_huge_count() -> None:
    """A billion desired instances (stored under looser limits) cost bounded memory."""
    found = delta(10**9, [], max_start=3)
    assert found.start == (0, 1, 2)
    assert delta(5, [], max_start=0).start == ()
