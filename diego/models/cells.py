"""Cells as the rest of the system sees them: presence records, capabilities and reports."""

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


@attrs.frozen
class Capabilities:
    """What a backend can enforce on this machine; said at start and in GET /v1/cells."""

    backend: str
    memory_limit: bool
    cpu_weight: bool
    disk_limit: bool
    user_namespaces: bool
    network_isolation: bool
    egress_rules: str  # how security group rules are honoured
    pids_limit: bool = False  # whether max_pids is enforced
    notes: tuple[str, ...] = ()
    rootfs_providers: tuple[str, ...] = ("preloaded",)  # root_fs schemes the backend runs
    unprivileged: str = ""  # what privileged=false means here


@attrs.frozen(kw_only=True)
class CellReport:
    """What an operator is shown of one cell (``GET /v1/cells``), embedded or remote."""

    cell_id: str
    zone: str
    stacks: tuple[str, ...]
    rootfs_providers: tuple[str, ...]
    capacity: Resources
    available: Resources
    containers: int
    evacuating: bool
    capabilities: Capabilities
    url: str = ""  # where a remote cell's rep listens; empty for embedded cells
