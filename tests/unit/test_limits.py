"""Limits: every count and size of a client's document is bounded by configuration."""

from __future__ import annotations

from typing import Any

import pytest

from diego.models.codec import InvalidDocument, Problem, decode, json_schema
from diego.models.limits import Limits, count_actions
from diego.models.lrp import DesiredLRP, DesiredLRPUpdate, DomainUpsert
from diego.models.task import TaskCreateRequest
from diego.models.tes import decode_create

RUN = {"run": {"path": "/bin/true"}}
TASK: dict[str, Any] = {"task_guid": "t", "domain": "d", "stack": "linux", "action": RUN}
LRP: dict[str, Any] = {"process_guid": "p", "domain": "d", "stack": "linux", "action": RUN}
LIMITS = Limits()


def problems(cls: type, document: Any, limits: Limits | None = LIMITS) -> list[Problem]:
    try:
        decode(cls, document, limits=limits)
    except InvalidDocument as e:
        return list(e.problems)
    return []


def rules_at(cls: type, document: Any, path: str, limits: Limits = LIMITS) -> list[str]:
    return [p.rule for p in problems(cls, document, limits) if p.path == path]


def test_a_billion_instances_is_refused_by_name() -> None:
    assert rules_at(DesiredLRP, {**LRP, "instances": 10**9}, "instances") == [
        "must be at most 10000 ([limits] max_instances)"
    ]
    assert rules_at(DesiredLRPUpdate, {"instances": 10**9}, "instances") == [
        "must be at most 10000 ([limits] max_instances)"
    ]
    assert problems(DesiredLRP, {**LRP, "instances": 10_000}) == []


def test_the_bound_is_configuration() -> None:
    small = Limits(max_instances=3, max_guid_bytes=4)
    assert rules_at(DesiredLRP, {**LRP, "instances": 4}, "instances", small)
    assert rules_at(TaskCreateRequest, {**TASK, "task_guid": "abcde"}, "task_guid", small) == [
        "must be at most 4 bytes (is 5)"
    ]


@pytest.mark.parametrize("field", ["task_guid", "log_guid"])
def test_long_task_guids_are_refused(field: str) -> None:
    """A 10,000-character guid used to be stored, then fail on the cell: File name too long."""
    document = {**TASK, field: "x" * 10_000}
    assert rules_at(TaskCreateRequest, document, field) == ["must be at most 128 bytes (is 10000)"]
    assert problems(TaskCreateRequest, {**TASK, field: "x" * 128}) == []


def test_long_process_guids_are_refused() -> None:
    assert rules_at(DesiredLRP, {**LRP, "process_guid": "p" * 129}, "process_guid")


@pytest.mark.parametrize(
    ("document", "path", "rule"),
    [
        (
            {**TASK, "env": [{"name": f"E{i}"} for i in range(1025)]},
            "env",
            "must have at most 1024 entries (has 1025)",
        ),
        (
            {**TASK, "action": {"run": {"path": "/x", "env": [{"name": "A"}] * 1025}}},
            "action.run.env",
            "must have at most 1024 entries (has 1025)",
        ),
        (
            {
                **TASK,
                "security_group_rules": [{"protocol": "all", "destination": "10.0.0.1"}] * 257,
            },
            "security_group_rules",
            "must have at most 256 entries (has 257)",
        ),
        (
            {**TASK, "action": {"serial": {"actions": [RUN] * 1024}}},
            "action",
            "must hold at most 1024 actions (holds 1025)",
        ),
        (
            {**TASK, "action": {"run": {"path": "/x", "args": ["a"] * 10_001}}},
            "action.run.args",
            "must have at most 10000 entries ([limits] max_items)",
        ),
        (
            {**TASK, "action": {"run": {"path": "/" + "x" * 131_072}}},
            "action.run.path",
            "must be at most 131072 bytes ([limits] max_string_bytes)",
        ),
    ],
    ids=["env", "run-env", "rules", "actions", "args", "string"],
)
def test_each_bound_names_its_field(document: Any, path: str, rule: str) -> None:
    assert rules_at(TaskCreateRequest, document, path) == [rule]


def test_lrp_ports_env_and_action_trees_are_bounded() -> None:
    assert rules_at(DesiredLRP, {**LRP, "ports": list(range(1, 66))}, "ports") == [
        "must have at most 64 entries (has 65)"
    ]
    deep = {"serial": {"actions": [RUN] * 1100}}
    assert rules_at(DesiredLRP, {**LRP, "monitor": deep}, "monitor")
    assert rules_at(DesiredLRP, {**LRP, "setup": deep}, "setup")


def test_tes_tasks_are_bounded_too() -> None:
    executor = {"image": "busybox", "command": ["true"] * 10_001}
    with pytest.raises(InvalidDocument) as e:
        decode_create({"executors": [executor]}, LIMITS)
    assert [p.path for p in e.value.problems] == ["executors[0].command"]


def test_without_limits_only_the_models_rules_apply() -> None:
    """A node's own answers (the CLI reading them) and its config are not bounded so."""
    assert problems(DesiredLRP, {**LRP, "instances": 10**9}, limits=None) == []


@pytest.mark.parametrize(
    ("cls", "document", "path"),
    [
        (TaskCreateRequest, {**TASK, "memory_mb": 2**31}, "memory_mb"),
        (TaskCreateRequest, {**TASK, "disk_mb": 10**30}, "disk_mb"),
        (DesiredLRP, {**LRP, "start_timeout_ms": 2**32}, "start_timeout_ms"),
        (DomainUpsert, {"ttl": 136090644449}, "ttl"),
        (
            TaskCreateRequest,
            {**TASK, "action": {"timeout": {"action": RUN, "timeout_ms": 2**63}}},
            "action.timeout.timeout_ms",
        ),
    ],
    ids=["memory_mb", "disk_mb", "start_timeout_ms", "ttl", "timeout_ms"],
)
def test_every_integer_is_range_checked(cls: type, document: Any, path: str) -> None:
    """Numbers past what a column holds used to reach SQLite and come back as a 500."""
    assert [p.path for p in problems(cls, document, limits=None)] == [path]


def test_non_finite_numbers_are_refused() -> None:
    resources = {"executors": [{"image": "i", "command": ["true"]}], "resources": {"ram_gb": 1e400}}
    with pytest.raises(InvalidDocument) as e:
        decode_create(resources)
    assert [str(p) for p in e.value.problems] == ["resources.ram_gb: must be a finite number"]


def test_count_actions_counts_every_nested_action() -> None:
    document = {**TASK, "action": {"try": {"action": {"serial": {"actions": [RUN, RUN]}}}}}
    assert count_actions(decode(TaskCreateRequest, document).action) == 4


def test_the_schema_states_the_configured_bounds() -> None:
    definitions: dict[str, Any] = {}
    json_schema(DesiredLRP, definitions, Limits(max_instances=7))
    props = definitions["DesiredLRP"]["properties"]
    assert props["instances"]["maximum"] == 7
    assert props["process_guid"]["maxLength"] == 128
    assert props["ports"]["maxItems"] == 64
    assert props["memory_mb"]["maximum"] == 2**31 - 1
