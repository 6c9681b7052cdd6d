"""Tasks really run by the embedded cells of a ``diego serve`` process.

Every test starts its own node (bubblewrap containers, cgroups) with short
timings, drives it over HTTP and the CLI, and looks at the host (processes,
files) where a test is about isolation. The node's data directory is one the
containers' uid can traverse (see ``CellServer``), except in the test of exactly that.
"""

from __future__ import annotations

import json
import secrets
import shutil
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from .conftest import Server, poll, run_cli
from .helpers_cells import (
    CELL_MEMORY_MB,
    BackgroundHttp,
    CellServer,
    Handler,
    Node,
    cell_server_in,
    marked_processes,
    run,
    running_command,
    sh,
    start_node,
    task,
    unique,
)

EVACUATION_FAILURE = "timed out during cell evacuation"

Routes = list[tuple[str, str, Handler]]


@pytest.fixture
def http_server() -> Iterator[Callable[[Routes], BackgroundHttp]]:
    """Starts HTTP servers of the test's own on 127.0.0.1; stops them at teardown."""
    started: list[BackgroundHttp] = []

    def start(routes: Routes) -> BackgroundHttp:
        server = BackgroundHttp(routes)
        started.append(server)
        server.start()
        return server

    try:
        yield start
    finally:
        for server in started:
            server.close()


@pytest.fixture
def cell_server(tmp_path: Path, backend: str) -> Iterator[CellServer]:
    """A Server helper (not started) whose data directory the containers' uid can traverse,
    for each cell backend."""
    with cell_server_in(tmp_path, backend, "diego-e2e-") as helper:
        yield helper


@pytest.fixture
def node(cell_server: CellServer) -> Node:
    """A running node with one cell and short timings; file_roots is the test's tmp_path."""
    return start_node(cell_server)


def messages(node: Node, log_guid: str) -> list[str]:
    """The messages kept for ``log_guid``."""
    return [line["message"] for line in node.logs(log_guid)]


def escape(host_path: Path) -> str:
    """A container path that climbs from the working directory to ``host_path``."""
    return "../../../../" + str(host_path).lstrip("/")


def wait_running(node: Node, guid: str, marker: str, argv: list[str]) -> dict[str, Any]:
    """Wait until the Task is RUNNING and its ``argv`` process is on the host; the Task."""
    running = node.wait_state(guid, "RUNNING")
    poll(lambda: running_command(marker, argv), 10.0, f"{argv} of {guid} on the host")
    return running


# ------------------------------------------------------------------ results and failures


def test_task_runs_with_a_data_dir_under_a_private_directory(server_proc: Server) -> None:
    """A Task succeeds on a node whose data dir lies below a private (0700) directory."""
    private = server_proc.tmp_path / "private"
    private.mkdir(mode=0o700)
    server_proc.data_dir = private / "data"
    node = start_node(server_proc)
    guid, log_guid = unique("private"), unique("private-log")
    done = node.run(task(guid, sh("echo hello from a private data dir"), log_guid=log_guid))
    assert done["failed"] is False, (done["failure_reason"], messages(node, log_guid))
    assert "hello from a private data dir" in messages(node, log_guid)


def test_result_file_returns_only_the_first_10_kib(node: Node) -> None:
    """A Task's result_file comes back as its result, cut to the first 10 KiB."""
    guid = unique("result")
    script = "head -c 20480 /dev/zero | tr '\\0' r > /home/vcap/result.txt"
    done = node.run(task(guid, sh(script), result_file="/home/vcap/result.txt"))
    assert done["failed"] is False, done["failure_reason"]
    assert len(done["result"]) == 10240
    assert set(done["result"]) == {"r"}


def test_nonzero_exit_fails_with_its_status(node: Node) -> None:
    """A run action exiting 3 fails the Task with "Exited with status 3"."""
    guid = unique("exit")
    done = node.run(task(guid, sh("exit 3")))
    assert done["failed"] is True
    assert done["failure_reason"] == "Exited with status 3"


def test_timeout_action_fails_when_exceeded(node: Node) -> None:
    """A timeout action of 500 ms around a long sleep fails with "exceeded 500ms timeout",
    and the sleep is killed rather than left to run."""
    guid, marker = unique("timeout"), unique("mark")
    action = {"timeout": {"action": run("/bin/sleep", "30"), "timeout_ms": 500}}
    done = node.run(task(guid, action, marker=marker), deadline=10.0)
    assert done["failed"] is True
    assert done["failure_reason"] == "exceeded 500ms timeout"
    poll(lambda: not running_command(marker, ["/bin/sleep", "30"]), 5.0, "the sleep to be killed")


def test_parallel_runs_every_child_and_fails_with_a_failing_one(node: Node) -> None:
    """A parallel action runs all its children, both outputs logged, and fails when one
    child fails."""
    guid, log_guid = unique("parallel"), unique("parallel-log")
    action = {"parallel": {"actions": [sh("echo marker-left"), sh("echo marker-right")]}}
    done = node.run(task(guid, action, log_guid=log_guid))
    assert done["failed"] is False, done["failure_reason"]
    logged = messages(node, log_guid)
    assert "marker-left" in logged
    assert "marker-right" in logged

    guid, log_guid = unique("parallel-fail"), unique("parallel-fail-log")
    action = {"parallel": {"actions": [sh("echo marker-ok"), sh("exit 4")]}}
    done = node.run(task(guid, action, log_guid=log_guid))
    assert done["failed"] is True
    assert "Exited with status 4" in done["failure_reason"]
    assert "marker-ok" in messages(node, log_guid)


def test_codependent_fails_as_soon_as_one_child_fails(node: Node) -> None:
    """A codependent action whose child exits 1 while its sibling sleeps 100 s fails with
    the failing child's reason, without waiting for the sibling: the sibling is killed."""
    guid, marker = unique("codependent"), unique("mark")
    action = {"codependent": {"actions": [sh("sleep 0.3; exit 1"), run("sleep", "100")]}}
    done = node.run(task(guid, action, marker=marker), deadline=10.0)
    assert done["failed"] is True
    assert done["failure_reason"] == "Exited with status 1"
    poll(lambda: not running_command(marker, ["sleep", "100"]), 5.0, "the sibling to be killed")


def test_memory_hog_fails_out_of_memory(node: Node) -> None:
    """A Task of 32 MB that allocates 200 MB is OOM-killed: its reason says out of memory."""
    guid = unique("oom")
    hog = run("dd", "if=/dev/zero", "bs=200M", "count=1", "of=/dev/null")
    done = node.run(task(guid, hog, memory_mb=32))
    assert done["failed"] is True
    assert "out of memory" in done["failure_reason"]


def test_cancel_kills_the_running_task(node: Node) -> None:
    """Cancelling a sleeping Task completes it failed "cancelled" and kills it: no process
    of it (``sleep 1000`` nor its bubblewrap) is left on the host."""
    guid, marker = unique("cancel"), unique("mark")
    node.create(task(guid, run("sleep", "1000"), marker=marker))
    wait_running(node, guid, marker, ["sleep", "1000"])

    reply = node.request("POST", f"/v1/tasks/{guid}/cancel")
    assert reply.status == 200, reply.text
    done = node.wait_state(guid, deadline=10.0)
    assert done["failed"] is True
    assert done["failure_reason"] == "cancelled"
    # bubblewrap outlives its sandbox's last process by a moment: wait for all of them.
    poll(
        lambda: not marked_processes(marker),
        10.0,
        "the cancelled Task's sleep 1000 and its bubblewrap to end",
    )


# ------------------------------------------------------------------ callbacks


def test_completion_callback_is_retried_on_503_then_resolves(
    node: Node, http_server: Callable[[Routes], BackgroundHttp]
) -> None:
    """A callback answering 503 twice then 200 gets the TaskResponse three times, and the
    Task is then removed."""
    received: list[dict[str, Any]] = []

    async def callback(request: web.Request) -> web.Response:
        received.append(json.loads(await request.read()))
        return web.Response(status=503 if len(received) <= 2 else 200)

    hook = http_server([("POST", "/done", callback)])
    guid = unique("callback")
    request = task(
        guid,
        sh("printf callback-result > /home/vcap/out"),
        result_file="/home/vcap/out",
        completion_callback_url=f"{hook.url}/done",
    )
    node.create(request)

    def gone() -> bool:
        return node.request("GET", f"/v1/tasks/{guid}").status == 404

    poll(gone, 15.0, "the resolved Task to be removed", interval=0.05)
    assert len(received) == 3
    for body in received:
        assert body["task_guid"] == guid
        assert body["failed"] is False
        assert body["result"] == "callback-result"
    reply = node.request("GET", f"/v1/tasks/{guid}")
    assert reply.status == 404
    assert reply.body["name"] == "TaskNotFound"


# ------------------------------------------------------------------ placement


def test_task_no_cell_can_fit_fails_insufficient_memory(node: Node) -> None:
    """A Task asking more memory than any cell has fails "insufficient resources: memory"."""
    guid = unique("too-big")
    done = node.run(task(guid, sh("true"), memory_mb=CELL_MEMORY_MB * 5))
    assert done["failed"] is True
    assert "insufficient resources: memory" in done["failure_reason"]


def test_task_for_a_stack_no_cell_serves_fails_naming_it(node: Node) -> None:
    """A Task for stack "windows" fails with a reason naming the stack."""
    guid = unique("windows")
    request = task(guid, sh("true"))
    request["stack"] = "windows"
    done = node.run(request)
    assert done["failed"] is True
    assert "windows" in done["failure_reason"]


# ------------------------------------------------------------------ path escapes


def test_download_to_an_escaping_path_creates_nothing_on_the_host(
    node: Node, http_server: Callable[[Routes], BackgroundHttp]
) -> None:
    """A download whose ``to`` climbs out to a host directory writes nothing there."""
    fetched: list[str] = []

    async def payload(request: web.Request) -> web.Response:
        fetched.append(request.path)
        return web.Response(body=b"escaped payload\n")

    files = http_server([("GET", "/payload.txt", payload)])
    outside = Path("/var/tmp") / unique("diego-e2e-escaped-download")
    targets = [
        node.server.tmp_path / "escaped-download",
        node.data_dir / "escaped-download",
        outside,
    ]
    try:
        for target in targets:
            guid = unique("download-escape")
            action = {"download": {"from": f"{files.url}/payload.txt", "to": escape(target)}}
            node.run(task(guid, action))
            assert not target.exists(), f"the download created {target} on the host"
    finally:
        shutil.rmtree(outside, ignore_errors=True)
    assert len(fetched) == len(targets), "the downloads never fetched the payload"


def test_upload_from_an_escaping_path_does_not_leak_a_host_file(node: Node) -> None:
    """An upload whose ``from`` climbs out to a host file in the data dir does not upload it."""
    secret = node.data_dir / "secret.txt"
    token = secrets.token_hex(16)
    secret.write_text(token)
    control = node.server.tmp_path / "control.txt"
    leaked = node.server.tmp_path / "leaked.txt"
    guid, log_guid = unique("upload-escape"), unique("upload-escape-log")
    action = {
        "serial": {
            "actions": [
                sh("printf uploaded-from-container > /home/vcap/ok.txt"),
                {"upload": {"from": "/home/vcap/ok.txt", "to": control.as_uri()}},
                {"upload": {"from": escape(secret), "to": leaked.as_uri()}},
            ]
        }
    }
    done = node.run(task(guid, action, log_guid=log_guid))
    # The control upload shows uploads work; the escaping one must not carry the secret.
    assert control.read_text() == "uploaded-from-container"
    assert not (leaked.exists() and leaked.read_text() == token)
    assert token not in json.dumps(done)
    assert all(token not in m for m in messages(node, log_guid))


def test_result_file_escaping_to_the_store_does_not_return_it(node: Node) -> None:
    """A result_file climbing out to the node's bbs.sqlite3 does not return the database."""
    database = node.data_dir / "bbs.sqlite3"
    assert database.exists()
    guid = unique("result-escape")
    done = node.run(task(guid, sh("true"), result_file=escape(database)))
    assert done["failed"] is True or done["result"] == ""
    assert "SQLite format 3" not in done["result"]


# ------------------------------------------------------------------ logs and cells


def test_cli_logs_prints_the_task_output(node: Node) -> None:
    """``diego logs LOG_GUID`` prints what a Task wrote, tagged TASK and OUT or ERR."""
    guid, log_guid = unique("logs"), unique("logs-guid")
    done = node.run(
        task(guid, sh("echo to-stdout; echo to-stderr >&2; echo again"), log_guid=log_guid)
    )
    assert done["failed"] is False, done["failure_reason"]
    result = run_cli("logs", log_guid, api=node.url)
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert "[TASK/OUT] to-stdout" in lines
    assert "[TASK/ERR] to-stderr" in lines
    assert "[TASK/OUT] again" in lines
    assert lines.index("[TASK/OUT] to-stdout") < lines.index("[TASK/OUT] again")


def test_cells_are_listed_across_zones(cell_server: CellServer) -> None:
    """With --cells 3 --zones 2, GET /v1/cells lists 3 cells in zones z0, z1, z0 with their
    capacity and free capacity, and ``diego cells`` prints them as a table."""
    node = start_node(cell_server, "--cells", "3", "--zones", "2")
    cells = node.cells()
    assert [c["zone"] for c in cells] == ["z0", "z1", "z0"]
    assert len({c["cell_id"] for c in cells}) == 3
    for cell in cells:
        assert cell["stacks"] == ["linux"]
        assert cell["capacity"]["memory_mb"] == CELL_MEMORY_MB
        assert cell["available"]["memory_mb"] == CELL_MEMORY_MB
        for key in ("memory_mb", "disk_mb", "containers"):
            assert isinstance(cell["capacity"][key], int)
            assert isinstance(cell["available"][key], int)
        assert cell["evacuating"] is False

    result = run_cli("cells", api=node.url)
    assert result.code == 0, result.err
    header, *rows = result.out.splitlines()
    assert header.split()[:3] == ["CELL", "ZONE", "STACKS"]
    assert [row.split()[:2] for row in rows] == [[c["cell_id"], c["zone"]] for c in cells]


def test_twenty_tasks_complete_spread_over_two_cells(cell_server: CellServer) -> None:
    """Twenty Tasks submitted at once to two cells all succeed, and both cells run some."""
    node = start_node(cell_server, "--cells", "2")
    guids = [unique(f"many-{i}") for i in range(20)]
    with ThreadPoolExecutor(len(guids)) as pool:
        list(pool.map(lambda g: node.create(task(g, sh("echo hi; sleep 0.2"))), guids))

    def all_completed() -> list[dict[str, Any]] | None:
        tasks = {t["task_guid"]: t for t in node.request("GET", "/v1/tasks").body}
        found = [tasks[g] for g in guids]
        return found if all(t["state"] == "COMPLETED" for t in found) else None

    done = poll(all_completed, 30.0, "all 20 Tasks to complete", interval=0.1)
    assert [t["failure_reason"] for t in done if t["failed"]] == []
    cell_ids = {c["cell_id"] for c in node.cells()}
    assert {t["cell_id"] for t in done} == cell_ids


# ------------------------------------------------------------------ evacuation and restarts


def test_evacuated_cell_fails_its_task_and_takes_no_new_work(cell_server: CellServer) -> None:
    """POST /v1/cells/{cell}/evacuate fails the cell's running Task after the evacuation
    timeout (not at once: it still runs once the cell is evacuating), and a Task submitted
    afterwards never runs on that cell."""
    # An evacuation timeout long enough that a loaded machine still sees the Task
    # RUNNING on the evacuating cell before it fails.
    node = start_node(cell_server, cell={"evacuation_timeout": 4.0})
    (cell,) = node.cells()
    guid, marker = unique("evacuee"), unique("mark")
    node.create(task(guid, run("sleep", "1000"), marker=marker))
    wait_running(node, guid, marker, ["sleep", "1000"])

    reply = node.request("POST", f"/v1/cells/{cell['cell_id']}/evacuate")
    assert reply.status == 202, reply.text
    poll(lambda: node.cells()[0]["evacuating"], 5.0, "the cell to be evacuating")
    assert node.get(guid)["state"] == "RUNNING"  # not failed at once
    done = node.wait_state(guid, deadline=15.0)
    assert done["failed"] is True
    assert done["failure_reason"] == EVACUATION_FAILURE
    poll(lambda: not marked_processes(marker), 5.0, "the evacuated Task's processes to end")
    assert node.cells()[0]["evacuating"] is True

    late = unique("after-evacuation")
    node.create(task(late, run("sleep", "1000")))
    seen = set()
    end = time.monotonic() + 2.5  # several auction retries and converger kicks
    while time.monotonic() < end:
        current = node.get(late)
        seen.add((current["state"], current["cell_id"]))
        assert current["state"] in ("PENDING", "COMPLETED"), current
        assert current["cell_id"] != cell["cell_id"] or current["state"] == "COMPLETED", current
        time.sleep(0.05)
    assert ("RUNNING", cell["cell_id"]) not in seen


def test_sigterm_evacuates_and_fails_the_running_task(cell_server: CellServer) -> None:
    """SIGTERM with a sleeping Task evacuates the cell and exits 0 (within the wait's
    deadline: the evacuation timeout, 1 s, ends it, not the sleep), and after a restart the
    Task is COMPLETED, failed "timed out during cell evacuation"."""
    node = start_node(cell_server)
    guid, marker = unique("sigterm"), unique("mark")
    node.create(task(guid, run("sleep", "1000"), marker=marker))
    wait_running(node, guid, marker, ["sleep", "1000"])

    assert cell_server.terminate(8.0) == 0
    log = cell_server.stderr
    stopping, stopped = log.find("node-stopping: evacuating 1 cells"), log.find("node-stopped")
    assert 0 <= stopping < log.find("evacuation-finished") < stopped, log
    poll(lambda: not marked_processes(marker), 5.0, "the Task's processes to end")

    node.restart()
    done = node.get(guid)
    assert done["state"] == "COMPLETED"
    assert done["failed"] is True
    assert done["failure_reason"] == EVACUATION_FAILURE


RESUMED_STEPS = [
    sh("echo a >> /tmp/steps"),
    sh("[ ! -e /tmp/ran ] || exit 3; touch /tmp/ran; sleep $NAP; echo b >> /tmp/steps"),
    sh("echo c >> /tmp/steps"),
]
"""Three steps; the second naps (a second run of it would fail), and the result is
what each step appended, once each."""


def test_kill_9_and_restart_resume_the_tasks_where_they_were(cell_server: CellServer) -> None:
    """kill -9 of a node with Tasks mid-way (their first step done, the second napping):
    their processes run on without it, and the restarted node resumes each action tree
    where it was. Every Task succeeds with each step run once, whether its nap ended
    while the node was down or after it came back; then nothing of theirs is left.
    On both backends: a local cell's shims and Docker's engine keep them running."""
    node = start_node(cell_server)
    marker = unique("mark")
    naps = {unique("resume"): nap for nap in ("2", "2", "9", "9", "9")}
    for guid, nap in naps.items():
        env = [{"name": "NAP", "value": nap}]
        request = task(
            guid, {"serial": {"actions": RESUMED_STEPS}}, marker=marker, result_file="/tmp/steps"
        )
        request["env"] = [*request["env"], *env]
        node.create(request)
    poll(lambda: len(running_command(marker, ["sleep", "9"])) == 3, 15.0, "the long naps")
    poll(lambda: len(running_command(marker, ["sleep", "2"])) == 2, 15.0, "the short naps")

    assert cell_server.kill() == -9
    assert len(running_command(marker, ["sleep", "9"])) == 3  # they outlive the node
    poll(
        lambda: not running_command(marker, ["sleep", "2"]),
        10.0,
        "the short naps to end while the node is down",
    )
    node.restart()
    for guid in naps:
        done = node.wait_state(guid, deadline=30.0)
        assert (done["failed"], done["failure_reason"]) == (False, ""), done
        assert done["result"] == "a\nb\nc\n", done
    poll(lambda: not marked_processes(marker), 5.0, "the Tasks' processes to be gone")
    assert "container-resumed" in cell_server.stderr
