"""watch_cells: which cells went, and when to look again."""

from __future__ import annotations

from diego.scheduling.convergence import PAST_EXPIRY, watch_cells

S = 1_000_000_000  # ns


def test_a_cell_whose_presence_expired_is_gone() -> None:
    seen = watch_cells(frozenset({"a", "b"}), {"a": 10 * S, "b": 5 * S}, now=6 * S, longest=30)
    assert seen.live == {"a"}
    assert seen.gone == {"b"}


def test_a_cell_not_seen_before_is_not_gone() -> None:
    seen = watch_cells(frozenset(), {"a": 1 * S}, now=2 * S, longest=30)
    assert (seen.live, seen.gone) == (frozenset(), frozenset())


def test_a_removed_presence_is_gone_too() -> None:
    seen = watch_cells(frozenset({"a", "b"}), {"a": 10 * S}, now=0, longest=30)
    assert seen.gone == {"b"}


def test_the_next_look_is_just_past_the_soonest_expiry() -> None:
    seen = watch_cells(frozenset(), {"a": 12 * S, "b": 11 * S}, now=10 * S, longest=30)
    assert seen.next_look == 1 + PAST_EXPIRY


def test_the_next_look_is_at_most_the_longest_wait() -> None:
    assert watch_cells(frozenset(), {"a": 100 * S}, now=0, longest=30).next_look == 30
    assert watch_cells(frozenset(), {}, now=0, longest=30).next_look == 30


def test_the_next_look_is_never_now() -> None:
    soon = watch_cells(frozenset(), {"a": 1}, now=0, longest=30).next_look
    assert PAST_EXPIRY <= soon < 2 * PAST_EXPIRY
