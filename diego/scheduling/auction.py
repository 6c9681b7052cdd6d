"""The auction for Tasks: place a batch of work onto cell snapshots, purely.

``schedule(cells, work)`` reads immutable snapshots and returns an ``AuctionResult``;
it does no I/O, reads no clock and keeps no state between calls. The auctioneer loop
fetches the snapshots, calls it, then commits the placements to the cells and feeds
``carried_over`` into the next batch (see ``README.md`` in this package).

Each Task ends in exactly one of three places:

- **placed** on the compatible cell with the lowest score that has room for it now;
- **rejected** (failed at once) when no cell serves its stack or root_fs scheme, or
  when no compatible cell could ever hold it, because even its *total* resources are
  too small;
- **carried over** when some compatible cell could hold it but none has the room
  free now: the cluster is busy, and the next batch tries again.

The score is Diego's: the fraction of memory, disk and containers a cell would have
in use after taking the Task, summed, lower being better (Diego divides the sum by 3,
which orders cells the same way). Ties go to the smallest ``cell_id``, so a batch
always gives the same result. The batch is taken biggest first (memory, then disk,
then guid), as Diego orders it, so that small work cannot starve big work.

How it stays fast. Cells are grouped by what they serve (stacks, root_fs providers)
and by their totals. Within a group a cell's score after taking a Task is its
current use plus a term that depends only on the group and the Task, so ordering a
group's cells by current use orders them by score. Scores are kept as exact integers
(each fraction scaled by the product of the group's totals), so no floating-point
rounding can make ties or orders differ between runs; groups are compared by exact
cross-multiplication.

Each group starts with a heap keyed by (use, cell_id). For a Task, the scheduler
pops each compatible group's heap until it meets a cell with room, puts back the
cells it passed, compares the groups' best cells, reserves on the winner and pushes
it back with its new use. In a balanced cluster the least-used cell is also the
one with the most room, so nothing is passed. When the cluster fills up that stops
being true, and once a Task has passed over ``_PATIENCE`` cells of a group the
group moves to a ``_FitTree``: a segment tree holding, per subtree, the most free
memory, the most free disk and the least (use, cell_id), searched branch and bound
for the least-used cell with room. Free resources only shrink within a batch, so
the tree's answers stay exact with one O(log n) update per placement.

Complexity, for ``n`` cells in ``G`` groups and a batch of ``w`` Tasks: building is
O(n) (the tree, when a group needs one, O(n_g log n_g) once), sorting the batch
O(w log w). A placement or carry-over costs O(G log n) on the heap (plus O(log n)
per cell passed over, fewer than ``_PATIENCE``), and on the tree O(G log n) plus
the subtrees it must look into: those that have the room in memory and in disk
(perhaps in different cells) and could beat the best cell found. For a full cluster
fed Tasks of widely mixed sizes that is sublinear but more than log n (measured:
about 100 nodes a search at 1,000 cells, 750 at 10,000); its worst case, for
adversarial mixes, is O(n_g). A rejection costs O(G). Clusters have few cell shapes,
so ``G`` is small, and the cost per placement grows with ``log n``, not with ``n``.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence
from typing import Any

import attrs

from diego.models.task import Task

PRELOADED = "preloaded"
"""The root_fs provider for an empty root_fs and for ``preloaded:NAME``."""
DOCKER = "docker"
"""The root_fs provider for ``docker:///org/image#tag``."""

MEMORY = "memory"
DISK = "disk"
CONTAINERS = "containers"
RESOURCE_NAMES = (MEMORY, DISK, CONTAINERS)
"""The resources a Task uses, in the order rejection reasons name them."""

NO_COMPATIBLE_CELL = "found no compatible cell"
"""The prefix of every reason given when no cell serves a Task's stack or root_fs."""
NO_CELL_FOR_STACK = NO_COMPATIBLE_CELL + ": no cell serves stack '{stack}'"
"""Format of the reason when no cell lists the Task's stack."""
NO_CELL_FOR_ROOT_FS = (
    NO_COMPATIBLE_CELL + ": no cell serving stack '{stack}' has root_fs provider '{provider}'"
)
"""Format of the reason when cells serve the stack but none has the root_fs provider."""
INSUFFICIENT_RESOURCES = "insufficient resources"
"""The prefix of the reason given when no compatible cell is big enough, ever."""
INSUFFICIENT_RESOURCES_FOR = INSUFFICIENT_RESOURCES + ": {shortages}"
"""Format of that reason: the short resources, joined with ", " (``memory, disk``)."""


def no_cell_for_stack(stack: str) -> str:
    """The rejection reason for a Task whose stack no cell serves."""
    return NO_CELL_FOR_STACK.format(stack=stack)


def no_cell_for_root_fs(stack: str, provider: str) -> str:
    """The rejection reason for a Task whose root_fs provider no cell of its stack has."""
    return NO_CELL_FOR_ROOT_FS.format(stack=stack, provider=provider)


def insufficient_resources(shortages: Iterable[str]) -> str:
    """The rejection reason naming the resources (``MEMORY``, ...) no compatible cell has."""
    short = set(shortages)
    return INSUFFICIENT_RESOURCES_FOR.format(
        shortages=", ".join(name for name in RESOURCE_NAMES if name in short)
    )


def root_fs_provider(root_fs: str) -> str:
    """The provider a cell needs for ``root_fs``: its URL scheme; empty means preloaded."""
    if not root_fs:
        return PRELOADED
    scheme, _, _ = root_fs.partition(":")
    return scheme


def _non_negative(_instance: Any, attribute: attrs.Attribute[int], value: int) -> None:
    if value < 0:
        raise ValueError(f"{attribute.name} must not be negative, got {value}")


@attrs.frozen
class Resources:
    """An amount of memory (MB), disk (MB) and containers: a cell's or a Task's."""

    memory_mb: int = attrs.field(validator=_non_negative)
    disk_mb: int = attrs.field(validator=_non_negative)
    containers: int = attrs.field(validator=_non_negative)

    def fits(self, room: Resources) -> bool:
        """Whether these resources fit in ``room``, resource by resource."""
        return (
            self.memory_mb <= room.memory_mb
            and self.disk_mb <= room.disk_mb
            and self.containers <= room.containers
        )

    def shortages(self, room: Resources) -> tuple[str, ...]:
        """The names of the resources of which ``room`` has less than these need."""
        short = (
            (MEMORY, self.memory_mb > room.memory_mb),
            (DISK, self.disk_mb > room.disk_mb),
            (CONTAINERS, self.containers > room.containers),
        )
        return tuple(name for name, is_short in short if is_short)

    def subtract(self, used: Resources) -> Resources:
        """What is left of these resources after ``used`` is taken; it must fit."""
        if not used.fits(self):
            raise ValueError(f"{used} does not fit in {self}")
        return Resources(
            self.memory_mb - used.memory_mb,
            self.disk_mb - used.disk_mb,
            self.containers - used.containers,
        )


def _available_within_total(instance: CellSnapshot, _attribute: Any, value: Resources) -> None:
    if not value.fits(instance.total):
        raise ValueError(f"cell {instance.cell_id}: available {value} exceeds total")


@attrs.frozen
class CellSnapshot:
    """A cell as the auction sees it: what it serves, how big it is, what is free now."""

    cell_id: str
    zone: str
    stacks: frozenset[str]
    rootfs_providers: frozenset[str]
    """The root_fs schemes the cell can run, e.g. ``{"preloaded", "docker"}``."""
    total: Resources
    available: Resources = attrs.field(validator=_available_within_total)

    def serves(self, stack: str, root_fs: str) -> bool:
        """Whether the cell serves ``stack`` and has the provider for ``root_fs``."""
        return stack in self.stacks and root_fs_provider(root_fs) in self.rootfs_providers


@attrs.frozen
class TaskWork:
    """The part of a Task the auction needs; it uses its memory, disk and one container."""

    task_guid: str
    domain: str
    stack: str
    root_fs: str
    memory_mb: int = attrs.field(validator=_non_negative)
    disk_mb: int = attrs.field(validator=_non_negative)

    @classmethod
    def from_task(cls, task: Task) -> TaskWork:
        """The work of ``task``."""
        return cls(
            task.task_guid, task.domain, task.stack, task.root_fs, task.memory_mb, task.disk_mb
        )

    @property
    def resources(self) -> Resources:
        """What the Task takes from a cell."""
        return Resources(self.memory_mb, self.disk_mb, 1)


@attrs.frozen
class Placement:
    """Run ``work`` on cell ``cell_id``: the cell had room, and the best score."""

    work: TaskWork
    cell_id: str


@attrs.frozen
class Rejection:
    """Fail ``work`` now with ``reason``: no cell could ever run it."""

    work: TaskWork
    reason: str


@attrs.frozen
class AuctionResult:
    """Every Task of a batch, once: placed, rejected or carried over to the next batch."""

    placements: tuple[Placement, ...]
    rejections: tuple[Rejection, ...]
    carried_over: tuple[TaskWork, ...]


def batch_order(work: TaskWork) -> tuple[int, int, str]:
    """The sort key of the batch: biggest memory first, then biggest disk, then guid."""
    return (-work.memory_mb, -work.disk_mb, work.task_guid)


def schedule(cells: Sequence[CellSnapshot], work: Sequence[TaskWork]) -> AuctionResult:
    """Place ``work`` onto ``cells``: each Task is placed, rejected or carried over.

    Reservations are made on in-memory copies as the batch goes, so no cell is given
    more than it has free. The result lists each kind in batch order. With no cells
    at all nothing can be judged (the cells may not have reported yet), so every Task
    is carried over. Task guids must be unique within the batch.
    """
    _check_unique(cells, work)
    ordered = sorted(work, key=batch_order)
    if not cells:
        return AuctionResult((), (), tuple(ordered))
    cluster = _Cluster(cells)
    placements: list[Placement] = []
    rejections: list[Rejection] = []
    carried_over: list[TaskWork] = []
    for item in ordered:
        outcome = cluster.place(item)
        if isinstance(outcome, Placement):
            placements.append(outcome)
        elif isinstance(outcome, Rejection):
            rejections.append(outcome)
        else:
            carried_over.append(item)
    return AuctionResult(tuple(placements), tuple(rejections), tuple(carried_over))


def _check_unique(cells: Sequence[CellSnapshot], work: Sequence[TaskWork]) -> None:
    for kind, names in (
        ("cell_id", [cell.cell_id for cell in cells]),
        ("task_guid", [item.task_guid for item in work]),
    ):
        seen: set[str] = set()
        for name in names:
            if name in seen:
                raise ValueError(f"{kind} {name!r} appears more than once")
            seen.add(name)


_Entry = tuple[int, str, int]
"""A heap entry: (the cell's use, scaled to an integer; its cell_id; its index)."""

_PATIENCE = 8
"""Cells a group's heap may pass over for one Task before the group moves its cells
into a ``_FitTree``: the cluster is busy, and the least-used cells lack room."""


@attrs.define(eq=False)
class _Group:
    """Cells alike in stacks, root_fs providers and totals, least used first.

    A cell's score is ``use / denominator`` with
    ``use = used_memory * weights[0] + used_disk * weights[1] + used_containers *
    weights[2]``: the three fractions of the totals, scaled by their product so that
    the sum is an exact integer. A zero total counts as 1 (nothing of it is ever used).

    The cells live in a heap while its top cells have room for the Tasks that come;
    once a Task has to pass over ``_PATIENCE`` of them, they move to a ``_FitTree``,
    which finds the least-used cell with room without walking past the others.
    """

    total: Resources
    weights: tuple[int, int, int]
    denominator: int
    heap: list[_Entry] = attrs.Factory(list)
    tree: _FitTree | None = None

    @classmethod
    def of(cls, total: Resources) -> _Group:
        """An empty group of cells with these totals."""
        memory, disk, containers = (
            max(total.memory_mb, 1),
            max(total.disk_mb, 1),
            max(total.containers, 1),
        )
        weights = (disk * containers, memory * containers, memory * disk)
        return cls(total, weights, memory * disk * containers)

    def use(self, memory_mb: int, disk_mb: int, containers: int) -> int:
        """The scaled use of a cell of this group with these resources free."""
        wm, wd, wc = self.weights
        total = self.total
        return (
            (total.memory_mb - memory_mb) * wm
            + (total.disk_mb - disk_mb) * wd
            + (total.containers - containers) * wc
        )

    def cost(self, memory_mb: int, disk_mb: int) -> int:
        """How much a Task of this size adds to the scaled use of a cell of this group."""
        wm, wd, wc = self.weights
        return memory_mb * wm + disk_mb * wd + wc

    def holds(self, memory_mb: int, disk_mb: int) -> bool:
        """Whether a cell of this group, empty, could hold a Task of this size."""
        total = self.total
        return memory_mb <= total.memory_mb and disk_mb <= total.disk_mb and total.containers >= 1

    def take_best(self, memory_mb: int, disk_mb: int, free: _Free) -> _Entry | None:
        """The least-used cell with room for the Task (smallest cell_id among equals).

        None if no cell has room. The caller must then ``commit`` or ``release`` the
        cell before asking this group again.
        """
        if self.tree is not None:
            return self.tree.best(memory_mb, disk_mb)
        heap = self.heap
        passed: list[_Entry] = []
        free_memory, free_disk = free.memory, free.disk
        while heap:
            entry = heapq.heappop(heap)
            cell = entry[2]
            if memory_mb <= free_memory[cell] and disk_mb <= free_disk[cell]:
                for other in passed:
                    heapq.heappush(heap, other)
                return entry
            passed.append(entry)
            if len(passed) == _PATIENCE:
                self.tree = _FitTree(passed + heap, free_memory, free_disk, 4 * self.denominator)
                self.heap = []
                return self.tree.best(memory_mb, disk_mb)
        self.heap = passed  # popped in order, so sorted: already a valid heap
        return None

    def release(self, entry: _Entry) -> None:
        """Give back, unchanged, a cell ``take_best`` returned."""
        if self.tree is None:
            heapq.heappush(self.heap, entry)

    def commit(self, entry: _Entry, memory_mb: int, disk_mb: int, free: _Free) -> None:
        """Give back a cell ``take_best`` returned, after the Task was reserved on it."""
        use, cell_id, cell = entry
        placed = (use + self.cost(memory_mb, disk_mb), cell_id, cell)
        if self.tree is not None:
            self.tree.update(
                cell, free.memory[cell], free.disk[cell], free.containers[cell], placed
            )
        elif free.containers[cell] > 0:
            heapq.heappush(self.heap, placed)


class _FitTree:
    """Finds the least-used cell with room for (memory, disk), exactly.

    A segment tree over a group's cells, laid out in order of free memory when
    built. Each node keeps the largest free memory and free disk below it and the
    smallest entry (use, cell_id) below it. The search is branch and bound: it
    descends only into nodes that have the room and could beat the best cell found
    so far, smaller entries first. Cells of neighbouring sizes share subtrees, so
    whole ranges are cut at once; an update costs O(log n).
    """

    def __init__(
        self, entries: list[_Entry], free_memory: list[int], free_disk: list[int], never: int
    ) -> None:
        entries = sorted(
            entries, key=lambda entry: (free_memory[entry[2]], free_disk[entry[2]]), reverse=True
        )
        size = 1
        while size < len(entries):
            size *= 2
        self.size = size
        self.dead: _Entry = (never, "", -1)
        """Sorts after every real entry: the padding, and cells that can take nothing."""
        self.leaf = {entry[2]: size + position for position, entry in enumerate(entries)}
        memory = self.memory = [-1] * (2 * size)
        disk = self.disk = [-1] * (2 * size)
        low = self.low = [self.dead] * (2 * size)
        for position, entry in enumerate(entries):
            leaf = size + position
            memory[leaf], disk[leaf], low[leaf] = free_memory[entry[2]], free_disk[entry[2]], entry
        for node in range(size - 1, 0, -1):
            left, right = 2 * node, 2 * node + 1
            memory[node] = max(memory[left], memory[right])
            disk[node] = max(disk[left], disk[right])
            low[node] = min(low[left], low[right])

    def update(
        self, cell: int, free_memory: int, free_disk: int, containers: int, entry: _Entry
    ) -> None:
        """Record what ``cell`` has free now, and its new entry."""
        memory, disk, low = self.memory, self.disk, self.low
        node = self.leaf[cell]
        if containers > 0:
            memory[node], disk[node], low[node] = free_memory, free_disk, entry
        else:
            memory[node], disk[node], low[node] = -1, -1, self.dead
        node //= 2
        while node:
            left, right = 2 * node, 2 * node + 1
            memory[node] = max(memory[left], memory[right])
            disk[node] = max(disk[left], disk[right])
            low[node] = min(low[left], low[right])
            node //= 2

    def best(self, memory_mb: int, disk_mb: int) -> _Entry | None:
        """The smallest entry of a cell with ``memory_mb`` and ``disk_mb`` free, if any."""
        memory, disk, low, size = self.memory, self.disk, self.low, self.size
        best: _Entry | None = None
        stack = [1]
        while stack:
            node = stack.pop()
            if memory[node] < memory_mb or disk[node] < disk_mb:
                continue
            if best is not None and low[node] >= best:
                continue
            if node >= size:
                best = low[node]
                continue
            left, right = 2 * node, 2 * node + 1
            if low[left] <= low[right]:
                stack += (right, left)
            else:
                stack += (left, right)
        return best


@attrs.define(eq=False)
class _Free:
    """The free resources of every cell, by index: the in-memory copies reserved on."""

    memory: list[int]
    disk: list[int]
    containers: list[int]


class _Cluster:
    """The cells of one batch, grouped and heaped, with reservations made so far."""

    def __init__(self, cells: Sequence[CellSnapshot]) -> None:
        self.free = _Free(
            [cell.available.memory_mb for cell in cells],
            [cell.available.disk_mb for cell in cells],
            [cell.available.containers for cell in cells],
        )
        self.stacks: set[str] = set()
        classes: dict[tuple[frozenset[str], frozenset[str]], dict[Resources, _Group]] = {}
        for index, cell in enumerate(cells):
            self.stacks |= cell.stacks
            shapes = classes.setdefault((cell.stacks, cell.rootfs_providers), {})
            group = shapes.get(cell.total)
            if group is None:
                group = shapes[cell.total] = _Group.of(cell.total)
            available = cell.available
            if available.containers > 0:
                use = group.use(available.memory_mb, available.disk_mb, available.containers)
                group.heap.append((use, cell.cell_id, index))
        for shapes in classes.values():
            for group in shapes.values():
                heapq.heapify(group.heap)
        self.classes = {key: list(shapes.values()) for key, shapes in classes.items()}
        self._compatible: dict[tuple[str, str], list[_Group]] = {}

    def compatible(self, stack: str, provider: str) -> list[_Group]:
        """The groups whose cells serve ``stack`` and have ``provider``."""
        key = (stack, provider)
        groups = self._compatible.get(key)
        if groups is None:
            groups = self._compatible[key] = [
                group
                for (stacks, providers), shapes in self.classes.items()
                if stack in stacks and provider in providers
                for group in shapes
            ]
        return groups

    def place(self, work: TaskWork) -> Placement | Rejection | None:
        """Place ``work`` and reserve its resources, reject it, or (None) carry it over."""
        provider = root_fs_provider(work.root_fs)
        groups = self.compatible(work.stack, provider)
        if not groups:
            if work.stack not in self.stacks:
                return Rejection(work, no_cell_for_stack(work.stack))
            return Rejection(work, no_cell_for_root_fs(work.stack, provider))
        memory_mb, disk_mb = work.memory_mb, work.disk_mb
        feasible = [group for group in groups if group.holds(memory_mb, disk_mb)]
        if not feasible:
            need = work.resources
            return Rejection(
                work,
                insufficient_resources(
                    name for group in groups for name in need.shortages(group.total)
                ),
            )
        best: tuple[_Group, _Entry] | None = None
        for group in feasible:
            entry = group.take_best(memory_mb, disk_mb, self.free)
            if entry is None:
                continue
            if best is None:
                best = (group, entry)
            elif _beats(group, entry, *best, memory_mb, disk_mb):
                best[0].release(best[1])
                best = (group, entry)
            else:
                group.release(entry)
        if best is None:
            return None
        group, entry = best
        index, free = entry[2], self.free
        free.memory[index] -= memory_mb
        free.disk[index] -= disk_mb
        free.containers[index] -= 1
        group.commit(entry, memory_mb, disk_mb, free)
        return Placement(work, entry[1])


def _beats(
    group: _Group, entry: _Entry, rival: _Group, rival_entry: _Entry, memory_mb: int, disk_mb: int
) -> bool:
    """Whether ``entry``'s cell scores lower after the Task than ``rival_entry``'s (or ties
    with a smaller cell_id). Scores are compared exactly, by cross-multiplying."""
    mine = (entry[0] + group.cost(memory_mb, disk_mb)) * rival.denominator
    theirs = (rival_entry[0] + rival.cost(memory_mb, disk_mb)) * group.denominator
    return mine < theirs or (mine == theirs and entry[1] < rival_entry[1])


def score(cell: CellSnapshot, work: TaskWork) -> float:
    """Diego's score of ``cell`` for ``work``: the mean fraction of memory, disk and
    containers in use once the Task is placed (lower is better). For reading and
    testing; ``schedule`` ranks by the same quantity, computed exactly."""
    left = cell.available
    fractions = (
        (left.memory_mb - work.memory_mb, cell.total.memory_mb),
        (left.disk_mb - work.disk_mb, cell.total.disk_mb),
        (left.containers - 1, cell.total.containers),
    )
    return sum(1 - remaining / total if total else 0.0 for remaining, total in fractions) / 3
