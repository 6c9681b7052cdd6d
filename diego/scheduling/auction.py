"""The auction for Tasks and LRP instances: place a batch of work onto cell snapshots,
purely.

``schedule(cells, work)`` reads immutable snapshots and returns an ``AuctionResult``;
it does no I/O, reads no clock and keeps no state between calls. ``work`` mixes
``TaskWork`` and ``LRPWork`` freely (a batch of Tasks alone is typed
``AuctionResult[TaskWork]``). The auctioneer loop fetches the snapshots, calls it, then
commits the placements to the cells, feeds ``carried_over`` into the next batch and
records each ``unplaced`` instance's reason (see ``README.md`` in this package).

The batch runs in Diego's order: LRP instances of index 0, then Tasks, then LRP
instances of index 1 and up; instances lowest index first, then biggest memory.

Each Task ends in exactly one of three places:

- **placed** on the compatible cell with the lowest score that has room for it now
  (compatible: it serves the Task's stack and root_fs scheme and, if the Task names
  zones, is in one of them);
- **rejected** (failed at once) when no cell serves its stack or root_fs scheme, or
  none that does is in its zones, or when no compatible cell could ever hold it,
  because even its *total* resources are too small;
- **carried over** when some compatible cell could hold it but none has the room
  free now: the cluster is busy, and the next batch tries again.

The score is Diego's: the fraction of memory, disk and containers a cell would have
in use after taking the Task, summed, lower being better (Diego divides the sum by 3,
which orders cells the same way). Ties go to the smallest ``cell_id``, so a batch
always gives the same result. The batch is taken biggest first (memory, then disk,
then guid), as Diego orders it, so that small work cannot starve big work.

How it stays fast. Cells are grouped by zone, by what they serve (stacks, root_fs
providers) and by their totals; one set of groups (``_Cells``) serves the three
phases of a batch. Within a group a cell's score after taking some work is its
current use plus a term that depends only on the group and the work's size, so
ordering a group's cells by current use orders them by score. Scores are kept as
exact integers (each fraction scaled by the product of the group's totals), so no
floating-point rounding can make ties or orders differ between runs; groups are
compared by exact cross-multiplication.

Each group starts with a heap keyed by (use, cell_id), kept lazily: a placement
does no heap work, and an entry whose use is out of date is refreshed when it
surfaces (uses only grow within a batch, so a stale entry sorts no later than its
cell should). For a Task, each compatible group (of the Task's zones, if it names
any) pops its heap until it meets a cell with room and puts back the cells it
passed; the groups' best cells are compared and the winner reserved on. In a
balanced cluster the least-used cell is also the one with the most room, so nothing
is passed. When the cluster fills up that stops being true, and once a search has
passed over ``_PATIENCE`` cells without room the group moves to a ``_FitTree``: a
segment tree holding, per subtree, the most free memory, the most free disk and the
least (use, cell_id), searched branch and bound for the least-used cell with room.
Free resources only shrink within a batch, so the tree's answers stay exact with
one O(log n) update per placement. Memory and disk free on different cells can make
tree searches long, so the nodes they visit are charged to the size asked for, and
a size that has cost more than the group has cells gets a lazily kept heap of the
cells with room for it, built in O(n_g) (ski rental: about twice the work of the
better of the two, at worst). Sizes a group has no room for are remembered, so work
that cannot be placed costs O(1) a group after the first.

Complexity, for ``n`` cells in ``G`` groups and a batch of ``w`` pieces of work:
building is O(n) (a tree, when a group needs one, O(n_g log n_g) once), sorting the
batch O(w log w). A Task's placement or carry-over costs O(G log n), plus O(log n)
per cell passed over; a rejection costs O(G), and O(1) once its kind was seen.
Clusters have few cell shapes and zones, so ``G`` is small.

LRP instances. An instance is placed or left **unplaced** with a reason; it is never
failed (the auctioneer records the reason and tries again later). The reasons are
the Tasks' for no compatible cell and for no cell big enough ever; for an index of
0 or 1 that no zone has room for now, ``insufficient resources: ...`` naming what
every compatible cell is short of (Diego's way), or, when no resource is short
everywhere, what some are short of; for an index above 1, ``insufficient resources
in zone 'Z'``.

Zones: the zones are the cells' distinct zones, sorted; an instance's ranking is that
list rotated to start at ``(crc32(process_guid) + index) % NZones``
(``zone_ranking``). Indices 0 and 1 go to the first zone of their ranking with a
compatible cell that has room; an index above 1 only to the first, its preferred
zone, or nowhere. Within the zone the instance goes to the cell with room that runs
the fewest instances of its process (those in ``CellSnapshot.lrp_counts`` and those
placed earlier in the batch), then has the lowest score, then the smallest cell_id.

How the LRP side stays fast. An instance searches the groups of one zone at a time.
A process runs on few cells, so each zone group answers "the least-used cell with
room that does not run it" from the same heap or tree as for Tasks, passing over the
few cells that do. A process that makes a search pass over more than ``_CROWDING``
of its own cells (many instances in a zone) gets, for that zone group and size, its
own heap keyed by (instances, use, cell_id). Cells without room for a size are
dropped from that size's heaps for good: free room only shrinks within a batch.

Complexity per instance: O(Z G log n) for Z zones tried (Z = 1 above index 1) in
the common case, plus O(log n) per cell of its own process passed over (at most
``_CROWDING``); heaps of sizes and processes cost O(n_g) once each, charged as said.
Building is O(n), plus one pass over the cells' ``lrp_counts`` a batch. ``python -m
bench auction`` measures it (cold starts of 100,000 instances and 50,000 Tasks onto
100, 1,000 and 10,000 cells, and busy clusters); the project README has the figures.
"""

from __future__ import annotations

import heapq
import sys
import zlib
from collections.abc import Iterable, Mapping, Sequence
from typing import Generic, TypeVar, overload

import attrs

from diego.models.work import (
    RESOURCE_NAMES,
    CellSnapshot,
    LRPWork,
    Resources,
    TaskWork,
    root_fs_provider,
)

NO_COMPATIBLE_CELL = "found no compatible cell"
"""The prefix of every reason given when no cell serves a Task's stack or root_fs."""
NO_CELL_FOR_STACK = NO_COMPATIBLE_CELL + ": no cell serves stack '{stack}'"
"""Format of the reason when no cell lists the Task's stack."""
NO_CELL_FOR_ROOT_FS = (
    NO_COMPATIBLE_CELL + ": no cell serving stack '{stack}' has root_fs provider '{provider}'"
)
"""Format of the reason when cells serve the stack but none has the root_fs provider."""
NO_CELL_IN_ZONES = (
    NO_COMPATIBLE_CELL
    + ": no cell serving stack '{stack}' is in zone {zones} (cells are in {have})"
)
"""Format of the reason when compatible cells exist, but none in the Task's zones."""
INSUFFICIENT_RESOURCES = "insufficient resources"
"""The prefix of the reason given when no compatible cell is big enough, ever."""
INSUFFICIENT_RESOURCES_FOR = INSUFFICIENT_RESOURCES + ": {shortages}"
"""Format of that reason: the short resources, joined with ", " (``memory, disk``)."""
INSUFFICIENT_RESOURCES_IN_ZONE = INSUFFICIENT_RESOURCES + " in zone '{zone}'"
"""Format of the reason an LRP instance of index > 1 is not placed: its preferred zone,
the only one it may go to, has no compatible cell with room for it."""


def no_cell_for_stack(stack: str) -> str:
    """The rejection reason for a Task whose stack no cell serves."""
    return NO_CELL_FOR_STACK.format(stack=stack)


def no_cell_for_root_fs(stack: str, provider: str) -> str:
    """The rejection reason for a Task whose root_fs provider no cell of its stack has."""
    return NO_CELL_FOR_ROOT_FS.format(stack=stack, provider=provider)


def no_cell_in_zones(stack: str, zones: Iterable[str], have: Iterable[str]) -> str:
    """The rejection reason for a Task whose zones hold no cell serving it; ``have``:
    the zones that do."""
    return NO_CELL_IN_ZONES.format(
        stack=stack,
        zones=" or ".join(repr(zone) for zone in sorted(zones)),
        have=", ".join(repr(zone) for zone in sorted(have)),
    )


def insufficient_resources(shortages: Iterable[str]) -> str:
    """The rejection reason naming the resources (``MEMORY``, ...) no compatible cell has."""
    short = set(shortages)
    return INSUFFICIENT_RESOURCES_FOR.format(
        shortages=", ".join(name for name in RESOURCE_NAMES if name in short)
    )


def insufficient_resources_in_zone(zone: str) -> str:
    """The reason an LRP instance of index > 1 is left unplaced: ``zone`` has no room."""
    return INSUFFICIENT_RESOURCES_IN_ZONE.format(zone=zone)


W_co = TypeVar("W_co", bound=TaskWork | LRPWork, covariant=True)


@attrs.frozen
class Placement(Generic[W_co]):
    """Run ``work`` (a Task or an LRP instance) on cell ``cell_id``: the cell had room,
    and the best rank."""

    work: W_co
    cell_id: str


@attrs.frozen
class Rejection:
    """Fail ``work`` now with ``reason``: no cell could ever run it."""

    work: TaskWork
    reason: str


@attrs.frozen
class AuctionResult(Generic[W_co]):
    """Every piece of work of a batch, once.

    A Task is placed, rejected or carried over to the next batch; an LRP instance is
    placed or left ``unplaced`` with the reason, for the auctioneer to record on the
    ActualLRP and try again later (an LRP is never failed by the auction).
    ``placements`` come in the order they were made (see ``schedule``).
    """

    placements: tuple[Placement[W_co], ...]
    rejections: tuple[Rejection, ...]
    carried_over: tuple[TaskWork, ...]
    unplaced: tuple[tuple[LRPWork, str], ...] = ()


def batch_order(work: TaskWork) -> tuple[int, int, str]:
    """The sort key of the batch: biggest memory first, then biggest disk, then guid."""
    return (-work.memory_mb, -work.disk_mb, work.task_guid)


def lrp_order(work: LRPWork) -> tuple[int, int, int, str]:
    """The sort key of a batch's LRP instances, Diego's: lowest index first, then biggest
    memory, then (for a total order) biggest disk and process_guid."""
    return (work.index, -work.memory_mb, -work.disk_mb, work.process_guid)


def zone_ranking(process_guid: str, index: int, zones: Iterable[str]) -> tuple[str, ...]:
    """The zones in the order instance ``index`` of ``process_guid`` prefers them.

    ``zones`` are the distinct zones of the cells (any order, repeats allowed); they
    are sorted, and the ranking is that list rotated to start at
    ``(crc32(process_guid) + index) % len(zones)``: instance 0 starts at the process's
    own zone, instance 1 at the next, and so on. The first zone is the instance's
    *preferred zone*, the only one an instance of index > 1 may be placed in.
    """
    ordered = sorted(set(zones))
    if not ordered:
        return ()
    start = (_zone_hash(process_guid) + index) % len(ordered)
    return tuple(ordered[start:] + ordered[:start])


def _zone_hash(process_guid: str) -> int:
    """A stable hash of the process (the same in every run and process): CRC-32."""
    return zlib.crc32(process_guid.encode())


@overload
def schedule(
    cells: Sequence[CellSnapshot], work: Sequence[TaskWork]
) -> AuctionResult[TaskWork]: ...


@overload
def schedule(
    cells: Sequence[CellSnapshot], work: Sequence[TaskWork | LRPWork]
) -> AuctionResult[TaskWork | LRPWork]: ...


def schedule(
    cells: Sequence[CellSnapshot], work: Sequence[TaskWork | LRPWork]
) -> AuctionResult[TaskWork | LRPWork]:
    """Place ``work`` (Tasks and LRP instances, mixed) onto ``cells``.

    Each Task is placed, rejected or carried over; each LRP instance is placed or left
    unplaced with a reason. Reservations are made on in-memory copies as the batch
    goes, so no cell is given more than it has free.

    The order is Diego's: first the LRP instances of index 0, then the Tasks, then
    the LRP instances of index 1 and up, so that every application gets its first
    instance before any Task, and Tasks come before extra instances. LRP instances are
    taken lowest index first, then biggest memory (``lrp_order``); Tasks biggest first
    (``batch_order``). ``placements`` lists placements in that order; rejections,
    carry-overs and unplaced instances are each in their own order.

    With no cells at all nothing can be judged: every Task is carried over and every
    LRP instance is left unplaced (no cell serves its stack). Task guids, and LRP
    (process_guid, index) pairs, must be unique within the batch.
    """
    tasks = [item for item in work if isinstance(item, TaskWork)]
    lrps = [item for item in work if isinstance(item, LRPWork)]
    _check_unique(cells, tasks, lrps)
    ordered = sorted(tasks, key=batch_order)
    instances = sorted(lrps, key=lrp_order)
    if not cells:
        unplaced = tuple((item, no_cell_for_stack(item.stack)) for item in instances)
        return AuctionResult((), (), tuple(ordered), unplaced)
    placements: list[Placement[TaskWork | LRPWork]] = []
    rejections: list[Rejection] = []
    carried_over: list[TaskWork] = []
    unplaced_lrps: list[tuple[LRPWork, str]] = []
    cluster = _Cells(cells, _existing_instances(cells, instances))
    first = [item for item in instances if item.index == 0]
    cluster.place_all(first, placements, unplaced_lrps)
    for item in ordered:
        outcome = cluster.place_task(item)
        if isinstance(outcome, Placement):
            placements.append(outcome)
        elif isinstance(outcome, Rejection):
            rejections.append(outcome)
        else:
            carried_over.append(item)
    cluster.place_all(instances[len(first) :], placements, unplaced_lrps)
    return AuctionResult(
        tuple(placements), tuple(rejections), tuple(carried_over), tuple(unplaced_lrps)
    )


def _check_unique(
    cells: Sequence[CellSnapshot], tasks: Sequence[TaskWork], lrps: Sequence[LRPWork]
) -> None:
    for kind, names in (
        ("cell_id", [cell.cell_id for cell in cells]),
        ("task_guid", [item.task_guid for item in tasks]),
        ("LRP instance", [f"{item.process_guid}/{item.index}" for item in lrps]),
    ):
        seen: set[str] = set()
        for name in names:
            if name in seen:
                raise ValueError(f"{kind} {name!r} appears more than once")
            seen.add(name)


def _existing_instances(
    cells: Sequence[CellSnapshot], lrps: Sequence[LRPWork]
) -> dict[str, dict[int, int]]:
    """For each process of the batch: cell index → instances of it the cell runs now."""
    levels: dict[str, dict[int, int]] = {item.process_guid: {} for item in lrps}
    for index, cell in enumerate(cells):
        for process_guid, count in cell.lrp_counts.items():
            if count > 0:
                on_cells = levels.get(process_guid)
                if on_cells is not None:
                    on_cells[index] = count
    return levels


_Entry = tuple[int, str, int]
"""A heap entry: (the cell's use, scaled to an integer; its cell_id; its index)."""

_PATIENCE = 8
"""Cells a zone group's heap may pass over, lacking room, for one piece of work before
the group moves its cells into a ``_FitTree``: the cluster is busy, and the least-used
cells lack room."""

_NOWHERE: Mapping[int, int] = {}
"""The cells a Task's search passes over: none (only LRP instances avoid their own)."""


@attrs.frozen(eq=False)
class _Group:
    """The score arithmetic of cells with these totals.

    A cell's score is ``use / denominator`` with
    ``use = used_memory * weights[0] + used_disk * weights[1] + used_containers *
    weights[2]``: the three fractions of the totals, scaled by their product so that
    the sum is an exact integer. A zero total counts as 1 (nothing of it is ever used).
    """

    total: Resources
    weights: tuple[int, int, int]
    denominator: int

    @classmethod
    def of(cls, total: Resources) -> _Group:
        """The arithmetic of cells with these totals."""
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
        """How much work of this size adds to the scaled use of a cell of this group."""
        wm, wd, wc = self.weights
        return memory_mb * wm + disk_mb * wd + wc

    def holds(self, memory_mb: int, disk_mb: int) -> bool:
        """Whether a cell of this group, empty, could hold work of this size."""
        total = self.total
        return memory_mb <= total.memory_mb and disk_mb <= total.disk_mb and total.containers >= 1


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

    def best_excluding(
        self, memory_mb: int, disk_mb: int, excluded: Mapping[int, int], limit: int
    ) -> tuple[_Entry | None, list[_Entry], bool, int]:
        """The smallest entry of a cell with ``memory_mb`` and ``disk_mb`` free, passing
        over the cells in ``excluded`` (see ``_ZoneGroup.search``). Also returns the
        number of nodes the search looked at."""
        memory, disk, low, size = self.memory, self.disk, self.low, self.size
        best: _Entry | None = None
        skipped: list[_Entry] = []
        stack = [1]
        visited = 0
        while stack:
            node = stack.pop()
            visited += 1
            if memory[node] < memory_mb or disk[node] < disk_mb:
                continue
            if best is not None and low[node] >= best:
                continue
            if node >= size:
                entry = low[node]
                if entry[2] in excluded:
                    skipped.append(entry)
                    if len(skipped) > limit:
                        return None, skipped, True, visited
                else:
                    best = entry
                continue
            left, right = 2 * node, 2 * node + 1
            if low[left] <= low[right]:
                stack += (right, left)
            else:
                stack += (left, right)
        return best, skipped, False, visited


@attrs.define(eq=False)
class _Free:
    """The free resources of every cell, by index: the in-memory copies reserved on."""

    memory: list[int]
    disk: list[int]
    containers: list[int]


def _beats(
    group: _Group, entry: _Entry, rival: _Group, rival_entry: _Entry, memory_mb: int, disk_mb: int
) -> bool:
    """Whether ``entry``'s cell scores lower after the Task than ``rival_entry``'s (or ties
    with a smaller cell_id). Scores are compared exactly, by cross-multiplying."""
    mine = (entry[0] + group.cost(memory_mb, disk_mb)) * rival.denominator
    theirs = (rival_entry[0] + rival.cost(memory_mb, disk_mb)) * group.denominator
    return mine < theirs or (mine == theirs and entry[1] < rival_entry[1])


# -- LRP instances -------------------------------------------------------------------

_CROWDING = 8
"""Cells that already run a process which one search of a zone group may pass over
before that process gets a heap of its own there (``_Cells.crowded``)."""

_TREE_BUDGET = 1
"""Tree nodes a size may cost a zone group, per cell of the group, before it gets a
heap of its own there (``_ZoneGroup._search_tree``)."""

_NO_ROOM_KEPT = 8
"""How many sizes a zone group remembers it has no room for."""

_Ranked = tuple[int, _Entry]
"""A candidate cell for an LRP instance: (instances of the process it runs, its entry)."""

_CrowdedEntry = tuple[int, int, str, int]
"""An entry of a process's own heap: (instances of it on the cell, use, cell_id, index)."""

_Extreme = tuple[int, int, int, int, int, int]
"""The most free memory, disk and containers, then the least, over some cells."""

_NO_EXTREME: _Extreme = (-1, -1, -1, sys.maxsize, sys.maxsize, sys.maxsize)


def _merge(a: _Extreme, b: _Extreme) -> _Extreme:
    return (
        max(a[0], b[0]),
        max(a[1], b[1]),
        max(a[2], b[2]),
        min(a[3], b[3]),
        min(a[4], b[4]),
        min(a[5], b[5]),
    )


class _Extremes:
    """The most and the least of each resource free on the cells of a zone group.

    A segment tree, so a placement updates it in O(log n). Built the first time an LRP
    instance finds no room among the group's cells, to name what it lacks.
    """

    def __init__(self, cells: list[int], free: _Free) -> None:
        size = 1
        while size < len(cells):
            size *= 2
        self.size = size
        self.leaf = {cell: size + position for position, cell in enumerate(cells)}
        nodes = self.nodes = [_NO_EXTREME] * (2 * size)
        for cell, node in self.leaf.items():
            nodes[node] = self._of(cell, free)
        for node in range(size - 1, 0, -1):
            nodes[node] = _merge(nodes[2 * node], nodes[2 * node + 1])

    @staticmethod
    def _of(cell: int, free: _Free) -> _Extreme:
        memory, disk, containers = free.memory[cell], free.disk[cell], free.containers[cell]
        return (memory, disk, containers, memory, disk, containers)

    def update(self, cell: int, free: _Free) -> None:
        """Record what ``cell`` has free now."""
        nodes = self.nodes
        node = self.leaf[cell]
        nodes[node] = self._of(cell, free)
        node //= 2
        while node:
            nodes[node] = _merge(nodes[2 * node], nodes[2 * node + 1])
            node //= 2

    @property
    def root(self) -> _Extreme:
        """The extremes over all the group's cells."""
        return self.nodes[1]


class _ZoneGroup:
    """The cells of one zone alike in stacks, root_fs providers and totals.

    ``shape`` does the score arithmetic (a ``_Group`` holding no cells). The cells
    with a container free sit in a heap of (use, cell_id, index), kept lazily: a
    placement does not touch the heap, and an entry whose use is out of date is
    refreshed when it comes to the top. Uses only grow within a batch, so a stale
    entry sorts no later than its cell should, and the heap's answers stay exact. As
    for Tasks, a search that passes ``_PATIENCE`` cells without room moves the group
    to a ``_FitTree``, which each placement then updates.
    """

    def __init__(self, number: int, zone: str, shape: _Group) -> None:
        self.number = number
        self.zone = zone
        self.shape = shape
        self.cells: list[int] = []
        self.heap: list[_Entry] = []
        self.tree: _FitTree | None = None
        self.extremes: _Extremes | None = None
        self.no_room: list[tuple[int, int]] = []
        """Sizes (memory, disk) no cell of the group had room for: as free room only
        shrinks within a batch, nor will it for these or bigger sizes."""
        self.spent: dict[tuple[int, int], int] = {}
        """Tree nodes looked at so far in searches for each size (memory, disk)."""
        self.sized: dict[tuple[int, int], list[_Entry]] = {}
        """Per size, once the tree has cost it more than a pass over the cells: a heap
        of the cells with room for that size, (use, cell_id, index), kept lazily."""

    def lacks_room(self, memory_mb: int, disk_mb: int) -> bool:
        """Whether a search already found no cell with room for this size or a smaller one."""
        no_room = self.no_room
        return bool(no_room) and any(
            memory_mb >= memory and disk_mb >= disk for memory, disk in no_room
        )

    def found_no_room(self, memory_mb: int, disk_mb: int) -> None:
        """Remember that no cell of the group has room for this size (a few sizes at most)."""
        if len(self.no_room) < _NO_ROOM_KEPT:
            self.no_room.append((memory_mb, disk_mb))

    def search(
        self, memory_mb: int, disk_mb: int, on: Mapping[int, int], owner: _Cells
    ) -> tuple[_Entry | None, list[_Entry], bool]:
        """The least-used cell with room that does not run the process (``on``: the
        cells that do, with their counts), if any; the cells with room passed over
        because they run it (all of them when none is found); and whether the search
        gave up, having passed more than ``_CROWDING`` of those.
        """
        if self.tree is not None:
            return self._search_tree(memory_mb, disk_mb, on, owner)
        heap, use, free = self.heap, owner.use, owner.free
        free_memory, free_disk, free_containers = free.memory, free.disk, free.containers
        passed: list[_Entry] = []
        crowded: list[_Entry] = []
        found: _Entry | None = None
        aborted = False
        roomless = 0
        while heap:
            entry = heapq.heappop(heap)
            cell = entry[2]
            now = use[cell]
            if entry[0] != now:
                if free_containers[cell] > 0:
                    heapq.heappush(heap, (now, entry[1], cell))
                continue
            passed.append(entry)
            if memory_mb > free_memory[cell] or disk_mb > free_disk[cell]:
                roomless += 1
                if roomless == _PATIENCE:
                    self.tree = _FitTree(
                        [
                            (use[other], owner.ids[other], other)
                            for other in self.cells
                            if free_containers[other] > 0
                        ],
                        free_memory,
                        free_disk,
                        4 * self.shape.denominator,
                    )
                    self.heap = []
                    return self._search_tree(memory_mb, disk_mb, on, owner)
            elif cell in on:
                crowded.append(entry)
                if len(crowded) > _CROWDING:
                    aborted = True
                    break
            else:
                found = entry
                break
        for entry in passed:
            heapq.heappush(heap, entry)
        return found, crowded, aborted

    def _search_tree(
        self, memory_mb: int, disk_mb: int, on: Mapping[int, int], owner: _Cells
    ) -> tuple[_Entry | None, list[_Entry], bool]:
        """``search`` on the tree, or on the size's own heap once it has one.

        Memory and disk free on different cells can make tree searches long. So the
        nodes they look at are charged to the size, and once a size has cost more
        than the group has cells, it gets a heap of the cells with room for it, built
        in O(n_g): the work then never exceeds twice that of the better of the two.
        """
        size = (memory_mb, disk_mb)
        heap = self.sized.get(size)
        if heap is not None:
            return _search_sized(heap, memory_mb, disk_mb, on, owner)
        assert self.tree is not None
        found, crowded, aborted, visited = self.tree.best_excluding(
            memory_mb, disk_mb, on, _CROWDING
        )
        spent = self.spent.get(size, 0) + visited
        if spent <= _TREE_BUDGET * len(self.cells):
            self.spent[size] = spent
        else:
            free, use, ids = owner.free, owner.use, owner.ids
            heap = self.sized[size] = [
                (use[cell], ids[cell], cell)
                for cell in self.cells
                if free.containers[cell] > 0
                and memory_mb <= free.memory[cell]
                and disk_mb <= free.disk[cell]
            ]
            heapq.heapify(heap)
        return found, crowded, aborted

    def placed(self, cell: int, owner: _Cells) -> None:
        """Record a placement on ``cell`` (its free room and use already updated)."""
        free = owner.free
        if self.tree is not None:
            self.tree.update(
                cell,
                free.memory[cell],
                free.disk[cell],
                free.containers[cell],
                (owner.use[cell], owner.ids[cell], cell),
            )
        if self.extremes is not None:
            self.extremes.update(cell, free)


def _search_sized(
    heap: list[_Entry], memory_mb: int, disk_mb: int, on: Mapping[int, int], owner: _Cells
) -> tuple[_Entry | None, list[_Entry], bool]:
    """``_ZoneGroup.search`` on a size's own heap: cells that lack room for the size are
    dropped for good (free room only shrinks), stale uses refreshed on the way."""
    free, use = owner.free, owner.use
    free_memory, free_disk, free_containers = free.memory, free.disk, free.containers
    crowded: list[_Entry] = []
    found: _Entry | None = None
    aborted = False
    while heap:
        entry = heap[0]
        cell = entry[2]
        if free_containers[cell] == 0 or memory_mb > free_memory[cell] or disk_mb > free_disk[cell]:
            heapq.heappop(heap)
            continue
        now = use[cell]
        if entry[0] != now:
            heapq.heapreplace(heap, (now, entry[1], cell))
            continue
        if cell in on:
            crowded.append(heapq.heappop(heap))
            if len(crowded) > _CROWDING:
                aborted = True
                break
            continue
        found = entry
        break
    for entry in crowded:
        heapq.heappush(heap, entry)
    return found, crowded, aborted


class _Cells:
    """The cells of one batch, grouped by zone, then by what they serve and their
    totals, with the reservations made so far.

    A Task goes to the least-used cell with room of the compatible groups (of its
    zones, if it names any), then the smallest cell_id: each group answers from its
    heap or tree, and the best answers are compared exactly.

    An LRP instance goes, within a zone, to the cell with room that runs the fewest
    instances of its process, then has the lowest score, then the smallest cell_id.
    Most cells run no instance of a given process, so each zone group answers "the
    least-used cell with room not running it" from its shared heap or tree, passing
    over the few cells that do run it. When a search passes more than ``_CROWDING``
    such cells (a process with many instances in the zone), the process gets, for
    that zone group and its size, a heap of its own keyed by (instances of it, use,
    cell_id): built once in O(n_g), kept lazily like the group's heap (both keys only
    grow), and dropping for good the cells that lack room for it (free room only
    shrinks within a batch).
    """

    def __init__(self, cells: Sequence[CellSnapshot], levels: dict[str, dict[int, int]]) -> None:
        free = self.free = _Free(
            [cell.available.memory_mb for cell in cells],
            [cell.available.disk_mb for cell in cells],
            [cell.available.containers for cell in cells],
        )
        self.levels = levels
        self.ids = [cell.cell_id for cell in cells]
        self.zones = sorted({cell.zone for cell in cells})
        self.use = [0] * len(cells)
        self.stacks: set[str] = set()
        shapes: dict[Resources, _Group] = {}
        classes: dict[
            tuple[frozenset[str], frozenset[str]], dict[tuple[str, Resources], _ZoneGroup]
        ]
        classes = {}
        count = 0
        for index, cell in enumerate(cells):
            self.stacks |= cell.stacks
            groups = classes.setdefault((cell.stacks, cell.rootfs_providers), {})
            group = groups.get((cell.zone, cell.total))
            if group is None:
                shape = shapes.get(cell.total)
                if shape is None:
                    shape = shapes[cell.total] = _Group.of(cell.total)
                group = groups[(cell.zone, cell.total)] = _ZoneGroup(count, cell.zone, shape)
                count += 1
            group.cells.append(index)
            containers = free.containers[index]
            use = self.use[index] = group.shape.use(
                free.memory[index], free.disk[index], containers
            )
            if containers > 0:
                group.heap.append((use, cell.cell_id, index))
        for groups in classes.values():
            for group in groups.values():
                heapq.heapify(group.heap)
        self.classes = {key: list(groups.values()) for key, groups in classes.items()}
        self._compatible: dict[tuple[str, str], dict[str, list[_ZoneGroup]]] = {}
        self._for_tasks: dict[tuple[str, str, frozenset[str]], list[_ZoneGroup] | str] = {}
        self.crowded: dict[tuple[str, int, int, int], list[_CrowdedEntry]] = {}
        self.hashes: dict[str, int] = {}

    def compatible(self, stack: str, provider: str) -> dict[str, list[_ZoneGroup]]:
        """Zone → the zone groups whose cells serve ``stack`` and have ``provider``."""
        key = (stack, provider)
        by_zone = self._compatible.get(key)
        if by_zone is None:
            by_zone = self._compatible[key] = {}
            for (stacks, providers), groups in self.classes.items():
                if stack in stacks and provider in providers:
                    for group in groups:
                        by_zone.setdefault(group.zone, []).append(group)
        return by_zone

    def task_groups(self, work: TaskWork) -> list[_ZoneGroup] | str:
        """The zone groups that may run ``work``, or why none may (a rejection reason)."""
        provider = root_fs_provider(work.root_fs)
        key = (work.stack, provider, work.zones)
        groups = self._for_tasks.get(key)
        if groups is None:
            by_zone = self.compatible(work.stack, provider)
            if not by_zone:
                if work.stack not in self.stacks:
                    groups = no_cell_for_stack(work.stack)
                else:
                    groups = no_cell_for_root_fs(work.stack, provider)
            else:
                groups = [
                    group
                    for zone, in_zone in by_zone.items()
                    if not work.zones or zone in work.zones
                    for group in in_zone
                ]
                if not groups:
                    groups = no_cell_in_zones(work.stack, work.zones, by_zone)
            self._for_tasks[key] = groups
        return groups

    def place_task(self, work: TaskWork) -> Placement[TaskWork] | Rejection | None:
        """Place ``work`` and reserve its resources, reject it, or (None) carry it over."""
        groups = self.task_groups(work)
        if isinstance(groups, str):
            return Rejection(work, groups)
        memory_mb, disk_mb = work.memory_mb, work.disk_mb
        best: tuple[_ZoneGroup, _Entry] | None = None
        roomy = False
        for group in groups:
            if not group.shape.holds(memory_mb, disk_mb):
                continue
            roomy = True
            if group.lacks_room(memory_mb, disk_mb):
                continue
            found, _, _ = group.search(memory_mb, disk_mb, _NOWHERE, self)
            if found is None:
                group.found_no_room(memory_mb, disk_mb)
            elif best is None or _beats(
                group.shape, found, best[0].shape, best[1], memory_mb, disk_mb
            ):
                best = (group, found)
        if best is not None:
            group, entry = best
            self._reserve(group, entry[2], memory_mb, disk_mb, None)
            return Placement(work, entry[1])
        if roomy:
            return None
        need = work.resources
        return Rejection(
            work,
            insufficient_resources(
                name for group in groups for name in need.shortages(group.shape.total)
            ),
        )

    def place_all(
        self,
        lrps: Iterable[LRPWork],
        placements: list[Placement[TaskWork | LRPWork]],
        unplaced: list[tuple[LRPWork, str]],
    ) -> None:
        """Place ``lrps`` in order, appending to ``placements`` and ``unplaced``."""
        for item in lrps:
            outcome = self.place(item)
            if isinstance(outcome, Placement):
                placements.append(outcome)
            else:
                unplaced.append(outcome)

    def place(self, work: LRPWork) -> Placement[LRPWork] | tuple[LRPWork, str]:
        """Place ``work`` and reserve its resources, or say why it cannot be placed now."""
        provider = root_fs_provider(work.root_fs)
        by_zone = self.compatible(work.stack, provider)
        if not by_zone:
            if work.stack not in self.stacks:
                return (work, no_cell_for_stack(work.stack))
            return (work, no_cell_for_root_fs(work.stack, provider))
        memory_mb, disk_mb = work.memory_mb, work.disk_mb
        if not any(
            group.shape.holds(memory_mb, disk_mb) for groups in by_zone.values() for group in groups
        ):
            need = work.resources
            return (
                work,
                insufficient_resources(
                    name
                    for groups in by_zone.values()
                    for group in groups
                    for name in need.shortages(group.shape.total)
                ),
            )
        process_guid = work.process_guid
        on = self.levels[process_guid]
        zone_hash = self.hashes.get(process_guid)
        if zone_hash is None:
            zone_hash = self.hashes[process_guid] = _zone_hash(process_guid)
        zones = self.zones
        start = (zone_hash + work.index) % len(zones)
        tries = len(zones) if work.index <= 1 else 1
        for step in range(tries):
            groups = by_zone.get(zones[(start + step) % len(zones)])
            if groups is None:
                continue
            best: tuple[_ZoneGroup, _Ranked] | None = None
            for group in groups:
                if not group.shape.holds(memory_mb, disk_mb) or group.lacks_room(
                    memory_mb, disk_mb
                ):
                    continue
                ranked = self._best_in(group, work, on)
                if ranked is None:
                    group.found_no_room(memory_mb, disk_mb)
                elif best is None or _ranks_before(group, ranked, *best, memory_mb, disk_mb):
                    best = (group, ranked)
            if best is not None:
                group, (_, entry) = best
                self._reserve(group, entry[2], memory_mb, disk_mb, on)
                return Placement(work, entry[1])
        if work.index > 1:
            return (work, insufficient_resources_in_zone(zones[start]))
        return (work, self._shortages(by_zone, work))

    def _best_in(self, group: _ZoneGroup, work: LRPWork, on: dict[int, int]) -> _Ranked | None:
        """The best cell of ``group`` with room for ``work``: fewest instances of its
        process, then least used, then smallest cell_id."""
        memory_mb, disk_mb = work.memory_mb, work.disk_mb
        key = (work.process_guid, memory_mb, disk_mb, group.number)
        heap = self.crowded.get(key)
        if heap is None:
            found, crowded, aborted = group.search(memory_mb, disk_mb, on, self)
            if not aborted:
                if found is not None:
                    return (0, found)
                if not crowded:
                    return None
                entry = min(crowded, key=lambda entry: (on[entry[2]], entry))
                return (on[entry[2]], entry)
            free = self.free
            heap = self.crowded[key] = [
                (on.get(cell, 0), self.use[cell], self.ids[cell], cell)
                for cell in group.cells
                if free.containers[cell] > 0
                and memory_mb <= free.memory[cell]
                and disk_mb <= free.disk[cell]
            ]
            heapq.heapify(heap)
        return self._crowded_best(heap, memory_mb, disk_mb, on)

    def _crowded_best(
        self, heap: list[_CrowdedEntry], memory_mb: int, disk_mb: int, on: dict[int, int]
    ) -> _Ranked | None:
        """The top of a process's own heap, once stale entries are refreshed and cells
        without room for it dropped."""
        free, use = self.free, self.use
        while heap:
            level, used, cell_id, cell = heap[0]
            if (
                free.containers[cell] == 0
                or memory_mb > free.memory[cell]
                or disk_mb > free.disk[cell]
            ):
                heapq.heappop(heap)
                continue
            level_now, use_now = on.get(cell, 0), use[cell]
            if level != level_now or used != use_now:
                heapq.heapreplace(heap, (level_now, use_now, cell_id, cell))
                continue
            return (level, (used, cell_id, cell))
        return None

    def _reserve(
        self,
        group: _ZoneGroup,
        cell: int,
        memory_mb: int,
        disk_mb: int,
        on: dict[int, int] | None,
    ) -> None:
        """Take work of this size on ``cell``; ``on``: the cells running the instance's
        process (None for a Task)."""
        free = self.free
        free.memory[cell] -= memory_mb
        free.disk[cell] -= disk_mb
        free.containers[cell] -= 1
        self.use[cell] += group.shape.cost(memory_mb, disk_mb)
        if on is not None:
            on[cell] = on.get(cell, 0) + 1
        group.placed(cell, self)

    def _shortages(self, by_zone: dict[str, list[_ZoneGroup]], work: LRPWork) -> str:
        """Why no compatible cell of any zone has room for ``work``: the resources every
        one of them is short of (as Diego names them), or, when no resource is short
        everywhere, those some of them are short of."""
        extreme = _NO_EXTREME
        for groups in by_zone.values():
            for group in groups:
                if group.extremes is None:
                    group.extremes = _Extremes(group.cells, self.free)
                extreme = _merge(extreme, group.extremes.root)
        need = (work.memory_mb, work.disk_mb, 1)
        everywhere = [
            name
            for name, most, amount in zip(RESOURCE_NAMES, extreme[:3], need, strict=True)
            if most < amount
        ]
        somewhere = [
            name
            for name, least, amount in zip(RESOURCE_NAMES, extreme[3:], need, strict=True)
            if least < amount
        ]
        return insufficient_resources(everywhere or somewhere)


def _ranks_before(
    group: _ZoneGroup,
    ranked: _Ranked,
    rival: _ZoneGroup,
    rival_ranked: _Ranked,
    memory_mb: int,
    disk_mb: int,
) -> bool:
    """Whether ``ranked``'s cell is a better home for an LRP instance than
    ``rival_ranked``'s: fewer instances of its process, then a lower score (exactly),
    then a smaller cell_id."""
    if ranked[0] != rival_ranked[0]:
        return ranked[0] < rival_ranked[0]
    return _beats(group.shape, ranked[1], rival.shape, rival_ranked[1], memory_mb, disk_mb)


def score(cell: CellSnapshot, work: TaskWork | LRPWork) -> float:
    """Diego's score of ``cell`` for ``work``: the mean fraction of memory, disk and
    containers in use once the work is placed (lower is better). For reading and
    testing; ``schedule`` ranks by the same quantity, computed exactly."""
    left = cell.available
    fractions = (
        (left.memory_mb - work.memory_mb, cell.total.memory_mb),
        (left.disk_mb - work.disk_mb, cell.total.disk_mb),
        (left.containers - 1, cell.total.containers),
    )
    return sum(1 - remaining / total if total else 0.0 for remaining, total in fractions) / 3
