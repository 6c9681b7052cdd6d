"""GA4GH TES 1.1 at /ga4gh/tes/v1, driven by the py-tes client against a real node.

Every test starts a node of its own with one cell of the backend under test (the
``backend`` fixture: local and docker), file roots of the test's own, and S3
settings naming moto's S3-compatible server on loopback. Executors run
``alpine:latest`` on Docker cells and the host's root on local cells. py-tes 1.1.4
cannot send list filters, and on a 404 it retries other base paths (/v1,
/), so what it reports is not the TES endpoint's answer: those requests go as
plain HTTP. At teardown every unfinished task is cancelled, and the test waits
until every task is final and (on Docker) its container is gone.
"""

from __future__ import annotations

import itertools
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import requests
import tes
from aiohttp import web
from tes.models import ExecutorLog

from ..moto_server import FAKE_KEY, FAKE_SECRET, REGION, moto_server, s3_client
from .conftest import DOCKER, http_request, poll
from .helpers_cells import (
    MARK_ENV,
    BackgroundHttp,
    CellServer,
    Node,
    cell_server_in,
    marked_processes,
    running_command,
    start_node,
    unique,
)
from .helpers_tes import DEADLINE, clean_up, tes_request

IMAGE = "alpine:latest"
TAIL_BYTES = 256
"""The node's ``[tes] tail_bytes``: how much of an executor's output its log keeps."""
HTTP_INPUT = "from an http URL\n"


# ------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    """moto's S3-compatible server on 127.0.0.1, for this module; its endpoint URL."""
    with moto_server() as endpoint:
        yield endpoint


@pytest.fixture
def roots(tmp_path: Path) -> tuple[Path, Path]:
    """The node's file roots: a directory of inputs and one for outputs."""
    inputs, outputs = tmp_path / "inputs", tmp_path / "outputs"
    inputs.mkdir()
    outputs.mkdir()
    return inputs, outputs


@pytest.fixture
def cell_server(tmp_path: Path, backend: str) -> Iterator[CellServer]:
    """A Server helper (not started) for each backend, on a data dir containers can reach."""
    with cell_server_in(tmp_path, backend, "diego-e2e-tes-") as helper:
        yield helper


@pytest.fixture
def node(cell_server: CellServer, roots: tuple[Path, Path], moto_endpoint: str) -> Iterator[Node]:
    """A running node with one cell of the backend under test, file roots ``roots`` and
    S3 on the moto server; its TES tasks are final and their containers gone after."""
    started = start_node(
        cell_server,
        file_roots=list(roots),
        transfer={
            "s3_endpoint_url": moto_endpoint,
            "s3_region": REGION,
            "s3_access_key_id": FAKE_KEY,
            "s3_secret_access_key": FAKE_SECRET,
        },
        tes={"tail_bytes": TAIL_BYTES},
    )
    yield started
    clean_up(started, cell_server.backend)


@pytest.fixture
def client(node: Node) -> tes.HTTPClient:
    """py-tes's client of the node (it adds /ga4gh/tes/v1 itself)."""
    return tes.HTTPClient(node.url, timeout=10)


@pytest.fixture
def http_input() -> Iterator[str]:
    """An HTTP server of the test's own on 127.0.0.1 serving /remote.txt; its base URL."""

    async def remote(_request: web.Request) -> web.Response:
        return web.Response(text=HTTP_INPUT)

    server = BackgroundHttp([("GET", "/remote.txt", remote)])
    try:
        yield server.start()
    finally:
        server.close()


@pytest.fixture
def bucket(moto_endpoint: str) -> Iterator[tuple[Any, str]]:
    """A boto3 client of the moto server and a new, empty bucket on it."""
    client = s3_client(moto_endpoint)
    name = f"diego-tes-{unique('b')}"
    try:
        client.create_bucket(Bucket=name)
        yield client, name
    finally:
        client.close()


# ------------------------------------------------------------------ helpers


def sh(script: str, **fields: Any) -> tes.Executor:
    """An executor running ``sh -c script`` in IMAGE."""
    return tes.Executor(image=IMAGE, command=["sh", "-c", script], **fields)


def finish(client: tes.HTTPClient, task_id: str, deadline: float = DEADLINE) -> tes.Task:
    """Wait (py-tes's bounded poll) until the task leaves QUEUED/INITIALIZING/RUNNING;
    the task in the FULL view."""
    client.wait(task_id, timeout=deadline)
    return client.get_task(task_id, view="FULL")


def listed_ids(node: Node, *query: tuple[str, str]) -> list[str]:
    """The ids of GET /tasks with ``query`` (one page, big enough), in the order given."""
    reply = tes_request(node, "GET", "/tasks?" + urlencode([("page_size", "2048"), *query]))
    assert reply.status == 200, reply.text
    return [t["id"] for t in reply.body["tasks"]]


def http_error(call: Any, *args: Any) -> requests.Response:
    """The response of a py-tes call that must fail with an HTTP error."""
    with pytest.raises(requests.HTTPError) as failed:
        call(*args)
    response = failed.value.response
    assert response is not None
    return response


def executor_logs(task: tes.Task) -> list[ExecutorLog]:
    """The executor logs of the task's (only) attempt."""
    assert task.logs is not None
    assert len(task.logs) == 1
    return list(task.logs[0].logs or [])


def test_inputs_by_content_file_http_and_directory_reach_the_executor(
    node: Node, client: tes.HTTPClient, roots: tuple[Path, Path], http_input: str
) -> None:
    """Inline content, a file:// and an http:// URL and a file:// DIRECTORY of nested
    files are put at their paths; the executor (with its workdir and env) cats them into
    outputs, and the task is COMPLETE."""
    inputs, outputs = roots
    (inputs / "file.txt").write_text("from a file URL\n")
    tree = {"top.txt": "top\n", "a/one.txt": "one\n", "a/b/two.txt": "two\n"}
    for relative, text in tree.items():
        (inputs / "tree" / relative).parent.mkdir(parents=True, exist_ok=True)
        (inputs / "tree" / relative).write_text(text)
    script = (
        'set -e; echo "$GREETING from $(pwd)"\n'
        "cat /data/in/inline.txt /data/in/file.txt /data/in/remote.txt > /out/files.txt\n"
        "cd /data/tree && find . -type f | sort > /out/tree.txt\n"
        "cat top.txt a/one.txt a/b/two.txt >> /out/tree.txt\n"
    )
    task = tes.Task(
        name="inputs",
        inputs=[
            tes.Input(content="inline content\n", path="/data/in/inline.txt"),
            tes.Input(url=f"file://{inputs}/file.txt", path="/data/in/file.txt"),
            tes.Input(url=f"{http_input}/remote.txt", path="/data/in/remote.txt"),
            tes.Input(url=f"file://{inputs}/tree", path="/data/tree", type="DIRECTORY"),
        ],
        outputs=[
            tes.Output(path="/out/files.txt", url=f"file://{outputs}/files.txt"),
            tes.Output(path="/out/tree.txt", url=f"file://{outputs}/tree.txt"),
        ],
        executors=[sh(script, workdir="/data/work", env={"GREETING": "hi"})],
    )
    done = finish(client, client.create_task(task))
    assert done.state == "COMPLETE", done.logs
    [log] = executor_logs(done)
    assert log.exit_code == 0
    assert log.stdout == "hi from /data/work\n"
    assert (outputs / "files.txt").read_text() == ("inline content\nfrom a file URL\n" + HTTP_INPUT)
    assert (outputs / "tree.txt").read_text() == (
        "./a/b/two.txt\n./a/one.txt\n./top.txt\ntop\none\ntwo\n"
    )


# ------------------------------------------------------------------ 2. views


def test_views_minimal_basic_and_full(node: Node, client: tes.HTTPClient) -> None:
    """MINIMAL is the id and state only (and the default); BASIC has no executor-log
    stdout/stderr, no input content and no system_logs; FULL has all three."""
    task = tes.Task(
        name="views",
        tags={"kind": "views"},
        inputs=[tes.Input(content="secret content", path="/data/in.txt")],
        executors=[sh("echo to-stdout; echo to-stderr >&2")],
        # A note in system_logs on every backend: diego never preempts.
        resources=tes.Resources(preemptible=True),
    )
    task_id = client.create_task(task)
    assert finish(client, task_id).state == "COMPLETE"

    minimal = client.get_task(task_id, view="MINIMAL")
    assert minimal.as_dict() == {"id": task_id, "state": "COMPLETE"}
    for query in ("?view=MINIMAL", ""):
        reply = tes_request(node, "GET", f"/tasks/{task_id}{query}")
        assert reply.status == 200, reply.text
        assert reply.body == {"id": task_id, "state": "COMPLETE"}

    basic = client.get_task(task_id, view="BASIC")
    assert basic.name == "views"
    assert basic.tags == {"kind": "views"}
    assert basic.creation_time is not None
    assert basic.inputs is not None
    assert basic.inputs[0].path == "/data/in.txt"
    assert basic.inputs[0].content is None
    assert basic.logs is not None
    assert basic.logs[0].system_logs is None
    [log] = executor_logs(basic)
    assert log.exit_code == 0
    assert log.start_time is not None
    assert log.end_time is not None
    assert log.stdout is None
    assert log.stderr is None
    raw = tes_request(node, "GET", f"/tasks/{task_id}?view=BASIC").body
    assert "content" not in raw["inputs"][0]
    assert "system_logs" not in raw["logs"][0]
    assert not {"stdout", "stderr"} & set(raw["logs"][0]["logs"][0])

    full = client.get_task(task_id, view="FULL")
    assert full.inputs is not None
    assert full.inputs[0].content == "secret content"
    [log] = executor_logs(full)
    assert log.stdout == "to-stdout\n"
    assert log.stderr == "to-stderr\n"
    assert full.logs is not None
    assert full.logs[0].system_logs is not None
    assert any("preemptible" in line for line in full.logs[0].system_logs)


# ------------------------------------------------------------------ 3. list


def test_list_pages_newest_first_and_filters(node: Node, client: tes.HTTPClient) -> None:
    """Walking every page of size 1 and of size 2 sees each task once, newest first;
    name_prefix, state and tag filters (key and value; key with an empty value: any
    value) select the matching tasks."""
    specs = [
        ("alpha-1", {"group": "a"}, "true"),
        ("alpha-2", {"group": "a", "flag": ""}, "true"),
        ("beta-1", {"group": "b"}, "true"),
        ("beta-2", {"group": "b", "flag": "yes"}, "exit 1"),
        ("gamma", {}, "true"),
    ]
    ids: dict[str, str] = {}
    for name, tags, script in specs:
        ids[name] = client.create_task(tes.Task(name=name, tags=tags, executors=[sh(script)]))
    for task_id in ids.values():
        client.wait(task_id, timeout=DEADLINE)
    newest_first = list(reversed(ids.values()))

    for size in (1, 2):
        seen: list[str] = []
        token: str | None = None
        for _ in range(len(specs) + 1):
            page = client.list_tasks(view="BASIC", page_size=size, page_token=token)
            tasks = page.tasks or []
            assert 1 <= len(tasks) <= size
            seen += [t.id for t in tasks]
            assert all(t.name in ids for t in tasks)
            token = page.next_page_token
            if not token:
                break
        assert seen == newest_first, f"page_size {size}"

    # py-tes 1.1.4's list_tasks sends no name_prefix, state or tag filters: plain HTTP.
    def named(*names: str) -> list[str]:
        return [ids[n] for n in names]

    assert listed_ids(node, ("name_prefix", "alpha")) == named("alpha-2", "alpha-1")
    assert listed_ids(node, ("state", "EXECUTOR_ERROR")) == named("beta-2")
    assert listed_ids(node, ("state", "COMPLETE")) == named("gamma", "beta-1", "alpha-2", "alpha-1")
    assert listed_ids(node, ("name_prefix", "beta"), ("state", "COMPLETE")) == named("beta-1")
    assert listed_ids(node, ("tag_key", "group"), ("tag_value", "b")) == named("beta-2", "beta-1")
    assert listed_ids(node, ("tag_key", "flag")) == named("beta-2", "alpha-2")
    assert listed_ids(node, ("tag_key", "flag"), ("tag_value", "")) == named("beta-2", "alpha-2")
    both = [("tag_key", "group"), ("tag_value", "a"), ("tag_key", "flag")]
    assert listed_ids(node, *both) == named("alpha-2")
    assert listed_ids(node, ("tag_key", "nope")) == []


# ------------------------------------------------------------------ 4. cancel


def test_cancel_of_a_sleeping_task_ends_canceled_and_its_process_gone(
    node: Node, client: tes.HTTPClient
) -> None:
    """A task running ``sleep 1000`` is RUNNING while its process runs on the host;
    cancelled, it ends CANCELED and the process is gone. Its log keeps an entry for
    each executor: the one that finished, and the one killed (with what it wrote)."""
    marker = unique("tes-mark")
    first = sh("echo first done", env={MARK_ENV: marker})
    executor = sh("echo sleeping; exec sleep 1000", env={MARK_ENV: marker})
    task_id = client.create_task(tes.Task(name="sleeper", executors=[first, executor]))
    poll(
        lambda: running_command(marker, ["sleep", "1000"]) or None,
        DEADLINE,
        "the sleep on the host",
    )
    assert client.get_task(task_id, view="MINIMAL").state == "RUNNING"

    client.cancel_task(task_id)
    # Not client.wait: it stops at CANCELING, which is not final.
    poll(
        lambda: client.get_task(task_id, view="MINIMAL").state == "CANCELED",
        DEADLINE,
        "the task to be CANCELED",
        interval=0.1,
    )
    poll(lambda: not marked_processes(marker), 15.0, "the task's processes to end")
    client.cancel_task(task_id)  # cancelling a final task changes nothing
    done = client.get_task(task_id, view="FULL")
    assert done.state == "CANCELED"
    finished, killed = executor_logs(done)
    assert (finished.stdout, finished.exit_code) == ("first done\n", 0)
    assert finished.start_time
    assert finished.end_time
    assert killed.stdout == "sleeping\n"
    assert killed.start_time
    assert killed.end_time
    assert killed.exit_code is None


def test_kill_9_and_restart_resume_the_task_where_it_was(
    cell_server: CellServer, node: Node, roots: tuple[Path, Path]
) -> None:
    """kill -9 of the node in a TES task's second executor: its process runs on, and
    the restarted node goes on with the task. The input is not fetched again (its
    source is gone by then), the first executor keeps its log, the second (which would
    fail if run twice) is waited for, and the output is stored: COMPLETE, once each."""
    inputs, outputs = roots
    (inputs / "in.txt").write_text("input\n")
    marker = unique("tes-mark")
    env = {MARK_ENV: marker}
    second = "[ ! -e /data/ran ] || exit 3; touch /data/ran; sleep 3; echo second >> /data/out.txt"
    task_id = tes.HTTPClient(node.url, timeout=10).create_task(
        tes.Task(
            inputs=[tes.Input(url=f"file://{inputs}/in.txt", path="/data/in.txt")],
            executors=[
                sh("cp /data/in.txt /data/out.txt; echo first", env=env),
                sh(f"echo napping; {second}; echo woke", env=env),
            ],
            outputs=[tes.Output(path="/data/out.txt", url=f"file://{outputs}/out.txt")],
        )
    )
    poll(lambda: running_command(marker, ["sleep", "3"]) or None, DEADLINE, "the nap")

    assert cell_server.kill() == -9
    assert running_command(marker, ["sleep", "3"])  # it outlives the node
    (inputs / "in.txt").unlink()
    node.restart()
    done = finish(tes.HTTPClient(node.url, timeout=10), task_id)
    assert done.state == "COMPLETE", done
    first, napped = executor_logs(done)
    assert (first.stdout, first.exit_code) == ("first\n", 0)
    assert (napped.stdout, napped.exit_code) == ("napping\nwoke\n", 0)
    assert all((first.start_time, first.end_time, napped.start_time, napped.end_time))
    assert (outputs / "out.txt").read_text() == "input\nsecond\n"
    assert "container-resumed" in cell_server.stderr
    poll(lambda: not marked_processes(marker), 15.0, "the task's processes to end")


def test_get_of_cancel_is_405_and_the_legacy_service_info_path_answers(node: Node) -> None:
    """``GET /tasks/{id}:cancel`` is 405 allowing POST (not a 404 for a task named
    so); ``/v1/tasks/service-info`` (py-tes 0.4's) is the service-info document."""
    reply = tes_request(node, "GET", "/tasks/some-task:cancel")
    assert reply.status == 405, reply.text
    assert reply.headers["Allow"] == "POST"
    assert reply.body["name"] == "MethodNotAllowed"
    info = tes_request(node, "GET", "/service-info")
    legacy = http_request(node.url, "GET", "/v1/tasks/service-info")
    assert legacy.status == 200, legacy.text
    assert legacy.body == info.body


def test_a_task_whose_cell_is_evacuated_under_it_is_preempted(
    node: Node, client: tes.HTTPClient
) -> None:
    """A sleeping task whose cell is evacuated ends PREEMPTED once the evacuation
    timeout passes (the node's is 1 s), saying why, and its process is gone."""
    marker = unique("tes-mark")
    executor = tes.Executor(image=IMAGE, command=["sleep", "1000"], env={MARK_ENV: marker})
    resources = tes.Resources(preemptible=True)
    task_id = client.create_task(
        tes.Task(name="preempted", executors=[executor], resources=resources)
    )
    poll(
        lambda: running_command(marker, ["sleep", "1000"]) or None,
        DEADLINE,
        "the sleep on the host",
    )
    (cell,) = node.request("GET", "/v1/cells").body
    assert node.request("POST", f"/v1/cells/{cell['cell_id']}/evacuate").status == 202

    preempted = finish(client, task_id)
    assert preempted.state == "PREEMPTED"
    assert preempted.logs is not None
    assert preempted.logs[-1].system_logs[-1] == (
        f"preempted: cell {cell['cell_id']} was evacuated (timed out during cell evacuation)"
    )
    poll(lambda: not marked_processes(marker), 15.0, "the task's processes to end")


def test_zones_choose_the_cell_and_a_zone_without_cells_is_refused(
    cell_server: CellServer, roots: tuple[Path, Path]
) -> None:
    """On a node of two cells in zones z0 and z1, a task naming a zone runs on that
    zone's cell every time; one naming only zones without cells ends SYSTEM_ERROR,
    its system_logs naming the zones that have cells."""
    node = start_node(cell_server, "--cells", "2", "--zones", "2", file_roots=list(roots))
    try:
        zone_of = {c["cell_id"]: c["zone"] for c in node.request("GET", "/v1/cells").body}
        assert sorted(zone_of.values()) == ["z0", "z1"]
        client = tes.HTTPClient(node.url, timeout=10)
        placed = {}
        for zone in ("z1", "z0", "z1", "z0"):
            task = tes.Task(executors=[sh("true")], resources=tes.Resources(zones=[zone]))
            placed[client.create_task(task)] = zone
        for task_id, zone in placed.items():
            done = finish(client, task_id)
            assert done.state == "COMPLETE"
            assert done.logs is not None
            assert zone_of[done.logs[-1].metadata["cell_id"]] == zone

        nowhere = tes.Task(executors=[sh("true")], resources=tes.Resources(zones=["mars"]))
        refused = finish(client, client.create_task(nowhere))
        assert refused.state == "SYSTEM_ERROR"
        assert refused.logs is not None
        assert refused.logs[-1].system_logs[-1] == (
            "found no compatible cell: no cell serving stack 'linux' is in zone 'mars' "
            "(cells are in 'z0', 'z1')"
        )
    finally:
        clean_up(node, cell_server.backend)


# ------------------------------------------------------------------ 5. executor errors


def test_failing_executor_is_executor_error_unless_ignored(client: tes.HTTPClient) -> None:
    """An executor exiting 3 ends the task EXECUTOR_ERROR with exit_code 3 in its log and
    no later executor run; with ignore_error the next executor runs and the task is
    COMPLETE."""
    failing = tes.Task(executors=[sh("echo before; exit 3"), sh("echo never")])
    done = finish(client, client.create_task(failing))
    assert done.state == "EXECUTOR_ERROR"
    [log] = executor_logs(done)
    assert log.exit_code == 3
    assert log.stdout == "before\n"

    ignoring = tes.Task(executors=[sh("exit 3", ignore_error=True), sh("echo after")])
    done = finish(client, client.create_task(ignoring))
    assert done.state == "COMPLETE", done.logs
    logs = executor_logs(done)
    assert [log.exit_code for log in logs] == [3, 0]
    assert logs[1].stdout == "after\n"


# ------------------------------------------------------------------ 6. outputs


OUTPUT_SCRIPT = """set -e
mkdir -p /out/dir/sub /out/w
printf 'one file\\n' > /out/file.txt
head -c 100 /dev/zero | tr '\\0' a > /out/dir/a.txt
head -c 2000 /dev/zero | tr '\\0' b > /out/dir/sub/b.txt
head -c 10 /dev/zero | tr '\\0' x > /out/w/x1.log
head -c 20 /dev/zero | tr '\\0' y > /out/w/x2.log
head -c 5 /dev/zero | tr '\\0' z > /out/w/skip.txt
"""
OUTPUT_FILES = {
    # relative to the output base URL: (container path, size)
    "file.txt": ("/out/file.txt", 9),
    "dir/a.txt": ("/out/dir/a.txt", 100),
    "dir/sub/b.txt": ("/out/dir/sub/b.txt", 2000),
    "logs/x1.log": ("/out/w/x1.log", 10),
    "logs/x2.log": ("/out/w/x2.log", 20),
}


def outputs_to(base: str) -> list[tes.Output]:
    """A FILE, a DIRECTORY and a wildcard output (path_prefix /out/w) under ``base``."""
    return [
        tes.Output(path="/out/file.txt", url=f"{base}/file.txt"),
        tes.Output(path="/out/dir", url=f"{base}/dir", type="DIRECTORY"),
        tes.Output(path="/out/w/*.log", path_prefix="/out/w", url=f"{base}/logs"),
    ]


def test_outputs_land_in_files_and_s3_with_their_sizes(
    node: Node, client: tes.HTTPClient, roots: tuple[Path, Path], bucket: tuple[Any, str]
) -> None:
    """FILE, DIRECTORY and wildcard (with path_prefix) outputs are stored under a file://
    directory and in an S3 bucket on the moto server; each stored file has an output log
    whose size_bytes is its size, and files the wildcard does not match are left out."""
    _, outputs = roots
    s3_client, name = bucket
    file_base, s3_base = f"file://{outputs}", f"s3://{name}"
    task = tes.Task(
        executors=[sh(OUTPUT_SCRIPT)],
        outputs=[*outputs_to(file_base), *outputs_to(s3_base)],
    )
    done = finish(client, client.create_task(task))
    assert done.state == "COMPLETE", done.logs
    assert done.logs is not None
    logged = {o.url: (o.path, o.size_bytes) for o in done.logs[0].outputs or []}
    expected = {
        f"{base}/{relative}": item
        for base in (file_base, s3_base)
        for relative, item in OUTPUT_FILES.items()
    }
    assert logged == expected
    raw = tes_request(node, "GET", f"/tasks/{done.id}?view=BASIC").body
    assert all(isinstance(o["size_bytes"], str) for o in raw["logs"][0]["outputs"])  # int64

    stored = {
        p.relative_to(outputs).as_posix(): p.stat().st_size
        for p in outputs.rglob("*")
        if p.is_file()
    }
    assert stored == {relative: size for relative, (_, size) in OUTPUT_FILES.items()}
    assert (outputs / "file.txt").read_text() == "one file\n"

    objects = s3_client.list_objects_v2(Bucket=name)["Contents"]
    assert {o["Key"]: o["Size"] for o in objects} == stored
    body = s3_client.get_object(Bucket=name, Key="dir/sub/b.txt")["Body"].read()
    assert body == b"b" * 2000


# ------------------------------------------------------------------ 7. backend_parameters


def test_unknown_backend_parameter_is_refused_when_strict_and_noted_otherwise(
    node: Node, client: tes.HTTPClient
) -> None:
    """An unknown resources.backend_parameters key with backend_parameters_strict is a
    400 naming the key (and no task is made); without strict the task runs and its
    system_logs mention the key."""

    def task(strict: bool) -> tes.Task:
        resources = tes.Resources(
            backend_parameters={"no_such_key": "1"}, backend_parameters_strict=strict
        )
        return tes.Task(executors=[sh("true")], resources=resources)

    response = http_error(client.create_task, task(True))
    assert response.status_code == 400
    error = response.json()["error"]
    assert "resources.backend_parameters" in error
    assert "no_such_key" in error
    assert listed_ids(node) == []

    done = finish(client, client.create_task(task(False)))
    assert done.state == "COMPLETE", done.logs
    assert done.logs is not None
    assert any("no_such_key" in line for line in done.logs[0].system_logs or [])


# ------------------------------------------------------------------ 8. bad requests


def test_invalid_task_is_400_naming_the_field_and_unknown_id_404(
    node: Node, client: tes.HTTPClient
) -> None:
    """A task with no executors, or with relative paths, is a 400 naming each field; an
    unknown id is a 404 to get and to cancel; a bad view or page_size is a 400; none is
    a 500 and the node logs no traceback."""
    response = http_error(client.create_task, tes.Task(executors=[]))
    assert response.status_code == 400
    assert "executors" in response.json()["error"]

    relative = tes.Task(
        inputs=[tes.Input(content="x", path="relative/in.txt")],
        executors=[sh("true", stdout="out.txt")],
    )
    response = http_error(client.create_task, relative)
    assert response.status_code == 400
    error = response.json()["error"]
    assert "inputs[0].path" in error
    assert "executors[0].stdout" in error
    assert "absolute" in error
    assert listed_ids(node) == []

    # py-tes raises for a 404, but after retrying /v1 and /: what it reports is the last
    # base path's answer. The TES endpoint's own answers, as plain HTTP:
    assert http_error(client.get_task, "no-such-task").status_code == 404
    for method, path in (("GET", "/tasks/no-such-task"), ("POST", "/tasks/no-such-task:cancel")):
        reply = tes_request(node, method, path)
        assert reply.status == 404, reply.text
        assert "error" in reply.body
    for query in ("/tasks/x?view=HUGE", "/tasks?page_size=0", "/tasks?state=DONE"):
        reply = tes_request(node, "GET", query)
        assert reply.status == 400, reply.text
        assert "error" in reply.body
    assert "Traceback" not in node.server.stderr


# ------------------------------------------------------------------ 9. redirects


def test_stdout_redirect_writes_the_file_and_its_tail_is_logged(
    client: tes.HTTPClient, roots: tuple[Path, Path]
) -> None:
    """With stdin, stdout and stderr redirected, the executor reads its input file and
    writes /out/o.txt, which is stored; the executor log holds the end of each output
    file (the last [tes] tail_bytes of it)."""
    _, outputs = roots
    lines = "".join(f"line {i:03d}\n" for i in range(100, 0, -1))
    executor = sh(
        "sort; echo oops >&2",
        stdin="/data/in/lines.txt",
        stdout="/out/o.txt",
        stderr="/out/e.txt",
    )
    task = tes.Task(
        inputs=[tes.Input(content=lines, path="/data/in/lines.txt")],
        executors=[executor],
        outputs=[tes.Output(path="/out/o.txt", url=f"file://{outputs}/o.txt")],
    )
    done = finish(client, client.create_task(task))
    assert done.state == "COMPLETE", done.logs
    written = "".join(f"line {i:03d}\n" for i in range(1, 101))
    assert (outputs / "o.txt").read_text() == written
    [log] = executor_logs(done)
    assert log.exit_code == 0
    assert log.stdout == written[-TAIL_BYTES:]
    assert log.stderr == "oops\n"


REDIRECTS = [
    combination
    for size in (1, 2, 3)
    for combination in itertools.combinations(("stdin", "stdout", "stderr"), size)
]


def test_every_combination_of_redirects_on_both_backends(
    client: tes.HTTPClient, roots: tuple[Path, Path]
) -> None:
    """One executor per combination of stdin, stdout and stderr redirected (the rest
    left alone): each runs, reads its input when stdin is redirected, writes exactly
    the files it redirects to, and its log holds both streams either way."""
    _, outputs = roots
    executors = []
    for i, streams in enumerate(REDIRECTS):
        files = {
            "stdin": "/data/in.txt",
            "stdout": f"/o/{i}.out",
            "stderr": f"/o/{i}.err",
        }
        chosen = {stream: files[stream] for stream in streams}
        executors.append(sh(f"cat; echo out-{i}; echo err-{i} >&2", **chosen))
    task = tes.Task(
        inputs=[tes.Input(content="input\n", path="/data/in.txt")],
        executors=executors,
        outputs=[tes.Output(path="/o", url=f"file://{outputs}/o", type="DIRECTORY")],
        volumes=["/o"],
    )
    done = finish(client, client.create_task(task))
    assert done.state == "COMPLETE", done.logs
    logs = executor_logs(done)
    for i, streams in enumerate(REDIRECTS):
        read = "input\n" if "stdin" in streams else ""
        assert (logs[i].exit_code, logs[i].stdout, logs[i].stderr) == (
            0,
            f"{read}out-{i}\n",
            f"err-{i}\n",
        ), streams
        out, err = outputs / "o" / f"{i}.out", outputs / "o" / f"{i}.err"
        assert out.exists() == ("stdout" in streams), streams
        assert err.exists() == ("stderr" in streams), streams
        if "stdout" in streams:
            assert out.read_text() == f"{read}out-{i}\n"


# ------------------------------------------------------------------ 10. an image per executor


@pytest.fixture
def marked_image(tmp_path: Path) -> Iterator[str]:
    """An image of the test's own, built offline from diego/busybox: it holds /marker."""
    name = f"diego/tes-marked:{unique('tag')}"
    context = tmp_path / "image"
    context.mkdir()
    (context / "Dockerfile").write_text("FROM diego/busybox:latest\nRUN echo marked > /marker\n")
    subprocess.run([DOCKER, "build", "-q", "-t", name, str(context)], check=True)
    try:
        yield name
    finally:
        subprocess.run([DOCKER, "rmi", "-f", name], capture_output=True)


@pytest.mark.parametrize("backend", ["docker"])
def test_each_executor_runs_in_its_own_image_sharing_the_task_files(
    client: tes.HTTPClient, marked_image: str
) -> None:
    """On Docker an executor of another image runs in that image (it sees its /marker,
    which the task's first image lacks), on the same files as the executors before it."""
    first = sh("mkdir -p /data && echo from-first > /data/x; test -e /marker || echo no-marker")
    second = tes.Executor(image=marked_image, command=["sh", "-c", "cat /data/x /marker"])
    task = tes.Task(executors=[first, second], volumes=["/data"])
    done = finish(client, client.create_task(task))
    assert done.state == "COMPLETE", done.logs
    logs = executor_logs(done)
    assert logs[0].stdout == "no-marker\n"
    assert logs[1].stdout == "from-first\nmarked\n"
