"""Tasks: the TaskCreateRequest a consumer sends and the Task the BBS keeps.

A Task is its request plus the fields the lifecycle fills in (state, cell_id,
failed, failure_reason, result and the timestamps), so on the wire a Task is the
request's object with those keys added, as Diego's TaskResponse is.
Timestamps are nanoseconds since the Unix epoch, as in Diego.
"""

from __future__ import annotations

import enum
from typing import Any

import attrs

from diego.models.actions import Action, EnvironmentVariable
from diego.models.codec import Problems, join
from diego.models.limits import limit
from diego.models.rules import (
    INT32_MAX,
    Rule,
    between,
    destination,
    distinct_names,
    http_url,
    max_bytes,
    non_empty,
    one_of,
    pattern,
    root_fs_url,
    rule_metadata,
)

GUID_PATTERN = r"[a-zA-Z0-9_-]*"  # emptiness is non_empty()'s to report
MAX_ANNOTATION_BYTES = 10 * 1024
MAX_RESULT_BYTES = 10 * 1024
"""Only the first 10 KiB of a result_file come back in ``result``."""

PROTOCOLS = ("tcp", "udp", "icmp", "all")


def _guid() -> Rule:
    return pattern(GUID_PATTERN, "must only contain a-z, A-Z, 0-9, _ and -")


@attrs.frozen(kw_only=True)
class PortRange:
    """Ports ``start`` to ``end``, both included."""

    start: int = attrs.field(metadata=rule_metadata(between(1, 65535)))
    end: int = attrs.field(metadata=rule_metadata(between(1, 65535)))

    def check(self, path: str, problems: Problems) -> None:
        """The range may not run backwards."""
        if self.start > self.end:
            problems.add(join(path, "start"), "must not be greater than end")


@attrs.frozen(kw_only=True)
class ICMPInfo:
    """The ICMP type and code an icmp rule allows."""

    type: int = attrs.field(metadata=rule_metadata(between(0, 255)))
    code: int = attrs.field(metadata=rule_metadata(between(0, 255)))


@attrs.frozen(kw_only=True)
class SecurityGroupRule:
    """One egress rule: traffic the container may send.

    tcp and udp rules name their ports (``port_range`` or ``ports``), icmp rules
    their ``icmp_info``, and ``all`` rules neither.
    """

    protocol: str = attrs.field(metadata=rule_metadata(one_of(*PROTOCOLS)))
    destination: str = attrs.field(metadata=rule_metadata(destination()))
    port_range: PortRange | None = None
    ports: tuple[int, ...] | None = attrs.field(
        default=None,  # checked in check(); the schema says the same
        metadata=rule_metadata(Rule(lambda _: None, {"items": {"minimum": 1, "maximum": 65535}})),
    )
    icmp_info: ICMPInfo | None = None
    log: bool = False

    def check(self, path: str, problems: Problems) -> None:
        """Ports go with tcp and udp only, icmp_info with icmp only."""
        has_ports = self.port_range is not None or self.ports is not None
        if self.ports is not None and not self.ports:
            problems.add(join(path, "ports"), "must not be empty")
        elif self.protocol in ("tcp", "udp"):
            if self.port_range is not None and self.ports is not None:
                problems.add(join(path, "ports"), "give ports or port_range, not both")
            elif not has_ports:
                problems.add(join(path, "port_range"), f"required for protocol {self.protocol}")
            for i, port in enumerate(self.ports or ()):
                if not 1 <= port <= 65535:
                    problems.add(f"{join(path, 'ports')}[{i}]", "must be between 1 and 65535")
        elif has_ports:
            name = "port_range" if self.port_range is not None else "ports"
            problems.add(join(path, name), f"not allowed for protocol {self.protocol}")
        if self.protocol == "icmp" and self.icmp_info is None:
            problems.add(join(path, "icmp_info"), "required for protocol icmp")
        if self.protocol != "icmp" and self.icmp_info is not None:
            problems.add(join(path, "icmp_info"), f"not allowed for protocol {self.protocol}")


@attrs.frozen(kw_only=True)
class TaskCreateRequest:
    """What a consumer asks for: one piece of work to run at most once."""

    task_guid: str = attrs.field(
        metadata=rule_metadata(non_empty(), _guid(), limit("max_guid_bytes"))
    )
    domain: str = attrs.field(metadata=rule_metadata(non_empty()))
    stack: str = attrs.field(metadata=rule_metadata(non_empty()))
    root_fs: str = attrs.field(default="", metadata=rule_metadata(root_fs_url()))
    env: tuple[EnvironmentVariable, ...] = attrs.field(
        default=(), metadata=rule_metadata(limit("max_env"))
    )
    cpu_weight: int | None = attrs.field(default=None, metadata=rule_metadata(between(1, 100)))
    disk_mb: int = attrs.field(default=0, metadata=rule_metadata(between(0, INT32_MAX)))
    memory_mb: int = attrs.field(default=0, metadata=rule_metadata(between(0, INT32_MAX)))
    max_pids: int = attrs.field(default=0, metadata=rule_metadata(between(0, INT32_MAX)))
    """The most processes the container may have at once; 0: the cell's default
    (``[cell] max_pids``). As Diego's, an int32 that may not be negative."""
    privileged: bool = False
    action: Action = attrs.field(metadata=rule_metadata(limit("max_actions")))
    result_file: str = ""
    completion_callback_url: str = attrs.field(default="", metadata=rule_metadata(http_url()))
    log_guid: str = attrs.field(default="", metadata=rule_metadata(limit("max_guid_bytes")))
    log_source: str = ""
    annotation: str = attrs.field(
        default="", metadata=rule_metadata(max_bytes(MAX_ANNOTATION_BYTES))
    )
    security_group_rules: tuple[SecurityGroupRule, ...] = attrs.field(
        default=(), metadata=rule_metadata(limit("max_rules"))
    )
    zones: tuple[str, ...] = attrs.field(default=(), metadata=rule_metadata(distinct_names()))
    """Run only on a cell of one of these zones; empty: any zone. A diego extension
    (TES ``resources.zones``): Diego's own Tasks have no such field."""


class TaskState(enum.StrEnum):
    """Where a Task is in its life; see ``diego.models.lifecycle``."""

    PENDING = "PENDING"
    CLAIMED = "CLAIMED"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    RESOLVING = "RESOLVING"


@attrs.frozen(kw_only=True)
class Task(TaskCreateRequest):
    """A Task as the BBS keeps it: the request and how far it has got."""

    state: TaskState = TaskState.PENDING
    cell_id: str = ""
    failed: bool = False
    failure_reason: str = ""
    result: str = ""
    created_at: int = 0
    updated_at: int = 0
    first_completed_at: int = 0

    def request(self) -> TaskCreateRequest:
        """The consumer's request this Task was made from."""
        return TaskCreateRequest(
            **{f.name: getattr(self, f.name) for f in attrs.fields(TaskCreateRequest)}
        )

    @classmethod
    def from_request(cls, request: TaskCreateRequest, **lifecycle: Any) -> Task:
        """A Task of ``request`` with the given lifecycle fields (the rest default)."""
        fields = {f.name: getattr(request, f.name) for f in attrs.fields(TaskCreateRequest)}
        return cls(**fields, **lifecycle)

    @classmethod
    def new(cls, request: TaskCreateRequest, now: int) -> Task:
        """A new PENDING Task for ``request``, created at ``now``."""
        return cls.from_request(request, state=TaskState.PENDING, created_at=now, updated_at=now)
