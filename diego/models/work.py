"""What crosses the seam between the auctioneer and the cells: capacity, a cell's
snapshot, and the work placed on it (a Task's or an LRP instance's).

These are the auction's inputs (``diego.scheduling.auction`` places work onto
snapshots) and the rep's wire types: the auctioneer reads a cell's snapshot and
sends it work in-process or over HTTP, through the codec (``diego.models.codec``),
so every field is of a type the codec encodes.
"""

from __future__ import annotations

import types
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from diego.models.lrp import DesiredLRP
from diego.models.rules import at_least, rule_metadata
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


def root_fs_provider(root_fs: str) -> str:
    """The provider a cell needs for ``root_fs``: its URL scheme; empty means preloaded."""
    if not root_fs:
        return PRELOADED
    scheme, _, _ = root_fs.partition(":")
    return scheme


def _non_negative(_instance: Any, attribute: attrs.Attribute[int], value: int) -> None:
    if value < 0:
        raise ValueError(f"{attribute.name} must not be negative, got {value}")


_COUNT = rule_metadata(at_least(0))
"""A count's rule: one that is negative is refused by the codec (naming the field) when
it comes over the wire, and by the constructor (``_non_negative``) in-process."""


@attrs.frozen
class Resources:
    """An amount of memory (MB), disk (MB) and containers: a cell's or a Task's."""

    memory_mb: int = attrs.field(validator=_non_negative, metadata=_COUNT)
    disk_mb: int = attrs.field(validator=_non_negative, metadata=_COUNT)
    containers: int = attrs.field(validator=_non_negative, metadata=_COUNT)

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


_NO_LRPS: Mapping[str, int] = types.MappingProxyType({})


def _frozen_counts(counts: Mapping[str, int]) -> Mapping[str, int]:
    """A read-only copy of ``counts``: a snapshot must not change under the auction."""
    return types.MappingProxyType(dict(counts)) if counts else _NO_LRPS


def _counts_non_negative(instance: CellSnapshot, _attribute: Any, value: Mapping[str, int]) -> None:
    for process_guid, count in value.items():
        if count < 0:
            raise ValueError(
                f"cell {instance.cell_id}: lrp_counts[{process_guid!r}] must not be negative"
            )


@attrs.frozen
class CellSnapshot:
    """A cell as the auction sees it: what it serves, how big it is, what is free now,
    and how many instances of each LRP it runs already."""

    cell_id: str
    zone: str
    stacks: frozenset[str]
    rootfs_providers: frozenset[str]
    """The root_fs schemes the cell can run, e.g. ``{"preloaded", "docker"}``."""
    total: Resources
    available: Resources = attrs.field(validator=_available_within_total)
    lrp_counts: Mapping[str, int] = attrs.field(
        default=_NO_LRPS, converter=_frozen_counts, validator=_counts_non_negative, hash=False
    )
    """process_guid → instances of it on the cell now (read-only; absent means none).
    Left out of the hash, so a snapshot stays hashable; equality still compares it."""

    def serves(self, stack: str, root_fs: str) -> bool:
        """Whether the cell serves ``stack`` and has the provider for ``root_fs``."""
        return stack in self.stacks and root_fs_provider(root_fs) in self.rootfs_providers


def _names(names: Iterable[str]) -> frozenset[str]:
    return frozenset(names)


@attrs.frozen
class TaskWork:
    """The part of a Task the auction needs; it uses its memory, disk and one container."""

    task_guid: str
    domain: str
    stack: str
    root_fs: str
    memory_mb: int = attrs.field(validator=_non_negative, metadata=_COUNT)
    disk_mb: int = attrs.field(validator=_non_negative, metadata=_COUNT)
    zones: frozenset[str] = attrs.field(default=frozenset(), converter=_names)
    """Only cells of these zones may run it; empty: any zone."""

    @classmethod
    def from_task(cls, task: Task) -> TaskWork:
        """The work of ``task``."""
        return cls(
            task.task_guid,
            task.domain,
            task.stack,
            task.root_fs,
            task.memory_mb,
            task.disk_mb,
            frozenset(task.zones),
        )

    @property
    def resources(self) -> Resources:
        """What the Task takes from a cell."""
        return Resources(self.memory_mb, self.disk_mb, 1)


@attrs.frozen
class LRPWork:
    """One instance (``index``) of a DesiredLRP to start: what the auction needs of it.

    Like a Task it uses its memory, its disk and one container. Instances are known by
    (process_guid, index), which must be unique within a batch.
    """

    process_guid: str
    index: int = attrs.field(validator=_non_negative, metadata=_COUNT)
    domain: str
    stack: str
    root_fs: str
    memory_mb: int = attrs.field(validator=_non_negative, metadata=_COUNT)
    disk_mb: int = attrs.field(validator=_non_negative, metadata=_COUNT)

    @classmethod
    def from_desired(cls, desired: DesiredLRP, index: int) -> LRPWork:
        """The work of instance ``index`` of ``desired``."""
        return cls(
            desired.process_guid,
            index,
            desired.domain,
            desired.stack,
            desired.root_fs,
            desired.memory_mb,
            desired.disk_mb,
        )

    @property
    def resources(self) -> Resources:
        """What the instance takes from a cell."""
        return Resources(self.memory_mb, self.disk_mb, 1)


Work = TaskWork | LRPWork
"""Anything ``schedule`` places: a Task or an LRP instance."""


@attrs.frozen(kw_only=True)
class WorkBatch:
    """Work for one cell, or what it refused of it: how ``perform`` crosses the wire."""

    tasks: tuple[TaskWork, ...] = ()
    lrps: tuple[LRPWork, ...] = ()

    @classmethod
    def of(cls, work: Iterable[Work]) -> WorkBatch:
        """The batch of ``work``, Tasks and LRP instances apart."""
        items = list(work)
        return cls(
            tasks=tuple(w for w in items if isinstance(w, TaskWork)),
            lrps=tuple(w for w in items if isinstance(w, LRPWork)),
        )

    def items(self) -> list[Work]:
        """The work, LRP instances first (as the auction orders index 0 first)."""
        return [*self.lrps, *self.tasks]
