"""Long-running processes: the DesiredLRP a consumer asks for, the ActualLRPs that
run it, and the domains whose freshness lets the converger stop extra instances.

Timestamps are nanoseconds since the Unix epoch, as in Diego.
"""

from __future__ import annotations

import enum
import json
from typing import Any

import attrs

from diego.models.actions import Action, EnvironmentVariable
from diego.models.limits import limit
from diego.models.rules import (
    INT32_MAX,
    UINT32_MAX,
    Rule,
    at_least,
    between,
    max_bytes,
    non_empty,
    pattern,
    root_fs_url,
    rule_metadata,
)
from diego.models.task import GUID_PATTERN, MAX_ANNOTATION_BYTES, SecurityGroupRule

MAX_ROUTES_BYTES = 128 * 1024
"""routes is opaque JSON of at most 128 KiB."""

UPDATABLE = ("instances", "routes", "annotation")
"""The only DesiredLRP fields an update may change: those that need no restart."""


def _guid() -> Rule:
    return pattern(GUID_PATTERN, "must only contain a-z, A-Z, 0-9, _ and -")


def _routes() -> Rule:
    def check(value: Any) -> str | None:
        if not isinstance(value, dict):
            return "must be an object"
        size = len(json.dumps(value, separators=(",", ":")).encode())
        if size > MAX_ROUTES_BYTES:
            return f"must be at most {MAX_ROUTES_BYTES} bytes of JSON (is {size})"
        return None

    return Rule(check, {"type": "object"})


def _ports() -> Rule:
    def check(value: tuple[int, ...]) -> str | None:
        bad = [p for p in value if not 1 <= p <= 65535]
        return f"must be between 1 and 65535 (not {bad[0]})" if bad else None

    return Rule(check, {"items": {"minimum": 1, "maximum": 65535}})


@attrs.frozen(kw_only=True)
class DesiredLRP:
    """What a consumer wants kept running: ``instances`` copies of one process."""

    process_guid: str = attrs.field(
        metadata=rule_metadata(non_empty(), _guid(), limit("max_guid_bytes"))
    )
    domain: str = attrs.field(metadata=rule_metadata(non_empty()))
    stack: str = attrs.field(metadata=rule_metadata(non_empty()))
    root_fs: str = attrs.field(default="", metadata=rule_metadata(root_fs_url()))
    instances: int = attrs.field(
        default=1, metadata=rule_metadata(at_least(0), limit("max_instances"))
    )
    env: tuple[EnvironmentVariable, ...] = attrs.field(
        default=(), metadata=rule_metadata(limit("max_env"))
    )
    setup: Action | None = attrs.field(default=None, metadata=rule_metadata(limit("max_actions")))
    action: Action = attrs.field(metadata=rule_metadata(limit("max_actions")))
    monitor: Action | None = attrs.field(default=None, metadata=rule_metadata(limit("max_actions")))
    start_timeout_ms: int = attrs.field(default=0, metadata=rule_metadata(between(0, UINT32_MAX)))
    ports: tuple[int, ...] = attrs.field(
        default=(), metadata=rule_metadata(_ports(), limit("max_ports"))
    )
    routes: Any = attrs.field(default=None, metadata=rule_metadata(_routes()))
    annotation: str = attrs.field(
        default="", metadata=rule_metadata(max_bytes(MAX_ANNOTATION_BYTES))
    )
    log_guid: str = attrs.field(default="", metadata=rule_metadata(limit("max_guid_bytes")))
    log_source: str = ""
    metrics_guid: str = ""
    memory_mb: int = attrs.field(default=0, metadata=rule_metadata(between(0, INT32_MAX)))
    disk_mb: int = attrs.field(default=0, metadata=rule_metadata(between(0, INT32_MAX)))
    cpu_weight: int | None = attrs.field(default=None, metadata=rule_metadata(between(1, 100)))
    max_pids: int = attrs.field(default=0, metadata=rule_metadata(between(0, INT32_MAX)))
    """The most processes an instance's container may have at once; 0: the cell's
    default (``[cell] max_pids``)."""
    privileged: bool = False
    security_group_rules: tuple[SecurityGroupRule, ...] = attrs.field(
        default=(), metadata=rule_metadata(limit("max_rules"))
    )
    created_at: int = 0
    updated_at: int = 0


@attrs.frozen(kw_only=True)
class DesiredLRPUpdate:
    """A change to a DesiredLRP: only what can change without a restart."""

    instances: int | None = attrs.field(
        default=None, metadata=rule_metadata(at_least(0), limit("max_instances"))
    )
    routes: Any = attrs.field(default=None, metadata=rule_metadata(_routes()))
    annotation: str | None = attrs.field(
        default=None, metadata=rule_metadata(max_bytes(MAX_ANNOTATION_BYTES))
    )


class ActualLRPState(enum.StrEnum):
    """Where one instance of a DesiredLRP is."""

    UNCLAIMED = "UNCLAIMED"
    CLAIMED = "CLAIMED"
    RUNNING = "RUNNING"
    CRASHED = "CRASHED"


@attrs.frozen(kw_only=True)
class ActualLRPKey:
    """Which instance: the process and its index."""

    process_guid: str
    index: int


@attrs.frozen(kw_only=True)
class ActualLRP:
    """One instance of a DesiredLRP, as the BBS keeps it.

    While its cell evacuates, an index may have two: the running one moved aside
    (``evacuating``) and its replacement.
    """

    process_guid: str
    index: int
    domain: str
    state: ActualLRPState = ActualLRPState.UNCLAIMED
    instance_guid: str = ""
    cell_id: str = ""
    crash_count: int = 0
    crash_reason: str = ""
    last_crashed_at: int = 0
    since: int = 0  # when it entered its state
    placement_error: str = ""
    evacuating: bool = False

    @property
    def key(self) -> ActualLRPKey:
        """Which instance this is."""
        return ActualLRPKey(process_guid=self.process_guid, index=self.index)


@attrs.frozen(kw_only=True)
class Domain:
    """A consumer's domain; fresh until ``expires_at`` (0: forever)."""

    name: str = attrs.field(metadata=rule_metadata(non_empty()))
    expires_at: int = 0

    def fresh(self, now: int) -> bool:
        """Whether the domain's desired state can be trusted at ``now``."""
        return self.expires_at == 0 or now < self.expires_at


@attrs.frozen(kw_only=True)
class DomainUpsert:
    """The body of PUT /v1/domains/{domain}: seconds the domain stays fresh (0: forever)."""

    ttl: int = attrs.field(metadata=rule_metadata(between(0, UINT32_MAX)))
