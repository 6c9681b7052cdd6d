"""The codec: lossless round trips, the wire form, the JSON Schema, and the event calculator."""

from __future__ import annotations

import json
from typing import Any

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from diego.models.actions import (
    ACTION_KINDS,
    CHECKSUM_ALGORITHMS,
    CodependentAction,
    DownloadAction,
    EmitProgressAction,
    EnvironmentVariable,
    ParallelAction,
    ResourceLimits,
    RunAction,
    SerialAction,
    TimeoutAction,
    TryAction,
    UploadAction,
)
from diego.models.codec import (
    InvalidDocument,
    Problem,
    decode,
    decode_trusted,
    encode,
    json_schema,
)
from diego.models.events import (
    TaskChanged,
    TaskCreated,
    TaskRemoved,
    event_domain,
    task_events,
)
from diego.models.task import (
    ICMPInfo,
    PortRange,
    SecurityGroupRule,
    Task,
    TaskCreateRequest,
    TaskState,
)

PROPERTY = settings(max_examples=150, deadline=None, database=None)

# ---------------------------------------------------------------- strategies

text = st.text(max_size=12)
non_empty = st.text(min_size=1, max_size=12)
guid = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-",
    min_size=1,
    max_size=36,
)
name = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=10)
small_tuple = st.lists(text, max_size=3).map(tuple)
counts = st.integers(min_value=0, max_value=2**31 - 1)  # int32, as in Diego

env_vars = st.lists(st.builds(EnvironmentVariable, name=non_empty, value=text), max_size=3).map(
    tuple
)

resource_limits = st.none() | st.builds(
    ResourceLimits, nofile=st.none() | counts, nproc=st.none() | counts
)

run_actions = st.builds(
    RunAction,
    path=non_empty,
    args=small_tuple,
    dir=text,
    env=env_vars,
    resource_limits=resource_limits,
    user=non_empty,
    log_source=text,
    suppress_log_output=st.booleans(),
)

checksums = st.just(("", "")) | st.tuples(st.sampled_from(CHECKSUM_ALGORITHMS), non_empty)

download_actions = checksums.flatmap(
    lambda checksum: st.builds(
        DownloadAction,
        artifact=text,
        from_=non_empty,
        to=non_empty,
        cache_key=text,
        log_source=text,
        user=non_empty,
        checksum_algorithm=st.just(checksum[0]),
        checksum_value=st.just(checksum[1]),
    )
)

upload_actions = st.builds(
    UploadAction, artifact=text, from_=non_empty, to=non_empty, log_source=text, user=non_empty
)


def _containers(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    many = st.lists(children, min_size=1, max_size=3).map(tuple)
    return st.one_of(
        st.builds(
            TimeoutAction,
            action=children,
            timeout_ms=st.integers(min_value=1, max_value=2**40),
            log_source=text,
        ),
        st.builds(
            EmitProgressAction,
            action=children,
            start_message=text,
            success_message=text,
            failure_message_prefix=text,
            log_source=text,
        ),
        st.builds(TryAction, action=children, log_source=text),
        st.builds(SerialAction, actions=many, log_source=text),
        st.builds(ParallelAction, actions=many, log_source=text),
        st.builds(CodependentAction, actions=many, log_source=text),
    )


actions = st.recursive(run_actions | download_actions | upload_actions, _containers, max_leaves=8)

ports = st.integers(min_value=1, max_value=65535)
port_ranges = st.tuples(ports, ports).map(sorted).map(lambda p: PortRange(start=p[0], end=p[1]))


def _cidr(version: int) -> st.SearchStrategy[str]:
    bits = 32 if version == 4 else 128
    return st.tuples(st.ip_addresses(v=version), st.integers(0, bits)).map(
        lambda t: f"{t[0]}/{t[1]}"
    )


def _ip_range(version: int) -> st.SearchStrategy[str]:
    return st.lists(st.ip_addresses(v=version), min_size=2, max_size=2).map(
        lambda pair: "-".join(str(a) for a in sorted(pair))
    )


destinations = st.one_of(st.ip_addresses().map(str), _cidr(4), _cidr(6), _ip_range(4), _ip_range(6))

_port_rules = st.sampled_from(["tcp", "udp"]).flatmap(
    lambda protocol: st.one_of(
        st.builds(
            SecurityGroupRule,
            protocol=st.just(protocol),
            destination=destinations,
            port_range=port_ranges,
            log=st.booleans(),
        ),
        st.builds(
            SecurityGroupRule,
            protocol=st.just(protocol),
            destination=destinations,
            ports=st.lists(ports, min_size=1, max_size=4).map(tuple),
            log=st.booleans(),
        ),
    )
)

security_group_rules = st.one_of(
    _port_rules,
    st.builds(
        SecurityGroupRule,
        protocol=st.just("icmp"),
        destination=destinations,
        icmp_info=st.builds(ICMPInfo, type=st.integers(0, 255), code=st.integers(0, 255)),
        log=st.booleans(),
    ),
    st.builds(SecurityGroupRule, protocol=st.just("all"), destination=destinations),
)

root_filesystems = st.one_of(
    st.just(""),
    st.builds(lambda n: f"preloaded:{n}", name),
    st.builds(lambda o, i, t: f"docker:///{o}/{i}#{t}", name, name, name),
    st.builds(lambda i: f"docker:///{i}", name),
    st.builds(lambda h, i, t: f"docker://{h}.example/{i}#{t}", name, name, name),
)

callback_urls = st.one_of(
    st.just(""),
    st.builds(lambda h, p: f"http://{h}.example/{p}", name, name),
    st.builds(lambda h, port: f"https://{h}.example:{port}/done?x=1", name, ports),
)

requests = st.builds(
    TaskCreateRequest,
    task_guid=guid,
    domain=non_empty,
    stack=non_empty,
    root_fs=root_filesystems,
    env=env_vars,
    cpu_weight=st.none() | st.integers(1, 100),
    disk_mb=counts,
    memory_mb=counts,
    privileged=st.booleans(),
    action=actions,
    result_file=text,
    completion_callback_url=callback_urls,
    log_guid=text,
    log_source=text,
    annotation=st.text(max_size=64),
    security_group_rules=st.lists(security_group_rules, max_size=3).map(tuple),
)

timestamps = st.integers(min_value=0, max_value=2**63 - 1)

tasks = st.builds(
    lambda request, **lifecycle: Task.from_request(request, **lifecycle),
    requests,
    state=st.sampled_from(TaskState),
    cell_id=text,
    failed=st.booleans(),
    failure_reason=text,
    result=st.text(max_size=64),
    created_at=timestamps,
    updated_at=timestamps,
    first_completed_at=timestamps,
)


def through_json(value: Any) -> Any:
    """``value`` written as JSON text and read back, as it would cross the wire."""
    return json.loads(json.dumps(value))


# ---------------------------------------------------------------- round trips


@PROPERTY
@given(requests)
def test_request_round_trip(request: TaskCreateRequest) -> None:
    """Any valid TaskCreateRequest decodes from its own encoding to an equal request."""
    wire = encode(request)
    assert through_json(wire) == wire
    assert decode(TaskCreateRequest, wire) == request
    assert decode(TaskCreateRequest, through_json(wire)) == request


@PROPERTY
@given(tasks)
def test_task_round_trip(task: Task) -> None:
    """Any valid Task, in any state, decodes from its own encoding to an equal Task."""
    wire = encode(task)
    assert through_json(wire) == wire
    assert decode(Task, through_json(wire)) == task
    assert decode(TaskCreateRequest, encode(task.request())) == task.request()


@PROPERTY
@given(tasks)
def test_trusted_decode_builds_what_decode_builds(task: Task) -> None:
    """decode_trusted (the store's rows) gives the very models decode gives, nested
    actions, enums and optional fields included."""
    wire = through_json(encode(task))
    assert decode_trusted(Task, wire) == decode(Task, wire) == task
    request = through_json(encode(task.request()))
    assert decode_trusted(TaskCreateRequest, request) == task.request()


def test_trusted_decode_fills_defaults_and_skips_the_rules() -> None:
    """Absent fields take their defaults; nothing is checked (the data is our own)."""
    wire = {"task_guid": "bad guid!", "domain": "d", "stack": "s", "action": {"run": {"path": ""}}}
    request = decode_trusted(TaskCreateRequest, wire)
    assert request.task_guid == "bad guid!"
    assert request.action == RunAction(path="")
    assert request.env == ()
    assert request.cpu_weight is None
    with pytest.raises(InvalidDocument):
        decode(TaskCreateRequest, wire)


@PROPERTY
@given(actions)
def test_action_tree_round_trip(action: Any) -> None:
    """Any action tree round-trips inside a request, and its wire form has one key per action."""
    request = TaskCreateRequest(task_guid="t", domain="d", stack="s", action=action)
    wire = through_json(encode(request))
    assert decode(TaskCreateRequest, wire).action == action
    _assert_one_key_per_action(wire["action"])


def _assert_one_key_per_action(node: dict[str, Any]) -> None:
    """Every action object in a wire tree has exactly one key, a known kind."""
    kinds = {cls.KIND: cls for cls in ACTION_KINDS}  # type: ignore[attr-defined]
    assert isinstance(node, dict)
    assert len(node) == 1
    ((kind, body),) = node.items()
    assert kind in kinds
    if "action" in body:
        _assert_one_key_per_action(body["action"])
    for child in body.get("actions", ()):
        _assert_one_key_per_action(child)


EVERY_KIND = SerialAction(
    actions=(
        DownloadAction(
            from_="https://blobs.example/app.tgz",
            to="/app",
            checksum_algorithm="sha256",
            checksum_value="ab12",
            cache_key="app",
        ),
        TimeoutAction(
            timeout_ms=60_000,
            action=EmitProgressAction(
                start_message="starting",
                success_message="done",
                failure_message_prefix="failed",
                action=ParallelAction(
                    actions=(
                        RunAction(
                            path="/bin/sh",
                            args=("-c", "echo hi"),
                            env=(EnvironmentVariable(name="A", value="1"),),
                            resource_limits=ResourceLimits(nofile=1024),
                            user="vcap",
                        ),
                        CodependentAction(
                            actions=(
                                TryAction(action=RunAction(path="/bin/false")),
                                RunAction(path="/bin/true", suppress_log_output=True),
                            )
                        ),
                    )
                ),
            ),
        ),
        UploadAction(from_="/out/result.txt", to="https://blobs.example/r", user="vcap"),
    ),
    log_source="TASK",
)


def test_a_tree_of_all_nine_kinds_round_trips() -> None:
    """A hand-written tree holding all nine action kinds round-trips through JSON unchanged."""
    found: set[str] = set()

    def walk(action: Any) -> None:
        found.add(type(action).KIND)
        for child in getattr(action, "actions", ()):
            walk(child)
        if hasattr(action, "action"):
            walk(action.action)

    walk(EVERY_KIND)
    assert found == {cls.KIND for cls in ACTION_KINDS}  # type: ignore[attr-defined]
    task = Task.new(TaskCreateRequest(task_guid="t", domain="d", stack="s", action=EVERY_KIND), 5)
    assert decode(Task, through_json(encode(task))) == task


# ---------------------------------------------------------------- the wire form

REQUEST = TaskCreateRequest(
    task_guid="task-1", domain="tests", stack="cflinuxfs4", action=RunAction(path="/bin/true")
)


def test_encode_omits_none_fields() -> None:
    """Fields whose value is None are left out of the encoding; set ones are written."""
    wire = encode(REQUEST)
    assert "cpu_weight" not in wire
    assert "resource_limits" not in wire["action"]["run"]
    assert None not in wire.values()
    assert encode(attrs.evolve(REQUEST, cpu_weight=7))["cpu_weight"] == 7
    assert encode(ResourceLimits(nofile=None, nproc=5)) == {"nproc": 5}
    assert encode(ResourceLimits()) == {}
    rule = SecurityGroupRule(protocol="all", destination="0.0.0.0/0")
    assert encode(rule) == {"protocol": "all", "destination": "0.0.0.0/0", "log": False}


def test_encode_writes_falsy_values_that_are_not_none() -> None:
    """Empty strings, zeros, False and empty lists are written, only None is left out."""
    wire = encode(REQUEST)
    assert wire["root_fs"] == ""
    assert wire["disk_mb"] == 0
    assert wire["privileged"] is False
    assert wire["env"] == []
    rule = SecurityGroupRule(protocol="tcp", destination="10.0.0.1", ports=(80,))
    assert encode(rule)["ports"] == [80]


def test_run_action_in_a_task_is_written_under_its_kind() -> None:
    """A RunAction inside a Task is written as ``{"run": {...}}``, its fields inside."""
    wire = encode(Task.new(REQUEST, 1))
    assert wire["action"] == {
        "run": {
            "path": "/bin/true",
            "args": [],
            "dir": "",
            "env": [],
            "user": "root",
            "log_source": "",
            "suppress_log_output": False,
        }
    }


def test_nested_actions_are_written_under_their_kinds() -> None:
    """Each action of a tree, at every level, is an object with exactly one key: its kind."""
    wire = encode(attrs.evolve(REQUEST, action=EVERY_KIND))["action"]
    assert list(wire) == ["serial"]
    first, second, third = wire["serial"]["actions"]
    assert list(first) == ["download"]
    assert list(second) == ["timeout"]
    assert list(second["timeout"]["action"]) == ["emit_progress"]
    assert list(third) == ["upload"]
    _assert_one_key_per_action(wire)


def test_from_is_from_on_the_wire() -> None:
    """A download or upload action's ``from_`` attribute is the key ``from`` on the wire."""
    download = DownloadAction(from_="https://blobs.example/a", to="/a")
    upload = UploadAction(from_="/a", to="https://blobs.example/a")
    for action, kind in ((download, "download"), (upload, "upload")):
        body = encode(attrs.evolve(REQUEST, action=action))["action"][kind]
        assert body["from"] == action.from_
        assert "from_" not in body


def test_from_underscore_is_not_a_wire_key() -> None:
    """A body spelling the key ``from_`` is refused: ``from_`` is unknown and ``from`` missing."""
    data = encode(REQUEST)
    data["action"] = {"download": {"from_": "https://blobs.example/a", "to": "/a"}}
    with pytest.raises(InvalidDocument) as caught:
        decode(TaskCreateRequest, data)
    assert set(caught.value.problems) == {
        Problem("action.download.from_", "unknown field"),
        Problem("action.download.from", "required"),
    }


def test_task_state_is_written_as_its_name() -> None:
    """A Task's state is written as the state's name and read back as the enum member."""
    task = attrs.evolve(Task.new(REQUEST, 1), state=TaskState.RESOLVING)
    wire = encode(task)
    assert wire["state"] == "RESOLVING"
    assert decode(Task, wire).state is TaskState.RESOLVING


def test_unknown_task_state_is_refused() -> None:
    """A Task whose state is not one of the five is refused, naming the allowed ones."""
    wire = encode(Task.new(REQUEST, 1))
    wire["state"] = "DONE"
    with pytest.raises(InvalidDocument) as caught:
        decode(Task, wire)
    assert caught.value.problems == (
        Problem("state", "must be one of PENDING, CLAIMED, RUNNING, COMPLETED, RESOLVING"),
    )


def test_encoded_task_is_the_request_plus_lifecycle_keys() -> None:
    """A Task's wire form is its request's wire form with the lifecycle keys added."""
    request_wire = encode(REQUEST)
    task_wire = encode(Task.new(REQUEST, 1))
    assert {k: task_wire[k] for k in request_wire} == request_wire
    assert set(task_wire) - set(request_wire) == {
        "state",
        "cell_id",
        "failed",
        "failure_reason",
        "result",
        "created_at",
        "updated_at",
        "first_completed_at",
    }


# ---------------------------------------------------------------- JSON Schema

MODELS = (
    TaskCreateRequest,
    EnvironmentVariable,
    SecurityGroupRule,
    PortRange,
    ICMPInfo,
    ResourceLimits,
    *ACTION_KINDS,
)


def _wire_key(attribute: str) -> str:
    return attribute[:-1] if attribute.endswith("_") else attribute


def test_schema_reference_and_definitions() -> None:
    """json_schema returns a $ref and puts a definition for every model used into definitions."""
    definitions: dict[str, Any] = {}
    ref = json_schema(TaskCreateRequest, definitions)
    assert ref == {"$ref": "#/components/schemas/TaskCreateRequest"}
    assert set(definitions) == {cls.__name__ for cls in MODELS}


@pytest.mark.parametrize("cls", MODELS, ids=[cls.__name__ for cls in MODELS])
def test_schema_definition_matches_the_model(cls: type) -> None:
    """Each definition is a closed object whose properties and required list match the fields."""
    definitions: dict[str, Any] = {}
    json_schema(TaskCreateRequest, definitions)
    body = definitions[cls.__name__]
    assert body["type"] == "object"
    assert body["additionalProperties"] is False
    fields = attrs.fields(cls)
    assert list(body["properties"]) == [_wire_key(f.name) for f in fields]
    required = [_wire_key(f.name) for f in fields if f.default is attrs.NOTHING]
    assert body.get("required", []) == required
    if not required:
        assert "required" not in body


def test_schema_carries_the_rules() -> None:
    """Field rules appear in the schema: patterns, bounds, enums, minimum lengths and defaults."""
    definitions: dict[str, Any] = {}
    json_schema(TaskCreateRequest, definitions)
    props = definitions["TaskCreateRequest"]["properties"]
    assert props["task_guid"]["pattern"] == "^[a-zA-Z0-9_-]*$"  # minLength forbids empty
    assert props["task_guid"]["minLength"] == 1
    assert (props["cpu_weight"]["minimum"], props["cpu_weight"]["maximum"]) == (1, 100)
    assert props["disk_mb"]["minimum"] == 0
    assert props["annotation"]["maxLength"] == 10240
    assert props["env"] == {
        "type": "array",
        "items": {"$ref": "#/components/schemas/EnvironmentVariable"},
        "default": [],
        "nullable": True,  # null is taken for absent
    }
    sg = definitions["SecurityGroupRule"]["properties"]
    assert sg["protocol"]["enum"] == ["tcp", "udp", "icmp", "all"]
    run = definitions["RunAction"]["properties"]
    assert run["user"]["default"] == "root"
    assert definitions["SerialAction"]["properties"]["actions"]["minItems"] == 1


def test_schema_of_an_action_is_one_of_the_kinds() -> None:
    """The action field's schema is a oneOf of closed one-key objects, one per kind."""
    definitions: dict[str, Any] = {}
    json_schema(TaskCreateRequest, definitions)
    one_of = definitions["TaskCreateRequest"]["properties"]["action"]["oneOf"]
    assert [next(iter(o["properties"])) for o in one_of] == [
        cls.KIND  # type: ignore[attr-defined]
        for cls in ACTION_KINDS
    ]
    for option, cls in zip(one_of, ACTION_KINDS, strict=True):
        assert option["required"] == [cls.KIND]  # type: ignore[attr-defined]
        assert option["additionalProperties"] is False
        assert option["properties"][cls.KIND] == {  # type: ignore[attr-defined]
            "$ref": f"#/components/schemas/{cls.__name__}"
        }


def test_task_schema_extends_the_request_schema() -> None:
    """The Task schema has the request's required fields and the lifecycle fields as optional."""
    definitions: dict[str, Any] = {}
    assert json_schema(Task, definitions) == {"$ref": "#/components/schemas/Task"}
    task = definitions["Task"]
    assert task["required"] == ["task_guid", "domain", "stack", "action"]
    assert task["properties"]["state"]["enum"] == [s.value for s in TaskState]
    assert task["additionalProperties"] is False


# ---------------------------------------------------------------- events

TASK = Task.new(REQUEST, 1)


def test_events_created() -> None:
    """From absent to present is one TaskCreated carrying the new Task."""
    assert task_events(None, TASK) == [TaskCreated(TASK)]


def test_events_removed() -> None:
    """From present to absent is one TaskRemoved carrying the old Task."""
    assert task_events(TASK, None) == [TaskRemoved(TASK)]


def test_events_changed() -> None:
    """A Task that differs before and after is one TaskChanged carrying both."""
    after = attrs.evolve(TASK, state=TaskState.CLAIMED, cell_id="cell-a", updated_at=2)
    assert task_events(TASK, after) == [TaskChanged(TASK, after)]


def test_events_changed_by_timestamp_only() -> None:
    """A change of updated_at alone is still a change."""
    after = attrs.evolve(TASK, updated_at=2)
    assert task_events(TASK, after) == [TaskChanged(TASK, after)]


@pytest.mark.parametrize(
    ("before", "after"),
    [
        pytest.param(None, None, id="absent-absent"),
        pytest.param(TASK, TASK, id="same-object"),
        pytest.param(TASK, attrs.evolve(TASK), id="equal-copy"),
    ],
)
def test_events_no_op(before: Task | None, after: Task | None) -> None:
    """No change (both absent, or equal Tasks) gives no event."""
    assert task_events(before, after) == []


def test_event_bodies_and_domain() -> None:
    """Event bodies hold the encoded Tasks, their types are stable, and the domain is the Task's."""
    after = attrs.evolve(TASK, state=TaskState.RUNNING, domain="tests", updated_at=3)
    created, changed, removed = TaskCreated(TASK), TaskChanged(TASK, after), TaskRemoved(TASK)
    assert created.data() == {"task": encode(TASK)}
    assert changed.data() == {"before": encode(TASK), "after": encode(after)}
    assert removed.data() == {"task": encode(TASK)}
    assert (created.TYPE, changed.TYPE, removed.TYPE) == (
        "task_created",
        "task_changed",
        "task_removed",
    )
    assert [event_domain(e) for e in (created, changed, removed)] == ["tests"] * 3
