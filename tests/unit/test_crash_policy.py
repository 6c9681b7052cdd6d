"""The crash policy: Diego's restart calculator, count by count and at its boundaries.

Times are int nanoseconds. The count is the one after the crash being handled, so
counts 1 and 2 restart at once and count 3 is the first to wait.
"""

from __future__ import annotations

import math

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from diego.models.crash_policy import CrashPolicy

S = 1_000_000_000
MIN = 60 * S
CRASHED_AT = 1_700_000_000 * S
POLICY = CrashPolicy()

NEVER = None
TABLE: list[tuple[int, bool, int, int | None]] = [
    # crash_count, restart_now, backoff_ns, wait after the crash (None: never)
    (0, True, 0, 0),
    (1, True, 0, 0),
    (2, True, 0, 0),
    (3, False, 30 * S, 30 * S),
    (4, False, 1 * MIN, 1 * MIN),
    (5, False, 2 * MIN, 2 * MIN),
    (6, False, 4 * MIN, 4 * MIN),
    (7, False, 8 * MIN, 8 * MIN),
    (8, False, 16 * MIN, 16 * MIN),
    (9, False, 16 * MIN, 16 * MIN),
    (10, False, 16 * MIN, 16 * MIN),
    (199, False, 16 * MIN, 16 * MIN),
    (200, False, 16 * MIN, NEVER),
    (201, False, 16 * MIN, NEVER),
]


@pytest.mark.parametrize(("count", "now", "backoff", "wait"), TABLE, ids=[str(r[0]) for r in TABLE])
def test_restart_table(count: int, now: bool, backoff: int, wait: int | None) -> None:
    """Each crash count restarts at once, after its backoff, or never, as Diego's table."""
    assert POLICY.restart_now(count) is now
    assert POLICY.backoff_ns(count) == backoff
    expected_at = None if wait is None else CRASHED_AT + wait
    assert POLICY.restart_at(count, CRASHED_AT) == expected_at


@pytest.mark.parametrize(("count", "now", "backoff", "wait"), TABLE, ids=[str(r[0]) for r in TABLE])
def test_should_restart_boundaries(count: int, now: bool, backoff: int, wait: int | None) -> None:
    """The converger restarts from the nanosecond the wait has passed, never before,
    and never at all from 200 crashes on."""
    if wait is None:
        assert not POLICY.should_restart(count, CRASHED_AT, CRASHED_AT + 1000 * MIN)
        return
    if wait > 0:
        assert not POLICY.should_restart(count, CRASHED_AT, CRASHED_AT + wait - 1)
    assert POLICY.should_restart(count, CRASHED_AT, CRASHED_AT + wait)
    assert POLICY.should_restart(count, CRASHED_AT, CRASHED_AT + wait + 1)


def test_immediate_counts_restart_whatever_the_clock() -> None:
    """Below immediate_restarts the answer is yes even if ``now`` is before the crash."""
    for count in (0, 1, 2):
        assert POLICY.should_restart(count, CRASHED_AT, CRASHED_AT - 5 * MIN)


def test_schedule() -> None:
    """The schedule lists the wait in seconds after crashes 1 to n, inf for never."""
    assert POLICY.schedule(0) == []
    assert POLICY.schedule(10) == [0.0, 0.0, 30.0, 60.0, 120.0, 240.0, 480.0, 960.0, 960.0, 960.0]
    tail = POLICY.schedule(201)[-3:]
    assert tail == [960.0, math.inf, math.inf]
    assert len(POLICY.schedule(201)) == 201


def test_diego_defaults() -> None:
    """The defaults are Diego's: 3 immediate, 30 s base, 16 min cap, 200 restarts, 5 min."""
    assert attrs.asdict(POLICY) == {
        "immediate_restarts": 3,
        "backoff_base_s": 30.0,
        "max_backoff_s": 960.0,
        "max_restarts": 200,
        "reset_after_running_s": 300.0,
    }
    assert POLICY.max_backoff_doublings == 5


@pytest.mark.parametrize(
    ("max_backoff_s", "doublings", "waits"),
    [
        # ceil(1200 / 30) = 40, log2 floored is 5: the doubling stops at 960 s, below the cap.
        (1200.0, 5, [30.0, 60.0, 120.0, 240.0, 480.0, 960.0, 960.0]),
        # ceil(600 / 30) = 20, log2 floored is 4: the doubling stops at 480 s, below the cap.
        (600.0, 4, [30.0, 60.0, 120.0, 240.0, 480.0, 480.0, 480.0]),
        # ceil(100 / 30) = 4: two doublings, 120 s, then the cap of 100 s wins.
        (100.0, 2, [30.0, 60.0, 100.0, 100.0, 100.0, 100.0, 100.0]),
        (30.0, 0, [30.0] * 7),
    ],
)
def test_doublings_as_diego_computes_them(
    max_backoff_s: float, doublings: int, waits: list[float]
) -> None:
    """Doubling stops after floor(log2(ceil(max / base))) steps, then the cap applies,
    as in Diego's calculateMaxBackoffCount."""
    policy = CrashPolicy(max_backoff_s=max_backoff_s)
    assert policy.max_backoff_doublings == doublings
    assert policy.schedule(9)[2:] == waits


def test_other_counts() -> None:
    """A policy with no immediate restarts and 5 restarts waits from the first crash and
    gives up at the fifth."""
    policy = CrashPolicy(immediate_restarts=0, max_restarts=5)
    assert not policy.restart_now(0)
    assert policy.schedule(6) == [60.0, 120.0, 240.0, 480.0, math.inf, math.inf]
    assert policy.backoff_ns(0) == 30 * S


def test_reset_is_not_applied_here() -> None:
    """The policy only carries reset_after_running_s for the lifecycle's crash step: no
    decision here depends on it."""
    other = attrs.evolve(POLICY, reset_after_running_s=1.0)
    for count in [*range(12), 199, 200, 201]:
        assert other.restart_now(count) == POLICY.restart_now(count)
        assert other.backoff_ns(count) == POLICY.backoff_ns(count)
        assert other.restart_at(count, CRASHED_AT) == POLICY.restart_at(count, CRASHED_AT)
        for age in (0, 6 * MIN, 20 * MIN):
            now = CRASHED_AT + age
            assert other.should_restart(count, CRASHED_AT, now) == POLICY.should_restart(
                count, CRASHED_AT, now
            )
    assert other.schedule(12) == POLICY.schedule(12)


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"immediate_restarts": -1}, "immediate_restarts"),
        ({"backoff_base_s": 0.0}, "backoff_base_s"),
        ({"backoff_base_s": float("nan")}, "backoff_base_s"),
        ({"max_backoff_s": 29.0}, "max_backoff_s"),
        ({"max_backoff_s": float("nan")}, "max_backoff_s"),
        ({"max_restarts": 2}, "max_restarts"),
        ({"reset_after_running_s": -1.0}, "reset_after_running_s"),
    ],
)
def test_refuses_nonsense(fields: dict[str, float], match: str) -> None:
    """A policy whose numbers contradict each other (as Diego's Validate says) is refused."""
    with pytest.raises(ValueError, match=match):
        CrashPolicy(**fields)  # type: ignore[arg-type]


policies = st.builds(
    CrashPolicy,
    immediate_restarts=st.integers(0, 5),
    backoff_base_s=st.sampled_from((0.5, 1.0, 30.0)),
    max_backoff_s=st.sampled_from((30.0, 100.0, 960.0, 3600.0)),
    max_restarts=st.integers(5, 250),
)


@given(
    policy=st.one_of(st.just(POLICY), policies),
    count=st.integers(0, 260),
    age=st.integers(-MIN, 2000 * MIN),
)
def test_should_restart_agrees_with_restart_at(policy: CrashPolicy, count: int, age: int) -> None:
    """should_restart is "restart_at exists and has come", bar immediate counts, which
    restart whatever the clock."""
    at = policy.restart_at(count, CRASHED_AT)
    answer = policy.should_restart(count, CRASHED_AT, CRASHED_AT + age)
    if policy.restart_now(count):
        assert answer
    else:
        assert answer == (at is not None and CRASHED_AT + age >= at)


@given(policy=st.one_of(st.just(POLICY), policies), count=st.integers(0, 260))
def test_backoff_grows_and_is_capped(policy: CrashPolicy, count: int) -> None:
    """The wait never shrinks as crashes add up and never exceeds max_backoff_s."""
    assert 0 <= policy.backoff_ns(count) <= policy.backoff_ns(count + 1)
    assert policy.backoff_ns(count) <= int(policy.max_backoff_s * S)
