"""Cells as the rest of the system sees them: presence records and capacity."""

from __future__ import annotations

import attrs

from diego.models.rules import at_least, rule_metadata


@attrs.frozen(kw_only=True)
class Capacity:
    """Amounts of memory (MB), disk (MB) and containers."""

    memory_mb: int = attrs.field(metadata=rule_metadata(at_least(0)))
    disk_mb: int = attrs.field(metadata=rule_metadata(at_least(0)))
    containers: int = attrs.field(metadata=rule_metadata(at_least(0)))


@attrs.frozen(kw_only=True)
class CellPresence:
    """A cell's claim to be alive, renewed before it expires."""

    cell_id: str
    zone: str = ""
    stacks: tuple[str, ...] = ()
    rootfs_providers: tuple[str, ...] = ()
    capacity: Capacity
    url: str = ""  # where a remote cell's rep listens; empty for embedded cells
