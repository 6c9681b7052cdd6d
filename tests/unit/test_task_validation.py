"""Validation of a TaskCreateRequest: each rule, the path it is reported at, and its words.

Every case starts from a valid request, breaks one thing and expects the codec to
name that thing (``Problem(path, rule)``) and nothing else.
"""

from __future__ import annotations

from typing import Any

import pytest

from diego.models.actions import (
    DEFAULT_USER,
    DownloadAction,
    RunAction,
    TryAction,
    UploadAction,
)
from diego.models.codec import MAX_DEPTH, InvalidDocument, Problem, decode
from diego.models.task import TaskCreateRequest

DROP: Any = object()
"""An override value meaning: leave this key out."""

BASE: dict[str, Any] = {
    "task_guid": "task-1",
    "domain": "tests",
    "stack": "cflinuxfs4",
    "action": {"run": {"path": "/bin/true"}},
}

KINDS = "run, download, upload, timeout, emit_progress, try, serial, parallel, codependent"
GUID_WORDS = "must only contain a-z, A-Z, 0-9, _ and -"
ROOT_FS_WORDS = "must be a docker:///org/image#tag or preloaded:NAME URL"
URL_WORDS = "must be an absolute http(s) URL"
DESTINATION_WORDS = "must be an IP address, a CIDR or a range ip-ip"
SG = "security_group_rules[0]"


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in overrides.items():
        if value is DROP:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def request(**overrides: Any) -> dict[str, Any]:
    """The valid base request with ``overrides`` applied at the top level."""
    return _merge(BASE, overrides)


def sg_rule(**overrides: Any) -> dict[str, Any]:
    """A valid tcp security group rule with ``overrides`` applied."""
    return _merge({"protocol": "tcp", "destination": "10.0.0.0/8", "ports": [443]}, overrides)


def sg(**overrides: Any) -> dict[str, Any]:
    """Top-level overrides giving the request one security group rule."""
    return {"security_group_rules": [sg_rule(**overrides)]}


def run(**fields: Any) -> dict[str, Any]:
    """A run action (valid unless ``fields`` break it)."""
    return {"run": _merge({"path": "/bin/true"}, fields)}


def download(**fields: Any) -> dict[str, Any]:
    """A download action (valid unless ``fields`` break it)."""
    return {"download": _merge({"from": "https://blobs.example/app.tgz", "to": "/app"}, fields)}


def upload(**fields: Any) -> dict[str, Any]:
    """An upload action (valid unless ``fields`` break it)."""
    return {"upload": _merge({"from": "/out/result.txt", "to": "https://blobs.example/r"}, fields)}


def problems_of(data: Any) -> tuple[Problem, ...]:
    """The problems decoding ``data`` as a TaskCreateRequest reports (it must fail)."""
    with pytest.raises(InvalidDocument) as caught:
        decode(TaskCreateRequest, data)
    return caught.value.problems


def deep_try(levels: int) -> dict[str, Any]:
    """``levels`` try actions nested in each other around a run action."""
    action: dict[str, Any] = run()
    for _ in range(levels):
        action = {"try": {"action": action}}
    return action


REFUSED = [
    # task_guid
    pytest.param({"task_guid": DROP}, "task_guid", "required", id="task_guid-missing"),
    pytest.param({"task_guid": None}, "task_guid", "required", id="task_guid-null"),
    pytest.param({"task_guid": ""}, "task_guid", "must not be empty", id="task_guid-empty"),
    pytest.param({"task_guid": "a b"}, "task_guid", GUID_WORDS, id="task_guid-space"),
    pytest.param({"task_guid": "a/b"}, "task_guid", GUID_WORDS, id="task_guid-slash"),
    pytest.param({"task_guid": "a.b"}, "task_guid", GUID_WORDS, id="task_guid-dot"),
    pytest.param({"task_guid": "tâche"}, "task_guid", GUID_WORDS, id="task_guid-non-ascii"),
    pytest.param({"task_guid": "a\n"}, "task_guid", GUID_WORDS, id="task_guid-newline"),
    pytest.param({"task_guid": 7}, "task_guid", "must be a string", id="task_guid-int"),
    # domain and stack
    pytest.param({"domain": DROP}, "domain", "required", id="domain-missing"),
    pytest.param({"domain": ""}, "domain", "must not be empty", id="domain-empty"),
    pytest.param({"stack": DROP}, "stack", "required", id="stack-missing"),
    pytest.param({"stack": ""}, "stack", "must not be empty", id="stack-empty"),
    # root_fs
    pytest.param({"root_fs": "http://x"}, "root_fs", ROOT_FS_WORDS, id="root_fs-http"),
    pytest.param({"root_fs": "docker:"}, "root_fs", ROOT_FS_WORDS, id="root_fs-docker-no-path"),
    pytest.param(
        {"root_fs": "docker://registry.example"},
        "root_fs",
        ROOT_FS_WORDS,
        id="root_fs-docker-host-no-image",
    ),
    pytest.param(
        {"root_fs": "docker:///org/image?tag=1"},
        "root_fs",
        ROOT_FS_WORDS,
        id="root_fs-docker-query",
    ),
    pytest.param({"root_fs": "preloaded:"}, "root_fs", ROOT_FS_WORDS, id="root_fs-preloaded-empty"),
    pytest.param(
        {"root_fs": "preloaded://host/fs"}, "root_fs", ROOT_FS_WORDS, id="root_fs-preloaded-host"
    ),
    pytest.param({"root_fs": "cflinuxfs4"}, "root_fs", ROOT_FS_WORDS, id="root_fs-bare-name"),
    # zones (a diego extension)
    pytest.param({"zones": "z1"}, "zones", "must be an array", id="zones-string"),
    pytest.param({"zones": [""]}, "zones", "must hold no empty names", id="zones-empty-name"),
    pytest.param(
        {"zones": ["z1", "z1"]}, "zones", "must not name anything twice", id="zones-twice"
    ),
    pytest.param({"zones": [1]}, "zones[0]", "must be a string", id="zones-number"),
    # cpu_weight
    pytest.param({"cpu_weight": 0}, "cpu_weight", "must be between 1 and 100", id="cpu_weight-0"),
    pytest.param(
        {"cpu_weight": 101}, "cpu_weight", "must be between 1 and 100", id="cpu_weight-101"
    ),
    pytest.param({"cpu_weight": -1}, "cpu_weight", "must be between 1 and 100", id="cpu_weight--1"),
    pytest.param({"cpu_weight": "5"}, "cpu_weight", "must be an integer", id="cpu_weight-string"),
    pytest.param({"cpu_weight": True}, "cpu_weight", "must be an integer", id="cpu_weight-bool"),
    pytest.param({"cpu_weight": 1.5}, "cpu_weight", "must be an integer", id="cpu_weight-float"),
    # disk_mb and memory_mb
    pytest.param({"disk_mb": -1}, "disk_mb", "must be between 0 and 2147483647", id="disk_mb--1"),
    pytest.param({"disk_mb": "1"}, "disk_mb", "must be an integer", id="disk_mb-string"),
    pytest.param({"disk_mb": 1.5}, "disk_mb", "must be an integer", id="disk_mb-float"),
    pytest.param({"disk_mb": False}, "disk_mb", "must be an integer", id="disk_mb-bool"),
    pytest.param(
        {"memory_mb": -1}, "memory_mb", "must be between 0 and 2147483647", id="memory_mb--1"
    ),
    pytest.param({"memory_mb": "1"}, "memory_mb", "must be an integer", id="memory_mb-string"),
    pytest.param({"memory_mb": 1.5}, "memory_mb", "must be an integer", id="memory_mb-float"),
    pytest.param({"memory_mb": True}, "memory_mb", "must be an integer", id="memory_mb-bool"),
    # privileged
    pytest.param(
        {"privileged": "true"}, "privileged", "must be true or false", id="privileged-string"
    ),
    pytest.param({"privileged": 1}, "privileged", "must be true or false", id="privileged-int"),
    # annotation: 10 KiB of UTF-8, counted in bytes
    pytest.param(
        {"annotation": "a" * 10241},
        "annotation",
        "must be at most 10240 bytes (is 10241)",
        id="annotation-10241-ascii",
    ),
    pytest.param(
        {"annotation": "é" * 5121},
        "annotation",
        "must be at most 10240 bytes (is 10242)",
        id="annotation-5121-chars-10242-bytes",
    ),
    pytest.param(
        {"annotation": "😀" * 2561},
        "annotation",
        "must be at most 10240 bytes (is 10244)",
        id="annotation-2561-emoji-10244-bytes",
    ),
    # completion_callback_url
    pytest.param(
        {"completion_callback_url": "/callback"},
        "completion_callback_url",
        URL_WORDS,
        id="callback-relative",
    ),
    pytest.param(
        {"completion_callback_url": "callback.example/done"},
        "completion_callback_url",
        URL_WORDS,
        id="callback-no-scheme",
    ),
    pytest.param(
        {"completion_callback_url": "ftp://files.example/done"},
        "completion_callback_url",
        URL_WORDS,
        id="callback-ftp",
    ),
    pytest.param(
        {"completion_callback_url": "http://"},
        "completion_callback_url",
        URL_WORDS,
        id="callback-http-no-host",
    ),
    pytest.param(
        {"completion_callback_url": "https://"},
        "completion_callback_url",
        URL_WORDS,
        id="callback-https-no-host",
    ),
    pytest.param(
        {"completion_callback_url": "http://[::1"},
        "completion_callback_url",
        URL_WORDS,
        id="callback-unparseable",
    ),
    # env
    pytest.param(
        {"env": [{"name": "", "value": "x"}]},
        "env[0].name",
        "must not be empty",
        id="env-empty-name",
    ),
    pytest.param({"env": [{"value": "x"}]}, "env[0].name", "required", id="env-missing-name"),
    pytest.param(
        {"env": [{"name": "A", "value": "1"}, {"value": "2"}]},
        "env[1].name",
        "required",
        id="env-second-missing-name",
    ),
    pytest.param({"env": {"A": "1"}}, "env", "must be an array", id="env-object"),
    pytest.param({"env": "A=1"}, "env", "must be an array", id="env-string"),
    pytest.param({"env": ["A=1"]}, "env[0]", "must be an object", id="env-entry-string"),
    pytest.param(
        {"env": [{"name": "A", "value": 1}]}, "env[0].value", "must be a string", id="env-value-int"
    ),
    pytest.param(
        {"env": [{"name": "A", "vale": "1"}]}, "env[0].vale", "unknown field", id="env-unknown-key"
    ),
    # security_group_rules
    pytest.param(
        {"security_group_rules": {"protocol": "tcp"}},
        "security_group_rules",
        "must be an array",
        id="sg-not-a-list",
    ),
    pytest.param(
        sg(protocol="icmpv6"),
        f"{SG}.protocol",
        "must be one of tcp, udp, icmp, all",
        id="sg-bad-protocol",
    ),
    pytest.param(
        sg(protocol="TCP"),
        f"{SG}.protocol",
        "must be one of tcp, udp, icmp, all",
        id="sg-uppercase-protocol",
    ),
    pytest.param(sg(protocol=DROP), f"{SG}.protocol", "required", id="sg-missing-protocol"),
    pytest.param(sg(destination=DROP), f"{SG}.destination", "required", id="sg-no-destination"),
    pytest.param(
        sg(destination="example.com"),
        f"{SG}.destination",
        DESTINATION_WORDS,
        id="sg-destination-hostname",
    ),
    pytest.param(
        sg(destination="10.0.0.1/33"),
        f"{SG}.destination",
        DESTINATION_WORDS,
        id="sg-destination-bad-cidr",
    ),
    pytest.param(
        sg(destination="10.0.0.256"),
        f"{SG}.destination",
        DESTINATION_WORDS,
        id="sg-destination-bad-ip",
    ),
    pytest.param(
        sg(destination="10.0.0.1-::1"),
        f"{SG}.destination",
        DESTINATION_WORDS,
        id="sg-destination-range-mixed-versions",
    ),
    pytest.param(
        sg(destination="10.0.0.1-nope"),
        f"{SG}.destination",
        DESTINATION_WORDS,
        id="sg-destination-range-bad-end",
    ),
    pytest.param(
        sg(destination="10.0.0.9-10.0.0.1"),
        f"{SG}.destination",
        "range start must not be after its end",
        id="sg-destination-range-backwards",
    ),
    pytest.param(
        sg(ports=DROP, port_range={"start": 0, "end": 80}),
        f"{SG}.port_range.start",
        "must be between 1 and 65535",
        id="sg-port_range-start-0",
    ),
    pytest.param(
        sg(ports=DROP, port_range={"start": 1, "end": 65536}),
        f"{SG}.port_range.end",
        "must be between 1 and 65535",
        id="sg-port_range-end-65536",
    ),
    pytest.param(
        sg(ports=DROP, port_range={"start": 81, "end": 80}),
        f"{SG}.port_range.start",
        "must not be greater than end",
        id="sg-port_range-start-after-end",
    ),
    pytest.param(
        sg(ports=DROP, port_range={"start": 80}),
        f"{SG}.port_range.end",
        "required",
        id="sg-port_range-missing-end",
    ),
    pytest.param(
        sg(ports=DROP),
        f"{SG}.port_range",
        "required for protocol tcp",
        id="sg-tcp-without-ports",
    ),
    pytest.param(
        sg(protocol="udp", ports=DROP),
        f"{SG}.port_range",
        "required for protocol udp",
        id="sg-udp-without-ports",
    ),
    pytest.param(
        sg(port_range={"start": 1, "end": 1024}),
        f"{SG}.ports",
        "give ports or port_range, not both",
        id="sg-both-ports-and-port_range",
    ),
    pytest.param(
        sg(ports=[80, 0]), f"{SG}.ports[1]", "must be between 1 and 65535", id="sg-port-0"
    ),
    pytest.param(
        sg(ports=[65536]), f"{SG}.ports[0]", "must be between 1 and 65535", id="sg-port-65536"
    ),
    pytest.param(sg(ports=["80"]), f"{SG}.ports[0]", "must be an integer", id="sg-port-string"),
    pytest.param(
        sg(protocol="icmp", ports=DROP),
        f"{SG}.icmp_info",
        "required for protocol icmp",
        id="sg-icmp-without-icmp_info",
    ),
    pytest.param(
        sg(protocol="icmp", ports=DROP, icmp_info={"type": 256, "code": 0}),
        f"{SG}.icmp_info.type",
        "must be between 0 and 255",
        id="sg-icmp-type-256",
    ),
    pytest.param(
        sg(protocol="icmp", ports=DROP, icmp_info={"type": 8}),
        f"{SG}.icmp_info.code",
        "required",
        id="sg-icmp-missing-code",
    ),
    pytest.param(
        sg(protocol="all", ports=DROP, port_range={"start": 1, "end": 2}),
        f"{SG}.port_range",
        "not allowed for protocol all",
        id="sg-all-with-port_range",
    ),
    pytest.param(
        sg(protocol="all"),
        f"{SG}.ports",
        "not allowed for protocol all",
        id="sg-all-with-ports",
    ),
    pytest.param(
        sg(protocol="icmp", icmp_info={"type": 8, "code": 0}),
        f"{SG}.ports",
        "not allowed for protocol icmp",
        id="sg-icmp-with-ports",
    ),
    pytest.param(
        sg(icmp_info={"type": 8, "code": 0}),
        f"{SG}.icmp_info",
        "not allowed for protocol tcp",
        id="sg-tcp-with-icmp_info",
    ),
    pytest.param(sg(log="yes"), f"{SG}.log", "must be true or false", id="sg-log-string"),
    # the action: its shape
    pytest.param({"action": DROP}, "action", "required", id="action-missing"),
    pytest.param(
        {"action": {**run(), **download()}},
        "action",
        f"must be an object with exactly one of: {KINDS}",
        id="action-two-keys",
    ),
    pytest.param(
        {"action": {}},
        "action",
        f"must be an object with exactly one of: {KINDS}",
        id="action-no-key",
    ),
    pytest.param(
        {"action": "run /bin/true"},
        "action",
        f"must be an object with exactly one of: {KINDS}",
        id="action-string",
    ),
    pytest.param(
        {"action": {"exec": {"path": "/bin/true"}}},
        "action.exec",
        f"unknown action; expected one of: {KINDS}",
        id="action-unknown-kind",
    ),
    pytest.param(
        {"action": {"Run": {"path": "/bin/true"}}},
        "action.Run",
        "unknown action",
        id="action-kind-wrong-case",
    ),
    pytest.param(
        {"action": {"run": "/bin/true"}}, "action.run", "must be an object", id="action-body-string"
    ),
    # run
    pytest.param({"action": {"run": {}}}, "action.run.path", "required", id="run-no-path"),
    pytest.param(
        {"action": run(path="")}, "action.run.path", "must not be empty", id="run-empty-path"
    ),
    pytest.param(
        {"action": run(user="")}, "action.run.user", "must not be empty", id="run-empty-user"
    ),
    pytest.param(
        {"action": run(resource_limits={"nofile": -1})},
        "action.run.resource_limits.nofile",
        "must be >= 0",
        id="run-negative-nofile",
    ),
    pytest.param(
        {"action": run(env=[{"name": ""}])},
        "action.run.env[0].name",
        "must not be empty",
        id="run-env-empty-name",
    ),
    # download
    pytest.param(
        {"action": download(**{"from": DROP})},
        "action.download.from",
        "required",
        id="download-no-from",
    ),
    pytest.param(
        {"action": download(to=DROP)}, "action.download.to", "required", id="download-no-to"
    ),
    pytest.param(
        {"action": download(**{"from": ""})},
        "action.download.from",
        "must not be empty",
        id="download-empty-from",
    ),
    pytest.param(
        {"action": download(to="")},
        "action.download.to",
        "must not be empty",
        id="download-empty-to",
    ),
    pytest.param(
        {"action": download(checksum_algorithm="sha256")},
        "action.download.checksum_value",
        "required with checksum_algorithm",
        id="download-algorithm-without-value",
    ),
    pytest.param(
        {"action": download(checksum_value="abc123")},
        "action.download.checksum_algorithm",
        "required with checksum_value",
        id="download-value-without-algorithm",
    ),
    pytest.param(
        {"action": download(checksum_algorithm="crc32", checksum_value="abc123")},
        "action.download.checksum_algorithm",
        "must be one of",
        id="download-algorithm-crc32",
    ),
    # upload
    pytest.param(
        {"action": upload(**{"from": DROP})}, "action.upload.from", "required", id="upload-no-from"
    ),
    pytest.param({"action": upload(to=DROP)}, "action.upload.to", "required", id="upload-no-to"),
    pytest.param(
        {"action": upload(to="")}, "action.upload.to", "must not be empty", id="upload-empty-to"
    ),
    # timeout
    pytest.param(
        {"action": {"timeout": {"timeout_ms": 1000}}},
        "action.timeout.action",
        "required",
        id="timeout-no-action",
    ),
    pytest.param(
        {"action": {"timeout": {"action": run()}}},
        "action.timeout.timeout_ms",
        "required",
        id="timeout-no-timeout_ms",
    ),
    pytest.param(
        {"action": {"timeout": {"action": run(), "timeout_ms": 0}}},
        "action.timeout.timeout_ms",
        "must be >= 1",
        id="timeout-timeout_ms-0",
    ),
    pytest.param(
        {"action": {"timeout": {"action": run(), "timeout_ms": -5}}},
        "action.timeout.timeout_ms",
        "must be >= 1",
        id="timeout-timeout_ms-negative",
    ),
    pytest.param(
        {"action": {"timeout": {"action": run(), "timeout_ms": True}}},
        "action.timeout.timeout_ms",
        "must be an integer",
        id="timeout-timeout_ms-bool",
    ),
    # emit_progress and try
    pytest.param(
        {"action": {"emit_progress": {"start_message": "go"}}},
        "action.emit_progress.action",
        "required",
        id="emit_progress-no-action",
    ),
    pytest.param({"action": {"try": {}}}, "action.try.action", "required", id="try-no-action"),
    # serial, parallel, codependent
    pytest.param(
        {"action": {"serial": {}}}, "action.serial.actions", "required", id="serial-no-actions"
    ),
    pytest.param(
        {"action": {"serial": {"actions": []}}},
        "action.serial.actions",
        "must not be empty",
        id="serial-empty-actions",
    ),
    pytest.param(
        {"action": {"parallel": {}}},
        "action.parallel.actions",
        "required",
        id="parallel-no-actions",
    ),
    pytest.param(
        {"action": {"parallel": {"actions": []}}},
        "action.parallel.actions",
        "must not be empty",
        id="parallel-empty-actions",
    ),
    pytest.param(
        {"action": {"codependent": {}}},
        "action.codependent.actions",
        "required",
        id="codependent-no-actions",
    ),
    pytest.param(
        {"action": {"codependent": {"actions": []}}},
        "action.codependent.actions",
        "must not be empty",
        id="codependent-empty-actions",
    ),
    pytest.param(
        {"action": {"serial": {"actions": run()}}},
        "action.serial.actions",
        "must be an array",
        id="serial-actions-object",
    ),
    # nested paths
    pytest.param(
        {"action": {"serial": {"actions": [run(), run(), {"run": {}}]}}},
        "action.serial.actions[2].run.path",
        "required",
        id="nested-serial-2-run-path",
    ),
    pytest.param(
        {
            "action": {
                "timeout": {
                    "timeout_ms": 1000,
                    "action": {"parallel": {"actions": [download(to=DROP), run()]}},
                }
            }
        },
        "action.timeout.action.parallel.actions[0].download.to",
        "required",
        id="nested-timeout-parallel-0-download-to",
    ),
    pytest.param(
        {
            "action": {
                "codependent": {
                    "actions": [
                        run(),
                        {"emit_progress": {"action": {"try": {"action": upload(to="")}}}},
                    ]
                }
            }
        },
        "action.codependent.actions[1].emit_progress.action.try.action.upload.to",
        "must not be empty",
        id="nested-codependent-emit_progress-try-upload-to",
    ),
    # unknown fields, by name
    pytest.param({"bogus": 1}, "bogus", "unknown field", id="unknown-top-level"),
    pytest.param(
        {"action": run(bogus=1)}, "action.run.bogus", "unknown field", id="unknown-in-run"
    ),
    pytest.param(
        {"action": {"serial": {"actions": [download(bogus=True)]}}},
        "action.serial.actions[0].download.bogus",
        "unknown field",
        id="unknown-in-nested-download",
    ),
    pytest.param(sg(bogus="x"), f"{SG}.bogus", "unknown field", id="unknown-in-sg-rule"),
    # wrong JSON types
    pytest.param(
        {"action": run(args="-c true")},
        "action.run.args",
        "must be an array",
        id="type-args-string",
    ),
    pytest.param(
        {"action": run(path=5)}, "action.run.path", "must be a string", id="type-path-int"
    ),
    pytest.param(
        {"action": run(args=["-c", {"x": 1}])},
        "action.run.args[1]",
        "must be a string",
        id="type-args-item-object",
    ),
    pytest.param(
        {"action": run(suppress_log_output="no")},
        "action.run.suppress_log_output",
        "must be true or false",
        id="type-string-for-bool",
    ),
    pytest.param(
        {"action": run(resource_limits={"nproc": True})},
        "action.run.resource_limits.nproc",
        "must be an integer",
        id="type-bool-for-int",
    ),
    pytest.param({"domain": ["tests"]}, "domain", "must be a string", id="type-list-for-string"),
]


@pytest.mark.parametrize(("overrides", "path", "rule"), REFUSED)
def test_a_broken_rule_is_reported_at_its_path(
    overrides: dict[str, Any], path: str, rule: str
) -> None:
    """A request breaking one rule fails with problems at that field's path naming the rule."""
    problems = problems_of(request(**overrides))
    assert any(p.path == path and rule in p.rule for p in problems), problems
    assert {p.path for p in problems} == {path}, problems


ACCEPTED = [
    pytest.param({"root_fs": "docker:///org/image#tag"}, id="root_fs-docker-org-image-tag"),
    pytest.param({"root_fs": "docker:///image"}, id="root_fs-docker-image"),
    pytest.param({"root_fs": "docker://registry.example/org/img#t"}, id="root_fs-docker-registry"),
    pytest.param({"root_fs": "preloaded:cflinuxfs4"}, id="root_fs-preloaded"),
    pytest.param({"root_fs": ""}, id="root_fs-empty"),
    pytest.param({"zones": []}, id="zones-none"),
    pytest.param({"zones": ["z1", "z2"]}, id="zones-two"),
    pytest.param({"cpu_weight": 1}, id="cpu_weight-1"),
    pytest.param({"cpu_weight": 100}, id="cpu_weight-100"),
    pytest.param({"disk_mb": 0, "memory_mb": 0}, id="limits-0"),
    pytest.param({"disk_mb": 1024, "memory_mb": 128}, id="limits-set"),
    pytest.param({"annotation": "a" * 10240}, id="annotation-10240-ascii"),
    pytest.param({"annotation": "é" * 5120}, id="annotation-10240-bytes-2-byte-chars"),
    pytest.param({"annotation": "😀" * 2560}, id="annotation-10240-bytes-4-byte-chars"),
    pytest.param({"completion_callback_url": ""}, id="callback-empty"),
    pytest.param({"completion_callback_url": "http://cc.example/done"}, id="callback-http"),
    pytest.param(
        {"completion_callback_url": "https://cc.example:8443/tasks/1?x=y"}, id="callback-https"
    ),
    pytest.param({"completion_callback_url": "http://[::1]:8080/cb"}, id="callback-ipv6"),
    pytest.param({"env": [{"name": "A", "value": ""}, {"name": "B"}]}, id="env"),
    pytest.param(sg(), id="sg-tcp-ports"),
    pytest.param(sg(ports=DROP, port_range={"start": 1, "end": 65535}), id="sg-tcp-port_range"),
    pytest.param(sg(ports=DROP, port_range={"start": 80, "end": 80}), id="sg-one-port-range"),
    pytest.param(sg(protocol="udp", ports=[53, 65535, 1]), id="sg-udp-ports"),
    pytest.param(sg(protocol="icmp", ports=DROP, icmp_info={"type": 0, "code": 255}), id="sg-icmp"),
    pytest.param(sg(protocol="all", ports=DROP, destination="0.0.0.0/0"), id="sg-all"),
    pytest.param(sg(destination="10.0.0.1"), id="sg-destination-ip"),
    pytest.param(sg(destination="10.0.0.1-10.0.0.1"), id="sg-destination-one-ip-range"),
    pytest.param(sg(destination="10.0.0.1-10.0.0.9"), id="sg-destination-range"),
    pytest.param(sg(destination="2001:db8::/32"), id="sg-destination-ipv6-cidr"),
    pytest.param(sg(destination="::1"), id="sg-destination-ipv6"),
    pytest.param(sg(log=True), id="sg-log"),
    pytest.param(
        {"action": download(checksum_algorithm="sha256", checksum_value="ab12")},
        id="download-checksum",
    ),
    pytest.param({"action": {"timeout": {"action": run(), "timeout_ms": 1}}}, id="timeout-1ms"),
    pytest.param({"action": deep_try(10)}, id="action-10-deep"),
    pytest.param({"cpu_weight": None, "annotation": None}, id="null-optional-fields"),
]


@pytest.mark.parametrize("overrides", ACCEPTED)
def test_a_valid_request_is_accepted(overrides: dict[str, Any]) -> None:
    """A request whose fields all keep their rules decodes, keeping the given values."""
    data = request(**overrides)
    decoded = decode(TaskCreateRequest, data)
    assert isinstance(decoded, TaskCreateRequest)
    for key in ("root_fs", "cpu_weight", "disk_mb", "memory_mb", "completion_callback_url"):
        if data.get(key) is not None:
            assert getattr(decoded, key) == data[key]
    if data.get("annotation") is not None:
        assert decoded.annotation == data["annotation"]


def test_tcp_rule_with_an_empty_ports_list_is_refused() -> None:
    """A tcp rule whose ``ports`` list is empty names no port, so it is refused like no ports."""
    problems = problems_of(request(**sg(ports=[])))
    assert problems, problems
    assert {p.path for p in problems} <= {f"{SG}.ports", f"{SG}.port_range"}, problems


@pytest.mark.parametrize(
    "body",
    [
        pytest.param([BASE], id="array"),
        pytest.param("task-1", id="string"),
        pytest.param(42, id="number"),
        pytest.param(None, id="null"),
        pytest.param(True, id="bool"),
    ],
)
def test_a_body_that_is_not_an_object_is_refused(body: Any) -> None:
    """A body that is not a JSON object gives one problem at the empty (body) path."""
    assert problems_of(body) == (Problem("", "must be an object"),)


def test_every_problem_is_reported_at_once() -> None:
    """A request with three independent problems yields exactly those three problems."""
    data = request(
        domain=DROP,
        cpu_weight=0,
        action={"serial": {"actions": [run(), {"run": {}}]}},
    )
    problems = problems_of(data)
    assert sorted(problems, key=lambda p: p.path) == [
        Problem("action.serial.actions[1].run.path", "required"),
        Problem("cpu_weight", "must be between 1 and 100"),
        Problem("domain", "required"),
    ]


def test_invalid_document_message_lists_each_problem_with_its_path() -> None:
    """The InvalidDocument message reads ``path: rule`` for each problem, in the dotted form."""
    data = request(action={"serial": {"actions": [run(), run(), {"run": {}}]}}, stack="")
    with pytest.raises(InvalidDocument) as caught:
        decode(TaskCreateRequest, data)
    message = str(caught.value)
    assert "action.serial.actions[2].run.path: required" in message
    assert "stack: must not be empty" in message


def test_body_problem_is_printed_as_body() -> None:
    """A problem with the whole body has the path shown as ``(body)``."""
    assert str(Problem("", "must be an object")) == "(body): must be an object"


def test_deeply_nested_action_is_a_problem_not_a_recursion_error() -> None:
    """An action tree 100 try actions deep is refused with a depth problem, not a crash."""
    problems = problems_of(request(action=deep_try(100)))
    assert len(problems) == 1, problems
    (problem,) = problems
    assert problem.rule == f"nested more than {MAX_DEPTH} levels deep"
    assert problem.path.startswith("action.try.action.try.action")


def test_absurdly_deep_nesting_is_refused_quickly() -> None:
    """Nesting far beyond the limit (5000 levels) is refused without recursing into it."""
    problems = problems_of(request(action=deep_try(5000)))
    assert [p.rule for p in problems] == [f"nested more than {MAX_DEPTH} levels deep"]


def test_run_action_user_defaults_to_root() -> None:
    """A run action that names no user runs as ``root``."""
    decoded = decode(TaskCreateRequest, request())
    assert isinstance(decoded.action, RunAction)
    assert decoded.action.user == DEFAULT_USER == "root"


def test_download_and_upload_users_default_to_root() -> None:
    """Download and upload actions that name no user act as ``root`` too."""
    decoded = decode(
        TaskCreateRequest, request(action={"serial": {"actions": [download(), upload()]}})
    )
    first, second = decoded.action.actions  # type: ignore[union-attr]
    assert isinstance(first, DownloadAction)
    assert isinstance(second, UploadAction)
    assert first.user == second.user == "root"


def test_optional_fields_take_their_defaults() -> None:
    """A minimal request gets Diego's defaults for every optional field."""
    decoded = decode(TaskCreateRequest, request())
    assert decoded == TaskCreateRequest(
        task_guid="task-1",
        domain="tests",
        stack="cflinuxfs4",
        action=RunAction(path="/bin/true"),
    )
    assert decoded.root_fs == ""
    assert decoded.cpu_weight is None
    assert decoded.disk_mb == decoded.memory_mb == 0
    assert decoded.privileged is False
    assert decoded.env == decoded.security_group_rules == ()


def test_try_action_decodes_to_its_model() -> None:
    """A valid nested action tree decodes to the matching action models."""
    decoded = decode(TaskCreateRequest, request(action=deep_try(2)))
    assert decoded.action == TryAction(action=TryAction(action=RunAction(path="/bin/true")))
