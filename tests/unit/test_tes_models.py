"""TES 1.1 models: round trips, every create rule at its field path, the views, service-info.

Each validation case starts from a valid task, breaks one thing and expects the
codec to name that thing (``Problem(path, rule)``) and nothing else.
"""

from __future__ import annotations

import copy
from typing import Any

import attrs
import pytest

from diego.models.codec import FrozenMap, InvalidDocument, Problem, decode, encode, json_schema
from diego.models.tes import (
    MAX_CONTENT_BYTES,
    READ_ONLY_FIELDS,
    SUPPORTED_SCHEMES,
    TES_VERSION,
    TesExecutor,
    TesFileType,
    TesInput,
    TesState,
    TesTask,
    TesView,
    decode_create,
    is_wildcard,
    rfc3339,
    service_info,
    view,
)

DROP: Any = object()
"""An override value meaning: leave this key out."""

SCHEMES = "file, http, https, s3"
NO_SCHEME = f"must be a URL with one of the schemes {SCHEMES}"
ABSOLUTE = "must be an absolute path"

FULL_TASK: dict[str, Any] = {
    "id": "task-1",
    "state": "COMPLETE",
    "name": "Hello world",
    "description": "Says hello",
    "inputs": [
        {
            "name": "hello",
            "description": "the greeting",
            "url": "s3://funnel-bucket/hello.txt",
            "path": "/inputs/hello.txt",
            "type": "FILE",
            "streamable": True,
        },
        {
            "path": "/inputs/script.py",
            "type": "FILE",
            "content": "print('hi')",
            "streamable": False,
        },
    ],
    "outputs": [
        {
            "name": "stdout",
            "description": "what cat said",
            "url": "s3://funnel-bucket/output.txt",
            "path": "/outputs/stdout",
            "type": "FILE",
        },
        {
            "url": "file:///results/",
            "path": "/outputs/data/*.csv",
            "path_prefix": "/outputs/data/",
            "type": "DIRECTORY",
        },
    ],
    "resources": {
        "cpu_cores": 2,
        "preemptible": False,
        "ram_gb": 1.5,
        "disk_gb": 100.0,
        "zones": ["zone-a"],
        "backend_parameters": {"VmSize": "Standard_D64_v3"},
        "backend_parameters_strict": True,
    },
    "executors": [
        {
            "image": "alpine",
            "command": ["cat", "/inputs/hello.txt"],
            "workdir": "/data",
            "stdin": "/inputs/hello.txt",
            "stdout": "/outputs/stdout",
            "stderr": "/outputs/stderr",
            "env": {"GREETING": "hello"},
            "ignore_error": True,
        }
    ],
    "volumes": ["/vol/A"],
    "tags": {"WORKFLOW_ID": "cwl-01234"},
    "logs": [
        {
            "logs": [
                {
                    "start_time": "2017-11-14T11:49:05.127885125-08:00",
                    "end_time": "2017-11-14T11:49:08.484461502-08:00",
                    "stdout": "Hello, Funnel!\n",
                    "stderr": "a warning\n",
                    "exit_code": 0,
                }
            ],
            "metadata": {"hostname": "worker-1"},
            "start_time": "2017-11-14T11:49:04.433593468-08:00",
            "end_time": "2017-11-14T11:49:08.487707039-08:00",
            "outputs": [
                {
                    "url": "s3://funnel-bucket/output.txt",
                    "path": "/outputs/stdout",
                    "size_bytes": "15",
                }
            ],
            "system_logs": ["assigned to cell-1", "docker run alpine"],
        }
    ],
    "creation_time": "2017-11-14T11:49:04.427163701-08:00",
}
"""A task with every TES field set (so that encoding it gives it back exactly)."""

BASE: dict[str, Any] = {
    "name": "Hello world",
    "inputs": [
        {"url": "s3://funnel-bucket/hello.txt", "path": "/inputs/hello.txt"},
        {"path": "/inputs/script.py", "content": "print('hi')"},
    ],
    "outputs": [{"url": "s3://funnel-bucket/output.txt", "path": "/outputs/stdout"}],
    "executors": [{"image": "alpine", "command": ["cat", "/inputs/hello.txt"]}],
}
"""A valid create request, as the spec's example (with a content input)."""


def _merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        if value is DROP:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def task(**overrides: Any) -> dict[str, Any]:
    """The valid base request with ``overrides`` applied at the top level."""
    return _merge(BASE, overrides)


def executor(**fields: Any) -> dict[str, Any]:
    """Top-level overrides giving the task one executor (valid unless ``fields`` break it)."""
    return {"executors": [_merge(BASE["executors"][0], fields)]}


def input_(**fields: Any) -> dict[str, Any]:
    """Top-level overrides giving the task one input (valid unless ``fields`` break it)."""
    return {"inputs": [_merge(BASE["inputs"][0], fields)]}


def output(**fields: Any) -> dict[str, Any]:
    """Top-level overrides giving the task one output (valid unless ``fields`` break it)."""
    return {"outputs": [_merge(BASE["outputs"][0], fields)]}


def resources(**fields: Any) -> dict[str, Any]:
    """Top-level overrides giving the task ``fields`` as its resources."""
    return {"resources": fields}


def problems_of(data: Any) -> list[Problem]:
    """The problems of ``data`` as a create request; fails if it has none."""
    with pytest.raises(InvalidDocument) as caught:
        decode_create(data)
    return list(caught.value.problems)


# ---------------------------------------------------------------- round trips


def test_a_full_task_round_trips_exactly() -> None:
    """Every field decodes and encodes back to the same document, and the model survives."""
    model = decode(TesTask, FULL_TASK)
    assert encode(model) == FULL_TASK
    assert decode(TesTask, encode(model)) == model


def test_a_decoded_task_is_typed() -> None:
    """Enums, tuples and FrozenMaps come out of the decoder, and the task is hashable."""
    model = decode(TesTask, FULL_TASK)
    assert model.state is TesState.COMPLETE
    assert model.outputs[1].type is TesFileType.DIRECTORY
    assert model.executors[0].command == ("cat", "/inputs/hello.txt")
    assert isinstance(model.tags, FrozenMap)
    assert model.logs[0].outputs[0].size_bytes == "15"
    assert hash(model) == hash(decode(TesTask, FULL_TASK))


def test_a_minimal_request_takes_the_tes_defaults() -> None:
    """Left out: type FILE, no flags, empty lists and maps, no read-only fields."""
    model = decode_create({"executors": [{"image": "alpine", "command": ["true"]}]})
    assert model.id is None
    assert model.state is TesState.UNKNOWN
    assert model.creation_time is None
    assert model.logs == ()
    assert model.inputs == ()
    assert model.tags == {}
    assert model.executors[0].env == {}
    assert model.executors[0].ignore_error is False
    assert decode_create(task()).inputs[0].type is TesFileType.FILE


def test_models_built_in_python_hold_frozen_maps() -> None:
    """A dict given to a model is kept as a FrozenMap, so the model is hashable."""
    ex = TesExecutor(image="alpine", command=("true",), env={"A": "1"})
    assert isinstance(ex.env, FrozenMap)
    assert hash(ex) == hash(TesExecutor(image="alpine", command=("true",), env={"A": "1"}))


def test_states_are_the_tes_11_states() -> None:
    """All eleven TES 1.1 states, CANCELING included, by their wire names."""
    assert [s.value for s in TesState] == [
        "UNKNOWN",
        "QUEUED",
        "INITIALIZING",
        "RUNNING",
        "PAUSED",
        "COMPLETE",
        "EXECUTOR_ERROR",
        "SYSTEM_ERROR",
        "CANCELED",
        "PREEMPTED",
        "CANCELING",
    ]


# ---------------------------------------------------------------- create: valid


def test_the_base_request_is_valid() -> None:
    """The fixture every validation case breaks is itself valid."""
    model = decode_create(task())
    assert model.inputs[1].content == "print('hi')"
    assert model.executors[0].image == "alpine"


def test_read_only_fields_are_ignored_not_trusted() -> None:
    """id, state, logs and creation_time from a client are dropped, even malformed."""
    sent = task(id="mine", state="COMPLETE", logs="junk", creation_time=1)
    model = decode_create(sent)
    assert model == decode_create(task())
    assert model.id is None
    assert model.state is TesState.UNKNOWN
    assert set(READ_ONLY_FIELDS) == {"id", "state", "logs", "creation_time"}


def test_the_document_marks_exactly_the_read_only_fields() -> None:
    # So a generated client (or schemathesis) does not send them, nor link from them.
    schemas: dict[str, Any] = {}
    json_schema(TesTask, schemas)
    marked = {k for k, v in schemas["TesTask"]["properties"].items() if v.get("readOnly")}
    assert marked == set(READ_ONLY_FIELDS)


def test_a_fetched_task_can_be_sent_back() -> None:
    """A FULL view POSTed again is a valid request, its read-only parts dropped."""
    model = decode_create(FULL_TASK)
    assert model.id is None
    assert model.logs == ()
    assert model.executors == decode(TesTask, FULL_TASK).executors


@pytest.mark.parametrize("scheme_url", ["file:///data/x", "http://h/x", "https://h/x", "s3://b/x"])
def test_every_supported_scheme_is_accepted(scheme_url: str) -> None:
    """file, http, https and s3 URLs pass, for inputs and outputs alike."""
    model = decode_create(task(**input_(url=scheme_url), **output(url=scheme_url)))
    assert model.inputs[0].url == scheme_url
    assert model.outputs[0].url == scheme_url
    assert scheme_url.split(":")[0] in SUPPORTED_SCHEMES


def test_content_of_exactly_128_kib_is_accepted() -> None:
    """TES asks for at least 128 KiB; exactly that many bytes pass."""
    assert MAX_CONTENT_BYTES == 128 * 1024
    content = "a" * MAX_CONTENT_BYTES
    model = decode_create(task(inputs=[{"path": "/in", "content": content}]))
    assert model.inputs[0].content == content


def test_content_is_measured_in_utf8_bytes() -> None:
    """128 KiB of two-byte characters pass; one ASCII byte more does not."""
    content = "é" * (MAX_CONTENT_BYTES // 2)
    assert decode_create(task(inputs=[{"path": "/in", "content": content}]))
    over = content + "a"
    assert problems_of(task(inputs=[{"path": "/in", "content": over}])) == [
        Problem(
            "inputs[0].content",
            f"must be at most {MAX_CONTENT_BYTES} bytes (is {MAX_CONTENT_BYTES + 1})",
        )
    ]


def test_empty_content_is_an_empty_file() -> None:
    """content "" is given (an empty file), so it may not come with a url."""
    assert decode_create(task(inputs=[{"path": "/in", "content": ""}])).inputs[0].content == ""


@pytest.mark.parametrize(
    ("path", "prefix"),
    [
        ("/out/*.csv", "/out/"),
        ("/out/run-?.log", "/out/"),
        ("/out/[ab].txt", "/out"),
        ("/out/*/x", "/"),
        ("/out/*", "/out/"),
    ],
)
def test_wildcard_outputs_with_a_covering_prefix_are_accepted(path: str, prefix: str) -> None:
    """A POSIX pattern path with a path_prefix over its literal head passes."""
    model = decode_create(task(**output(path=path, path_prefix=prefix)))
    assert model.outputs[0].path_prefix == prefix
    assert is_wildcard(path)


def test_resources_within_bounds_are_accepted() -> None:
    """One core and any positive RAM and disk (integers too) pass."""
    model = decode_create(task(**resources(cpu_cores=1, ram_gb=0.5, disk_gb=10)))
    assert model.resources is not None
    assert model.resources.cpu_cores == 1
    assert model.resources.disk_gb == 10


# ---------------------------------------------------------------- create: each rule


CASES: list[tuple[str, dict[str, Any], list[Problem]]] = [
    # executors
    ("no executors", task(executors=DROP), [Problem("executors", "required")]),
    ("empty executors", task(executors=[]), [Problem("executors", "must not be empty")]),
    ("no image", task(**executor(image=DROP)), [Problem("executors[0].image", "required")]),
    (
        "empty image",
        task(**executor(image="")),
        [Problem("executors[0].image", "must not be empty")],
    ),
    ("no command", task(**executor(command=DROP)), [Problem("executors[0].command", "required")]),
    (
        "empty command",
        task(**executor(command=[])),
        [Problem("executors[0].command", "must not be empty")],
    ),
    (
        "command not strings",
        task(**executor(command=["ls", 1])),
        [Problem("executors[0].command[1]", "must be a string")],
    ),
    (
        "second executor broken",
        task(executors=[BASE["executors"][0], {"command": ["x"]}]),
        [Problem("executors[1].image", "required")],
    ),
    (
        "relative workdir",
        task(**executor(workdir="data")),
        [Problem("executors[0].workdir", ABSOLUTE)],
    ),
    (
        "relative stdin",
        task(**executor(stdin="in.txt")),
        [Problem("executors[0].stdin", ABSOLUTE)],
    ),
    (
        "relative stdout",
        task(**executor(stdout="./out")),
        [Problem("executors[0].stdout", ABSOLUTE)],
    ),
    (
        "relative stderr",
        task(**executor(stderr="")),
        [Problem("executors[0].stderr", ABSOLUTE)],
    ),
    (
        "env value not a string",
        task(**executor(env={"A": "1", "N": 2})),
        [Problem("executors[0].env.N", "must be a string")],
    ),
    (
        "env name with =",
        task(**executor(env={"A=B": "1"})),
        [Problem("executors[0].env.A=B", "name must not be empty or hold =")],
    ),
    (
        "ignore_error not a boolean",
        task(**executor(ignore_error="yes")),
        [Problem("executors[0].ignore_error", "must be true or false")],
    ),
    # inputs
    (
        "input with url and content",
        task(inputs=[BASE["inputs"][0], {"path": "/in", "url": "s3://b/k", "content": "x"}]),
        [Problem("inputs[1]", "give url or content, not both")],
    ),
    (
        "input with neither url nor content",
        task(inputs=[BASE["inputs"][0], {"path": "/in"}]),
        [Problem("inputs[1]", "give url or content")],
    ),
    ("input without path", task(**input_(path=DROP)), [Problem("inputs[0].path", "required")]),
    (
        "input with relative path",
        task(**input_(path="data/x")),
        [Problem("inputs[0].path", ABSOLUTE)],
    ),
    (
        "input type unknown",
        task(**input_(type="LINK")),
        [Problem("inputs[0].type", "must be one of FILE, DIRECTORY")],
    ),
    (
        "content as a directory",
        task(inputs=[{"path": "/in", "content": "x", "type": "DIRECTORY"}]),
        [Problem("inputs[0].type", "must be FILE when content is given")],
    ),
    (
        "content not a string",
        task(inputs=[{"path": "/in", "content": 7}]),
        [Problem("inputs[0].content", "must be a string")],
    ),
    (
        "input url without scheme",
        task(**input_(url="/data/x")),
        [Problem("inputs[0].url", NO_SCHEME)],
    ),
    (
        "input url with unsupported scheme",
        task(**input_(url="gs://bucket/x")),
        [Problem("inputs[0].url", f"unsupported scheme 'gs'; supported: {SCHEMES}")],
    ),
    (
        "s3 url without bucket",
        task(**input_(url="s3:///key")),
        [Problem("inputs[0].url", "s3 URL must name a bucket")],
    ),
    (
        "http url without host",
        task(**input_(url="https:///x")),
        [Problem("inputs[0].url", "https URL must name a host")],
    ),
    (
        "file url with relative path",
        task(**input_(url="file:data/x")),
        [Problem("inputs[0].url", "file URL must have an absolute path")],
    ),
    ("empty input url", task(**input_(url="")), [Problem("inputs[0].url", NO_SCHEME)]),
    (
        "streamable not a boolean",
        task(**input_(streamable=1)),
        [Problem("inputs[0].streamable", "must be true or false")],
    ),
    # outputs
    ("output without url", task(**output(url=DROP)), [Problem("outputs[0].url", "required")]),
    ("output without path", task(**output(path=DROP)), [Problem("outputs[0].path", "required")]),
    (
        "output with relative path",
        task(**output(path="out")),
        [Problem("outputs[0].path", ABSOLUTE)],
    ),
    (
        "output url with unsupported scheme",
        task(**output(url="ftp://h/x")),
        [Problem("outputs[0].url", f"unsupported scheme 'ftp'; supported: {SCHEMES}")],
    ),
    (
        "path_prefix without a wildcard",
        task(**output(path_prefix="/outputs/")),
        [Problem("outputs[0].path_prefix", "only allowed when path has a wildcard (*, ? or [)")],
    ),
    (
        "wildcard without path_prefix",
        task(**output(path="/outputs/*.txt")),
        [Problem("outputs[0].path_prefix", "required when path has a wildcard")],
    ),
    (
        "question mark without path_prefix",
        task(**output(path="/outputs/run-?.log")),
        [Problem("outputs[0].path_prefix", "required when path has a wildcard")],
    ),
    (
        "path_prefix not a prefix",
        task(**output(path="/outputs/*.txt", path_prefix="/data/")),
        [Problem("outputs[0].path_prefix", "must be a prefix of path before its first wildcard")],
    ),
    (
        "path_prefix past the wildcard",
        task(**output(path="/outputs/*/x", path_prefix="/outputs/*/")),
        [Problem("outputs[0].path_prefix", "must be a prefix of path before its first wildcard")],
    ),
    # resources
    (
        "no cores",
        task(**resources(cpu_cores=0)),
        [Problem("resources.cpu_cores", "must be >= 1")],
    ),
    (
        "fractional cores",
        task(**resources(cpu_cores=1.5)),
        [Problem("resources.cpu_cores", "must be an integer")],
    ),
    ("no RAM", task(**resources(ram_gb=0)), [Problem("resources.ram_gb", "must be > 0")]),
    ("negative RAM", task(**resources(ram_gb=-1.0)), [Problem("resources.ram_gb", "must be > 0")]),
    ("no disk", task(**resources(disk_gb=0.0)), [Problem("resources.disk_gb", "must be > 0")]),
    (
        "infinite disk",
        task(**resources(disk_gb=float("inf"))),
        [Problem("resources.disk_gb", "must be a finite number")],
    ),
    (
        "RAM as a string",
        task(**resources(ram_gb="8")),
        [Problem("resources.ram_gb", "must be a number")],
    ),
    (
        "backend parameter not a string",
        task(**resources(backend_parameters={"VmSize": 3})),
        [Problem("resources.backend_parameters.VmSize", "must be a string")],
    ),
    # the rest
    (
        "relative volume",
        task(volumes=["/vol/A", "vol/B"]),
        [Problem("volumes[1]", ABSOLUTE)],
    ),
    (
        "tag not a string",
        task(tags={"ok": "v", "k": None}),
        [Problem("tags.k", "must be a string")],
    ),
    ("tags not an object", task(tags=["a"]), [Problem("tags", "must be an object")]),
    ("unknown field", task(priority=1), [Problem("priority", "unknown field")]),
    (
        "camelCase is not TES 1.1",
        task(**executor(workDir="/x")),
        [Problem("executors[0].workDir", "unknown field")],
    ),
    (
        "unknown resource",
        task(**resources(gpus=1)),
        [Problem("resources.gpus", "unknown field")],
    ),
]


@pytest.mark.parametrize(("data", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_each_rule_is_named_at_its_path(data: dict[str, Any], expected: list[Problem]) -> None:
    """Breaking one rule gives exactly that rule, at exactly that field path."""
    assert problems_of(data) == expected


def test_every_problem_is_reported_at_once() -> None:
    """Problems in different parts of the task all come back together."""
    data = task(
        tags={"k": 1},
        inputs=[{"path": "in", "url": "s3://b/k"}],
        executors=[{"image": "", "command": ["x"]}, {"image": "alpine"}],
    )
    assert problems_of(data) == [
        Problem("inputs[0].path", ABSOLUTE),
        Problem("executors[0].image", "must not be empty"),
        Problem("executors[1].command", "required"),
        Problem("tags.k", "must be a string"),
    ]


def test_the_error_message_lists_every_problem() -> None:
    """str(InvalidDocument) is each problem as path: rule, joined by semicolons."""
    with pytest.raises(InvalidDocument, match=r"^executors\[0\].image: required; tags.k: must"):
        decode_create(task(**executor(image=DROP), tags={"k": 1}))


@pytest.mark.parametrize("body", [[], "task", None, 3])
def test_a_body_that_is_not_an_object_is_refused(body: Any) -> None:
    """The whole body must be a JSON object."""
    assert problems_of(body) == [Problem("", "must be an object")]


# ---------------------------------------------------------------- views


def _leaves(doc: Any, path: str = "") -> set[str]:
    """Every leaf of a JSON document as a field path (empty containers are leaves)."""
    if isinstance(doc, dict) and doc:
        return set().union(*(_leaves(v, f"{path}.{k}" if path else k) for k, v in doc.items()))
    if isinstance(doc, list) and doc:
        return set().union(*(_leaves(v, f"{path}[{i}]") for i, v in enumerate(doc)))
    return {path}


def stored() -> TesTask:
    """The full task, as the store would hold it."""
    return decode(TesTask, FULL_TASK)


def test_minimal_is_exactly_id_and_state() -> None:
    """MINIMAL has the id and the state and nothing else."""
    assert view(stored(), "MINIMAL") == {"id": "task-1", "state": "COMPLETE"}


def test_minimal_of_a_task_without_an_id_is_its_state() -> None:
    """A task not yet given an id shows only its state (None is never written)."""
    assert view(decode_create(task()), "MINIMAL") == {"state": "UNKNOWN"}


def test_full_is_everything() -> None:
    """FULL is the whole document, logs' stdout and inputs' content included."""
    assert view(stored(), "FULL") == FULL_TASK


def test_basic_drops_exactly_the_large_fields() -> None:
    """BASIC is FULL less executor stdout/stderr, input content and system_logs."""
    full = _leaves(view(stored(), "FULL"))
    basic = _leaves(view(stored(), "BASIC"))
    assert basic <= full
    assert full - basic == {
        "inputs[1].content",
        "logs[0].logs[0].stdout",
        "logs[0].logs[0].stderr",
        "logs[0].system_logs[0]",
        "logs[0].system_logs[1]",
    }


def test_basic_keeps_what_it_does_not_drop() -> None:
    """Everything else in BASIC has the FULL value: times, exit codes, metadata, outputs."""
    basic = view(stored(), "BASIC")
    assert basic["logs"][0]["logs"][0] == {
        "start_time": "2017-11-14T11:49:05.127885125-08:00",
        "end_time": "2017-11-14T11:49:08.484461502-08:00",
        "exit_code": 0,
    }
    assert basic["logs"][0]["metadata"] == {"hostname": "worker-1"}
    assert basic["inputs"][0] == FULL_TASK["inputs"][0]


def test_basic_of_a_task_without_logs() -> None:
    """A task that has not run yet shows in BASIC without its inputs' content."""
    basic = view(decode_create(task()), "BASIC")
    assert basic["inputs"][1] == {"path": "/inputs/script.py", "type": "FILE", "streamable": False}
    assert basic["logs"] == []


def test_views_leave_the_task_alone() -> None:
    """Taking a BASIC view changes neither the task nor a later FULL view."""
    model = stored()
    view(model, "BASIC")
    assert model == stored()
    assert view(model, "FULL") == FULL_TASK


def test_view_names_are_the_tes_names() -> None:
    """TesView's members are the names clients pass."""
    assert [v.value for v in TesView] == ["MINIMAL", "BASIC", "FULL"]


@pytest.mark.parametrize("kind", ["", "basic", "EVERYTHING", "Full"])
def test_an_unknown_view_is_a_value_error(kind: str) -> None:
    """Anything but MINIMAL, BASIC or FULL (case matters) raises ValueError."""
    with pytest.raises(ValueError, match="view must be one of MINIMAL, BASIC, FULL"):
        view(stored(), kind)


# ---------------------------------------------------------------- service-info


def test_service_info_shape() -> None:
    """GA4GH service-info with the TES 1.1 type and the server's storage and parameters."""
    info = service_info("0.1.0", ["file:///var/diego/storage"], ["VmSize"])
    assert info["type"] == {"group": "org.ga4gh", "artifact": "tes", "version": TES_VERSION}
    assert TES_VERSION == "1.1.0"
    assert info["version"] == "0.1.0"
    assert info["storage"] == ["file:///var/diego/storage"]
    assert info["tesResources_backend_parameters"] == ["VmSize"]
    assert set(info) >= {"id", "name", "type", "organization", "version"}
    assert set(info["organization"]) == {"name", "url"}
    assert all(isinstance(info[k], str) and info[k] for k in ("id", "name", "version"))


def test_service_info_organization_can_be_given() -> None:
    """An operator may name their own organization; the lists are copies."""
    storage: list[str] = []
    info = service_info(
        "1", storage, [], organization_name="Lab", organization_url="https://lab.example"
    )
    assert info["organization"] == {"name": "Lab", "url": "https://lab.example"}
    assert info["storage"] is not storage


# ---------------------------------------------------------------- schema and times


def test_schema_describes_maps_and_required_fields() -> None:
    """The generated schema has TES's required fields and string maps."""
    definitions: dict[str, Any] = {}
    json_schema(TesTask, definitions)
    assert definitions["TesTask"]["required"] == ["executors"]
    assert definitions["TesExecutor"]["required"] == ["image", "command"]
    assert definitions["TesOutput"]["required"] == ["url", "path"]
    assert definitions["TesInput"]["required"] == ["path"]
    assert definitions["TesTask"]["properties"]["tags"]["additionalProperties"] == {
        "type": "string"
    }


def test_models_built_in_python_are_checked_only_when_decoded() -> None:
    """A TesInput built in Python is not validated until decoded (models trust their caller)."""
    bad = TesInput(path="rel")
    with pytest.raises(InvalidDocument):
        decode(TesInput, encode(bad))
    assert attrs.evolve(bad, path="/abs", url="s3://b/k") == decode(
        TesInput, {"path": "/abs", "url": "s3://b/k"}
    )


@pytest.mark.parametrize(
    ("nanoseconds", "text"),
    [
        (0, "1970-01-01T00:00:00.000000000Z"),
        (1_510_688_944_427_163_701, "2017-11-14T19:49:04.427163701Z"),
    ],
)
def test_rfc3339(nanoseconds: int, text: str) -> None:
    """Diego's nanoseconds become RFC 3339 UTC with nanosecond precision."""
    assert rfc3339(nanoseconds) == text
