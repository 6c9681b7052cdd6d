"""The converger's pure plan: one row per duty and per boundary, and its properties.

Times are int nanoseconds. With Diego's defaults the kick interval is 30 s, a
PENDING Task expires after 30 min and a completed one after 2 min; "older than"
is strict, so a Task exactly one interval old is left alone and one a nanosecond
older is acted on.
"""

from __future__ import annotations

import random

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from diego.models.actions import RunAction
from diego.models.task import Task, TaskCreateRequest, TaskState
from diego.scheduling.convergence import (
    CELL_DISAPPEARED,
    EXPIRED_PENDING,
    ConvergerSettings,
    Plan,
    TaskSnapshot,
    TaskView,
    plan,
    to_nanos,
)

P, C, R, D, V = (
    TaskState.PENDING,
    TaskState.CLAIMED,
    TaskState.RUNNING,
    TaskState.COMPLETED,
    TaskState.RESOLVING,
)

S = 1_000_000_000
NOW = 1_700_000_000 * S
KICK = 30 * S
EXPIRE_PENDING = 30 * 60 * S
EXPIRE_COMPLETED = 120 * S
SETTINGS = ConvergerSettings()
LIVE = "cell-live"
DEAD = "cell-dead"
CALLBACK = "http://consumer.example/done"


def view(state: TaskState, guid: str = "t", **fields: object) -> TaskView:
    """A Task in ``state`` touched just now (so it needs nothing) unless ``fields`` say."""
    base: dict[str, object] = {
        "cell_id": LIVE if state in (C, R, D, V) else "",
        "created_at": NOW,
        "updated_at": NOW,
        "first_completed_at": NOW if state in (D, V) else 0,
        "completion_callback_url": "",
    }
    base.update(fields)
    return TaskView(task_guid=guid, state=state, **base)  # type: ignore[arg-type]


NOTHING = Plan()

CASES: list[tuple[str, TaskView, Plan]] = [
    # 1. CLAIMED and RUNNING Tasks on cells that are gone are failed.
    ("running_dead_cell", view(R, cell_id=DEAD), Plan(fail=(("t", CELL_DISAPPEARED),))),
    ("claimed_dead_cell", view(C, cell_id=DEAD), Plan(fail=(("t", CELL_DISAPPEARED),))),
    ("running_without_cell", view(R, cell_id=""), Plan(fail=(("t", CELL_DISAPPEARED),))),
    (
        "running_dead_cell_whatever_its_age",
        view(R, cell_id=DEAD, created_at=NOW - 2 * EXPIRE_PENDING, updated_at=NOW - 2 * KICK),
        Plan(fail=(("t", CELL_DISAPPEARED),)),
    ),
    ("running_live_cell_long_ago", view(R, updated_at=NOW - 100 * KICK), NOTHING),
    ("claimed_live_cell_long_ago", view(C, updated_at=NOW - 100 * KICK), NOTHING),
    # 2. PENDING Tasks untouched for longer than the kick interval are auctioned again.
    ("pending_kick_just_before", view(P, created_at=NOW - KICK, updated_at=NOW - KICK), NOTHING),
    (
        "pending_kick_just_after",
        view(P, created_at=NOW - KICK - 1, updated_at=NOW - KICK - 1),
        Plan(auction=("t",)),
    ),
    ("pending_recently_updated", view(P, created_at=NOW - 10 * KICK), NOTHING),
    # 3. PENDING Tasks created longer ago than expire_pending_task are failed, not auctioned.
    (
        "pending_expire_just_before",
        view(P, created_at=NOW - EXPIRE_PENDING, updated_at=NOW - EXPIRE_PENDING),
        Plan(auction=("t",)),
    ),
    (
        "pending_expire_just_after",
        view(P, created_at=NOW - EXPIRE_PENDING - 1, updated_at=NOW - EXPIRE_PENDING - 1),
        Plan(fail=(("t", EXPIRED_PENDING),)),
    ),
    (
        "pending_expired_though_recently_kicked",
        view(P, created_at=NOW - EXPIRE_PENDING - 1, updated_at=NOW),
        Plan(fail=(("t", EXPIRED_PENDING),)),
    ),
    # 4. COMPLETED Tasks with a callback untouched for longer than the kick are re-kicked.
    (
        "completed_kick_just_before",
        view(D, completion_callback_url=CALLBACK, updated_at=NOW - KICK),
        NOTHING,
    ),
    (
        "completed_kick_just_after",
        view(D, completion_callback_url=CALLBACK, updated_at=NOW - KICK - 1),
        Plan(resolve=("t",)),
    ),
    (
        "completed_no_callback_is_never_kicked",
        view(D, updated_at=NOW - KICK - 1, first_completed_at=NOW - KICK - 1),
        NOTHING,
    ),
    # 5. COMPLETED or RESOLVING Tasks completed longer ago than expire_completed_task go.
    ("completed_expire_just_before", view(D, first_completed_at=NOW - EXPIRE_COMPLETED), NOTHING),
    (
        "completed_expire_just_after",
        view(D, first_completed_at=NOW - EXPIRE_COMPLETED - 1),
        Plan(delete=("t",)),
    ),
    (
        "completed_expired_with_callback_is_deleted_not_kicked",
        view(
            D,
            completion_callback_url=CALLBACK,
            updated_at=NOW - EXPIRE_COMPLETED - 1,
            first_completed_at=NOW - EXPIRE_COMPLETED - 1,
        ),
        Plan(delete=("t",)),
    ),
    ("resolving_expire_just_before", view(V, first_completed_at=NOW - EXPIRE_COMPLETED), NOTHING),
    (
        "resolving_expire_just_after",
        view(V, first_completed_at=NOW - EXPIRE_COMPLETED - 1),
        Plan(delete=("t",)),
    ),
    (
        "resolving_expired_and_stuck_is_deleted_not_demoted",
        view(
            V,
            updated_at=NOW - EXPIRE_COMPLETED - 1,
            first_completed_at=NOW - EXPIRE_COMPLETED - 1,
        ),
        Plan(delete=("t",)),
    ),
    # 6. RESOLVING Tasks untouched for longer than the kick interval go back to COMPLETED.
    ("resolving_kick_just_before", view(V, updated_at=NOW - KICK), NOTHING),
    ("resolving_kick_just_after", view(V, updated_at=NOW - KICK - 1), Plan(demote=("t",))),
    (
        "resolving_without_callback_is_demoted_too",
        view(V, completion_callback_url="", updated_at=NOW - KICK - 1),
        Plan(demote=("t",)),
    ),
    # Tasks in every state that need nothing.
    ("pending_fresh", view(P), NOTHING),
    ("claimed_fresh_on_live_cell", view(C), NOTHING),
    ("running_fresh_on_live_cell", view(R), NOTHING),
    ("completed_fresh_with_callback", view(D, completion_callback_url=CALLBACK), NOTHING),
    ("resolving_fresh", view(V, completion_callback_url=CALLBACK), NOTHING),
]


@pytest.mark.parametrize(("task", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_one_task(task: TaskView, expected: Plan) -> None:
    """Each row's single Task gets exactly the plan written out for it."""
    snapshot = TaskSnapshot(tasks=(task,), live_cells=frozenset({LIVE}))
    assert plan(snapshot, NOW, SETTINGS) == expected


def test_buckets_are_sorted_by_guid() -> None:
    """A plan over many Tasks lists every bucket in guid order."""
    tasks = [
        view(R, "b-run", cell_id=DEAD),
        view(P, "b-old", created_at=NOW - EXPIRE_PENDING - 1),
        view(C, "a-claim", cell_id=DEAD),
        view(P, "z-kick", created_at=NOW - KICK - 1, updated_at=NOW - KICK - 1),
        view(P, "a-kick", created_at=NOW - KICK - 1, updated_at=NOW - KICK - 1),
        view(D, "y-cb", completion_callback_url=CALLBACK, updated_at=NOW - KICK - 1),
        view(D, "x-cb", completion_callback_url=CALLBACK, updated_at=NOW - KICK - 1),
        view(V, "q-stuck", updated_at=NOW - KICK - 1),
        view(V, "p-stuck", updated_at=NOW - KICK - 1),
        view(D, "n-gone", first_completed_at=NOW - EXPIRE_COMPLETED - 1),
        view(V, "m-gone", first_completed_at=NOW - EXPIRE_COMPLETED - 1),
        view(R, "fine", cell_id=LIVE),
    ]
    result = plan(TaskSnapshot(tasks=tuple(tasks), live_cells=frozenset({LIVE})), NOW, SETTINGS)
    assert result == Plan(
        fail=(
            ("a-claim", CELL_DISAPPEARED),
            ("b-old", EXPIRED_PENDING),
            ("b-run", CELL_DISAPPEARED),
        ),
        auction=("a-kick", "z-kick"),
        resolve=("x-cb", "y-cb"),
        demote=("p-stuck", "q-stuck"),
        delete=("m-gone", "n-gone"),
    )
    assert not result.is_empty
    assert Plan().is_empty


def test_no_live_cells_fails_every_claimed_and_running_task() -> None:
    """With no cell present every CLAIMED and RUNNING Task is failed, whatever its cell."""
    tasks = (view(C, "c", cell_id=LIVE), view(R, "r", cell_id=LIVE), view(P, "p"))
    result = plan(TaskSnapshot(tasks=tasks, live_cells=frozenset()), NOW, SETTINGS)
    assert result == Plan(fail=(("c", CELL_DISAPPEARED), ("r", CELL_DISAPPEARED)))


def test_settings_are_seconds_converted_to_nanoseconds() -> None:
    """Fractional settings in seconds set the boundaries to the nanosecond."""
    settings = ConvergerSettings(
        kick_task_interval=0.5, expire_pending_task=2.25, expire_completed_task=1.5
    )
    assert to_nanos(0.5) == S // 2
    snapshot = TaskSnapshot(
        tasks=(
            view(P, "p-kept", created_at=NOW - S // 2, updated_at=NOW - S // 2),
            view(P, "p-kick", created_at=NOW - S // 2 - 1, updated_at=NOW - S // 2 - 1),
            view(P, "p-old", created_at=NOW - 2_250_000_001),
            view(D, "d-kept", first_completed_at=NOW - 1_500_000_000),
            view(D, "d-gone", first_completed_at=NOW - 1_500_000_001),
        ),
        live_cells=frozenset(),
    )
    assert plan(snapshot, NOW, settings) == Plan(
        fail=(("p-old", EXPIRED_PENDING),), auction=("p-kick",), delete=("d-gone",)
    )


def test_diego_defaults() -> None:
    """The default settings are Diego's: kick 30 s, pending 30 min, completed 2 min."""
    assert (to_nanos(SETTINGS.kick_task_interval), to_nanos(SETTINGS.expire_pending_task)) == (
        KICK,
        EXPIRE_PENDING,
    )
    assert to_nanos(SETTINGS.expire_completed_task) == EXPIRE_COMPLETED


@pytest.mark.parametrize(
    "name", ["kick_task_interval", "expire_pending_task", "expire_completed_task"]
)
@pytest.mark.parametrize("value", [-1.0, float("nan")])
def test_settings_refuse_negative_durations(name: str, value: float) -> None:
    """A negative (or NaN) duration is refused when the settings are built."""
    with pytest.raises(ValueError, match=name):
        ConvergerSettings(**{name: value})


def test_snapshot_refuses_repeated_guids() -> None:
    """A snapshot naming one Task twice is refused, so a Task can be in only one bucket."""
    with pytest.raises(ValueError, match="more than once"):
        TaskSnapshot(tasks=(view(P, "same"), view(D, "same")), live_cells=frozenset())


def test_view_from_task_copies_the_deciding_fields() -> None:
    """``TaskView.from_task`` keeps exactly the fields the plan decides on."""
    request = TaskCreateRequest(
        task_guid="guid-1",
        domain="tests",
        stack="cflinuxfs4",
        action=RunAction(path="/bin/true"),
        completion_callback_url=CALLBACK,
    )
    task = Task.from_request(
        request,
        state=D,
        cell_id="cell-9",
        created_at=1,
        updated_at=3,
        first_completed_at=2,
    )
    assert TaskView.from_task(task) == TaskView(
        task_guid="guid-1",
        state=D,
        cell_id="cell-9",
        created_at=1,
        updated_at=3,
        first_completed_at=2,
        completion_callback_url=CALLBACK,
    )
    assert TaskSnapshot.of([task], frozenset({"cell-9"})).tasks == (TaskView.from_task(task),)


# Property tests.

CELLS = ("cell-0", "cell-1", "cell-2")
ALLOWED = {
    "fail": {P, C, R},
    "auction": {P},
    "resolve": {D},
    "demote": {V},
    "delete": {D, V},
}
"""The states a Task may be in to be put in each bucket."""

INTERVALS = (0, KICK, EXPIRE_COMPLETED, EXPIRE_PENDING)
ages = st.one_of(
    st.integers(min_value=0, max_value=2 * EXPIRE_PENDING),
    st.sampled_from(INTERVALS).flatmap(lambda i: st.sampled_from((i - 1, i, i + 1))),
)
"""How long ago something happened: anything, or within a nanosecond of a default interval."""


@st.composite
def views(draw: st.DrawFn, guid: str, now: int | None = None) -> TaskView:
    """A Task in any state, its times ``now`` if given, else any age before NOW."""

    def at() -> int:
        return now if now is not None else NOW - draw(ages)

    return TaskView(
        task_guid=guid,
        state=draw(st.sampled_from(list(TaskState))),
        cell_id=draw(st.sampled_from(("", *CELLS))),
        created_at=at(),
        updated_at=at(),
        first_completed_at=at(),
        completion_callback_url=draw(st.sampled_from(("", CALLBACK))),
    )


guid_sets = st.lists(st.text("abcdef0123-", min_size=1, max_size=6), unique=True, max_size=12)
cell_sets = st.frozensets(st.sampled_from(CELLS))
settings_strategy = st.one_of(
    st.just(SETTINGS),
    st.builds(
        ConvergerSettings,
        kick_task_interval=st.floats(0, 3600),
        expire_pending_task=st.floats(0, 3600),
        expire_completed_task=st.floats(0, 3600),
    ),
)


@st.composite
def snapshots(draw: st.DrawFn, now: int | None = None) -> TaskSnapshot:
    """A snapshot of Tasks with distinct guids and some of the cells alive."""
    tasks = tuple(draw(views(guid, now)) for guid in draw(guid_sets))
    return TaskSnapshot(tasks=tasks, live_cells=draw(cell_sets))


def buckets(result: Plan) -> dict[str, list[str]]:
    """Each bucket's Task guids."""
    return {
        "fail": [guid for guid, _ in result.fail],
        "auction": list(result.auction),
        "resolve": list(result.resolve),
        "demote": list(result.demote),
        "delete": list(result.delete),
    }


@given(snapshot=snapshots(), settings=settings_strategy)
def test_every_task_in_at_most_one_bucket_of_allowed_states(
    snapshot: TaskSnapshot, settings: ConvergerSettings
) -> None:
    """No Task is planned twice, and each bucket holds only Tasks in the states it allows."""
    result = plan(snapshot, NOW, settings)
    states = {t.task_guid: t.state for t in snapshot.tasks}
    planned = [guid for guids in buckets(result).values() for guid in guids]
    assert len(planned) == len(set(planned))
    assert set(planned) <= set(states)
    for name, guids in buckets(result).items():
        assert {states[g] for g in guids} <= ALLOWED[name], name
        assert guids == sorted(guids), name
    assert {reason for _, reason in result.fail} <= {CELL_DISAPPEARED, EXPIRED_PENDING}


@given(snapshot=snapshots(), settings=settings_strategy, seed=st.integers(0, 2**32))
def test_plan_is_deterministic_and_ignores_snapshot_order(
    snapshot: TaskSnapshot, settings: ConvergerSettings, seed: int
) -> None:
    """The same snapshot in any order gives the same plan, every time."""
    shuffled = list(snapshot.tasks)
    random.Random(seed).shuffle(shuffled)
    reordered = attrs.evolve(snapshot, tasks=tuple(shuffled))
    assert plan(snapshot, NOW, settings) == plan(snapshot, NOW, settings)
    assert plan(reordered, NOW, settings) == plan(snapshot, NOW, settings)


@given(snapshot=snapshots(now=NOW), settings=settings_strategy)
def test_nothing_old_only_fails_tasks_of_dead_cells(
    snapshot: TaskSnapshot, settings: ConvergerSettings
) -> None:
    """When every time is ``now`` the only action is failing CLAIMED and RUNNING Tasks of
    dead cells."""
    result = plan(snapshot, NOW, settings)
    orphans = sorted(
        t.task_guid
        for t in snapshot.tasks
        if t.state in (C, R) and t.cell_id not in snapshot.live_cells
    )
    assert result == Plan(fail=tuple((guid, CELL_DISAPPEARED) for guid in orphans))
