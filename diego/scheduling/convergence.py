"""The converger's plan for Tasks: a pure function from a BBS snapshot and ``now``.

The converger repairs what lost messages, dead cells and dead resolvers leave
behind. Tasks run at most once, so it never restarts one: it fails, re-auctions,
re-kicks and reaps. Each pass reads a :class:`TaskSnapshot`, asks :func:`plan` what
to do, and a separate loop applies the :class:`Plan` with compare-and-swap and
compare-and-delete (a Task that changed meanwhile simply loses the race).

    state                 condition (older: ``now - t > interval``)      bucket
    --------------------  ---------------------------------------------  ------------------
    CLAIMED, RUNNING      ``cell_id`` is not a live cell                 fail, CELL_DISAPPEARED
    PENDING               ``created_at`` older than expire_pending_task  fail, EXPIRED_PENDING
    PENDING               else ``updated_at`` older than kick interval   auction
    COMPLETED, RESOLVING  ``first_completed_at`` older than              delete
                          expire_completed_task
    COMPLETED             else has a ``completion_callback_url`` and     resolve
                          ``updated_at`` older than kick interval
    RESOLVING             else ``updated_at`` older than kick interval   demote

Rows are tried top to bottom for a Task's state and the first that matches wins,
so every Task lands in at most one bucket; a Task that matches none needs nothing.
A COMPLETED Task without a callback URL is never kicked: its consumer polls and
deletes it, and the converger reaps it once it expires. A CLAIMED or RUNNING Task
on a live cell is the rep's business, never the converger's.

A demoted Task is back in COMPLETED with its ``updated_at`` refreshed; if it has a
callback URL, the loop should kick it right after demoting it (as Diego's pass does,
which demotes before it collects the COMPLETED Tasks to kick), otherwise it waits
for its consumer or for expiry.

Times are int nanoseconds since the epoch; the settings are seconds. Every bucket
is sorted by Task guid, so a plan does not depend on the order of the snapshot.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import NamedTuple

import attrs

from diego.models.task import Task, TaskState

CELL_DISAPPEARED = "cell disappeared before completion"
"""The failure reason of a CLAIMED or RUNNING Task whose cell is gone (Diego's words)."""

EXPIRED_PENDING = "not started within time limit"
"""The failure reason of a Task left PENDING too long (Diego's words)."""


def to_nanos(seconds: float) -> int:
    """``seconds`` as int nanoseconds (truncated, as the settings are coarse)."""
    return int(seconds * 1e9)


def _non_negative(instance: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not value >= 0:  # also refuses NaN
        raise ValueError(f"{attribute.name} must be at least 0, not {value!r}")


@attrs.frozen
class ConvergerSettings:
    """The converger's Task timings in seconds, with Diego's defaults."""

    kick_task_interval: float = attrs.field(default=30.0, validator=_non_negative)
    """A PENDING, COMPLETED or RESOLVING Task untouched this long is kicked again."""
    expire_pending_task: float = attrs.field(default=30 * 60.0, validator=_non_negative)
    """A Task still PENDING this long after its creation is failed."""
    expire_completed_task: float = attrs.field(default=120.0, validator=_non_negative)
    """A Task completed this long ago and still not resolved is deleted."""


class TaskView(NamedTuple):
    """The fields of a Task that the converger decides on.

    A named tuple, not an attrs class: a pass makes one for every Task stored, and
    a tuple is made in a third of the time.
    """

    task_guid: str
    state: TaskState
    cell_id: str = ""
    created_at: int = 0
    updated_at: int = 0
    first_completed_at: int = 0
    completion_callback_url: str = ""

    @classmethod
    def from_task(cls, task: Task) -> TaskView:
        """The converger's view of ``task``."""
        return cls(
            task_guid=task.task_guid,
            state=task.state,
            cell_id=task.cell_id,
            created_at=task.created_at,
            updated_at=task.updated_at,
            first_completed_at=task.first_completed_at,
            completion_callback_url=task.completion_callback_url,
        )


def _unique_guids(
    instance: object, attribute: attrs.Attribute[tuple[TaskView, ...]], value: tuple[TaskView, ...]
) -> None:
    guids = [t.task_guid for t in value]
    if len(set(guids)) == len(guids):
        return  # the usual case, found without counting
    repeated = sorted(g for g, n in Counter(guids).items() if n > 1)
    if repeated:
        raise ValueError(f"{attribute.name}: task guids appear more than once: {repeated}")


def _views(tasks: Iterable[TaskView]) -> tuple[TaskView, ...]:
    return tuple(tasks)


def _cells(cells: Iterable[str]) -> frozenset[str]:
    return frozenset(cells)


@attrs.frozen
class TaskSnapshot:
    """Every Task in the BBS and the cells present, read at one moment."""

    tasks: tuple[TaskView, ...] = attrs.field(default=(), converter=_views, validator=_unique_guids)
    live_cells: frozenset[str] = attrs.field(default=frozenset(), converter=_cells)

    @classmethod
    def of(cls, tasks: Iterable[Task], live_cells: Iterable[str]) -> TaskSnapshot:
        """A snapshot of whole Tasks, as a store lists them."""
        return cls(tasks=tuple(TaskView.from_task(t) for t in tasks), live_cells=live_cells)


@attrs.frozen
class Plan:
    """What one convergence pass should do, each bucket sorted by Task guid."""

    fail: tuple[tuple[str, str], ...] = ()
    """(task_guid, failure_reason): CAS to COMPLETED, failed, with that reason."""
    auction: tuple[str, ...] = ()
    """PENDING Tasks to send to the auctioneer again."""
    resolve: tuple[str, ...] = ()
    """COMPLETED Tasks with a callback URL whose callback should be kicked again."""
    demote: tuple[str, ...] = ()
    """RESOLVING Tasks stuck too long: CAS back to COMPLETED (then kicked if they have a
    callback URL)."""
    delete: tuple[str, ...] = ()
    """COMPLETED or RESOLVING Tasks completed way too long ago: compare-and-delete."""

    @property
    def is_empty(self) -> bool:
        """Whether the pass has nothing to do."""
        return not (self.fail or self.auction or self.resolve or self.demote or self.delete)


def plan(snapshot: TaskSnapshot, now: int, settings: ConvergerSettings) -> Plan:
    """What to do about every Task in ``snapshot`` at ``now`` (int nanoseconds)."""
    kick = to_nanos(settings.kick_task_interval)
    expire_pending = to_nanos(settings.expire_pending_task)
    expire_completed = to_nanos(settings.expire_completed_task)

    def older(t: int, interval: int) -> bool:
        return now - t > interval

    fail: list[tuple[str, str]] = []
    auction: list[str] = []
    resolve: list[str] = []
    demote: list[str] = []
    delete: list[str] = []

    for task in snapshot.tasks:
        guid = task.task_guid
        match task.state:
            case TaskState.CLAIMED | TaskState.RUNNING:
                if task.cell_id not in snapshot.live_cells:
                    fail.append((guid, CELL_DISAPPEARED))
            case TaskState.PENDING:
                if older(task.created_at, expire_pending):
                    fail.append((guid, EXPIRED_PENDING))
                elif older(task.updated_at, kick):
                    auction.append(guid)
            case TaskState.COMPLETED:
                if older(task.first_completed_at, expire_completed):
                    delete.append(guid)
                elif task.completion_callback_url and older(task.updated_at, kick):
                    resolve.append(guid)
            case TaskState.RESOLVING:
                if older(task.first_completed_at, expire_completed):
                    delete.append(guid)
                elif older(task.updated_at, kick):
                    demote.append(guid)

    return Plan(
        fail=tuple(sorted(fail)),
        auction=tuple(sorted(auction)),
        resolve=tuple(sorted(resolve)),
        demote=tuple(sorted(demote)),
        delete=tuple(sorted(delete)),
    )


@attrs.frozen
class CellWatch:
    """What a look at the cells' presences found: who is live, who went since the last
    look, and how long until the next look is worth taking."""

    live: frozenset[str]
    gone: frozenset[str]
    next_look: float  # seconds


def watch_cells(
    before: frozenset[str], expiries: Mapping[str, int], now: int, longest: float
) -> CellWatch:
    """The cells live at ``now`` by their presences' ``expiries`` (ns), those of
    ``before`` no longer live, and when to look again: just after the soonest live
    presence would expire if not renewed, and at most ``longest`` seconds on."""
    live = frozenset(cell for cell, expires_at in expiries.items() if expires_at > now)
    soonest = min((expiries[cell] for cell in live), default=None)
    next_look = longest
    if soonest is not None:
        next_look = min(longest, (soonest - now) / 1e9 + PAST_EXPIRY)
    return CellWatch(live=live, gone=before - live, next_look=max(next_look, PAST_EXPIRY))


PAST_EXPIRY = 0.01
"""Seconds past a presence's expiry before looking: at the instant itself it still holds."""
