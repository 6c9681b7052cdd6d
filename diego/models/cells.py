"""Cells as the rest of the system sees them: presence records and capacity."""

from __future__ import annotations

import attrs

from diego.models.work import Resources


@attrs.frozen(kw_only=True)
class CellPresence:
    """A cell's claim to be alive, renewed before it expires."""

    cell_id: str
    zone: str = ""
    stacks: tuple[str, ...] = ()
    rootfs_providers: tuple[str, ...] = ()
    capacity: Resources
    url: str = ""  # where a remote cell's rep listens; empty for embedded cells
